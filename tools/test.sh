#!/usr/bin/env bash
# The project's test command: installs what is needed (tools/setup.sh), builds everything,
# runs every C++ test (bazel test //...) and every Python end-to-end test (tests/python,
# against the binaries just built), then prints one closing line
# "N passed, N failed, N skipped".
#
#   tools/test.sh                 # everything
#   BAZEL_FLAGS=--config=nocuda tools/test.sh   # on a machine without the CUDA toolkit
set -uo pipefail
cd "$(dirname "$0")/.."
. tools/lib.sh

# Emptied first, so that no earlier run's results can be counted for this one.
rm -rf .test-results && mkdir -p .test-results
tools/setup.sh --tests || { echo "0 passed, 1 failed"; exit 1; }

flags=(${BAZEL_FLAGS:-})
if ! cuda_toolkit_present && [[ " ${flags[*]} " != *nocuda* ]]; then
  echo "test: no CUDA toolkit at /usr/local/cuda; building the CPU backend only"
  flags+=(--config=nocuda)
fi

status=0
bazel build "${flags[@]}" //... || status=1
if [ $status = 0 ]; then
  bazel test "${flags[@]}" --test_summary=short //... || status=1
  # Collect each test target's JUnit XML.
  collect_bazel_results bazel-testlogs .test-results
  BERT_BIN="$PWD/bazel-bin" .venv/bin/python -m pytest -q tests/python \
    --junitxml=.test-results/pytest.xml || status=1
fi

.venv/bin/python tools/count_results.py .test-results || status=1
exit $status
