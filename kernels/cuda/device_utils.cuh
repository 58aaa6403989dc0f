// Device-side helpers shared by the .cu files of kernels/cuda (not a public API):
// float <-> T conversion, vector loads of 16 bytes, warp reductions, GELU.
#ifndef BERT_KERNELS_CUDA_DEVICE_UTILS_CUH_
#define BERT_KERNELS_CUDA_DEVICE_UTILS_CUH_

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace bert {
namespace cuda {
namespace internal {

__device__ __forceinline__ float ToFloat(float x) { return x; }
__device__ __forceinline__ float ToFloat(__half x) { return __half2float(x); }
__device__ __forceinline__ float ToFloat(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T FromFloat(float x);
template <>
__device__ __forceinline__ float FromFloat<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ __half FromFloat<__half>(float x) {
  return __float2half_rn(x);
}
template <>
__device__ __forceinline__ __nv_bfloat16 FromFloat<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// kN elements of T loaded/stored as one aligned access.
template <typename T, int kN>
struct alignas(sizeof(T) * kN) Vec {
  T v[kN];
};

// Elements of T per 16-byte access.
template <typename T>
struct VecWidth {
  static constexpr int value = 16 / sizeof(T);
};

template <typename T, int kN>
__device__ __forceinline__ void LoadFloats(const T* p, float* out) {
  const Vec<T, kN> v = *reinterpret_cast<const Vec<T, kN>*>(p);
#pragma unroll
  for (int i = 0; i < kN; ++i) out[i] = ToFloat(v.v[i]);
}

template <typename T, int kN>
__device__ __forceinline__ void StoreFloats(T* p, const float* in) {
  Vec<T, kN> v;
#pragma unroll
  for (int i = 0; i < kN; ++i) v.v[i] = FromFloat<T>(in[i]);
  *reinterpret_cast<Vec<T, kN>*>(p) = v;
}

__device__ __forceinline__ float WarpSum(float x) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_xor_sync(0xffffffffu, x, offset);
  return x;
}

// True when p is aligned for a kBytes access.
template <int kBytes>
__host__ __device__ __forceinline__ bool IsAligned(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) % kBytes) == 0;
}

// GELU in fp32: the exact form with erf, and the tanh approximation.
__device__ __forceinline__ float GeluErf(float x) {
  return 0.5f * x * (1.0f + erff(x * 0.70710678118654752440f));
}
__device__ __forceinline__ float GeluTanh(float x) {
  const float inner = 0.79788456080286535588f * (x + 0.044715f * x * x * x);
  return 0.5f * x * (1.0f + tanhf(inner));
}

}  // namespace internal
}  // namespace cuda
}  // namespace bert

#endif  // BERT_KERNELS_CUDA_DEVICE_UTILS_CUH_
