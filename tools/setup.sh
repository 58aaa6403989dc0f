#!/usr/bin/env bash
# Installs everything the project needs on a fresh Debian 12 / Ubuntu 24.04 machine:
# Debian packages (Bazel, gRPC, Protobuf, abseil, GoogleTest, OpenBLAS, utf8proc, ...),
# the Python test tools in .venv, and the default model in models/. Idempotent.
#
#   tools/setup.sh            # everything to build and serve
#   tools/setup.sh --tests    # ... and what only the tests use (tools/test.sh passes it)
#   tools/setup.sh --no-model # skip the default model
set -euo pipefail
cd "$(dirname "$0")/.."

want_model=1
want_tests=0
for arg in "$@"; do
  case "$arg" in
    --no-model) want_model=0 ;;
    --tests) want_tests=1 ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done

sudo_cmd=""
if [ "$(id -u)" != 0 ]; then sudo_cmd="sudo"; fi

packages=(
  bazel-bootstrap pkg-config
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev libgtest-dev libgmock-dev libbenchmark-dev
  nlohmann-json3-dev libopenblas-dev libutf8proc-dev prometheus-cpp-dev
  python3-venv curl unzip clang
)
# The aarch64 cross compiler: tests/python/test_portability.py compiles the CPU path with it
# (on an arm64 host the native g++ already answers to that name).
if [ "$want_tests" = 1 ] && [ "$(dpkg --print-architecture)" != arm64 ]; then
  packages+=(g++-aarch64-linux-gnu)
fi
# GNU time: bench/load_tester_memory.py (and its dry run in the tests) reads peak memory
# with it.
if [ "$want_tests" = 1 ]; then packages+=(time); fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

# Debian's bazel wrapper resolves .bazelversion (4.2.3) to /usr/bin/bazel-4.2.3; the
# package ships the binary as bazel-4.
if [ ! -x /usr/bin/bazel-4.2.3 ] && [ -x /usr/bin/bazel-4 ]; then
  $sudo_cmd ln -sf bazel-4 /usr/bin/bazel-4.2.3
fi

# Python tools used by the tests (reference tokenizer, gRPC client, safetensors I/O).
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# Installed whenever the pinned requirements differ from what this venv last installed.
if ! cmp -s tools/requirements-test.txt .venv/.requirements-test.txt; then
  .venv/bin/pip install -q --disable-pip-version-check -r tools/requirements-test.txt
  cp tools/requirements-test.txt .venv/.requirements-test.txt
fi

# promtool, Prometheus's rule checker (tests/python/test_monitoring.py checks
# deploy/prometheus with it): taken out of Debian's prometheus package into the venv, since
# installing the package would also start a Prometheus server on this machine.
if [ "$want_tests" = 1 ] && ! .venv/bin/promtool --version >/dev/null 2>&1; then
  echo "setup: installing promtool"
  deb_dir=$(mktemp -d)
  trap 'rm -rf "$deb_dir"' EXIT
  chmod 777 "$deb_dir"  # apt downloads as its own user (_apt) where it can
  if ! (cd "$deb_dir" && apt-get download -qq prometheus); then
    echo "setup: updating the package lists and trying again"
    $sudo_cmd apt-get update -qq
    (cd "$deb_dir" && apt-get download -qq prometheus)
  fi
  dpkg-deb --fsys-tarfile "$deb_dir"/prometheus_*.deb | tar -x -C "$deb_dir" ./usr/bin/promtool
  # Under a temporary name first: an interrupted copy must not pass for a promtool.
  cp "$deb_dir/usr/bin/promtool" .venv/bin/promtool.tmp
  mv -f .venv/bin/promtool.tmp .venv/bin/promtool
  rm -rf "$deb_dir"
  trap - EXIT
fi

if [ "$want_model" = 1 ]; then
  tools/fetch_default_model.sh
fi
echo "setup: done"
