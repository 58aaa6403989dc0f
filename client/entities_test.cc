#include "client/entities.h"

#include <cmath>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace bert {
namespace {

const std::vector<std::string> kLabels = {"O", "B-PER", "I-PER", "B-LOC", "I-LOC", "MISC"};

// Logits that make `label` likeliest with softmax score `p` (the others share the rest).
std::vector<float> Logits(int label, double p) {
  const double rest = (1 - p) / (kLabels.size() - 1);
  std::vector<float> out(kLabels.size(), static_cast<float>(std::log(rest)));
  out[label] = static_cast<float>(std::log(p));
  return out;
}

TEST(GroupEntitiesTest, GroupsAsTheSimpleAggregation) {
  // "John Smith lives in New York , Berlin Paris"-like: B I | O O | B I | O | B | B | MISC MISC
  const std::vector<std::vector<float>> logits = {
      Logits(1, 0.9), Logits(2, 0.7),  // John Smith: one PER
      Logits(0, 0.8), Logits(0, 0.6),  // lives in
      Logits(3, 0.5), Logits(4, 0.9),  // New York: one LOC
      Logits(0, 0.9),                  // ,
      Logits(3, 0.6), Logits(3, 0.8),  // Berlin Paris: two LOCs (B after B starts a new one)
      Logits(2, 0.4),                  // an I- after another type: an entity of its own
      Logits(5, 0.5), Logits(5, 0.7),  // a plain label continues itself
  };
  std::vector<TaggedToken> tokens;
  for (size_t i = 0; i < logits.size(); ++i) {
    tokens.push_back({static_cast<uint32_t>(10 * i), static_cast<uint32_t>(10 * i + 5), logits[i]});
  }
  const std::vector<Entity> entities = GroupEntities(tokens, kLabels);
  ASSERT_EQ(entities.size(), 6u);
  const auto expect = [&](size_t k, const char* group, double score, uint32_t start, uint32_t end) {
    EXPECT_EQ(entities[k].group, group) << k;
    EXPECT_NEAR(entities[k].score, score, 1e-6) << k;
    EXPECT_EQ(entities[k].start, start) << k;
    EXPECT_EQ(entities[k].end, end) << k;
  };
  expect(0, "PER", 0.8, 0, 15);
  expect(1, "LOC", 0.7, 40, 55);
  expect(2, "LOC", 0.6, 70, 75);
  expect(3, "LOC", 0.8, 80, 85);
  expect(4, "PER", 0.4, 90, 95);
  expect(5, "MISC", 0.6, 100, 115);
}

TEST(GroupEntitiesTest, TiesTakeTheFirstLabelAndMismatchedTokensAreSkipped) {
  const std::vector<float> tie(kLabels.size(), 0.0f);  // all equal: "O", left out
  const std::vector<float> short_row = {1.0f, 2.0f};
  const std::vector<TaggedToken> tokens = {{0, 1, tie}, {1, 2, short_row}};
  EXPECT_TRUE(GroupEntities(tokens, kLabels).empty());
  EXPECT_TRUE(GroupEntities({}, kLabels).empty());
}

}  // namespace
}  // namespace bert
