// Memory-traffic patterns of the encoder's elementwise passes, for membw_bench (bench only).
#ifndef BERT_BENCH_MEMBW_KERNELS_H_
#define BERT_BENCH_MEMBW_KERNELS_H_

#include <cuda_runtime.h>

#include <cstddef>

namespace bert::bench {

enum class MemPattern {
  kRead,              // read `bytes` of a
  kCopy,              // out = a
  kInPlace,           // a = f(a), as the separate bias + GELU pass
  kTwoReadsOneWrite,  // out = a + b, as bias + residual + LayerNorm
};

// `bytes` a multiple of 16; a, b, out 16-byte aligned, `bytes` each (out: 4 bytes for kRead).
cudaError_t LaunchMemPattern(MemPattern pattern, void* a, void* b, void* out, size_t bytes,
                             int blocks, int threads, cudaStream_t stream);

}  // namespace bert::bench

#endif  // BERT_BENCH_MEMBW_KERNELS_H_
