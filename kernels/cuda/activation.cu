#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>

#include "kernels/cuda/activation.h"
#include "kernels/cuda/device_utils.cuh"

namespace bert {
namespace cuda {
namespace {

template <GeluKind kKind>
__device__ __forceinline__ float Gelu(float x) {
  return kKind == GeluKind::kErf ? internal::GeluErf(x) : internal::GeluTanh(x);
}

// Each thread handles kVec consecutive elements of one row (cols % kVec == 0), kUnroll
// vectors per grid-stride step so that several loads are in flight. Index is int32_t when
// the tensor allows (64-bit division per vector measurably slowed this memory-bound pass).
template <typename T, int kVec, int kUnroll, GeluKind kKind, typename Index>
__global__ void BiasGeluKernel(T* __restrict__ x, const T* __restrict__ bias, Index rows,
                               Index cols) {
  const Index vecs_per_row = cols / kVec;
  const Index total = rows * vecs_per_row;
  const Index stride = static_cast<Index>(gridDim.x) * blockDim.x;
  for (Index first = static_cast<Index>(blockIdx.x) * blockDim.x + threadIdx.x; first < total;
       first += stride * kUnroll) {
    float v[kUnroll][kVec];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const Index i = first + u * stride;
      if (i < total) {
        internal::LoadFloats<T, kVec>(x + i * kVec, v[u]);
        if (bias != nullptr) {
          float b[kVec];
          internal::LoadFloats<T, kVec>(bias + (i % vecs_per_row) * kVec, b);
#pragma unroll
          for (int k = 0; k < kVec; ++k) v[u][k] += b[k];
        }
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const Index i = first + u * stride;
      if (i < total) {
#pragma unroll
        for (int k = 0; k < kVec; ++k) v[u][k] = Gelu<kKind>(v[u][k]);
        internal::StoreFloats<T, kVec>(x + i * kVec, v[u]);
      }
    }
  }
}

// Launch shape: kThreads per block, kUnroll vectors per thread per step, at most kMaxBlocks
// blocks (the grid-stride loop covers the rest).
constexpr int kThreads = 256;
constexpr int kUnroll = 2;
constexpr int kMaxBlocks = 65535;

template <typename T, int kVec, typename Index>
void LaunchWithIndex(T* x, const T* bias, Index rows, Index cols, GeluKind kind,
                     cudaStream_t stream) {
  const Index total = rows * (cols / kVec);
  const Index per_block = static_cast<Index>(kThreads) * kUnroll;
  const int blocks =
      static_cast<int>(std::min<Index>((total + per_block - 1) / per_block, kMaxBlocks));
  if (kind == GeluKind::kErf) {
    BiasGeluKernel<T, kVec, kUnroll, GeluKind::kErf, Index>
        <<<blocks, kThreads, 0, stream>>>(x, bias, rows, cols);
  } else {
    BiasGeluKernel<T, kVec, kUnroll, GeluKind::kTanh, Index>
        <<<blocks, kThreads, 0, stream>>>(x, bias, rows, cols);
  }
}

template <typename T, int kVec>
void LaunchWithVec(T* x, const T* bias, int rows, int cols, GeluKind kind, cudaStream_t stream) {
  const int64_t elements = static_cast<int64_t>(rows) * cols;
  // int32 indices while the grid-stride loop's last step cannot overflow them.
  if (elements < (int64_t{1} << 31) - int64_t{kVec} * kMaxBlocks * kThreads * kUnroll) {
    LaunchWithIndex<T, kVec, int32_t>(x, bias, rows, cols, kind, stream);
  } else {
    LaunchWithIndex<T, kVec, int64_t>(x, bias, rows, cols, kind, stream);
  }
}

}  // namespace

template <typename T>
cudaError_t LaunchBiasGelu(T* x, const T* bias, int rows, int cols, GeluKind kind,
                           cudaStream_t stream) {
  if (rows < 0 || cols < 0) return cudaErrorInvalidValue;
  if (rows == 0 || cols == 0) return cudaSuccess;
  constexpr int kV = internal::VecWidth<T>::value;
  if (cols % kV == 0 && internal::IsAligned<16>(x) &&
      (bias == nullptr || internal::IsAligned<16>(bias))) {
    LaunchWithVec<T, kV>(x, bias, rows, cols, kind, stream);
  } else {
    LaunchWithVec<T, 1>(x, bias, rows, cols, kind, stream);
  }
  return cudaGetLastError();
}

template cudaError_t LaunchBiasGelu<float>(float*, const float*, int, int, GeluKind, cudaStream_t);
template cudaError_t LaunchBiasGelu<__half>(__half*, const __half*, int, int, GeluKind,
                                            cudaStream_t);
template cudaError_t LaunchBiasGelu<__nv_bfloat16>(__nv_bfloat16*, const __nv_bfloat16*, int, int,
                                                   GeluKind, cudaStream_t);

}  // namespace cuda
}  // namespace bert
