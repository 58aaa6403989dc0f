#!/usr/bin/env bash
# GPU checks in one command, on a machine with an NVIDIA GPU, its driver and PyTorch (the
# Hugging Face baseline); method and expected length in bench/NOTES.md.
#
#   tools/gpu_check.sh build   # here (Bazel + nvcc, no GPU): build the GPU test binaries and
#                              # benchmarks, pack them and their non-glibc, non-CUDA Debian
#                              # shared libraries into .gpu/ (git-ignored; carry it)
#   tools/gpu_check.sh run [tests|bench|all]
#                              # there (GPU, no Bazel), from the repo root: run every GPU test
#                              # binary (gtest XML + logs), then our benchmark and the Hugging
#                              # Face baseline on the same weights, one comparison table, and a
#                              # pass/fail table last; logs tarred into $OUT (or .gpu/out).
#
# Device call: command "bash tools/gpu_check.sh run", carry [".gpu"], timeout_s ~540.
set -uo pipefail
cd "$(dirname "$0")/.."

TESTS=(
  "kernels/cuda:kernels_test"
  "kernels/cuda:split_k_gemm_test"
  "kernels/cuda:attention_test"
  "server/engine:cuda_engine_test"
)
BENCH=("bench:gpu_bench" "bench:attention_bench" "bench:gemm_bench" "bench:membw_bench")
# The serving path on the GPU: tools/gpu_serving_check.py drives these.
SERVING=(
  "server:bert_server"
  "client:bert_client"
  "tools:bert_encode"
)

build() {
  local targets=()
  for t in "${TESTS[@]}" "${BENCH[@]}" "${SERVING[@]}"; do targets+=("//$t"); done
  bazel build "${targets[@]}" || exit 1
  rm -rf .gpu && mkdir -p .gpu/bin .gpu/lib
  for t in "${TESTS[@]}" "${BENCH[@]}" "${SERVING[@]}"; do
    local path="bazel-bin/${t/://}"
    cp -L "$path" .gpu/bin/ || exit 1
    ldd "$path" | awk '/=> \//{print $3}' | while read -r lib; do
      case "$(basename "$lib")" in
        libc.so*|libm.so*|libdl.so*|libpthread.so*|librt.so*|ld-linux*|libgcc_s.so*) ;;
        libcudart*|libcublas*|libcuda.so*) ;;
        *) cp -Ln "$lib" .gpu/lib/ ;;
      esac
    done
  done
  chmod -R u+w .gpu
  ls .gpu/bin .gpu/lib
  # The device call carries at most 64 MiB: ship the libraries (OpenBLAS alone is ~36 MB)
  # and the binaries (~47 MB: every CUDA kernel for sm_90a + sm_80 + PTX) compressed; `run`
  # unpacks them.
  tar -C .gpu -cJf .gpu/lib.tar.xz lib && rm -rf .gpu/lib
  tar -C .gpu -cJf .gpu/bin.tar.xz bin && rm -rf .gpu/bin
  du -sh .gpu .gpu/bin.tar.xz .gpu/lib.tar.xz
}

# Unpacks .gpu/NAME.tar.xz (from `build`) into /tmp and links .gpu/NAME to it.
unpack() {
  local name="$1"
  if [ ! -e ".gpu/$name" ] && [ -f ".gpu/$name.tar.xz" ]; then
    mkdir -p "/tmp/gpu_check_$name" && tar -C "/tmp/gpu_check_$name" -xJf ".gpu/$name.tar.xz"
    ln -sfn "/tmp/gpu_check_$name/$name" ".gpu/$name" 2>/dev/null ||
      cp -r "/tmp/gpu_check_$name/$name" ".gpu/$name"
  fi
}

run() {
  local what="${1:-all}"
  # Only our binaries get the carried Debian libraries (Python/torch keep the system's).
  local ld="/usr/local/cuda/lib64:$PWD/.gpu/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-8}"
  unpack lib
  unpack bin
  local out="${OUT:-$PWD/.gpu/out}"
  local logs="$out/logs"
  mkdir -p "$logs"
  local table=()
  nvidia-smi > "$logs/nvidia-smi.txt" 2>&1 || true
  head -n 12 "$logs/nvidia-smi.txt"

  if [ "$what" = all ] || [ "$what" = tests ]; then
    # Runs: binary, log name, gtest filter. The engine's tests of the paths not yet verified on
    # a GPU (our split-K GEMM, programmatic launches) run in a process of their own, so that a
    # fault there (a sticky CUDA error ends every later test of its process) cannot take the
    # verified engine tests with it.
    local new_paths="*CustomGemm*:*Programmatic*"
    local runs=("kernels_test kernels_test *" "split_k_gemm_test split_k_gemm_test *"
                "attention_test attention_test *"
                "cuda_engine_test cuda_engine_test -$new_paths"
                "cuda_engine_test cuda_engine_test_new_paths $new_paths")
    local spec
    for spec in "${runs[@]}"; do
      local bin name filter
      read -r bin name filter <<< "$spec"
      local start=$SECONDS
      LD_LIBRARY_PATH="$ld" timeout 300 ".gpu/bin/$bin" --gtest_brief=1 \
        --gtest_filter="$filter" --gtest_output="xml:$logs/$name.xml" > "$logs/$name.log" 2>&1
      local rc=$?
      tail -n 25 "$logs/$name.log"
      local counts
      counts=$(python3 tools/count_results.py "$logs/$name.xml" 2>/dev/null | tail -n 1)
      table+=("$(printf '%-20s rc=%-3s %5ss  %s' "$name" "$rc" "$((SECONDS - start))" "$counts")")
    done
  fi

  if [ "$what" = all ] || [ "$what" = tests ]; then
    local start=$SECONDS
    BERT_LD="$ld" timeout 240 python3 tools/gpu_serving_check.py .gpu/bin \
      > "$logs/serving.log" 2>&1
    local rc=$?
    cat "$logs/serving.log"
    table+=("$(printf '%-20s rc=%-3s %5ss  %s' "serving (e2e)" "$rc" "$((SECONDS - start))" \
      "$(tail -n 1 "$logs/serving.log")")")
  fi

  if [ "$what" = all ] || [ "$what" = bench ]; then
    local model=".gpu/bert-base-random" lengths=".gpu/varlen.txt" start=$SECONDS
    python3 bench/hf_baseline.py --save_model "$model" --write_lengths "$lengths" \
      > "$logs/prepare.log" 2>&1
    local rc=$?
    cat "$logs/prepare.log"
    table+=("$(printf '%-20s rc=%-3s %5ss' "prepare (HF save)" "$rc" "$((SECONDS - start))")")
    local model_flag="--model_dir=$model"
    [ -f "$model/model.safetensors" ] || model_flag=""  # fall back to RandomModel
    start=$SECONDS
    LD_LIBRARY_PATH="$ld" timeout 240 .gpu/bin/gpu_bench $model_flag --varlen_file="$lengths" \
      --json="$logs/ours.json" 2>&1 | tee "$logs/ours.log"
    rc=${PIPESTATUS[0]}
    table+=("$(printf '%-20s rc=%-3s %5ss' "gpu_bench (ours)" "$rc" "$((SECONDS - start))")")
    # Options changed against the defaults above (fp16): what each step gains. compare.md shows
    # each as a column; goals.md names the fastest one per goal. Each entry: name, the batches
    # it runs ("+varlen": the variable-length batch too), the gpu_bench flags. Those aimed at
    # small batches skip 128 and varlen (time: the bench call must stay under 600 s).
    local variants=("exact_gelu 1,8,32,128+varlen --fused_gelu=false"
                    "no_autotune 1,8,32,128+varlen --gemm_autotune=false"
                    "graphs_all_rows 1,8,32,128+varlen --max_graph_rows=1000000"
                    "residual_in_gemm 1,8,32,128+varlen --residual_in_gemm=true"
                    "custom_gemm 1,8,32 --custom_gemm=true"
                    "pdl 1,8,32 --pdl=true"
                    "custom_gemm_pdl 1,8,32 --custom_gemm=true --pdl=true")
    local variant variant_files=()
    for variant in "${variants[@]}"; do
      local vname vbatches vflags
      read -r vname vbatches vflags <<< "$variant"
      local varlen_flag=""
      if [ "${vbatches%+varlen}" != "$vbatches" ]; then
        varlen_flag="--varlen_file=$lengths"
        vbatches="${vbatches%+varlen}"
      fi
      start=$SECONDS
      LD_LIBRARY_PATH="$ld" timeout 120 .gpu/bin/gpu_bench $model_flag $varlen_flag \
        --dtypes=fp16 --batches="$vbatches" $vflags --json="$logs/ours_$vname.json" 2>&1 |
        tee "$logs/ours_$vname.log"
      rc=${PIPESTATUS[0]}
      table+=("$(printf '%-20s rc=%-3s %5ss' "gpu_bench $vname" "$rc" "$((SECONDS - start))")")
      variant_files+=("$vname=$logs/ours_$vname.json")
    done
    # Every layer's output back (encoder_outputs), copies overlapped on a second stream vs on
    # the compute stream.
    for variant in "layers_overlap --overlap_copies=true" "layers_serial --overlap_copies=false"; do
      local vname="${variant%% *}" vflag="${variant#* }"
      start=$SECONDS
      LD_LIBRARY_PATH="$ld" timeout 120 .gpu/bin/gpu_bench $model_flag --dtypes=fp16 \
        --batches=8,32 --outputs=layers $vflag --json="$logs/ours_$vname.json" 2>&1 |
        tee "$logs/ours_$vname.log"
      rc=${PIPESTATUS[0]}
      table+=("$(printf '%-20s rc=%-3s %5ss' "gpu_bench $vname" "$rc" "$((SECONDS - start))")")
    done
    # fp16 without CUDA graphs (what the graphs gain) and the per-op profile (--profile).
    start=$SECONDS
    LD_LIBRARY_PATH="$ld" timeout 120 .gpu/bin/gpu_bench $model_flag --varlen_file="$lengths" \
      --dtypes=fp16 --batches=1,8,32,128 --cuda_graphs=false --profile --iters=20 \
      --json="$logs/ours_nographs.json" 2>&1 | tee "$logs/ours_nographs_profile.log"
    rc=${PIPESTATUS[0]}
    table+=("$(printf '%-20s rc=%-3s %5ss' "gpu_bench nographs+prof" "$rc" "$((SECONDS - start))")")
    # The attention kernel alone (fp16; the torch SDPA anchors it prints are in its source).
    start=$SECONDS
    LD_LIBRARY_PATH="$ld" timeout 60 .gpu/bin/attention_bench --dtype=f16 2>&1 |
      tee "$logs/attention_bench.log"
    rc=${PIPESTATUS[0]}
    table+=("$(printf '%-20s rc=%-3s %5ss' "attention_bench" "$rc" "$((SECONDS - start))")")
    # What the card sustains for the elementwise passes' traffic (the byte floors' yardstick).
    start=$SECONDS
    LD_LIBRARY_PATH="$ld" timeout 60 .gpu/bin/membw_bench 2>&1 | tee "$logs/membw_bench.log"
    rc=${PIPESTATUS[0]}
    table+=("$(printf '%-20s rc=%-3s %5ss' "membw_bench" "$rc" "$((SECONDS - start))")")
    # cuBLASLt heuristic top-1 vs autotune (without and with our split-K kernel) on the
    # encoder's Linear shapes (fp16), and our kernel alone at 1/2/4/8 splits for <= 256 rows.
    start=$SECONDS
    LD_LIBRARY_PATH="$ld" timeout 60 .gpu/bin/gemm_bench --dtypes=fp16 \
      --rows=128,256,1024,4096,9172,16384 \
      2>&1 | tee "$logs/gemm_bench.log"
    rc=${PIPESTATUS[0]}
    table+=("$(printf '%-20s rc=%-3s %5ss' "gemm_bench" "$rc" "$((SECONDS - start))")")
    start=$SECONDS
    if [ -n "$model_flag" ]; then
      timeout "${HF_TIMEOUT:-300}" python3 bench/hf_baseline.py --model_dir "$model" \
        --lengths "$lengths" --json "$logs/hf.json" 2>&1 | tee "$logs/hf.log" | grep -v Warning
      rc=${PIPESTATUS[0]}
    else
      rc="skipped"
    fi
    table+=("$(printf '%-20s rc=%-3s %5ss' "hf_baseline" "$rc" "$((SECONDS - start))")")
    if [ -f "$logs/ours.json" ]; then
      python3 bench/compare.py "$logs/ours.json" "$logs/hf.json" "${variant_files[@]}" |
        tee "$logs/compare.md"
      python3 bench/goals.py "$logs/ours.json" "$logs/hf.json" "$logs/ours.log" \
        "${variant_files[@]}" | tee "$logs/goals.md"
    fi
  fi

  tar -czf "$out/gpu_check_logs.tar.gz" -C "$logs" . 2>/dev/null
  echo
  echo "== GPU check summary ($(date -u +%FT%TZ), $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1))"
  for line in "${table[@]}"; do echo "$line"; done
}

case "${1:-}" in
  build) build ;;
  run) shift; run "$@" ;;
  *) echo "usage: $0 build | run [tests|bench|all]" >&2; exit 2 ;;
esac
