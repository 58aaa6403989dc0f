#include "kernels/cpu/embedding.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/test_util.h"

namespace bert {
namespace cpu {
namespace {

using testing::RandomVector;
using testing::RelativeError;

TEST(EmbeddingTest, SumsTablesByPositionWithinSequenceThenNormalises) {
  const int hidden = 32, vocab = 50, positions = 16, types = 2;
  auto words = RandomVector(vocab * hidden, 1);
  auto pos = RandomVector(positions * hidden, 2);
  auto type = RandomVector(types * hidden, 3);
  auto gamma = RandomVector(hidden, 4);
  auto beta = RandomVector(hidden, 5);
  // Three sequences of 5, 1 and 9 rows.
  std::vector<int32_t> cu = {0, 5, 6, 15};
  std::vector<int32_t> ids, type_ids;
  for (int r = 0; r < 15; ++r) {
    ids.push_back((r * 7 + 3) % vocab);
    type_ids.push_back(r % 3 == 0 ? 1 : 0);
  }
  std::vector<float> out(15 * hidden);
  EmbeddingLayerNorm(ids.data(), type_ids.data(), cu.data(), 3, words.data(), pos.data(),
                     type.data(), gamma.data(), beta.data(), hidden, 1e-12f, out.data());
  std::vector<double> ref(15 * hidden);
  for (int s = 0; s < 3; ++s) {
    for (int r = cu[s]; r < cu[s + 1]; ++r) {
      std::vector<double> v(hidden);
      double mean = 0, var = 0;
      for (int i = 0; i < hidden; ++i) {
        v[i] = static_cast<double>(words[ids[r] * hidden + i]) +
               pos[(r - cu[s]) * hidden + i] + type[type_ids[r] * hidden + i];
        mean += v[i];
      }
      mean /= hidden;
      for (int i = 0; i < hidden; ++i) var += (v[i] - mean) * (v[i] - mean);
      var /= hidden;
      for (int i = 0; i < hidden; ++i) {
        ref[r * hidden + i] = (v[i] - mean) / std::sqrt(var + 1e-12) * gamma[i] + beta[i];
      }
    }
  }
  EXPECT_LT(RelativeError(out, ref), 1e-6);

  // A sub-range of sequences (absolute row indices) writes only its own rows.
  std::vector<float> part(15 * hidden, -7.0f);
  EmbeddingLayerNorm(ids.data(), type_ids.data(), cu.data() + 2, 1, words.data(), pos.data(),
                     type.data(), gamma.data(), beta.data(), hidden, 1e-12f, part.data());
  for (int i = 0; i < 6 * hidden; ++i) ASSERT_EQ(part[i], -7.0f);
  for (int i = 6 * hidden; i < 15 * hidden; ++i) ASSERT_EQ(part[i], out[i]);
}

TEST(EmbeddingTest, NullTypeIdsMeansTypeZero) {
  const int hidden = 8;
  auto words = RandomVector(4 * hidden, 1);
  auto pos = RandomVector(4 * hidden, 2);
  auto type = RandomVector(2 * hidden, 3);
  std::vector<float> gamma(hidden, 1.0f), beta(hidden, 0.0f);
  std::vector<int32_t> cu = {0, 3}, ids = {1, 2, 3}, zeros = {0, 0, 0};
  std::vector<float> a(3 * hidden), b(3 * hidden);
  EmbeddingLayerNorm(ids.data(), nullptr, cu.data(), 1, words.data(), pos.data(), type.data(),
                     gamma.data(), beta.data(), hidden, 1e-12f, a.data());
  EmbeddingLayerNorm(ids.data(), zeros.data(), cu.data(), 1, words.data(), pos.data(),
                     type.data(), gamma.data(), beta.data(), hidden, 1e-12f, b.data());
  EXPECT_EQ(a, b);
}

}  // namespace
}  // namespace cpu
}  // namespace bert
