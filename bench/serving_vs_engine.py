#!/usr/bin/env python3
"""End-to-end serving throughput against the engine's own: issue 5's goal that bert_server
at saturation delivers >= 80% of the real tokens/s its engine reaches alone.

Starts bert_server on the model, drives it with bert_load (closed loop, a concurrency
sweep; synthetic texts whose lengths follow the engine benchmark's variable-length batch,
lognormal mean 36, max 128, so the server tokenizes, batches, encodes and answers each),
then once more with token ids at the largest concurrency (the same work without
tokenization). The engine's figure is gpu_bench's variable-length batch (--engine_json,
its --json output; same dtype): real tokens / GPU time. Prints one markdown table and the
goal line; --json_out keeps everything.

    # on the GPU machine (tools/gpu_check.sh runs it after gpu_bench)
    python3 bench/serving_vs_engine.py --bin .gpu/bin --model_dir .gpu/bert-base-random \
        --vocab tests/data/bert_uncased_vocab.txt --backend cuda --dtype float16 \
        --engine_json out/logs/ours.json
    # a dry run of the method here (CPU backend, tiny model, no engine figure)
    python3 bench/serving_vs_engine.py --bin bazel-bin --model_dir tests/golden/tiny-l4-h128 \
        --vocab tests/data/tiny_vocab_1024.txt --backend cpu --dtype float32 \
        --concurrency 1,4 --duration_s 2

Method: each step is bert_load's (warm-up, then a measured window; throughput counts the
answers that arrive in the window). The server runs with --max_batch_tokens
(default 16384) and admits every call in flight. Our binaries get LD_LIBRARY_PATH from
BERT_LD (gpu_check.sh sets it). Not a test: numbers depend on the machine.
"""
import argparse
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import time

GOAL = 0.80
DTYPE_KEYS = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def binary(bin_dir, name):
    """bazel-bin keeps binaries under their package; the GPU kit flat."""
    for path in (pathlib.Path(bin_dir) / name, pathlib.Path(bin_dir) / "server" / name,
                 pathlib.Path(bin_dir) / "client" / name):
        if path.is_file():
            return str(path)
    sys.exit(f"serving_vs_engine: no {name} under {bin_dir}")


def engine_tokens_per_s(path, dtype):
    """gpu_bench's variable-length batch: real tokens per second of GPU time."""
    if not path or not os.path.exists(path):
        return None
    for r in json.load(open(path)):
        if r["shape"].startswith("varlen") and r["dtype"] == DTYPE_KEYS[dtype]:
            return r["real_tokens"] / (r["gpu_ms"] / 1e3)
    return None


class ServerProcess:
    def __init__(self, args, env, log_path):
        self.port = free_port()
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(
            [binary(args.bin, "bert_server"), f"--model_dir={args.model_dir}",
             f"--vocab={args.vocab}", f"--backend={args.backend}", f"--dtype={args.dtype}",
             f"--address=127.0.0.1:{self.port}", f"--max_batch_tokens={args.max_batch_tokens}",
             "--max_concurrent_requests=100000", *args.server_args.split()],
            stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.log_path = log_path
        try:
            self._wait_serving(args, env)
        except BaseException:
            # Also on a timeout's SIGTERM: a server still warming up ignores SIGTERM until it
            # serves, and must not keep the GPU busy under the steps that come next.
            self.proc.kill()
            self.proc.wait()
            print(self.log_tail(), file=sys.stderr)
            raise

    def _wait_serving(self, args, env):
        client = binary(args.bin, "bert_client")
        deadline = time.time() + args.start_timeout_s
        while time.time() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"bert_server exited {self.proc.returncode}; see {self.log_path}")
            r = subprocess.run([client, f"--server=127.0.0.1:{self.port}", "health"],
                               capture_output=True, text=True, timeout=10, env=env)
            if r.stdout.strip() == "SERVING":
                return
            time.sleep(0.5)
        sys.exit(f"bert_server not SERVING after {args.start_timeout_s} s; see {self.log_path}")

    def log_tail(self, lines=20):
        self.log.flush()
        with open(self.log_path) as f:
            return "".join(f.readlines()[-lines:])

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return "killed"


def run_load(args, env, port, concurrency, input_kind, out_dir):
    report = pathlib.Path(out_dir) / f"serving_vs_engine_load_{input_kind}.json"
    cmd = [binary(args.bin, "bert_load"), f"--server=127.0.0.1:{port}",
           f"--concurrency={concurrency}", f"--inputs_per_request={args.inputs_per_request}",
           f"--lengths={args.lengths}", f"--input_kind={input_kind}", "--heads=pooled",
           f"--duration_s={args.duration_s}", f"--warmup_s={args.warmup_s}",
           f"--channels={args.channels}", f"--json_out={report}"]
    print("$", " ".join(cmd), flush=True)
    r = subprocess.run(cmd, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=60 + len(concurrency.split(",")) * (args.duration_s + args.warmup_s
                                                                   + 60))
    print(r.stdout, flush=True)
    if r.returncode != 0 or not report.exists():
        sys.exit(f"bert_load failed (rc {r.returncode})")
    return json.loads(report.read_text())["steps"]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bin", default="bazel-bin")
    p.add_argument("--model_dir", required=True)
    p.add_argument("--vocab", default="tests/data/bert_uncased_vocab.txt")
    p.add_argument("--backend", default="cuda")
    p.add_argument("--dtype", default="float16", choices=sorted(DTYPE_KEYS))
    p.add_argument("--engine_json", default="", help="gpu_bench --json output")
    p.add_argument("--concurrency", default="16,64,256")
    p.add_argument("--inputs_per_request", type=int, default=16)
    p.add_argument("--lengths", default="lognormal:36:128")
    p.add_argument("--duration_s", type=float, default=6)
    p.add_argument("--warmup_s", type=float, default=2)
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--max_batch_tokens", type=int, default=16384)
    p.add_argument("--server_args", default="", help="extra bert_server flags")
    p.add_argument("--start_timeout_s", type=float, default=100,
                   help="model load + warm-up (autotune included) must end within this")
    p.add_argument("--json_out", default="")
    args = p.parse_args()

    # A timeout's SIGTERM unwinds through the finally below, so the server is stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    env = dict(os.environ)
    if os.environ.get("BERT_LD"):
        env["LD_LIBRARY_PATH"] = os.environ["BERT_LD"]
    out_dir = (os.path.dirname(os.path.abspath(args.json_out)) if args.json_out
               else tempfile.mkdtemp(prefix="serving_vs_engine_"))
    os.makedirs(out_dir, exist_ok=True)
    server = ServerProcess(args, env, os.path.join(out_dir, "serving_vs_engine_server.log"))
    try:
        steps = run_load(args, env, server.port, args.concurrency, "text", out_dir)
        largest = args.concurrency.split(",")[-1]
        steps += run_load(args, env, server.port, largest, "tokens", out_dir)
    finally:
        code = server.stop()
    engine = engine_tokens_per_s(args.engine_json, args.dtype)

    print(f"\n### bert_server end to end vs the engine ({args.backend}, {args.dtype}, "
          f"{args.inputs_per_request} inputs per call, lengths {args.lengths})\n")
    print("| inputs | sequences in flight | req/s | seq/s | real tokens/s | p50 ms | p99 ms "
          "| errors | bert_load CPU % | vs engine |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    kinds = ["text"] * (len(steps) - 1) + ["tokens"]
    for kind, s in zip(kinds, steps):
        ratio = f"{s['tokens_per_s'] / engine:.2f}" if engine else "–"
        errors = sum(s["errors"].values())
        print(f"| {kind} | {s['concurrency'] * args.inputs_per_request} | "
              f"{s['requests_per_s']:.0f} | {s['sequences_per_s']:.0f} | "
              f"{s['tokens_per_s']:,.0f} | {s['latency_ms']['p50']:.2f} | "
              f"{s['latency_ms']['p99']:.2f} | {errors} | {s['client_cpu_percent']:.0f} | "
              f"{ratio} |")
    best = max(s["tokens_per_s"] for s, k in zip(steps, kinds) if k == "text")
    if engine:
        verdict = "MET" if best >= GOAL * engine else "MISSED"
        print(f"\nengine alone (gpu_bench varlen): {engine:,.0f} real tokens/s; best end to end "
              f"(text): {best:,.0f} = {best / engine:.2f} of it; goal >= {GOAL:.2f}: {verdict}")
    else:
        print(f"\nbest end to end (text): {best:,.0f} real tokens/s; no engine figure given")
    print(f"server exit on SIGTERM: {code}")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"engine_tokens_per_s": engine, "steps": steps, "kinds": kinds,
                       "server_exit": code, "args": vars(args)}, f, indent=2)
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
