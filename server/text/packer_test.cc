#include "server/text/packer.h"

#include <cstdlib>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/text/random_text.h"

namespace bert {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

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

// Reference for kLongestFirst: drop the last token of the longer segment one at a time until
// the pair fits the budget; on a tie, of the segment that was not the longer at the start (a
// when they started equal). What Hugging Face tokenizers' longest_first truncation leaves
// (tests/python/test_tokenizer_diff.py checks the server against it).
TEST(PackerTest, LongestFirstDropsFromTheLongerSegmentFirst) {
  int checked = 0, differs_from_round_robin = 0;
  for (int seq_length = 2; seq_length <= 40; ++seq_length) {
    for (int la = 0; la <= 45; ++la) {
      for (int lb = 0; lb <= 45; ++lb) {
        const int budget = seq_length - 3;
        int keep_a = la, keep_b = lb;
        while (keep_a + keep_b > std::max(budget, 0)) {
          if (keep_a > keep_b || (keep_a == keep_b && la <= lb)) {
            --keep_a;
          } else {
            --keep_b;
          }
        }
        const auto a = Range(1000, la);
        const auto b = Range(5000, lb);
        absl::Span<const int32_t> b_span(b);
        auto packed =
            PackInputs(a, &b_span, seq_length, kCls, kSep, TruncationPolicy::kLongestFirst);
        ASSERT_TRUE(packed.ok());
        std::vector<int32_t> want = {kCls};
        want.insert(want.end(), a.begin(), a.begin() + keep_a);
        want.push_back(kSep);
        if (seq_length >= 3) {
          want.insert(want.end(), b.begin(), b.begin() + keep_b);
          want.push_back(kSep);
        }
        ASSERT_EQ(packed->word_ids, want) << "la=" << la << " lb=" << lb << " L=" << seq_length;
        ASSERT_EQ(packed->truncated, la + lb + 3 > seq_length);
        auto round_robin =
            PackInputs(a, &b_span, seq_length, kCls, kSep, TruncationPolicy::kTruncate);
        differs_from_round_robin += round_robin->word_ids != packed->word_ids;
        ++checked;
      }
    }
    // Singles: as kTruncate.
    const auto a = Range(1000, 50);
    EXPECT_EQ(
        PackInputs(a, nullptr, seq_length, kCls, kSep, TruncationPolicy::kLongestFirst)->word_ids,
        PackInputs(a, nullptr, seq_length, kCls, kSep, TruncationPolicy::kTruncate)->word_ids);
  }
  EXPECT_GT(checked, 80000);
  // The two rules differ only for odd budgets: where both segments are cut (who keeps the odd
  // token), and where the shorter segment is one token over half the budget.
  EXPECT_GT(differs_from_round_robin, 1000);
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

TEST(TokenizeAndPackTest, SpansFollowTheTokensKept) {
  const std::unique_ptr<BertTokenizer> tokenizer = TinyTokenizer();
  const absl::string_view b = "a  b a";
  PackScratch scratch;
  for (TruncationPolicy policy : {TruncationPolicy::kTruncate, TruncationPolicy::kLongestFirst}) {
    absl::StatusOr<PackedInput> packed =
        TokenizeAndPack(*tokenizer, "hello world", &b, 6, policy, "", &scratch, true);
    ASSERT_TRUE(packed.ok()) << packed.status();
    ASSERT_EQ(packed->spans.size(), packed->word_ids.size());
    if (policy == TruncationPolicy::kTruncate) {
      // [CLS] hello world [SEP] a [SEP]: each in its own text.
      EXPECT_THAT(packed->spans, ElementsAre(TokenSpan{0, 0}, TokenSpan{0, 5}, TokenSpan{6, 11},
                                             TokenSpan{0, 0}, TokenSpan{0, 1}, TokenSpan{0, 0}));
    } else {
      // [CLS] hello [SEP] a b [SEP]: b's second token starts after the two spaces.
      EXPECT_THAT(packed->spans, ElementsAre(TokenSpan{0, 0}, TokenSpan{0, 5}, TokenSpan{0, 0},
                                             TokenSpan{0, 1}, TokenSpan{3, 4}, TokenSpan{0, 0}));
    }
  }
  absl::StatusOr<PackedInput> single =
      TokenizeAndPack(*tokenizer, " world", nullptr, 8, TruncationPolicy::kTruncate, "", nullptr,
                      /*with_spans=*/true);
  ASSERT_TRUE(single.ok());
  EXPECT_THAT(single->spans, ElementsAre(TokenSpan{0, 0}, TokenSpan{1, 6}, TokenSpan{0, 0}));
  // Without with_spans, none.
  single = TokenizeAndPack(*tokenizer, "world", nullptr, 8, TruncationPolicy::kTruncate, "");
  ASSERT_TRUE(single.ok());
  EXPECT_THAT(single->spans, IsEmpty());
  // A pair at seq_length 2 is [CLS] [SEP].
  const absl::string_view c = "hello";
  absl::StatusOr<PackedInput> tiny =
      TokenizeAndPack(*tokenizer, "a", &c, 2, TruncationPolicy::kTruncate, "", nullptr, true);
  ASSERT_TRUE(tiny.ok());
  EXPECT_THAT(tiny->spans, ElementsAre(TokenSpan{0, 0}, TokenSpan{0, 0}));
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

TEST(TokenizeAndPackTest, RejectionsCountTheTokensTokenized) {
  const std::unique_ptr<BertTokenizer> tokenizer = TinyTokenizer();
  // Both segments tokenized to the end (neither reached budget + 1 = 4 ids): the exact count.
  const absl::string_view b = "a b";
  EXPECT_EQ(TokenizeAndPack(*tokenizer, "hello world", &b, 6, TruncationPolicy::kReject, "")
                .status()
                .message(),
            "input needs 7 tokens with [CLS]/[SEP], more than seq_length 6");
  // A segment tokenized only as far as seq_length can use: a lower bound.
  EXPECT_EQ(
      TokenizeAndPack(*tokenizer, "hello world a b a b", &b, 6, TruncationPolicy::kReject, "in")
          .status()
          .message(),
      "in: input needs at least 9 tokens with [CLS]/[SEP], more than seq_length 6");
  EXPECT_EQ(
      TokenizeAndPack(*tokenizer, "hello world a b a b", nullptr, 3, TruncationPolicy::kReject, "")
          .status()
          .message(),
      "input needs at least 4 tokens with [CLS]/[SEP], more than seq_length 3");
}

// The real bert-base-uncased vocabulary, a data dependency of this test.
std::unique_ptr<BertTokenizer> BertBaseUncased() {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  const char* workspace = std::getenv("TEST_WORKSPACE");
  const std::string path =
      srcdir != nullptr && workspace != nullptr
          ? std::string(srcdir) + "/" + workspace + "/tests/data/bert_uncased_vocab.txt"
          : "tests/data/bert_uncased_vocab.txt";
  auto tokenizer = BertTokenizer::Load(path, BertTokenizer::Options());
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status();
  return *std::move(tokenizer);
}

// TokenizeAndPack stops tokenizing where seq_length stops using tokens; what it returns must
// be what packing the whole tokenization gives, field for field.
TEST(TokenizeAndPackTest, EqualsPackingTheWholeTokenization) {
  const std::unique_ptr<BertTokenizer> tokenizer = BertBaseUncased();
  std::mt19937 rng(20260302);
  PackScratch scratch;
  int truncated = 0;
  int rejected = 0;
  for (int round = 0; round < 600; ++round) {
    const std::string text_a = text_testing::RandomText(&rng, 24);
    const std::string text_b_storage = text_testing::RandomText(&rng, 24);
    const absl::string_view text_b = text_b_storage;
    std::vector<int32_t> a, b;
    ASSERT_TRUE(tokenizer->Tokenize(text_a, &a).ok());
    ASSERT_TRUE(tokenizer->Tokenize(text_b, &b).ok());
    const absl::Span<const int32_t> b_span(b);
    const int longest = static_cast<int>(a.size() + b.size()) + 3;
    for (int seq_length = 2; seq_length <= longest + 2; ++seq_length) {
      for (const bool pair : {false, true}) {
        for (const TruncationPolicy policy :
             {TruncationPolicy::kTruncate, TruncationPolicy::kLongestFirst,
              TruncationPolicy::kReject}) {
          SCOPED_TRACE(::testing::Message()
                       << "seq_length " << seq_length << " pair " << pair << " policy "
                       << static_cast<int>(policy) << " a '" << text_a << "' b '" << text_b << "'");
          const absl::StatusOr<PackedInput> expected =
              PackInputs(a, pair ? &b_span : nullptr, seq_length, tokenizer->cls_id(),
                         tokenizer->sep_id(), policy);
          const absl::StatusOr<PackedInput> packed = TokenizeAndPack(
              *tokenizer, text_a, pair ? &text_b : nullptr, seq_length, policy, "", &scratch);
          ASSERT_EQ(packed.status().code(), expected.status().code());
          if (!expected.ok()) {
            EXPECT_THAT(std::string(packed.status().message()),
                        ::testing::StartsWith("input needs "));
            ++rejected;
            continue;
          }
          EXPECT_EQ(packed->word_ids, expected->word_ids);
          EXPECT_EQ(packed->type_ids, expected->type_ids);
          EXPECT_EQ(packed->truncated, expected->truncated);
          EXPECT_EQ(packed->num_tokens(), expected->num_tokens());
          std::vector<int32_t> word_ids, mask, type_ids;
          std::vector<int32_t> expected_word_ids, expected_mask, expected_type_ids;
          PadToLength(*packed, seq_length, tokenizer->pad_id(), &word_ids, &mask, &type_ids);
          PadToLength(*expected, seq_length, tokenizer->pad_id(), &expected_word_ids,
                      &expected_mask, &expected_type_ids);
          EXPECT_EQ(word_ids, expected_word_ids);
          EXPECT_EQ(mask, expected_mask);
          EXPECT_EQ(type_ids, expected_type_ids);
          truncated += expected->truncated;
        }
      }
    }
  }
  EXPECT_GT(truncated, 20000);
  EXPECT_GT(rejected, 10000);
}

// Under kLongestFirst a pair of texts both longer than an odd budget keeps the odd token in
// the longer one, which TokenizeAndPack learns by counting (no ids kept); otherwise it stops
// tokenizing early as under kTruncate.
TEST(TokenizeAndPackTest, LongestFirstCountsTwoCutTextsWithoutKeepingTheirIds) {
  const std::unique_ptr<BertTokenizer> tokenizer = BertBaseUncased();
  const std::string unit = "unaffable tokenization, 我爱北京 Crème ";  // 12 tokens.
  std::string huge;
  while (huge.size() < (1 << 20)) huge += unit;
  const std::string longer = huge + unit;
  const std::string shorter = unit + unit;
  std::vector<int32_t> unit_ids;
  ASSERT_TRUE(tokenizer->Tokenize(unit, &unit_ids).ok());
  struct Case {
    absl::string_view a, b;
    int keep_a;  // of a budget of 5
  };
  for (const Case& c : {Case{huge, longer, 2}, Case{longer, huge, 3}, Case{huge, huge, 2},
                        Case{huge, shorter, 3}, Case{shorter, huge, 2}}) {
    for (const int seq_length : {8, 9}) {  // budgets 5 (odd) and 6 (even)
      const int64_t before = BertTokenizer::GetThreadStatsForTesting().ids_produced;
      const absl::StatusOr<PackedInput> packed =
          TokenizeAndPack(*tokenizer, c.a, &c.b, seq_length, TruncationPolicy::kLongestFirst, "");
      const int64_t produced = BertTokenizer::GetThreadStatsForTesting().ids_produced - before;
      ASSERT_TRUE(packed.ok()) << packed.status();
      EXPECT_TRUE(packed->truncated);
      const int keep_a = seq_length == 8 ? c.keep_a : 3;
      std::vector<int32_t> want = {tokenizer->cls_id()};
      want.insert(want.end(), unit_ids.begin(), unit_ids.begin() + keep_a);
      want.push_back(tokenizer->sep_id());
      want.insert(want.end(), unit_ids.begin(), unit_ids.begin() + (seq_length - 3 - keep_a));
      want.push_back(tokenizer->sep_id());
      EXPECT_EQ(packed->word_ids, want) << seq_length;
      // Two segments of at most seq_length - 1 ids, plus the rest of the last word.
      EXPECT_LE(produced, 2 * (seq_length + 100)) << seq_length;
    }
  }
}

TEST(TokenizeAndPackTest, StopsTokenizingAHugeTextEarly) {
  const std::unique_ptr<BertTokenizer> tokenizer = BertBaseUncased();
  const std::string unit = "unaffable tokenization, 我爱北京 Crème ";  // 12 tokens.
  std::string huge;
  while (huge.size() < (8 << 20)) huge += unit;
  const std::string short_text = unit + unit + unit;
  const absl::string_view huge_view = huge;
  const absl::string_view short_view = short_text;
  struct Case {
    absl::string_view a;
    const absl::string_view* b;
  };
  for (const Case& c : {Case{huge, nullptr}, Case{huge, &short_view}, Case{short_text, &huge_view},
                        Case{huge, &huge_view}}) {
    for (const int seq_length : {2, 3, 8, 128}) {
      const int64_t before = BertTokenizer::GetThreadStatsForTesting().ids_produced;
      const absl::StatusOr<PackedInput> packed =
          TokenizeAndPack(*tokenizer, c.a, c.b, seq_length, TruncationPolicy::kTruncate, "");
      const int64_t produced = BertTokenizer::GetThreadStatsForTesting().ids_produced - before;
      ASSERT_TRUE(packed.ok()) << packed.status();
      EXPECT_TRUE(packed->truncated);
      EXPECT_EQ(packed->num_tokens(), seq_length);
      // Two segments of at most seq_length - 1 ids each, plus the rest of the last word: not
      // the millions of ids of the whole text.
      EXPECT_LE(produced, 2 * (seq_length + 100)) << seq_length;
      // The same as packing the whole tokenization of each text's first three units: 36 ids,
      // more than seq_lengths up to 8 can use.
      if (seq_length > 8) continue;
      std::vector<int32_t> first_a, first_b;
      ASSERT_TRUE(tokenizer->Tokenize(c.a.substr(0, short_text.size()), &first_a).ok());
      if (c.b != nullptr) {
        ASSERT_TRUE(tokenizer->Tokenize(c.b->substr(0, short_text.size()), &first_b).ok());
      }
      const absl::Span<const int32_t> first_b_span(first_b);
      const absl::StatusOr<PackedInput> expected =
          PackInputs(first_a, c.b != nullptr ? &first_b_span : nullptr, seq_length,
                     tokenizer->cls_id(), tokenizer->sep_id(), TruncationPolicy::kTruncate);
      ASSERT_TRUE(expected.ok());
      EXPECT_EQ(packed->word_ids, expected->word_ids);
      EXPECT_EQ(packed->type_ids, expected->type_ids);
    }
    const absl::Status rejected =
        TokenizeAndPack(*tokenizer, c.a, c.b, 128, TruncationPolicy::kReject, "").status();
    EXPECT_EQ(rejected.code(), absl::StatusCode::kInvalidArgument);
  }
}

// Pairs sharing a first text (a Rerank's query and each of its texts) tokenize it once.
TEST(TokenizeAndPackTest, AScratchKeepsTheFirstTextsTokensForTheNextPair) {
  const std::unique_ptr<BertTokenizer> tokenizer = BertBaseUncased();
  const std::string query = "what is the capital of france?";
  const std::vector<std::string> texts = {"paris is the capital.", "berlin is in germany.",
                                          "the eiffel tower."};
  const auto produced_by = [&](absl::string_view a, absl::string_view b, int seq_length,
                               PackScratch* scratch, bool with_spans = false) {
    const int64_t before = BertTokenizer::GetThreadStatsForTesting().ids_produced;
    const absl::StatusOr<PackedInput> packed = TokenizeAndPack(
        *tokenizer, a, &b, seq_length, TruncationPolicy::kLongestFirst, "", scratch, with_spans);
    EXPECT_TRUE(packed.ok()) << packed.status();
    return BertTokenizer::GetThreadStatsForTesting().ids_produced - before;
  };
  std::vector<int32_t> query_tokens;
  ASSERT_TRUE(tokenizer->Tokenize(query, &query_tokens).ok());
  const int64_t q = static_cast<int64_t>(query_tokens.size());  // 7
  std::vector<int64_t> text_ids;
  for (const std::string& text : texts) {
    std::vector<int32_t> ids;
    ASSERT_TRUE(tokenizer->Tokenize(text, &ids).ok());
    text_ids.push_back(static_cast<int64_t>(ids.size()));
  }
  PackScratch scratch;
  EXPECT_EQ(produced_by(query, texts[0], 128, &scratch), q + text_ids[0]);
  EXPECT_TRUE(scratch.a_valid);
  for (size_t i = 1; i < texts.size(); ++i) {
    EXPECT_EQ(produced_by(query, texts[i], 128, &scratch), text_ids[i]) << i;  // b's alone
    EXPECT_EQ(produced_by(query, texts[i], 128, nullptr), q + text_ids[i]) << i;
  }
  // Another budget, offsets newly asked for, another first text: tokenized again.
  EXPECT_EQ(produced_by(query, texts[0], 64, &scratch), q + text_ids[0]);
  EXPECT_EQ(produced_by(query, texts[0], 64, &scratch, /*with_spans=*/true), q + text_ids[0]);
  EXPECT_EQ(produced_by(query, texts[1], 64, &scratch), text_ids[1]);  // spans not needed
  EXPECT_EQ(produced_by(texts[2], texts[1], 64, &scratch), text_ids[2] + text_ids[1]);
  // A first text over kMaxKeptText is not kept: tokenized each time (to the budget).
  const std::string long_query(PackScratch::kMaxKeptText + 1, 'a');  // one word: [UNK]
  const int64_t first = produced_by(long_query, texts[0], 16, &scratch);
  EXPECT_FALSE(scratch.a_valid);
  EXPECT_EQ(produced_by(long_query, texts[0], 16, &scratch), first);
}

// With a scratch kept across calls of every kind (texts repeated or not, budgets, policies,
// singles and pairs, offsets or not, invalid UTF-8), each result equals a call without one.
TEST(TokenizeAndPackTest, AScratchChangesNoResult) {
  const std::unique_ptr<BertTokenizer> tokenizer = BertBaseUncased();
  std::mt19937 rng(20261129);
  std::vector<std::string> firsts;
  for (int i = 0; i < 6; ++i) firsts.push_back(text_testing::RandomText(&rng, 12));
  firsts.push_back("caf\xc3");  // invalid UTF-8
  firsts.push_back("");
  PackScratch scratch;
  int kept = 0;
  size_t a_index = 0;
  bool pair = true;
  int seq_length = 16;
  for (int call = 0; call < 20000; ++call) {
    // Half the calls go on with the last first text, pairing and length (a Rerank's pairs);
    // the others draw them anew.
    if (rng() % 2 == 0) {
      a_index = rng() % firsts.size();
      pair = rng() % 4 != 0;
      seq_length = std::vector<int>{2, 5, 16, 40}[rng() % 4];
    }
    const std::string& a = firsts[a_index];
    const std::string b_text =
        rng() % 16 == 0 ? std::string("x\xff") : text_testing::RandomText(&rng, 8);
    const absl::string_view b = b_text;
    const TruncationPolicy policy = static_cast<TruncationPolicy>(rng() % 3);
    const bool with_spans = rng() % 2 == 0;
    SCOPED_TRACE(::testing::Message()
                 << "call " << call << " a '" << a << "' b '" << b_text << "' pair " << pair
                 << " seq_length " << seq_length << " policy " << static_cast<int>(policy));
    // Whether this call may take the kept tokens (as TokenizeAndPack decides).
    const size_t max_tokens = static_cast<size_t>(std::max(seq_length - (pair ? 3 : 2), 0)) + 1;
    const bool was_kept = scratch.a_valid && scratch.a_text == a &&
                          scratch.a_max_tokens == max_tokens &&
                          (scratch.a_with_spans || !with_spans);
    const absl::StatusOr<PackedInput> with = TokenizeAndPack(
        *tokenizer, a, pair ? &b : nullptr, seq_length, policy, "c", &scratch, with_spans);
    const absl::StatusOr<PackedInput> without = TokenizeAndPack(
        *tokenizer, a, pair ? &b : nullptr, seq_length, policy, "c", nullptr, with_spans);
    kept += was_kept;
    ASSERT_EQ(with.status(), without.status());
    if (!with.ok()) continue;
    EXPECT_EQ(with->word_ids, without->word_ids);
    EXPECT_EQ(with->type_ids, without->type_ids);
    EXPECT_EQ(with->truncated, without->truncated);
    EXPECT_EQ(with->spans, without->spans);
  }
  EXPECT_GT(kept, 4000);
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
