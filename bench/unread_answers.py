#!/usr/bin/env python3
"""What answers nobody reads make bert_server hold. A client can ask for large outputs and
never take them (an HTTP/2 window of 0): each answer stays in the server until it is sent or
given up (--send_timeout_s, set far beyond this run here). This opens one such connection,
starts --calls Embed calls on it in waves of --wave (the default: 2 x 64, the most the
server's default --max_concurrent_requests lets one client hold: 64 answers being sent, then
64 more keeping their places), each asking for sequence_output and every layer of --inputs
one-word texts padded to 128 tokens (about 60 MB of float32 with the tiny model), waits until
every call has been answered or refused, and reads the server's resident memory (VmRSS). One server per configuration (the tiny test model on the CPU backend, built at
bazel-bin or BERT_BIN), each given its flags. Not a test: a measurement.

    python3 bench/unread_answers.py --config unlimited=--max_answer_memory_mb=0 \\
        --config default= --config 256=--max_answer_memory_mb=256
"""
import argparse
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(REPO, "tests", "python"), os.path.join(REPO, "tools")]
from raw_http2 import RawHttp2  # noqa: E402
from server_harness import Server, metric_value, stubs  # noqa: E402


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:  # VmRSS is in kB (KiB)
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def run(flags, args, wire):
    with Server(extra=flags + ["--send_timeout_s=3600"], metrics=True) as server:
        before = rss_mib(server.proc.pid)

        def count(code):
            return metric_value(server.metrics_text(), "bert_requests_total",
                                {"method": "Embed", "code": code}) or 0

        reader = RawHttp2("127.0.0.1", server.port, initial_window=0)  # takes nothing
        deadline = time.time() + args.timeout_s
        sent = 0
        while sent < args.calls:  # in waves: each once the one before is answered
            wave = min(args.wave, args.calls - sent)
            for _ in range(wave):
                reader.open_call("/bert.v1.BertService/Embed", wire)
            sent += wave
            while count("OK") + count("RESOURCE_EXHAUSTED") < sent:
                if time.time() > deadline:
                    raise RuntimeError("the calls were not all answered in time")
                time.sleep(0.2)
        time.sleep(1)
        held = rss_mib(server.proc.pid)
        answers = metric_value(server.metrics_text(), "bert_answer_memory_bytes") or 0
        ok, refused = count("OK"), count("RESOURCE_EXHAUSTED")
        reader.close()
        return ok, refused, answers / 2**20, before, held


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", action="append", required=True,
                        help="NAME=FLAGS (space-separated bert_server flags; may be empty)")
    parser.add_argument("--calls", type=int, default=128)
    parser.add_argument("--wave", type=int, default=64,
                        help="calls sent at once, the next wave once they are answered")
    parser.add_argument("--inputs", type=int, default=190)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--timeout_s", type=float, default=300)
    args = parser.parse_args()
    pb2, _ = stubs()
    request = pb2.EmbedRequest(
        inputs=[pb2.Input(text=pb2.TextInput(text_a="hello"))] * args.inputs,
        heads=[pb2.HEAD_SEQUENCE, pb2.HEAD_ENCODER_OUTPUTS], seq_length=128)
    wire = request.SerializeToString()
    print(f"{args.calls} Embed calls in waves of {args.wave} on one connection that reads "
          f"nothing; each {len(wire)} "
          f"bytes asking for sequence_output and every layer of {args.inputs} inputs at 128 "
          "tokens")
    print("| round | config | answered | refused | answers held (MiB, metric) | "
          "server RSS before (MiB) | after | held (MiB) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for round_index in range(args.rounds):
        for config in args.config:
            name, _, flags = config.partition("=")
            ok, refused, answers, before, held = run(flags.split(), args, wire)
            print(f"| {round_index + 1} | {name} | {ok:.0f} | {refused:.0f} | {answers:.0f} | "
                  f"{before:.0f} | {held:.0f} | {held - before:.0f} |", flush=True)


if __name__ == "__main__":
    main()
