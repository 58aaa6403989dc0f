#include "kernels/cpu/gemm.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/activation.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/linear_amx.h"
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

// Every version of the packed kernel this CPU runs (AVX-512, AVX2, the portable loop).
constexpr LinearIsa kIsas[] = {LinearIsa::kPortable, LinearIsa::kAvx2, LinearIsa::kAvx512};
// And AMX's bfloat16 version, for what every version shares (its sums are not float32's).
constexpr LinearIsa kAllIsas[] = {LinearIsa::kPortable, LinearIsa::kAvx2, LinearIsa::kAvx512,
                                  LinearIsa::kAmxBf16};

TEST(PackedWeightsTest, PanelsHoldTheWeightsKByKWithZerosPastTheLastOutput) {
  const int out = 53, in = 5;
  const auto w = RandomVector(out * in, 41);
  for (const LinearIsa isa : kIsas) {
    if (!LinearIsaAvailable(isa)) continue;
    const PackedWeights packed = PackedWeights::Pack(w.data(), out, in, isa);
    ASSERT_FALSE(packed.empty());
    EXPECT_EQ(packed.isa(), isa);
    const int width = packed.panel_width();
    EXPECT_EQ(width, isa == LinearIsa::kAvx512 ? 48 : 16);
    EXPECT_EQ(packed.block_rows(), isa == LinearIsa::kAvx512 ? 8 : isa == LinearIsa::kAvx2 ? 6 : 1);
    EXPECT_EQ(packed.num_panels(), (out + width - 1) / width);
    for (int p = 0; p < packed.num_panels(); ++p) {
      EXPECT_EQ(reinterpret_cast<uintptr_t>(packed.panel(p)) % 64, 0u) << "panel " << p;
      for (int k = 0; k < in; ++k) {
        for (int j = 0; j < width; ++j) {
          const int o = p * width + j;
          EXPECT_EQ(packed.panel(p)[k * width + j], o < out ? w[o * in + k] : 0.0f)
              << LinearIsaName(isa) << " panel " << p << " k " << k << " j " << j;
        }
      }
    }
  }
}

TEST(PackedWeightsTest, EmptyForAnInstructionSetThisCpuDoesNotRun) {
  const auto w = RandomVector(8 * 4, 42);
  for (const LinearIsa isa : kIsas) {
    EXPECT_EQ(PackedWeights::Pack(w.data(), 8, 4, isa).empty(), !LinearIsaAvailable(isa))
        << LinearIsaName(isa);
  }
  float y = 42.0f;
  LinearPacked(w.data(), 1, PackedWeights(), nullptr, Epilogue::kNone, 0, 1, &y);
  EXPECT_EQ(y, 42.0f);
}

// Every epilogue; row counts around the blocks of 6 and 8 rows; input lengths around the
// vectors of 8 and 16; output counts around the panels of 16 and 48 and their vectors (the last
// panel partly past them: in its first, second or third vector); a range of panels (outputs
// outside it left alone).
TEST_P(LinearTest, PackedMatchesDoubleReferenceOnItsPanels) {
  const Epilogue e = GetParam();
  for (const LinearIsa isa : kIsas) {
    if (!LinearIsaAvailable(isa)) continue;
    for (auto [rows, in, out, panel_begin, panel_end] :
         {std::tuple{1, 8, 4, 0, 1}, std::tuple{2, 7, 5, 0, 1}, std::tuple{3, 37, 13, 0, 1},
          std::tuple{5, 64, 96, 0, 6}, std::tuple{6, 9, 17, 0, 2}, std::tuple{7, 24, 33, 1, 3},
          std::tuple{12, 31, 47, 0, 3}, std::tuple{13, 1, 64, 0, 4}, std::tuple{25, 100, 40, 1, 2},
          std::tuple{64, 384, 120, 0, 8}, std::tuple{8, 31, 49, 0, 4}, std::tuple{9, 17, 33, 0, 3},
          std::tuple{16, 50, 100, 1, 7}, std::tuple{17, 16, 31, 0, 2}}) {
      auto x = RandomVector(rows * in, 11);
      auto w = RandomVector(out * in, 12, 0.1f);
      auto b = RandomVector(out, 13);
      const PackedWeights packed = PackedWeights::Pack(w.data(), out, in, isa);
      const int width = packed.panel_width();
      const int begin = std::min(out, panel_begin * width);
      const int end = std::min(out, panel_end * width);
      std::vector<float> y(rows * out, -7.0f);
      LinearPacked(x.data(), rows, packed, e == Epilogue::kNone ? nullptr : b.data(), e,
                   panel_begin, panel_end, y.data());
      std::vector<double> ref;
      std::vector<float> got;
      for (int r = 0; r < rows; ++r) {
        for (int o = 0; o < out; ++o) {
          const float value = y[r * out + o];
          if (o < begin || o >= end) {
            EXPECT_EQ(value, -7.0f) << "row " << r << " output " << o << " is outside the range";
            continue;
          }
          ref.push_back(ReferenceLinear(e, x, w, b, in, r, o));
          got.push_back(value);
        }
      }
      // (A range past the last panel of a wide instruction set writes nothing.)
      ASSERT_EQ(got.empty(), begin >= end);
      if (got.empty()) continue;
      EXPECT_LT(RelativeError(got, ref), 1e-6)
          << rows << "x" << in << "x" << out << " " << LinearIsaName(isa);
      EXPECT_LT(MaxAbsError(got, ref), 1e-5)
          << rows << "x" << in << "x" << out << " " << LinearIsaName(isa);
    }
  }
}

// The engine splits a layer by rows and by panels, and promises that a sequence's outputs do
// not depend on its batch or on the threads: each output of the packed kernel has the same
// bits computed with all rows and panels, one panel at a time, or one row at a time.
TEST(LinearTest, PackedOutputsDoNotDependOnRowsOrPanels) {
  // 45 rows: blocks of 6, 8 and 32 (AMX: one of two tiles, one of one); the last panel's GELU:
  // 8 lanes, then 5 alone.
  const int rows = 45, in = 45, out = 77;
  const auto x = RandomVector(rows * in, 21);
  const auto w = RandomVector(out * in, 22, 0.1f);
  const auto b = RandomVector(out, 23);
  for (const LinearIsa isa : kAllIsas) {
    if (!LinearIsaAvailable(isa)) continue;
    const PackedWeights packed = PackedWeights::Pack(w.data(), out, in, isa);
    const int panels = packed.num_panels();
    const auto linear = [&](const float* xr, int n, int p0, int p1, float* y) {
      LinearPacked(xr, n, packed, b.data(), Epilogue::kBiasGeluErf, p0, p1, y);
    };
    std::vector<float> whole(rows * out);
    linear(x.data(), rows, 0, panels, whole.data());
    std::vector<float> by_panel(rows * out, 0.0f), by_row(rows * out, 0.0f);
    for (int p = 0; p < panels; ++p) linear(x.data(), rows, p, p + 1, by_panel.data());
    for (int r = 0; r < rows; ++r) linear(x.data() + r * in, 1, 0, panels, by_row.data() + r * out);
    EXPECT_EQ(by_panel, whole) << LinearIsaName(isa);
    EXPECT_EQ(by_row, whole) << LinearIsaName(isa);
  }
}

// The kernel adds the bias to each finished sum as it stores it: the same bits as the bare
// sums with the epilogue applied afterwards, for every epilogue and every panel edge.
TEST_P(LinearTest, PackedBiasInTheStoreEqualsTheEpilogueAfterwards) {
  const Epilogue e = GetParam();
  const int rows = 19, in = 23, out = 83;  // 83 = 48 + 35 (AVX-512), 5 * 16 + 3 (AVX2)
  const auto x = RandomVector(rows * in, 61);
  const auto w = RandomVector(out * in, 62, 0.1f);
  const auto b = RandomVector(out, 63);
  for (const LinearIsa isa : kAllIsas) {
    if (!LinearIsaAvailable(isa)) continue;
    const PackedWeights packed = PackedWeights::Pack(w.data(), out, in, isa);
    std::vector<float> fused(rows * out), after(rows * out);
    LinearPacked(x.data(), rows, packed, b.data(), e, 0, packed.num_panels(), fused.data());
    LinearPacked(x.data(), rows, packed, nullptr, Epilogue::kNone, 0, packed.num_panels(),
                 after.data());
    ApplyEpilogue(after.data(), rows, out, b.data(), e);
    EXPECT_EQ(fused, after) << LinearIsaName(isa);
  }
}

// AVX-512 and AVX2 sum each output as one chain of fused multiply-adds in the order of k: the
// same bits, whatever their panel widths and blocks.
TEST(LinearTest, PackedAvx512AndAvx2GiveTheSameBits) {
  if (!LinearIsaAvailable(LinearIsa::kAvx512)) GTEST_SKIP() << "needs AVX-512 (and so AVX2)";
  const int rows = 27, in = 61, out = 77;
  const auto x = RandomVector(rows * in, 51);
  const auto w = RandomVector(out * in, 52, 0.1f);
  const auto b = RandomVector(out, 53);
  std::vector<float> wide(rows * out), narrow(rows * out);
  const PackedWeights avx512 = PackedWeights::Pack(w.data(), out, in, LinearIsa::kAvx512);
  const PackedWeights avx2 = PackedWeights::Pack(w.data(), out, in, LinearIsa::kAvx2);
  LinearPacked(x.data(), rows, avx512, b.data(), Epilogue::kBiasGeluErf, 0, avx512.num_panels(),
               wide.data());
  LinearPacked(x.data(), rows, avx2, b.data(), Epilogue::kBiasGeluErf, 0, avx2.num_panels(),
               narrow.data());
  EXPECT_EQ(wide, narrow);
}

// Output (r, o) of Linear on x and w rounded to bfloat16 (what the AMX kernel multiplies), in
// double precision.
double ReferenceLinearBf16(Epilogue e, const std::vector<float>& x, const std::vector<float>& w,
                           const std::vector<float>& b, int in, int r, int o) {
  double acc = e == Epilogue::kNone ? 0.0 : b[o];
  for (int i = 0; i < in; ++i) {
    acc += static_cast<double>(packed::FromBfloat16(packed::ToBfloat16(x[r * in + i]))) *
           packed::FromBfloat16(packed::ToBfloat16(w[o * in + i]));
  }
  return Reference(e, acc);
}

// The AMX tests skip where HasAmxBf16() is false: where /proc/cpuinfo lists the features, it
// must not be (else they would all skip, and pass, on the machines they are for).
TEST(AmxBf16Test, AvailableWhereTheCpuListsItsFeatures) {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpuinfo, line) && line.rfind("flags", 0) != 0) {
  }
  std::istringstream words(line);
  const std::set<std::string> flags{std::istream_iterator<std::string>(words), {}};
  const bool listed =
      flags.count("amx_bf16") && flags.count("amx_tile") && flags.count("avx512_bf16");
  std::printf("AMX-BF16 %s; HasAmxBf16: %s\n", listed ? "listed" : "not listed",
              HasAmxBf16() ? "yes" : AmxBf16Unavailable().c_str());
  if (listed) {
    EXPECT_TRUE(HasAmxBf16()) << AmxBf16Unavailable();
  }
  EXPECT_EQ(HasAmxBf16(), AmxBf16Unavailable().empty());
  EXPECT_EQ(LinearIsaAvailable(LinearIsa::kAmxBf16), HasAmxBf16());
}

TEST(Bfloat16Test, RoundsToNearestEvenKeepsNansAndFlushesDenormals) {
  const auto bits = [](float f) { return packed::ToBfloat16(f); };
  EXPECT_EQ(bits(1.0f), 0x3f80);
  EXPECT_EQ(bits(-2.0f), 0xc000);
  EXPECT_EQ(bits(1.0f + 0x1p-8f), 0x3f80);             // a tie, to the even 0x3f80
  EXPECT_EQ(bits(1.0f + 3 * 0x1p-8f), 0x3f82);         // a tie, to the even 0x3f82
  EXPECT_EQ(bits(1.0f + 0x1p-8f + 0x1p-20f), 0x3f81);  // past the tie: up
  EXPECT_EQ(bits(3.0e38f), 0x7f62);
  EXPECT_EQ(bits(3.4e38f), 0x7f80);  // rounds up to infinity, as the instruction does
  EXPECT_EQ(bits(std::nanf("")) & 0x7fc0, 0x7fc0);
  EXPECT_EQ(bits(1e-40f), 0x0000);  // a denormal: zero of its sign
  EXPECT_EQ(bits(-1e-40f), 0x8000);
  EXPECT_EQ(packed::FromBfloat16(0x3f82), 1.015625f);
}

TEST(AmxBf16Test, PanelsHoldBfloat16TilesWithZerosPastTheEdges) {
  if (!LinearIsaAvailable(LinearIsa::kAmxBf16)) GTEST_SKIP() << AmxBf16Unavailable();
  const int out = 45, in = 37;  // two panels, the second 13 wide; depth 64
  const auto w = RandomVector(out * in, 71);
  const PackedWeights packed = PackedWeights::Pack(w.data(), out, in, LinearIsa::kAmxBf16);
  ASSERT_FALSE(packed.empty());
  EXPECT_EQ(packed.panel_width(), 32);
  EXPECT_EQ(packed.block_rows(), 32);
  ASSERT_EQ(packed.num_panels(), 2);
  const uint16_t* data = packed.bfloat16_panels();
  EXPECT_EQ(reinterpret_cast<uintptr_t>(data) % 64, 0u);
  const int depth = 64;
  for (int p = 0; p < 2; ++p) {
    for (int step = 0; step < depth / 32; ++step) {
      for (int t = 0; t < 2; ++t) {
        for (int i = 0; i < 16; ++i) {
          for (int j = 0; j < 16; ++j) {
            for (int e = 0; e < 2; ++e) {
              const int o = p * 32 + t * 16 + j, k = step * 32 + 2 * i + e;
              const uint16_t want = o < out && k < in ? packed::ToBfloat16(w[o * in + k]) : 0;
              ASSERT_EQ(data[p * 32 * depth + (((step * 2 + t) * 16 + i) * 16 + j) * 2 + e], want)
                  << "panel " << p << " o " << o << " k " << k;
            }
          }
        }
      }
    }
  }
}

// Each output: the products of the bfloat16-rounded inputs and weights summed in float32,
// against the same products summed in double; rows around the tiles of 16 and blocks of 32,
// inputs around the steps of 32, outputs around the panels of 32 and their two tiles; a range
// of panels (outputs outside it left alone). Against the float32 inputs, the error is
// bfloat16's (~1e-2 relative at most), which the engine's tests bound.
TEST_P(LinearTest, AmxBf16MatchesTheBfloat16ProductsOnItsPanels) {
  if (!LinearIsaAvailable(LinearIsa::kAmxBf16)) GTEST_SKIP() << AmxBf16Unavailable();
  const Epilogue e = GetParam();
  for (auto [rows, in, out, panel_begin, panel_end] :
       {std::tuple{1, 8, 4, 0, 1}, std::tuple{2, 33, 17, 0, 1}, std::tuple{15, 32, 31, 0, 1},
        std::tuple{16, 64, 32, 0, 1}, std::tuple{17, 65, 33, 0, 2}, std::tuple{31, 100, 64, 1, 2},
        std::tuple{32, 31, 65, 0, 3}, std::tuple{33, 768, 96, 1, 3}, std::tuple{48, 384, 120, 0, 4},
        std::tuple{100, 47, 50, 0, 2}, std::tuple{128, 768, 40, 0, 2}}) {
    auto x = RandomVector(rows * in, 11);
    auto w = RandomVector(out * in, 12, 0.1f);
    auto b = RandomVector(out, 13);
    const PackedWeights packed = PackedWeights::Pack(w.data(), out, in, LinearIsa::kAmxBf16);
    const int begin = std::min(out, panel_begin * 32);
    const int end = std::min(out, panel_end * 32);
    std::vector<float> y(rows * out, -7.0f);
    LinearPacked(x.data(), rows, packed, e == Epilogue::kNone ? nullptr : b.data(), e, panel_begin,
                 panel_end, y.data());
    std::vector<double> ref, ref32;
    std::vector<float> got;
    for (int r = 0; r < rows; ++r) {
      for (int o = 0; o < out; ++o) {
        const float value = y[r * out + o];
        if (o < begin || o >= end) {
          EXPECT_EQ(value, -7.0f) << "row " << r << " output " << o << " is outside the range";
          continue;
        }
        ref.push_back(ReferenceLinearBf16(e, x, w, b, in, r, o));
        ref32.push_back(ReferenceLinear(e, x, w, b, in, r, o));
        got.push_back(value);
      }
    }
    ASSERT_FALSE(got.empty());
    EXPECT_LT(RelativeError(got, ref), 2e-6) << rows << "x" << in << "x" << out;
    EXPECT_LT(MaxAbsError(got, ref), 2e-5) << rows << "x" << in << "x" << out;
    EXPECT_LT(RelativeError(got, ref32), 1e-2) << rows << "x" << in << "x" << out;
  }
}

// The kernel's conversion of the inputs (16 at a time, the last ones masked) rounds as
// ToBfloat16: with identity weights each output is its input in bfloat16.
TEST(AmxBf16Test, InputsRoundAsToBfloat16) {
  if (!LinearIsaAvailable(LinearIsa::kAmxBf16)) GTEST_SKIP() << AmxBf16Unavailable();
  const int rows = 3, n = 40;
  std::vector<float> x = RandomVector(rows * n, 81);
  x[0] = 1.0f + 0x1p-8f;  // ties, in the vector part and in the tail
  x[1] = 1.0f + 3 * 0x1p-8f;
  x[n - 1] = -1.0f - 3 * 0x1p-8f;
  x[n + 5] = 1e-40f;
  std::vector<float> identity(n * n, 0.0f);
  for (int i = 0; i < n; ++i) identity[i * n + i] = 1.0f;
  const PackedWeights packed = PackedWeights::Pack(identity.data(), n, n, LinearIsa::kAmxBf16);
  std::vector<float> y(rows * n);
  LinearPacked(x.data(), rows, packed, nullptr, Epilogue::kNone, 0, packed.num_panels(), y.data());
  for (int i = 0; i < rows * n; ++i) {
    EXPECT_EQ(y[i], packed::FromBfloat16(packed::ToBfloat16(x[i]))) << i;
  }
}

// AmxInputs lays each 16 rows' step of 32 k out as one tile (16 × 32 values, one after the
// other), the tiles of a step after the other, zeros past `in` and in the last tile's rows
// past `rows`.
TEST(AmxBf16Test, InputsAreWholeTilesWithZerosPastTheEdges) {
  if (!LinearIsaAvailable(LinearIsa::kAmxBf16)) GTEST_SKIP() << AmxBf16Unavailable();
  const int rows = 35;
  // The last step of k: 6 values (the first half masked, the second empty), 26 (the second
  // masked), 8 (the only step, under 16 values).
  for (const int in : {70, 90, 8}) {
    const int depth = packed::AmxDepth(in), steps = depth / 32;
    const auto x = RandomVector(rows * in, 91);
    std::vector<uint16_t> a(packed::AmxInputSize(rows, in), 0xffff);
    ASSERT_EQ(a.size(), static_cast<size_t>(48 * depth));
    packed::AmxInputs(x.data(), rows, in, a.data());
    for (int tile = 0; tile < 3; ++tile) {
      for (int step = 0; step < steps; ++step) {
        for (int i = 0; i < 16; ++i) {
          for (int e = 0; e < 32; ++e) {
            const int r = tile * 16 + i, k = step * 32 + e;
            const uint16_t want = r < rows && k < in ? packed::ToBfloat16(x[r * in + k]) : 0;
            ASSERT_EQ(a[((tile * steps + step) * 16 + i) * 32 + e], want)
                << "in " << in << ", row " << r << ", k " << k;
          }
        }
      }
    }
  }
}

// A layer run in parts (the engine's threads): the inputs rounded by parts of rows, then parts
// of rows and groups of panels multiplied on the shared rounded rows, give LinearPacked's bits.
TEST(AmxBf16Test, PartsOnInputsRoundedOnceGiveLinearPackedsBits) {
  if (!LinearIsaAvailable(LinearIsa::kAmxBf16)) GTEST_SKIP() << AmxBf16Unavailable();
  const int rows = 75, in = 100, out = 97;  // 75 = 4 tiles + 11 rows, 100 = 3 steps + 4
  const auto x = RandomVector(rows * in, 93);
  const auto w = RandomVector(out * in, 94, 0.1f);
  const auto b = RandomVector(out, 95);
  const PackedWeights packed = PackedWeights::Pack(w.data(), out, in, LinearIsa::kAmxBf16);
  const int panels = packed.num_panels();
  std::vector<float> whole(rows * out);
  LinearPacked(x.data(), rows, packed, b.data(), Epilogue::kBiasGeluErf, 0, panels, whole.data());
  Bfloat16Inputs a;
  ASSERT_TRUE(a.Reserve(rows / 2, in));
  const uint16_t* small = a.data();
  ASSERT_TRUE(a.Reserve(rows, in));  // grows
  EXPECT_EQ(a.capacity_bytes(), Bfloat16Inputs::Size(rows, in) * 2);
  EXPECT_NE(a.data(), small);
  const uint16_t* large = a.data();
  ASSERT_TRUE(a.Reserve(rows - 10, in));  // kept
  EXPECT_EQ(a.data(), large);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a.data()) % 64, 0u);
  std::fill(a.data(), a.data() + Bfloat16Inputs::Size(rows, in), uint16_t{0x7fc0});  // NaNs
  for (int r0 : {48, 16, 64, 0}) {  // whole tiles, in any order; the last one ends at `rows`
    RoundInputsToBfloat16(x.data(), rows, in, r0, r0 == 64 ? rows : r0 + 16, a.data());
  }
  RoundInputsToBfloat16(x.data(), rows, in, 32, 48, a.data());
  std::vector<float> parts(rows * out, -7.0f);
  for (auto [r0, r1] :
       {std::pair{0, 16}, std::pair{16, 48}, std::pair{48, 64}, std::pair{64, rows}}) {
    for (auto [p0, p1] : {std::pair{0, 1}, std::pair{1, 3}, std::pair{3, panels}}) {
      LinearPackedOnBfloat16(a.data(), rows, r0, r1, packed, b.data(), Epilogue::kBiasGeluErf, p0,
                             p1, parts.data());
    }
  }
  EXPECT_EQ(parts, whole);
  // A float32 version's weights: nothing written.
  const PackedWeights fp32 = PackedWeights::Pack(w.data(), out, in);
  std::vector<float> untouched(rows * out, -7.0f);
  LinearPackedOnBfloat16(a.data(), rows, 0, rows, fp32, b.data(), Epilogue::kBias, 0,
                         fp32.num_panels(), untouched.data());
  EXPECT_EQ(untouched, std::vector<float>(rows * out, -7.0f));
}

// Pack chooses the best version this CPU supports (the tests above skip the others, so this
// one also says which ran).
TEST(LinearTest, PackedRunsTheBestVersionThisCpuRuns) {
  LinearIsa best = LinearIsa::kPortable;
  if (LinearIsaAvailable(LinearIsa::kAvx512)) {
    best = LinearIsa::kAvx512;
  } else if (LinearIsaAvailable(LinearIsa::kAvx2)) {
    best = LinearIsa::kAvx2;
  }
  std::printf("packed kernel versions run here: portable%s%s\n",
              LinearIsaAvailable(LinearIsa::kAvx2) ? ", AVX2" : "",
              LinearIsaAvailable(LinearIsa::kAvx512) ? ", AVX-512" : "");
  EXPECT_EQ(BestLinearIsa(), best);
  EXPECT_STREQ(LinearIsaName(best), best == LinearIsa::kAvx512 ? "AVX-512"
                                    : best == LinearIsa::kAvx2 ? "AVX2"
                                                               : "portable");
  const auto w = RandomVector(20 * 53, 32, 0.1f);
  EXPECT_EQ(PackedWeights::Pack(w.data(), 20, 53).isa(), best);
}

TEST(LinearTest, ZeroRowsIsANoOp) {
  float y = 42.0f;
  Linear(nullptr, 0, 4, nullptr, nullptr, 4, Epilogue::kNone, &y);
  EXPECT_EQ(y, 42.0f);
  const auto w = RandomVector(4 * 4, 43);
  LinearPacked(nullptr, 0, PackedWeights::Pack(w.data(), 4, 4), nullptr, Epilogue::kNone, 0, 1, &y);
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

// The vector rows' operations, one lane in scalar code: std::fma where they fuse, the same
// order elsewhere, so exactly the bits of a vector lane (AVX2 or AVX-512).
float GeluLane(float x) {
  const float c = std::min(std::max(x * 0.70710678118654752f, -3.925f), 3.925f);
  const float t = c * c;
  float p = kErfNumerator[0], q = kErfDenominator[0];
  for (int j = 1; j < 6; ++j) {
    p = std::fma(p, t, kErfNumerator[j]);
    q = std::fma(q, t, kErfDenominator[j]);
  }
  const float erf = (c * p) / q;
  return (0.5f * x) * (1.0f + erf);
}

// Where the CPU has AVX2, every value up to the row's last multiple of 8 takes the vector
// formula (16 lanes with AVX-512, 8 with AVX2): the same bits either way, lane by lane.
TEST(GeluEpilogueTest, VectorValuesHaveTheBitsOfOneLane) {
  if (!LinearIsaAvailable(LinearIsa::kAvx2)) GTEST_SKIP() << "the scalar row only";
  for (int features : {8, 15, 16, 17, 24, 40, 61, 1536}) {
    auto y = RandomVector(2 * features, 31, 4.0f);
    auto b = RandomVector(features, 32);
    std::vector<float> want(y.size());
    for (int r = 0; r < 2; ++r) {
      for (int i = 0; i < features; ++i)
        want[r * features + i] = GeluLane(y[r * features + i] + b[i]);
    }
    ApplyEpilogue(y.data(), 2, features, b.data(), Epilogue::kBiasGeluErf);
    for (int r = 0; r < 2; ++r) {
      for (int i = 0; i < features / 8 * 8; ++i) {
        ASSERT_EQ(y[r * features + i], want[r * features + i])
            << "features " << features << " row " << r << " value " << i;
      }
    }
  }
}

// Row lengths around the 8-wide vector path and its scalar tail.
TEST(GeluEpilogueTest, VectorAndScalarPathsMatchExactGelu) {
  for (int features : {1, 7, 8, 9, 15, 16, 17, 31, 61}) {
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
