#include "client/request_options.h"

#include <limits>
#include <map>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "nlohmann/json.hpp"

namespace bert {
namespace {

using json = nlohmann::json;

// A head's flag name, also taken as the proto's enum name (HEAD_POOLED) or its output's field
// name (pooled_output, cls_output; default_output), in any case: "pooled".
std::string HeadFlagName(absl::string_view name) {
  const std::string h = absl::AsciiStrToLower(absl::StripAsciiWhitespace(name));
  static const auto* const kOtherNames = new std::map<std::string, std::string>{
      {"head_pooled", "pooled"},
      {"pooled_output", "pooled"},
      {"head_sequence", "sequence"},
      {"sequence_output", "sequence"},
      {"head_encoder_outputs", "encoder_outputs"},
      {"head_default", "default"},
      {"default_output", "default"},
      {"head_mean_pooled", "mean_pooled"},
      {"mean_pooled_output", "mean_pooled"},
      {"head_cls", "cls"},
      {"cls_output", "cls"},
      {"head_logits", "logits"},
      {"head_token_logits", "token_logits"},
  };
  const auto other = kOtherNames->find(h);
  return other == kOtherNames->end() ? h : other->second;
}

absl::StatusOr<v1::Head> ParseHead(absl::string_view name) {
  const std::string h = HeadFlagName(name);
  if (h == "pooled") return v1::HEAD_POOLED;
  if (h == "sequence") return v1::HEAD_SEQUENCE;
  if (h == "encoder_outputs") return v1::HEAD_ENCODER_OUTPUTS;
  if (h == "default") return v1::HEAD_DEFAULT;
  if (h == "mean_pooled") return v1::HEAD_MEAN_POOLED;
  if (h == "cls") return v1::HEAD_CLS;
  if (h == "logits") return v1::HEAD_LOGITS;
  if (h == "token_logits") return v1::HEAD_TOKEN_LOGITS;
  return absl::InvalidArgumentError(
      absl::StrCat("--heads: unknown head \"", absl::StripAsciiWhitespace(name),
                   "\" (one of pooled, sequence, encoder_outputs, default, mean_pooled, cls, "
                   "logits, token_logits, embedding)"));
}

bool IsEmbeddingHead(absl::string_view name) { return HeadFlagName(name) == "embedding"; }

// A JSON array of integers as repeated int32 field values.
absl::Status AppendIds(const json& ids, const char* field,
                       google::protobuf::RepeatedField<int32_t>* out) {
  if (!ids.is_array()) return absl::InvalidArgumentError(absl::StrCat(field, ": not an array"));
  for (const json& id : ids) {
    // Unsigned values are read as unsigned: above INT64_MAX, get<int64_t> would wrap.
    const bool in_range =
        id.is_number_unsigned()
            ? id.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<int32_t>::max())
            : id.is_number_integer() && id.get<int64_t>() >= std::numeric_limits<int32_t>::min() &&
                  id.get<int64_t>() <= std::numeric_limits<int32_t>::max();
    if (!in_range) {
      return absl::InvalidArgumentError(absl::StrCat(field, ": not a 32-bit integer: ", id.dump()));
    }
    out->Add(static_cast<int32_t>(id.get<int64_t>()));
  }
  return absl::OkStatus();
}

}  // namespace

bool NamesEmbeddingHead(absl::string_view heads) {
  for (absl::string_view name : absl::StrSplit(heads, ',', absl::SkipWhitespace())) {
    if (IsEmbeddingHead(name)) return true;
  }
  return false;
}

bool NamesHead(absl::string_view heads, v1::Head wanted) {
  for (absl::string_view name : absl::StrSplit(heads, ',', absl::SkipWhitespace())) {
    absl::StatusOr<v1::Head> head = ParseHead(name);
    if (head.ok() && *head == wanted) return true;
  }
  return false;
}

bool NamesLogitsHead(absl::string_view heads) { return NamesHead(heads, v1::HEAD_LOGITS); }

absl::Status SetEmbedOptions(const EmbedOptionsText& text, v1::EmbedRequest* request) {
  int seq_length = text.seq_length;
  std::string prompt_name = text.prompt_name;
  std::string truncation_text = text.truncation.empty() ? "truncate" : text.truncation;
  bool logits = false;
  for (absl::string_view name : absl::StrSplit(text.heads, ',', absl::SkipWhitespace())) {
    if (IsEmbeddingHead(name)) {
      if (!text.model_embedding.has_value()) {
        return absl::FailedPreconditionError(
            "head embedding: the served model's sentence embedding is not known (GetModelInfo)");
      }
      const v1::SentenceEmbedding& model = *text.model_embedding;
      if (model.head() == v1::HEAD_UNSPECIFIED) {
        const std::string why =
            model.note().empty() ? "the server reports none: an older server?" : model.note();
        return absl::FailedPreconditionError(absl::StrCat(
            "head embedding: the model's files name no sentence embedding that a head computes (",
            why, "); ask for mean_pooled or cls"));
      }
      request->add_heads(model.head());
      if (model.normalize()) request->set_normalize(true);
      // And the model's truncation and default prompt, unless the caller set them.
      if (text.seq_length == 0) seq_length = static_cast<int>(model.max_seq_length());
      if (text.prompt_name.empty() && !text.token_inputs) {
        prompt_name = model.default_prompt_name();
      }
      continue;
    }
    absl::StatusOr<v1::Head> head = ParseHead(name);
    if (!head.ok()) return head.status();
    request->add_heads(*head);
    logits |= *head == v1::HEAD_LOGITS;
  }
  // The classifier's length and truncation, unless the caller set them (before the sentence
  // embedding's, when both are asked for: the pairs a classifier scores are the longer inputs).
  // (An older server reports no length: 0.)
  if (logits && text.model_classifier.has_value()) {
    if (text.seq_length == 0 && text.model_classifier->max_seq_length() > 0) {
      seq_length = static_cast<int>(text.model_classifier->max_seq_length());
    }
    if (text.truncation.empty()) truncation_text = "longest_first";
  }
  for (absl::string_view part : absl::StrSplit(text.layers, ',', absl::SkipWhitespace())) {
    int layer;
    if (!absl::SimpleAtoi(part, &layer)) {
      return absl::InvalidArgumentError(absl::StrCat("bad layer index ", part));
    }
    request->add_layers(layer);
  }
  if (text.seq_length < 0) return absl::InvalidArgumentError("seq_length must be >= 0");
  request->set_seq_length(seq_length);
  if (text.padding == "trim") {
    request->set_padding(v1::PADDING_TRIM);
  } else if (text.padding == "pad") {
    request->set_padding(v1::PADDING_PAD_TO_SEQ_LENGTH);
  } else {
    return absl::InvalidArgumentError("padding: pad or trim");
  }
  if (text.dtype == "float32") {
    request->set_output_dtype(v1::DATA_TYPE_FLOAT32);
  } else if (text.dtype == "float16") {
    request->set_output_dtype(v1::DATA_TYPE_FLOAT16);
  } else if (text.dtype == "bfloat16") {
    request->set_output_dtype(v1::DATA_TYPE_BFLOAT16);
  } else {
    return absl::InvalidArgumentError("dtype: float32, float16 or bfloat16");
  }
  absl::StatusOr<v1::Truncation> truncation = ParseTruncation(truncation_text);
  if (!truncation.ok()) return truncation.status();
  request->set_truncation(*truncation);
  // The embedding head may have asked for it already.
  request->set_normalize(request->normalize() || text.normalize);
  request->set_prompt_name(prompt_name == "none" ? "" : prompt_name);
  if (text.dimensions < 0) return absl::InvalidArgumentError("dimensions must be >= 0");
  request->set_dimensions(text.dimensions);
  return absl::OkStatus();
}

absl::StatusOr<v1::Truncation> ParseTruncation(absl::string_view text) {
  if (text == "reject") return v1::TRUNCATION_REJECT;
  if (text == "truncate") return v1::TRUNCATION_TRUNCATE;
  if (text == "longest_first") return v1::TRUNCATION_LONGEST_FIRST;
  return absl::InvalidArgumentError("truncation: truncate, longest_first or reject");
}

absl::StatusOr<v1::Input> ParseInputLine(absl::string_view line) {
  const json j = json::parse(line.begin(), line.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return absl::InvalidArgumentError(
        "not valid JSON (each line one input: \"a text\" in quotes, {\"text_a\": ..., "
        "\"text_b\": ...} or {\"input_word_ids\": [...]}; texts may also be arguments)");
  }
  v1::Input input;
  if (j.is_string()) {
    input.mutable_text()->set_text_a(j.get<std::string>());
    return input;
  }
  if (j.is_object() && j.contains("input_word_ids")) {
    v1::TokenInput* tokens = input.mutable_tokens();
    absl::Status status =
        AppendIds(j["input_word_ids"], "input_word_ids", tokens->mutable_input_word_ids());
    if (status.ok() && j.contains("input_type_ids")) {
      status = AppendIds(j["input_type_ids"], "input_type_ids", tokens->mutable_input_type_ids());
    }
    if (!status.ok()) return status;
    return input;
  }
  if (j.is_object() && j.contains("text_a")) {
    if (!j["text_a"].is_string()) return absl::InvalidArgumentError("text_a: not a string");
    input.mutable_text()->set_text_a(j["text_a"].get<std::string>());
    if (j.contains("text_b")) {
      if (!j["text_b"].is_string()) return absl::InvalidArgumentError("text_b: not a string");
      input.mutable_text()->set_text_b(j["text_b"].get<std::string>());
    }
    return input;
  }
  return absl::InvalidArgumentError(
      "expected a JSON string or an object with text_a or input_word_ids");
}

absl::StatusOr<std::vector<v1::Input>> ParseInputLines(std::istream& in, absl::string_view source) {
  std::vector<v1::Input> inputs;
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    absl::StatusOr<v1::Input> input = ParseInputLine(line);
    if (!input.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, " line ", number, ": ", input.status().message()));
    }
    inputs.push_back(*std::move(input));
  }
  return inputs;
}

std::vector<size_t> SplitIntoCalls(const std::vector<size_t>& item_bytes, size_t max_items,
                                   uint64_t max_bytes) {
  std::vector<size_t> calls;
  size_t items = 0;
  uint64_t bytes = 0;
  for (const size_t size : item_bytes) {
    if (items > 0 && (items == max_items || (max_bytes > 0 && bytes + size > max_bytes))) {
      calls.push_back(items);
      items = 0;
      bytes = 0;
    }
    ++items;
    bytes += size;
  }
  if (items > 0) calls.push_back(items);
  return calls;
}

}  // namespace bert
