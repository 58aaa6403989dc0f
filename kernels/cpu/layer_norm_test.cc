#include "kernels/cpu/layer_norm.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/test_util.h"

namespace bert {
namespace cpu {
namespace {

using testing::RandomVector;
using testing::RelativeError;

std::vector<double> Reference(const std::vector<float>& x, const float* bias, const float* residual,
                              const std::vector<float>& gamma, const std::vector<float>& beta,
                              int rows, int hidden, double eps) {
  std::vector<double> out(rows * hidden);
  for (int r = 0; r < rows; ++r) {
    std::vector<double> v(hidden);
    double mean = 0;
    for (int i = 0; i < hidden; ++i) {
      v[i] =
          x[r * hidden + i] + (bias ? bias[i] : 0.0) + (residual ? residual[r * hidden + i] : 0.0);
      mean += v[i];
    }
    mean /= hidden;
    double var = 0;
    for (int i = 0; i < hidden; ++i) var += (v[i] - mean) * (v[i] - mean);
    var /= hidden;
    for (int i = 0; i < hidden; ++i) {
      out[r * hidden + i] = (v[i] - mean) / std::sqrt(var + eps) * gamma[i] + beta[i];
    }
  }
  return out;
}

// Every test runs both versions: the best this CPU runs (AVX2 where it has it) and the
// portable one.
class LayerNormTest : public ::testing::TestWithParam<bool> {
 protected:
  static void Run(const float* x, const float* bias, const float* residual, const float* gamma,
                  const float* beta, int rows, int hidden, float eps, float* out) {
    (GetParam() ? AddBiasResidualLayerNormPortable : AddBiasResidualLayerNorm)(
        x, bias, residual, gamma, beta, rows, hidden, eps, out);
  }
};

TEST_P(LayerNormTest, WithBiasAndResidual) {
  const int rows = 17, hidden = 96;
  auto x = RandomVector(rows * hidden, 1);
  auto bias = RandomVector(hidden, 2);
  auto residual = RandomVector(rows * hidden, 3, 3.0f);
  auto gamma = RandomVector(hidden, 4);
  auto beta = RandomVector(hidden, 5);
  std::vector<float> out(rows * hidden);
  Run(x.data(), bias.data(), residual.data(), gamma.data(), beta.data(), rows, hidden, 1e-12f,
      out.data());
  auto ref = Reference(x, bias.data(), residual.data(), gamma, beta, rows, hidden, 1e-12);
  EXPECT_LT(RelativeError(out, ref), 1e-6);
}

TEST_P(LayerNormTest, WithoutBiasOrResidualAndLargeEps) {
  const int rows = 3, hidden = 384;
  auto x = RandomVector(rows * hidden, 6, 0.01f);
  auto gamma = RandomVector(hidden, 7);
  auto beta = RandomVector(hidden, 8);
  std::vector<float> out(rows * hidden);
  Run(x.data(), nullptr, nullptr, gamma.data(), beta.data(), rows, hidden, 1e-3f, out.data());
  auto ref = Reference(x, nullptr, nullptr, gamma, beta, rows, hidden, 1e-3);
  EXPECT_LT(RelativeError(out, ref), 1e-6);
}

TEST_P(LayerNormTest, OutputMayAliasResidual) {
  const int rows = 5, hidden = 64;
  auto x = RandomVector(rows * hidden, 9);
  auto bias = RandomVector(hidden, 10);
  auto residual = RandomVector(rows * hidden, 11);
  auto gamma = RandomVector(hidden, 12);
  auto beta = RandomVector(hidden, 13);
  auto ref = Reference(x, bias.data(), residual.data(), gamma, beta, rows, hidden, 1e-12);
  Run(x.data(), bias.data(), residual.data(), gamma.data(), beta.data(), rows, hidden, 1e-12f,
      residual.data());
  EXPECT_LT(RelativeError(residual, ref), 1e-6);
}

// Widths that are no multiple of the 8-wide vectors (the last values take the scalar path),
// with `out` aliasing `x`.
TEST_P(LayerNormTest, WidthsPastTheVectorsAndOutputAliasingX) {
  for (const int hidden : {1, 7, 13, 36, 389}) {
    const int rows = 4;
    auto x = RandomVector(rows * hidden, 20 + hidden, 2.0f);
    auto bias = RandomVector(hidden, 21);
    auto residual = RandomVector(rows * hidden, 22);
    auto gamma = RandomVector(hidden, 23);
    auto beta = RandomVector(hidden, 24);
    auto ref = Reference(x, bias.data(), residual.data(), gamma, beta, rows, hidden, 1e-12);
    Run(x.data(), bias.data(), residual.data(), gamma.data(), beta.data(), rows, hidden, 1e-12f,
        x.data());
    if (hidden == 1) {
      for (int r = 0; r < rows; ++r) EXPECT_FLOAT_EQ(x[r], beta[0]);  // x - mean = 0
      continue;
    }
    EXPECT_LT(RelativeError(x, ref), 1e-6) << "hidden " << hidden;
  }
}

// A row's result depends only on its values, not on the other rows of the call.
TEST_P(LayerNormTest, RowsDoNotDependOnTheirNeighbours) {
  const int rows = 6, hidden = 100;
  auto x = RandomVector(rows * hidden, 30);
  auto gamma = RandomVector(hidden, 31);
  auto beta = RandomVector(hidden, 32);
  std::vector<float> all(rows * hidden), one(hidden);
  Run(x.data(), nullptr, nullptr, gamma.data(), beta.data(), rows, hidden, 1e-12f, all.data());
  for (int r = 0; r < rows; ++r) {
    Run(x.data() + r * hidden, nullptr, nullptr, gamma.data(), beta.data(), 1, hidden, 1e-12f,
        one.data());
    for (int i = 0; i < hidden; ++i) ASSERT_EQ(one[i], all[r * hidden + i]) << r << " " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Versions, LayerNormTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "Portable" : "Best";
                         });

}  // namespace
}  // namespace cpu
}  // namespace bert
