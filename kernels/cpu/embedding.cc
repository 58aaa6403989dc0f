#include "kernels/cpu/embedding.h"

#include "kernels/cpu/layer_norm.h"

namespace bert {
namespace cpu {

void EmbeddingLayerNorm(const int32_t* word_ids, const int32_t* type_ids,
                        const int32_t* cu_rows, int num_seqs, const float* word_table,
                        const float* position_table, const float* type_table,
                        const float* gamma, const float* beta, int hidden, float eps,
                        float* out) {
  for (int s = 0; s < num_seqs; ++s) {
    for (int row = cu_rows[s]; row < cu_rows[s + 1]; ++row) {
      const int position = row - cu_rows[s];
      const float* w = word_table + static_cast<int64_t>(word_ids[row]) * hidden;
      const float* p = position_table + static_cast<int64_t>(position) * hidden;
      const float* t = type_table + static_cast<int64_t>(type_ids ? type_ids[row] : 0) * hidden;
      float* o = out + static_cast<int64_t>(row) * hidden;
      // Same summation order as Hugging Face BertEmbeddings: (word + type) + position.
      for (int i = 0; i < hidden; ++i) o[i] = (w[i] + t[i]) + p[i];
      AddBiasResidualLayerNorm(o, nullptr, nullptr, gamma, beta, 1, hidden, eps, o);
    }
  }
}

}  // namespace cpu
}  // namespace bert
