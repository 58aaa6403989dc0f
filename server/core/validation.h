// Request validation, done before any work. Every failure is INVALID_ARGUMENT (or
// FAILED_PRECONDITION for a head the model cannot produce) with a message naming the
// field and, for per-input problems, the input index: "inputs[3].tokens.input_word_ids[7]:
// 5000 is outside the vocabulary [0, 1024)". Pure functions; thread-safe.
#ifndef BERT_SERVER_CORE_VALIDATION_H_
#define BERT_SERVER_CORE_VALIDATION_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/core/types.h"

namespace bert {

// What validation checks against: the model's shape and the server's limits.
struct RequestLimits {
  int num_layers = 0;
  int vocab_size = 0;
  int type_vocab_size = 0;
  int max_seq_length = 0;  // The model's max_position_embeddings.
  int default_seq_length = 128;
  int max_inputs_per_request = 0;
  bool has_pooler = true;
  int hidden_size = 0;
  int num_labels = 0;              // The classifier's outputs; 0: the model has none.
  bool token_classifier = false;   // It is a token classifier (HEAD_TOKEN_LOGITS, not HEAD_LOGITS).
  int64_t max_response_bytes = 0;  // 0: unchecked.
  // The model's prompts by name (EmbedRequestSpec::prompt_name); null: none.
  const std::map<std::string, std::string>* prompts = nullptr;
};

// The most entries EmbedRequest.layers may have: each layer twice (by its index and by its
// negative one).
inline int MaxLayerEntries(const RequestLimits& limits) { return 2 * limits.num_layers; }

// An Embed request's options after validation.
struct ResolvedOptions {
  int seq_length = 0;
  bool pooled = false;  // HEAD_POOLED
  bool default_head = false;
  bool mean_pooled = false;
  bool cls = false;
  bool logits = false;
  bool token_logits = false;
  bool sequence = false;
  bool encoder_outputs = false;
  std::vector<int> layers_in_order;  // 0-based, as asked (all layers when none asked).
  std::vector<int> layers_sorted;    // Sorted, unique: what the engine must return.
  PaddingMode padding = PaddingMode::kPadToSeqLength;
  OutputDType dtype = OutputDType::kFloat32;
  bool normalize = false;
  int dimensions = 0;    // Of the vector heads: EmbedRequestSpec::dimensions, 0 made hidden_size.
  bool offsets = false;  // EmbedRequestSpec::return_offsets.
  Truncation truncation = Truncation::kTruncate;
  int64_t echoed_bytes = 0;   // EmbedRequestSpec::echoed_bytes.
  int64_t answer_bytes = -1;  // EmbedRequestSpec::answer_bytes.
  std::string prompt;         // The text prompt_name stands for, put in front of text_a.
};

// seq_length 0 -> min(default, max); else it must lie in [2, max].
absl::StatusOr<int> ResolveSeqLength(int seq_length, const RequestLimits& limits);

// The text of the model's prompt `name` (RequestLimits::prompts); INVALID_ARGUMENT naming the
// prompts there are when it has no such prompt.
absl::StatusOr<std::string> ResolvePrompt(const std::string& name, const RequestLimits& limits);

// Checks the request-level fields and every input's static properties (UTF-8, ids, at most
// MaxRequestIds of them in all, lengths of token inputs under TRUNCATION_REJECT). Text length under
// REJECT is only known after tokenization and is checked there.
absl::StatusOr<ResolvedOptions> ValidateEmbedRequest(const EmbedRequestSpec& request,
                                                     const RequestLimits& limits);

// What an Embed answer will take: its tensors for inputs of `num_tokens` real tokens each
// (vectors of limits.hidden_size, logits of limits.num_labels, per row for token logits, and
// offsets), a generous allowance for the message framing, and the bytes it echoes from the
// request. A caller-built answer
// (options.answer_bytes >= 0) takes that many bytes, all counted as framing.
struct AnswerSize {
  int64_t tensor_bytes = 0;
  int64_t framing_bytes = 0;
  int64_t echoed_bytes = 0;
  int64_t total() const { return tensor_bytes + framing_bytes + echoed_bytes; }
};
AnswerSize EstimateAnswerSize(const ResolvedOptions& options, const std::vector<int>& num_tokens,
                              const RequestLimits& limits);

// INVALID_ARGUMENT when the answer would be over limits.max_response_bytes (checked after
// tokenization, before inference, so no work is wasted on an answer that could not be sent).
absl::Status CheckResponseSize(const AnswerSize& size, const RequestLimits& limits);

// A Tokenize request's options after validation.
struct TokenizeOptions {
  int seq_length = 0;
  std::string prompt;  // As in ResolvedOptions.
};

absl::StatusOr<TokenizeOptions> ValidateTokenizeRequest(const TokenizeRequestSpec& request,
                                                        const RequestLimits& limits);

// The most token ids a request may carry in all (Embed's token inputs, each of input_word_ids
// and input_type_ids; Decode's inputs): as many as the longest Embed request computes.
inline int64_t MaxRequestIds(const RequestLimits& limits) {
  return static_cast<int64_t>(limits.max_inputs_per_request) * limits.max_seq_length;
}

// A Decode request: at least one input and at most max_inputs_per_request, at most
// MaxRequestIds ids in all, every id in the vocabulary ("inputs[1].ids[4]: 40000 is outside
// the vocabulary [0, 30522)").
absl::Status ValidateDecodeRequest(const DecodeRequestSpec& request, const RequestLimits& limits);

}  // namespace bert

#endif  // BERT_SERVER_CORE_VALIDATION_H_
