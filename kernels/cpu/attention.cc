#include "kernels/cpu/attention.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace bert {
namespace cpu {

void Attention(const float* qkv, const int32_t* cu_rows, const int32_t* num_valid, int num_seqs,
               int num_heads, int head_dim, float* out) {
  AttentionHeads(qkv, cu_rows, num_valid, num_seqs, num_heads, head_dim, 0, num_heads, out);
}

void AttentionHeads(const float* qkv, const int32_t* cu_rows, const int32_t* num_valid,
                    int num_seqs, int num_heads, int head_dim, int head_begin, int head_end,
                    float* out) {
  head_begin = std::max(0, head_begin);
  head_end = std::min(num_heads, head_end);
  const int hidden = num_heads * head_dim;
  const int ld_qkv = 3 * hidden;
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  std::vector<float> scores;
  for (int s = 0; s < num_seqs; ++s) {
    const int first = cu_rows[s];
    const int rows = cu_rows[s + 1] - first;
    const int keys = num_valid[s];
    if (rows <= 0 || keys <= 0) continue;
    scores.resize(static_cast<size_t>(rows) * keys);
    for (int h = head_begin; h < head_end; ++h) {
      const float* q = qkv + static_cast<int64_t>(first) * ld_qkv + h * head_dim;
      const float* k = q + hidden;
      const float* v = q + 2 * hidden;
      float* o = out + static_cast<int64_t>(first) * hidden + h * head_dim;
      // scores[rows, keys] = scale * Q K^T
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, keys, head_dim, scale, q, ld_qkv,
                  k, ld_qkv, 0.0f, scores.data(), keys);
      for (int r = 0; r < rows; ++r) {
        float* p = scores.data() + static_cast<int64_t>(r) * keys;
        const float m = *std::max_element(p, p + keys);
        float sum = 0.0f;
        for (int j = 0; j < keys; ++j) {
          p[j] = std::exp(p[j] - m);
          sum += p[j];
        }
        const float inv = 1.0f / sum;
        for (int j = 0; j < keys; ++j) p[j] *= inv;
      }
      // out[rows, head_dim] = P V
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, head_dim, keys, 1.0f,
                  scores.data(), keys, v, ld_qkv, 0.0f, o, hidden);
    }
  }
}

}  // namespace cpu
}  // namespace bert
