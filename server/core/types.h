// The request path's own types: what the gRPC layer hands to server/core and what comes
// back. No protobuf here; server/grpc converts both ways.
#ifndef BERT_SERVER_CORE_TYPES_H_
#define BERT_SERVER_CORE_TYPES_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "server/core/admission.h"
#include "server/text/tokenizer.h"

namespace bert {

enum class Head {
  kPooled,
  kSequence,
  kEncoderOutputs,
  kDefault,
  kMeanPooled,
  kCls,
  kLogits,
  kTokenLogits,
};
// How many heads there are: a request names at most this many (each once is enough).
inline constexpr int kNumHeads = 8;
enum class PaddingMode { kPadToSeqLength, kTrim };
enum class Truncation { kTruncate, kReject, kLongestFirst };
enum class OutputDType { kFloat32, kFloat16, kBFloat16 };

int BytesPerElement(OutputDType dtype);

// One input: text (with an optional second segment) or already packed token ids.
struct InputSpec {
  bool is_text = true;
  std::string text_a;
  std::optional<std::string> text_b;
  std::vector<int32_t> word_ids;  // Token inputs.
  std::vector<int32_t> type_ids;  // Token inputs; empty = all 0.
};

// An Embed request as the core sees it. Enum values are already known-valid (the gRPC
// layer rejects unknown ones); ranges (seq_length, layers, ids) are checked by the core.
struct EmbedRequestSpec {
  std::vector<InputSpec> inputs;
  int seq_length = 0;       // 0: the server's default.
  std::vector<Head> heads;  // Empty: {kDefault}.
  std::vector<int> layers;  // Negative counts from the end; empty: all.
  PaddingMode padding = PaddingMode::kPadToSeqLength;
  OutputDType dtype = OutputDType::kFloat32;
  bool normalize = false;
  Truncation truncation = Truncation::kTruncate;
  // Bytes the response repeats from the request (its request_id): they count against the
  // response size limit like the tensors do.
  int64_t echoed_bytes = 0;
  // >= 0: the caller builds an answer of its own from the results (Rerank's ranking), of at
  // most this many bytes, which the byte budget counts instead of the Embed response's
  // estimate (the caller checks it against the message limit; echoed_bytes is then unused).
  int64_t answer_bytes = -1;
  std::string prompt_name;      // One of the model's prompts, for text inputs; empty: none.
  int dimensions = 0;           // The vector heads' leading values kept; 0: all (hidden_size).
  bool return_offsets = false;  // Each text input's token spans in its result.
};

// A dense tensor in the wire layout: row-major little-endian bytes of `dtype`.
struct TensorData {
  OutputDType dtype = OutputDType::kFloat32;
  std::vector<int64_t> shape;
  std::string bytes;
  bool present = false;
};

struct StageTiming {
  int64_t tokenize_us = 0;
  int64_t queue_us = 0;
  int64_t inference_us = 0;
  int64_t total_us = 0;
};

struct InputResult {
  TensorData pooled;
  TensorData sequence;
  std::vector<std::pair<int, TensorData>> layers;  // (0-based layer, [rows, hidden])
  TensorData default_output;
  TensorData mean_pooled;
  TensorData cls;
  TensorData logits;             // [num_labels]
  TensorData token_logits;       // [rows, num_labels]
  std::vector<TokenSpan> spans;  // With return_offsets: one per real token.
  int num_tokens = 0;
  bool truncated = false;
  StageTiming timing;
};

struct EmbedResult {
  std::vector<InputResult> results;
  StageTiming timing;
  // The answer's share of the pipeline's byte budget (PipelineOptions::max_answer_memory_bytes),
  // returned when this is destroyed: whoever holds the answer until it is sent moves it into
  // the request's permit (Admission::Permit::Hold).
  Admission::Bytes memory;
};

// Tokenize-only request/response.
struct TokenizeRequestSpec {
  std::vector<InputSpec> inputs;  // Text inputs only.
  int seq_length = 0;
  Truncation truncation = Truncation::kTruncate;
  std::string prompt_name;  // As in EmbedRequestSpec.
};

// Decode: token id sequences back to text.
struct DecodeRequestSpec {
  std::vector<std::vector<int32_t>> inputs;
  bool keep_special_tokens = false;
};

struct DecodeResult {
  std::vector<std::string> texts;  // One per input.
  // The answer's share of the byte budget (as EmbedResult::memory): its bound, counted before
  // the texts are built.
  Admission::Bytes memory;
};

struct Encoding {
  std::vector<int32_t> word_ids;  // Padded to seq_length.
  std::vector<int32_t> mask;
  std::vector<int32_t> type_ids;
  std::vector<std::string> tokens;
  std::vector<TokenSpan> spans;  // One per real token: bytes of its own text ({0, 0}: special).
  int num_tokens = 0;
  bool truncated = false;
};

}  // namespace bert

#endif  // BERT_SERVER_CORE_TYPES_H_
