#include "server/grpc/convert.h"

#include <climits>
#include <cmath>
#include <cstdint>
#include <random>

#include "gtest/gtest.h"

namespace bert {
namespace {

TEST(ConvertTest, EmbedRequestFields) {
  v1::EmbedRequest r;
  r.add_inputs()->mutable_text()->set_text_a("a");
  auto* pair = r.add_inputs()->mutable_text();
  pair->set_text_a("b");
  pair->set_text_b("");
  auto* tokens = r.add_inputs()->mutable_tokens();
  tokens->add_input_word_ids(101);
  tokens->add_input_word_ids(102);
  r.set_seq_length(16);
  r.add_heads(v1::HEAD_SEQUENCE);
  r.add_heads(v1::HEAD_MEAN_POOLED);
  r.add_heads(v1::HEAD_CLS);
  r.add_heads(v1::HEAD_LOGITS);
  r.add_layers(-1);
  r.set_padding(v1::PADDING_TRIM);
  r.set_output_dtype(v1::DATA_TYPE_BFLOAT16);
  r.set_normalize(true);
  r.set_truncation(v1::TRUNCATION_REJECT);
  r.set_request_id("seven!!");
  auto spec = FromProto(r);
  ASSERT_TRUE(spec.ok()) << spec.status();
  ASSERT_EQ(spec->inputs.size(), 3u);
  EXPECT_FALSE(spec->inputs[0].text_b.has_value());
  ASSERT_TRUE(spec->inputs[1].text_b.has_value());  // set to "" still makes a pair
  EXPECT_FALSE(spec->inputs[2].is_text);
  EXPECT_EQ(spec->inputs[2].word_ids, (std::vector<int32_t>{101, 102}));
  EXPECT_EQ(spec->seq_length, 16);
  EXPECT_EQ(spec->heads,
            (std::vector<Head>{Head::kSequence, Head::kMeanPooled, Head::kCls, Head::kLogits}));
  EXPECT_EQ(spec->layers, std::vector<int>{-1});
  EXPECT_EQ(spec->padding, PaddingMode::kTrim);
  EXPECT_EQ(spec->dtype, OutputDType::kBFloat16);
  EXPECT_TRUE(spec->normalize);
  EXPECT_EQ(spec->truncation, Truncation::kReject);
  EXPECT_EQ(spec->echoed_bytes, 7);  // the request_id counts against the response size limit
}

TEST(ConvertTest, UnknownEnumsAndEmptyInputsAreInvalid) {
  {
    v1::EmbedRequest r;
    r.add_inputs()->mutable_text()->set_text_a("a");
    r.add_heads(v1::HEAD_POOLED);
    r.add_heads(static_cast<v1::Head>(42));
    auto s = FromProto(r);
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(s.status().message().find("heads[1]: unknown value 42"), std::string::npos);
  }
  {
    v1::EmbedRequest r;
    r.add_inputs()->mutable_text()->set_text_a("a");
    r.add_heads(v1::HEAD_UNSPECIFIED);
    EXPECT_EQ(FromProto(r).status().code(), absl::StatusCode::kInvalidArgument);
  }
  {
    v1::EmbedRequest r;
    r.add_inputs()->mutable_text()->set_text_a("a");
    r.set_padding(static_cast<v1::Padding>(9));
    EXPECT_NE(FromProto(r).status().message().find("padding"), std::string::npos);
  }
  {
    v1::EmbedRequest r;
    r.add_inputs()->mutable_text()->set_text_a("a");
    r.set_output_dtype(static_cast<v1::DataType>(7));
    EXPECT_NE(FromProto(r).status().message().find("output_dtype"), std::string::npos);
  }
  {
    v1::EmbedRequest r;
    r.add_inputs()->mutable_text()->set_text_a("a");
    r.set_truncation(static_cast<v1::Truncation>(4));
    EXPECT_NE(FromProto(r).status().message().find("truncation: unknown value 4"),
              std::string::npos);
    r.set_truncation(v1::TRUNCATION_LONGEST_FIRST);
    ASSERT_TRUE(FromProto(r).ok());
    EXPECT_EQ(FromProto(r)->truncation, Truncation::kLongestFirst);
    v1::TokenizeRequest t;
    t.add_inputs()->set_text_a("a");
    t.set_truncation(v1::TRUNCATION_LONGEST_FIRST);
    EXPECT_EQ(FromProto(t)->truncation, Truncation::kLongestFirst);
  }
  {
    v1::EmbedRequest r;
    r.add_inputs();  // neither text nor tokens
    EXPECT_NE(FromProto(r).status().message().find("inputs[0]"), std::string::npos);
  }
}

TEST(ConvertTest, ResultMovesTensors) {
  EmbedResult result;
  result.results.emplace_back();
  InputResult& r = result.results.back();
  r.pooled.present = true;
  r.pooled.dtype = OutputDType::kFloat16;
  r.pooled.shape = {4};
  r.pooled.bytes = std::string(8, 'x');
  r.layers.emplace_back(2, TensorData{OutputDType::kFloat32, {3, 4}, std::string(48, 'y'), true});
  r.cls = TensorData{OutputDType::kFloat32, {4}, std::string(16, 'c'), true};
  r.logits = TensorData{OutputDType::kFloat16, {3}, std::string(6, 'l'), true};
  r.num_tokens = 3;
  r.timing.queue_us = 7;
  v1::EmbedResponse response;
  ToProto(std::move(result), &response);
  ASSERT_EQ(response.results_size(), 1);
  const auto& out = response.results(0);
  EXPECT_TRUE(out.has_pooled_output());
  EXPECT_FALSE(out.has_sequence_output());
  EXPECT_EQ(out.pooled_output().dtype(), v1::DATA_TYPE_FLOAT16);
  EXPECT_EQ(out.pooled_output().data().size(), 8u);
  ASSERT_EQ(out.encoder_outputs_size(), 1);
  EXPECT_EQ(out.encoder_outputs(0).layer(), 2);
  EXPECT_EQ(out.encoder_outputs(0).output().shape_size(), 2);
  ASSERT_TRUE(out.has_cls_output());
  EXPECT_EQ(out.cls_output().data(), std::string(16, 'c'));
  ASSERT_TRUE(out.has_logits());
  EXPECT_EQ(out.logits().data(), std::string(6, 'l'));
  EXPECT_EQ(out.logits().shape(0), 3);
  EXPECT_EQ(out.logits().dtype(), v1::DATA_TYPE_FLOAT16);
  EXPECT_FALSE(out.has_mean_pooled_output());
  EXPECT_EQ(out.num_tokens(), 3u);
  EXPECT_EQ(out.timing().queue_us(), 7);
}

TEST(ConvertTest, RerankStandsForAnEmbedOfPairs) {
  v1::RerankRequest r;
  r.set_query("q?");
  r.add_texts("first");
  r.add_texts("");
  r.set_request_id("id");
  auto spec = EmbedSpecForRerank(r, /*default_seq_length=*/512, /*max_request_bytes=*/0);
  ASSERT_TRUE(spec.ok()) << spec.status();
  ASSERT_EQ(spec->inputs.size(), 2u);
  for (const InputSpec& pair : spec->inputs) {
    EXPECT_TRUE(pair.is_text);
    EXPECT_EQ(pair.text_a, "q?");
    ASSERT_TRUE(pair.text_b.has_value());  // an empty text is still a pair
  }
  EXPECT_EQ(*spec->inputs[0].text_b, "first");
  EXPECT_EQ(spec->seq_length, 512);
  EXPECT_EQ(spec->truncation, Truncation::kLongestFirst);
  EXPECT_EQ(spec->heads, std::vector<Head>{Head::kLogits});
  EXPECT_EQ(spec->dtype, OutputDType::kFloat32);
  EXPECT_EQ(spec->answer_bytes, RerankAnswerBound(r));
  EXPECT_EQ(RerankAnswerBound(r), 64 + 2 + 2 * 21);  // request_id, two ranked texts
  r.set_return_text(true);
  r.set_seq_length(32);
  r.set_truncation(v1::TRUNCATION_REJECT);
  spec = EmbedSpecForRerank(r, 512, 0);
  ASSERT_TRUE(spec.ok());
  EXPECT_EQ(spec->answer_bytes, 64 + 2 + 2 * 21 + 2 * 10 + 5);  // and the texts
  EXPECT_EQ(spec->seq_length, 32);
  EXPECT_EQ(spec->truncation, Truncation::kReject);

  r.set_truncation(static_cast<v1::Truncation>(9));
  EXPECT_EQ(EmbedSpecForRerank(r, 512, 0).status().message(), "truncation: unknown value 9");
  r.clear_texts();
  EXPECT_EQ(EmbedSpecForRerank(r, 512, 0).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ConvertTest, TheQueryCountsOncePerTextAgainstTheRequestLimit) {
  v1::RerankRequest r;
  r.set_query(std::string(1000, 'q'));
  for (int i = 0; i < 10; ++i) r.add_texts("t");
  const uint64_t expanded = r.ByteSizeLong() + 9 * 1000;
  EXPECT_TRUE(EmbedSpecForRerank(r, 0, expanded).ok());
  const absl::Status over = EmbedSpecForRerank(r, 0, expanded - 1).status();
  EXPECT_EQ(over.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(over.message().find("over the server's"), absl::string_view::npos) << over;
}

TEST(ConvertTest, TheRerankAnswerBoundHoldsForTheLargestAnswers) {
  std::mt19937 rng(11);
  for (int trial = 0; trial < 200; ++trial) {
    v1::RerankRequest r;
    // Up to 20,000 texts (indices of 3 bytes), texts and request_ids whose lengths take 1 to 3
    // bytes.
    const int n = 1 + static_cast<int>(rng() % (trial % 10 == 0 ? 20000 : 300));
    const int longest = trial % 3 == 0 ? 5 : trial % 3 == 1 ? 3000 : 40000;
    for (int i = 0; i < n; ++i) {
      r.add_texts(std::string(n > 300 ? rng() % 5 : rng() % longest, 'x'));
    }
    r.set_top_n(rng() % 3 == 0 ? 0 : rng() % 400);
    r.set_return_text(rng() % 2 == 0);
    r.set_request_id(std::string(rng() % (trial % 2 ? 200 : 20000), 'r'));
    EmbedResult result;
    result.timing = {INT64_MAX, INT64_MAX, INT64_MAX, INT64_MAX};  // the widest varints
    for (int i = 0; i < n; ++i) {
      InputResult input;
      const float logit = -1e30f - static_cast<float>(i);  // every score a full float
      input.logits.present = true;
      input.logits.bytes.assign(reinterpret_cast<const char*>(&logit), sizeof(float));
      input.num_tokens = INT32_MAX;
      input.truncated = true;
      result.results.push_back(std::move(input));
    }
    v1::RerankResponse response;
    ToRerankResponse(result, r, ScoreFunction::kSoftmax, &response);  // the longest name
    EXPECT_LE(static_cast<int64_t>(response.ByteSizeLong()), RerankAnswerBound(r)) << trial;
  }
}

TEST(ConvertTest, RerankResponseBestFirst) {
  v1::RerankRequest r;
  for (const char* text : {"a", "b", "c"}) r.add_texts(text);
  r.set_return_text(true);
  r.set_top_n(2);
  r.set_request_id("x");
  EmbedResult result;
  for (float logit : {-1.0f, 2.0f, 0.5f}) {
    InputResult input;
    input.logits.present = true;
    input.logits.bytes.assign(reinterpret_cast<const char*>(&logit), sizeof(float));
    input.num_tokens = 3;
    result.results.push_back(std::move(input));
  }
  result.results[1].truncated = true;
  v1::RerankResponse response;
  ToRerankResponse(result, r, ScoreFunction::kNone, &response);
  ASSERT_EQ(response.ranked_size(), 2);
  EXPECT_EQ(response.ranked(0).index(), 1u);
  EXPECT_EQ(response.ranked(0).score(), 2.0f);
  EXPECT_EQ(response.ranked(0).text(), "b");
  EXPECT_TRUE(response.ranked(0).truncated());
  EXPECT_EQ(response.ranked(1).index(), 2u);
  EXPECT_EQ(response.ranked(1).num_tokens(), 3u);
  EXPECT_EQ(response.request_id(), "x");
  EXPECT_EQ(response.score_function(), "none");
  response.Clear();
  ToRerankResponse(result, r, ScoreFunction::kSigmoid, &response);
  EXPECT_FLOAT_EQ(response.ranked(0).score(), static_cast<float>(1 / (1 + std::exp(-2.0))));
  EXPECT_EQ(response.score_function(), "sigmoid");
}

}  // namespace
}  // namespace bert
