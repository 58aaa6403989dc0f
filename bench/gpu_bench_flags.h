// The command line of gpu_bench (bench/gpu_bench.cc): its options and their parser, built
// with and without CUDA, so that --check_flags answers in either build (tools/gpu_check.sh's
// calls are tested through it).
#ifndef BERT_BENCH_GPU_BENCH_FLAGS_H_
#define BERT_BENCH_GPU_BENCH_FLAGS_H_

#include <string>
#include <vector>

#include "server/engine/cuda_engine.h"

namespace bert {

struct GpuBenchOptions {
  std::string model_dir;
  std::vector<std::string> dtypes = {"fp32", "fp16", "bf16"};
  std::vector<int> batches = {1, 8, 32, 128, 256};
  int seq = 128;
  std::string varlen_file;
  int iters = 30;
  std::string json;
  // The engine's options, its own defaults unless a flag changes them, so that "ours"
  // always measures what serving runs (dtype and max_batch_tokens are set per run).
  CudaEngineOptions engine;
  bool all_layers = false;  // --outputs=layers
  bool profile = false;
  bool memory = false;  // --memory: the memory goal's measurement (one more engine)
  std::vector<int> profile_batches = {1, 128};
  bool check_flags = false;  // --check_flags: print what the flags parsed to, and stop
};

// Parses argv[1..] into `o`; false (after a message on stderr) for an unknown flag or a bad
// value.
bool ParseGpuBenchFlags(int argc, char** argv, GpuBenchOptions* o);

// The start of gpu_bench's main: parses the command line into `o` and returns the process's
// exit status when there is nothing more to do (2: a bad flag; 0: --check_flags, after
// printing its line, before any CUDA call), else -1.
int HandleGpuBenchCommandLine(int argc, char** argv, GpuBenchOptions* o);

// The options a result ran with: the tuning switches that differ from the serving
// defaults, as the server flags that set them ("defaults" if none), plus --outputs=layers.
std::string DescribeGpuBenchOptions(const GpuBenchOptions& o);

// --check_flags' line: every option as parsed.
std::string CheckedFlagsLine(const GpuBenchOptions& o);

}  // namespace bert

#endif  // BERT_BENCH_GPU_BENCH_FLAGS_H_
