// Embedding gather (word + position + token type) fused with LayerNorm.
// Twin of bert::cpu::EmbeddingLayerNorm (kernels/cpu/embedding.h).
#ifndef BERT_KERNELS_CUDA_EMBEDDING_H_
#define BERT_KERNELS_CUDA_EMBEDDING_H_

#include <cuda_runtime.h>

#include <cstdint>

namespace bert {
namespace cuda {

// out[r] = LayerNorm(word_table[word_ids[r]] + type_table[type_ids[r]] + position_table[p(r)])
// where p(r) is r's index within its sequence; type_ids may be null (all 0) (cu_rows: [num_seqs +
// 1] prefix sums, device). Tables are [*, hidden] of T, gamma/beta [hidden] fp32, out [total_rows,
// hidden] of T. Ids are not range-checked here (the engine validates batches on the host). Returns
// cudaErrorInvalidValue for hidden outside (0, kMaxLayerNormHidden], else the launch error.
template <typename T>
cudaError_t LaunchEmbeddingLayerNorm(const int32_t* word_ids, const int32_t* type_ids,
                                     const int32_t* cu_rows, int num_seqs, int total_rows,
                                     const T* word_table, const T* position_table,
                                     const T* type_table, const float* gamma, const float* beta,
                                     int hidden, float eps, T* out, cudaStream_t stream);

}  // namespace cuda
}  // namespace bert

#endif  // BERT_KERNELS_CUDA_EMBEDDING_H_
