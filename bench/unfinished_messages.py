#!/usr/bin/env python3
"""What incoming messages that never finish make bert_server hold. gRPC buffers a message until
it is complete, before any handler (authentication, admission) sees it: a client can open
streams, announce large messages and send part of each. This opens one connection with
--streams streams; on each it announces an --announced_mb message and sends --mb_each of it
(as fast as the server's flow control lets it, giving up on a stream after 3 s without
window), then reads the server's resident memory (VmRSS) --settle_s later and again as much
after that. One server per configuration (the tiny test model on the CPU backend, built at
bazel-bin or BERT_BIN), each given its flags. Not a test: the figures depend on gRPC's timing.

    python3 bench/unfinished_messages.py \\
        --config unlimited=--grpc_memory_limit_mb=0 --config quota256=--grpc_memory_limit_mb=256
"""
import argparse
import os
import struct
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(REPO, "tests", "python"), os.path.join(REPO, "tools")]
from raw_http2 import RawHttp2  # noqa: E402
from server_harness import Server  # noqa: E402


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def run(flags, args):
    with Server(extra=flags) as server:
        before = rss_mb(server.proc.pid)
        client = RawHttp2("127.0.0.1", server.port)
        header = b"\x00" + struct.pack(">I", args.announced_mb << 20)
        sent = 0
        for _ in range(args.streams):
            stream = client.open_stream("/bert.v1.BertService/Embed")
            sent += client.send_data(stream, header + b"\x0a" * (args.mb_each << 20), wait_s=3)
        time.sleep(args.settle_s)
        held = rss_mb(server.proc.pid)
        time.sleep(args.settle_s)
        later = rss_mb(server.proc.pid)
        client.close()
        return sent / 2**20, before, held, later


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", action="append", required=True,
                        help="NAME=FLAGS (space-separated bert_server flags)")
    parser.add_argument("--streams", type=int, default=20)
    parser.add_argument("--announced_mb", type=int, default=60)
    parser.add_argument("--mb_each", type=int, default=25)
    parser.add_argument("--settle_s", type=float, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(f"{args.streams} streams on one connection, each announcing {args.announced_mb} MB "
          f"and sending up to {args.mb_each} MB of it")
    print("| round | config | MB sent | server RSS before (MB) | after | "
          f"{args.settle_s:g} s later | held (MB) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for round_index in range(args.rounds):
        for config in args.config:
            name, _, flags = config.partition("=")
            sent, before, held, later = run(flags.split(), args)
            print(f"| {round_index + 1} | {name} | {sent:.0f} | {before:.0f} | {held:.0f} | "
                  f"{later:.0f} | {later - before:.0f} |", flush=True)


if __name__ == "__main__":
    main()
