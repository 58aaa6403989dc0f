#!/usr/bin/env bash
# GPU checks in one command, on a machine with an NVIDIA GPU, its driver and PyTorch (the
# Hugging Face baseline); method and expected length in bench/NOTES.md.
#
#   tools/gpu_check.sh build   # here (Bazel + nvcc, no GPU): build the GPU test binaries and
#                              # benchmarks, pack them and their non-glibc, non-CUDA Debian
#                              # shared libraries into .gpu/ (git-ignored; carry it)
#   tools/gpu_check.sh run [all|tests|bench|micro|serving]
#                              # there (GPU, no Bazel), from the repo root: tests = every GPU
#                              # test binary (gtest XML + logs) and the serving check; bench =
#                              # our benchmark, the Hugging Face baseline on the same weights,
#                              # the option variants (compare.md, goals.md) and the server end
#                              # to end against the engine; micro =
#                              # compute-sanitizer (memcheck, racecheck, synccheck) on the
#                              # attention kernel's tile variants, gemm_bench, the per-op
#                              # profile, every-layer copies, attention_bench, membw_bench;
#                              # serving = the server end to end vs the engine alone;
#                              # all = tests, bench, micro in that order, within DEADLINE_S. A pass/fail
#                              # table last; logs under $OUT (or .gpu/out), also tarred.
#
# Device call: command "bash tools/gpu_check.sh run all", carry [".gpu"], timeout_s 600 (steps
# that would pass DEADLINE_S, default 570 s, are skipped; see bench/NOTES.md).
set -uo pipefail
cd "$(dirname "$0")/.."

TESTS=(
  "kernels/cuda:kernels_test"
  "kernels/cuda:split_k_gemm_test"
  "kernels/cuda:attention_test"
  "server/engine:cuda_engine_test"
)
# Every default that no GPU run has measured yet turned off: the engine of run 3
# (bench/NOTES.md) as far as flags reach. The run3_config variant and the legend use it.
RUN3_FLAGS="--fused_gelu=false --gemm_autotune=false --cuda_graph_max_rows=1000000"
RUN3_FLAGS+=" --cuda_attention_tile=64 --cuda_layer_norm_hoist_max_rows=0"
RUN3_FLAGS+=" --cuda_overlap_copies=false"
BENCH=("bench:gpu_bench" "bench:attention_bench" "bench:gemm_bench" "bench:membw_bench")
# The serving path on the GPU: tools/gpu_serving_check.py and bench/serving_vs_engine.py
# drive these.
SERVING=(
  "server:bert_server"
  "client:bert_client"
  "client:bert_load"
  "tools:bert_encode"
  "bench:host_path_server"
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
  fetch_sanitizer
  du -sh .gpu .gpu/*.tar.xz
}

# NVIDIA's compute-sanitizer for the toolkit's CUDA version (from PyPI: the toolkit here has
# none), packed as .gpu/sanitizer.tar.xz (~8 MB). Optional: without it (no network), `run`
# skips the sanitizer steps.
SANITIZER_VERSION="13.0.85"
fetch_sanitizer() {
  local cache="${XDG_CACHE_HOME:-$HOME/.cache}/bert-serving/sanitizer"
  local python=python3
  [ -x .venv/bin/python ] && python=.venv/bin/python
  local wheel
  wheel=$(ls "$cache"/nvidia_cuda_sanitizer_api-"$SANITIZER_VERSION"-*.whl 2>/dev/null | head -n 1)
  if [ -z "$wheel" ]; then
    mkdir -p "$cache"
    "$python" -m pip download --quiet --no-deps -d "$cache" \
      "nvidia-cuda-sanitizer-api==$SANITIZER_VERSION" ||
      { echo "gpu_check: no compute-sanitizer (download failed): run skips it"; return 0; }
    wheel=$(ls "$cache"/nvidia_cuda_sanitizer_api-"$SANITIZER_VERSION"-*.whl | head -n 1)
  fi
  local unpacked
  unpacked=$(mktemp -d)
  "$python" -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' \
    "$wheel" "$unpacked" || { rm -rf "$unpacked"; return 0; }
  mkdir -p .gpu/sanitizer
  cp -r "$unpacked"/nvidia/cu*/bin "$unpacked"/nvidia/cu*/lib .gpu/sanitizer/
  chmod +x .gpu/sanitizer/bin/compute-sanitizer
  rm -rf "$unpacked"
  tar -C .gpu -cJf .gpu/sanitizer.tar.xz sanitizer && rm -rf .gpu/sanitizer
}

# Unpacks .gpu/NAME.tar.xz (from `build`) into /tmp and links .gpu/NAME to it.
unpack() {
  local name="$1"
  [ -f ".gpu/$name.tar.xz" ] || return 0
  # Also when the tarball is newer than what an earlier call unpacked (a machine still warm;
  # -m: the unpacked files get the time of unpacking, not the archive's).
  if [ ! -e ".gpu/$name" ] || [ ".gpu/$name.tar.xz" -nt ".gpu/$name" ]; then
    rm -rf ".gpu/$name" "/tmp/gpu_check_$name"
    mkdir -p "/tmp/gpu_check_$name" && tar -C "/tmp/gpu_check_$name" -xmJf ".gpu/$name.tar.xz"
    ln -sfn "/tmp/gpu_check_$name/$name" ".gpu/$name" 2>/dev/null ||
      cp -r "/tmp/gpu_check_$name/$name" ".gpu/$name"
  fi
}

run() {
  local what="${1:-all}"
  # Only our binaries get the carried Debian libraries (Python/torch keep the system's).
  local ld="/usr/local/cuda/lib64:$PWD/.gpu/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-8}"
  # Output goes through tee (a pipe): unbuffered Python and line-buffered C stdio (stdbuf),
  # so that a step cut off by its timeout still leaves what it printed in its log.
  export PYTHONUNBUFFERED=1
  local linebuf=()
  command -v stdbuf >/dev/null && linebuf=(stdbuf -oL -eL)
  unpack lib
  unpack bin
  unpack sanitizer
  local out="${OUT:-$PWD/.gpu/out}"
  local logs="$out/logs"
  mkdir -p "$logs"
  local table=()
  # The device call is killed at its limit (600 s): steps that would not finish before
  # DEADLINE_S (seconds since this script started) are skipped, most valuable first, so the
  # summary, compare.md and goals.md always get written. Each step's log is under $OUT as it
  # runs.
  local deadline="${DEADLINE_S:-570}"
  nvidia-smi > "$logs/nvidia-smi.txt" 2>&1 || true
  head -n 12 "$logs/nvidia-smi.txt"

  # step LABEL LOG ESTIMATE_S TIMEOUT_S COMMAND...: runs COMMAND (stdout+stderr to LOG and the
  # terminal) under a timeout that also respects the deadline, and records rc and seconds in
  # the summary; skipped when ESTIMATE_S no longer fits.
  step() {
    local label="$1" log="$2" estimate="$3" limit="$4"
    shift 4
    local left=$((deadline - SECONDS))
    if [ "$estimate" -gt "$left" ]; then
      table+=("$(printf '%-24s skipped (deadline: %ss left, needs ~%ss)' "$label" "$left" "$estimate")")
      return 0
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    local begin=$SECONDS
    # -k: a step that ignores SIGTERM is killed 15 s later, within the deadline's margin.
    timeout -k 15 "$limit" "${linebuf[@]}" "$@" 2>&1 | tee "$log"
    local rc=${PIPESTATUS[0]}
    table+=("$(printf '%-24s rc=%-3s %5ss' "$label" "$rc" "$((SECONDS - begin))")")
  }

  # gtest_step NAME BINARY FILTER ESTIMATE_S TIMEOUT_S: a test binary, counts in the summary.
  gtest_step() {
    local name="$1" bin="$2" filter="$3" estimate="$4" limit="$5"
    LD_LIBRARY_PATH="$ld" step "$name" "$logs/$name.log" "$estimate" "$limit" \
      ".gpu/bin/$bin" --gtest_brief=1 --gtest_filter="$filter" \
      --gtest_output="xml:$logs/$name.xml" > /dev/null
    [ -f "$logs/$name.xml" ] || return 0  # skipped, or died before writing its results
    local counts failed
    counts=$(python3 tools/count_results.py "$logs/$name.xml" 2>/dev/null)
    # The failed cases by name (at most eight), so that the summary says what to turn off.
    failed=$(echo "$counts" | sed -n 's/^FAILED: [^:]*: //p' | head -n 8 | paste -sd ' ')
    table[-1]="${table[-1]}  $(echo "$counts" | tail -n 1)${failed:+  FAILED: $failed}"
    tail -n 25 "$logs/$name.log"
  }

  local model=".gpu/bert-base-random" lengths=".gpu/varlen.txt" variant_files=()
  # compare.md and goals.md from whatever has run so far, and the logs' tarball (so that a
  # call cut off later still brings back a recent one).
  summarize() {
    if [ -f "$logs/ours.json" ]; then
      python3 bench/compare.py "$logs/ours.json" "$logs/hf.json" "${variant_files[@]}" \
        > "$logs/compare.md"
      python3 bench/goals.py "$logs/ours.json" "$logs/hf.json" "$logs/ours.log" \
        "${variant_files[@]}" > "$logs/goals.md"
    fi
    # Through a temporary name: a call killed while tar runs keeps the previous tarball.
    tar -czf "$out/gpu_check_logs.tar.gz.tmp" -C "$logs" . 2>/dev/null &&
      mv "$out/gpu_check_logs.tar.gz.tmp" "$out/gpu_check_logs.tar.gz"
  }

  # The random BERT-base weights (HF-saved, shared by both sides) and the variable-length
  # batch's lengths.
  prepare_step() {
    step "prepare (HF save)" "$logs/prepare.log" 20 120 \
      python3 bench/hf_baseline.py --save_model "$model" --write_lengths "$lengths"
  }

  # The server end to end (text in, tokenized, batched, encoded, answered) against the
  # engine alone on the variable-length batch (gpu_bench's figure in ours.json): issue 5's
  # goal (>= 80%). Needs the saved model.
  # SERVER_FLAGS ENGINE_JSON (optional): the server's tuning flags, and the engine's result
  # with those same flags (both: the defaults' when left out).
  serving_step() {
    if [ ! -f "$model/model.safetensors" ]; then
      table+=("$(printf '%-24s skipped (no saved model)' "serving vs engine")")
      return 0
    fi
    BERT_LD="$ld" step "serving vs engine" "$logs/serving_vs_engine.log" 75 150 \
      python3 bench/serving_vs_engine.py --bin .gpu/bin --model_dir "$model" \
      --vocab tests/data/bert_uncased_vocab.txt --backend cuda --dtype float16 \
      --server_args "${1:-}" --engine_json "${2:-$logs/ours.json}" \
      --json_out "$logs/serving_vs_engine.json"
    [ -f "$logs/serving_vs_engine.log" ] &&
      table[-1]="${table[-1]}  $(grep -o 'goal >= .*' "$logs/serving_vs_engine.log" | tail -n 1)"
  }

  if [ "$what" = serving ]; then
    # The serving step alone (e.g. a second call when `all` ran out of time before it):
    # the model, the engine's own variable-length figure, then the server.
    [ -f "$model/model.safetensors" ] || prepare_step
    LD_LIBRARY_PATH="$ld" step "gpu_bench varlen" "$logs/ours.log" 25 120 \
      .gpu/bin/gpu_bench --model_dir="$model" --varlen_file="$lengths" --dtypes=fp16 \
      --batches=1 --json="$logs/ours.json"
    serving_step
  fi

  if [ "$what" = all ] || [ "$what" = tests ]; then
    # The default paths' suites first. The tests of the off-by-default paths (our split-K
    # GEMM and its LayerNorm epilogue, programmatic launches, double-buffered attention, the
    # residual in the GEMM) run last, in processes of their own, so that a fault there (a
    # sticky CUDA error ends every later test of its process) or a hang cannot take the other
    # suites with it.
    local new_paths="*CustomGemm*:*Programmatic*:*DoubleBuffer*:*ResidualInGemm*:*LayerNormInGemm*"
    gtest_step kernels_test kernels_test "*" 40 200
    gtest_step attention_test attention_test "-*DoubleBuffer*" 30 200
    gtest_step cuda_engine_test cuda_engine_test "-$new_paths" 60 240
    BERT_LD="$ld" step "serving (e2e)" "$logs/serving.log" 30 300 \
      python3 tools/gpu_serving_check.py .gpu/bin
    [ -f "$logs/serving.log" ] && table[-1]="${table[-1]}  $(tail -n 1 "$logs/serving.log")"
    gtest_step split_k_gemm_test split_k_gemm_test "*" 30 120
    gtest_step attention_test_new attention_test "*DoubleBuffer*" 20 120
    gtest_step cuda_engine_test_new cuda_engine_test "$new_paths" 30 150
    # A deliberate sticky fault (the engine must report itself unusable): it ends every later
    # CUDA call of its process, so it runs alone, and only when asked to.
    export BERT_STICKY_FAULT_TEST=1
    gtest_step cuda_engine_fault cuda_engine_test "CudaEngineFault.StickyFault*" 5 60
    unset BERT_STICKY_FAULT_TEST
    summarize
  fi

  if [ "$what" = all ] || [ "$what" = bench ]; then
    prepare_step
    local model_flag="--model_dir=$model"
    [ -f "$model/model.safetensors" ] || model_flag=""  # fall back to RandomModel
    # fp16 first: the goals are fp16's, and a dtype that fails does not stop the others.
    LD_LIBRARY_PATH="$ld" step "gpu_bench (ours)" "$logs/ours.log" 40 240 \
      .gpu/bin/gpu_bench $model_flag --varlen_file="$lengths" --dtypes=fp16,bf16,fp32 --memory \
      --json="$logs/ours.json"
    # Which dtype failed, if one did (the others' results are in ours.json).
    local failed_dtypes=""
    [ -f "$logs/ours.log" ] &&
      failed_dtypes=$(grep -o '^ours [a-z0-9]*: .*' "$logs/ours.log" | cut -c1-100 | paste -sd';')
    [ -n "$failed_dtypes" ] && table[-1]="${table[-1]}  $failed_dtypes"
    # No fp16 result with the defaults (a default path fails or crashes on this device): the
    # run-3 configuration (below) then runs every batch and the server end to end, and the
    # variants built on the broken defaults are not run.
    local defaults_failed=""
    if ! grep -q '"dtype": "fp16"' "$logs/ours.json" 2>/dev/null; then
      defaults_failed=1
      [ -f "$logs/ours.json" ] || echo '[]' > "$logs/ours.json"
      table+=("$(printf '%-24s %s' "defaults (fp16)" \
        "NO RESULT: goals.md has run3_config's numbers (variant column); see ours.log")")
    fi
    if [ -n "$model_flag" ]; then
      # HF eager, then torch.compile within its own budget (it keeps what it finished).
      step "hf_baseline" "$logs/hf.log" 120 "${HF_TIMEOUT:-300}" \
        python3 bench/hf_baseline.py --model_dir "$model" --lengths "$lengths" \
        --budget_s "${HF_BUDGET_S:-150}" --json "$logs/hf.json"
    else
      table+=("$(printf '%-24s skipped (no saved model)' "hf_baseline")")
    fi
    summarize
    # Options changed against the defaults (fp16): what each step gains, most wanted first.
    # compare.md shows each as a column; goals.md names the fastest one per goal. Each entry:
    # name, the batches it runs ("+varlen": the variable-length batch too), gpu_bench flags.
    # Our GEMM is a candidate only up to 256 rows: its variants run batch 1 (128 rows) alone.
    run_variants() {
      local variant
      if [ ! -f "$logs/ours.json" ]; then  # nothing to compare them with
        table+=("$(printf '%-24s skipped (no ours.json): %s' "gpu_bench variants" "${*%% *}")")
        return 0
      fi
      for variant in "$@"; do
        local vname vbatches vflags
        read -r vname vbatches vflags <<< "$variant"
        local varlen_flag=""
        if [ "${vbatches%+varlen}" != "$vbatches" ]; then
          varlen_flag="--varlen_file=$lengths"
          vbatches="${vbatches%+varlen}"
        fi
        LD_LIBRARY_PATH="$ld" step "gpu_bench $vname" "$logs/ours_$vname.log" 20 120 \
          .gpu/bin/gpu_bench $model_flag $varlen_flag --dtypes=fp16 --batches="$vbatches" \
          $vflags --json="$logs/ours_$vname.json"
        [ -f "$logs/ours_$vname.json" ] && variant_files+=("$vname=$logs/ours_$vname.json")
      done
    }
    # run3_config (RUN3_FLAGS): what the new defaults gain together, and the fallback when
    # they fail. Every batch when the defaults gave nothing.
    local run3_batches="1,8,32,128+varlen"
    [ -n "$defaults_failed" ] && run3_batches="1,8,32,128,256+varlen"
    run_variants "run3_config $run3_batches $RUN3_FLAGS"
    if [ -z "$defaults_failed" ]; then
      run_variants "custom_gemm_pdl 1 --custom_gemm=true --cuda_pdl=true" \
                   "batch1_all 1 --custom_gemm=true --cuda_pdl=true --cuda_layer_norm_in_gemm_max_rows=4096" \
                   "ln_in_gemm 1,8,32 --cuda_layer_norm_in_gemm_max_rows=4096" \
                   "pdl 1,8,32 --cuda_pdl=true" \
                   "custom_gemm 1 --custom_gemm=true" \
                   "attn_double_buffer 1,8,32,128+varlen --cuda_attention_double_buffer=true" \
                   "residual_in_gemm 1,8,32,128+varlen --residual_in_gemm=true"
    fi
    summarize
    if [ -z "$defaults_failed" ]; then
      serving_step
      # What three of the defaults gain, each against turning it off alone.
      run_variants "exact_gelu 1,8,32,128+varlen --fused_gelu=false" \
                   "no_autotune 1,8,32,128+varlen --gemm_autotune=false" \
                   "graphs_all_rows 128+varlen --cuda_graph_max_rows=1000000"
    else
      # The server with the configuration that gave results. Which default failed is for the
      # tests' failures and the serving check's culprit search to say: a variant with one
      # default off keeps the other five, and may fail (or hang) the same way.
      serving_step "$RUN3_FLAGS" "$logs/ours_run3_config.json"
    fi
    summarize
  fi

  if [ "$what" = all ] || [ "$what" = micro ]; then
    # The attention kernel's tile variants (16/32/64 query rows, one or two K/V buffers) under
    # compute-sanitizer: out-of-bounds or misaligned accesses (memcheck), shared-memory races
    # (racecheck), barriers not reached by every thread (synccheck). fp16, head_dim 32/64/128,
    # the short odd-length and padded batches (the sanitizer slows kernels 10-100x).
    local sanitized="*TileIdentity*f16_d*_Odd:*TileIdentity*f16_d*_Padding"
    if [ -x .gpu/sanitizer/bin/compute-sanitizer ]; then
      local tool
      for tool in memcheck racecheck synccheck; do
        LD_LIBRARY_PATH="$ld" step "sanitizer $tool" "$logs/sanitizer_$tool.log" 20 90 \
          .gpu/sanitizer/bin/compute-sanitizer --tool "$tool" --error-exitcode 9 \
          .gpu/bin/attention_test --gtest_brief=1 --gtest_filter="$sanitized"
        [ -f "$logs/sanitizer_$tool.log" ] && table[-1]="${table[-1]}  $(grep -o \
          'ERROR SUMMARY: .*' "$logs/sanitizer_$tool.log" | tail -n 1)"
      done
    else
      table+=("$(printf '%-24s skipped (no .gpu/sanitizer: see fetch_sanitizer)' "sanitizer")")
    fi
    # The per-op and per-kernel measurements (with `all`: as far as the deadline allows).
    local model_flag=""
    [ -f "$model/model.safetensors" ] && model_flag="--model_dir=$model"
    # cuBLASLt heuristic top-1 vs autotune (without and with our split-K kernel) on the
    # encoder's Linear shapes (fp16), and our kernel alone at 1/2/4/8 splits for <= 256 rows.
    LD_LIBRARY_PATH="$ld" step "gemm_bench" "$logs/gemm_bench.log" 45 90 \
      .gpu/bin/gemm_bench --dtypes=fp16 --rows=128,256,1024,4096,9172,16384
    # fp16 without CUDA graphs (what the graphs gain) and the per-op profile (--profile).
    LD_LIBRARY_PATH="$ld" step "gpu_bench nographs+prof" "$logs/ours_nographs_profile.log" 25 120 \
      .gpu/bin/gpu_bench $model_flag --varlen_file="$lengths" --dtypes=fp16 \
      --batches=1,8,32,128 --cuda_graphs=false --profile --iters=20 \
      --json="$logs/ours_nographs.json"
    # Every layer's output back (encoder_outputs), copies overlapped on a second stream vs on
    # the compute stream.
    for variant in "layers_overlap --cuda_overlap_copies=true" "layers_serial --cuda_overlap_copies=false"; do
      local vname="${variant%% *}" vflag="${variant#* }"
      LD_LIBRARY_PATH="$ld" step "gpu_bench $vname" "$logs/ours_$vname.log" 15 120 \
        .gpu/bin/gpu_bench $model_flag --dtypes=fp16 --batches=8,32 --outputs=layers $vflag \
        --json="$logs/ours_$vname.json"
    done
    # The attention kernel alone (fp16; the torch SDPA anchors it prints are in its source).
    LD_LIBRARY_PATH="$ld" step "attention_bench" "$logs/attention_bench.log" 20 60 \
      .gpu/bin/attention_bench --dtype=f16
    # What the card sustains for the elementwise passes' traffic (the byte floors' yardstick).
    LD_LIBRARY_PATH="$ld" step "membw_bench" "$logs/membw_bench.log" 20 60 \
      .gpu/bin/membw_bench
    # The server's host path alone (an engine that computes nothing), half the cores for it
    # and half for the load: whether it scales to feed the engine's sequences/s (one core
    # of the dev VM: bench/RESULTS_server.md).
    local cpus half
    cpus=$(nproc)
    half=$((cpus / 2))
    if [ "$cpus" -ge 4 ]; then
      BERT_LD="$ld" step "host path" "$logs/host_path.log" 30 90 \
        python3 bench/host_path.py --server gpu_host=.gpu/bin/host_path_server \
        --bert_load .gpu/bin/bert_load --server_cpus "0-$((half - 1))" \
        --load_cpus "$half-$((cpus - 1))" --tokenization_workers "$half" --concurrency 256 \
        --inputs_per_request 1,16 --rounds 1 --duration_s 5
    else
      table+=("$(printf '%-24s skipped (%s CPUs; needs 4)' "host path" "$cpus")")
    fi
  fi
  summarize
  cat "$logs/compare.md" "$logs/goals.md" 2>/dev/null
  echo
  echo "== GPU check summary ($(date -u +%FT%TZ), $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1))"
  for line in "${table[@]}"; do echo "$line"; done
  cat <<'LEGEND'
If a default path's test fails, the server flag that turns the path off (no rebuild):
  CudaFusedGeluTest.*, GemmTest.* (bias_gelu),
    *GeluTanhModelWithoutTheEpilogue*          --fused_gelu=false
  GemmAutotuneTest.*                           --gemm_autotune=false
  CudaGraphTest.* (graphs, capture counts)     --cuda_graphs=false
  CudaGraphTest.OverlappedCopies*              --cuda_overlap_copies=false
  CudaGoldenTest.*, *HeadDims32And128*,
    *RandomBertBaseDefaults* (runs differ /
    off the reference)                         try --cuda_graphs=false, --cuda_overlap_copies=false,
                                               --gemm_autotune=false, --fused_gelu=false,
                                               --cuda_attention_tile=64 in turn
  *TileIdentity*, *AutoTile*                   --cuda_attention_tile=64 (the tile runs 1-4 measured)
  CudaGraphTest.AttentionTileAndLayerNorm*     --cuda_attention_tile=64, or
                                               --cuda_layer_norm_hoist_max_rows=0 (the message
                                               names the configuration that differs)
  RowKernelTest.*LayerNorm* (cases of at most
    2048 rows)                                 --cuda_layer_norm_hoist_max_rows=0
  SeqKernelTest.*LayerNorm*                    none: kernels/cuda/embedding.cu
  All of them at once (the engine of run 3,
    as the run3_config column measures it)     RUN3_FLAGS (below)
  sanitizer memcheck|racecheck|synccheck rc=9 errors in the attention kernel (the log names
                                               the kernel and the access): a 16/32-row tile
                                               (its template argument W = 1/2) --cuda_attention_tile=64;
                                               a double-buffered one: off by default already
  CudaEngineFault.StickyFault*                 none: lost-context detection (Engine::Health) is
                                               broken; a sticky fault would not restart the server
  CudaEngineFault.RefusedLaunch*               none: CheckContext takes a passing error for a lost
                                               context; such errors would restart the server
Off by default already: --custom_gemm, --cuda_pdl, --cuda_attention_double_buffer,
--residual_in_gemm, --cuda_layer_norm_in_gemm_max_rows (0) (their tests run last, in
processes of their own).
LEGEND
  echo "RUN3_FLAGS: $RUN3_FLAGS"
}

case "${1:-}" in
  build) build ;;
  run) shift; run "$@" ;;
  *) echo "usage: $0 build | run [all|tests|bench|micro|serving]" >&2; exit 2 ;;
esac
