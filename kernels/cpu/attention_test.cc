#include "kernels/cpu/attention.h"

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

}  // namespace
}  // namespace cpu
}  // namespace bert
