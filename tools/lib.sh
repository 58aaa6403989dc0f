# Shell helpers shared by the repository's scripts. Source it from the repository root
# (`. tools/lib.sh`); it defines functions only and changes no shell options.

# True when the CUDA toolkit that the WORKSPACE's @cuda repository and bazel/cuda.bzl use
# (/usr/local/cuda, nvcc in particular) is installed; the scripts then build the CUDA
# backend, else they add --config=nocuda. Says nothing about whether a GPU is present.
cuda_toolkit_present() {
  [ -x /usr/local/cuda/bin/nvcc ]
}

# Copies every test.xml under TESTLOGS (a Bazel testlogs link) into the folder RESULTS, as
# bazel_<package>_<target>_test.xml, for tools/count_results.py.
collect_bazel_results() {
  local testlogs=$1 results=$2
  [ -d "$testlogs" ] || return 0
  # run_N_of_M/ results come only from a manual `bazel test --runs_per_test=M` (the test
  # scripts never pass it) and stay in the tree afterwards: never this run's, so skipped.
  (cd "$testlogs" && find -L . -name test.xml -not -path '*/run_*_of_*/*' -print0) |
    while IFS= read -r -d '' f; do
      cp "$testlogs/$f" "$results/bazel_$(echo "${f#./}" | tr '/' '_')"
    done
}

# Writes the JUnit file FILE holding one case NAME of suite SUITE, failed with MESSAGE when
# one is given: outcomes that are no test's own (a failed build, a sanitizer report) counted
# by tools/count_results.py like test cases.
write_junit_case() {
  local file=$1 suite=$2 name=$3 message=${4:-}
  {
    echo '<?xml version="1.0" encoding="UTF-8"?>'
    echo "<testsuites><testsuite name=\"$suite\" tests=\"1\">"
    echo "<testcase classname=\"$suite\" name=\"$name\">"
    if [ -n "$message" ]; then echo "<failure message=\"$message\"/>"; fi
    echo '</testcase></testsuite></testsuites>'
  } > "$file"
}
