"""Differential test: //tools:bert_tokenize against Hugging Face `tokenizers`.

The reference is a tokenizers.Tokenizer assembled from BertNormalizer(clean_text,
handle_chinese_chars, strip_accents=lowercase, lowercase), BertPreTokenizer,
WordPiece(max_input_chars_per_word=100) and a [CLS]/[SEP] template, over the same
bert-base-uncased vocabulary. No special tokens are registered as added tokens, so "[MASK]"
in text is plain text on both sides (see server/text/README.md).

HF's Unicode category tables are older than utf8proc's (Unicode 15): code points assigned or
re-categorised since then are classified differently by design. Such code points are found
by comparing HF's treatment of each code point alone with the class utf8proc's category gives
it (never by running our tokenizer), reported, bounded, and left out of the comparison;
everything else must match id for id, and each token's offsets in its text (HF's character
offsets, turned into the UTF-8 byte offsets we report) must match too.

Run with BERT_BIN=<bazel-bin> (tools/test.sh sets it). Seeded and deterministic.
"""
import bisect
import ctypes
import ctypes.util
import json
import os
import random
import subprocess
import unicodedata
from collections import Counter
from pathlib import Path

import pytest
from repo_paths import REPO
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

VOCAB = REPO / "tests" / "data" / "bert_uncased_vocab.txt"
NUM_STRINGS = 100_000
SEED = 20261126
ASCII_PUNCT = "".join(chr(c) for c in range(33, 127) if not chr(c).isalnum())


def _binary():
    bin_dir = os.environ.get("BERT_BIN")
    if not bin_dir:
        pytest.fail("BERT_BIN is not set (run via tools/test.sh or set BERT_BIN=bazel-bin)")
    path = Path(bin_dir) / "tools" / "bert_tokenize"
    if not path.exists():
        pytest.fail(f"{path} not built (bazel build //tools:bert_tokenize)")
    return str(path)


def _vocab():
    with open(VOCAB, encoding="utf-8") as f:
        return {line.rstrip("\n"): i for i, line in enumerate(f)}


def hf_tokenizer(lowercase, truncate_to=None):
    tok = Tokenizer(models.WordPiece(_vocab(), unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=lowercase, lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 101), ("[SEP]", 102)])
    if truncate_to:
        tok.enable_truncation(max_length=truncate_to)
    return tok


def run_ours(lines, *args):
    """Feeds JSON lines (str or raw bytes) to one bert_tokenize process; returns dicts."""
    data = b"".join((l if isinstance(l, bytes) else l.encode("utf-8")) + b"\n" for l in lines)
    proc = subprocess.run(
        [_binary(), f"--vocab={VOCAB}", "--ids_only", "--offsets", *args],
        input=data, capture_output=True, check=True, timeout=300)
    out = proc.stdout.decode("utf-8").splitlines()
    assert len(out) == len(lines)
    return [json.loads(l) for l in out]


def byte_offsets(enc, a, b):
    """HF's character offsets as UTF-8 byte offsets, each in its own text ([0, 0] for the
    special tokens)."""
    def starts(text):  # byte offset of each character, and of the end
        out = [0]
        for ch in text:
            out.append(out[-1] + len(ch.encode("utf-8", "surrogatepass")))
        return out
    where = {0: starts(a), 1: starts(b) if b is not None else None}
    return [[0, 0] if seq is None else [where[seq][begin], where[seq][end]]
            for (begin, end), seq in zip(enc.offsets, enc.sequence_ids)]


def hf_ids(tok, items):
    """items: list of (text_a, text_b or None); returns (ids, type_ids, offsets) per item."""
    singles = [i for i, (_, b) in enumerate(items) if b is None]
    pairs = [i for i, (_, b) in enumerate(items) if b is not None]
    result = [None] * len(items)
    for idx, enc in zip(singles, tok.encode_batch([items[i][0] for i in singles])):
        result[idx] = (enc.ids, enc.type_ids, byte_offsets(enc, items[idx][0], None))
    for idx, enc in zip(pairs, tok.encode_batch([items[i] for i in pairs])):
        result[idx] = (enc.ids, enc.type_ids, byte_offsets(enc, *items[idx]))
    return result


# ---------------------------------------------------------------- Unicode version differences
class Utf8proc:
    """The category data our tokenizer uses (libutf8proc, via ctypes)."""
    CATS = ["Cn", "Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd", "Nl", "No", "Pc", "Pd",
            "Ps", "Pe", "Pi", "Pf", "Po", "Sm", "Sc", "Sk", "So", "Zs", "Zl", "Zp", "Cc", "Cf",
            "Cs", "Co"]

    def __init__(self):
        name = ctypes.util.find_library("utf8proc") or "libutf8proc.so.2"
        self.lib = ctypes.CDLL(name)
        self.lib.utf8proc_category.restype = ctypes.c_int
        self.lib.utf8proc_tolower.restype = ctypes.c_int32

    def category(self, cp):
        return self.CATS[self.lib.utf8proc_category(cp)]


def _is_cjk(cp):
    return any(lo <= cp <= hi for lo, hi in (
        (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
        (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F)))


def utf8proc_class(cat, cp, lowercase):
    """The class BERT's rules give a lone code point, from utf8proc's categories (`cat`)."""
    ch = chr(cp)
    if ch in "\t\n\r ":
        return "space"
    if cp == 0 or cp == 0xFFFD or cat[cp] in ("Cc", "Cf", "Cs", "Co"):
        return "drop"
    if cat[cp][0] == "Z":
        return "space"
    if _is_cjk(cp):
        return "cjk"
    chars = [ch]
    if lowercase:
        chars = [c for c in unicodedata.normalize("NFD", ch) if cat[ord(c)] != "Mn"]
        if not chars:
            return "drop"
    if len(chars) > 1:
        return "multi"
    c = chars[0]
    if c in ASCII_PUNCT or cat[ord(c)][0] == "P":
        return "punct"
    return "word"


def hf_classes(norm, pre, cps):
    """HF's class of each lone code point; batched through one normalizer call and one
    pre-tokenizer call per chunk ('|' separates, and nothing normalises to or from it)."""
    classes = []
    for i in range(0, len(cps), 20000):
        chunk = cps[i:i + 20000]
        # '|' itself is normalised on its own.
        outs = norm.normalize_str("|".join(chr(cp) for cp in chunk if cp != 0x7C)).split("|")
        if 0x7C in chunk:
            outs.insert(chunk.index(0x7C), norm.normalize_str("|"))
        assert len(outs) == len(chunk)
        probe = []  # (index in chunk, start offset) of single characters to pre-tokenize.
        text = []
        pos = 0
        chunk_classes = []
        for k, out in enumerate(outs):
            if out == "":
                chunk_classes.append("drop")
            elif out.strip() == "":
                chunk_classes.append("space")
            elif len(out) == 3 and out[0] == " " and out[2] == " ":
                chunk_classes.append("cjk")
            elif len(out) > 1:
                chunk_classes.append("multi")
            else:
                chunk_classes.append(None)
                probe.append((k, pos))
                text.append("a" + out + "b")
                pos += 4
        counts = Counter()
        starts = [p for _, p in probe]
        for piece, (begin, _) in pre.pre_tokenize_str(" ".join(text)):
            counts[bisect.bisect_right(starts, begin) - 1] += 1
        for j, (k, _) in enumerate(probe):
            chunk_classes[k] = {1: "word", 3: "punct"}.get(counts[j], "other")
        classes += chunk_classes
    return classes


UNIVERSE = [cp for cp in list(range(0x32000)) + list(range(0xE0000, 0xE1000))
            + list(range(0xF0000, 0xF0100)) + list(range(0x10FF00, 0x110000))
            if not 0xD800 <= cp < 0xE000]


@pytest.fixture(scope="module")
def version_differences():
    """{lowercase: set of code points HF's tables classify differently from utf8proc's}."""
    u = Utf8proc()
    cat = {cp: u.category(cp) for cp in UNIVERSE}
    result = {}
    for lowercase in (True, False):
        norm = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                          strip_accents=lowercase, lowercase=lowercase)
        pre = pre_tokenizers.BertPreTokenizer()
        hf = hf_classes(norm, pre, UNIVERSE)
        diff = {cp for cp, theirs in zip(UNIVERSE, hf)
                if theirs != utf8proc_class(cat, cp, lowercase)}
        by_cat = Counter(cat[cp] for cp in diff)
        print(f"lowercase={lowercase}: {len(diff)} code points classified differently by HF's "
              f"older Unicode tables, by utf8proc category: {dict(by_cat)}")
        # Newer Unicode assignments and re-categorisations only: a bounded set.
        assert len(diff) < 3000
        result[lowercase] = diff
    return result


# ---------------------------------------------------------------- generated strings
def _ranges(*pairs):
    return [cp for lo, hi in pairs for cp in range(lo, hi + 1)]


def make_pools(rng, excluded):
    cjk = (rng.sample(range(0x4E00, 0xA000), 3000) + rng.sample(range(0x3400, 0x4DC0), 400)
           + rng.sample(range(0x20000, 0x2A6E0), 400) + _ranges((0xF900, 0xFAFF)))
    pools = {
        "latin": _ranges((0xC0, 0x24F), (0x1E00, 0x1EFF)) + [0x130, 0x131, 0x1E9E, 0xDF],
        "combining": _ranges((0x300, 0x36F), (0x1AB0, 0x1ABE), (0x1DC0, 0x1DF5),
                             (0x20D0, 0x20F0), (0xFE20, 0xFE2F))
                     + [0x1D165, 0x1D166, 0x1D16D, 0x1D16E, 0x1D16F, 0x1D172, 0x0345],
        "scripts": _ranges((0x370, 0x3FF), (0x400, 0x52F), (0x531, 0x58A), (0x591, 0x5F4),
                           (0x600, 0x6FF), (0x900, 0x97F), (0x980, 0x9FB), (0xE01, 0xE5B),
                           (0x10A0, 0x10FF), (0x1200, 0x137C), (0x3041, 0x30FF),
                           (0x1100, 0x11FF), (0x0F00, 0x0FDA), (0x1780, 0x17F9)),
        "hangul": rng.sample(range(0xAC00, 0xD7A4), 2000),
        "cjk": cjk,
        "emoji": _ranges((0x1F300, 0x1F64F), (0x1F680, 0x1F6FF), (0x1F900, 0x1F9FF),
                         (0x2600, 0x27BF)) + [0xFE0F, 0x200D, 0x1F3FB, 0x1F3FF],
        "symbols": _ranges((0x2010, 0x2027), (0x2030, 0x205E), (0x20A0, 0x20C0),
                           (0x2100, 0x214F), (0x2190, 0x23FF), (0x2500, 0x25FF),
                           (0x3000, 0x303F), (0xFF01, 0xFF65), (0xA1, 0xBF), (0xFB00, 0xFB06),
                           (0xFE30, 0xFE6B), (0x2E00, 0x2E52))
                   + [0x37E, 0x387, 0x1FEF, 0x1FFD, 0x212A, 0x212B, 0x2126, 0x166D, 0x61D],
        "control": _ranges((0x1, 0x8), (0xE, 0x1F), (0x7F, 0x9F), (0x200B, 0x200F),
                           (0x202A, 0x202E), (0x2060, 0x2064), (0xE000, 0xE010))
                   + [0x0, 0xB, 0xC, 0xFEFF, 0xFFFD, 0xAD, 0x180E, 0xFFF9, 0xFFFB, 0xFDD0,
                      0xFFFE, 0xFFFF, 0x378, 0xE0001, 0xE0041, 0xF0000, 0x10FFFD, 0x10FFFF],
        "space": [0x9, 0xA, 0xD, 0x20, 0xA0, 0x1680, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000,
                  0x85] + _ranges((0x2000, 0x200A)),
    }
    return {name: [chr(c) for c in cps if c not in excluded] for name, cps in pools.items()}


def make_words():
    words = [t for t in _vocab() if t.isalpha() and t.isascii() and len(t) > 1]
    return sorted(words)


def random_case(rng, w):
    r = rng.random()
    if r < 0.6:
        return w
    if r < 0.8:
        return w.capitalize()
    if r < 0.9:
        return w.upper()
    return "".join(c.upper() if rng.random() < 0.5 else c for c in w)


def generate(rng, pools, words, n):
    kinds = ["word", "space", "punct", "latin", "scripts", "cjk", "hangul", "emoji", "symbols",
             "combining", "control", "uspace", "long"]
    weights = [34, 22, 9, 5, 5, 4, 2, 3, 4, 4, 4, 2, 0.4]
    texts = []
    for _ in range(n):
        parts = []
        for kind in rng.choices(kinds, weights, k=rng.randint(0, 28)):
            if kind == "word":
                parts.append(random_case(rng, rng.choice(words)))
            elif kind == "space":
                parts.append(" ")
            elif kind == "punct":
                parts.append(rng.choice(ASCII_PUNCT))
            elif kind == "uspace":
                parts.append(rng.choice(pools["space"]))
            elif kind == "long":
                # Around the 100-character word limit, sometimes with multi-byte letters.
                length = rng.randint(95, 105)
                alphabet = "abcdefghij" + ("".join(rng.sample(pools["latin"], 3))
                                           if rng.random() < 0.5 else "")
                parts.append("".join(rng.choice(alphabet) for _ in range(length)))
            else:
                parts.append(rng.choice(pools[kind]))
        texts.append("".join(parts))
    return texts


@pytest.fixture(scope="module")
def corpus(version_differences):
    rng = random.Random(SEED)
    pools = make_pools(rng, version_differences[True] | version_differences[False])
    words = make_words()
    texts = generate(rng, pools, words, NUM_STRINGS)
    # Every ASCII punctuation character, alone and inside words.
    texts += [p for p in ASCII_PUNCT] + [f"foo{p}bar{p}" for p in ASCII_PUNCT]
    texts += ["", " ", "Please subscribe to this newsletter", "hello [MASK] [CLS] world",
              "a" * 100, "a" * 101, "\u00e9" * 100, "\u00e9" * 101]
    items = []
    for t in texts:
        b = generate(rng, pools, words, 1)[0] if rng.random() < 0.25 else None
        items.append((t, b))
    return items


def to_lines(rng, items):
    lines = []
    for a, b in items:
        obj = {"text_a": a} if b is None else {"text_a": a, "text_b": b}
        lines.append(json.dumps(obj, ensure_ascii=rng.random() < 0.5))
    return lines


def compare(items, ours, theirs, what):
    mismatches = []
    offset_mismatches = []
    for (a, b), o, (ids, type_ids, offsets) in zip(items, ours, theirs):
        if "error" in o or o["ids"] != ids or o["type_ids"] != type_ids:
            mismatches.append((a, b, o, ids))
        elif o["offsets"] != offsets:
            offset_mismatches.append((a, b, o, offsets))
    assert not mismatches, (f"{what}: {len(mismatches)} of {len(items)} differ; first: "
                            f"{mismatches[:3]!r}")
    assert not offset_mismatches, (
        f"{what}: the offsets of {len(offset_mismatches)} of {len(items)} differ; first: "
        f"{offset_mismatches[:3]!r}")


def test_uncased_matches_hf(corpus):
    assert len(corpus) >= NUM_STRINGS
    ours = run_ours(to_lines(random.Random(1), corpus), "--seq_length=100000")
    compare(corpus, ours, hf_ids(hf_tokenizer(True), corpus), "uncased")
    assert not any(o["truncated"] for o in ours)


def test_single_truncation_matches_hf(corpus):
    singles = [(a, None) for a, _ in corpus[:15000]]
    for seq_length in (8, 32):
        ours = run_ours(to_lines(random.Random(2), singles), f"--seq_length={seq_length}")
        compare(singles, ours, hf_ids(hf_tokenizer(True, seq_length), singles),
                f"singles truncated to {seq_length}")
        assert any(o["truncated"] for o in ours)


def test_pair_truncation_longest_first_matches_hf(corpus):
    """--longest_first shares a pair's budget as Hugging Face tokenizers' longest_first (its
    default, which cross-encoders use); the default, TF Hub's round robin, differs from it."""
    pairs = [(a, b if b is not None else a[::-1]) for a, b in corpus[:15000]]
    lines = to_lines(random.Random(4), pairs)
    # Odd budgets (seq_length - 3): with an even one the two rules agree.
    for seq_length in (10, 16, 34):
        ours = run_ours(lines, f"--seq_length={seq_length}", "--longest_first")
        compare(pairs, ours, hf_ids(hf_tokenizer(True, seq_length), pairs),
                f"pairs truncated to {seq_length} (longest_first)")
        assert sum(o["truncated"] for o in ours) > 1000
        round_robin = run_ours(lines, f"--seq_length={seq_length}")
        assert sum(r["ids"] != o["ids"] for r, o in zip(round_robin, ours)) > 100


def test_cased_matches_hf(corpus):
    subset = corpus[:20000]
    ours = run_ours(to_lines(random.Random(3), subset), "--seq_length=100000", "--cased")
    compare(subset, ours, hf_ids(hf_tokenizer(False), subset), "cased")


@pytest.mark.parametrize("lowercase", [True, False])
def test_every_code_point_matches_hf(version_differences, lowercase):
    """Each code point of planes 0-2 (and samples of 14-16) between two letters."""
    cps = [cp for cp in UNIVERSE if cp not in version_differences[lowercase]]
    items = []
    for i in range(0, len(cps), 16):
        items.append((" ".join("a" + chr(cp) + "b" for cp in cps[i:i + 16]), None))
    args = ["--seq_length=100000"] + ([] if lowercase else ["--cased"])
    ours = run_ours(to_lines(random.Random(4), items), *args)
    compare(items, ours, hf_ids(hf_tokenizer(lowercase), items), f"code points lc={lowercase}")


def test_invalid_utf8_lines_get_errors_in_order():
    good = json.dumps({"text_a": "hello world"})
    bad_lines = [b'{"text_a": "bad \xff byte"}', b'{"text_a": "\xc0\xaf"}',
                 b'{"text_a": "\xed\xa0\x80"}', b'{"text_a": "cut \xe2\x82"}',
                 b'{"text_a": "ok", "text_b": "\xf4\x90\x80\x80"}', b'not json',
                 b'{"text_b": "no text_a"}', b'{"text_a": "\\ud800"}']
    lines = []
    for bad in bad_lines:
        lines += [good, bad]
    out = run_ours(lines)
    for i, o in enumerate(out):
        if i % 2 == 0:
            assert o["ids"] == [101, 7592, 2088, 102]
            assert o["offsets"] == [[0, 0], [0, 5], [6, 11], [0, 0]]
        else:
            assert set(o) == {"error"} and o["error"], o
