#include "server/grpc/convert.h"

#include <algorithm>
#include <cstring>
#include <functional>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/core/rerank.h"

namespace bert {
namespace {

absl::Status UnknownEnum(absl::string_view field, int value) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": unknown value ", value));
}

absl::StatusOr<OutputDType> DTypeFromProto(int value, absl::string_view field) {
  switch (value) {
    case v1::DATA_TYPE_UNSPECIFIED:
    case v1::DATA_TYPE_FLOAT32:
      return OutputDType::kFloat32;
    case v1::DATA_TYPE_FLOAT16:
      return OutputDType::kFloat16;
    case v1::DATA_TYPE_BFLOAT16:
      return OutputDType::kBFloat16;
    default:
      return UnknownEnum(field, value);
  }
}

absl::StatusOr<Truncation> TruncationFromProto(int value) {
  switch (value) {
    case v1::TRUNCATION_UNSPECIFIED:
    case v1::TRUNCATION_TRUNCATE:
      return Truncation::kTruncate;
    case v1::TRUNCATION_REJECT:
      return Truncation::kReject;
    case v1::TRUNCATION_LONGEST_FIRST:
      return Truncation::kLongestFirst;
    default:
      return UnknownEnum("truncation", value);
  }
}

void MoveTensor(TensorData tensor, v1::Tensor* out) {
  out->set_dtype(ToProtoDType(tensor.dtype));
  for (int64_t d : tensor.shape) out->add_shape(d);
  out->set_data(std::move(tensor.bytes));
}

void FillTiming(const StageTiming& t, v1::Timing* out) {
  out->set_tokenize_us(t.tokenize_us);
  out->set_queue_us(t.queue_us);
  out->set_inference_us(t.inference_us);
  out->set_total_us(t.total_us);
}

InputSpec TextFromProto(const v1::TextInput& text) {
  InputSpec spec;
  spec.is_text = true;
  spec.text_a = text.text_a();
  if (text.has_text_b()) spec.text_b = text.text_b();
  return spec;
}

// Each span's begin and end, into a result's or an encoding's token_starts and token_ends.
void AddSpans(const std::vector<TokenSpan>& spans,
              google::protobuf::RepeatedField<uint32_t>* starts,
              google::protobuf::RepeatedField<uint32_t>* ends) {
  starts->Reserve(static_cast<int>(spans.size()));
  ends->Reserve(static_cast<int>(spans.size()));
  for (const TokenSpan& span : spans) {
    starts->Add(span.begin);
    ends->Add(span.end);
  }
}

}  // namespace

v1::DataType ToProtoDType(OutputDType dtype) {
  switch (dtype) {
    case OutputDType::kFloat32:
      return v1::DATA_TYPE_FLOAT32;
    case OutputDType::kFloat16:
      return v1::DATA_TYPE_FLOAT16;
    case OutputDType::kBFloat16:
      return v1::DATA_TYPE_BFLOAT16;
  }
  return v1::DATA_TYPE_FLOAT32;
}

absl::StatusOr<EmbedRequestSpec> FromProto(const v1::EmbedRequest& request) {
  EmbedRequestSpec spec;
  spec.inputs.reserve(request.inputs_size());
  for (int i = 0; i < request.inputs_size(); ++i) {
    const v1::Input& input = request.inputs(i);
    switch (input.kind_case()) {
      case v1::Input::kText:
        spec.inputs.push_back(TextFromProto(input.text()));
        break;
      case v1::Input::kTokens: {
        InputSpec s;
        s.is_text = false;
        s.word_ids.assign(input.tokens().input_word_ids().begin(),
                          input.tokens().input_word_ids().end());
        s.type_ids.assign(input.tokens().input_type_ids().begin(),
                          input.tokens().input_type_ids().end());
        spec.inputs.push_back(std::move(s));
        break;
      }
      default:
        return absl::InvalidArgumentError(
            absl::StrCat("inputs[", i, "]: neither text nor tokens is set"));
    }
  }
  if (request.seq_length() > (1u << 30)) {
    return absl::InvalidArgumentError(
        absl::StrCat("seq_length: ", request.seq_length(), " is out of range"));
  }
  spec.seq_length = static_cast<int>(request.seq_length());
  for (int j = 0; j < request.heads_size(); ++j) {
    const int head = request.heads(j);
    switch (head) {
      case v1::HEAD_POOLED:
        spec.heads.push_back(Head::kPooled);
        break;
      case v1::HEAD_SEQUENCE:
        spec.heads.push_back(Head::kSequence);
        break;
      case v1::HEAD_ENCODER_OUTPUTS:
        spec.heads.push_back(Head::kEncoderOutputs);
        break;
      case v1::HEAD_DEFAULT:
        spec.heads.push_back(Head::kDefault);
        break;
      case v1::HEAD_MEAN_POOLED:
        spec.heads.push_back(Head::kMeanPooled);
        break;
      case v1::HEAD_CLS:
        spec.heads.push_back(Head::kCls);
        break;
      case v1::HEAD_LOGITS:
        spec.heads.push_back(Head::kLogits);
        break;
      case v1::HEAD_TOKEN_LOGITS:
        spec.heads.push_back(Head::kTokenLogits);
        break;
      default:
        return UnknownEnum(absl::StrCat("heads[", j, "]"), head);
    }
  }
  spec.layers.assign(request.layers().begin(), request.layers().end());
  switch (request.padding()) {
    case v1::PADDING_UNSPECIFIED:
    case v1::PADDING_PAD_TO_SEQ_LENGTH:
      spec.padding = PaddingMode::kPadToSeqLength;
      break;
    case v1::PADDING_TRIM:
      spec.padding = PaddingMode::kTrim;
      break;
    default:
      return UnknownEnum("padding", request.padding());
  }
  auto dtype = DTypeFromProto(request.output_dtype(), "output_dtype");
  if (!dtype.ok()) return dtype.status();
  spec.dtype = *dtype;
  spec.normalize = request.normalize();
  auto truncation = TruncationFromProto(request.truncation());
  if (!truncation.ok()) return truncation.status();
  spec.truncation = *truncation;
  spec.echoed_bytes = static_cast<int64_t>(request.request_id().size());
  spec.prompt_name = request.prompt_name();
  if (request.dimensions() > (1u << 30)) {
    return absl::InvalidArgumentError(
        absl::StrCat("dimensions: ", request.dimensions(), " is out of range"));
  }
  spec.dimensions = static_cast<int>(request.dimensions());
  spec.return_offsets = request.return_offsets();
  return spec;
}

absl::StatusOr<TokenizeRequestSpec> FromProto(const v1::TokenizeRequest& request) {
  TokenizeRequestSpec spec;
  for (const v1::TextInput& text : request.inputs()) spec.inputs.push_back(TextFromProto(text));
  if (request.seq_length() > (1u << 30)) {
    return absl::InvalidArgumentError(
        absl::StrCat("seq_length: ", request.seq_length(), " is out of range"));
  }
  spec.seq_length = static_cast<int>(request.seq_length());
  auto truncation = TruncationFromProto(request.truncation());
  if (!truncation.ok()) return truncation.status();
  spec.truncation = *truncation;
  spec.prompt_name = request.prompt_name();
  return spec;
}

DecodeRequestSpec FromProto(const v1::DecodeRequest& request) {
  DecodeRequestSpec spec;
  spec.inputs.reserve(request.inputs_size());
  for (const v1::TokenIds& input : request.inputs()) {
    spec.inputs.emplace_back(input.ids().begin(), input.ids().end());
  }
  spec.keep_special_tokens = request.keep_special_tokens();
  return spec;
}

absl::StatusOr<EmbedRequestSpec> EmbedSpecForRerank(const v1::RerankRequest& request,
                                                    int default_seq_length,
                                                    uint64_t max_request_bytes) {
  if (request.texts().empty()) {
    return absl::InvalidArgumentError("texts: at least one text to rank is needed");
  }
  const uint64_t repeats = static_cast<uint64_t>(request.texts_size()) - 1;
  const uint64_t expanded = request.ByteSizeLong() + repeats * request.query().size();
  if (max_request_bytes > 0 && expanded > max_request_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the query (", request.query().size(), " bytes) paired with each of the ",
        request.texts_size(), " texts makes ", expanded, " bytes, over the server's ",
        max_request_bytes, "-byte request limit: send fewer texts or a shorter query"));
  }
  if (request.seq_length() > (1u << 30)) {
    return absl::InvalidArgumentError(
        absl::StrCat("seq_length: ", request.seq_length(), " is out of range"));
  }
  EmbedRequestSpec spec;
  spec.inputs.reserve(request.texts_size());
  for (const std::string& text : request.texts()) {
    InputSpec pair;
    pair.text_a = request.query();
    pair.text_b = text;
    spec.inputs.push_back(std::move(pair));
  }
  spec.seq_length =
      request.seq_length() == 0 ? default_seq_length : static_cast<int>(request.seq_length());
  spec.heads = {Head::kLogits};
  spec.dtype = OutputDType::kFloat32;
  if (request.truncation() == v1::TRUNCATION_UNSPECIFIED) {
    spec.truncation = Truncation::kLongestFirst;
  } else {
    auto truncation = TruncationFromProto(request.truncation());
    if (!truncation.ok()) return truncation.status();
    spec.truncation = *truncation;
  }
  spec.answer_bytes = RerankAnswerBound(request);
  return spec;
}

int64_t RerankAnswerBound(const v1::RerankRequest& request) {
  const int64_t texts = request.texts_size();
  const int64_t ranked = request.top_n() > 0 ? std::min<int64_t>(request.top_n(), texts) : texts;
  // A RankedText without its text: its tag and a one-byte length, index (a tag and up to 5
  // bytes), score (5), num_tokens (6) and truncated (2): at most 21 bytes. A text adds its tag
  // and length (6) and its bytes, and can lengthen the entry's length by 4. The response's
  // request_id framing (6), score_function (9) and timing (46): under 64.
  int64_t bound = 64 + static_cast<int64_t>(request.request_id().size()) + 21 * ranked;
  if (request.return_text()) {  // the longest texts that could be ranked
    std::vector<int64_t> sizes;
    sizes.reserve(texts);
    for (const std::string& text : request.texts()) sizes.push_back(text.size());
    std::partial_sort(sizes.begin(), sizes.begin() + ranked, sizes.end(), std::greater<>());
    for (int64_t i = 0; i < ranked; ++i) bound += 10 + sizes[i];
  }
  return bound;
}

void ToRerankResponse(const EmbedResult& result, const v1::RerankRequest& request,
                      ScoreFunction function, v1::RerankResponse* response) {
  std::vector<float> scores;
  scores.reserve(result.results.size());
  for (const InputResult& r : result.results) {
    float logit = std::numeric_limits<float>::quiet_NaN();  // (a logits head always comes)
    if (r.logits.present && r.logits.bytes.size() >= sizeof(float)) {
      std::memcpy(&logit, r.logits.bytes.data(), sizeof(float));  // float32, little-endian
    }
    scores.push_back(RerankScore(function, logit));
  }
  for (int i : RankByScore(scores, static_cast<int>(std::min<uint32_t>(
                                       request.top_n(), std::numeric_limits<int>::max())))) {
    v1::RankedText* ranked = response->add_ranked();
    ranked->set_index(i);
    ranked->set_score(scores[i]);
    if (request.return_text()) ranked->set_text(request.texts(i));
    ranked->set_num_tokens(result.results[i].num_tokens);
    ranked->set_truncated(result.results[i].truncated);
  }
  response->set_request_id(request.request_id());
  response->set_score_function(ScoreFunctionName(function));
  FillTiming(result.timing, response->mutable_timing());
}

void ToProto(EmbedResult result, v1::EmbedResponse* response) {
  for (InputResult& r : result.results) {
    v1::EmbedResult* out = response->add_results();
    if (r.pooled.present) MoveTensor(std::move(r.pooled), out->mutable_pooled_output());
    if (r.sequence.present) MoveTensor(std::move(r.sequence), out->mutable_sequence_output());
    for (auto& [layer, tensor] : r.layers) {
      v1::LayerOutput* lo = out->add_encoder_outputs();
      lo->set_layer(layer);
      MoveTensor(std::move(tensor), lo->mutable_output());
    }
    if (r.default_output.present) {
      MoveTensor(std::move(r.default_output), out->mutable_default_output());
    }
    if (r.mean_pooled.present) {
      MoveTensor(std::move(r.mean_pooled), out->mutable_mean_pooled_output());
    }
    if (r.cls.present) MoveTensor(std::move(r.cls), out->mutable_cls_output());
    if (r.logits.present) MoveTensor(std::move(r.logits), out->mutable_logits());
    if (r.token_logits.present) {
      MoveTensor(std::move(r.token_logits), out->mutable_token_logits());
    }
    AddSpans(r.spans, out->mutable_token_starts(), out->mutable_token_ends());
    out->set_num_tokens(r.num_tokens);
    out->set_truncated(r.truncated);
    FillTiming(r.timing, out->mutable_timing());
  }
  FillTiming(result.timing, response->mutable_timing());
}

void ToProto(std::vector<Encoding> encodings, v1::TokenizeResponse* response) {
  for (Encoding& e : encodings) {
    v1::Encoding* out = response->add_encodings();
    out->mutable_input_word_ids()->Add(e.word_ids.begin(), e.word_ids.end());
    out->mutable_input_mask()->Add(e.mask.begin(), e.mask.end());
    out->mutable_input_type_ids()->Add(e.type_ids.begin(), e.type_ids.end());
    for (std::string& token : e.tokens) out->add_tokens(std::move(token));
    AddSpans(e.spans, out->mutable_token_starts(), out->mutable_token_ends());
    out->set_num_tokens(e.num_tokens);
    out->set_truncated(e.truncated);
  }
}

void ToProto(std::vector<std::string> texts, v1::DecodeResponse* response) {
  response->mutable_texts()->Reserve(static_cast<int>(texts.size()));
  for (std::string& text : texts) response->add_texts(std::move(text));
}

}  // namespace bert
