#include "tools/text_pair_line.h"

#include "absl/status/status.h"
#include "nlohmann/json.hpp"

namespace bert {

absl::StatusOr<TextPair> ParseTextPairLine(absl::string_view line) {
  using json = nlohmann::json;
  const json object = json::parse(line.begin(), line.end(), nullptr, /*allow_exceptions=*/false);
  if (object.is_discarded()) {
    return absl::InvalidArgumentError("not valid JSON (or not valid UTF-8)");
  }
  if (!object.is_object()) return absl::InvalidArgumentError("not a JSON object");
  const auto a = object.find("text_a");
  if (a == object.end() || !a->is_string()) {
    return absl::InvalidArgumentError("missing string text_a");
  }
  TextPair pair;
  pair.text_a = a->get<std::string>();
  const auto b = object.find("text_b");
  if (b != object.end() && !b->is_null()) {
    if (!b->is_string()) return absl::InvalidArgumentError("text_b is not a string");
    pair.text_b = b->get<std::string>();
  }
  return pair;
}

}  // namespace bert
