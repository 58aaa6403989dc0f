#!/usr/bin/env python3
"""What the tanh-form GELU epilogue costs in accuracy, emulated on the CPU (no GPU needed).

  gelu_fp16_emulation.py [FIXTURE_DIR ...]   (default: the two tests/golden models)

Method: a numpy BERT forward that rounds where the CUDA engine stores 16-bit values: weights
and biases in the dtype; every GEMM accumulates in float64 and stores its output in the
dtype; LayerNorm reads 16-bit inputs, computes in float32 and stores the dtype; attention
computes softmax in float32 and rounds P to the dtype before P.V (as the tensor-core kernel
does), output in the dtype. The FFN activation is either
  exact: bias-free GEMM output stored in the dtype, then bias + erf GELU, stored (the erf pass)
  fused: GEMM + bias in float32, then tanh-form GELU, stored (cuBLASLt's GELU_BIAS epilogue)
and both are compared with the fixture's Hugging Face float32 outputs (relative L2 error,
as the engine tests measure it); the fp32 row, with no rounding, checks the emulator itself.
bf16 rounding is round-to-nearest-even on float32 bits.
It does not model cuBLASLt's own tanh (which may be an approximate instruction) or its
summation order; the GPU test CudaFusedGeluTest measures the real thing.
"""
import json
import math
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tools"))
from safetensors_io import read_safetensors  # noqa: E402

ERF = np.vectorize(math.erf, otypes=[np.float64])


def round_bf16(x):
    bits = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return bits.astype(np.uint32).view(np.float32)


ROUND = {
    # No 16-bit rounding: checks the emulator itself against the reference (~1e-6 expected).
    "fp32": lambda x: np.asarray(x, dtype=np.float32),
    "fp16": lambda x: np.asarray(x, dtype=np.float32).astype(np.float16).astype(np.float32),
    "bf16": round_bf16,
}


def layer_norm(x, gamma, beta, eps):
    x = x.astype(np.float32)
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def forward(w, cfg, ids, types, mask, rnd, gelu):
    """Returns the sequence output [B, S, H] with the engine's roundings."""
    H, nh = cfg["hidden_size"], cfg["num_attention_heads"]
    hd = H // nh
    eps = cfg.get("layer_norm_eps", 1e-12)
    W = {k: rnd(v.astype(np.float32)) for k, v in w.items()}
    p = "bert." if "bert.embeddings.word_embeddings.weight" in w else ""
    B, S = ids.shape
    emb = (W[p + "embeddings.word_embeddings.weight"][ids].astype(np.float32)
           + W[p + "embeddings.position_embeddings.weight"][np.arange(S)][None]
           + W[p + "embeddings.token_type_embeddings.weight"][types])
    x = rnd(layer_norm(emb, w[p + "embeddings.LayerNorm.weight"],
                       w[p + "embeddings.LayerNorm.bias"], eps))

    def linear(inp, name, bias=True):
        y = inp.astype(np.float64) @ W[name + ".weight"].T.astype(np.float64)
        if bias:
            y = y + W[name + ".bias"]
        return y

    key_mask = np.where(mask[:, None, None, :] > 0, 0.0, -np.inf)
    for l in range(cfg["num_hidden_layers"]):
        a = f"{p}encoder.layer.{l}."
        q = rnd(linear(x, a + "attention.self.query")).reshape(B, S, nh, hd).transpose(0, 2, 1, 3)
        k = rnd(linear(x, a + "attention.self.key")).reshape(B, S, nh, hd).transpose(0, 2, 1, 3)
        v = rnd(linear(x, a + "attention.self.value")).reshape(B, S, nh, hd).transpose(0, 2, 1, 3)
        s = (q.astype(np.float32) @ k.transpose(0, 1, 3, 2)) / np.float32(math.sqrt(hd))
        s = s + key_mask
        s = np.exp(s - s.max(-1, keepdims=True))
        denom = s.sum(-1, keepdims=True)
        ctx = (rnd(s) @ v.astype(np.float32)) / denom
        ctx = rnd(ctx.transpose(0, 2, 1, 3).reshape(B, S, H))
        proj = rnd(linear(ctx, a + "attention.output.dense", bias=False))
        x = rnd(layer_norm(proj + W[a + "attention.output.dense.bias"] + x,
                           w[a + "attention.output.LayerNorm.weight"],
                           w[a + "attention.output.LayerNorm.bias"], eps))
        if gelu == "exact":
            z = rnd(linear(x, a + "intermediate.dense", bias=False)).astype(np.float64)
            z = z + W[a + "intermediate.dense.bias"]
            h = rnd(0.5 * z * (1.0 + ERF(z / math.sqrt(2.0))))
        else:
            z = linear(x, a + "intermediate.dense").astype(np.float32)
            h = rnd(0.5 * z * (1.0 + np.tanh(0.7978845608028654 * (z + 0.044715 * z ** 3))))
        out = rnd(linear(h, a + "output.dense", bias=False))
        x = rnd(layer_norm(out + W[a + "output.dense.bias"] + x, w[a + "output.LayerNorm.weight"],
                           w[a + "output.LayerNorm.bias"], eps))
    return x


def rel(a, b):
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def main():
    root = pathlib.Path(__file__).resolve().parent.parent / "tests" / "golden"
    dirs = [pathlib.Path(d) for d in sys.argv[1:]] or [root / "tiny-l4-h128",
                                                      root / "tiny-l12-h64-s128"]
    print("| model | dtype | exact erf pass: rel. error | fused tanh epilogue: rel. error |"
          " fused / exact | fused vs exact |")
    print("|---|---|---|---|---|---|")
    for d in dirs:
        cfg = json.loads((d / "config.json").read_text())
        w = read_safetensors(d / "model.safetensors")
        e = read_safetensors(d / "expected.safetensors")
        ids, types, mask = e["input_word_ids"], e["input_type_ids"], e["input_mask"]
        ref = e["sequence_output"]
        for name, rnd in ROUND.items():
            exact = forward(w, cfg, ids, types, mask, rnd, "exact")
            fused = forward(w, cfg, ids, types, mask, rnd, "fused")
            ee, ef = rel(exact, ref), rel(fused, ref)
            print(f"| {d.name} | {name} | {ee:.3e} | {ef:.3e} | {ef / ee:.3f} | "
                  f"{rel(fused, exact):.3e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
