#!/usr/bin/env bash
# Builds the server and client with Bazel and collects a self-contained runtime tree:
#   dist/bin/{bert_server,bert_client,bert_load,bert_encode,bert_tokenize}
#   dist/lib/   the Debian shared libraries they need (gRPC, protobuf, abseil, ...) and,
#               for CUDA builds, libcudart/libcublas/libcublasLt from /usr/local/cuda
#   dist/models/all-MiniLM-L6-v2/   the default model
# deploy/docker/Dockerfile turns dist/ into an image.
#   tools/package.sh            # CUDA build when the toolkit is at /usr/local/cuda (the
#                               # binaries then run on CPU-only hosts too), else CPU-only
#   tools/package.sh --nocuda   # CPU-only build
set -euo pipefail
cd "$(dirname "$0")/.."
. tools/lib.sh

tools/setup.sh  # Bazel and the build's packages (idempotent)

flags=()
if [ "${1:-}" = "--nocuda" ] || ! cuda_toolkit_present; then
  flags+=(--config=nocuda)
fi
targets=(//server:bert_server //client:bert_client //client:bert_load //tools:bert_encode
  //tools:bert_tokenize)
bazel build "${flags[@]}" "${targets[@]}"
tools/fetch_default_model.sh

rm -rf dist && mkdir -p dist/bin dist/lib dist/models
for t in "${targets[@]}"; do
  path="bazel-bin/${t#//}"; path="${path/://}"
  install -m 0755 "$path" dist/bin/
done
# Shared libraries, minus glibc's own (the base image has them).
ldd dist/bin/* | awk '/=> \//{print $3}' | sort -u |
  grep -vE '/(libc|libm|libdl|libpthread|librt|ld-linux-[^/]*|libgcc_s|libstdc\+\+)\.so' |
  while read -r lib; do cp -L "$lib" dist/lib/; done
cp -r models/all-MiniLM-L6-v2 dist/models/
echo "package: dist/ ready ($(du -sh dist | cut -f1))"
