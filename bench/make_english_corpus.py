"""Writes a realistic English corpus for the tokenizer benchmark, one text per line.

Source: the docstrings of the Python standard library of the interpreter running this script
(English technical prose written by people), read with `ast` (nothing is imported). Each
docstring paragraph with at least 8 words, mostly ASCII letters, becomes one text with its
whitespace collapsed. Code-like lines (">>>", indented blocks) are dropped. Deterministic for
a given Python version.

  python bench/make_english_corpus.py OUT [--max_bytes=4000000]
"""
import argparse
import ast
import sys
import sysconfig
from pathlib import Path


def paragraphs(doc):
    for block in doc.split("\n\n"):
        lines = [l.strip() for l in block.splitlines()]
        if any(l.startswith((">>>", "...", "$ ")) for l in lines):
            continue
        text = " ".join(l for l in lines if l)
        words = text.split()
        if len(words) < 8:
            continue
        letters = sum(c.isalpha() for c in text)
        if letters < 0.7 * len(text.replace(" ", "")) or not text.isascii():
            continue
        yield " ".join(words)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--max_bytes", type=int, default=4_000_000)
    args = parser.parse_args()
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    seen = set()
    total = 0
    count = 0
    with open(args.out, "w", encoding="utf-8") as out:
        for path in sorted(stdlib.rglob("*.py")):
            if "site-packages" in path.parts or "test" in path.parts or "tests" in path.parts:
                continue
            try:
                tree = ast.parse(path.read_text(encoding="utf-8"))
            except (SyntaxError, UnicodeDecodeError, ValueError):
                continue
            for node in ast.walk(tree):
                if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                         ast.AsyncFunctionDef)):
                    continue
                doc = ast.get_docstring(node)
                if not doc:
                    continue
                for text in paragraphs(doc):
                    if text in seen:
                        continue
                    seen.add(text)
                    out.write(text + "\n")
                    total += len(text) + 1
                    count += 1
                    if total >= args.max_bytes:
                        break
                if total >= args.max_bytes:
                    break
            if total >= args.max_bytes:
                break
    print(f"corpus: {count} texts, {total} bytes from Python {sys.version.split()[0]} stdlib "
          f"docstrings -> {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
