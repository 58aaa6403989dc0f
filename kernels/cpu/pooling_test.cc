#include "kernels/cpu/pooling.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/test_util.h"

namespace bert {
namespace cpu {
namespace {

using testing::RandomVector;
using testing::RelativeError;

TEST(PoolerTest, TanhDenseOfFirstRow) {
  const int hidden = 48;
  std::vector<int32_t> cu = {0, 3, 4, 10};
  auto x = RandomVector(10 * hidden, 1);
  auto w = RandomVector(hidden * hidden, 2, 0.2f);
  auto b = RandomVector(hidden, 3);
  std::vector<float> out(3 * hidden);
  Pooler(x.data(), cu.data(), 3, hidden, w.data(), b.data(), out.data());
  std::vector<double> ref(3 * hidden);
  for (int s = 0; s < 3; ++s) {
    for (int o = 0; o < hidden; ++o) {
      double acc = b[o];
      for (int i = 0; i < hidden; ++i) acc += static_cast<double>(w[o * hidden + i]) * x[cu[s] * hidden + i];
      ref[s * hidden + o] = std::tanh(acc);
    }
  }
  EXPECT_LT(RelativeError(out, ref), 1e-6);
}

TEST(MeanPoolTest, AveragesOnlyValidRows) {
  const int hidden = 16;
  std::vector<int32_t> cu = {0, 5, 6, 14}, valid = {3, 1, 8};
  auto x = RandomVector(14 * hidden, 4);
  std::vector<float> out(3 * hidden);
  MeanPool(x.data(), cu.data(), valid.data(), 3, hidden, out.data());
  std::vector<double> ref(3 * hidden, 0.0);
  for (int s = 0; s < 3; ++s) {
    for (int r = 0; r < valid[s]; ++r) {
      for (int i = 0; i < hidden; ++i) ref[s * hidden + i] += x[(cu[s] + r) * hidden + i];
    }
    for (int i = 0; i < hidden; ++i) ref[s * hidden + i] /= valid[s];
  }
  EXPECT_LT(RelativeError(out, ref), 1e-6);
}

TEST(L2NormalizeTest, UnitNormsAndZeroRowStaysFinite) {
  const int hidden = 20;
  auto x = RandomVector(3 * hidden, 5, 4.0f);
  for (int i = 0; i < hidden; ++i) x[hidden + i] = 0.0f;
  std::vector<double> ref(3 * hidden);
  for (int r = 0; r < 3; ++r) {
    double n = 0;
    for (int i = 0; i < hidden; ++i) n += static_cast<double>(x[r * hidden + i]) * x[r * hidden + i];
    n = std::max(std::sqrt(n), 1e-12);
    for (int i = 0; i < hidden; ++i) ref[r * hidden + i] = x[r * hidden + i] / n;
  }
  L2Normalize(x.data(), 3, hidden);
  EXPECT_LT(RelativeError(x, ref), 1e-6);
  for (int i = 0; i < hidden; ++i) EXPECT_EQ(x[hidden + i], 0.0f);
}

}  // namespace
}  // namespace cpu
}  // namespace bert
