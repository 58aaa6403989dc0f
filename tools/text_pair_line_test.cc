#include "tools/text_pair_line.h"

#include "gtest/gtest.h"

namespace bert {
namespace {

TEST(ParseTextPairLine, TakesTextAAndAnOptionalTextB) {
  absl::StatusOr<TextPair> single = ParseTextPairLine(R"({"text_a": "hello"})");
  ASSERT_TRUE(single.ok()) << single.status();
  EXPECT_EQ(single->text_a, "hello");
  EXPECT_FALSE(single->text_b.has_value());
  absl::StatusOr<TextPair> null_b = ParseTextPairLine(R"({"text_a": "q", "text_b": null})");
  ASSERT_TRUE(null_b.ok()) << null_b.status();
  EXPECT_FALSE(null_b->text_b.has_value());
  absl::StatusOr<TextPair> pair = ParseTextPairLine(R"({"text_b": "p", "text_a": "q", "x": 1})");
  ASSERT_TRUE(pair.ok()) << pair.status();
  EXPECT_EQ(pair->text_a, "q");
  EXPECT_EQ(pair->text_b, "p");
}

TEST(ParseTextPairLine, NamesWhatIsWrong) {
  const std::pair<const char*, const char*> cases[] = {
      {R"({"text_a": "unterminated)", "not valid JSON (or not valid UTF-8)"},
      {"{\"text_a\": \"bad \xff byte\"}", "not valid JSON (or not valid UTF-8)"},
      {R"(["text_a"])", "not a JSON object"},
      {R"({"text_b": "no a"})", "missing string text_a"},
      {R"({"text_a": 3})", "missing string text_a"},
      {R"({"text_a": "a", "text_b": [1]})", "text_b is not a string"},
  };
  for (const auto& [line, message] : cases) {
    absl::StatusOr<TextPair> parsed = ParseTextPairLine(line);
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << line;
    EXPECT_EQ(parsed.status().message(), message) << line;
  }
}

}  // namespace
}  // namespace bert
