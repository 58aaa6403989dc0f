// BERT's embedding block: word + position + token type embeddings, then LayerNorm.
#ifndef BERT_KERNELS_CPU_EMBEDDING_H_
#define BERT_KERNELS_CPU_EMBEDDING_H_

#include <cstdint>

namespace bert {
namespace cpu {

// For every row of a ragged batch (rows cu_rows[0] .. cu_rows[num_seqs], absolute indices
// into word_ids/type_ids/out): out[row] = LN(word_table[word_ids[row]] +
// position_table[row - cu_rows[s]] + type_table[type_ids[row]]) * gamma + beta.
// `type_ids` may be null (all type 0). Ids are not checked: the caller validates them.
void EmbeddingLayerNorm(const int32_t* word_ids, const int32_t* type_ids,
                        const int32_t* cu_rows, int num_seqs, const float* word_table,
                        const float* position_table, const float* type_table,
                        const float* gamma, const float* beta, int hidden, float eps,
                        float* out);

}  // namespace cpu
}  // namespace bert

#endif  // BERT_KERNELS_CPU_EMBEDDING_H_
