#include "kernels/cpu/gemm.h"

#include <cmath>
#include <cstdio>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/activation.h"
#include "kernels/cpu/test_util.h"

namespace bert {
namespace cpu {
namespace {

using testing::MaxAbsError;
using testing::RandomVector;
using testing::RelativeError;

double Reference(Epilogue e, double v) {
  switch (e) {
    case Epilogue::kNone:
    case Epilogue::kBias:
      return v;
    case Epilogue::kBiasGeluErf:
      return 0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0)));
    case Epilogue::kBiasGeluTanh:
      return 0.5 * v * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (v + 0.044715 * v * v * v)));
    case Epilogue::kBiasTanh:
      return std::tanh(v);
  }
  return 0;
}

// Output (r, o) of Linear over x [rows, in], w [out, in], b [out], in double precision.
double ReferenceLinear(Epilogue e, const std::vector<float>& x, const std::vector<float>& w,
                       const std::vector<float>& b, int in, int r, int o) {
  double acc = e == Epilogue::kNone ? 0.0 : b[o];
  for (int i = 0; i < in; ++i) acc += static_cast<double>(x[r * in + i]) * w[o * in + i];
  return Reference(e, acc);
}

class LinearTest : public ::testing::TestWithParam<Epilogue> {};

TEST_P(LinearTest, MatchesDoubleReference) {
  const Epilogue e = GetParam();
  for (auto [rows, in, out] :
       {std::tuple{1, 8, 4}, std::tuple{37, 64, 96}, std::tuple{130, 128, 384}}) {
    auto x = RandomVector(rows * in, 1);
    auto w = RandomVector(out * in, 2, 0.1f);
    auto b = RandomVector(out, 3);
    std::vector<float> y(rows * out);
    Linear(x.data(), rows, in, w.data(), e == Epilogue::kNone ? nullptr : b.data(), out, e,
           y.data());
    std::vector<double> ref(rows * out);
    for (int r = 0; r < rows; ++r) {
      for (int o = 0; o < out; ++o) ref[r * out + o] = ReferenceLinear(e, x, w, b, in, r, o);
    }
    EXPECT_LT(RelativeError(y, ref), 1e-6) << rows << "x" << in << "x" << out;
    EXPECT_LT(MaxAbsError(y, ref), 1e-5);
  }
}

INSTANTIATE_TEST_SUITE_P(Epilogues, LinearTest,
                         ::testing::Values(Epilogue::kNone, Epilogue::kBias, Epilogue::kBiasGeluErf,
                                           Epilogue::kBiasGeluTanh, Epilogue::kBiasTanh));

TEST(ApplyEpilogueTest, EqualsFusedLinear) {
  const int rows = 9, in = 16, out = 24;
  auto x = RandomVector(rows * in, 4);
  auto w = RandomVector(out * in, 5);
  auto b = RandomVector(out, 6);
  std::vector<float> fused(rows * out), split(rows * out);
  Linear(x.data(), rows, in, w.data(), b.data(), out, Epilogue::kBiasGeluErf, fused.data());
  Linear(x.data(), rows, in, w.data(), nullptr, out, Epilogue::kNone, split.data());
  ApplyEpilogue(split.data(), rows, out, b.data(), Epilogue::kBiasGeluErf);
  EXPECT_EQ(fused, split);
}

// Every version of the few-rows kernel this CPU runs (AVX-512, AVX2, the portable loop):
// every epilogue, row counts around its blocks of four rows, input lengths around its 8- and
// 16-wide vectors, output ranges around its blocks of three and six; outputs outside the range
// are left alone.
constexpr FewRowsIsa kFewRowsIsas[] = {FewRowsIsa::kPortable, FewRowsIsa::kAvx2,
                                       FewRowsIsa::kAvx512};

TEST_P(LinearTest, FewRowsMatchesDoubleReferenceOnItsOutputRange) {
  const Epilogue e = GetParam();
  for (const FewRowsIsa isa : kFewRowsIsas) {
    if (!FewRowsIsaAvailable(isa)) continue;
    const int version = static_cast<int>(isa);  // for failure messages
    for (auto [rows, in, out, begin, end] :
         {std::tuple{1, 8, 4, 0, 4}, std::tuple{2, 7, 5, 0, 5}, std::tuple{3, 37, 13, 2, 11},
          std::tuple{5, 64, 96, 0, 96}, std::tuple{6, 9, 11, 0, 11}, std::tuple{7, 24, 8, 1, 8},
          std::tuple{9, 31, 17, 0, 17}, std::tuple{4, 40, 23, 3, 23},
          std::tuple{17, 100, 24, 9, 10}, std::tuple{64, 384, 40, 4, 40}}) {
      auto x = RandomVector(rows * in, 11);
      auto w = RandomVector(out * in, 12, 0.1f);
      auto b = RandomVector(out, 13);
      std::vector<float> y(rows * out, -7.0f);
      LinearFewRowsForTesting(isa, x.data(), rows, in, w.data(),
                              e == Epilogue::kNone ? nullptr : b.data(), out, e, begin, end,
                              y.data());
      std::vector<double> ref(rows * (end - begin));
      std::vector<float> got;
      for (int r = 0; r < rows; ++r) {
        for (int o = 0; o < out; ++o) {
          const float value = y[r * out + o];
          if (o < begin || o >= end) {
            EXPECT_EQ(value, -7.0f) << "row " << r << " output " << o << " is outside the range";
            continue;
          }
          ref[r * (end - begin) + o - begin] = ReferenceLinear(e, x, w, b, in, r, o);
          got.push_back(value);
        }
      }
      EXPECT_LT(RelativeError(got, ref), 1e-6)
          << rows << "x" << in << "x" << out << " version " << version;
      EXPECT_LT(MaxAbsError(got, ref), 1e-5)
          << rows << "x" << in << "x" << out << " version " << version;
    }
  }
}

// The engine splits a layer's outputs across threads and relies on an output's value not
// depending on the range or the batch it is computed in (its results do not change with the
// thread count): each output of the few-rows kernel has the same bits computed with the whole
// range and all rows, alone, or one row at a time.
TEST(LinearTest, FewRowsOutputsDoNotDependOnTheirBlock) {
  const int rows = 11, in = 45, out = 14;
  const auto x = RandomVector(rows * in, 21);
  const auto w = RandomVector(out * in, 22, 0.1f);
  const auto b = RandomVector(out, 23);
  for (const FewRowsIsa isa : kFewRowsIsas) {
    if (!FewRowsIsaAvailable(isa)) continue;
    const auto linear = [&](const float* xr, int n, int o0, int o1, float* y) {
      LinearFewRowsForTesting(isa, xr, n, in, w.data(), b.data(), out, Epilogue::kBias, o0, o1, y);
    };
    std::vector<float> whole(rows * out);
    linear(x.data(), rows, 0, out, whole.data());
    std::vector<float> alone(rows * out, 0.0f), by_row(rows * out, 0.0f);
    for (int o = 0; o < out; ++o) linear(x.data(), rows, o, o + 1, alone.data());
    for (int r = 0; r < rows; ++r) linear(x.data() + r * in, 1, 0, out, by_row.data() + r * out);
    EXPECT_EQ(alone, whole) << "version " << static_cast<int>(isa);
    EXPECT_EQ(by_row, whole) << "version " << static_cast<int>(isa);
  }
}

// LinearFewRows runs the best version this CPU supports (the tests above skip the others, so
// this one also says which ran).
TEST(LinearTest, FewRowsRunsTheBestVersionThisCpuRuns) {
  FewRowsIsa best = FewRowsIsa::kPortable;
  const char* name = "portable";
  if (FewRowsIsaAvailable(FewRowsIsa::kAvx512)) {
    best = FewRowsIsa::kAvx512;
    name = "AVX-512";
  } else if (FewRowsIsaAvailable(FewRowsIsa::kAvx2)) {
    best = FewRowsIsa::kAvx2;
    name = "AVX2";
  }
  std::printf("few-rows kernel versions run here: portable%s%s\n",
              FewRowsIsaAvailable(FewRowsIsa::kAvx2) ? ", AVX2" : "",
              FewRowsIsaAvailable(FewRowsIsa::kAvx512) ? ", AVX-512" : "");
  EXPECT_STREQ(FewRowsIsaName(), name);
  const int rows = 9, in = 53, out = 20;
  const auto x = RandomVector(rows * in, 31);
  const auto w = RandomVector(out * in, 32, 0.1f);
  std::vector<float> got(rows * out), want(rows * out);
  LinearFewRows(x.data(), rows, in, w.data(), nullptr, out, Epilogue::kNone, 0, out, got.data());
  LinearFewRowsForTesting(best, x.data(), rows, in, w.data(), nullptr, out, Epilogue::kNone, 0, out,
                          want.data());
  EXPECT_EQ(got, want);
}

TEST(LinearTest, ZeroRowsIsANoOp) {
  float y = 42.0f;
  Linear(nullptr, 0, 4, nullptr, nullptr, 4, Epilogue::kNone, &y);
  EXPECT_EQ(y, 42.0f);
}

}  // namespace
}  // namespace cpu
}  // namespace bert

namespace bert {
namespace cpu {
namespace {

TEST(ErfRationalTest, CloseToStdErfEverywhere) {
  double worst = 0;
  for (float x = -6.0f; x <= 6.0f; x += 1.0f / 4096) {
    worst = std::max(
        worst, std::abs(static_cast<double>(ErfRational(x)) - std::erf(static_cast<double>(x))));
  }
  EXPECT_LT(worst, 6e-7);
  EXPECT_EQ(ErfRational(0.0f), 0.0f);
  EXPECT_EQ(ErfRational(100.0f), ErfRational(3.925f));
}

}  // namespace
}  // namespace cpu
}  // namespace bert

namespace bert {
namespace cpu {
namespace {

// Row lengths around the 8-wide vector path and its scalar tail.
TEST(GeluEpilogueTest, VectorAndScalarPathsMatchExactGelu) {
  for (int features : {1, 7, 8, 9, 61}) {
    auto y = RandomVector(3 * features, 21, 3.0f);
    auto b = RandomVector(features, 22);
    std::vector<double> ref(y.size());
    for (int r = 0; r < 3; ++r) {
      for (int i = 0; i < features; ++i) {
        const double v = static_cast<double>(y[r * features + i]) + b[i];
        ref[r * features + i] = 0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0)));
      }
    }
    ApplyEpilogue(y.data(), 3, features, b.data(), Epilogue::kBiasGeluErf);
    EXPECT_LT(MaxAbsError(y, ref), 3e-6) << features;
  }
}

}  // namespace
}  // namespace cpu
}  // namespace bert
