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
  if (kKind == GeluKind::kErf) {
    return 0.5f * x * (1.0f + erff(x * 0.70710678118654752440f));
  } else {
    const float inner = 0.79788456080286535588f * (x + 0.044715f * x * x * x);
    return 0.5f * x * (1.0f + tanhf(inner));
  }
}

// Each thread handles kVec consecutive elements of one row (cols % kVec == 0).
template <typename T, int kVec, GeluKind kKind>
__global__ void BiasGeluKernel(T* __restrict__ x, const T* __restrict__ bias, int rows, int cols) {
  const int vecs_per_row = cols / kVec;
  const size_t total = static_cast<size_t>(rows) * vecs_per_row;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const int col = static_cast<int>(i % vecs_per_row) * kVec;
    T* p = x + i * kVec;
    float v[kVec];
    internal::LoadFloats<T, kVec>(p, v);
    if (bias != nullptr) {
      float b[kVec];
      internal::LoadFloats<T, kVec>(bias + col, b);
#pragma unroll
      for (int k = 0; k < kVec; ++k) v[k] += b[k];
    }
#pragma unroll
    for (int k = 0; k < kVec; ++k) v[k] = Gelu<kKind>(v[k]);
    internal::StoreFloats<T, kVec>(p, v);
  }
}

template <typename T, int kVec>
void LaunchWithVec(T* x, const T* bias, int rows, int cols, GeluKind kind, cudaStream_t stream) {
  const size_t total = static_cast<size_t>(rows) * (cols / kVec);
  constexpr int kThreads = 256;
  const int blocks = static_cast<int>(std::min<size_t>((total + kThreads - 1) / kThreads, 65535));
  if (kind == GeluKind::kErf) {
    BiasGeluKernel<T, kVec, GeluKind::kErf><<<blocks, kThreads, 0, stream>>>(x, bias, rows, cols);
  } else {
    BiasGeluKernel<T, kVec, GeluKind::kTanh><<<blocks, kThreads, 0, stream>>>(x, bias, rows, cols);
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
