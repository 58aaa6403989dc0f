#!/usr/bin/env bash
# GPU check of the attention kernel in ONE device call (shared/DEVICE.md describes the machine).
#
#   bench/attention_gpu_check.sh prepare   # here: build, collect binaries + Debian libs
#   # then one device call, carry [".gpu/attention"], command:
#   #   bash bench/attention_gpu_check.sh run
#
# `run` executes attention_test (63 GPU cases + 2 argument cases) and attention_bench
# (f16, then bf16), writes logs and the JUnit XML to $OUT (one tar), and prints a short
# pass/fail table last.
set -uo pipefail
cd "$(dirname "$0")/.."
dir=.gpu/attention

case "${1:-}" in
  prepare)
    set -e
    # Static linking of our own libraries: only Debian's shared libs need to travel.
    bazel build --dynamic_mode=off //kernels/cuda:attention_test //bench:attention_bench
    rm -rf "$dir" && mkdir -p "$dir/bin" "$dir/lib"
    cp bazel-bin/kernels/cuda/attention_test bazel-bin/bench/attention_bench "$dir/bin/"
    for b in "$dir"/bin/*; do
      ldd "$b" | awk '/=>/{print $3}'
    done | sort -u | grep -vE '/(libc|libm|libdl|libpthread|librt|ld-linux|libgcc_s|libcudart|libcublas)[.-]' |
      while read -r lib; do cp -L "$lib" "$dir/lib/"; done
    ls -la "$dir/bin" "$dir/lib"
    du -sh "$dir"
    ;;
  run)
    out="${OUT:-/tmp/attention_out}"
    mkdir -p "$out/logs"
    export LD_LIBRARY_PATH=/usr/local/cuda/lib64:$PWD/$dir/lib
    nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv > "$out/logs/gpu.txt" 2>&1
    timeout 300 "$dir/bin/attention_test" --gtest_output="xml:$out/logs/attention_test.xml" \
      > "$out/logs/attention_test.log" 2>&1
    test_rc=$?
    timeout 120 "$dir/bin/attention_bench" --dtype=f16 > "$out/logs/bench_f16.txt" 2>&1
    bench16_rc=$?
    timeout 120 "$dir/bin/attention_bench" --dtype=bf16 > "$out/logs/bench_bf16.txt" 2>&1
    bench_bf_rc=$?
    tar -C "$out" -czf "$out/attention_results.tgz" logs
    echo "== failures (first 40 lines) =="
    grep -E "Failure|FAILED|error|got .* want" "$out/logs/attention_test.log" | head -40
    echo "== bench f16 ==";  cat "$out/logs/bench_f16.txt"
    echo "== bench bf16 =="; cat "$out/logs/bench_bf16.txt"
    echo "== summary =="
    cat "$out/logs/gpu.txt"
    grep -E '^\[==========\] [0-9]+ tests? from .* ran|^\[  PASSED  \] [0-9]|^\[  SKIPPED \] [0-9]|^\[  FAILED  \]' \
      "$out/logs/attention_test.log" | sort -u | head -70
    printf '%-18s %s\n' attention_test "rc=$test_rc" attention_bench_f16 "rc=$bench16_rc" \
      attention_bench_bf16 "rc=$bench_bf_rc"
    ;;
  *)
    echo "usage: $0 prepare|run" >&2
    exit 2
    ;;
esac
