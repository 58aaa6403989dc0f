#!/usr/bin/env python3
"""Hugging Face transformers BertModel on the GPU, the baseline for bench/gpu_bench.

Same shapes as gpu_bench: BERT-base, batch 1/8/32/128/256 x seq 128 and one variable-length
batch (log-normal lengths, mean ~36, max 128, padded to the batch's longest as HF needs).
GPU time by CUDA events around the forward pass after warm-up, median of many; inputs are
already on the GPU (our engine's time includes its upload). Modes: eager SDPA in
fp32/fp16/bf16; torch.compile (default) and torch.compile(mode="reduce-overhead") in fp16
for a few batch sizes (compilation is slow).

  hf_baseline.py --save_model DIR --write_lengths FILE   # prepare the shared inputs
  hf_baseline.py --model_dir DIR --lengths FILE --json OUT.json
  hf_baseline.py --model_dir DIR --lengths FILE --json OUT.json --device cpu --small
                                                        # dry run of every code path on a CPU

The JSON is rewritten (atomically) after every measured case, so a run killed by `timeout`
leaves the cases it finished; compiled cases are skipped once --budget_s has passed.
--save_model writes a seeded random BertModel (config.json + model.safetensors) that our
engine loads too (gpu_bench --model_dir), so both sides run the same weights.
"""
import argparse
import json
import math
import os
import statistics
import sys
import time


def varlen_lengths(n=256, seed=0, mean=36.0, max_len=128):
    import numpy as np
    rng = np.random.default_rng(seed)
    sigma = 0.6
    mu = math.log(mean) - sigma * sigma / 2  # E[lognormal] = exp(mu + sigma^2 / 2)
    x = rng.lognormal(mu, sigma, n)
    return [int(v) for v in np.clip(np.round(x), 2, max_len)]


def save_model(directory, seed):
    import torch
    from transformers import BertConfig, BertModel
    torch.manual_seed(seed)
    config = BertConfig()  # BERT-base: 12 x 768, 12 heads, 3072, vocab 30522, gelu (erf)
    model = BertModel(config, add_pooling_layer=True)
    model.save_pretrained(directory)
    print(f"saved random BERT-base (seed {seed}) to {directory}")


def load(directory, dtype, torch, device):
    from transformers import BertModel
    try:
        model = BertModel.from_pretrained(directory, dtype=dtype, attn_implementation="sdpa")
    except TypeError:
        model = BertModel.from_pretrained(directory, torch_dtype=dtype,
                                          attn_implementation="sdpa")
    # Older transformers silently ignore an unknown dtype keyword: make sure of what we time.
    got = next(model.parameters()).dtype
    if got != dtype:
        raise RuntimeError(f"loaded {got}, wanted {dtype}")
    if model.config._attn_implementation != "sdpa":
        raise RuntimeError(f"attention is {model.config._attn_implementation}, wanted sdpa")
    return model.to(device).eval()


def make_inputs(lengths, torch, device, seed=42):
    g = torch.Generator().manual_seed(seed)
    b, s = len(lengths), max(lengths)
    ids = torch.randint(1000, 30522, (b, s), generator=g, dtype=torch.long)
    mask = torch.zeros((b, s), dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, 0] = 101
        ids[i, n - 1] = 102
        ids[i, n:] = 0
        mask[i, :n] = 1
    return ids.to(device), mask.to(device)


def time_forward(fn, ids, mask, torch, iters, warmup):
    with torch.inference_mode():
        for _ in range(warmup):
            fn(input_ids=ids, attention_mask=mask)
        times = []
        if ids.device.type != "cuda":  # --device cpu dry run: host wall time
            for _ in range(iters):
                start = time.perf_counter()
                fn(input_ids=ids, attention_mask=mask)
                times.append((time.perf_counter() - start) * 1e3)
            return statistics.median(times)
        torch.cuda.synchronize()
        for _ in range(iters):
            start = torch.cuda.Event(enable_timing=True)
            stop = torch.cuda.Event(enable_timing=True)
            start.record()
            fn(input_ids=ids, attention_mask=mask)
            stop.record()
            stop.synchronize()
            times.append(start.elapsed_time(stop))
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--save_model")
    p.add_argument("--write_lengths")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--model_dir")
    p.add_argument("--lengths")
    p.add_argument("--json")
    p.add_argument("--batches", default="1,8,32,128,256")
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--dtypes", default="fp32,fp16,bf16")
    p.add_argument("--compile_batches", default="128")
    p.add_argument("--reduce_overhead_batches", default="1,32")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--budget_s", type=float, default=200,
                   help="skip remaining cases once this much time has passed")
    p.add_argument("--device", default="cuda", help="cuda (the benchmark) or cpu (dry run)")
    p.add_argument("--small", action="store_true",
                   help="tiny batches and few iterations, to check the code paths quickly")
    a = p.parse_args()
    if a.small:
        a.batches, a.seq, a.compile_batches, a.reduce_overhead_batches = "1,2", 16, "2", "1,2"
        a.iters = 2

    if a.write_lengths:
        lengths = varlen_lengths()
        with open(a.write_lengths, "w") as f:
            f.write("\n".join(str(n) for n in lengths) + "\n")
        print(f"{len(lengths)} lengths, mean {sum(lengths) / len(lengths):.1f}, "
              f"max {max(lengths)}, tokens {sum(lengths)} -> {a.write_lengths}")
    if a.save_model:
        save_model(a.save_model, a.seed)
    if not a.model_dir:
        return 0

    import torch
    t0 = time.time()
    timer = "gpu" if a.device == "cuda" else "cpu"  # the column label of the printed lines
    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    varlen = None
    if a.lengths:
        with open(a.lengths) as f:
            varlen = [int(x) for x in f.read().split()]
    shapes = [(f"seq{a.seq}", [a.seq] * int(b)) for b in a.batches.split(",")]
    if varlen:
        shapes.append(("varlen", varlen[:4] if a.small else varlen))
    results = []

    def write_json():
        if not a.json:
            return
        tmp = a.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump(results, f, indent=1)
        os.replace(tmp, a.json)  # a kill mid-write never leaves a truncated file

    def over_budget(what):
        if time.time() - t0 <= a.budget_s:
            return False
        print(f"hf {what}: skipped (time budget {a.budget_s} s spent)", flush=True)
        return True

    def record(mode, dtype_name, shape, lengths, ms):
        r = {"impl": "hf", "mode": mode, "dtype": dtype_name, "shape": shape,
             "batch": len(lengths), "real_tokens": sum(lengths), "gpu_ms": ms}
        results.append(r)
        write_json()
        print(f"hf {mode:10s} {dtype_name:5s} {shape:7s} batch {len(lengths):4d} "
              f"{timer} {ms:8.3f} ms  {len(lengths) / ms * 1e3:10.0f} seq/s  "
              f"{sum(lengths) / ms * 1e3:11.0f} tok/s", flush=True)

    write_json()
    for name in a.dtypes.split(","):
        model = load(a.model_dir, dtypes[name], torch, a.device)
        print(f"hf loaded {a.model_dir} as {name}, attention "
              f"{model.config._attn_implementation}, on {a.device}", flush=True)
        for shape, lengths in shapes:
            if over_budget(f"eager {name} {shape} batch {len(lengths)}"):
                continue
            ids, mask = make_inputs(lengths, torch, a.device)
            record("eager", name, shape, lengths,
                   time_forward(model, ids, mask, torch, a.iters, 3))
        del model
        if a.device == "cuda":
            torch.cuda.empty_cache()

    model = load(a.model_dir, torch.float16, torch, a.device)
    for mode, batches in (("compile", a.compile_batches), ("compile-ro", a.reduce_overhead_batches)):
        torch._dynamo.reset()
        compiled = torch.compile(model) if mode == "compile" else torch.compile(
            model, mode="reduce-overhead")
        for b in [int(x) for x in batches.split(",") if x]:
            if over_budget(f"{mode} batch {b}"):
                continue
            lengths = [a.seq] * b
            ids, mask = make_inputs(lengths, torch, a.device)
            try:
                record(mode, "fp16", f"seq{a.seq}", lengths,
                       time_forward(compiled, ids, mask, torch, a.iters, 5))
            except Exception as e:  # a compile failure must not lose the other numbers
                print(f"hf {mode} batch {b}: failed: {type(e).__name__}: {e}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
