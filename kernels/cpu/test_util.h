// Helpers for the kernel tests: seeded random data and a relative-error measure.
#ifndef BERT_KERNELS_CPU_TEST_UTIL_H_
#define BERT_KERNELS_CPU_TEST_UTIL_H_

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

namespace bert {
namespace cpu {
namespace testing {

inline std::vector<float> RandomVector(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// ||out - ref|| / ||ref||
inline double RelativeError(const std::vector<float>& out, const std::vector<double>& ref) {
  double diff = 0.0, norm = 0.0;
  for (size_t i = 0; i < ref.size(); ++i) {
    diff += (out[i] - ref[i]) * (out[i] - ref[i]);
    norm += ref[i] * ref[i];
  }
  return std::sqrt(diff / norm);
}

inline double MaxAbsError(const std::vector<float>& out, const std::vector<double>& ref) {
  double m = 0.0;
  for (size_t i = 0; i < ref.size(); ++i) m = std::max(m, std::abs(out[i] - ref[i]));
  return m;
}

}  // namespace testing
}  // namespace cpu
}  // namespace bert

#endif  // BERT_KERNELS_CPU_TEST_UTIL_H_
