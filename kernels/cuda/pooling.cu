#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels/cuda/device_utils.cuh"
#include "kernels/cuda/pooling.h"

namespace bert {
namespace cuda {
namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void GatherFirstRowsKernel(const T* __restrict__ hidden_states,
                                      const int32_t* __restrict__ cu_rows, int hidden,
                                      T* __restrict__ out) {
  const int s = blockIdx.x;
  const T* src = hidden_states + static_cast<size_t>(__ldg(cu_rows + s)) * hidden;
  T* dst = out + static_cast<size_t>(s) * hidden;
  for (int c = threadIdx.x; c < hidden; c += blockDim.x) dst[c] = src[c];
}

template <typename T>
__global__ void BiasTanhToFloatKernel(const T* __restrict__ x, const T* __restrict__ bias, int rows,
                                      int cols, float* __restrict__ out) {
  const size_t total = static_cast<size_t>(rows) * cols;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const int c = static_cast<int>(i % cols);
    float v = internal::ToFloat(x[i]);
    if (bias != nullptr) v += internal::ToFloat(bias[c]);
    out[i] = tanhf(v);
  }
}

// One block per sequence; threads stride over the columns, rows summed in order.
template <typename T>
__global__ void MeanPoolKernel(const T* __restrict__ hidden_states,
                               const int32_t* __restrict__ cu_rows,
                               const int32_t* __restrict__ num_valid, int hidden,
                               float* __restrict__ out) {
  const int s = blockIdx.x;
  const int first = __ldg(cu_rows + s);
  const int count = __ldg(num_valid + s);
  const float inv = count > 0 ? 1.0f / static_cast<float>(count) : 0.f;
  for (int c = threadIdx.x; c < hidden; c += blockDim.x) {
    float sum = 0.f;
    const T* p = hidden_states + static_cast<size_t>(first) * hidden + c;
    for (int r = 0; r < count; ++r) sum += internal::ToFloat(p[static_cast<size_t>(r) * hidden]);
    out[static_cast<size_t>(s) * hidden + c] = sum * inv;
  }
}

__global__ void L2NormalizeKernel(float* __restrict__ x, int hidden) {
  __shared__ float partial[kThreads / 32];
  __shared__ float scale;
  float* row = x + static_cast<size_t>(blockIdx.x) * hidden;
  float sq = 0.f;
  for (int c = threadIdx.x; c < hidden; c += blockDim.x) sq += row[c] * row[c];
  sq = internal::WarpSum(sq);
  if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = sq;
  __syncthreads();
  if (threadIdx.x < 32) {
    float v = threadIdx.x < blockDim.x / 32 ? partial[threadIdx.x] : 0.f;
    v = internal::WarpSum(v);
    if (threadIdx.x == 0) scale = 1.0f / fmaxf(sqrtf(v), 1e-12f);
  }
  __syncthreads();
  for (int c = threadIdx.x; c < hidden; c += blockDim.x) row[c] *= scale;
}

int GridFor(size_t total) {
  const size_t blocks = (total + kThreads - 1) / kThreads;
  return static_cast<int>(blocks < 65535 ? blocks : 65535);
}

}  // namespace

template <typename T>
cudaError_t LaunchGatherFirstRows(const T* hidden_states, const int32_t* cu_rows, int num_seqs,
                                  int hidden, T* out, cudaStream_t stream) {
  if (num_seqs < 0 || hidden < 0) return cudaErrorInvalidValue;
  if (num_seqs == 0 || hidden == 0) return cudaSuccess;
  GatherFirstRowsKernel<T><<<num_seqs, kThreads, 0, stream>>>(hidden_states, cu_rows, hidden, out);
  return cudaGetLastError();
}

template <typename T>
cudaError_t LaunchBiasTanhToFloat(const T* x, const T* bias, int rows, int cols, float* out,
                                  cudaStream_t stream) {
  if (rows < 0 || cols < 0) return cudaErrorInvalidValue;
  if (rows == 0 || cols == 0) return cudaSuccess;
  BiasTanhToFloatKernel<T><<<GridFor(static_cast<size_t>(rows) * cols), kThreads, 0, stream>>>(
      x, bias, rows, cols, out);
  return cudaGetLastError();
}

template <typename T>
cudaError_t LaunchMeanPool(const T* hidden_states, const int32_t* cu_rows, const int32_t* num_valid,
                           int num_seqs, int hidden, float* out, cudaStream_t stream) {
  if (num_seqs < 0 || hidden < 0) return cudaErrorInvalidValue;
  if (num_seqs == 0 || hidden == 0) return cudaSuccess;
  MeanPoolKernel<T>
      <<<num_seqs, kThreads, 0, stream>>>(hidden_states, cu_rows, num_valid, hidden, out);
  return cudaGetLastError();
}

cudaError_t LaunchL2Normalize(float* x, int rows, int hidden, cudaStream_t stream) {
  if (rows < 0 || hidden < 0) return cudaErrorInvalidValue;
  if (rows == 0 || hidden == 0) return cudaSuccess;
  L2NormalizeKernel<<<rows, kThreads, 0, stream>>>(x, hidden);
  return cudaGetLastError();
}

#define BERT_INSTANTIATE(T)                                                                  \
  template cudaError_t LaunchGatherFirstRows<T>(const T*, const int32_t*, int, int, T*,      \
                                                cudaStream_t);                               \
  template cudaError_t LaunchBiasTanhToFloat<T>(const T*, const T*, int, int, float*,        \
                                                cudaStream_t);                               \
  template cudaError_t LaunchMeanPool<T>(const T*, const int32_t*, const int32_t*, int, int, \
                                         float*, cudaStream_t);
BERT_INSTANTIATE(float)
BERT_INSTANTIATE(__half)
BERT_INSTANTIATE(__nv_bfloat16)
#undef BERT_INSTANTIATE

}  // namespace cuda
}  // namespace bert
