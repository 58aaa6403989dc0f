#include "kernels/cpu/pooling.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/gemm.h"

namespace bert {
namespace cpu {

void GatherFirstRows(const float* hidden_states, const int32_t* cu_rows, int num_seqs, int hidden,
                     float* out) {
  for (int s = 0; s < num_seqs; ++s) {
    std::copy_n(hidden_states + static_cast<int64_t>(cu_rows[s]) * hidden, hidden,
                out + static_cast<int64_t>(s) * hidden);
  }
}

void Pooler(const float* hidden_states, const int32_t* cu_rows, int num_seqs, int hidden,
            const float* weight, const float* bias, float* out) {
  if (num_seqs <= 0) return;
  std::vector<float> first_rows(static_cast<size_t>(num_seqs) * hidden);
  GatherFirstRows(hidden_states, cu_rows, num_seqs, hidden, first_rows.data());
  Linear(first_rows.data(), num_seqs, hidden, weight, bias, hidden, Epilogue::kBiasTanh, out);
}

void MeanPool(const float* hidden_states, const int32_t* cu_rows, const int32_t* num_valid,
              int num_seqs, int hidden, float* out) {
  std::vector<double> acc(hidden);
  for (int s = 0; s < num_seqs; ++s) {
    std::fill(acc.begin(), acc.end(), 0.0);
    const int n = num_valid[s];
    for (int r = 0; r < n; ++r) {
      const float* x = hidden_states + static_cast<int64_t>(cu_rows[s] + r) * hidden;
      for (int i = 0; i < hidden; ++i) acc[i] += x[i];
    }
    float* o = out + static_cast<int64_t>(s) * hidden;
    for (int i = 0; i < hidden; ++i) o[i] = n > 0 ? static_cast<float>(acc[i] / n) : 0.0f;
  }
}

void L2Normalize(float* x, int rows, int hidden) {
  for (int r = 0; r < rows; ++r) {
    float* xr = x + static_cast<int64_t>(r) * hidden;
    double sq = 0.0;
    for (int i = 0; i < hidden; ++i) sq += static_cast<double>(xr[i]) * xr[i];
    const double norm = std::max(std::sqrt(sq), 1e-12);
    const float inv = static_cast<float>(1.0 / norm);
    for (int i = 0; i < hidden; ++i) xr[i] *= inv;
  }
}

}  // namespace cpu
}  // namespace bert
