#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels/cuda/device_utils.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/layer_norm.h"
#include "kernels/cuda/layer_norm_common.cuh"

namespace bert {
namespace cuda {
namespace {

using internal::kLnWarpsPerBlock;
using internal::LnColumn;

// No __restrict__ on residual/out: they may alias.
template <typename T, int kVec, int kChunks, bool kHoistParams>
__global__ void AddBiasResidualLnKernel(const T* x, const T* bias, const T* residual,
                                        const float* __restrict__ gamma,
                                        const float* __restrict__ beta, int rows, int hidden,
                                        float eps, T* out) {
  internal::WaitForPriorGrid();  // launch.cuh: nothing is read or written before it
  internal::AllowDependentLaunch();
  const int row = blockIdx.x * kLnWarpsPerBlock + threadIdx.y;
  if (row >= rows) return;
  const int lane = threadIdx.x;
  const size_t base = static_cast<size_t>(row) * hidden;
  float v[kChunks][kVec];
#pragma unroll
  for (int c = 0; c < kChunks; ++c) {
    const int col = LnColumn<kVec>(c, lane);
    if (col < hidden) {
      float xs[kVec];
      internal::LoadFloats<T, kVec>(x + base + col, xs);
      if (bias != nullptr) {
        float bs[kVec];
        internal::LoadFloats<T, kVec>(bias + col, bs);
#pragma unroll
        for (int i = 0; i < kVec; ++i) xs[i] += bs[i];
      }
      if (residual != nullptr) {
        float rs[kVec];
        internal::LoadFloats<T, kVec>(residual + base + col, rs);
#pragma unroll
        for (int i = 0; i < kVec; ++i) xs[i] += rs[i];
      }
#pragma unroll
      for (int i = 0; i < kVec; ++i) v[c][i] = xs[i];
    }
  }
  internal::LnNormalizeStore<T, kVec, kChunks, kHoistParams>(v, lane, hidden, gamma, beta, eps,
                                                             out + base);
}

template <typename T>
struct LaunchAddBiasResidualLn {
  const T* x;
  const T* bias;
  const T* residual;
  const float* gamma;
  const float* beta;
  int rows;
  int hidden;
  float eps;
  T* out;
  cudaStream_t stream;
  bool programmatic;
  int hoist_max_rows;

  template <int kVec, int kChunks>
  void operator()() const {
    // The launch error is left for the caller's cudaGetLastError().
    internal::LaunchKernel(rows <= hoist_max_rows
                               ? AddBiasResidualLnKernel<T, kVec, kChunks, true>
                               : AddBiasResidualLnKernel<T, kVec, kChunks, false>,
                           internal::LnGrid(rows), internal::LnBlock(), 0, stream, programmatic, x,
                           bias, residual, gamma, beta, rows, hidden, eps, out);
  }
};

}  // namespace

template <typename T>
cudaError_t LaunchAddBiasResidualLayerNorm(const T* x, const T* bias, const T* residual,
                                           const float* gamma, const float* beta, int rows,
                                           int hidden, float eps, T* out, cudaStream_t stream,
                                           bool programmatic, int hoist_max_rows) {
  if (hidden <= 0 || hidden > kMaxLayerNormHidden || rows < 0) return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  constexpr int kV = internal::VecWidth<T>::value;
  const bool vectorized = hidden % kV == 0 && internal::IsAligned<16>(x) &&
                          (residual == nullptr || internal::IsAligned<16>(residual)) &&
                          internal::IsAligned<16>(out) &&
                          (bias == nullptr || internal::IsAligned<16>(bias)) &&
                          internal::IsAligned<16>(gamma) && internal::IsAligned<16>(beta);
  const LaunchAddBiasResidualLn<T> launch{
      x, bias, residual, gamma, beta, rows, hidden, eps, out, stream, programmatic, hoist_max_rows};
  if (!internal::DispatchLnTiling<T>(hidden, vectorized, launch)) return cudaErrorInvalidValue;
  return cudaGetLastError();
}

#define BERT_INSTANTIATE(T)                                                                    \
  template cudaError_t LaunchAddBiasResidualLayerNorm<T>(const T*, const T*, const T*,         \
                                                         const float*, const float*, int, int, \
                                                         float, T*, cudaStream_t, bool, int);
BERT_INSTANTIATE(float)
BERT_INSTANTIATE(__half)
BERT_INSTANTIATE(__nv_bfloat16)
#undef BERT_INSTANTIATE

}  // namespace cuda
}  // namespace bert
