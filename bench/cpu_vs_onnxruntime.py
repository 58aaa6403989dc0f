#!/usr/bin/env python3
"""CPU engine vs ONNX Runtime and PyTorch on the same BERT weights, same threads, one table.

Method: the model directory (from //tools:export_random_model: seeded BERT-base weights in
safetensors) is read with numpy and rebuilt as an ONNX graph with the onnx helper API (no
PyTorch): Gather embeddings + LayerNormalization, then per layer MatMul+Add for Q/K/V,
Reshape/Transpose to heads, MatMul, Softmax, MatMul, the output projection, residual +
LayerNormalization, MatMul+Add, erf GELU, MatMul+Add, residual + LayerNormalization.
ONNX Runtime runs it on the CPU execution provider with all graph optimisations (its
fusions apply), intra_op_num_threads = --threads, sequential execution.

PyTorch runs Hugging Face transformers' BertModel loaded from the same directory
(from_pretrained; eval mode, torch.inference_mode, torch.set_num_threads(--threads), the
default attention implementation): what a user of the Hugging Face stack deploys on a CPU.
Skipped with --no_torch.

With --dtype=bfloat16 the CPU engine runs its AMX GEMM (--gemm=amx_bf16: the Linear layers'
products in bfloat16, sums and everything else in float32) and PyTorch the model converted to
bfloat16 (model.to(torch.bfloat16), whose matrix products oneDNN runs on AMX where the CPU has
it): what a user of either stack would deploy for bfloat16 on a CPU. ONNX Runtime stays in
float32 (its CPU execution provider has no bfloat16 kernels for this graph): the float32 baseline
in the same table. The agreement check then compares each bfloat16 engine with ONNX Runtime's
float32 output.

First every engine encodes the same two sequences and its last layer is compared with ours
(relative error printed), so all are known to compute the same function. Then long-lived
subprocesses are started: the CPU engine (bench/cpu_bench --serve), ONNX Runtime twice, with
its intra-op threads spin-waiting (its default) and without, and PyTorch. For each batch size
every engine does --warmup untimed runs, then --iters rounds in which each engine runs the
batch once, in turn, so all see the same machine load (this machine is shared; wall times
move with what else runs). Reported: median wall time as sequences per second, the ratios to
the better ONNX Runtime variant and to PyTorch, and the median process CPU time per sequence
(all threads: the work done, whatever share of the cores the process got).
"""
import argparse
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tools"))
from safetensors_io import read_safetensors, write_safetensors  # noqa: E402


def write_inputs(path, ids, types):
    ids = np.ascontiguousarray(ids, dtype=np.int32)
    write_safetensors(path, {"input_word_ids": ids, "input_mask": np.ones_like(ids),
                             "input_type_ids": np.ascontiguousarray(types, dtype=np.int32)})


def build_onnx(model_dir, onnx_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    config = json.loads((pathlib.Path(model_dir) / "config.json").read_text())
    w = read_safetensors(pathlib.Path(model_dir) / "model.safetensors")
    w = {k[5:] if k.startswith("bert.") else k: v for k, v in w.items()}
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    head_dim = hidden // heads
    eps = float(config.get("layer_norm_eps", 1e-12))
    if config.get("hidden_act", "gelu") != "gelu":
        raise SystemExit("this graph builder implements the erf GELU only")
    inits, nodes = [], []

    def const(name, array):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(op, inputs, name, **attrs):
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def linear(x, prefix, out):
        wt = const(prefix + ".weight_t", w[prefix + ".weight"].T)
        b = const(prefix + ".bias", w[prefix + ".bias"])
        return node("Add", [node("MatMul", [x, wt], out + "_mm"), b], out)

    def layer_norm(x, prefix, out):
        return node("LayerNormalization", [x, const(prefix + ".weight", w[prefix + ".weight"]),
                                           const(prefix + ".bias", w[prefix + ".bias"])],
                    out, axis=-1, epsilon=eps)

    emb = node("Add", [
        node("Add", [node("Gather", [const("word", w["embeddings.word_embeddings.weight"]),
                                     "input_ids"], "we"),
                     node("Gather", [const("type", w["embeddings.token_type_embeddings.weight"]),
                                     "token_type_ids"], "te")], "wte"),
        node("Gather", [const("pos", w["embeddings.position_embeddings.weight"]),
                        "position_ids"], "pe")], "emb")
    x = layer_norm(emb, "embeddings.LayerNorm", "emb_ln")
    heads_shape = const("heads_shape", np.array([0, 0, heads, head_dim], dtype=np.int64))
    merge_shape = const("merge_shape", np.array([0, 0, hidden], dtype=np.int64))
    half = const("half", np.array(0.5, dtype=np.float32))
    one = const("one", np.array(1.0, dtype=np.float32))
    rsqrt2 = const("rsqrt2", np.array(1.0 / np.sqrt(2.0), dtype=np.float32))
    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        t = f"l{i}_"
        q = linear(x, p + "attention.self.query", t + "q")
        k = linear(x, p + "attention.self.key", t + "k")
        v = linear(x, p + "attention.self.value", t + "v")
        qh = node("Transpose", [node("Reshape", [q, heads_shape], t + "qr")], t + "qt",
                  perm=[0, 2, 1, 3])
        kh = node("Transpose", [node("Reshape", [k, heads_shape], t + "kr")], t + "kt",
                  perm=[0, 2, 3, 1])
        vh = node("Transpose", [node("Reshape", [v, heads_shape], t + "vr")], t + "vt",
                  perm=[0, 2, 1, 3])
        scores = node("Div", [node("MatMul", [qh, kh], t + "qk"),
                              const(t + "sqrt_d", np.array(np.sqrt(head_dim), np.float32))],
                      t + "scores")
        probs = node("Softmax", [scores], t + "probs", axis=-1)
        ctx = node("Reshape", [node("Transpose", [node("MatMul", [probs, vh], t + "ctx_h")],
                                    t + "ctx_t", perm=[0, 2, 1, 3]), merge_shape], t + "ctx")
        attn = linear(ctx, p + "attention.output.dense", t + "attn")
        x = layer_norm(node("Add", [attn, x], t + "res1"), p + "attention.output.LayerNorm",
                       t + "ln1")
        inter = linear(x, p + "intermediate.dense", t + "inter")
        gelu = node("Mul", [node("Mul", [inter, half], t + "g_half"),
                            node("Add", [node("Erf", [node("Mul", [inter, rsqrt2], t + "g_s")],
                                              t + "g_erf"), one], t + "g_1p")], t + "gelu")
        out = linear(gelu, p + "output.dense", t + "out")
        x = layer_norm(node("Add", [out, x], t + "res2"), p + "output.LayerNorm", t + "ln2")
    nodes.append(helper.make_node("Identity", [x], ["sequence_output"], name="output"))
    ids = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"])
           for n in ("input_ids", "token_type_ids", "position_ids")]
    out = helper.make_tensor_value_info("sequence_output", TensorProto.FLOAT,
                                        ["batch", "seq", hidden])
    graph = helper.make_graph(nodes, "bert", ids, [out], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, onnx_path, save_as_external_data=True, all_tensors_to_one_file=True,
              location=os.path.basename(onnx_path) + ".data")


def ort_session(onnx_path, threads, spinning=True):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    # Spin-waiting helps on idle cores and hurts on busy ones; the driver tries both.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(onnx_path, opts, providers=["CPUExecutionProvider"])


def ort_feed(ids, types):
    pos = np.broadcast_to(np.arange(ids.shape[1], dtype=np.int64), ids.shape).copy()
    return {"input_ids": ids.astype(np.int64), "token_type_ids": types.astype(np.int64),
            "position_ids": pos}


def random_ids(batch, seq, vocab, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, vocab, size=(batch, seq), dtype=np.int64), np.zeros((batch, seq),
                                                                              np.int64)


def torch_model(model_dir, threads, dtype="float32"):
    import torch
    from transformers import BertModel
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    model = BertModel.from_pretrained(model_dir, add_pooling_layer=False).eval()
    return model.to(torch.bfloat16) if dtype == "bfloat16" else model


def torch_sequence_output(model, ids, types):
    import torch
    with torch.inference_mode():
        out = model(input_ids=torch.from_numpy(ids), token_type_ids=torch.from_numpy(types),
                    attention_mask=torch.ones_like(torch.from_numpy(ids)))
    return out.last_hidden_state.float().numpy()


def peak_rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def worker(args):
    """ONNX Runtime's or PyTorch's side: reads batch sizes from stdin, runs each once, prints
    '<wall_ms> <cpu_ms>' per line (the same protocol as cpu_bench --serve)."""
    if args.torch:
        model = torch_model(args.model_dir, args.threads, args.dtype)
        run = lambda ids, types: torch_sequence_output(model, ids, types)  # noqa: E731
    else:
        sess = ort_session(args.onnx, args.threads, spinning=args.spinning == 1)
        run = lambda ids, types: sess.run(["sequence_output"], ort_feed(ids, types))  # noqa
    config = json.loads((pathlib.Path(args.model_dir) / "config.json").read_text())
    print("ready", flush=True)
    seed = 12345
    for line in sys.stdin:
        batch = int(line)
        if batch <= 0:
            break
        seed += 1
        ids, types = random_ids(batch, args.seq, config["vocab_size"], seed)
        c0 = time.process_time()
        t0 = time.perf_counter()
        run(ids, types)
        t1 = time.perf_counter()
        c1 = time.process_time()
        print(f"{(t1 - t0) * 1000:.3f} {(c1 - c0) * 1000:.3f}", flush=True)
    print(f"peak RSS {peak_rss_mb():.1f} MB", flush=True)


def check(args, onnx_path, tmp):
    config = json.loads((pathlib.Path(args.model_dir) / "config.json").read_text())
    ids, types = random_ids(2, args.seq, config["vocab_size"], 7)
    types[:, args.seq // 2:] = 1
    inputs = os.path.join(tmp, "check_in.safetensors")
    output = os.path.join(tmp, "check_out.safetensors")
    write_inputs(inputs, ids, types)
    subprocess.run([args.bert_encode, f"--model_dir={args.model_dir}", f"--inputs={inputs}",
                    f"--output={output}", "--backend=cpu", f"--threads={args.threads}",
                    f"--dtype={args.dtype}"],
                   check=True, stderr=subprocess.DEVNULL)
    ours = read_safetensors(output)["sequence_output"].astype(np.float64)
    errors = {}
    ort = ort_session(onnx_path, args.threads).run(["sequence_output"], ort_feed(ids, types))[0]
    errors["onnxruntime"] = float(np.linalg.norm(ours - ort) / np.linalg.norm(ort))
    if not args.no_torch:
        theirs = torch_sequence_output(torch_model(args.model_dir, args.threads, args.dtype), ids,
                                       types)
        if args.dtype == "bfloat16":  # both bfloat16 engines against the float32 one
            errors["pytorch (bfloat16) vs onnxruntime"] = float(
                np.linalg.norm(theirs - ort) / np.linalg.norm(ort))
        else:
            errors["pytorch"] = float(np.linalg.norm(ours - theirs) / np.linalg.norm(theirs))
    return errors


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--cpu_bench", help="path to bench/cpu_bench")
    parser.add_argument("--bert_encode", help="path to tools/bert_encode")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1, help="seed the model was exported with")
    parser.add_argument("--no_torch", action="store_true", help="leave PyTorch out")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                        help="bfloat16: our AMX GEMM and PyTorch in bfloat16 (ONNX Runtime stays "
                             "float32)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--torch", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--onnx", help=argparse.SUPPRESS)
    parser.add_argument("--spinning", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    import onnxruntime
    with tempfile.TemporaryDirectory(prefix="bert-ort-") as tmp:
        onnx_path = os.path.join(tmp, "bert.onnx")
        build_onnx(args.model_dir, onnx_path)
        for name, error in check(args, onnx_path, tmp).items():
            what = "||pytorch - ort||" if name.startswith("pytorch (") else "||ours - theirs||"
            print(f"agreement with {name}: {what} / ||theirs|| = {error:.2e} "
                  f"(sequence_output, 2 x {args.seq})")
        engines = {
            "ours": [args.cpu_bench, "--serve", f"--threads={args.threads}", f"--seq={args.seq}",
                     f"--seed={args.seed}",
                     "--gemm=amx_bf16" if args.dtype == "bfloat16" else "--gemm=auto"],
            "ort_spin": [sys.executable, __file__, "--worker", "--onnx", onnx_path,
                         f"--model_dir={args.model_dir}", f"--seq={args.seq}",
                         f"--threads={args.threads}", "--spinning=1"],
            "ort_nospin": [sys.executable, __file__, "--worker", "--onnx", onnx_path,
                           f"--model_dir={args.model_dir}", f"--seq={args.seq}",
                           f"--threads={args.threads}", "--spinning=0"],
        }
        if not args.no_torch:
            engines["torch"] = [sys.executable, __file__, "--worker", "--torch",
                                f"--model_dir={args.model_dir}", f"--seq={args.seq}",
                                f"--threads={args.threads}", f"--dtype={args.dtype}"]
        procs = {}
        for name, cmd in engines.items():
            procs[name] = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                           text=True)
            while procs[name].stdout.readline().strip() != "ready":
                pass

        def run_once(name, batch):
            procs[name].stdin.write(f"{batch}\n")
            procs[name].stdin.flush()
            wall, cpu = procs[name].stdout.readline().split()
            return float(wall), float(cpu)

        rows = []
        for batch in [int(b) for b in args.batches.split(",")]:
            for name in engines:
                for _ in range(args.warmup):
                    run_once(name, batch)
            results = {name: [] for name in engines}
            for _ in range(args.iters):  # interleaved: each round runs every engine once
                for name in engines:
                    results[name].append(run_once(name, batch))
            summary = {}
            for name, runs in results.items():
                walls = sorted(r[0] for r in runs)
                cpus = sorted(r[1] for r in runs)
                summary[name] = {"median_ms": walls[len(walls) // 2], "min_ms": walls[0],
                                 "cpu_ms": cpus[len(cpus) // 2]}
            load = open("/proc/loadavg").read().split()[0]
            rows.append((batch, summary, load))
            print(f"batch {batch}: " + ", ".join(
                f"{n} {v['median_ms']:.0f} ms" for n, v in summary.items()) + f", load {load}",
                  file=sys.stderr)
        rss = {}
        for name, proc in procs.items():
            out, _ = proc.communicate("0\n")
            m = re.search(r"peak RSS ([\d.]+) MB", out)
            rss[name] = float(m.group(1)) if m else float("nan")
    versions = f"onnxruntime {onnxruntime.__version__}"
    if "torch" in engines:
        import torch
        import transformers
        versions += f", torch {torch.__version__}, transformers {transformers.__version__}"
    dtypes = ("; cpu engine and PyTorch in bfloat16, onnxruntime in float32"
              if args.dtype == "bfloat16" else "")
    print(f"\nBERT-base shape (random weights), seq {args.seq}, {args.threads} threads{dtypes}, "
          f"{args.warmup} warm-up then median of {args.iters} interleaved rounds; {versions}; "
          "ratio = cpu engine / best onnxruntime variant (/ PyTorch)")
    torch_head = " torch seq/s | ratio to torch |" if "torch" in engines else ""
    torch_cpu_head = " torch CPU-ms/seq |" if "torch" in engines else ""
    print(f"| batch | cpu engine seq/s | ort seq/s (spinning) | ort seq/s (no spinning) | ratio |"
          f"{torch_head} cpu engine CPU-ms/seq | ort CPU-ms/seq (spinning) | "
          f"ort CPU-ms/seq (no spinning) |{torch_cpu_head} load avg |")
    print("|---" * (9 + (3 if "torch" in engines else 0)) + "|")
    for batch, summary, load in rows:
        tput = {n: batch * 1000 / v["median_ms"] for n, v in summary.items()}
        best = max(tput["ort_spin"], tput["ort_nospin"])
        torch_cols = (f" {tput['torch']:.2f} | {tput['ours'] / tput['torch']:.2f} |"
                      if "torch" in engines else "")
        torch_cpu = f" {summary['torch']['cpu_ms'] / batch:.0f} |" if "torch" in engines else ""
        print(f"| {batch} | {tput['ours']:.2f} | {tput['ort_spin']:.2f} | "
              f"{tput['ort_nospin']:.2f} | {tput['ours'] / best:.2f} |{torch_cols} "
              f"{summary['ours']['cpu_ms'] / batch:.0f} | "
              f"{summary['ort_spin']['cpu_ms'] / batch:.0f} | "
              f"{summary['ort_nospin']['cpu_ms'] / batch:.0f} |{torch_cpu} {load} |")
    print(f"\npeak RSS MB: cpu engine {rss['ours']:.0f}, onnxruntime {rss['ort_spin']:.0f} "
          f"(spinning) / {rss['ort_nospin']:.0f} (no spinning)"
          + (f", torch {rss['torch']:.0f}" if "torch" in rss else ""))


if __name__ == "__main__":
    main()
