#include "server/text/packer.h"

#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace bert {
namespace {

using ::testing::ElementsAre;

constexpr int32_t kCls = 101;
constexpr int32_t kSep = 102;
constexpr int32_t kPad = 0;

std::vector<int32_t> Range(int start, int n) {
  std::vector<int32_t> v(n);
  std::iota(v.begin(), v.end(), start);
  return v;
}

// Reference: literally take turns, a first, one token per turn, skipping a segment that has
// nothing left, until the budget is used or both are exhausted (TF Text's RoundRobinTrimmer).
// Then lay out TF Hub's [CLS] a [SEP] b [SEP] and cut to seq_length as pad_model_inputs does.
struct Expected {
  std::vector<int32_t> word_ids;
  std::vector<int32_t> type_ids;
  bool truncated;
};
Expected ReferencePack(const std::vector<int32_t>& a, const std::vector<int32_t>* b,
                       int seq_length) {
  const int num_segments = b != nullptr ? 2 : 1;
  const int budget = seq_length - 1 - num_segments;
  std::vector<int> lens = {static_cast<int>(a.size()), b ? static_cast<int>(b->size()) : 0};
  std::vector<int> used = {0, 0};
  int quota = 0;
  for (int turn = 0; quota < budget; ++turn) {
    const int s = turn % num_segments;
    bool any_left = false;
    for (int k = 0; k < num_segments; ++k) any_left |= used[k] < lens[k];
    if (!any_left) break;
    if (used[s] < lens[s]) {
      ++used[s];
      ++quota;
    }
  }
  Expected e;
  e.word_ids.push_back(kCls);
  e.word_ids.insert(e.word_ids.end(), a.begin(), a.begin() + used[0]);
  e.word_ids.push_back(kSep);
  e.type_ids.assign(e.word_ids.size(), 0);
  if (b != nullptr) {
    e.word_ids.insert(e.word_ids.end(), b->begin(), b->begin() + used[1]);
    e.word_ids.push_back(kSep);
    e.type_ids.resize(e.word_ids.size(), 1);
  }
  const int full = static_cast<int>(a.size()) + (b ? b->size() : 0) + 1 + num_segments;
  e.truncated = full > seq_length;
  if (static_cast<int>(e.word_ids.size()) > seq_length) {
    e.word_ids.resize(seq_length);
    e.type_ids.resize(seq_length);
  }
  return e;
}

TEST(PackerTest, SingleSegment) {
  const auto a = Range(1000, 5);
  auto packed = PackInputs(a, nullptr, 128, kCls, kSep, TruncationPolicy::kReject);
  ASSERT_TRUE(packed.ok());
  EXPECT_THAT(packed->word_ids, ElementsAre(kCls, 1000, 1001, 1002, 1003, 1004, kSep));
  EXPECT_THAT(packed->type_ids, ElementsAre(0, 0, 0, 0, 0, 0, 0));
  EXPECT_FALSE(packed->truncated);
}

TEST(PackerTest, PairTruncatedRoundRobin) {
  const auto a = Range(1000, 10);
  const auto b = Range(2000, 4);
  absl::Span<const int32_t> b_span(b);
  // Budget 5: a and b alternate, a first: a gets 3, b gets 2.
  auto packed = PackInputs(a, &b_span, 8, kCls, kSep, TruncationPolicy::kTruncate);
  ASSERT_TRUE(packed.ok());
  EXPECT_THAT(packed->word_ids, ElementsAre(kCls, 1000, 1001, 1002, kSep, 2000, 2001, kSep));
  EXPECT_THAT(packed->type_ids, ElementsAre(0, 0, 0, 0, 0, 1, 1, 1));
  EXPECT_TRUE(packed->truncated);
  // A short b leaves the rest of the budget to a.
  const auto short_b = Range(2000, 1);
  absl::Span<const int32_t> short_span(short_b);
  packed = PackInputs(a, &short_span, 8, kCls, kSep, TruncationPolicy::kTruncate);
  ASSERT_TRUE(packed.ok());
  EXPECT_THAT(packed->word_ids, ElementsAre(kCls, 1000, 1001, 1002, 1003, kSep, 2000, kSep));
}

TEST(PackerTest, RejectPolicy) {
  const auto a = Range(1000, 7);
  auto packed = PackInputs(a, nullptr, 8, kCls, kSep, TruncationPolicy::kReject);
  EXPECT_EQ(packed.status().code(), absl::StatusCode::kInvalidArgument);
  packed = PackInputs(a, nullptr, 9, kCls, kSep, TruncationPolicy::kReject);
  EXPECT_TRUE(packed.ok());
  const std::vector<int32_t> empty;
  absl::Span<const int32_t> empty_span(empty);
  // Pair at seq_length 2: b's [SEP] cannot fit.
  EXPECT_FALSE(PackInputs({}, &empty_span, 2, kCls, kSep, TruncationPolicy::kReject).ok());
  EXPECT_TRUE(PackInputs({}, &empty_span, 3, kCls, kSep, TruncationPolicy::kReject).ok());
}

TEST(PackerTest, TinySeqLength) {
  EXPECT_EQ(PackInputs({}, nullptr, 1, kCls, kSep, TruncationPolicy::kTruncate).status().code(),
            absl::StatusCode::kInvalidArgument);
  const auto a = Range(1000, 3);
  absl::Span<const int32_t> b_span(a);
  auto packed = PackInputs(a, &b_span, 2, kCls, kSep, TruncationPolicy::kTruncate);
  ASSERT_TRUE(packed.ok());
  EXPECT_THAT(packed->word_ids, ElementsAre(kCls, kSep));
  EXPECT_THAT(packed->type_ids, ElementsAre(0, 0));
  EXPECT_TRUE(packed->truncated);
  packed = PackInputs(a, &b_span, 3, kCls, kSep, TruncationPolicy::kTruncate);
  ASSERT_TRUE(packed.ok());
  EXPECT_THAT(packed->word_ids, ElementsAre(kCls, kSep, kSep));
  EXPECT_THAT(packed->type_ids, ElementsAre(0, 0, 1));
}

// Every seq_length 2..512 against the reference, for singles and for pairs of many shapes.
TEST(PackerTest, MatchesReferenceAtAllLengths) {
  const std::vector<int> lengths = {0,  1,   2,   3,   5,   8,   63,  64,
                                    65, 126, 127, 200, 255, 256, 511, 600};
  int checked = 0;
  for (int seq_length = 2; seq_length <= 512; ++seq_length) {
    for (int la : lengths) {
      const auto a = Range(1000, la);
      {
        auto packed = PackInputs(a, nullptr, seq_length, kCls, kSep, TruncationPolicy::kTruncate);
        ASSERT_TRUE(packed.ok());
        Expected e = ReferencePack(a, nullptr, seq_length);
        ASSERT_EQ(packed->word_ids, e.word_ids) << "single la=" << la << " L=" << seq_length;
        ASSERT_EQ(packed->type_ids, e.type_ids);
        ASSERT_EQ(packed->truncated, e.truncated);
        auto rejected = PackInputs(a, nullptr, seq_length, kCls, kSep, TruncationPolicy::kReject);
        ASSERT_EQ(rejected.ok(), !e.truncated);
        ++checked;
      }
      for (int lb : lengths) {
        const auto b = Range(5000, lb);
        absl::Span<const int32_t> b_span(b);
        auto packed = PackInputs(a, &b_span, seq_length, kCls, kSep, TruncationPolicy::kTruncate);
        ASSERT_TRUE(packed.ok());
        Expected e = ReferencePack(a, &b, seq_length);
        ASSERT_EQ(packed->word_ids, e.word_ids)
            << "pair la=" << la << " lb=" << lb << " L=" << seq_length;
        ASSERT_EQ(packed->type_ids, e.type_ids);
        ASSERT_EQ(packed->truncated, e.truncated);
        ASSERT_LE(packed->num_tokens(), seq_length);
        auto rejected = PackInputs(a, &b_span, seq_length, kCls, kSep, TruncationPolicy::kReject);
        ASSERT_EQ(rejected.ok(), !e.truncated);
        ++checked;
      }
    }
  }
  EXPECT_GT(checked, 100000);
}

// A vocabulary in which "hello", "world", "a" and "b" are whole words.
std::unique_ptr<BertTokenizer> TinyTokenizer() {
  auto tokenizer = BertTokenizer::FromTokens(
      {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello", "world", "a", "b"}, BertTokenizer::Options());
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status();
  return *std::move(tokenizer);
}

TEST(TokenizeAndPackTest, TokenizesAndPacksBothSegments) {
  const std::unique_ptr<BertTokenizer> tokenizer = TinyTokenizer();
  const absl::string_view b = "a b a";
  PackScratch scratch;
  for (int round = 0; round < 2; ++round) {  // the scratch buffers are reused, not appended
    absl::StatusOr<PackedInput> packed = TokenizeAndPack(
        *tokenizer, "hello world", &b, 6, TruncationPolicy::kTruncate, "ctx", &scratch);
    ASSERT_TRUE(packed.ok()) << packed.status();
    // Budget 3 for the pair, round robin a first: hello, a, world.
    EXPECT_THAT(packed->word_ids, ElementsAre(2, 4, 5, 3, 6, 3));
    EXPECT_THAT(packed->type_ids, ElementsAre(0, 0, 0, 0, 1, 1));
    EXPECT_TRUE(packed->truncated);
  }
  absl::StatusOr<PackedInput> single =
      TokenizeAndPack(*tokenizer, "world", nullptr, 8, TruncationPolicy::kTruncate, "");
  ASSERT_TRUE(single.ok());
  EXPECT_THAT(single->word_ids, ElementsAre(2, 5, 3));
}

TEST(TokenizeAndPackTest, ErrorsNameTheSegmentAfterTheContext) {
  const std::unique_ptr<BertTokenizer> tokenizer = TinyTokenizer();
  const absl::string_view bad_utf8 = "\xff";
  absl::Status status = TokenizeAndPack(*tokenizer, "hello", &bad_utf8, 8,
                                        TruncationPolicy::kTruncate, "inputs[2].text")
                            .status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), ::testing::StartsWith("inputs[2].text.text_b: "));
  status =
      TokenizeAndPack(*tokenizer, bad_utf8, nullptr, 8, TruncationPolicy::kTruncate, "").status();
  EXPECT_THAT(std::string(status.message()), ::testing::StartsWith("text_a: "));
  status = TokenizeAndPack(*tokenizer, "hello world a", nullptr, 3, TruncationPolicy::kReject,
                           "inputs[0].text")
               .status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), ::testing::StartsWith("inputs[0].text: "));
}

TEST(PackerTest, PadToLength) {
  const auto a = Range(1000, 2);
  const auto b = Range(2000, 1);
  absl::Span<const int32_t> b_span(b);
  auto packed = PackInputs(a, &b_span, 8, kCls, kSep, TruncationPolicy::kReject);
  ASSERT_TRUE(packed.ok());
  std::vector<int32_t> word_ids, mask, type_ids;
  PadToLength(*packed, 8, kPad, &word_ids, &mask, &type_ids);
  EXPECT_THAT(word_ids, ElementsAre(kCls, 1000, 1001, kSep, 2000, kSep, kPad, kPad));
  EXPECT_THAT(mask, ElementsAre(1, 1, 1, 1, 1, 1, 0, 0));
  EXPECT_THAT(type_ids, ElementsAre(0, 0, 0, 0, 1, 1, 0, 0));
}

}  // namespace
}  // namespace bert
