// Our split-K GEMM (split_k_gemm.h) and Gemm's use of it (GemmOptions::custom_gemm).
//  * SplitKGemmArgsTest (no GPU needed): which shapes, pointers and split counts are refused.
//  * SplitKGemmTest: the kernel against cpu::Linear for fp16/bf16, every epilogue, every
//    split count it accepts (up to 16, empty splits included) and several row counts (partial
//    row tiles included): every element within a few
//    16-bit roundings of the reference, nothing written past the last row, and a second launch
//    bit-identical to the first (the tile counters were reset; the split order is fixed).
//    The LayerNorm epilogue likewise against cpu::Linear + residual normalised in double, in
//    place (y = the residual, as the engine runs it) and not.
//  * GemmCustomTest: autotune with our kernel among the candidates on the BERT-base shapes:
//    results match cpu::Linear, our kernel was timed where it applies (and only there), and it
//    never disagreed with cuBLASLt. With force_custom_splits, Gemm runs our kernel for every
//    plan it applies to (kBiasResidual included, and inside a captured CUDA graph), and the
//    results match cpu::Linear. A programmatic launch right after the kernel that writes its
//    input reads the finished input.
// Skips with the reason when no CUDA GPU is present or when built with --config=nocuda.
#include <gtest/gtest.h>

#if defined(BERT_WITH_CUDA)

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/cpu/gemm.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/gemm_test_util.h"
#include "kernels/cuda/launch.h"
#include "kernels/cuda/layer_norm.h"
#include "kernels/cuda/split_k_gemm.h"
#include "kernels/cuda/test_util.h"

namespace bert {
namespace cuda {
namespace {

using testing_util::CountNonFinite;
using testing_util::DeviceArray;
using testing_util::EngineGemm;
using testing_util::FreshRng;
using testing_util::GemmCase;
using testing_util::GemmOperands;
using testing_util::GemmReference;
using testing_util::GemmTolerance;
using testing_util::HaveGpu;
using testing_util::MakeGemmCase;
using testing_util::MakeGemmOperands;
using testing_util::RandomVector;
using testing_util::RelativeError;
using testing_util::RoundThrough;
using testing_util::TestDType;
using testing_util::TestDTypeName;
using testing_util::Tolerance;

// ---------------------------------------------------------------------------------------
// Argument checks (host only).

// A fake device address with the given alignment (never dereferenced).
const void* At(uintptr_t address) { return reinterpret_cast<const void*>(address); }

SplitKGemmArgs ValidArgs() {
  SplitKGemmArgs a;
  a.x = At(0x10000);
  a.weight = At(0x20000);
  a.bias = At(0x30000);
  a.y = const_cast<void*>(At(0x40000));
  a.rows = 128;
  a.in_features = 768;
  a.out_features = 768;
  a.splits = 4;
  a.partials = static_cast<float*>(const_cast<void*>(At(0x50000)));
  a.counters = static_cast<unsigned*>(const_cast<void*>(At(0x60000)));
  return a;
}

TEST(SplitKGemmArgsTest, AcceptsTheEngineShapes) {
  for (const auto& [in, out] :
       {std::pair{768, 2304}, {768, 768}, {768, 3072}, {3072, 768}, {64, 192}, {128, 512}}) {
    SplitKGemmArgs a = ValidArgs();
    a.in_features = in;
    a.out_features = out;
    a.splits = std::min(4, in / kSplitKBlockK);
    for (SplitKEpilogue e :
         {SplitKEpilogue::kNone, SplitKEpilogue::kBias, SplitKEpilogue::kBiasGeluTanh}) {
      EXPECT_EQ(SplitKGemmUnsupported(a, e), "") << in << "->" << out;
    }
    a.residual = At(0x70000);
    EXPECT_EQ(SplitKGemmUnsupported(a, SplitKEpilogue::kBiasResidual), "");
  }
  SplitKGemmArgs one_split = ValidArgs();
  one_split.splits = 1;
  one_split.partials = nullptr;  // not needed without a split
  one_split.counters = nullptr;
  EXPECT_EQ(SplitKGemmUnsupported(one_split, SplitKEpilogue::kBias), "");
  SplitKGemmArgs no_rows = ValidArgs();
  no_rows.rows = 0;
  EXPECT_EQ(SplitKGemmUnsupported(no_rows, SplitKEpilogue::kBias), "");
}

TEST(SplitKGemmArgsTest, RefusesWhatTheKernelCannotRun) {
  auto refused = [](const SplitKGemmArgs& a, SplitKEpilogue e = SplitKEpilogue::kBias) {
    return !SplitKGemmUnsupported(a, e).empty();
  };
  SplitKGemmArgs a = ValidArgs();
  a.in_features = 100;  // not a multiple of 32
  EXPECT_TRUE(refused(a));
  a = ValidArgs();
  a.out_features = 36;  // not a multiple of 64
  EXPECT_TRUE(refused(a));
  a = ValidArgs();
  a.rows = -1;
  EXPECT_TRUE(refused(a));
  a = ValidArgs();
  a.x = At(0x10008);  // 8-byte aligned: cp.async needs 16
  EXPECT_TRUE(refused(a));
  a = ValidArgs();
  a.weight = At(0x20004);
  EXPECT_TRUE(refused(a));
  a = ValidArgs();
  a.y = const_cast<void*>(At(0x40002));  // pairs of 16-bit values are stored as 4 bytes
  EXPECT_TRUE(refused(a));
  a = ValidArgs();
  a.bias = nullptr;
  EXPECT_TRUE(refused(a));
  EXPECT_FALSE(refused(a, SplitKEpilogue::kNone));  // no bias needed
  a = ValidArgs();
  a.residual = At(0x70000);  // a residual without kBiasResidual
  EXPECT_TRUE(refused(a));
  a = ValidArgs();
  EXPECT_TRUE(refused(a, SplitKEpilogue::kBiasResidual));  // kBiasResidual without one
  a = ValidArgs();
  a.splits = 0;
  EXPECT_TRUE(refused(a));
  a.splits = kSplitKMaxSplits + 1;
  EXPECT_TRUE(refused(a));
  a = ValidArgs();
  a.in_features = 64;  // two K blocks
  a.splits = 3;
  EXPECT_TRUE(refused(a));
  a = ValidArgs();
  a.partials = nullptr;
  EXPECT_TRUE(refused(a));
  a = ValidArgs();
  a.counters = nullptr;
  EXPECT_TRUE(refused(a));
}

// Operands 16 MiB apart, so that none overlaps another at the shapes below.
SplitKGemmArgs ValidLayerNormArgs() {
  auto at = [](int i) { return reinterpret_cast<void*>(static_cast<uintptr_t>(i) << 24); };
  SplitKGemmArgs a;
  a.x = at(1);
  a.weight = at(2);
  a.bias = at(3);
  a.y = at(4);
  a.residual = at(5);
  a.rows = 128;
  a.in_features = 768;
  a.out_features = 768;
  a.splits = 4;
  a.partials = static_cast<float*>(at(6));
  a.counters = static_cast<unsigned*>(at(7));
  a.gamma = static_cast<const float*>(at(8));
  a.beta = static_cast<const float*>(at(9));
  a.eps = 1e-12f;
  a.norm_rows = static_cast<float*>(at(10));
  a.norm_stats = static_cast<float*>(at(11));
  a.row_counters = static_cast<unsigned*>(at(12));
  return a;
}

// Shifts a pointer by `bytes`.
template <typename P>
P Shifted(P p, long bytes) {
  return reinterpret_cast<P>(reinterpret_cast<uintptr_t>(p) + bytes);
}

TEST(SplitKGemmArgsTest, LayerNormEpilogue) {
  constexpr SplitKEpilogue kLn = SplitKEpilogue::kBiasResidualLayerNorm;
  EXPECT_EQ(SplitKGemmUnsupported(ValidLayerNormArgs(), kLn), "");
  SplitKGemmArgs a = ValidLayerNormArgs();
  a.y = const_cast<void*>(a.residual);  // in place: the engine's hidden state
  EXPECT_EQ(SplitKGemmUnsupported(a, kLn), "");
  a.in_features = 3072;
  a.out_features = kSplitKMaxLayerNormWidth;
  EXPECT_EQ(SplitKGemmUnsupported(a, kLn), "");

  auto refused = [&](void (*change)(SplitKGemmArgs&)) {
    SplitKGemmArgs b = ValidLayerNormArgs();
    change(b);
    return !SplitKGemmUnsupported(b, kLn).empty();
  };
  EXPECT_TRUE(refused([](SplitKGemmArgs& b) { b.out_features = kSplitKMaxLayerNormWidth + 64; }));
  EXPECT_TRUE(refused([](SplitKGemmArgs& b) { b.residual = nullptr; }));
  EXPECT_TRUE(refused([](SplitKGemmArgs& b) { b.gamma = nullptr; }));
  EXPECT_TRUE(refused([](SplitKGemmArgs& b) { b.beta = nullptr; }));
  EXPECT_TRUE(refused([](SplitKGemmArgs& b) { b.gamma = Shifted(b.gamma, 8); }));  // float4
  EXPECT_TRUE(refused([](SplitKGemmArgs& b) { b.norm_rows = nullptr; }));
  EXPECT_TRUE(refused([](SplitKGemmArgs& b) { b.norm_rows = Shifted(b.norm_rows, 8); }));
  EXPECT_TRUE(refused([](SplitKGemmArgs& b) { b.norm_stats = nullptr; }));
  EXPECT_TRUE(refused([](SplitKGemmArgs& b) { b.norm_stats = Shifted(b.norm_stats, 4); }));
  EXPECT_TRUE(refused([](SplitKGemmArgs& b) { b.row_counters = nullptr; }));
  EXPECT_TRUE(refused([](SplitKGemmArgs& b) { b.row_counters = b.counters; }));
  EXPECT_TRUE(refused([](SplitKGemmArgs& b) { b.y = Shifted(b.y, 4); }));  // 4 values a store
  EXPECT_TRUE(refused([](SplitKGemmArgs& b) { b.y = const_cast<void*>(b.x); }));
  // y partly over the residual (128 rows x 768 outputs of 2 bytes), or over x; the sums over y.
  EXPECT_TRUE(
      refused([](SplitKGemmArgs& b) { b.y = Shifted(const_cast<void*>(b.residual), 4096); }));
  EXPECT_TRUE(refused([](SplitKGemmArgs& b) { b.y = Shifted(const_cast<void*>(b.x), -4096); }));
  EXPECT_TRUE(refused([](SplitKGemmArgs& b) { b.norm_rows = static_cast<float*>(b.y); }));
  // The LayerNorm's parameters and workspace are not needed by another epilogue, and
  // kBiasResidual's arguments do not make the LayerNorm valid.
  a = ValidArgs();
  a.residual = At(0x70000);
  EXPECT_EQ(SplitKGemmUnsupported(a, SplitKEpilogue::kBiasResidual), "");
  EXPECT_FALSE(SplitKGemmUnsupported(a, kLn).empty());
  EXPECT_EQ(SplitKGemmRowBlocks(1), 1);
  EXPECT_EQ(SplitKGemmRowBlocks(128), 2);
  EXPECT_EQ(SplitKGemmRowBlocks(129), 3);
  EXPECT_EQ(SplitKGemmNormStatsFloats(128, 768), 128u * 12 * 2);
}

TEST(SplitKGemmArgsTest, WorkspaceAndSplitArithmetic) {
  EXPECT_EQ(SplitKGemmTiles(1, 768), 12);
  EXPECT_EQ(SplitKGemmTiles(128, 768), 24);
  EXPECT_EQ(SplitKGemmTiles(129, 768), 36);
  EXPECT_EQ(SplitKGemmPartialFloats(128, 768, 1), 0u);
  EXPECT_EQ(SplitKGemmPartialFloats(128, 768, 4), 24u * 4 * 64 * 64);
  // 768 = 24 K blocks: 5 splits take 5, 5, 5, 5, 4; 7 splits of 4 would leave the 7th empty.
  EXPECT_EQ(SplitKBlocksPerSplit(768, 5), 5);
  EXPECT_TRUE(SplitKEverySplitBusy(768, 5));
  EXPECT_FALSE(SplitKEverySplitBusy(768, 7));
  EXPECT_TRUE(SplitKEverySplitBusy(768, 8));
  EXPECT_TRUE(SplitKEverySplitBusy(768, 24));
  EXPECT_FALSE(SplitKEverySplitBusy(768, 25));
  EXPECT_FALSE(SplitKEverySplitBusy(768, 0));
}

TEST(SplitKGemmArgsTest, SplitsToFillTheGpu) {
  // 132 SMs (H100/H200 SXM). One sequence of 128 tokens: 24 tiles of 768 outputs, 5 splits
  // (120 CTAs); 77 tokens: 24 tiles as well.
  EXPECT_EQ(SplitKGemmSplitsToFill(128, 768, 768, 132), 5);
  EXPECT_EQ(SplitKGemmSplitsToFill(128, 3072, 768, 132), 5);
  EXPECT_EQ(SplitKGemmSplitsToFill(77, 768, 768, 132), 5);
  // A single row tile of 64 outputs would want 132 splits: at most 16, and at most one per
  // K block (64 inputs: 2).
  EXPECT_EQ(SplitKGemmSplitsToFill(1, 3072, 64, 132), kSplitKMaxSplits);
  EXPECT_EQ(SplitKGemmSplitsToFill(1, 64, 64, 132), 2);
  // Enough tiles alone: no split.
  EXPECT_EQ(SplitKGemmSplitsToFill(1024, 768, 768, 132), 1);
  EXPECT_EQ(SplitKGemmSplitsToFill(704, 768, 768, 132), 1);
  // 768 = 24 K blocks: 7 splits would leave one empty, so 6.
  EXPECT_EQ(SplitKGemmSplitsToFill(64, 768, 768, 84), 6);
  // Always within the partial-sum workspace of one tile per SM.
  for (int rows : {1, 17, 64, 100, 128, 200, 256, 512, 4096}) {
    for (const auto& [in, out] : {std::pair{768, 768}, {3072, 768}, {256, 64}, {512, 128}}) {
      for (int sms : {1, 20, 84, 108, 132}) {
        const int splits = SplitKGemmSplitsToFill(rows, in, out, sms);
        EXPECT_GE(splits, 1);
        EXPECT_TRUE(SplitKEverySplitBusy(in, splits)) << rows << " " << in << " " << splits;
        if (splits > 1) {
          EXPECT_LE(SplitKGemmPartialFloats(rows, out, splits),
                    static_cast<size_t>(sms) * kSplitKBlockRows * kSplitKBlockCols)
              << rows << " rows " << in << "->" << out << " on " << sms << " SMs";
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------
// The kernel against cpu::Linear.

struct Shape {
  int rows, in, out;
};

using KernelParam = std::tuple<TestDType, Shape>;

class SplitKGemmTest : public ::testing::TestWithParam<KernelParam> {
 protected:
  void SetUp() override {
    std::string why;
    if (!HaveGpu(&why)) GTEST_SKIP() << why;
  }
};

// Unit roundoff of T: an output element may differ from the exact value by this much of its
// magnitude (one rounding), plus the fp32 summation order.
double UnitRoundoff(TestDType dtype) {
  return dtype == TestDType::kBF16 ? std::ldexp(1.0, -8) : std::ldexp(1.0, -11);
}

// Every element within 4 unit roundoffs of the largest reference magnitude.
void ExpectElementwiseClose(const std::vector<float>& got, const std::vector<float>& ref,
                            TestDType dtype, const std::string& what) {
  ASSERT_EQ(got.size(), ref.size()) << what;
  EXPECT_EQ(CountNonFinite(got), 0u) << what << ": outputs not written (NaN poison left)";
  float scale = 0.0f;
  for (float r : ref) scale = std::max(scale, std::fabs(r));
  const double bound = 4.0 * UnitRoundoff(dtype) * scale;
  double worst = 0.0;
  size_t worst_at = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double d = std::fabs(static_cast<double>(got[i]) - ref[i]);
    if (!(d <= worst)) {
      worst = d;
      worst_at = i;
    }
  }
  EXPECT_LE(worst, bound) << what << ": worst element " << worst_at << " got " << got[worst_at]
                          << " want " << ref[worst_at];
  EXPECT_LE(RelativeError(got, ref), Tolerance(dtype)) << what;
}

template <typename T>
void CheckKernel(Shape s, TestDType dtype) {
  std::mt19937 rng = FreshRng();
  const GemmOperands o = MakeGemmOperands<T>(s.rows, s.in, s.out, /*with_residual=*/true, rng);
  const size_t n = static_cast<size_t>(s.rows) * s.out;
  // 64 rows of guard past the output: poisoned, and must stay so.
  const size_t guard = static_cast<size_t>(64) * s.out;
  DeviceArray<T> d_x(o.x), d_w(o.w), d_b(o.b), d_r(o.r), d_y(n + guard);
  ASSERT_STATUS_OK(d_y.status());
  const int max_splits = std::min(kSplitKMaxSplits, s.in / kSplitKBlockK);
  DeviceBuffer<float> partials;
  DeviceBuffer<unsigned> counters;
  ASSERT_STATUS_OK(partials.Allocate(SplitKGemmPartialFloats(s.rows, s.out, max_splits)));
  ASSERT_STATUS_OK(counters.Allocate(SplitKGemmTiles(s.rows, s.out)));
  ASSERT_CUDA_OK(cudaMemset(counters.get(), 0, counters.bytes()));

  struct Case {
    SplitKEpilogue gpu;
    cpu::Epilogue cpu;
    bool residual;
    const char* name;
  };
  const Case cases[] = {
      {SplitKEpilogue::kNone, cpu::Epilogue::kNone, false, "none"},
      {SplitKEpilogue::kBias, cpu::Epilogue::kBias, false, "bias"},
      {SplitKEpilogue::kBiasGeluTanh, cpu::Epilogue::kBiasGeluTanh, false, "bias_gelu_tanh"},
      {SplitKEpilogue::kBiasResidual, cpu::Epilogue::kBias, true, "bias_residual"},
  };
  for (const Case& c : cases) {
    const std::vector<float> ref = GemmReference(o, c.cpu, c.residual);
    // Every count the kernel accepts, including those that leave a split empty.
    for (int splits = 1; splits <= max_splits; ++splits) {
      const std::string what = std::string(c.name) + " " + TestDTypeName(dtype) + " " +
                               std::to_string(s.rows) + "x" + std::to_string(s.in) + "x" +
                               std::to_string(s.out) + " splits=" + std::to_string(splits);
      SplitKGemmArgs args;
      args.x = d_x.get();
      args.weight = d_w.get();
      args.bias = c.gpu == SplitKEpilogue::kNone ? nullptr : d_b.get();
      args.residual = c.residual ? d_r.get() : nullptr;
      args.y = d_y.get();
      args.rows = s.rows;
      args.in_features = s.in;
      args.out_features = s.out;
      args.splits = splits;
      args.partials = partials.get();
      args.counters = counters.get();
      ASSERT_EQ(SplitKGemmUnsupported(args, c.gpu), "") << what;
      ASSERT_CUDA_OK(d_y.Poison());
      ASSERT_CUDA_OK(LaunchSplitKGemm<T>(args, c.gpu, nullptr));
      ASSERT_CUDA_OK(cudaDeviceSynchronize());
      std::vector<float> got = d_y.Download();
      const std::vector<float> tail(got.begin() + n, got.end());
      EXPECT_EQ(CountNonFinite(tail), tail.size()) << what << ": wrote past the last row";
      got.resize(n);
      ExpectElementwiseClose(got, ref, dtype, what);
      // Again: the counters were reset, and the split order fixes the result bit for bit.
      ASSERT_CUDA_OK(d_y.Poison());
      ASSERT_CUDA_OK(LaunchSplitKGemm<T>(args, c.gpu, nullptr));
      ASSERT_CUDA_OK(cudaDeviceSynchronize());
      std::vector<float> again = d_y.Download();
      again.resize(n);
      EXPECT_EQ(again, got) << what << ": second launch differs";
    }
  }
  EXPECT_EQ(d_r.Download(), o.r) << "the residual changed";
}

// y = LayerNorm(x·Wᵀ + b + r) * gamma + beta: cpu::Linear + r, normalised in double.
std::vector<float> LayerNormReference(const GemmOperands& o, const std::vector<float>& gamma,
                                      const std::vector<float>& beta, float eps) {
  std::vector<float> pre = GemmReference(o, cpu::Epilogue::kBias, /*add_residual=*/true);
  std::vector<float> ref(pre.size());
  for (int r = 0; r < o.rows; ++r) {
    const float* row = pre.data() + static_cast<size_t>(r) * o.out;
    double mean = 0.0, var = 0.0;
    for (int c = 0; c < o.out; ++c) mean += row[c];
    mean /= o.out;
    for (int c = 0; c < o.out; ++c) var += (row[c] - mean) * (row[c] - mean);
    var /= o.out;
    const double rstd = 1.0 / std::sqrt(var + eps);
    for (int c = 0; c < o.out; ++c) {
      ref[static_cast<size_t>(r) * o.out + c] =
          static_cast<float>((row[c] - mean) * rstd * gamma[c] + beta[c]);
    }
  }
  return ref;
}

template <typename T>
void CheckLayerNormEpilogue(Shape s, TestDType dtype) {
  std::mt19937 rng = FreshRng();
  GemmOperands o = MakeGemmOperands<T>(s.rows, s.in, s.out, /*with_residual=*/true, rng);
  // Tiles of 64 columns with different means (bias offsets of -4.5, -1.5, 1.5, 4.5), so that
  // a row's variance is mostly between its tiles: the part the kernel's merge of the tiles'
  // statistics adds.
  for (int c = 0; c < s.out; ++c) o.b[c] += 3.0f * ((c / 64) % 4) - 4.5f;
  RoundThrough<T>(&o.b);
  const std::vector<float> gamma = RandomVector(s.out, rng, 1.0f);
  const std::vector<float> beta = RandomVector(s.out, rng, 0.5f);
  const float eps = 1e-12f;
  const std::vector<float> ref = LayerNormReference(o, gamma, beta, eps);
  const size_t n = static_cast<size_t>(s.rows) * s.out;
  const size_t guard = static_cast<size_t>(64) * s.out;  // poisoned rows past the output
  DeviceArray<T> d_x(o.x), d_w(o.w), d_b(o.b), d_r(o.r), d_y(n + guard);
  DeviceArray<float> d_gamma(gamma), d_beta(beta);
  ASSERT_STATUS_OK(d_y.status());
  const int max_splits = std::min(kSplitKMaxSplits, s.in / kSplitKBlockK);
  DeviceBuffer<float> partials, norm_rows, norm_stats;
  DeviceBuffer<unsigned> counters, row_counters;
  ASSERT_STATUS_OK(partials.Allocate(SplitKGemmPartialFloats(s.rows, s.out, max_splits)));
  ASSERT_STATUS_OK(counters.Allocate(SplitKGemmTiles(s.rows, s.out)));
  ASSERT_STATUS_OK(norm_rows.Allocate(n));
  ASSERT_STATUS_OK(norm_stats.Allocate(SplitKGemmNormStatsFloats(s.rows, s.out)));
  ASSERT_STATUS_OK(row_counters.Allocate(SplitKGemmRowBlocks(s.rows)));
  ASSERT_CUDA_OK(cudaMemset(counters.get(), 0, counters.bytes()));
  ASSERT_CUDA_OK(cudaMemset(row_counters.get(), 0, row_counters.bytes()));
  for (const bool in_place : {true, false}) {
    for (int splits = 1; splits <= max_splits; ++splits) {
      const std::string what = std::string(in_place ? "in place " : "") + "layer_norm " +
                               TestDTypeName(dtype) + " " + std::to_string(s.rows) + "x" +
                               std::to_string(s.in) + "x" + std::to_string(s.out) +
                               " splits=" + std::to_string(splits);
      SplitKGemmArgs args;
      args.x = d_x.get();
      args.weight = d_w.get();
      args.bias = d_b.get();
      args.residual = in_place ? d_y.get() : d_r.get();
      args.y = d_y.get();
      args.rows = s.rows;
      args.in_features = s.in;
      args.out_features = s.out;
      args.splits = splits;
      args.partials = partials.get();
      args.counters = counters.get();
      args.gamma = d_gamma.get();
      args.beta = d_beta.get();
      args.eps = eps;
      args.norm_rows = norm_rows.get();
      args.norm_stats = norm_stats.get();
      args.row_counters = row_counters.get();
      ASSERT_EQ(SplitKGemmUnsupported(args, SplitKEpilogue::kBiasResidualLayerNorm), "") << what;
      std::vector<float> first;
      for (int launch = 0; launch < 2; ++launch) {
        ASSERT_CUDA_OK(d_y.Poison());
        if (in_place) {
          ASSERT_CUDA_OK(cudaMemcpy(d_y.get(), d_r.get(), n * sizeof(T), cudaMemcpyDeviceToDevice));
        }
        ASSERT_CUDA_OK(LaunchSplitKGemm<T>(args, SplitKEpilogue::kBiasResidualLayerNorm, nullptr));
        ASSERT_CUDA_OK(cudaDeviceSynchronize());
        std::vector<float> got = d_y.Download();
        const std::vector<float> tail(got.begin() + n, got.end());
        EXPECT_EQ(CountNonFinite(tail), tail.size()) << what << ": wrote past the last row";
        got.resize(n);
        if (launch == 0) {
          ExpectElementwiseClose(got, ref, dtype, what);
          first = got;
        } else {
          // The tile and row-block counters were reset; nothing depends on which CTA came last.
          EXPECT_EQ(got, first) << what << ": second launch differs";
        }
      }
    }
  }
  EXPECT_EQ(d_r.Download(), o.r) << "the residual changed";
}

TEST_P(SplitKGemmTest, LayerNormEpilogueMatchesReference) {
  const auto [dtype, shape] = GetParam();
  if (shape.out > kSplitKMaxLayerNormWidth) GTEST_SKIP() << "wider than the LayerNorm epilogue";
  if (dtype == TestDType::kF16) {
    CheckLayerNormEpilogue<__half>(shape, dtype);
  } else {
    CheckLayerNormEpilogue<__nv_bfloat16>(shape, dtype);
  }
}

TEST_P(SplitKGemmTest, MatchesCpuLinear) {
  const auto [dtype, shape] = GetParam();
  if (dtype == TestDType::kF16) {
    CheckKernel<__half>(shape, dtype);
  } else {
    CheckKernel<__nv_bfloat16>(shape, dtype);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, SplitKGemmTest,
    ::testing::Combine(::testing::Values(TestDType::kF16, TestDType::kBF16),
                       ::testing::Values(Shape{1, 64, 64}, Shape{17, 128, 192}, Shape{64, 768, 768},
                                         Shape{100, 256, 1024}, Shape{200, 768, 768},
                                         Shape{100, 768, 2304}, Shape{128, 3072, 768},
                                         Shape{200, 384, 1536}, Shape{256, 768, 3072})),
    [](const auto& info) {
      const Shape s = std::get<1>(info.param);
      return std::string(TestDTypeName(std::get<0>(info.param))) + "_" + std::to_string(s.rows) +
             "x" + std::to_string(s.in) + "x" + std::to_string(s.out);
    });

// ---------------------------------------------------------------------------------------
// Gemm with autotune and our kernel among the candidates.

const EngineGemm kEngineGemms[] = {
    {768, 2304, GemmEpilogue::kBias, cpu::Epilogue::kBias, "qkv"},
    {768, 768, GemmEpilogue::kBias, cpu::Epilogue::kBias, "attn_out"},
    {768, 3072, GemmEpilogue::kBiasGeluTanh, cpu::Epilogue::kBiasGeluTanh, "ffn_in_gelu"},
    {3072, 768, GemmEpilogue::kBias, cpu::Epilogue::kBias, "ffn_out"},
};

class GemmCustomTest : public ::testing::TestWithParam<TestDType> {
 protected:
  void SetUp() override {
    std::string why;
    if (!HaveGpu(&why)) GTEST_SKIP() << why;
  }
};

template <typename T>
void CheckCustomCandidates(TestDType dtype) {
  std::mt19937 rng = FreshRng();
  GemmOptions options;
  options.autotune = true;
  options.custom_gemm = true;
  std::unique_ptr<Gemm> gemm;
  ASSERT_STATUS_OK(Gemm::Create(options, &gemm));
  const bool sixteen_bit = dtype != TestDType::kF32;
  // 128 and then 100 rows share a bucket (the second reuses the first's choice, whichever
  // it was); 1000 rows is past kCustomMaxRows.
  for (const int rows : {1, 128, 100, 256, 1000}) {
    for (const EngineGemm& g : kEngineGemms) {
      const std::string what =
          std::string(g.name) + " rows=" + std::to_string(rows) + " " + TestDTypeName(dtype);
      const GemmCase c = MakeGemmCase<T>(rows, g, rng);
      const std::vector<float>& ref = c.ref;
      DeviceArray<T> d_x(c.x), d_w(c.w), d_b(c.b), d_y(ref.size());
      ASSERT_STATUS_OK(d_y.status());
      ASSERT_CUDA_OK(d_y.Poison());
      const GemmStats before = gemm->stats();
      ASSERT_STATUS_OK(gemm->Run<T>(d_x.get(), rows, g.in, d_w.get(), d_b.get(), g.out, g.gpu,
                                    d_y.get(), nullptr));
      ASSERT_CUDA_OK(cudaDeviceSynchronize());
      const std::vector<float> got = d_y.Download();
      ASSERT_EQ(got.size(), ref.size());
      EXPECT_EQ(CountNonFinite(got), 0u) << what;
      EXPECT_LE(RelativeError(got, ref), GemmTolerance(dtype, g.gpu)) << what;
      const GemmStats& after = gemm->stats();
      const bool new_bucket = after.tuned_buckets > before.tuned_buckets;
      EXPECT_EQ(new_bucket, rows != 100) << what;
      const bool applies = sixteen_bit && rows <= Gemm::kCustomMaxRows;
      if (new_bucket && applies) {
        EXPECT_GT(after.custom_timed, before.custom_timed) << what << ": our kernel not timed";
      } else {
        EXPECT_EQ(after.custom_timed, before.custom_timed) << what << ": our kernel timed";
      }
      EXPECT_EQ(after.custom_mismatches, 0) << what << ": our kernel disagreed with cuBLASLt";
      std::printf("%-36s %s\n", what.c_str(),
                  gemm->DescribePlan<T>(rows, g.in, g.out, g.gpu).c_str());
    }
  }
  std::printf("custom: timed %lld, chosen %lld of %lld tunings\n", gemm->stats().custom_timed,
              gemm->stats().custom_chosen, gemm->stats().tuned_buckets);
}

TEST_P(GemmCustomTest, EngineShapesMatchCpuAndAgreeWithCublas) {
  DISPATCH_DTYPE(GetParam(), CheckCustomCandidates, GetParam());
}

// Gemm with force_custom_splits: our kernel for every plan it supports, checked against the
// CPU (so a wrong kernel fails here, where autotune would quietly drop it), eager and inside a
// captured graph.
template <typename T>
void CheckForcedCustom(TestDType dtype) {
  std::mt19937 rng = FreshRng();
  GemmOptions options;
  options.force_custom_splits = 4;
  std::unique_ptr<Gemm> gemm;
  ASSERT_STATUS_OK(Gemm::Create(options, &gemm));
  CudaStream stream;
  ASSERT_STATUS_OK(stream.Create());
  const bool sixteen_bit = dtype != TestDType::kF32;
  for (const int rows : {1, 100, 256, 1000}) {
    for (const EngineGemm& g : kEngineGemms) {
      for (const bool with_residual : {false, true}) {
        if (with_residual && g.gpu != GemmEpilogue::kBias) continue;
        const GemmEpilogue epilogue = with_residual ? GemmEpilogue::kBiasResidual : g.gpu;
        for (const bool captured : {false, true}) {
          const std::string what = std::string(g.name) + (with_residual ? "+residual" : "") +
                                   " rows=" + std::to_string(rows) + " " + TestDTypeName(dtype) +
                                   (captured ? " graph" : " eager");
          const GemmOperands o = MakeGemmOperands<T>(rows, g.in, g.out, with_residual, rng);
          const std::vector<float> ref = GemmReference(o, g.cpu, with_residual);
          DeviceArray<T> d_x(o.x), d_w(o.w), d_b(o.b), d_r(o.r), d_y(ref.size());
          ASSERT_STATUS_OK(d_y.status());
          ASSERT_CUDA_OK(d_y.Poison());
          const long long forced_before = gemm->stats().custom_forced;
          // A fresh row count per capture (rows - 1 when captured): the plan is chosen inside
          // the capture.
          const int run_rows = captured ? rows - 1 : rows;
          if (run_rows <= 0) continue;
          auto run = [&] {
            return gemm->Run<T>(d_x.get(), run_rows, g.in, d_w.get(), d_b.get(), g.out, epilogue,
                                d_y.get(), stream.get(), with_residual ? d_r.get() : nullptr);
          };
          if (captured) {
            ASSERT_CUDA_OK(cudaStreamBeginCapture(stream.get(), cudaStreamCaptureModeThreadLocal));
            const CudaStatus st = run();
            cudaGraph_t graph = nullptr;
            const cudaError_t ended = cudaStreamEndCapture(stream.get(), &graph);
            ASSERT_TRUE(st.ok()) << what << ": " << st.message();
            ASSERT_CUDA_OK(ended);
            cudaGraphExec_t raw = nullptr;
            const cudaError_t instantiated = cudaGraphInstantiate(&raw, graph, 0);
            cudaGraphDestroy(graph);
            ASSERT_CUDA_OK(instantiated);
            CudaGraphExec exec;
            exec.Adopt(raw);
            for (int replay = 0; replay < 2; ++replay) {
              ASSERT_CUDA_OK(cudaGraphLaunch(exec.get(), stream.get()));
            }
          } else {
            ASSERT_STATUS_OK(run());
          }
          ASSERT_CUDA_OK(cudaStreamSynchronize(stream.get()));
          std::vector<float> got = d_y.Download();
          got.resize(static_cast<size_t>(run_rows) * g.out);
          const std::vector<float> want(ref.begin(), ref.begin() + got.size());
          EXPECT_EQ(CountNonFinite(got), 0u) << what;
          EXPECT_LE(RelativeError(got, want), GemmTolerance(dtype, epilogue)) << what;
          const bool applies = sixteen_bit && run_rows <= Gemm::kCustomMaxRows;
          EXPECT_EQ(gemm->stats().custom_forced, forced_before + (applies ? 1 : 0)) << what;
          const std::string plan = gemm->DescribePlan<T>(run_rows, g.in, g.out, epilogue);
          EXPECT_EQ(plan.rfind("split_k_gemm", 0) == 0, applies) << what << ": " << plan;
        }
      }
    }
  }
}

TEST_P(GemmCustomTest, ForcedKernelMatchesCpuEagerAndCaptured) {
  DISPATCH_DTYPE(GetParam(), CheckForcedCustom, GetParam());
}

// A programmatic launch of our kernel right after a LayerNorm that produces its x: the
// LayerNorm lets dependents launch as soon as it starts (launch.cuh), so the GEMM's CTAs may
// be scheduled while x is being written; its WaitForPriorGrid must hold them until x is
// complete. Each round poisons x first; every round must equal the normal launch bit for bit.
// Skips where programmatic launches are not available.
template <typename T>
void CheckProgrammaticAfterProducer(TestDType dtype) {
  if (!ProgrammaticLaunchAvailable()) {
    GTEST_SKIP() << "no programmatic launches on this device (compute capability < 9.0)";
  }
  std::mt19937 rng = FreshRng();
  const int rows = 128, in = 768, out = 768;
  const std::vector<float> input = RandomVector(static_cast<size_t>(rows) * in, rng),
                           w = RandomVector(static_cast<size_t>(out) * in, rng,
                                            1.0f / std::sqrt(static_cast<float>(in))),
                           b = RandomVector(out, rng, 0.5f), gamma = RandomVector(in, rng),
                           beta = RandomVector(in, rng);
  DeviceArray<T> d_input(input), d_x(static_cast<size_t>(rows) * in), d_w(w), d_b(b),
      d_y(static_cast<size_t>(rows) * out);
  ASSERT_STATUS_OK(d_y.status());
  DeviceBuffer<float> d_gamma, d_beta, partials;
  DeviceBuffer<unsigned> counters;
  ASSERT_STATUS_OK(d_gamma.Allocate(in));
  ASSERT_STATUS_OK(d_beta.Allocate(in));
  ASSERT_CUDA_OK(cudaMemcpy(d_gamma.get(), gamma.data(), in * sizeof(float), cudaMemcpyDefault));
  ASSERT_CUDA_OK(cudaMemcpy(d_beta.get(), beta.data(), in * sizeof(float), cudaMemcpyDefault));
  const int splits = 4;
  ASSERT_STATUS_OK(partials.Allocate(SplitKGemmPartialFloats(rows, out, splits)));
  ASSERT_STATUS_OK(counters.Allocate(SplitKGemmTiles(rows, out)));
  ASSERT_CUDA_OK(cudaMemset(counters.get(), 0, counters.bytes()));
  ASSERT_CUDA_OK(cudaDeviceSynchronize());
  CudaStream stream;
  ASSERT_STATUS_OK(stream.Create());
  SplitKGemmArgs args;
  args.x = d_x.get();
  args.weight = d_w.get();
  args.bias = d_b.get();
  args.y = d_y.get();
  args.rows = rows;
  args.in_features = in;
  args.out_features = out;
  args.splits = splits;
  args.partials = partials.get();
  args.counters = counters.get();
  auto round = [&](bool programmatic) {
    args.programmatic = programmatic;
    const size_t x_bytes = static_cast<size_t>(rows) * in * sizeof(T);
    EXPECT_EQ(cudaMemsetAsync(d_x.get(), 0xFF, x_bytes, stream.get()), cudaSuccess);
    EXPECT_EQ(
        LaunchAddBiasResidualLayerNorm<T>(d_input.get(), nullptr, nullptr, d_gamma.get(),
                                          d_beta.get(), rows, in, 1e-12f, d_x.get(), stream.get()),
        cudaSuccess);
    EXPECT_EQ(LaunchSplitKGemm<T>(args, SplitKEpilogue::kBias, stream.get()), cudaSuccess);
    EXPECT_EQ(cudaStreamSynchronize(stream.get()), cudaSuccess);
    return d_y.Download();
  };
  const std::vector<float> want = round(false);
  ASSERT_EQ(CountNonFinite(want), 0u);
  for (int i = 0; i < 50; ++i) {
    const std::vector<float> got = round(true);
    ASSERT_EQ(got, want) << TestDTypeName(dtype) << " round " << i;
  }
}

TEST_P(GemmCustomTest, ProgrammaticLaunchWaitsForTheProducer) {
  switch (GetParam()) {
    case TestDType::kF32:
      GTEST_SKIP() << "our split-K kernel is fp16/bf16 only";
    case TestDType::kF16:
      CheckProgrammaticAfterProducer<__half>(GetParam());
      break;
    case TestDType::kBF16:
      CheckProgrammaticAfterProducer<__nv_bfloat16>(GetParam());
      break;
  }
}

INSTANTIATE_TEST_SUITE_P(DTypes, GemmCustomTest,
                         ::testing::Values(TestDType::kF32, TestDType::kF16, TestDType::kBF16),
                         [](const auto& info) { return std::string(TestDTypeName(info.param)); });

}  // namespace
}  // namespace cuda
}  // namespace bert

#else  // !BERT_WITH_CUDA

TEST(SplitKGemm, BuiltWithoutCuda) {
  GTEST_SKIP() << "built with --config=nocuda: the CUDA kernels are not compiled";
}

#endif  // BERT_WITH_CUDA
