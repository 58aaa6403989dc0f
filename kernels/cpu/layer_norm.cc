#include "kernels/cpu/layer_norm.h"

#include <cmath>
#include <cstdint>
#include <vector>

namespace bert {
namespace cpu {

void AddBiasResidualLayerNorm(const float* x, const float* bias, const float* residual,
                              const float* gamma, const float* beta, int rows, int hidden,
                              float eps, float* out) {
  // One row of scratch so that `out` may alias either input.
  std::vector<float> row(hidden);
  for (int r = 0; r < rows; ++r) {
    const float* xr = x + static_cast<int64_t>(r) * hidden;
    const float* rr = residual ? residual + static_cast<int64_t>(r) * hidden : nullptr;
    double sum = 0.0;
    for (int i = 0; i < hidden; ++i) {
      float v = xr[i];
      if (bias) v += bias[i];
      if (rr) v += rr[i];
      row[i] = v;
      sum += v;
    }
    const double mean = sum / hidden;
    double sq = 0.0;
    for (int i = 0; i < hidden; ++i) {
      const double d = row[i] - mean;
      sq += d * d;
    }
    const double inv_std = 1.0 / std::sqrt(sq / hidden + static_cast<double>(eps));
    const float m = static_cast<float>(mean);
    const float s = static_cast<float>(inv_std);
    float* o = out + static_cast<int64_t>(r) * hidden;
    for (int i = 0; i < hidden; ++i) o[i] = (row[i] - m) * s * gamma[i] + beta[i];
  }
}

}  // namespace cpu
}  // namespace bert
