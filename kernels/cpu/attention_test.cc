#include "kernels/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/test_util.h"

namespace bert {
namespace cpu {
namespace {

using testing::RandomVector;
using testing::RelativeError;

// Naive double-precision attention; padding rows (past num_valid) are queries only.
std::vector<double> Reference(const std::vector<float>& qkv, const std::vector<int32_t>& cu,
                              const std::vector<int32_t>& valid, int heads, int head_dim) {
  const int hidden = heads * head_dim;
  std::vector<double> out(cu.back() * hidden);
  for (size_t s = 0; s + 1 < cu.size(); ++s) {
    for (int h = 0; h < heads; ++h) {
      for (int q = cu[s]; q < cu[s + 1]; ++q) {
        std::vector<double> scores(valid[s]);
        double m = -1e300;
        for (int k = 0; k < valid[s]; ++k) {
          double dot = 0;
          for (int d = 0; d < head_dim; ++d) {
            dot += static_cast<double>(qkv[q * 3 * hidden + h * head_dim + d]) *
                   qkv[(cu[s] + k) * 3 * hidden + hidden + h * head_dim + d];
          }
          scores[k] = dot / std::sqrt(static_cast<double>(head_dim));
          m = std::max(m, scores[k]);
        }
        double sum = 0;
        for (double& p : scores) sum += (p = std::exp(p - m));
        for (int d = 0; d < head_dim; ++d) {
          double acc = 0;
          for (int k = 0; k < valid[s]; ++k) {
            acc += scores[k] / sum * qkv[(cu[s] + k) * 3 * hidden + 2 * hidden + h * head_dim + d];
          }
          out[q * hidden + h * head_dim + d] = acc;
        }
      }
    }
  }
  return out;
}

struct Case {
  int heads, head_dim;
  std::vector<int32_t> cu, valid;
};

class AttentionTest : public ::testing::TestWithParam<Case> {};

TEST_P(AttentionTest, MatchesDoubleReference) {
  const Case& c = GetParam();
  const int hidden = c.heads * c.head_dim;
  auto qkv = RandomVector(c.cu.back() * 3 * hidden, 42, 2.0f);
  std::vector<float> out(c.cu.back() * hidden);
  Attention(qkv.data(), c.cu.data(), c.valid.data(), static_cast<int>(c.valid.size()), c.heads,
            c.head_dim, out.data());
  EXPECT_LT(RelativeError(out, Reference(qkv, c.cu, c.valid, c.heads, c.head_dim)), 1e-6);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, AttentionTest,
    ::testing::Values(Case{1, 64, {0, 3}, {3}},                   // one short sequence
                      Case{2, 64, {0, 32, 35, 51}, {32, 1, 10}},  // padding rows, 1 key
                      Case{12, 32, {0, 7, 135}, {7, 100}},        // many heads, 128 rows
                      Case{4, 128, {0, 20}, {20}}));

TEST(AttentionTest, SubRangeTouchesOnlyItsRows) {
  const int heads = 2, head_dim = 16, hidden = heads * head_dim;
  std::vector<int32_t> cu = {0, 4, 9}, valid = {4, 3};
  auto qkv = RandomVector(9 * 3 * hidden, 7);
  std::vector<float> all(9 * hidden), part(9 * hidden, 5.0f);
  Attention(qkv.data(), cu.data(), valid.data(), 2, heads, head_dim, all.data());
  Attention(qkv.data(), cu.data() + 1, valid.data() + 1, 1, heads, head_dim, part.data());
  for (int i = 0; i < 4 * hidden; ++i) ASSERT_EQ(part[i], 5.0f);
  for (int i = 4 * hidden; i < 9 * hidden; ++i) ASSERT_EQ(part[i], all[i]);
}

// A range of heads writes exactly Attention's values in those heads' columns, nothing else.
TEST(AttentionTest, HeadRangeTouchesOnlyItsColumns) {
  const int heads = 5, head_dim = 8, hidden = heads * head_dim;
  std::vector<int32_t> cu = {0, 6, 13}, valid = {6, 4};
  auto qkv = RandomVector(13 * 3 * hidden, 9);
  std::vector<float> all(13 * hidden);
  Attention(qkv.data(), cu.data(), valid.data(), 2, heads, head_dim, all.data());
  for (auto [begin, end] : {std::pair{0, 1}, std::pair{1, 4}, std::pair{4, 5}, std::pair{0, 5}}) {
    std::vector<float> part(13 * hidden, 5.0f);
    AttentionHeads(qkv.data(), cu.data(), valid.data(), 2, heads, head_dim, begin, end,
                   part.data());
    for (int i = 0; i < 13 * hidden; ++i) {
      const int head = i % hidden / head_dim;
      ASSERT_EQ(part[i], head >= begin && head < end ? all[i] : 5.0f)
          << "heads [" << begin << ", " << end << "), element " << i;
    }
  }
}

// Softmax (the AVX2 version where the CPU has it) and the portable one against double
// precision from the same float differences (value - maximum, as the float code forms them):
// every element within 1e-6 relative (a few ulps of exp and of the float sum), for lengths
// around the vector width and scores far apart (e^-100 and below flush to 0 in the vector
// version, which no caller can tell from 1e-44 next to the maximum's 1).
class SoftmaxTest : public ::testing::TestWithParam<bool> {
 protected:
  void Run(float* p, int n) { GetParam() ? SoftmaxPortable(p, n) : Softmax(p, n); }
};

TEST_P(SoftmaxTest, MatchesDoubleReference) {
  for (const int n : {1, 2, 7, 8, 9, 31, 64, 128, 131, 512}) {
    for (const float scale : {0.1f, 3.0f, 40.0f}) {
      const auto row = RandomVector(n, 100 + n, scale);
      std::vector<float> got = row;
      Run(got.data(), n);
      float m = row[0];
      for (float v : row) m = std::max(m, v);
      std::vector<double> ref(n);
      double sum = 0;
      for (int j = 0; j < n; ++j) sum += ref[j] = std::exp(static_cast<double>(row[j] - m));
      double got_sum = 0;
      for (int j = 0; j < n; ++j) {
        ref[j] /= sum;
        ASSERT_NEAR(got[j], ref[j], 1e-6 * ref[j] + 1e-37)
            << "n " << n << " scale " << scale << " element " << j << " of score " << row[j];
        got_sum += got[j];
      }
      EXPECT_NEAR(got_sum, 1.0, 1e-6) << "n " << n << " scale " << scale;
    }
  }
  std::vector<float> far = {0.0f, -100.0f, -87.0f, -50.0f};
  Run(far.data(), 4);
  EXPECT_LT(far[1], 1e-43f);
  EXPECT_GT(far[2], 0.0f);  // e^-87 is still a normal float
  EXPECT_NEAR(far[3], std::exp(-50.0), 1e-6 * std::exp(-50.0));
}

// A NaN or +inf score makes the whole row NaN (as std::exp does): a broken model's rows are
// not passed off as probabilities.
TEST_P(SoftmaxTest, NanAndInfinityPoisonTheRow) {
  for (const float bad : {std::nanf(""), INFINITY}) {
    for (const int n : {3, 8, 13}) {
      for (const int at : {0, n / 2, n - 1}) {
        std::vector<float> row = RandomVector(n, 5, 2.0f);
        row[at] = bad;
        Run(row.data(), n);
        for (int j = 0; j < n; ++j) {
          ASSERT_TRUE(std::isnan(row[j])) << bad << " at " << at << " of " << n << ": " << j;
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Versions, SoftmaxTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "Portable" : "Best";
                         });

// A row's result depends only on its values: the same bits at any address (the engine's
// outputs must not depend on where a sequence lies in its batch).
TEST(SoftmaxAddressTest, BitsDoNotDependOnTheAddress) {
  const int n = 45;
  const auto row = RandomVector(n, 77, 5.0f);
  std::vector<float> first = row;
  Softmax(first.data(), n);
  for (int offset = 1; offset < 8; ++offset) {
    std::vector<float> buffer(n + offset, 0.0f);
    std::copy(row.begin(), row.end(), buffer.begin() + offset);
    Softmax(buffer.data() + offset, n);
    for (int j = 0; j < n; ++j) ASSERT_EQ(buffer[offset + j], first[j]) << offset << " " << j;
  }
}

}  // namespace
}  // namespace cpu
}  // namespace bert
