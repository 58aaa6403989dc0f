#!/usr/bin/env python3
"""Two or more builds of the CPU engine, alternated batch by batch: an A/B on a shared machine.

Wall times on a shared VM move by 10-30 % from one minute to the next (bench/RESULTS_cpu.md),
more than most changes to the engine gain. Runs of one binary after the other's therefore
compare the machine's moods as much as the binaries. This script starts each binary once, as
a long-lived `cpu_bench --serve` process (weights made and packed once), and for each batch
size runs the batch in every process in turn, round after round (the order reversed every
other round, so that neither is always first after the pause). Both see the same load, and
the per-round ratio to the first binary cancels most of it.

    bench/cpu_ab.py --bin old=/tmp/old/cpu_bench --bin new=bazel-bin/bench/cpu_bench \\
        --batches=1,8 --rounds=15 -- --threads=2 --seq=128

Everything after `--` goes to every cpu_bench (the same model seed, threads, sequence
length). Reported per batch size and binary: median and minimum wall ms, median CPU ms, and
the median of the per-round ratios to the first binary with the number of rounds in which it
was faster. Build the binaries with -c opt (bench/cpu_vs_onnxruntime.sh does).
"""
import argparse
import statistics
import subprocess
import sys


class Engine:
    """One `cpu_bench --serve` process: a batch size in, '<wall_ms> <cpu_ms>' out."""

    def __init__(self, name, path, args):
        self.name = name
        self.proc = subprocess.Popen([path, "--serve", *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        # cpu_bench names the model and the device, then says "ready".
        for line in self.proc.stdout:
            if line.strip() == "ready":
                return
        raise RuntimeError(f"{name}: {path} did not start serving (exit {self.proc.wait()})")

    def run(self, batch):
        self.proc.stdin.write(f"{batch}\n")
        self.proc.stdin.flush()
        fields = self.proc.stdout.readline().split()
        if len(fields) != 2:
            raise RuntimeError(f"{self.name}: no timing for batch {batch} (exit "
                               f"{self.proc.poll()})")
        return float(fields[0]), float(fields[1])

    def close(self):
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin", action="append", required=True, metavar="NAME=PATH",
                        help="a cpu_bench binary; the first is the baseline of the ratios")
    parser.add_argument("--batches", default="1,8", help="comma-separated batch sizes")
    parser.add_argument("--rounds", type=int, default=15, help="timed rounds per batch size")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds per batch size")
    parser.add_argument("cpu_bench_args", nargs="*", help="after --: flags for every cpu_bench")
    args = parser.parse_args()
    pairs = [b.split("=", 1) for b in args.bin]
    if len(pairs) < 2 or any(len(p) != 2 or not p[0] for p in pairs):
        parser.error("give at least two --bin NAME=PATH")
    if len({name for name, _ in pairs}) != len(pairs):
        parser.error("each --bin needs a name of its own")
    batches = [int(b) for b in args.batches.split(",")]
    if args.rounds < 1 or any(b < 1 for b in batches):
        parser.error("--rounds and every batch size must be positive")

    engines = []
    try:
        for name, path in pairs:
            engines.append(Engine(name, path, args.cpu_bench_args))
        print("| batch | binary | median ms | min ms | median CPU ms | ratio to "
              f"{engines[0].name} (median of rounds) | rounds faster |")
        print("|---|---|---|---|---|---|---|")
        for batch in batches:
            for _ in range(args.warmup):
                for e in engines:
                    e.run(batch)
            wall = {e.name: [] for e in engines}
            cpu = {e.name: [] for e in engines}
            for r in range(args.rounds):
                for e in engines if r % 2 == 0 else engines[::-1]:
                    w, c = e.run(batch)
                    wall[e.name].append(w)
                    cpu[e.name].append(c)
            base = wall[engines[0].name]
            for e in engines:
                ratios = [w / b for w, b in zip(wall[e.name], base)]
                faster = "–" if e is engines[0] else \
                    f"{sum(1 for x in ratios if x < 1)}/{args.rounds}"
                print(f"| {batch} | {e.name} | {statistics.median(wall[e.name]):.1f} | "
                      f"{min(wall[e.name]):.1f} | {statistics.median(cpu[e.name]):.1f} | "
                      f"{statistics.median(ratios):.3f} | {faster} |", flush=True)
    except (RuntimeError, OSError) as e:
        print(f"cpu_ab: {e}", file=sys.stderr)
        return 1
    finally:
        for e in engines:
            e.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
