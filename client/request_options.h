// The request options and input lines the bundled tools share, parsed from their flag and
// file syntax into bert.v1 messages. Errors are INVALID_ARGUMENT naming the bad value.
#ifndef BERT_CLIENT_REQUEST_OPTIONS_H_
#define BERT_CLIENT_REQUEST_OPTIONS_H_

#include <cstddef>
#include <cstdint>
#include <istream>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "proto/bert/v1/bert_service.pb.h"

namespace bert {

// The command-line spelling of an EmbedRequest's options.
struct EmbedOptionsText {
  std::string heads;    // comma-separated: pooled, sequence, encoder_outputs, default,
                        // mean_pooled, cls, logits, embedding (see model_embedding)
  std::string layers;   // comma-separated layer indices (negative: from the end)
  int seq_length = 0;   // 0: the server's default
  std::string padding;  // pad or trim
  std::string dtype;    // float32, float16 or bfloat16
  // truncate, longest_first or reject; "": truncate, or longest_first for the head logits on a
  // model whose classifier is known (model_classifier), as Hugging Face truncates pairs
  std::string truncation;
  bool normalize = false;
  int dimensions = 0;         // the vector heads' leading values kept (0: all)
  std::string prompt_name;    // one of the model's prompts ("": none; "none": not the default)
  bool token_inputs = false;  // some inputs are token ids, which take no prompt
  // The served model's sentence embedding (GetModelInfo), which the head name "embedding"
  // stands for: its head, normalize if the model normalises, its max_seq_length unless
  // seq_length is set, and its default prompt unless prompt_name is set or token_inputs.
  // Needed only for that name.
  std::optional<v1::SentenceEmbedding> model_embedding;
  // The served model's classifier (GetModelInfo), for the head "logits": its max_seq_length
  // unless seq_length is set (also over model_embedding's), and longest_first truncation
  // unless truncation is set, so that pairs are scored as CrossEncoder scores them. Without it,
  // the server's defaults.
  std::optional<v1::Classifier> model_classifier;
};

// Whether `heads` (EmbedOptionsText::heads) names "embedding": the caller must then fetch
// the model's sentence embedding first.
bool NamesEmbeddingHead(absl::string_view heads);
// Whether `heads` names "logits" (the caller may fetch the model's classifier first).
bool NamesLogitsHead(absl::string_view heads);
// Whether `heads` names `head` (by its flag name, e.g. "token_logits").
bool NamesHead(absl::string_view heads, v1::Head head);

// "truncate", "longest_first" or "reject" as the request's enum; INVALID_ARGUMENT for anything
// else.
absl::StatusOr<v1::Truncation> ParseTruncation(absl::string_view text);

// Sets every option of `request` but its inputs.
absl::Status SetEmbedOptions(const EmbedOptionsText& text, v1::EmbedRequest* request);

// One input line: a JSON string (one text), {"text_a": ..., "text_b": ...} (a pair), or
// {"input_word_ids": [...], "input_type_ids": [...]} (token ids).
absl::StatusOr<v1::Input> ParseInputLine(absl::string_view line);

// Every input of a stream of such lines; blank lines are skipped. Errors name `source` and
// the line number.
absl::StatusOr<std::vector<v1::Input>> ParseInputLines(std::istream& in, absl::string_view source);

// How many items each of the calls that send `item_bytes.size()` items in order takes: at
// most `max_items` (>= 1) items and, but for an item larger than that alone (sent by itself,
// for the server to refuse with its reason), at most `max_bytes` bytes of items (0: no byte
// limit). Empty for no items.
std::vector<size_t> SplitIntoCalls(const std::vector<size_t>& item_bytes, size_t max_items,
                                   uint64_t max_bytes);

}  // namespace bert

#endif  // BERT_CLIENT_REQUEST_OPTIONS_H_
