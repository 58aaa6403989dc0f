#!/usr/bin/env bash
# AddressSanitizer + UndefinedBehaviorSanitizer over the CPU build: every C++ test, then the
# Python end-to-end suite (tests/python) against servers, clients and tools built with the
# sanitizers. The build also makes plain `char` unsigned, as it is on aarch64 (Grace,
# Graviton), so that code assuming a signed char fails a test here. Any sanitizer report
# fails the run: a C++ test's fails that test, and each report of a process the Python tests
# started counts as one failed case. Prints "N passed, N failed, N skipped" last.
#
#   tools/sanitize.sh        # ~10 min cold on 2 cores; .ci/run runs it after tools/test.sh
#
# The sanitized build has its own Bazel output base (SANITIZE_OUTPUT_BASE, default one per
# checkout under ~/.cache), so the normal build's outputs and bazel-bin are left alone; its
# links are .sanitize/bin and .sanitize/testlogs.
set -uo pipefail
cd "$(dirname "$0")/.."
. tools/lib.sh

results=.sanitize/results
reports=.sanitize/reports
# Emptied first, so that no earlier run's results can be counted for this one.
mkdir -p .sanitize && rm -rf "$results" "$reports" && mkdir -p "$results" "$reports"
# The sanitizers' option parser splits values at spaces, commas and colons: a report path
# containing one would be cut short and its reports lost, so such checkouts are refused.
case "$PWD" in
  *[[:space:],:]*) echo "sanitize: the checkout's path must not contain spaces, ',' or ':'" >&2
    echo "0 passed, 1 failed"; exit 1 ;;
esac

tools/setup.sh --tests || { echo "0 passed, 1 failed"; exit 1; }

# One output base per checkout (Bazel ties an output base to one workspace).
output_base=${SANITIZE_OUTPUT_BASE:-$HOME/.cache/bert-serving-sanitize/$(pwd -P | md5sum | cut -c1-16)}
bazel_cmd=(bazel --output_base="$output_base")
flags=(--config=nocuda --config=asan --copt=-funsigned-char --symlink_prefix=.sanitize/)
# ASan stops at its first error; UBSan must be told to. Reports of processes the Python
# tests start go to files (their stderr is often captured by the tests).
asan="detect_leaks=1"
ubsan="halt_on_error=1:print_stacktrace=1"
# Leaks of third-party libraries, each reproduced (the file says how); a suppressed leak is
# not reported (nor summarised, which would write a report file).
lsan="suppressions=$PWD/tools/lsan_suppressions.txt:print_suppressions=0"

# Every package, named by its top-level directory: `//...` would also walk the normal
# build's convenience links (bazel-<checkout name>), which lead into another output base.
targets=(//:all)
for dir in */; do
  dir=${dir%/}
  case "$dir" in bazel-*) continue ;; esac
  [ -n "$(find -L "$dir" \( -name BUILD -o -name BUILD.bazel \) -print -quit 2>/dev/null)" ] &&
    targets+=("//$dir/...")
done

status=0
"${bazel_cmd[@]}" test "${flags[@]}" --test_summary=short \
  --test_env=ASAN_OPTIONS="$asan" --test_env=UBSAN_OPTIONS="$ubsan" \
  --test_env=LSAN_OPTIONS="$lsan" "${targets[@]}"
bazel_rc=$?
[ "$bazel_rc" = 0 ] || status=1
# Bazel's exit code 3 means tests failed (their XML says which); any other failure (the build)
# ran no test, and testlogs may still hold an earlier run's results: it counts as a failure.
if [ "$bazel_rc" != 0 ] && [ "$bazel_rc" != 3 ]; then
  write_junit_case "$results/bazel_exit.xml" bazel test "bazel test exited with $bazel_rc"
fi
collect_bazel_results .sanitize/testlogs "$results"
ASAN_OPTIONS="$asan:log_path=$PWD/$reports/asan" \
  UBSAN_OPTIONS="$ubsan:log_path=$PWD/$reports/ubsan" LSAN_OPTIONS="$lsan" \
  BERT_BIN="$PWD/.sanitize/bin" .venv/bin/python -m pytest -q tests/python \
  --junitxml="$results/pytest.xml" || status=1

# The processes the Python tests started: each report file is a failed case in the counts
# (a report need not fail the test that caused it).
count=$(find "$reports" -type f | wc -l)
if [ "$count" = 0 ]; then
  write_junit_case "$results/sanitizer_reports.xml" sanitizer_reports e2e_processes
fi
for f in "$reports"/*; do
  [ -f "$f" ] || continue
  write_junit_case "$results/sanitizer_report_$(basename "$f").xml" sanitizer_reports \
    "$(basename "$f")" "sanitizer report"
  echo "== $f" >&2
  head -n 40 "$f" >&2
done
"${bazel_cmd[@]}" shutdown >/dev/null 2>&1 || true
echo "sanitizer reports from end-to-end processes: $count"
.venv/bin/python tools/count_results.py "$results" || status=1
exit $status
