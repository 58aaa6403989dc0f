#include "server/text/tokenizer.h"

#include <algorithm>
#include <cstdlib>
#include <limits>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/text/packer.h"
#include "server/text/random_text.h"
#include "utf8proc.h"

namespace bert {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

// The real bert-base-uncased vocabulary, a data dependency of this test.
std::string VocabPath() {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  const char* workspace = std::getenv("TEST_WORKSPACE");
  if (srcdir != nullptr && workspace != nullptr) {
    return std::string(srcdir) + "/" + workspace + "/tests/data/bert_uncased_vocab.txt";
  }
  return "tests/data/bert_uncased_vocab.txt";
}

class TokenizerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto uncased = BertTokenizer::Load(VocabPath(), BertTokenizer::Options());
    ASSERT_TRUE(uncased.ok()) << uncased.status();
    uncased_ = uncased->release();
    BertTokenizer::Options cased_options;
    cased_options.lowercase = false;
    auto cased = BertTokenizer::Load(VocabPath(), cased_options);
    ASSERT_TRUE(cased.ok()) << cased.status();
    cased_ = cased->release();
  }
  static void TearDownTestSuite() {
    delete uncased_;
    delete cased_;
  }

  static std::vector<std::string> Tokens(const BertTokenizer& tok, absl::string_view text) {
    std::vector<int32_t> ids;
    absl::Status status = tok.Tokenize(text, &ids);
    EXPECT_TRUE(status.ok()) << status;
    std::vector<std::string> out;
    for (int32_t id : ids) out.emplace_back(tok.Token(id));
    return out;
  }
  static std::vector<std::string> Uncased(absl::string_view text) {
    return Tokens(*uncased_, text);
  }

  static BertTokenizer* uncased_;
  static BertTokenizer* cased_;
};
BertTokenizer* TokenizerTest::uncased_ = nullptr;
BertTokenizer* TokenizerTest::cased_ = nullptr;

TEST_F(TokenizerTest, SpecialTokenIdsComeFromTheVocab) {
  EXPECT_EQ(uncased_->vocab_size(), 30522);
  EXPECT_EQ(uncased_->Token(uncased_->cls_id()), "[CLS]");
  EXPECT_EQ(uncased_->Token(uncased_->sep_id()), "[SEP]");
  EXPECT_EQ(uncased_->Token(uncased_->pad_id()), "[PAD]");
  EXPECT_EQ(uncased_->Token(uncased_->unk_id()), "[UNK]");
  EXPECT_EQ(uncased_->Token(-1), "");
  EXPECT_EQ(uncased_->Token(30522), "");
  EXPECT_TRUE(uncased_->lowercase());
  EXPECT_FALSE(cased_->lowercase());
}

TEST_F(TokenizerTest, SeedExampleHasTfHubTokenCounts) {
  for (const auto& [text, expected] :
       std::vector<std::pair<std::string, int>>{{"Please subscribe to this newsletter", 8},
                                                {"You are being offered this job role", 9}}) {
    std::vector<int32_t> ids;
    ASSERT_TRUE(uncased_->Tokenize(text, &ids).ok());
    auto packed = PackInputs(ids, nullptr, 128, uncased_->cls_id(), uncased_->sep_id(),
                             TruncationPolicy::kReject);
    ASSERT_TRUE(packed.ok()) << packed.status();
    EXPECT_EQ(packed->num_tokens(), expected) << text;
    std::vector<int32_t> word_ids, mask, type_ids;
    PadToLength(*packed, 128, uncased_->pad_id(), &word_ids, &mask, &type_ids);
    ASSERT_EQ(word_ids.size(), 128u);
    int real = 0;
    for (int m : mask) real += m;
    EXPECT_EQ(real, expected);
    EXPECT_EQ(word_ids[0], uncased_->cls_id());
    EXPECT_EQ(word_ids[expected - 1], uncased_->sep_id());
    EXPECT_EQ(word_ids[expected], uncased_->pad_id());
  }
  EXPECT_THAT(Uncased("Please subscribe to this newsletter"),
              ElementsAre("please", "sub", "##scribe", "to", "this", "newsletter"));
}

TEST_F(TokenizerTest, WordPieceGreedyLongestMatch) {
  EXPECT_THAT(Uncased("unaffable tokenization"),
              ElementsAre("una", "##ffa", "##ble", "token", "##ization"));
  EXPECT_THAT(Uncased("Hello, World!"), ElementsAre("hello", ",", "world", "!"));
}

TEST_F(TokenizerTest, EmptyAndWhitespaceOnlyTextGiveNoTokens) {
  EXPECT_THAT(Uncased(""), IsEmpty());
  EXPECT_THAT(Uncased(" \t\r\n\u3000\u00a0"), IsEmpty());
}

TEST_F(TokenizerTest, TokenizeAppends) {
  std::vector<int32_t> ids = {7};
  ASSERT_TRUE(uncased_->Tokenize("hello", &ids).ok());
  ASSERT_EQ(ids.size(), 2u);
  EXPECT_EQ(ids[0], 7);
  EXPECT_EQ(uncased_->Token(ids[1]), "hello");
}

TEST_F(TokenizerTest, AccentsAreStrippedForUncased) {
  EXPECT_THAT(Uncased("Héllo Wörld! Crème brûlée"),
              ElementsAre("hello", "world", "!", "cr", "##eme", "br", "##ule", "##e"));
  // A decomposed accent and a lone combining mark are removed the same way.
  EXPECT_THAT(Uncased("e\u0301"), ElementsAre("e"));
  EXPECT_THAT(Uncased("\u0301"), IsEmpty());
  // U+0130 decomposes to I + combining dot before lowercasing.
  EXPECT_THAT(Uncased("İstanbul"), ElementsAre("istanbul"));
}

TEST_F(TokenizerTest, CasedKeepsCaseAndAccents) {
  // The uncased vocab has no capitals, so cased words fall apart or become [UNK].
  EXPECT_THAT(Tokens(*cased_, "hello Hello"), ElementsAre("hello", "[UNK]"));
  // No NFD for cased vocabularies: "café" and "e + U+0301" keep their accents.
  EXPECT_THAT(Tokens(*cased_, "caf\u00e9"), ElementsAre("[UNK]"));
  EXPECT_THAT(Tokens(*cased_, "e\u0301"), ElementsAre("[UNK]"));
  EXPECT_THAT(Tokens(*cased_, "cafe"), ElementsAre("cafe"));
}

TEST_F(TokenizerTest, CjkIdeographsAreSeparateWords) {
  // 爱 and 门 are not in the bert-base-uncased vocab.
  EXPECT_THAT(Uncased("我爱北京天安门"),
              ElementsAre("我", "[UNK]", "北", "京", "天", "安", "[UNK]"));
  EXPECT_THAT(Uncased("ab北cd"), ElementsAre("ab", "北", "cd"));
}

TEST_F(TokenizerTest, PunctuationIsSplit) {
  EXPECT_THAT(Uncased("$100.50 @user #tag"),
              ElementsAre("$", "100", ".", "50", "@", "user", "#", "tag"));
  EXPECT_THAT(Uncased("«quote»—dash…"), ElementsAre("«", "quote", "»", "—", "dash", "…"));
  // Every ASCII punctuation character is a word of its own.
  const std::string ascii_punct = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";
  std::vector<std::string> expected;
  for (char c : ascii_punct) expected.emplace_back(1, c);
  EXPECT_THAT(Uncased(ascii_punct), ElementsAreArray(expected));
  // Special-token strings in text are plain text.
  EXPECT_THAT(Uncased("hello[MASK]world"), ElementsAre("hello", "[", "mask", "]", "world"));
  // GREEK QUESTION MARK decomposes (NFD) to ';'.
  EXPECT_THAT(Uncased("a\u037eb"), ElementsAre("a", ";", "b"));
}

TEST_F(TokenizerTest, TextCleaning) {
  // NUL, U+FFFD, zero-width space (Cf) and C0 controls are removed without splitting.
  EXPECT_THAT(Uncased(std::string("x\0y\uFFFDz\u200Bw\x01v", 13)),
              ElementsAre("x", "##y", "##z", "##w", "##v"));
  // Tabs, newlines and Unicode spaces separate words.
  EXPECT_THAT(Uncased("tab\tnew\nline\u3000ideo\u00a0nbsp"),
              ElementsAre("tab", "new", "line", "id", "##eo", "n", "##bs", "##p"));
}

TEST_F(TokenizerTest, UnknownAndLongWords) {
  EXPECT_THAT(Uncased("I \u2764 emoji \U0001F600"),
              ElementsAre("i", "[UNK]", "em", "##oj", "##i", "[UNK]"));
  const std::string a100(100, 'a');
  const std::vector<std::string> pieces = Uncased(a100);
  ASSERT_EQ(pieces.size(), 50u);
  EXPECT_EQ(pieces.front(), "aaa");
  EXPECT_EQ(pieces.back(), "##a");
  EXPECT_THAT(Uncased(a100 + "a"), ElementsAre("[UNK]"));
  // The limit counts characters, not bytes: 100 two-byte characters are still fine.
  std::string e100;
  for (int i = 0; i < 100; ++i) e100 += "\u00e9";
  EXPECT_NE(Uncased(e100), std::vector<std::string>{"[UNK]"});
  EXPECT_THAT(Uncased(e100 + "\u00e9"), ElementsAre("[UNK]"));
  // A megabyte-long word is one [UNK]; the words around it are unaffected.
  EXPECT_THAT(Uncased("hello " + std::string(1 << 20, 'x') + " world"),
              ElementsAre("hello", "[UNK]", "world"));
}

TEST_F(TokenizerTest, InvalidUtf8IsRejected) {
  for (const std::string& bad : {std::string("abc\xff"), std::string("\xc3"),
                                 std::string("\xc0\xaf"),          // Overlong '/'.
                                 std::string("\xed\xa0\x80"),      // Surrogate U+D800.
                                 std::string("\xf4\x90\x80\x80"),  // Above U+10FFFF.
                                 std::string("ok \xe2\x82 broken")}) {
    std::vector<int32_t> ids = {1, 2};
    absl::Status status = uncased_->Tokenize(bad, &ids);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(std::string(status.message()), HasSubstr("UTF-8"));
    EXPECT_THAT(ids, ElementsAre(1, 2));  // Unchanged.
  }
}

TEST_F(TokenizerTest, ConcurrentCallsAgree) {
  const std::string text = "Crème brûlée — 我爱北京 and unaffable tokenization, again and again.";
  std::vector<int32_t> expected;
  ASSERT_TRUE(uncased_->Tokenize(text, &expected).ok());
  std::vector<std::thread> threads;
  std::vector<int> mismatches(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 2000; ++i) {
        std::vector<int32_t> ids;
        if (!uncased_->Tokenize(text, &ids).ok() || ids != expected) ++mismatches[t];
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_THAT(mismatches, ElementsAre(0, 0, 0, 0));
}

TEST_F(TokenizerTest, LimitedTokenizeGivesTheFirstIdsOfTheFullTokenization) {
  std::mt19937 rng(20260301);
  int cut = 0;
  for (int round = 0; round < 1500; ++round) {
    const std::string text = text_testing::RandomText(&rng, 30);
    for (const BertTokenizer* tok : {uncased_, cased_}) {
      std::vector<int32_t> full;
      ASSERT_TRUE(tok->Tokenize(text, &full).ok()) << text;
      for (size_t max_tokens = 0; max_tokens <= full.size() + 2; ++max_tokens) {
        std::vector<int32_t> ids = {7};  // Appends after what is there.
        ASSERT_TRUE(tok->Tokenize(text, max_tokens, &ids).ok()) << text;
        std::vector<int32_t> expected = {7};
        expected.insert(expected.end(), full.begin(),
                        full.begin() + std::min(max_tokens, full.size()));
        ASSERT_EQ(ids, expected) << "max_tokens " << max_tokens << " text " << text;
        cut += max_tokens < full.size();
      }
    }
  }
  EXPECT_GT(cut, 10000);
}

TEST_F(TokenizerTest, LimitedTokenizeStopsEarly) {
  const std::string unit = "unaffable tokenization, 我爱北京 Crème ";  // 12 tokens.
  std::string text;
  while (text.size() < (8 << 20)) text += unit;
  std::vector<int32_t> full;  // The first 12 * 20 ids.
  ASSERT_TRUE(uncased_->Tokenize(text.substr(0, 20 * unit.size()), &full).ok());
  for (size_t max_tokens : {0, 1, 5, 126}) {
    const int64_t before = BertTokenizer::GetThreadStatsForTesting().ids_produced;
    std::vector<int32_t> ids;
    ASSERT_TRUE(uncased_->Tokenize(text, max_tokens, &ids).ok());
    const int64_t produced = BertTokenizer::GetThreadStatsForTesting().ids_produced - before;
    // The whole text has millions of ids; the call stops after the word that reached
    // max_tokens (a word has at most 100 pieces).
    EXPECT_GE(produced, static_cast<int64_t>(max_tokens));
    EXPECT_LE(produced, static_cast<int64_t>(max_tokens) + 100);
    EXPECT_EQ(ids, std::vector<int32_t>(full.begin(), full.begin() + max_tokens));
  }
  // Without a limit the counter sees every id.
  const int64_t before = BertTokenizer::GetThreadStatsForTesting().ids_produced;
  std::vector<int32_t> ids;
  ASSERT_TRUE(uncased_->Tokenize(text, &ids).ok());
  EXPECT_EQ(BertTokenizer::GetThreadStatsForTesting().ids_produced - before,
            static_cast<int64_t>(ids.size()));
  EXPECT_GT(ids.size(), 1000000u);
}

TEST_F(TokenizerTest, LimitedTokenizeStillRejectsInvalidUtf8AfterTheStop) {
  std::string text;
  for (int i = 0; i < 1000; ++i) text += "hello world ";
  for (const std::string& bad :
       {text + "\xff", text + "\xe4\xb8", text + "x\xed\xa0\x80 ok", text + "\xc3\xa9\xc0\xaf"}) {
    std::vector<int32_t> ids = {1, 2};
    const absl::Status full = uncased_->Tokenize(bad, &ids);
    ASSERT_EQ(full.code(), absl::StatusCode::kInvalidArgument);
    for (size_t max_tokens : {0, 1, 3, 1999, 2000, 2001}) {
      const absl::Status limited = uncased_->Tokenize(bad, max_tokens, &ids);
      EXPECT_EQ(limited, full) << max_tokens;  // Same code and message (the bad byte's offset).
      EXPECT_THAT(ids, ElementsAre(1, 2));     // Unchanged.
    }
  }
}

TEST_F(TokenizerTest, CountTokensCountsWhatTokenizeGivesWithoutKeepingIt) {
  std::mt19937 rng(20261128);
  for (int round = 0; round < 1000; ++round) {
    const std::string text = text_testing::RandomText(&rng, 30);
    for (const BertTokenizer* tok : {uncased_, cased_}) {
      std::vector<int32_t> full;
      ASSERT_TRUE(tok->Tokenize(text, &full).ok()) << text;
      for (size_t max_count : {size_t{0}, size_t{1}, full.size() / 2, full.size(), full.size() + 1,
                               std::numeric_limits<size_t>::max()}) {
        const absl::StatusOr<size_t> count = tok->CountTokens(text, max_count);
        ASSERT_TRUE(count.ok()) << text;
        ASSERT_EQ(*count, std::min(full.size(), max_count)) << max_count << " " << text;
      }
    }
  }
  // A text of millions of ids: counted, none kept (the scratch stays small), and invalid UTF-8
  // after the stop still fails as Tokenize fails.
  const std::string unit = "unaffable tokenization, 我爱北京 Crème ";  // 12 tokens.
  std::string text;
  while (text.size() < (4 << 20)) text += unit;
  const int64_t before = BertTokenizer::GetThreadStatsForTesting().ids_produced;
  const absl::StatusOr<size_t> count =
      uncased_->CountTokens(text, std::numeric_limits<size_t>::max());
  ASSERT_TRUE(count.ok());
  EXPECT_EQ(*count, text.size() / unit.size() * 12);
  EXPECT_EQ(BertTokenizer::GetThreadStatsForTesting().ids_produced, before);
  EXPECT_LT(BertTokenizer::GetThreadStatsForTesting().last_scratch_bytes, 4096u);
  EXPECT_LT(BertTokenizer::GetThreadStatsForTesting().last_count_ids_held, 256u);
  EXPECT_EQ(*uncased_->CountTokens(text, 100), 100u);
  std::vector<int32_t> ids;
  EXPECT_EQ(uncased_->CountTokens(text + "\xff", 100).status(),
            uncased_->Tokenize(text + "\xff", &ids));
}

// The tokenizer counts, rather than queues, the combining marks of a word that can no longer fit
// max_chars_per_word, which is only right because every such mark extends the word it follows.
TEST(TokenizerUnicodeTest, NonMnMarksWithACombiningClassAreAllMc) {
  int marks = 0;
  for (int32_t cp = 0; cp <= 0x10FFFF; ++cp) {
    const utf8proc_property_t* p = utf8proc_get_property(cp);
    if (p->combining_class == 0 || p->category == UTF8PROC_CATEGORY_MN) continue;
    ++marks;
    const int32_t lower = utf8proc_tolower(cp);
    EXPECT_EQ(utf8proc_get_property(lower)->category, UTF8PROC_CATEGORY_MC) << std::hex << cp;
    EXPECT_GE(lower, 0x80) << std::hex << cp;
  }
  EXPECT_GT(marks, 0);
}

// "a" and three combining marks as ## pieces: U+16FF0 (class 6), U+1D165 (216), U+1D16D (226).
// Each token of `text` with the bytes its span covers, as "token=covered".
std::vector<std::string> TokensWithSpans(const BertTokenizer& tok, absl::string_view text,
                                         size_t max_tokens = std::numeric_limits<size_t>::max()) {
  std::vector<int32_t> ids;
  std::vector<TokenSpan> spans;
  absl::Status status = tok.Tokenize(text, max_tokens, &ids, &spans);
  EXPECT_TRUE(status.ok()) << status;
  EXPECT_EQ(ids.size(), spans.size());
  std::vector<std::string> out;
  for (size_t i = 0; i < ids.size() && i < spans.size(); ++i) {
    EXPECT_LE(spans[i].begin, spans[i].end);
    EXPECT_LE(spans[i].end, text.size());
    out.push_back(absl::StrCat(tok.Token(ids[i]), "=",
                               text.substr(spans[i].begin, spans[i].end - spans[i].begin)));
  }
  return out;
}

TEST_F(TokenizerTest, SpansCoverEachTokensSourceBytes) {
  EXPECT_THAT(
      TokensWithSpans(*uncased_, "Hello, unaffable World!"),
      ElementsAre("hello=Hello", ",=,", "una=una", "##ffa=ffa", "##ble=ble", "world=World", "!=!"));
  // Normalisation maps back to the characters it came from: accents, case, full width.
  EXPECT_THAT(TokensWithSpans(*uncased_, "  Héllo	ＡＢＣ"),
              ElementsAre("hello=Héllo", "[UNK]=ＡＢＣ"));
  // Dropped characters inside a token are covered, at its edges not: a control character,
  // a zero-width space, a combining accent before and after.
  EXPECT_THAT(TokensWithSpans(*uncased_,
                              "a\x01"
                              "b c\u200Bd \u0301e x\u0301"),
              ElementsAre("ab=a\x01"
                          "b",
                          "cd=c\u200Bd", "e=e", "x=x"));
  // CJK characters and Unicode punctuation are tokens of their own.
  EXPECT_THAT(TokensWithSpans(*uncased_, "中文,¿hola"),
              ElementsAre("中=中", "文=文", ",=,", "¿=¿", "ho=ho", "##la=la"));
  // An unknown word and one past the word limit are one [UNK] over the whole word.
  EXPECT_THAT(TokensWithSpans(*uncased_, "x Ⅻx " + std::string(101, 'q') + " y"),
              ElementsAre("x=x", "[UNK]=Ⅻx", "[UNK]=" + std::string(101, 'q'), "y=y"));
  // Cased: nothing is normalised, the spans are the tokens.
  EXPECT_THAT(TokensWithSpans(*cased_, "Héllo"), ElementsAre("[UNK]=Héllo"));
  // Cut at max_tokens: spans are cut with the ids.
  EXPECT_THAT(TokensWithSpans(*uncased_, "unaffable world", 2),
              ElementsAre("una=una", "##ffa=ffa"));
}

TEST_F(TokenizerTest, SpansDoNotChangeTheIdsAndAreLeftAloneOnErrors) {
  std::mt19937 rng(7);
  for (int i = 0; i < 2000; ++i) {
    const std::string text = text_testing::RandomText(&rng, 1 + i % 60);
    std::vector<int32_t> plain, with_spans;
    std::vector<TokenSpan> spans;
    ASSERT_TRUE(uncased_->Tokenize(text, &plain).ok());
    ASSERT_TRUE(uncased_->Tokenize(text, 1000, &with_spans, &spans).ok());
    ASSERT_EQ(plain, with_spans) << text;
    ASSERT_EQ(spans.size(), plain.size());
    for (size_t k = 1; k < spans.size(); ++k) ASSERT_LE(spans[k - 1].begin, spans[k].begin);
  }
  std::vector<int32_t> ids = {5};
  std::vector<TokenSpan> spans = {{1, 2}};
  EXPECT_FALSE(uncased_->Tokenize("good \xFF", 1000, &ids, &spans).ok());
  EXPECT_THAT(ids, ElementsAre(5));
  EXPECT_EQ(spans.size(), 1u);
}

std::unique_ptr<BertTokenizer> MarksTokenizer(int max_chars_per_word) {
  BertTokenizer::Options options;
  options.max_chars_per_word = max_chars_per_word;
  auto tok = BertTokenizer::FromTokens({"[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "##\U00016FF0",
                                        "##\U0001D165", "##\U0001D16D", "\U0001D165"},
                                       options);
  EXPECT_TRUE(tok.ok()) << tok.status();
  return *std::move(tok);
}

TEST(TokenizerMarksTest, MarksAreReorderedWhileTheWordFitsAndCountedAfter) {
  const std::unique_ptr<BertTokenizer> tok4 = MarksTokenizer(4);
  const auto ids = [](const BertTokenizer& tok, absl::string_view text) {
    std::vector<int32_t> out;
    EXPECT_TRUE(tok.Tokenize(text, &out).ok());
    return out;
  };
  // NFD's canonical reordering: classes 226, 216, 6 become 6, 216, 226.
  EXPECT_THAT(ids(*tok4, "a\U0001D16D\U0001D165\U00016FF0 a"), ElementsAre(4, 5, 6, 7, 4));
  // One character more, wherever it is, makes the word [UNK]; the next word is unaffected.
  EXPECT_THAT(ids(*tok4, "a\U0001D16D\U0001D165\U00016FF0\U0001D165 a"), ElementsAre(1, 4));
  EXPECT_THAT(ids(*tok4, "aa\U0001D16D\U0001D165\U00016FF0 a"), ElementsAre(1, 4));
  EXPECT_THAT(ids(*tok4, "a\U0001D16D\U0001D165\U00016FF0a a"), ElementsAre(1, 4));
  // A word of marks alone, at and past the limit.
  EXPECT_THAT(ids(*tok4, "\U0001D165\U0001D165\U0001D165\U0001D165"), ElementsAre(8, 6, 6, 6));
  EXPECT_THAT(ids(*tok4, "\U0001D165\U0001D165\U0001D165\U0001D165\U0001D165"), ElementsAre(1));
  const std::unique_ptr<BertTokenizer> tok1 = MarksTokenizer(1);
  EXPECT_THAT(ids(*tok1, "\U0001D165"), ElementsAre(8));
  EXPECT_THAT(ids(*tok1, "\U0001D165\U0001D165 \U0001D165"), ElementsAre(1, 8));
  EXPECT_THAT(ids(*tok1, "a\U0001D165"), ElementsAre(1));
}

TEST(TokenizerMarksTest, ReorderedMarksKeepTheirSpansInTextOrder) {
  const std::unique_ptr<BertTokenizer> tok4 = MarksTokenizer(4);
  // Characters move, spans do not (as Hugging Face's alignments): the pieces after
  // reordering still cover the text left to right.
  const std::string text = "a\U0001D16D\U0001D165\U00016FF0 a";
  std::vector<int32_t> ids;
  std::vector<TokenSpan> spans;
  ASSERT_TRUE(tok4->Tokenize(text, 100, &ids, &spans).ok());
  EXPECT_THAT(ids, ElementsAre(4, 5, 6, 7, 4));
  EXPECT_THAT(spans, ElementsAre(TokenSpan{0, 1}, TokenSpan{1, 5}, TokenSpan{5, 9},
                                 TokenSpan{9, 13}, TokenSpan{14, 15}));
  // Past the limit the [UNK] spans the whole word, counted marks included.
  ids.clear();
  spans.clear();
  ASSERT_TRUE(tok4->Tokenize("aa\U0001D16D\U0001D165\U00016FF0 a", 100, &ids, &spans).ok());
  EXPECT_THAT(ids, ElementsAre(1, 4));
  EXPECT_THAT(spans, ElementsAre(TokenSpan{0, 14}, TokenSpan{15, 16}));
}

TEST(TokenizerMarksTest, ARunOfMarksEndsAtAStarterNotAtARemovedCharacter) {
  // Checked against Hugging Face tokenizers with this vocabulary.
  const std::unique_ptr<BertTokenizer> tok = MarksTokenizer(100);
  struct Case {
    std::string text;
    std::vector<int32_t> ids;
    std::vector<TokenSpan> spans;
  };
  const Case cases[] = {
      // A control character is removed before NFD: the marks around it are one run.
      {"a\U0001D16D\x14\U0001D165", {4, 6, 7}, {{0, 1}, {1, 5}, {6, 10}}},
      // An Mn of combining class 0 is a starter: stripped, but nothing moves across it.
      {"a\U0001D16D\u0900\U0001D165", {4, 7, 6}, {{0, 1}, {1, 5}, {8, 12}}},
      // An Mn in the run is stripped after reordering: it still holds its place.
      {"a\U0001D16D\u0301\U0001D165", {4, 6, 7}, {{0, 1}, {1, 5}, {5, 7}}},
  };
  for (const Case& c : cases) {
    std::vector<int32_t> ids;
    std::vector<TokenSpan> spans;
    ASSERT_TRUE(tok->Tokenize(c.text, 100, &ids, &spans).ok());
    EXPECT_EQ(ids, c.ids) << c.text;
    EXPECT_EQ(spans, c.spans) << c.text;
  }
}

std::string RepeatMark(absl::string_view prefix, int count);

TEST(TokenizerMarksTest, APastTheTrackedRunOfMarksSharesTheLastTrackedSpan) {
  const std::unique_ptr<BertTokenizer> tok = MarksTokenizer(5000);
  const std::string text = RepeatMark("a", 1100);  // one run of 1100 marks
  std::vector<int32_t> plain, ids;
  std::vector<TokenSpan> spans;
  ASSERT_TRUE(tok->Tokenize(text, &plain).ok());
  ASSERT_TRUE(tok->Tokenize(text, 5000, &ids, &spans).ok());
  EXPECT_EQ(ids, plain);
  ASSERT_EQ(ids.size(), 1101u);
  ASSERT_EQ(spans.size(), 1101u);
  EXPECT_EQ(spans[1], (TokenSpan{1, 5}));
  EXPECT_EQ(spans[1024], (TokenSpan{1 + 4 * 1023, 1 + 4 * 1024}));  // the 1024th, tracked
  for (size_t k = 1025; k < spans.size(); ++k) EXPECT_EQ(spans[k], spans[1024]) << k;
}

std::string RepeatMark(absl::string_view prefix, int count) {
  std::string text(prefix);
  text.reserve(prefix.size() + 4 * count);
  for (int i = 0; i < count; ++i) text += "\U0001D165";
  return text;
}

TEST_F(TokenizerTest, MarksOfAnOverlongWordDoNotGrowTheScratch) {
  std::vector<int32_t> ids;
  ASSERT_TRUE(uncased_->Tokenize(RepeatMark("a", 2000000), &ids).ok());
  EXPECT_THAT(ids, ElementsAre(uncased_->unk_id()));
  // Without the bound the marks alone would take 16 MB at the call's peak. (The bound allows for
  // what earlier calls on this thread left in the scratch.)
  EXPECT_LE(BertTokenizer::GetThreadStatsForTesting().last_scratch_bytes, 128u << 10);
}

TEST(TokenizerScratchTest, ACallThatGrewTheScratchHandsItBack) {
  BertTokenizer::Options options;
  options.max_chars_per_word = 1 << 20;
  auto tok = BertTokenizer::FromTokens({"[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "##a"}, options);
  ASSERT_TRUE(tok.ok()) << tok.status();
  for (const std::string& text : {RepeatMark("a", 100000), std::string(300000, 'a') + " a"}) {
    std::vector<int32_t> ids;
    ASSERT_TRUE((*tok)->Tokenize(text, &ids).ok());
    const BertTokenizer::ThreadStatsForTesting stats = BertTokenizer::GetThreadStatsForTesting();
    EXPECT_GT(stats.last_scratch_bytes, 256u << 10);  // The long word was held whole.
    EXPECT_LE(stats.scratch_bytes, 64u << 10);
  }
  // A text that fits the kept scratch leaves it in place for the next call.
  std::vector<int32_t> ids;
  ASSERT_TRUE((*tok)->Tokenize(std::string(1000, 'a'), &ids).ok());
  EXPECT_EQ(ids.size(), 1000u);
  EXPECT_GE(BertTokenizer::GetThreadStatsForTesting().scratch_bytes, 1000u);
}

TEST(TokenizerLoadTest, MissingFileAndMissingSpecialTokens) {
  auto missing = BertTokenizer::Load("/nonexistent/vocab.txt", BertTokenizer::Options());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  auto no_unk = BertTokenizer::FromTokens({"[CLS]", "[SEP]", "[PAD]", "a"}, {});
  EXPECT_EQ(no_unk.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(no_unk.status().message()), HasSubstr("[UNK]"));
}

TEST(TokenizerLoadTest, SmallVocabWithCrlfLines) {
  auto tok = BertTokenizer::FromTokens(
      {"[PAD]\r", "[UNK]\r", "[CLS]\r", "[SEP]\r", "un\r", "##aff\r", "##able\r", "!\r"}, {});
  ASSERT_TRUE(tok.ok()) << tok.status();
  std::vector<int32_t> ids;
  ASSERT_TRUE((*tok)->Tokenize("Unaffable! ?", &ids).ok());
  // "?" is not in this vocab.
  EXPECT_THAT(ids, ElementsAre(4, 5, 6, 7, 1));
  EXPECT_EQ((*tok)->pad_id(), 0);
  EXPECT_EQ((*tok)->cls_id(), 2);
  EXPECT_EQ((*tok)->Token(4), "un");
}

// Decode's expectations below are what Hugging Face tokenizers 0.20.3 gives for the same ids
// (BertWordPieceTokenizer over the same vocabulary, decode(ids, skip_special_tokens)).
TEST_F(TokenizerTest, DecodeJoinsPiecesAndSkipsSpecialTokensAsHuggingFace) {
  const auto ids = [](std::initializer_list<absl::string_view> tokens) {
    std::vector<int32_t> out;
    for (absl::string_view token : tokens) {
      std::vector<int32_t> one;
      EXPECT_TRUE(uncased_->Tokenize(token, &one).ok());
      if (token == "[CLS]") one = {uncased_->cls_id()};
      if (token == "[SEP]") one = {uncased_->sep_id()};
      if (token == "[PAD]") one = {uncased_->pad_id()};
      if (token == "[UNK]") one = {uncased_->unk_id()};
      if (token == "[MASK]") one = {uncased_->mask_id()};
      if (token == "##s") one = {2015};
      if (token == "##ing") one = {2075};
      EXPECT_EQ(one.size(), 1u) << token;
      EXPECT_EQ(uncased_->Token(one[0]), token);
      out.push_back(one[0]);
    }
    return out;
  };
  const std::vector<int32_t> hellos = ids({"[CLS]", "hello", "##s", "world", ".", "[SEP]"});
  EXPECT_EQ(uncased_->Decode(hellos, /*skip_special_tokens=*/true), "hellos world.");
  EXPECT_EQ(uncased_->Decode(hellos, /*skip_special_tokens=*/false), "[CLS] hellos world. [SEP]");
  // The first token is taken as it is; "." and "?" lose their space.
  EXPECT_EQ(uncased_->Decode(ids({"##ing", ".", "?"}), true), "##ing.?");
  // "'" alone keeps its spaces (the clean-up's " ' " needs both in one token).
  EXPECT_EQ(uncased_->Decode(ids({"it", "'", "s"}), true), "it ' s");
  EXPECT_EQ(uncased_->Decode(ids({"do", "not"}), true), "do not");
  // Special tokens are left out before the decoder: "##s" is then the first token.
  const std::vector<int32_t> padded = ids({"[CLS]", "##s", "[SEP]", "[PAD]"});
  EXPECT_EQ(uncased_->Decode(padded, true), "##s");
  EXPECT_EQ(uncased_->Decode(padded, false), "[CLS]s [SEP] [PAD]");
  const std::vector<int32_t> masked = ids({"[MASK]", "[UNK]", "a"});
  EXPECT_EQ(uncased_->Decode(masked, true), "a");
  EXPECT_EQ(uncased_->Decode(masked, false), "[MASK] [UNK] a");
  EXPECT_EQ(uncased_->Decode({}, true), "");
  // Unknown ids are skipped.
  EXPECT_EQ(uncased_->Decode({-1, 30522, ids({"a"})[0]}, false), "a");
}

TEST_F(TokenizerTest, DecodeOfTokenizedTextGivesItsNormalisedWords) {
  std::vector<int32_t> ids;
  ASSERT_TRUE(uncased_->Tokenize("Unaffable tokenization, Héllo WORLD!", &ids).ok());
  EXPECT_EQ(uncased_->Decode(ids, true), "unaffable tokenization, hello world!");
}

TEST_F(TokenizerTest, SpecialTokensAreTheFiveBertRegisters) {
  EXPECT_EQ(uncased_->Token(uncased_->mask_id()), "[MASK]");
  for (int32_t id : {uncased_->cls_id(), uncased_->sep_id(), uncased_->pad_id(), uncased_->unk_id(),
                     uncased_->mask_id()}) {
    EXPECT_TRUE(uncased_->IsSpecial(id)) << id;
  }
  int specials = 0;
  for (int32_t id = -1; id <= uncased_->vocab_size(); ++id) specials += uncased_->IsSpecial(id);
  EXPECT_EQ(specials, 5);  // "[unused0]" and the like are not special
}

TEST(TokenizerDecodeTest, EveryCleanUpRuleAsHuggingFaceAppliesIt) {
  auto tok = BertTokenizer::FromTokens(
      {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "it", "'s", "n't", "'m",  "'ve", "'re", "do not",
       ".",     "?",     "!",     ",",     "'",  "x",  "##y", "a b", "can", "##."},
      {});
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->mask_id(), -1);
  const std::vector<std::pair<std::vector<int32_t>, std::string>> cases = {
      {{4, 5}, "it's"},
      {{20, 6}, "##.n't"},
      {{4, 7, 8, 9}, "it'm've're"},
      {{19, 10}, "can don't"},
      {{16, 11, 12, 13, 14}, "x.?!,"},
      {{16, 15, 16}, "x ' x"},
      {{15, 16}, "' x"},
      {{16, 15, 17}, "x 'y"},
      {{10, 10}, "do not don't"},  // the first token is not cleaned up with a space before it
      {{18, 17}, "a by"},
      {{16, 21}, "x"},
      {{5, 4}, "'s it"},
  };
  for (const auto& [ids, text] : cases) {
    EXPECT_EQ((*tok)->Decode(ids, /*skip_special_tokens=*/true), text);
    EXPECT_LE(text.size(), (*tok)->DecodedSizeBound(ids, true));
  }
  EXPECT_EQ((*tok)->Decode({2, 11, 3}, true), ".");
  EXPECT_EQ((*tok)->Decode({2, 11, 3}, false), "[CLS]. [SEP]");
  EXPECT_EQ((*tok)->Decode({1, 2, 0, 3}, true), "");
  EXPECT_EQ((*tok)->Decode({1, 2, 0, 3}, false), "[UNK] [CLS] [PAD] [SEP]");
  EXPECT_EQ((*tok)->DecodedSizeBound({1, 2, 0, 3}, false),
            24u);  // four 5-byte tokens, plus one each
  EXPECT_EQ((*tok)->DecodedSizeBound({1, 2, 0, 3, 4, 21, -1}, true), 3u);  // only "it" is kept
}

// The bound the server reserves before it decodes (DecodedSizeBound) is never short, whatever
// the ids: specials, clean-up tokens next to each other, "##" pieces, ids outside the vocabulary.
TEST(TokenizerDecodeTest, TheSizeBoundHoldsForAnySequence) {
  auto tok = BertTokenizer::FromTokens(
      {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "it", "'s", "n't", "'m",  "'ve", "'re", "do not",
       ".",     "?",     "!",     ",",     "'",  "x",  "##y", "a b", "can", "##.", "[MASK]"},
      {});
  ASSERT_TRUE(tok.ok()) << tok.status();
  std::mt19937 rng(7);
  for (int trial = 0; trial < 20000; ++trial) {
    std::vector<int32_t> ids(rng() % 12);
    for (int32_t& id : ids) id = static_cast<int32_t>(rng() % 25) - 1;  // -1 to 23
    for (bool skip : {true, false}) {
      const std::string text = (*tok)->Decode(ids, skip);
      ASSERT_LE(text.size(), (*tok)->DecodedSizeBound(ids, skip))
          << "skip " << skip << ": " << testing::PrintToString(ids) << " -> \"" << text << "\"";
    }
  }
}

TEST(TokenizerDecodeTest, AnIdWhoseTokenALaterLineRepeatsDecodesToNothing) {
  // As Hugging Face's vocabulary (a map from token to its last id) has it: "##s" is id 6 for
  // Tokenize, and id 4 has no token to decode.
  auto tok =
      BertTokenizer::FromTokens({"[PAD]", "[UNK]", "[CLS]", "[SEP]", "##s", "cat", "##s"}, {});
  ASSERT_TRUE(tok.ok()) << tok.status();
  std::vector<int32_t> ids;
  ASSERT_TRUE((*tok)->Tokenize("cats", &ids).ok());
  EXPECT_THAT(ids, ElementsAre(5, 6));
  EXPECT_EQ((*tok)->Decode({5, 6}, true), "cats");
  EXPECT_EQ((*tok)->Decode({5, 4, 6}, true), "cats");
  EXPECT_EQ((*tok)->Decode({4, 5}, false), "cat");
}

TEST(TokenizerLoadTest, TrailingUnicodeWhiteSpaceIsStrippedAsHuggingFaceStripsIt) {
  // "a" + NBSP, "b" + ideographic space + tab, "c" + zero-width space (not White_Space: kept),
  // "d" + a lone continuation byte (not a character: kept).
  auto tok = BertTokenizer::FromTokens(
      {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "a\u00a0", "b\u3000\t", "c\u200b", "d\x80", "\u2028"},
      {});
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->Token(4), "a");
  EXPECT_EQ((*tok)->Token(5), "b");
  EXPECT_EQ((*tok)->Token(6), "c\u200b");
  EXPECT_EQ((*tok)->Token(7), "d\x80");
  EXPECT_EQ((*tok)->Token(8), "");
  std::vector<int32_t> ids;
  ASSERT_TRUE((*tok)->Tokenize("a b", &ids).ok());
  EXPECT_THAT(ids, ElementsAre(4, 5));
  EXPECT_EQ((*tok)->Decode({4, 5}, true), "a b");
}

}  // namespace
}  // namespace bert
