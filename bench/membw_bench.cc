// Achievable device-memory bandwidth for the traffic patterns of the encoder's elementwise
// passes (read; copy; read-modify-write in place, as the separate bias + GELU pass; two reads
// and one write, as bias + residual + LayerNorm), so that bench/NOTES.md's byte floors can be
// read against what the card actually sustains rather than its data-sheet number.
//
//   membw_bench [--iters=20]
//
// Method: 16-byte vector kernels (bench/membw_kernels.cu), grid-stride; buffers of 25 MB
// (one [16384, 768] fp16 tensor), 100 MB ([16384, 3072] fp16) and 1 GB; grids of 4, 8, 16
// and 32 blocks of 256 threads per SM and one thread per vector; 3 warm-ups, then each launch
// timed with its own CUDA events, median. GB/s = bytes moved (reads + writes) / time.
#include <cstdio>

#if defined(BERT_WITH_CUDA)

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "bench/cuda_check.h"
#include "bench/membw_kernels.h"

namespace {

using bert::bench::MemPattern;

struct Pattern {
  MemPattern pattern;
  const char* name;
  int traffic;  // bytes moved per buffer byte
};

}  // namespace

int main(int argc, char** argv) {
  int iters = 20;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--iters=", 8) == 0) {
      iters = std::max(1, std::atoi(argv[i] + 8));
    } else {
      std::fprintf(stderr, "usage: %s [--iters=N]\n", argv[0]);
      return 2;
    }
  }
  int device = 0;
  cudaDeviceProp prop;
  CHECK_CUDA(cudaGetDevice(&device));
  CHECK_CUDA(cudaGetDeviceProperties(&prop, device));
  std::printf(
      "membw_bench: %s, %d SMs, %d timed launches per cell (median), GB/s of reads + "
      "writes\n",
      prop.name, prop.multiProcessorCount, iters);

  const size_t sizes[] = {25u << 20, 100u << 20, 1024u << 20};
  const size_t max_bytes = sizes[2];
  void *a = nullptr, *b = nullptr, *out = nullptr;
  CHECK_CUDA(cudaMalloc(&a, max_bytes));
  CHECK_CUDA(cudaMalloc(&b, max_bytes));
  CHECK_CUDA(cudaMalloc(&out, max_bytes));
  CHECK_CUDA(cudaMemset(a, 1, max_bytes));
  CHECK_CUDA(cudaMemset(b, 2, max_bytes));
  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreate(&stream));
  cudaEvent_t start, stop;
  CHECK_CUDA(cudaEventCreate(&start));
  CHECK_CUDA(cudaEventCreate(&stop));

  const Pattern patterns[] = {{MemPattern::kRead, "read", 1},
                              {MemPattern::kCopy, "copy", 2},
                              {MemPattern::kInPlace, "in-place rmw", 2},
                              {MemPattern::kTwoReadsOneWrite, "2 reads + 1 write", 3}};
  constexpr int kThreads = 256;
  for (const Pattern& p : patterns) {
    for (size_t bytes : sizes) {
      std::printf("%-18s %5zu MB:", p.name, bytes >> 20);
      const long long vectors = static_cast<long long>(bytes / 16);
      const int per_vector_blocks =
          static_cast<int>(std::min<long long>((vectors + kThreads - 1) / kThreads, 1 << 30));
      for (int per_sm : {4, 8, 16, 32, 0}) {
        const int blocks = per_sm > 0 ? per_sm * prop.multiProcessorCount : per_vector_blocks;
        for (int w = 0; w < 3; ++w) {
          CHECK_CUDA(
              bert::bench::LaunchMemPattern(p.pattern, a, b, out, bytes, blocks, kThreads, stream));
        }
        std::vector<float> ms(iters);
        for (int i = 0; i < iters; ++i) {
          CHECK_CUDA(cudaEventRecord(start, stream));
          CHECK_CUDA(
              bert::bench::LaunchMemPattern(p.pattern, a, b, out, bytes, blocks, kThreads, stream));
          CHECK_CUDA(cudaEventRecord(stop, stream));
          CHECK_CUDA(cudaEventSynchronize(stop));
          CHECK_CUDA(cudaEventElapsedTime(&ms[i], start, stop));
        }
        std::sort(ms.begin(), ms.end());
        const double median_ms = ms[iters / 2];
        const double gbs = static_cast<double>(bytes) * p.traffic / (median_ms * 1e-3) / 1e9;
        if (per_sm > 0) {
          std::printf("  %2d/SM %6.0f", per_sm, gbs);
        } else {
          std::printf("  1/vector %6.0f", gbs);
        }
      }
      std::printf("  GB/s\n");
      std::fflush(stdout);
    }
  }
  CHECK_CUDA(cudaFree(a));
  CHECK_CUDA(cudaFree(b));
  CHECK_CUDA(cudaFree(out));
  return 0;
}

#else  // !BERT_WITH_CUDA

int main() {
  std::fprintf(stderr, "membw_bench: built with --config=nocuda; nothing to time\n");
  return 1;
}

#endif
