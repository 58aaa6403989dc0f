#include "server/core/rerank.h"

#include <cmath>
#include <limits>
#include <vector>

#include "gtest/gtest.h"

namespace bert {
namespace {

TEST(RerankTest, TheScoreIsTheNamedActivationElseASigmoid) {
  EXPECT_EQ(RerankScoreFunction("", false), ScoreFunction::kSigmoid);
  EXPECT_EQ(RerankScoreFunction("torch.nn.modules.linear.Identity", false), ScoreFunction::kNone);
  EXPECT_EQ(RerankScoreFunction("torch.nn.modules.activation.Sigmoid", false),
            ScoreFunction::kSigmoid);
  EXPECT_EQ(RerankScoreFunction("torch.nn.modules.activation.Sigmoid", true), ScoreFunction::kNone);
  EXPECT_EQ(RerankScoreFunction("", true), ScoreFunction::kNone);

  EXPECT_FLOAT_EQ(RerankScore(ScoreFunction::kNone, -3.25f), -3.25f);
  EXPECT_FLOAT_EQ(RerankScore(ScoreFunction::kSigmoid, 0.0f), 0.5f);
  EXPECT_FLOAT_EQ(RerankScore(ScoreFunction::kSigmoid, 2.0f),
                  static_cast<float>(1 / (1 + std::exp(-2.0))));
  EXPECT_FLOAT_EQ(RerankScore(ScoreFunction::kSoftmax, -7.0f), 1.0f);
}

TEST(RerankTest, BestFirstTiesInTextOrderNanLast) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> scores = {0.1f, 0.9f, nan, 0.5f, 0.9f, -1.0f};
  EXPECT_EQ(RankByScore(scores, 0), (std::vector<int>{1, 4, 3, 0, 5, 2}));
  EXPECT_EQ(RankByScore(scores, 2), (std::vector<int>{1, 4}));
  EXPECT_EQ(RankByScore(scores, 6), (std::vector<int>{1, 4, 3, 0, 5, 2}));
  EXPECT_EQ(RankByScore(scores, 100), (std::vector<int>{1, 4, 3, 0, 5, 2}));
  EXPECT_TRUE(RankByScore({}, 3).empty());
  EXPECT_EQ(RankByScore(std::vector<float>{nan, nan, 2.0f}, 0), (std::vector<int>{2, 0, 1}));
}

}  // namespace
}  // namespace bert
