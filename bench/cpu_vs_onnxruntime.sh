#!/usr/bin/env bash
# CPU engine vs ONNX Runtime and PyTorch (Hugging Face transformers) at the BERT-base shape,
# same weights and threads, one table
# (method: bench/cpu_vs_onnxruntime.py). Builds the binaries with -c opt, exports seeded
# random BERT-base weights once (cached in .bench-cache/), installs the benchmark's Python
# tools (bench/requirements-bench.txt) into .venv-bench.
#
#   bench/cpu_vs_onnxruntime.sh [--threads=2] [--batches=1,8,32] [--seq=128] [--iters=5]
#       [--no_torch]
set -euo pipefail
cd "$(dirname "$0")/.."
. tools/lib.sh

seed=1
if [ ! -x .venv-bench/bin/python ]; then
  python3 -m venv .venv-bench
fi
if ! .venv-bench/bin/python -c "import onnx, onnxruntime, numpy, torch, transformers" 2>/dev/null; then
  .venv-bench/bin/pip install -q --disable-pip-version-check -r bench/requirements-bench.txt
fi

flags=(-c opt)
cuda_toolkit_present || flags+=(--config=nocuda)
bazel build "${flags[@]}" //bench:cpu_bench //tools:export_random_model //tools:bert_encode
bin=$(bazel info "${flags[@]}" bazel-bin 2>/dev/null)

model=.bench-cache/bert-base-seed$seed
if [ ! -f "$model/model.safetensors" ]; then
  "$bin/tools/export_random_model" --out="$model" --seed=$seed
fi

.venv-bench/bin/python bench/cpu_vs_onnxruntime.py --model_dir="$model" \
  --cpu_bench="$bin/bench/cpu_bench" --bert_encode="$bin/tools/bert_encode" --seed=$seed "$@"
