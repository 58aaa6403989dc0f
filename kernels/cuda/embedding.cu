#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels/cuda/device_utils.cuh"
#include "kernels/cuda/embedding.h"
#include "kernels/cuda/layer_norm.h"
#include "kernels/cuda/layer_norm_common.cuh"

namespace bert {
namespace cuda {
namespace {

using internal::kLnWarpsPerBlock;
using internal::LnColumn;

// The sequence holding `row`: the last s with cu_rows[s] <= row (binary search).
__device__ __forceinline__ int SequenceOfRow(const int32_t* __restrict__ cu_rows, int num_seqs,
                                             int row) {
  int lo = 0, hi = num_seqs - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (__ldg(cu_rows + mid) <= row) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return lo;
}

template <typename T, int kVec, int kChunks>
__global__ void EmbeddingLnKernel(const int32_t* __restrict__ word_ids,
                                  const int32_t* __restrict__ type_ids,
                                  const int32_t* __restrict__ cu_rows, int num_seqs, int total_rows,
                                  const T* __restrict__ word_table,
                                  const T* __restrict__ position_table,
                                  const T* __restrict__ type_table, const float* __restrict__ gamma,
                                  const float* __restrict__ beta, int hidden, float eps,
                                  T* __restrict__ out) {
  const int row = blockIdx.x * kLnWarpsPerBlock + threadIdx.y;
  if (row >= total_rows) return;
  const int lane = threadIdx.x;
  const int seq = SequenceOfRow(cu_rows, num_seqs, row);
  const int position = row - __ldg(cu_rows + seq);
  const T* word = word_table + static_cast<size_t>(__ldg(word_ids + row)) * hidden;
  const T* pos = position_table + static_cast<size_t>(position) * hidden;
  const int type_id = type_ids != nullptr ? __ldg(type_ids + row) : 0;
  const T* type = type_table + static_cast<size_t>(type_id) * hidden;
  float v[kChunks][kVec];
#pragma unroll
  for (int c = 0; c < kChunks; ++c) {
    const int col = LnColumn<kVec>(c, lane);
    if (col < hidden) {
      float w[kVec], p[kVec], t[kVec];
      internal::LoadFloats<T, kVec>(word + col, w);
      internal::LoadFloats<T, kVec>(pos + col, p);
      internal::LoadFloats<T, kVec>(type + col, t);
#pragma unroll
      // Hugging Face BertEmbeddings' order: (word + type) + position.
      for (int i = 0; i < kVec; ++i) v[c][i] = (w[i] + t[i]) + p[i];
    }
  }
  internal::LnNormalizeStore<T, kVec, kChunks>(v, lane, hidden, gamma, beta, eps,
                                               out + static_cast<size_t>(row) * hidden);
}

template <typename T>
struct LaunchEmbeddingLn {
  const int32_t* word_ids;
  const int32_t* type_ids;
  const int32_t* cu_rows;
  int num_seqs;
  int total_rows;
  const T* word_table;
  const T* position_table;
  const T* type_table;
  const float* gamma;
  const float* beta;
  int hidden;
  float eps;
  T* out;
  cudaStream_t stream;

  template <int kVec, int kChunks>
  void operator()() const {
    EmbeddingLnKernel<T, kVec, kChunks>
        <<<internal::LnGrid(total_rows), internal::LnBlock(), 0, stream>>>(
            word_ids, type_ids, cu_rows, num_seqs, total_rows, word_table, position_table,
            type_table, gamma, beta, hidden, eps, out);
  }
};

}  // namespace

template <typename T>
cudaError_t LaunchEmbeddingLayerNorm(const int32_t* word_ids, const int32_t* type_ids,
                                     const int32_t* cu_rows, int num_seqs, int total_rows,
                                     const T* word_table, const T* position_table,
                                     const T* type_table, const float* gamma, const float* beta,
                                     int hidden, float eps, T* out, cudaStream_t stream) {
  if (hidden <= 0 || hidden > kMaxLayerNormHidden || total_rows < 0 || num_seqs < 0) {
    return cudaErrorInvalidValue;
  }
  if (total_rows == 0 || num_seqs == 0) return cudaSuccess;
  constexpr int kV = internal::VecWidth<T>::value;
  const bool vectorized = hidden % kV == 0 && internal::IsAligned<16>(word_table) &&
                          internal::IsAligned<16>(position_table) &&
                          internal::IsAligned<16>(type_table) && internal::IsAligned<16>(out) &&
                          internal::IsAligned<16>(gamma) && internal::IsAligned<16>(beta);
  const LaunchEmbeddingLn<T> launch{
      word_ids,   type_ids, cu_rows, num_seqs, total_rows, word_table, position_table,
      type_table, gamma,    beta,    hidden,   eps,        out,        stream};
  if (!internal::DispatchLnTiling<T>(hidden, vectorized, launch)) return cudaErrorInvalidValue;
  return cudaGetLastError();
}

#define BERT_INSTANTIATE(T)                                                                   \
  template cudaError_t LaunchEmbeddingLayerNorm<T>(                                           \
      const int32_t*, const int32_t*, const int32_t*, int, int, const T*, const T*, const T*, \
      const float*, const float*, int, float, T*, cudaStream_t);
BERT_INSTANTIATE(float)
BERT_INSTANTIATE(__half)
BERT_INSTANTIATE(__nv_bfloat16)
#undef BERT_INSTANTIATE

}  // namespace cuda
}  // namespace bert
