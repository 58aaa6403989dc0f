#include "server/core/validation.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/text/utf8.h"
#include "server/util/status_macros.h"

namespace bert {
namespace {

absl::Status CheckText(const InputSpec& input, int index) {
  if (!IsValidUtf8(input.text_a)) {
    return absl::InvalidArgumentError(
        absl::StrCat("inputs[", index, "].text.text_a: invalid UTF-8"));
  }
  if (input.text_b.has_value() && !IsValidUtf8(*input.text_b)) {
    return absl::InvalidArgumentError(
        absl::StrCat("inputs[", index, "].text.text_b: invalid UTF-8"));
  }
  return absl::OkStatus();
}

absl::Status CheckTokens(const InputSpec& input, int index, int seq_length, Truncation truncation,
                         const RequestLimits& limits) {
  const std::string field = absl::StrCat("inputs[", index, "].tokens.");
  if (input.word_ids.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(field, "input_word_ids: empty"));
  }
  for (size_t j = 0; j < input.word_ids.size(); ++j) {
    const int32_t id = input.word_ids[j];
    if (id < 0 || id >= limits.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(field, "input_word_ids[", j, "]: ", id,
                                                     " is outside the vocabulary [0, ",
                                                     limits.vocab_size, ")"));
    }
  }
  if (!input.type_ids.empty() && input.type_ids.size() != input.word_ids.size()) {
    return absl::InvalidArgumentError(absl::StrCat(field, "input_type_ids: ", input.type_ids.size(),
                                                   " ids for ", input.word_ids.size(),
                                                   " word ids (must match or be empty)"));
  }
  for (size_t j = 0; j < input.type_ids.size(); ++j) {
    const int32_t id = input.type_ids[j];
    if (id < 0 || id >= limits.type_vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(field, "input_type_ids[", j, "]: ", id,
                                                     " is outside the type vocabulary [0, ",
                                                     limits.type_vocab_size, ")"));
    }
  }
  if (truncation == Truncation::kReject && static_cast<int>(input.word_ids.size()) > seq_length) {
    return absl::InvalidArgumentError(absl::StrCat(field, "input_word_ids: ", input.word_ids.size(),
                                                   " tokens exceed seq_length ", seq_length,
                                                   " (truncation: REJECT)"));
  }
  return absl::OkStatus();
}

// As the wire check words it (server/grpc/wire.cc), which refuses such requests first.
absl::Status CheckIdCount(int64_t count, const char* ids, const RequestLimits& limits) {
  if (count > MaxRequestIds(limits)) {
    return absl::InvalidArgumentError(absl::StrCat("inputs: ", count, " ", ids,
                                                   " exceed the limit of ", MaxRequestIds(limits),
                                                   " in one request"));
  }
  return absl::OkStatus();
}

absl::Status CheckInputCount(size_t count, const RequestLimits& limits) {
  if (count == 0) {
    return absl::InvalidArgumentError("inputs: empty request (at least one input is needed)");
  }
  if (static_cast<int>(count) > limits.max_inputs_per_request) {
    return absl::InvalidArgumentError(absl::StrCat(
        "inputs: ", count, " inputs exceed the limit of ", limits.max_inputs_per_request));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> ResolvePrompt(const std::string& name, const RequestLimits& limits) {
  if (limits.prompts != nullptr) {
    const auto it = limits.prompts->find(name);
    if (it != limits.prompts->end()) return it->second;
  }
  // The name as the client sent it may be long: quoted in part, cut between code points (the
  // message goes back in a proto string on EmbedStream).
  std::string shown = name;
  if (name.size() > 64) {
    size_t cut = 64;
    while (cut > 0 && (static_cast<unsigned char>(name[cut]) & 0xC0) == 0x80) --cut;
    shown = absl::StrCat(name.substr(0, cut), "...");
  }
  std::vector<std::string> known;
  if (limits.prompts != nullptr) {
    for (const auto& [n, text] : *limits.prompts) known.push_back(absl::StrCat("\"", n, "\""));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("prompt_name: \"", shown, "\" is not one of the model's prompts (",
                   known.empty() ? "it has none" : absl::StrJoin(known, ", "), ")"));
}

absl::StatusOr<int> ResolveSeqLength(int seq_length, const RequestLimits& limits) {
  if (seq_length == 0) return std::min(limits.default_seq_length, limits.max_seq_length);
  if (seq_length < 2 || seq_length > limits.max_seq_length) {
    return absl::InvalidArgumentError(
        absl::StrCat("seq_length: ", seq_length, " is outside [2, ", limits.max_seq_length, "]"));
  }
  return seq_length;
}

absl::StatusOr<ResolvedOptions> ValidateEmbedRequest(const EmbedRequestSpec& request,
                                                     const RequestLimits& limits) {
  RETURN_IF_ERROR(CheckInputCount(request.inputs.size(), limits));
  ResolvedOptions out;
  ASSIGN_OR_RETURN(out.seq_length, ResolveSeqLength(request.seq_length, limits));
  // Repeats add nothing a request needs (a repeated layer repeats its whole tensor in the
  // answer), so the lists are bounded: each head once, each layer twice (by its index and
  // by its negative one: MaxLayerEntries, which the wire check applies too).
  if (request.heads.size() > static_cast<size_t>(kNumHeads)) {
    return absl::InvalidArgumentError(
        absl::StrCat("heads: ", request.heads.size(), " entries exceed the limit of ", kNumHeads));
  }
  if (request.layers.size() > static_cast<size_t>(MaxLayerEntries(limits))) {
    return absl::InvalidArgumentError(absl::StrCat("layers: ", request.layers.size(),
                                                   " entries exceed the limit of ",
                                                   MaxLayerEntries(limits)));
  }
  std::vector<Head> heads = request.heads;
  if (heads.empty()) heads.push_back(Head::kDefault);
  for (Head head : heads) {
    switch (head) {
      case Head::kPooled:
        out.pooled = true;
        break;
      case Head::kDefault:
        out.default_head = true;
        break;
      case Head::kMeanPooled:
        out.mean_pooled = true;
        break;
      case Head::kCls:
        out.cls = true;
        break;
      case Head::kLogits:
        out.logits = true;
        break;
      case Head::kTokenLogits:
        out.token_logits = true;
        break;
      case Head::kSequence:
        out.sequence = true;
        break;
      case Head::kEncoderOutputs:
        out.encoder_outputs = true;
        break;
    }
  }
  if ((out.pooled || out.default_head) && !limits.has_pooler) {
    return absl::FailedPreconditionError(
        "heads: this model has no pooler, so HEAD_POOLED and HEAD_DEFAULT are unavailable "
        "(use HEAD_MEAN_POOLED or HEAD_CLS)");
  }
  if (out.logits && (limits.num_labels == 0 || limits.token_classifier)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "heads: this model has no sequence-classification head ('classifier.weight' and "
        "'classifier.bias' of a BertForSequenceClassification checkpoint), so HEAD_LOGITS is "
        "unavailable",
        limits.num_labels > 0 ? "; its classifier labels tokens: ask for HEAD_TOKEN_LOGITS" : ""));
  }
  if (out.token_logits && (limits.num_labels == 0 || !limits.token_classifier)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "heads: this model has no token-classification head ('classifier.weight' and "
        "'classifier.bias' of a BertForTokenClassification checkpoint), so HEAD_TOKEN_LOGITS "
        "is unavailable",
        limits.num_labels > 0 ? "; its classifier labels whole inputs: ask for HEAD_LOGITS" : ""));
  }
  const int num_layers = limits.num_layers;
  for (size_t j = 0; j < request.layers.size(); ++j) {
    const int layer = request.layers[j];
    if (layer < -num_layers || layer >= num_layers) {
      return absl::InvalidArgumentError(absl::StrCat("layers[", j, "]: ", layer, " is outside [",
                                                     -num_layers, ", ", num_layers, ")"));
    }
    out.layers_in_order.push_back(layer < 0 ? layer + num_layers : layer);
  }
  if (out.layers_in_order.empty()) {
    for (int l = 0; l < num_layers; ++l) out.layers_in_order.push_back(l);
  }
  if (out.encoder_outputs) {
    out.layers_sorted = out.layers_in_order;
    std::sort(out.layers_sorted.begin(), out.layers_sorted.end());
    out.layers_sorted.erase(std::unique(out.layers_sorted.begin(), out.layers_sorted.end()),
                            out.layers_sorted.end());
  }
  if (request.dimensions < 0 || request.dimensions > limits.hidden_size) {
    return absl::InvalidArgumentError(absl::StrCat("dimensions: ", request.dimensions,
                                                   " is outside [1, ", limits.hidden_size,
                                                   "] (the model's hidden size; 0: all)"));
  }
  if (request.dimensions > 0 && !(out.pooled || out.default_head || out.mean_pooled || out.cls)) {
    return absl::InvalidArgumentError(
        "dimensions: applies to the vector heads (pooled, default, mean_pooled, cls), and none "
        "is asked for");
  }
  out.dimensions = request.dimensions > 0 ? request.dimensions : limits.hidden_size;
  out.padding = request.padding;
  out.dtype = request.dtype;
  out.normalize = request.normalize;
  out.truncation = request.truncation;
  out.offsets = request.return_offsets;
  out.echoed_bytes = request.echoed_bytes;
  out.answer_bytes = request.answer_bytes;
  if (!request.prompt_name.empty()) {
    ASSIGN_OR_RETURN(out.prompt, ResolvePrompt(request.prompt_name, limits));
  }
  int64_t word_ids = 0, type_ids = 0;
  for (const InputSpec& input : request.inputs) {
    word_ids += static_cast<int64_t>(input.word_ids.size());
    type_ids += static_cast<int64_t>(input.type_ids.size());
  }
  RETURN_IF_ERROR(CheckIdCount(word_ids, "input_word_ids", limits));
  RETURN_IF_ERROR(CheckIdCount(type_ids, "input_type_ids", limits));
  for (size_t i = 0; i < request.inputs.size(); ++i) {
    const InputSpec& input = request.inputs[i];
    if (input.is_text) {
      RETURN_IF_ERROR(CheckText(input, static_cast<int>(i)));
    } else {
      if (!request.prompt_name.empty()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "inputs[", i, "]: prompt_name applies to text inputs; token inputs carry their own"));
      }
      if (request.return_offsets) {
        return absl::InvalidArgumentError(absl::StrCat(
            "inputs[", i, "]: return_offsets applies to text inputs; token inputs have no text"));
      }
      RETURN_IF_ERROR(
          CheckTokens(input, static_cast<int>(i), out.seq_length, out.truncation, limits));
    }
  }
  return out;
}

AnswerSize EstimateAnswerSize(const ResolvedOptions& options, const std::vector<int>& num_tokens,
                              const RequestLimits& limits) {
  if (options.answer_bytes >= 0) {
    AnswerSize size;
    size.framing_bytes = options.answer_bytes;
    return size;
  }
  const int64_t element = BytesPerElement(options.dtype);
  const int64_t vector = static_cast<int64_t>(limits.hidden_size) * element;
  const int64_t kept = options.dimensions > 0 ? options.dimensions : limits.hidden_size;
  const int64_t vector_head = kept * element;  // (dimensions)
  const int64_t logits = options.logits ? static_cast<int64_t>(limits.num_labels) * element : 0;
  const int64_t row_logits =
      options.token_logits ? static_cast<int64_t>(limits.num_labels) * element : 0;
  const int64_t matrices =
      (options.sequence ? 1 : 0) +
      (options.encoder_outputs ? static_cast<int64_t>(options.layers_in_order.size()) : 0);
  const int64_t vectors = (options.pooled ? 1 : 0) + (options.default_head ? 1 : 0) +
                          (options.mean_pooled ? 1 : 0) + (options.cls ? 1 : 0);
  AnswerSize size;
  for (int tokens : num_tokens) {
    const int64_t rows =
        options.padding == PaddingMode::kPadToSeqLength ? options.seq_length : tokens;
    size.tensor_bytes +=
        matrices * rows * vector + vectors * vector_head + logits + rows * row_logits;
    // Two packed varints of at most 5 bytes per token, and their two length prefixes.
    if (options.offsets) size.tensor_bytes += 10 * static_cast<int64_t>(tokens) + 10;
  }
  // Framing, generously: a tensor's length prefixes, dtype and shape (and a layer's
  // wrapper) take under 48 bytes; a result's timings and counts under 128; the response's
  // own fields under 1,024. (The service also checks the answer's real size before sending.)
  const int64_t inputs = static_cast<int64_t>(num_tokens.size());
  const int64_t tensors =
      matrices + vectors + (options.logits ? 1 : 0) + (options.token_logits ? 1 : 0);
  size.framing_bytes = 1024 + inputs * (128 + 48 * tensors);
  size.echoed_bytes = options.echoed_bytes;
  return size;
}

absl::Status CheckResponseSize(const AnswerSize& size, const RequestLimits& limits) {
  if (limits.max_response_bytes <= 0) return absl::OkStatus();
  if (size.total() > limits.max_response_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the response could take ", size.total(), " bytes (", size.tensor_bytes,
        " of tensors, up to ", size.framing_bytes, " of framing",
        size.echoed_bytes > 0 ? absl::StrCat(", ", size.echoed_bytes, " of request_id") : "",
        "), over the server's ", limits.max_response_bytes,
        "-byte message limit: ask for fewer inputs, heads, layers or dimensions, PADDING_TRIM, "
        "float16/bfloat16, or a shorter request_id"));
  }
  return absl::OkStatus();
}

absl::Status ValidateDecodeRequest(const DecodeRequestSpec& request, const RequestLimits& limits) {
  RETURN_IF_ERROR(CheckInputCount(request.inputs.size(), limits));
  int64_t count = 0;
  for (const std::vector<int32_t>& ids : request.inputs) count += static_cast<int64_t>(ids.size());
  RETURN_IF_ERROR(CheckIdCount(count, "ids", limits));
  for (size_t i = 0; i < request.inputs.size(); ++i) {
    const std::vector<int32_t>& ids = request.inputs[i];
    for (size_t j = 0; j < ids.size(); ++j) {
      if (ids[j] < 0 || ids[j] >= limits.vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat("inputs[", i, "].ids[", j, "]: ", ids[j],
                                                       " is outside the vocabulary [0, ",
                                                       limits.vocab_size, ")"));
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<TokenizeOptions> ValidateTokenizeRequest(const TokenizeRequestSpec& request,
                                                        const RequestLimits& limits) {
  RETURN_IF_ERROR(CheckInputCount(request.inputs.size(), limits));
  TokenizeOptions out;
  ASSIGN_OR_RETURN(out.seq_length, ResolveSeqLength(request.seq_length, limits));
  if (!request.prompt_name.empty()) {
    ASSIGN_OR_RETURN(out.prompt, ResolvePrompt(request.prompt_name, limits));
  }
  for (size_t i = 0; i < request.inputs.size(); ++i) {
    RETURN_IF_ERROR(CheckText(request.inputs[i], static_cast<int>(i)));
  }
  return out;
}

}  // namespace bert
