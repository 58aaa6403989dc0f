#!/usr/bin/env python3
"""bert_load's peak memory against the length of a step: whether it grows with the number
of calls a step makes.

Starts bert_server (CPU backend, the tiny golden model, so that it answers a few thousand
calls per second), then runs each given bert_load binary for each duration in turn
(closed loop, --concurrency, one step, 1 s of warm-up) and prints its peak resident set
(GNU time's %M) next to the calls it made. Give the binaries of two commits to
compare them in the same run. Not a test: numbers depend on the machine.

    python3 bench/load_tester_memory.py --bert_load old=/tmp/bert_load_old \\
        --bert_load new=bazel-bin/client/bert_load --durations 10,60
"""
import argparse
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "python"))
sys.path.insert(0, os.path.join(REPO, "tools"))
os.environ.setdefault("BERT_BIN", os.path.join(REPO, "bazel-bin"))
from server_harness import Server  # noqa: E402

GNU_TIME = "/usr/bin/time"  # Debian package `time` (tools/setup.sh --tests installs it)


def run_once(binary, address, concurrency, duration_s):
    """Runs one step; returns (peak RSS in kB, calls in the window)."""
    # GNU time execs the binary from a small process of its own: the child's rusage seen
    # from Python would also hold this interpreter's memory (the peak survives exec).
    r = subprocess.run([GNU_TIME, "-f", "maxrss_kb=%M", binary, f"--server={address}",
                        f"--concurrency={concurrency}", f"--duration_s={duration_s}",
                        "--warmup_s=1", "--lengths=fixed:8"],
                       capture_output=True, text=True, timeout=duration_s + 120)
    rss = [line for line in r.stderr.splitlines() if line.startswith("maxrss_kb=")]
    row = [line for line in r.stdout.splitlines() if line.startswith(f"c={concurrency} ")]
    if r.returncode != 0 or not rss or not row:
        raise SystemExit(f"{binary} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return int(rss[0].split("=")[1]), int(row[0].split()[1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bert_load", action="append", required=True,
                        help="NAME=PATH of a bert_load binary (repeat to compare)")
    parser.add_argument("--durations", default="10,60", help="seconds per step, comma-separated")
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    if not os.access(GNU_TIME, os.X_OK):
        raise SystemExit(f"needs GNU time at {GNU_TIME} (apt install time)")
    binaries = [b.split("=", 1) for b in args.bert_load]
    durations = [int(d) for d in args.durations.split(",")]
    print("| binary | step (s) | calls in the window | peak RSS (MB) |")
    print("|---|---:|---:|---:|")
    with Server() as server:
        for duration in durations:
            for name, path in binaries:
                rss_kb, calls = run_once(path, server.address, args.concurrency, duration)
                print(f"| {name} | {duration} | {calls:,} | {rss_kb / 1024:.1f} |", flush=True)


if __name__ == "__main__":
    main()
