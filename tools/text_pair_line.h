// One line of the offline tools' text input (bert_tokenize, bert_encode --text): a JSON
// object {"text_a": "...", "text_b": "..."}, text_b optional or null.
#ifndef BERT_TOOLS_TEXT_PAIR_LINE_H_
#define BERT_TOOLS_TEXT_PAIR_LINE_H_

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace bert {

struct TextPair {
  std::string text_a;
  std::optional<std::string> text_b;
};

// INVALID_ARGUMENT, with one of these messages: "not valid JSON (or not valid UTF-8)",
// "not a JSON object", "missing string text_a", "text_b is not a string". The JSON parser
// rejects invalid UTF-8 inside strings; the tokenizer checks again.
absl::StatusOr<TextPair> ParseTextPairLine(absl::string_view line);

}  // namespace bert

#endif  // BERT_TOOLS_TEXT_PAIR_LINE_H_
