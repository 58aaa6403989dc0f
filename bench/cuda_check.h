// CHECK_CUDA(expr) for the CUDA benchmarks: on a cudaError_t other than cudaSuccess, prints
// where and why to stderr and exits 1 (a benchmark has nothing sensible to go on with).
#ifndef BERT_BENCH_CUDA_CHECK_H_
#define BERT_BENCH_CUDA_CHECK_H_

#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>

#define CHECK_CUDA(expr)                                                                           \
  do {                                                                                             \
    const cudaError_t err_ = (expr);                                                               \
    if (err_ != cudaSuccess) {                                                                     \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #expr, cudaGetErrorString(err_)); \
      std::exit(1);                                                                                \
    }                                                                                              \
  } while (0)

#endif  // BERT_BENCH_CUDA_CHECK_H_
