#include "server/core/validation.h"

#include <map>

#include "gtest/gtest.h"

namespace bert {
namespace {

RequestLimits Limits() {
  RequestLimits l;
  l.num_layers = 4;
  l.vocab_size = 100;
  l.type_vocab_size = 2;
  l.max_seq_length = 64;
  l.default_seq_length = 128;
  l.max_inputs_per_request = 3;
  l.has_pooler = true;
  return l;
}

InputSpec Text(std::string a) {
  InputSpec s;
  s.text_a = std::move(a);
  return s;
}

InputSpec Tokens(std::vector<int32_t> ids, std::vector<int32_t> types = {}) {
  InputSpec s;
  s.is_text = false;
  s.word_ids = std::move(ids);
  s.type_ids = std::move(types);
  return s;
}

void ExpectInvalid(const EmbedRequestSpec& r, const std::string& needle,
                   absl::StatusCode code = absl::StatusCode::kInvalidArgument) {
  auto result = ValidateEmbedRequest(r, Limits());
  ASSERT_FALSE(result.ok()) << needle;
  EXPECT_EQ(result.status().code(), code) << result.status();
  EXPECT_NE(result.status().message().find(needle), absl::string_view::npos)
      << result.status() << " should mention " << needle;
}

TEST(ValidationTest, DefaultsResolve) {
  EmbedRequestSpec r;
  r.inputs.push_back(Text("hello"));
  auto o = ValidateEmbedRequest(r, Limits());
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->seq_length, 64);  // default 128 capped at the model's 64
  EXPECT_TRUE(o->default_head);
  EXPECT_FALSE(o->pooled || o->sequence || o->encoder_outputs || o->mean_pooled);
}

TEST(ValidationTest, LayersResolveNegativeAndKeepOrder) {
  EmbedRequestSpec r;
  r.inputs.push_back(Text("x"));
  r.heads = {Head::kEncoderOutputs};
  r.layers = {-1, 0, 3, 0};
  auto o = ValidateEmbedRequest(r, Limits());
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->layers_in_order, (std::vector<int>{3, 0, 3, 0}));
  EXPECT_EQ(o->layers_sorted, (std::vector<int>{0, 3}));
}

TEST(ValidationTest, EveryFailureNamesItsField) {
  EmbedRequestSpec empty;
  ExpectInvalid(empty, "inputs: empty");

  EmbedRequestSpec many;
  for (int i = 0; i < 4; ++i) many.inputs.push_back(Text("a"));
  ExpectInvalid(many, "4 inputs exceed the limit of 3");

  EmbedRequestSpec utf8;
  utf8.inputs = {Text("ok"), Text("bad \xff")};
  ExpectInvalid(utf8, "inputs[1].text.text_a: invalid UTF-8");

  EmbedRequestSpec utf8b;
  utf8b.inputs = {Text("ok")};
  utf8b.inputs[0].text_b = std::string("\xc0\x80");  // overlong NUL
  ExpectInvalid(utf8b, "inputs[0].text.text_b: invalid UTF-8");

  for (int bad : {1, 65, -3}) {
    EmbedRequestSpec seq;
    seq.inputs = {Text("a")};
    seq.seq_length = bad;
    ExpectInvalid(seq, "seq_length: " + std::to_string(bad) + " is outside [2, 64]");
  }

  EmbedRequestSpec vocab;
  vocab.inputs = {Tokens({1, 2}), Tokens({1, 100, 2})};
  ExpectInvalid(vocab, "inputs[1].tokens.input_word_ids[1]: 100 is outside the vocabulary");

  EmbedRequestSpec negative;
  negative.inputs = {Tokens({-1})};
  ExpectInvalid(negative, "inputs[0].tokens.input_word_ids[0]: -1");

  EmbedRequestSpec types;
  types.inputs = {Tokens({1, 2, 3}, {0, 2, 0})};
  ExpectInvalid(types, "inputs[0].tokens.input_type_ids[1]: 2 is outside the type vocabulary");

  EmbedRequestSpec type_len;
  type_len.inputs = {Tokens({1, 2, 3}, {0, 0})};
  ExpectInvalid(type_len, "inputs[0].tokens.input_type_ids: 2 ids for 3 word ids");

  EmbedRequestSpec empty_tokens;
  empty_tokens.inputs = {Tokens({})};
  ExpectInvalid(empty_tokens, "inputs[0].tokens.input_word_ids: empty");

  EmbedRequestSpec reject;
  reject.inputs = {Tokens(std::vector<int32_t>(10, 5))};
  reject.seq_length = 8;
  reject.truncation = Truncation::kReject;
  ExpectInvalid(reject, "inputs[0].tokens.input_word_ids: 10 tokens exceed seq_length 8");

  EmbedRequestSpec layer;
  layer.inputs = {Text("a")};
  layer.heads = {Head::kEncoderOutputs};
  layer.layers = {0, 4};
  ExpectInvalid(layer, "layers[1]: 4 is outside [-4, 4)");
  layer.layers = {-5};
  ExpectInvalid(layer, "layers[0]: -5 is outside [-4, 4)");
  // Repeats are allowed up to twice as many entries as the model has layers (each repeat
  // is a whole tensor in the answer), heads up to as many as there are.
  layer.layers = {0, 1, 2, 3, -1, -2, -3, -4};
  EXPECT_TRUE(ValidateEmbedRequest(layer, Limits()).ok());
  layer.layers.push_back(0);
  ExpectInvalid(layer, "layers: 9 entries exceed the limit of 8");
  layer.layers = {};
  layer.heads = std::vector<Head>(9, Head::kSequence);
  ExpectInvalid(layer, "heads: 9 entries exceed the limit of 8");
}

TEST(ValidationTest, TruncatePolicyAcceptsLongTokenInputs) {
  EmbedRequestSpec r;
  r.inputs = {Tokens(std::vector<int32_t>(10, 5))};
  r.seq_length = 8;
  EXPECT_TRUE(ValidateEmbedRequest(r, Limits()).ok());
}

TEST(ValidationTest, PooledWithoutPoolerIsFailedPrecondition) {
  RequestLimits limits = Limits();
  limits.has_pooler = false;
  EmbedRequestSpec r;
  r.inputs = {Text("a")};
  auto o = ValidateEmbedRequest(r, limits);  // default head = pooled
  EXPECT_EQ(o.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(o.status().message().find("HEAD_CLS"), absl::string_view::npos) << o.status();
  r.heads = {Head::kMeanPooled, Head::kSequence};
  EXPECT_TRUE(ValidateEmbedRequest(r, limits).ok());
  r.heads = {Head::kCls};  // the [CLS] row needs no pooler
  auto cls = ValidateEmbedRequest(r, limits);
  ASSERT_TRUE(cls.ok()) << cls.status();
  EXPECT_TRUE(cls->cls);
  EXPECT_FALSE(cls->pooled || cls->default_head || cls->mean_pooled || cls->sequence);
}

TEST(ValidationTest, PromptNames) {
  const std::map<std::string, std::string> prompts = {{"query", "query: "},
                                                      {"passage", "passage: "}};
  RequestLimits limits = Limits();
  EmbedRequestSpec r;
  r.inputs = {Text("a"), Text("b")};
  r.prompt_name = "query";
  // A model without prompts.
  auto none = ValidateEmbedRequest(r, limits);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().message(),
            "prompt_name: \"query\" is not one of the model's prompts (it has none)");
  limits.prompts = &prompts;
  auto ok = ValidateEmbedRequest(r, limits);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->prompt, "query: ");
  r.prompt_name = "";
  EXPECT_EQ(ValidateEmbedRequest(r, limits)->prompt, "");
  r.prompt_name = "Query";  // names are exact
  auto unknown = ValidateEmbedRequest(r, limits);
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.status().message(),
            "prompt_name: \"Query\" is not one of the model's prompts (\"passage\", \"query\")");
  // A long name is quoted in part, cut between code points (2-byte 'é' straddles byte 64).
  r.prompt_name = std::string(63, 'x') + "\xc3\xa9" + std::string(100, 'y');
  auto long_name = ValidateEmbedRequest(r, limits);
  ASSERT_FALSE(long_name.ok());
  EXPECT_NE(long_name.status().message().find("\"" + std::string(63, 'x') + "...\""),
            absl::string_view::npos)
      << long_name.status();
  // Token inputs carry their own ids.
  r.prompt_name = "passage";
  r.inputs = {Text("a"), Tokens({101, 7, 102})};
  auto tokens = ValidateEmbedRequest(r, limits);
  ASSERT_FALSE(tokens.ok());
  EXPECT_EQ(tokens.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(tokens.status().message().find("inputs[1]: prompt_name applies to text inputs"),
            absl::string_view::npos)
      << tokens.status();
}

TEST(ValidationTest, TokenizeRequests) {
  TokenizeRequestSpec r;
  EXPECT_EQ(ValidateTokenizeRequest(r, Limits()).status().code(),
            absl::StatusCode::kInvalidArgument);
  r.inputs = {Text("a"), Text("\xfe")};
  auto s = ValidateTokenizeRequest(r, Limits()).status();
  EXPECT_NE(s.message().find("inputs[1].text.text_a"), absl::string_view::npos) << s;
  r.inputs = {Text("a")};
  r.seq_length = 1;
  EXPECT_EQ(ValidateTokenizeRequest(r, Limits()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace bert

namespace bert {
namespace {

TEST(ValidationTest, ResponseSizeIsCheckedAgainstTheMessageLimit) {
  RequestLimits limits = Limits();
  limits.hidden_size = 100;
  // Two 10x100 float32 tensors and their framing (1,024 + 128 per result + 48 per tensor).
  limits.max_response_bytes = 1024 + 2 * (128 + 48) + 2 * 10 * 100 * 4;
  ResolvedOptions o;
  o.seq_length = 10;
  o.sequence = true;
  // Two inputs of 3 and 5 tokens.
  const auto check = [&](const ResolvedOptions& options) {
    return CheckResponseSize(EstimateAnswerSize(options, {3, 5}, limits), limits);
  };
  EXPECT_TRUE(check(o).ok());
  o.pooled = true;  // two more vectors: over
  absl::Status s = check(o);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("message limit"), absl::string_view::npos) << s;
  o.padding = PaddingMode::kTrim;  // 8 rows instead of 20: fits
  EXPECT_TRUE(check(o).ok());
  o.padding = PaddingMode::kPadToSeqLength;
  o.dtype = OutputDType::kFloat16;  // half the bytes: fits
  EXPECT_TRUE(check(o).ok());
  o.echoed_bytes = 2 * 10 * 100 * 2;  // a request_id as long as the tensors: over again
  s = check(o);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find(", 4000 of request_id)"), absl::string_view::npos) << s;
  o.echoed_bytes = 0;
  limits.max_response_bytes = 0;  // unchecked
  o.dtype = OutputDType::kFloat32;
  EXPECT_TRUE(check(o).ok());
}

TEST(ValidationTest, LogitsNeedAClassifierAndCountNumLabelsValues) {
  EmbedRequestSpec request;
  request.inputs = {Text("a")};
  request.heads = {Head::kLogits};
  auto refused = ValidateEmbedRequest(request, Limits());
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.status().message().find("no sequence-classification head"),
            absl::string_view::npos)
      << refused.status();
  RequestLimits limits = Limits();
  limits.hidden_size = 100;
  limits.num_labels = 3;
  request.normalize = true;
  auto options = ValidateEmbedRequest(request, limits);
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_TRUE(options->logits);
  EXPECT_FALSE(options->pooled || options->default_head);
  // Two inputs: 3 float32 logits each, one tensor's framing each.
  const AnswerSize size = EstimateAnswerSize(*options, {4, 9}, limits);
  EXPECT_EQ(size.tensor_bytes, 2 * 3 * 4);
  EXPECT_EQ(size.framing_bytes, 1024 + 2 * (128 + 48));
  options->pooled = true;  // a 100-wide vector more per input
  EXPECT_EQ(EstimateAnswerSize(*options, {4, 9}, limits).tensor_bytes, 2 * (3 + 100) * 4);
}

TEST(ValidationTest, TokenLogitsNeedATokenClassifierAndCountARowOfLabelsPerRow) {
  EmbedRequestSpec request;
  request.inputs = {Text("a"), Text("b")};
  request.heads = {Head::kTokenLogits};
  RequestLimits limits = Limits();
  limits.hidden_size = 100;
  const auto refused = [&](absl::string_view why) {
    auto o = ValidateEmbedRequest(request, limits);
    ASSERT_FALSE(o.ok());
    EXPECT_EQ(o.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_NE(o.status().message().find(why), absl::string_view::npos) << o.status();
  };
  refused("no token-classification head");  // no classifier
  limits.num_labels = 5;
  refused("labels whole inputs: ask for HEAD_LOGITS");  // a sequence classifier
  limits.token_classifier = true;
  auto options = ValidateEmbedRequest(request, limits);
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_TRUE(options->token_logits);
  // Padded to seq_length 8: 8 rows of 5 float32 logits for each input; trimmed: its tokens.
  options->seq_length = 8;
  EXPECT_EQ(EstimateAnswerSize(*options, {4, 9}, limits).tensor_bytes, 2 * 8 * 5 * 4);
  EXPECT_EQ(EstimateAnswerSize(*options, {4, 9}, limits).framing_bytes, 1024 + 2 * (128 + 48));
  options->padding = PaddingMode::kTrim;
  EXPECT_EQ(EstimateAnswerSize(*options, {4, 9}, limits).tensor_bytes, (4 + 9) * 5 * 4);
  // Offsets: two varints of at most 5 bytes per real token, two length prefixes per input.
  options->offsets = true;
  EXPECT_EQ(EstimateAnswerSize(*options, {4, 9}, limits).tensor_bytes,
            (4 + 9) * 5 * 4 + (4 + 9) * 10 + 2 * 10);
  // And a token classifier has no HEAD_LOGITS.
  request.heads = {Head::kLogits};
  refused("labels tokens: ask for HEAD_TOKEN_LOGITS");
}

TEST(ValidationTest, OffsetsAreForTextInputs) {
  EmbedRequestSpec request;
  request.inputs = {Text("a")};
  request.return_offsets = true;
  auto options = ValidateEmbedRequest(request, Limits());
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_TRUE(options->offsets);
  request.inputs.push_back(Tokens({101, 102}));
  auto refused = ValidateEmbedRequest(request, Limits());
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().message(),
            "inputs[1]: return_offsets applies to text inputs; token inputs have no text");
}

TEST(ValidationTest, DimensionsWithinTheHiddenSizeForVectorHeads) {
  RequestLimits limits = Limits();
  limits.hidden_size = 100;
  EmbedRequestSpec request;
  request.inputs = {Text("a")};
  request.heads = {Head::kMeanPooled, Head::kSequence};
  auto options = ValidateEmbedRequest(request, limits);
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->dimensions, 100);  // 0: all
  request.dimensions = 32;
  options = ValidateEmbedRequest(request, limits);
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->dimensions, 32);
  // The vector is 32 wide; the sequence output stays hidden wide.
  options->padding = PaddingMode::kTrim;
  EXPECT_EQ(EstimateAnswerSize(*options, {5}, limits).tensor_bytes, (32 + 5 * 100) * 4);
  request.dimensions = 101;
  auto over = ValidateEmbedRequest(request, limits);
  ASSERT_FALSE(over.ok());
  EXPECT_EQ(over.status().message(),
            "dimensions: 101 is outside [1, 100] (the model's hidden size; 0: all)");
  request.dimensions = -1;
  EXPECT_FALSE(ValidateEmbedRequest(request, limits).ok());
  request.dimensions = 8;
  request.heads = {Head::kSequence, Head::kEncoderOutputs};
  auto no_vector = ValidateEmbedRequest(request, limits);
  ASSERT_FALSE(no_vector.ok());
  EXPECT_EQ(no_vector.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(no_vector.status().message().find("none is asked for"), absl::string_view::npos);
  request.heads = {};  // HEAD_DEFAULT, a vector
  EXPECT_TRUE(ValidateEmbedRequest(request, limits).ok());
}

TEST(ValidationTest, ACallerBuiltAnswerIsCountedAtItsOwnSize) {
  RequestLimits limits = Limits();
  limits.hidden_size = 100;
  limits.num_labels = 1;
  EmbedRequestSpec request;
  request.inputs = {Text("a"), Text("b")};
  request.heads = {Head::kLogits};
  request.echoed_bytes = 50;
  request.answer_bytes = 321;  // e.g. Rerank's ranking
  auto options = ValidateEmbedRequest(request, limits);
  ASSERT_TRUE(options.ok()) << options.status();
  const AnswerSize size = EstimateAnswerSize(*options, {4, 9}, limits);
  EXPECT_EQ(size.total(), 321);
  EXPECT_EQ(size.tensor_bytes, 0);
}

TEST(ValidationTest, TheEchoedRequestIdIsPassedOnForTheSizeCheck) {
  EmbedRequestSpec request;
  request.inputs.emplace_back();
  request.echoed_bytes = 123;
  auto options = ValidateEmbedRequest(request, Limits());
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->echoed_bytes, 123);
}

TEST(ValidationTest, TokenIdsOfAllInputsAreBounded) {
  // At most MaxRequestIds (3 x 64) of each kind in all, whatever the truncation would keep.
  EmbedRequestSpec r;
  r.inputs = {Tokens(std::vector<int32_t>(100, 1)), Text("a text has none"),
              Tokens(std::vector<int32_t>(92, 1))};
  EXPECT_TRUE(ValidateEmbedRequest(r, Limits()).ok());
  r.inputs[2].word_ids.push_back(1);
  EXPECT_EQ(ValidateEmbedRequest(r, Limits()).status().message(),
            "inputs: 193 input_word_ids exceed the limit of 192 in one request");
  r.inputs[2].word_ids.pop_back();
  r.inputs[0].type_ids.assign(193, 0);
  EXPECT_EQ(ValidateEmbedRequest(r, Limits()).status().message(),
            "inputs: 193 input_type_ids exceed the limit of 192 in one request");
}

TEST(ValidationTest, DecodeRequests) {
  DecodeRequestSpec r;
  EXPECT_EQ(ValidateDecodeRequest(r, Limits()).message(),
            "inputs: empty request (at least one input is needed)");
  r.inputs = {{}, {0, 99}};  // an empty sequence is allowed (its text is "")
  EXPECT_TRUE(ValidateDecodeRequest(r, Limits()).ok());
  r.inputs = {{0}, {1, 100}};
  EXPECT_EQ(ValidateDecodeRequest(r, Limits()).message(),
            "inputs[1].ids[1]: 100 is outside the vocabulary [0, 100)");
  r.inputs = {{-5}};
  EXPECT_EQ(ValidateDecodeRequest(r, Limits()).message(),
            "inputs[0].ids[0]: -5 is outside the vocabulary [0, 100)");
  r.inputs.assign(4, {1});
  EXPECT_EQ(ValidateDecodeRequest(r, Limits()).message(), "inputs: 4 inputs exceed the limit of 3");
  // At most max_inputs_per_request x max_seq_length ids in all (3 x 64).
  EXPECT_EQ(MaxRequestIds(Limits()), 192);
  r.inputs = {std::vector<int32_t>(100, 1), std::vector<int32_t>(92, 1)};
  EXPECT_TRUE(ValidateDecodeRequest(r, Limits()).ok());
  r.inputs[1].push_back(1);
  EXPECT_EQ(ValidateDecodeRequest(r, Limits()).message(),
            "inputs: 193 ids exceed the limit of 192 in one request");
}

}  // namespace
}  // namespace bert
