#!/usr/bin/env python3
"""What bert_server's host path costs per sequence: its gRPC service, validation,
tokenization, batching and response assembly, in front of an engine that computes nothing
(bench/host_path_server.cc). The answer bounds how many sequences per second a server can
feed a GPU engine: sequences/s per core = 1e6 / (server CPU us per sequence).

For each server binary given (two commits' builds compare them in one run) and each
workload, in alternating rounds: start the server pinned to --server_cpus (default CPU 0),
warm it with a short bert_load step, then run one closed-loop step of bert_load pinned to
--load_cpus (default CPU 1; no warm-up, so the step covers the whole run) and read the
server's CPU time (user + system, from /proc/PID/stat) around it (which also covers
connecting and the calls answered after the window, whose sequences the rate leaves out: a
bias of about concurrency x inputs per call / sequences in the step, under 1 % here). Prints one row per round
and the medians. The load generator may saturate its CPUs first (its CPU share is
printed): the server's CPU time per sequence stays valid either way. --transports=tcp,unix
runs each over loopback TCP and over a Unix domain socket. Our binaries get
LD_LIBRARY_PATH from BERT_LD (gpu_check.sh sets it). Not a test: numbers depend on the
machine.

    python3 bench/host_path.py --server new=bazel-bin/bench/host_path_server \\
        --inputs_per_request 1,8 --rounds 3
    # several cores each (gpu_check.sh on the GPU machine):
    python3 bench/host_path.py --server gpu_host=.gpu/bin/host_path_server \\
        --bert_load .gpu/bin/bert_load --server_cpus 0-7 --load_cpus 8-15 \\
        --tokenization_workers 8 --concurrency 256 --inputs_per_request 1,16 --rounds 1
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def start_server(binary, vocab, workers, cpus, env, address):
    proc = subprocess.Popen(["taskset", "-c", cpus, binary, f"--vocab={vocab}",
                             f"--tokenization_workers={workers}", f"--address={address}",
                             "--exit_on_stdin_eof"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        proc.kill()
        raise SystemExit(f"{binary} did not start: {line!r}")
    return proc, line.split()[2]


def load(bert_load, address, args, duration_s, report, cpus, env):
    cmd = ["taskset", "-c", cpus, bert_load, f"--server={address}", f"--duration_s={duration_s}",
           "--warmup_s=0", f"--json_out={report}", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=duration_s + 120, env=env)
    if r.returncode != 0:
        raise SystemExit(f"bert_load failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    with open(report) as f:
        return json.load(f)["steps"][0]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--server", action="append", required=True,
                        help="NAME=PATH of a host_path_server binary (repeat to compare)")
    parser.add_argument("--bert_load", default=os.path.join(REPO, "bazel-bin/client/bert_load"))
    parser.add_argument("--vocab", default=os.path.join(REPO, "tests/data/bert_uncased_vocab.txt"))
    parser.add_argument("--inputs_per_request", default="1,8")
    parser.add_argument("--lengths", default="lognormal:36:128")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--tokenization_workers", type=int, default=1)
    parser.add_argument("--duration_s", type=float, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--server_cpus", default="0", help="taskset CPU list of the server")
    parser.add_argument("--load_cpus", default="1", help="taskset CPU list of bert_load")
    parser.add_argument("--transports", default="tcp",
                        help="tcp (loopback) and/or unix (a Unix domain socket), comma-separated")
    args = parser.parse_args()
    env = dict(os.environ)
    if os.environ.get("BERT_LD"):
        env["LD_LIBRARY_PATH"] = os.environ["BERT_LD"]
    servers = [s.split("=", 1) for s in args.server]
    workloads = [int(n) for n in args.inputs_per_request.split(",")]
    rows = {}
    transports = args.transports.split(",")
    if not transports or not set(transports) <= {"tcp", "unix"}:
        raise SystemExit(f"--transports: tcp and/or unix, not {args.transports!r}")
    print("| round | server | transport | inputs/call | seq/s | real tokens/s | "
          "server CPU us/seq | server CPU % (100: one core) | bert_load CPU % |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, "report.json")
        for round_index in range(args.rounds):
            for per_request in workloads:
                for transport in transports:
                    for name, binary in servers:
                        address = (f"unix:{os.path.join(tmp, 'host_path.sock')}"
                                   if transport == "unix" else "127.0.0.1:0")
                        load_args = [f"--concurrency={args.concurrency}",
                                     f"--lengths={args.lengths}",
                                     f"--inputs_per_request={per_request}", "--heads=pooled"]
                        proc, address = start_server(binary, args.vocab,
                                                     args.tokenization_workers,
                                                     args.server_cpus, env, address)
                        try:
                            load(args.bert_load, address, load_args, 2, report, args.load_cpus,
                                 env)  # warm-up
                            before = cpu_seconds(proc.pid)
                            step = load(args.bert_load, address, load_args, args.duration_s,
                                        report, args.load_cpus, env)
                            used = cpu_seconds(proc.pid) - before
                        finally:
                            proc.stdin.close()
                            try:
                                proc.wait(timeout=30)
                            except subprocess.TimeoutExpired:
                                proc.kill()
                                raise
                        sequences = step["sequences_per_s"] * args.duration_s
                        us_per_seq = 1e6 * used / sequences
                        rows.setdefault((name, transport, per_request), []).append(
                            (step["sequences_per_s"], us_per_seq))
                        print(f"| {round_index + 1} | {name} | {transport} | {per_request} | "
                              f"{step['sequences_per_s']:,.0f} | {step['tokens_per_s']:,.0f} | "
                              f"{us_per_seq:.1f} | {100 * used / args.duration_s:.0f} | "
                              f"{step['client_cpu_percent']:.0f} |", flush=True)
    print("\n| server | transport | inputs/call | median seq/s | median server CPU us/seq | "
          "seq/s per server core (1e6 / us) |")
    print("|---|---|---:|---:|---:|---:|")
    for (name, transport, per_request), values in rows.items():
        seq_s = statistics.median(v[0] for v in values)
        us = statistics.median(v[1] for v in values)
        print(f"| {name} | {transport} | {per_request} | {seq_s:,.0f} | {us:.1f} | "
              f"{1e6 / us:,.0f} |")


if __name__ == "__main__":
    sys.exit(main())
