#!/usr/bin/env python3
"""What restarting one server of two costs the callers. Two bert_servers (the tiny test model
on the CPU backend, each given --flags) behind one client channel (round robin over both
addresses; with --health_check, gRPC's client-side health checking as well, as a client or load
balancer that follows health would; with --service_config, that file's config, such as
client/service_config.json's health checking and retries); --callers threads call Embed without pause (one short
input each, or with --heavy 8 inputs of 256 tokens); after --before_s, SIGTERM to the first
server; once it has exited the calls go on for --after_s. Counts every call's outcome. Each
--server NAME=BIN_DIR (a Bazel output tree holding server/bert_server, e.g. two commits'
builds) runs every round, alternated. Not a test: a measurement.

    python3 bench/restart_under_load.py --server now=bazel-bin --rounds 3
    python3 bench/restart_under_load.py --server now=bazel-bin --flags=--drain_delay_s=2 \\
        --health_check --rounds 3
"""
import argparse
import collections
import json
import os
import signal
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(REPO, "tests", "python"), os.path.join(REPO, "tools")]
import grpc  # noqa: E402
from server_harness import Server, stubs  # noqa: E402


def one_round(args, bin_dir):
    pb2, pb2_grpc = stubs()
    os.environ["BERT_BIN"] = bin_dir  # read by server_harness when a server starts
    flags = args.flags.split() if args.flags else []
    if args.service_config:
        with open(args.service_config) as f:
            options = [("grpc.service_config", json.dumps(json.load(f)))]
    elif args.health_check:
        options = [("grpc.service_config", json.dumps({
            "loadBalancingConfig": [{"round_robin": {}}],
            "healthCheckConfig": {"serviceName": ""}}))]
    else:
        options = [("grpc.lb_policy_name", "round_robin")]
    if args.heavy:
        text = "the quick brown fox jumps over the lazy dog " * 20
        request = pb2.EmbedRequest(inputs=[pb2.Input(text=pb2.TextInput(text_a=text))] * 8,
                                   seq_length=256)
    else:
        request = pb2.EmbedRequest(inputs=[pb2.Input(text=pb2.TextInput(text_a="hello"))])
    with Server(extra=flags) as a, Server(extra=flags) as b:
        channel = grpc.insecure_channel(f"ipv4:127.0.0.1:{a.port},127.0.0.1:{b.port}",
                                        options=options)
        stub = pb2_grpc.BertServiceStub(channel)
        outcomes, lock, stop = collections.Counter(), threading.Lock(), threading.Event()

        def call():
            while not stop.is_set():
                try:
                    stub.Embed(request, timeout=60)
                    code = "OK"
                except grpc.RpcError as e:
                    code = e.code().name
                with lock:
                    outcomes[code] += 1

        threads = [threading.Thread(target=call) for _ in range(args.callers)]
        for t in threads:
            t.start()
        time.sleep(args.before_s)
        a.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        rc = a.proc.wait(timeout=300)
        stop_s = time.monotonic() - signalled
        time.sleep(args.after_s)
        stop.set()
        for t in threads:
            t.join(timeout=120)
        channel.close()
    return {"outcomes": dict(outcomes), "exit": rc, "stop_s": stop_s}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", action="append", required=True, metavar="NAME=BIN_DIR")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--callers", type=int, default=16)
    parser.add_argument("--heavy", action="store_true")
    parser.add_argument("--health_check", action="store_true")
    parser.add_argument("--service_config", help="the channel's service config, a JSON file "
                        "(e.g. client/service_config.json); replaces --health_check")
    parser.add_argument("--flags", default="", help="server flags, space-separated")
    parser.add_argument("--before_s", type=float, default=2.0)
    parser.add_argument("--after_s", type=float, default=1.0)
    args = parser.parse_args()
    servers = [s.split("=", 1) for s in args.server]
    print(f"callers={args.callers} request={'heavy' if args.heavy else 'light'} "
          f"health_check={args.health_check} service_config={args.service_config} "
          f"flags={args.flags or '(none)'}")
    print("| round | server | calls | OK | failed (by code) | first server's exit | its stop s |")
    print("|---|---|---|---|---|---|---|")
    totals = collections.defaultdict(collections.Counter)
    for round_index in range(1, args.rounds + 1):
        for name, bin_dir in servers:
            r = one_round(args, os.path.abspath(bin_dir))
            failed = {k: v for k, v in r["outcomes"].items() if k != "OK"}
            totals[name].update(r["outcomes"])
            print(f"| {round_index} | {name} | {sum(r['outcomes'].values())} | "
                  f"{r['outcomes'].get('OK', 0)} | "
                  f"{', '.join(f'{k} {v}' for k, v in sorted(failed.items())) or '0'} | "
                  f"{r['exit']} | {r['stop_s']:.2f} |", flush=True)
    for name, _ in servers:
        failed = sum(v for k, v in totals[name].items() if k != "OK")
        print(f"{name}: {failed} of {sum(totals[name].values())} calls failed "
              f"({dict(totals[name])})")


if __name__ == "__main__":
    main()
