#!/usr/bin/env python3
"""A simple closed-loop load generator for bert_server: C concurrent clients, each sending
Embed requests back to back (a new one as soon as the previous answer arrives) for a fixed
duration after a warm-up. Reports requests/s, sequences/s, real tokens/s, latency
percentiles, and the server's mean batch size from /metrics.

    # start a server and load it (CPU backend, default model)
    .venv/bin/python bench/server_load.py --start --model_dir=models/all-MiniLM-L6-v2 \
        --concurrency=8 --inputs_per_request=4 --duration=20

    # or load a running server
    .venv/bin/python bench/server_load.py --server=127.0.0.1:50051 --metrics=127.0.0.1:9090

Method: texts are drawn from a fixed list of sentences (7-20 tokens each), heads default to
`mean_pooled` with PADDING_TRIM (a sentence-embedding workload); each client uses its own
channel. Latency is measured client-side around each blocking call. Not a test: numbers
depend on the machine and its load.
"""
import argparse
import os
import random
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "python"))
from server_harness import Server, metric_value, stubs  # noqa: E402

import grpc  # noqa: E402

SENTENCES = [
    "Please subscribe to this newsletter",
    "You are being offered this job role",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby while walking through the crowded market.",
    "Inference servers batch requests from many clients to keep the hardware busy.",
    "What is the capital of France?",
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Sentence embeddings map text to vectors whose distances reflect meaning.",
]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--server", default="")
    p.add_argument("--metrics", default="", help="HOST:PORT of the server's /metrics")
    p.add_argument("--start", action="store_true", help="start a bert_server (CPU backend)")
    p.add_argument("--model_dir", default="models/all-MiniLM-L6-v2")
    p.add_argument("--server_args", default="", help="extra flags for a started server")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--inputs_per_request", type=int, default=4)
    p.add_argument("--duration", type=float, default=20)
    p.add_argument("--warmup", type=float, default=3)
    p.add_argument("--heads", default="HEAD_MEAN_POOLED")
    p.add_argument("--padding", default="PADDING_TRIM")
    p.add_argument("--seq_length", type=int, default=128)
    args = p.parse_args()

    pb2, pb2_grpc = stubs()
    server = None
    if args.start:
        server = Server(model_dir=os.path.abspath(args.model_dir), metrics=True,
                        extra=[a for a in args.server_args.split() if a])
        address = server.address
        metrics_address = f"127.0.0.1:{server.metrics_port}"
    else:
        address, metrics_address = args.server, args.metrics
    heads = [getattr(pb2, h) for h in args.heads.split(",")]

    lock = threading.Lock()
    latencies, sequences, tokens, errors = [], [0], [0], {}
    start = time.time()
    measure_from = start + args.warmup
    stop_at = measure_from + args.duration

    def client(seed):
        rng = random.Random(seed)
        with grpc.insecure_channel(address) as ch:
            stub = pb2_grpc.BertServiceStub(ch)
            while time.time() < stop_at:
                texts = [rng.choice(SENTENCES) for _ in range(args.inputs_per_request)]
                req = pb2.EmbedRequest(
                    inputs=[pb2.Input(text=pb2.TextInput(text_a=t)) for t in texts],
                    heads=heads, padding=getattr(pb2, args.padding),
                    seq_length=args.seq_length)
                t0 = time.time()
                try:
                    resp = stub.Embed(req, timeout=60)
                    code = None
                except grpc.RpcError as e:
                    code = e.code().name
                t1 = time.time()
                if t0 < measure_from or t1 > stop_at:
                    continue
                with lock:
                    if code:
                        errors[code] = errors.get(code, 0) + 1
                    else:
                        latencies.append(t1 - t0)
                        sequences[0] += len(resp.results)
                        tokens[0] += sum(r.num_tokens for r in resp.results)

    batches_before = None
    if metrics_address:
        import urllib.request

        def scrape():
            with urllib.request.urlopen(f"http://{metrics_address}/metrics", timeout=5) as r:
                text = r.read().decode()
            return (metric_value(text, "bert_batch_size_count") or 0,
                    metric_value(text, "bert_batch_size_sum") or 0)
    threads = [threading.Thread(target=client, args=(i,)) for i in range(args.concurrency)]
    for t in threads:
        t.start()
    if metrics_address:
        time.sleep(max(0, measure_from - time.time()))
        batches_before = scrape()
    for t in threads:
        t.join()
    batch_note = ""
    if metrics_address and batches_before:
        after = scrape()
        n = after[0] - batches_before[0]
        if n > 0:
            batch_note = f"mean batch size {(after[1] - batches_before[1]) / n:.2f} sequences " \
                         f"over {int(n)} engine batches"
    if server:
        server.stop()

    lat = sorted(latencies)
    q = lambda f: lat[min(len(lat) - 1, int(f * len(lat)))] * 1e3  # noqa: E731
    print(f"server={address} concurrency={args.concurrency} "
          f"inputs_per_request={args.inputs_per_request} heads={args.heads} "
          f"padding={args.padding} duration={args.duration}s")
    if not lat:
        print("no successful requests", errors)
        return 1
    print(f"requests/s {len(lat) / args.duration:.1f}  sequences/s {sequences[0] / args.duration:.1f}"
          f"  tokens/s {tokens[0] / args.duration:.0f}")
    print(f"latency ms: p50 {q(0.5):.1f}  p90 {q(0.9):.1f}  p99 {q(0.99):.1f}  "
          f"mean {statistics.mean(lat) * 1e3:.1f}")
    if batch_note:
        print(batch_note)
    if errors:
        print("errors:", errors)
    return 0


if __name__ == "__main__":
    sys.exit(main())
