#include "server/core/classifier_scores.h"

#include <cmath>

#include "gtest/gtest.h"

namespace bert {
namespace {

TEST(ClassifierScoresTest, TheFunctionFollowsTheProblemTypeThenTheLabelCount) {
  EXPECT_EQ(ScoreFunctionFor("regression", 1), ScoreFunction::kNone);
  EXPECT_EQ(ScoreFunctionFor("regression", 3), ScoreFunction::kNone);
  EXPECT_EQ(ScoreFunctionFor("multi_label_classification", 3), ScoreFunction::kSigmoid);
  EXPECT_EQ(ScoreFunctionFor("single_label_classification", 3), ScoreFunction::kSoftmax);
  EXPECT_EQ(ScoreFunctionFor("", 1), ScoreFunction::kSigmoid);  // a cross-encoder reranker
  EXPECT_EQ(ScoreFunctionFor("", 2), ScoreFunction::kSoftmax);
  EXPECT_EQ(ScoreFunctionFor("something_new", 2), ScoreFunction::kSoftmax);
  EXPECT_EQ(ScoreFunctionFor("", 0), ScoreFunction::kNone);
  EXPECT_STREQ(ScoreFunctionName(ScoreFunction::kSoftmax), "softmax");
  // A CrossEncoder's named activation decides: the ms-marco models name the identity.
  EXPECT_EQ(ScoreFunctionFor("", 1, "torch.nn.modules.linear.Identity"), ScoreFunction::kNone);
  EXPECT_EQ(ScoreFunctionFor("", 1, "torch.nn.modules.activation.Sigmoid"),
            ScoreFunction::kSigmoid);
  EXPECT_EQ(ScoreFunctionFor("regression", 3, "torch.nn.modules.activation.Softmax"),
            ScoreFunction::kSoftmax);
  EXPECT_EQ(ScoreFunctionFor("", 1, "torch.nn.modules.activation.Tanh"), ScoreFunction::kNone);
}

TEST(ClassifierScoresTest, SigmoidAndStableSoftmax) {
  const std::vector<double> s = Scores(ScoreFunction::kSigmoid, {0.0f, 2.0f, -30.0f});
  ASSERT_EQ(s.size(), 3u);
  EXPECT_DOUBLE_EQ(s[0], 0.5);
  EXPECT_NEAR(s[1], 1 / (1 + std::exp(-2.0)), 1e-15);
  EXPECT_NEAR(s[2], 9.357622968840175e-14, 1e-20);
  // Logits far above exp's range still give finite probabilities that sum to 1.
  const std::vector<double> p = Scores(ScoreFunction::kSoftmax, {1000.0f, 1001.0f, 999.0f});
  ASSERT_EQ(p.size(), 3u);
  EXPECT_NEAR(p[0] + p[1] + p[2], 1.0, 1e-15);
  EXPECT_NEAR(p[1] / p[0], std::exp(1.0), 1e-12);
  EXPECT_NEAR(p[0] / p[2], std::exp(1.0), 1e-12);
  EXPECT_TRUE(Scores(ScoreFunction::kNone, {1.0f}).empty());
  EXPECT_TRUE(Scores(ScoreFunction::kSoftmax, {}).empty());
}

}  // namespace
}  // namespace bert
