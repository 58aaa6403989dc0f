#include "kernels/cpu/layer_norm.h"

#include <cmath>
#include <cstdint>

namespace bert {
namespace cpu {

void AddBiasResidualLayerNorm(const float* x, const float* bias, const float* residual,
                              const float* gamma, const float* beta, int rows, int hidden,
                              float eps, float* out) {
  for (int r = 0; r < rows; ++r) {
    const float* xr = x + static_cast<int64_t>(r) * hidden;
    const float* rr = residual ? residual + static_cast<int64_t>(r) * hidden : nullptr;
    // The sum goes straight into the output row: element i is written only after x[i] and
    // residual[i] are read, so `out` may alias either input, and no scratch is needed.
    float* o = out + static_cast<int64_t>(r) * hidden;
    double sum = 0.0;
    for (int i = 0; i < hidden; ++i) {
      float v = xr[i];
      if (bias) v += bias[i];
      if (rr) v += rr[i];
      o[i] = v;
      sum += v;
    }
    const double mean = sum / hidden;
    double sq = 0.0;
    for (int i = 0; i < hidden; ++i) {
      const double d = o[i] - mean;
      sq += d * d;
    }
    const double inv_std = 1.0 / std::sqrt(sq / hidden + static_cast<double>(eps));
    const float m = static_cast<float>(mean);
    const float s = static_cast<float>(inv_std);
    for (int i = 0; i < hidden; ++i) o[i] = (o[i] - m) * s * gamma[i] + beta[i];
  }
}

}  // namespace cpu
}  // namespace bert
