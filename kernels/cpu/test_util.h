// Helpers for the kernel and engine tests: seeded random data, error measures.
#ifndef BERT_KERNELS_CPU_TEST_UTIL_H_
#define BERT_KERNELS_CPU_TEST_UTIL_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
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

// ||out - ref|| / ||ref|| (||out - ref|| when ref is all zeros); `ref` is float or double.
// Infinite when the sizes differ, so that a missing or short output fails every bound.
template <typename Ref>
double RelativeError(const std::vector<float>& out, const std::vector<Ref>& ref) {
  if (out.size() != ref.size()) return std::numeric_limits<double>::infinity();
  double diff = 0.0, norm = 0.0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double d = static_cast<double>(out[i]) - static_cast<double>(ref[i]);
    diff += d * d;
    norm += static_cast<double>(ref[i]) * static_cast<double>(ref[i]);
  }
  return norm == 0.0 ? std::sqrt(diff) : std::sqrt(diff / norm);
}

// Number of non-finite values (outputs poisoned with NaN and never written show up here).
inline size_t CountNonFinite(const std::vector<float>& v) {
  size_t n = 0;
  for (float x : v) n += std::isfinite(x) ? 0 : 1;
  return n;
}

// Infinite when the sizes differ.
inline double MaxAbsError(const std::vector<float>& out, const std::vector<double>& ref) {
  if (out.size() != ref.size()) return std::numeric_limits<double>::infinity();
  double m = 0.0;
  for (size_t i = 0; i < ref.size(); ++i) m = std::max(m, std::abs(out[i] - ref[i]));
  return m;
}

}  // namespace testing
}  // namespace cpu
}  // namespace bert

#endif  // BERT_KERNELS_CPU_TEST_UTIL_H_
