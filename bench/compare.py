#!/usr/bin/env python3
"""One table: our engine (gpu_bench --json) vs Hugging Face (hf_baseline.py --json).

  compare.py OURS.json HF.json

For each dtype and shape: our GPU ms, seq/s and real tokens/s; HF eager, torch.compile and
torch.compile(mode="reduce-overhead") ms where measured; speed-up = best HF ms / our ms.
"""
import json
import os
import sys


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
    hf_by = {}
    for r in hf:
        hf_by[(r["mode"], r["dtype"], r["shape"], r["batch"])] = r["gpu_ms"]
    print("| dtype | shape | batch | tokens | ours ms | ours seq/s | ours tok/s | HF eager ms |"
          " HF compile ms | HF compile-ro ms | best HF / ours |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in ours:
        key = (r["dtype"], r["shape"], r["batch"])
        cells = []
        best = None
        for mode in ("eager", "compile", "compile-ro"):
            ms = hf_by.get((mode,) + key)
            cells.append(f"{ms:.3f}" if ms is not None else "–")
            if ms is not None:
                best = ms if best is None else min(best, ms)
        ms = r["gpu_ms"]
        ratio = f"{best / ms:.2f}x" if best is not None and ms > 0 else "–"
        print(f"| {r['dtype']} | {r['shape']} | {r['batch']} | {r['real_tokens']} | {ms:.3f} | "
              f"{r['batch'] / ms * 1e3:,.0f} | {r['real_tokens'] / ms * 1e3:,.0f} | "
              + " | ".join(cells) + f" | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
