// gpu_bench in a --config=nocuda build: there is no CUDA engine to measure, but the command
// line parses as in the CUDA build, so --check_flags answers (tools/gpu_check.sh's calls are
// tested through it in either build).
#include <cstdio>

#include "bench/gpu_bench_flags.h"

int main(int argc, char** argv) {
  bert::GpuBenchOptions o;
  if (const int done = bert::HandleGpuBenchCommandLine(argc, argv, &o); done >= 0) return done;
  std::fprintf(stderr, "gpu_bench: built with --config=nocuda; rebuild with CUDA\n");
  return 2;
}
