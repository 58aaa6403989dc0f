#!/usr/bin/env python3
"""One table: our engine (gpu_bench --json) vs Hugging Face (hf_baseline.py --json).

  compare.py OURS.json HF.json [NAME=VARIANT.json ...]

For each dtype and shape: our GPU ms, seq/s and real tokens/s; HF eager, torch.compile and
torch.compile(mode="reduce-overhead") ms where measured; speed-up = best HF ms / our ms.
Each NAME=VARIANT.json (gpu_bench --json with one engine option changed) adds a column with
that variant's ms for the shapes it ran.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from goals import load  # noqa: E402  (missing or unreadable JSON -> [])


def main():
    ours = json.load(open(sys.argv[1]))
    hf = []
    if len(sys.argv) > 2 and os.path.exists(sys.argv[2]):
        try:
            hf = json.load(open(sys.argv[2]))
        except ValueError as e:  # keep our column even if the HF run died badly
            print(f"(unreadable Hugging Face results {sys.argv[2]}: {e})")
    else:
        print("(no Hugging Face results)")
    variants = []
    # The shapes in table order: ours, then those only variants ran (when the defaults failed,
    # the run3_config variant ran every shape in their place).
    shapes = {(r["dtype"], r["shape"], r["batch"]): r for r in ours}
    ours_keys = set(shapes)
    for arg in sys.argv[3:]:
        name, _, path = arg.partition("=")
        rows = load(path)  # empty when missing or cut off mid-write
        if rows:
            by = {(r["dtype"], r["shape"], r["batch"]): r["gpu_ms"] for r in rows}
            variants.append((name, by))
            for r in rows:
                shapes.setdefault((r["dtype"], r["shape"], r["batch"]), r)
        else:
            print(f"(no results for variant {name}: {path})")
    if not ours:
        print("(no results with the defaults)")
    hf_by = {}
    for r in hf:
        hf_by[(r["mode"], r["dtype"], r["shape"], r["batch"])] = r["gpu_ms"]
    print("| dtype | shape | batch | tokens | ours ms | ours seq/s | ours tok/s | HF eager ms |"
          " HF compile ms | HF compile-ro ms | best HF / ours |"
          + "".join(f" ours {name} ms |" for name, _ in variants))
    print("|---|---|---|---|---|---|---|---|---|---|---|" + "---|" * len(variants))
    for key, r in shapes.items():
        cells = []
        best = None
        for mode in ("eager", "compile", "compile-ro"):
            ms = hf_by.get((mode,) + key)
            cells.append(f"{ms:.3f}" if ms is not None else "–")
            if ms is not None:
                best = ms if best is None else min(best, ms)
        extra = ""
        for _, by in variants:
            v = by.get(key)
            extra += f" {v:.3f} |" if v is not None else " – |"
        if key in ours_keys:
            ms = r["gpu_ms"]
            ratio = f"{best / ms:.2f}x" if best is not None and ms > 0 else "–"
            mine = (f"{ms:.3f} | {r['batch'] / ms * 1e3:,.0f} | "
                    f"{r['real_tokens'] / ms * 1e3:,.0f}")
        else:
            ratio, mine = "–", "– | – | –"
        print(f"| {r['dtype']} | {r['shape']} | {r['batch']} | {r['real_tokens']} | {mine} | "
              + " | ".join(cells) + f" | {ratio} |" + extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
