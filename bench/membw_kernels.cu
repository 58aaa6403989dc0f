#include "bench/membw_kernels.h"

#include <cuda_runtime.h>

#include <cstdint>

namespace bert::bench {
namespace {

// 16-byte vectors, grid-stride, one vector per thread per step.
__global__ void ReadKernel(const uint4* __restrict__ in, size_t n, uint32_t* __restrict__ sink) {
  uint32_t acc = 0;
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n; i += stride) {
    const uint4 v = __ldg(in + i);
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x9e3779b9u) sink[0] = acc;  // keeps the loads; practically never taken
}

__global__ void CopyKernel(const uint4* __restrict__ in, size_t n, uint4* __restrict__ out) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n; i += stride) {
    out[i] = in[i];
  }
}

// Read-modify-write in place, as the separate bias + GELU pass does.
__global__ void InPlaceKernel(uint4* x, size_t n) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n; i += stride) {
    uint4 v = x[i];
    v.x ^= 1u;
    v.w ^= 1u;
    x[i] = v;
  }
}

// Two reads, one write, as bias + residual + LayerNorm does.
__global__ void TwoReadsOneWriteKernel(const uint4* __restrict__ a, const uint4* __restrict__ b,
                                       size_t n, uint4* __restrict__ out) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n; i += stride) {
    const uint4 x = a[i], y = b[i];
    out[i] = make_uint4(x.x + y.x, x.y + y.y, x.z + y.z, x.w + y.w);
  }
}

}  // namespace

cudaError_t LaunchMemPattern(MemPattern pattern, void* a, void* b, void* out, size_t bytes,
                             int blocks, int threads, cudaStream_t stream) {
  const size_t n = bytes / sizeof(uint4);
  switch (pattern) {
    case MemPattern::kRead:
      ReadKernel<<<blocks, threads, 0, stream>>>(static_cast<const uint4*>(a), n,
                                                 static_cast<uint32_t*>(out));
      break;
    case MemPattern::kCopy:
      CopyKernel<<<blocks, threads, 0, stream>>>(static_cast<const uint4*>(a), n,
                                                 static_cast<uint4*>(out));
      break;
    case MemPattern::kInPlace:
      InPlaceKernel<<<blocks, threads, 0, stream>>>(static_cast<uint4*>(a), n);
      break;
    case MemPattern::kTwoReadsOneWrite:
      TwoReadsOneWriteKernel<<<blocks, threads, 0, stream>>>(
          static_cast<const uint4*>(a), static_cast<const uint4*>(b), n, static_cast<uint4*>(out));
      break;
  }
  return cudaGetLastError();
}

}  // namespace bert::bench
