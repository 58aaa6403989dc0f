#include "client/entities.h"

#include <cmath>
#include <optional>
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

// Logits with the given softmax scores, one per label.
std::vector<float> Scores(std::vector<double> p) {
  std::vector<float> out;
  for (double x : p) out.push_back(static_cast<float>(std::log(x)));
  return out;
}

// "Johnson lives in Newark": john ##son | lives | in | new ##ark, the pieces disagreeing.
struct Words {
  std::vector<std::vector<float>> logits = {
      Scores({0.1, 0.6, 0.1, 0.05, 0.05, 0.1}),     // john: B-PER 0.6
      Scores({0.05, 0.05, 0.1, 0.7, 0.05, 0.05}),   // ##son: B-LOC 0.7
      Scores({0.9, 0.02, 0.02, 0.02, 0.02, 0.02}),  // lives: O
      Scores({0.8, 0.04, 0.04, 0.04, 0.04, 0.04}),  // in: O
      Scores({0.2, 0.05, 0.05, 0.5, 0.15, 0.05}),   // new: B-LOC 0.5
      Scores({0.44, 0.05, 0.05, 0.4, 0.01, 0.05}),  // ##ark: O 0.44
  };
  std::vector<TaggedToken> tokens;
  Words() {
    const uint32_t spans[][2] = {{0, 4}, {4, 7}, {8, 13}, {14, 16}, {17, 20}, {20, 23}};
    const bool continues[] = {false, true, false, false, false, true};
    for (size_t i = 0; i < logits.size(); ++i) {
      tokens.push_back({spans[i][0], spans[i][1], logits[i], continues[i]});
    }
  }
};

TEST(GroupEntitiesTest, WordStrategiesGiveEachWordOneLabel) {
  const Words words;
  // simple: each piece on its own; ##son's B-LOC begins an entity inside "Johnson".
  std::vector<Entity> e = GroupEntities(words.tokens, kLabels, Aggregation::kSimple);
  ASSERT_EQ(e.size(), 3u);
  EXPECT_EQ(e[0].group, "PER");
  EXPECT_EQ(e[1].group, "LOC");
  EXPECT_EQ(e[1].start, 4u);
  EXPECT_EQ(e[2].group, "LOC");
  EXPECT_EQ(e[2].end, 20u);
  // first: the word takes its first piece's label and score.
  e = GroupEntities(words.tokens, kLabels, Aggregation::kFirst);
  ASSERT_EQ(e.size(), 2u);
  EXPECT_EQ(e[0].group, "PER");
  EXPECT_NEAR(e[0].score, 0.6, 1e-6);
  EXPECT_EQ(e[0].start, 0u);
  EXPECT_EQ(e[0].end, 7u);
  EXPECT_EQ(e[1].group, "LOC");
  EXPECT_NEAR(e[1].score, 0.5, 1e-6);
  EXPECT_EQ(e[1].start, 17u);
  EXPECT_EQ(e[1].end, 23u);
  // max: the piece with the highest score decides: ##son's B-LOC (0.7), new's B-LOC (0.5).
  e = GroupEntities(words.tokens, kLabels, Aggregation::kMax);
  ASSERT_EQ(e.size(), 2u);
  EXPECT_EQ(e[0].group, "LOC");
  EXPECT_NEAR(e[0].score, 0.7, 1e-6);
  EXPECT_EQ(e[0].start, 0u);
  EXPECT_EQ(e[0].end, 7u);
  EXPECT_NEAR(e[1].score, 0.5, 1e-6);
  // average: Johnson's mean scores favour B-LOC (0.375 over 0.325), Newark's B-LOC (0.45 over
  // O's 0.32).
  e = GroupEntities(words.tokens, kLabels, Aggregation::kAverage);
  ASSERT_EQ(e.size(), 2u);
  EXPECT_EQ(e[0].group, "LOC");
  EXPECT_NEAR(e[0].score, 0.375, 1e-6);
  EXPECT_EQ(e[1].group, "LOC");
  EXPECT_NEAR(e[1].score, 0.45, 1e-6);
  EXPECT_EQ(e[1].start, 17u);
  EXPECT_EQ(e[1].end, 23u);
}

TEST(GroupEntitiesTest, WordsJoinEntitiesAsTokensDo) {
  // "New York": two words, B-LOC (0.6) then I-LOC (0.7): one entity, the words' mean score.
  const std::vector<std::vector<float>> logits = {Scores({0.1, 0.1, 0.1, 0.6, 0.05, 0.05}),
                                                  Scores({0.1, 0.1, 0.1, 0.5, 0.15, 0.05}),
                                                  Scores({0.05, 0.05, 0.05, 0.05, 0.7, 0.1})};
  const std::vector<TaggedToken> tokens = {
      {0, 2, logits[0], false}, {2, 3, logits[1], true}, {4, 8, logits[2], false}};
  const std::vector<Entity> e = GroupEntities(tokens, kLabels, Aggregation::kFirst);
  ASSERT_EQ(e.size(), 1u);
  EXPECT_EQ(e[0].group, "LOC");
  EXPECT_NEAR(e[0].score, 0.65, 1e-6);
  EXPECT_EQ(e[0].start, 0u);
  EXPECT_EQ(e[0].end, 8u);
  // A piece that continues nothing (the text's first) starts a word of its own.
  const std::vector<TaggedToken> leading = {{0, 2, logits[0], true}};
  EXPECT_EQ(GroupEntities(leading, kLabels, Aggregation::kMax).size(), 1u);
}

TEST(GroupEntitiesTest, MaxTakesTheFirstOfEquallyCertainPieces) {
  // Both pieces are certain (scores exactly 1), of PER and of LOC: the first piece decides, as
  // Python's max() does.
  std::vector<float> per(kLabels.size(), -1000.0f), loc(kLabels.size(), -1000.0f);
  per[1] = 0.0f;
  loc[3] = 0.0f;
  const std::vector<TaggedToken> tokens = {{0, 2, per, false}, {2, 4, loc, true}};
  std::vector<Entity> e = GroupEntities(tokens, kLabels, Aggregation::kMax);
  ASSERT_EQ(e.size(), 1u);
  EXPECT_EQ(e[0].group, "PER");
  const std::vector<TaggedToken> swapped = {{0, 2, loc, false}, {2, 4, per, true}};
  e = GroupEntities(swapped, kLabels, Aggregation::kMax);
  ASSERT_EQ(e.size(), 1u);
  EXPECT_EQ(e[0].group, "LOC");
}

TEST(ContinuesWordTest, ComparesLengthsInCodePoints) {
  EXPECT_TRUE(ContinuesWord("##ing", "ing", false));
  EXPECT_FALSE(ContinuesWord("berlin", "Berlin", false));
  EXPECT_FALSE(ContinuesWord("cafe", "caf\xc3\xa9", false));           // precomposed é: 4 and 4
  EXPECT_TRUE(ContinuesWord("cafe", "cafe\xcc\x81", false));           // e + U+0301: 4 against 5
  EXPECT_FALSE(ContinuesWord("\xe5\x8c\x97", "\xe5\x8c\x97", false));  // one CJK character
  EXPECT_FALSE(ContinuesWord("[UNK]", "\xf0\x9f\x98\x80", true));
  EXPECT_TRUE(ContinuesWord("[UNK]", "\xf0\x9f\x98\x80", false));
}

TEST(ParseAggregationTest, NamesThePipelinesStrategies) {
  EXPECT_EQ(ParseAggregation("simple"), Aggregation::kSimple);
  EXPECT_EQ(ParseAggregation("first"), Aggregation::kFirst);
  EXPECT_EQ(ParseAggregation("average"), Aggregation::kAverage);
  EXPECT_EQ(ParseAggregation("max"), Aggregation::kMax);
  EXPECT_EQ(ParseAggregation("none"), std::nullopt);
  EXPECT_EQ(ParseAggregation("FIRST"), std::nullopt);
}

}  // namespace
}  // namespace bert
