#include "server/text/tokenizer.h"

#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/text/packer.h"

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
  static std::vector<std::string> Uncased(absl::string_view text) { return Tokens(*uncased_, text); }

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
  for (const auto& [text, expected] : std::vector<std::pair<std::string, int>>{
           {"Please subscribe to this newsletter", 8},
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

}  // namespace
}  // namespace bert
