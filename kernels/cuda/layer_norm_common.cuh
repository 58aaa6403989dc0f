// Warp-per-row LayerNorm machinery shared by layer_norm.cu and embedding.cu (internal).
//
// A row of `hidden` values is spread over the 32 lanes of one warp in chunks of kVec
// consecutive elements: chunk c of lane l covers columns [(c*32 + l)*kVec, +kVec). Each lane
// holds its kChunks*kVec values in registers, so the statistics are exact two-pass fp32
// (mean, then mean of squared deviations) with a single read of the row from memory.
#ifndef BERT_KERNELS_CUDA_LAYER_NORM_COMMON_CUH_
#define BERT_KERNELS_CUDA_LAYER_NORM_COMMON_CUH_

#include <cuda_runtime.h>

#include "kernels/cuda/device_utils.cuh"

namespace bert {
namespace cuda {
namespace internal {

constexpr int kLnWarpsPerBlock = 4;

// Launch shape of the row kernels: one warp per row, kLnWarpsPerBlock rows per CTA (a row is
// blockIdx.x * kLnWarpsPerBlock + threadIdx.y).
inline dim3 LnBlock() { return dim3(32, kLnWarpsPerBlock); }
inline dim3 LnGrid(int rows) { return dim3((rows + kLnWarpsPerBlock - 1) / kLnWarpsPerBlock); }

// Loads kN float LayerNorm parameters. Vectorised launches (kN a multiple of 4) need `p`
// 16-byte aligned: one 16-byte load instead of four scalar ones keeps the load/store units
// off the critical path (profiled: scalar parameter loads made the LN kernels ~3x slower
// than their memory traffic).
template <int kN>
__device__ __forceinline__ void LoadParams(const float* __restrict__ p, float* out) {
  if constexpr (kN % 4 == 0) {
#pragma unroll
    for (int i = 0; i < kN; i += 4) {
      const float4 q = __ldg(reinterpret_cast<const float4*>(p + i));
      out[i] = q.x;
      out[i + 1] = q.y;
      out[i + 2] = q.z;
      out[i + 3] = q.w;
    }
  } else {
#pragma unroll
    for (int i = 0; i < kN; ++i) out[i] = __ldg(p + i);
  }
}

template <int kVec>
__device__ __forceinline__ int LnColumn(int chunk, int lane) {
  return (chunk * 32 + lane) * kVec;
}

// Normalises the row held in `v` (see above) with gamma/beta (fp32) and stores it as T.
// kHoistParams loads gamma/beta before the two reductions, so that their loads overlap the
// row's (issued just before by the caller) instead of waiting behind the reductions: shorter
// per-row latency, which is what a batch of a few hundred rows waits on, at the price of
// 2 * kChunks * kVec more registers (half the occupancy for hidden 768), which large batches,
// bound by bandwidth, would pay for.
template <typename T, int kVec, int kChunks, bool kHoistParams = false>
__device__ __forceinline__ void LnNormalizeStore(float (&v)[kChunks][kVec], int lane, int hidden,
                                                 const float* __restrict__ gamma,
                                                 const float* __restrict__ beta, float eps,
                                                 T* out_row) {
  float g[kHoistParams ? kChunks : 1][kVec], b[kHoistParams ? kChunks : 1][kVec];
  if constexpr (kHoistParams) {
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
      const int col = LnColumn<kVec>(c, lane);
      if (col < hidden) {
        LoadParams<kVec>(gamma + col, g[c]);
        LoadParams<kVec>(beta + col, b[c]);
      }
    }
  }
  float sum = 0.f;
#pragma unroll
  for (int c = 0; c < kChunks; ++c) {
    if (LnColumn<kVec>(c, lane) < hidden) {
#pragma unroll
      for (int i = 0; i < kVec; ++i) sum += v[c][i];
    }
  }
  const float mean = WarpSum(sum) / static_cast<float>(hidden);
  float sq = 0.f;
#pragma unroll
  for (int c = 0; c < kChunks; ++c) {
    if (LnColumn<kVec>(c, lane) < hidden) {
#pragma unroll
      for (int i = 0; i < kVec; ++i) {
        const float d = v[c][i] - mean;
        sq += d * d;
      }
    }
  }
  const float var = WarpSum(sq) / static_cast<float>(hidden);
  const float rstd = 1.0f / sqrtf(var + eps);
#pragma unroll
  for (int c = 0; c < kChunks; ++c) {
    const int col = LnColumn<kVec>(c, lane);
    if (col < hidden) {
      const int p = kHoistParams ? c : 0;
      if constexpr (!kHoistParams) {
        LoadParams<kVec>(gamma + col, g[0]);
        LoadParams<kVec>(beta + col, b[0]);
      }
      float o[kVec];
#pragma unroll
      for (int i = 0; i < kVec; ++i) o[i] = (v[c][i] - mean) * rstd * g[p][i] + b[p][i];
      StoreFloats<T, kVec>(out_row + col, o);
    }
  }
}

// Calls launch.template operator()<kVec, kChunks>() with the smallest supported register
// tiling that covers `hidden`; returns false when hidden is not supported (> 1024 for the
// scalar path). `vectorized` selects kVec = 16 bytes / sizeof(T) (hidden % kVec == 0 and
// 16-byte-aligned pointers) instead of 1.
template <typename T, typename Launch>
bool DispatchLnTiling(int hidden, bool vectorized, Launch&& launch) {
  if (hidden <= 0) return false;
  constexpr int kV = VecWidth<T>::value;
  if (vectorized) {
    const int chunks = (hidden + 32 * kV - 1) / (32 * kV);
    if (chunks <= 1) {
      launch.template operator()<kV, 1>();
      return true;
    }
    if (chunks <= 2) {
      launch.template operator()<kV, 2>();
      return true;
    }
    if (chunks <= 3) {
      launch.template operator()<kV, 3>();
      return true;
    }
    if (chunks <= 4) {
      launch.template operator()<kV, 4>();
      return true;
    }
    if (chunks <= 6) {
      launch.template operator()<kV, 6>();
      return true;
    }
    if (chunks <= 8) {
      launch.template operator()<kV, 8>();
      return true;
    }
  }
  const int chunks = (hidden + 31) / 32;
  if (chunks <= 1) {
    launch.template operator()<1, 1>();
    return true;
  }
  if (chunks <= 2) {
    launch.template operator()<1, 2>();
    return true;
  }
  if (chunks <= 4) {
    launch.template operator()<1, 4>();
    return true;
  }
  if (chunks <= 8) {
    launch.template operator()<1, 8>();
    return true;
  }
  if (chunks <= 16) {
    launch.template operator()<1, 16>();
    return true;
  }
  if (chunks <= 32) {
    launch.template operator()<1, 32>();
    return true;
  }
  return false;
}

}  // namespace internal
}  // namespace cuda
}  // namespace bert

#endif  // BERT_KERNELS_CUDA_LAYER_NORM_COMMON_CUH_
