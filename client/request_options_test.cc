#include "client/request_options.h"

#include <random>
#include <sstream>

#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace bert {
namespace {

EmbedOptionsText Defaults() {
  EmbedOptionsText text;
  text.heads = "pooled";
  text.padding = "pad";
  text.dtype = "float32";
  text.truncation = "truncate";
  return text;
}

TEST(SetEmbedOptions, SetsEveryField) {
  EmbedOptionsText text = Defaults();
  text.heads = " Pooled, sequence,encoder_outputs,default,mean_pooled,CLS, logits";
  text.layers = "0,-1";
  text.seq_length = 64;
  text.padding = "trim";
  text.dtype = "bfloat16";
  text.truncation = "reject";
  text.normalize = true;
  v1::EmbedRequest request;
  ASSERT_TRUE(SetEmbedOptions(text, &request).ok());
  ASSERT_EQ(request.heads_size(), 7);
  EXPECT_EQ(request.heads(0), v1::HEAD_POOLED);
  EXPECT_EQ(request.heads(1), v1::HEAD_SEQUENCE);
  EXPECT_EQ(request.heads(2), v1::HEAD_ENCODER_OUTPUTS);
  EXPECT_EQ(request.heads(3), v1::HEAD_DEFAULT);
  EXPECT_EQ(request.heads(4), v1::HEAD_MEAN_POOLED);
  EXPECT_EQ(request.heads(5), v1::HEAD_CLS);
  EXPECT_EQ(request.heads(6), v1::HEAD_LOGITS);
  ASSERT_EQ(request.layers_size(), 2);
  EXPECT_EQ(request.layers(1), -1);
  EXPECT_EQ(request.seq_length(), 64u);
  EXPECT_EQ(request.padding(), v1::PADDING_TRIM);
  EXPECT_EQ(request.output_dtype(), v1::DATA_TYPE_BFLOAT16);
  EXPECT_EQ(request.truncation(), v1::TRUNCATION_REJECT);
  EXPECT_TRUE(request.normalize());
}

TEST(SetEmbedOptions, TakesTheHeadsByTheirOutputAndEnumNamesToo) {
  EmbedOptionsText text = Defaults();
  text.heads =
      "pooled_output, HEAD_SEQUENCE,encoder_outputs,default_output,mean_pooled_output,"
      "CLS_OUTPUT,head_logits,token_logits";
  v1::EmbedRequest request;
  ASSERT_TRUE(SetEmbedOptions(text, &request).ok());
  EXPECT_THAT(request.heads(),
              ::testing::ElementsAre(v1::HEAD_POOLED, v1::HEAD_SEQUENCE, v1::HEAD_ENCODER_OUTPUTS,
                                     v1::HEAD_DEFAULT, v1::HEAD_MEAN_POOLED, v1::HEAD_CLS,
                                     v1::HEAD_LOGITS, v1::HEAD_TOKEN_LOGITS));
  EXPECT_TRUE(NamesHead("HEAD_TOKEN_LOGITS", v1::HEAD_TOKEN_LOGITS));
  EXPECT_TRUE(NamesEmbeddingHead("pooled, Embedding"));
  for (const char* invented : {"encoder_outputs_output", "logits_output", "head_pooled_output",
                               "head_embedding", "sequence_outputs"}) {
    EmbedOptionsText t = Defaults();
    t.heads = invented;
    EXPECT_FALSE(SetEmbedOptions(t, &request).ok()) << invented;
    EXPECT_FALSE(NamesEmbeddingHead(invented)) << invented;
  }
}

TEST(SetEmbedOptions, RejectsBadValuesByName) {
  struct Case {
    void (*mutate)(EmbedOptionsText*);
    const char* expected;
  } cases[] = {
      {[](EmbedOptionsText* t) { t->heads = "pooled,max_pooled"; },
       "--heads: unknown head \"max_pooled\""},
      {[](EmbedOptionsText* t) { t->layers = "1,x"; }, "bad layer index x"},
      {[](EmbedOptionsText* t) { t->seq_length = -1; }, "seq_length"},
      {[](EmbedOptionsText* t) { t->padding = "none"; }, "padding"},
      {[](EmbedOptionsText* t) { t->dtype = "int8"; }, "dtype"},
      {[](EmbedOptionsText* t) { t->truncation = "drop"; }, "truncation"},
  };
  for (const Case& c : cases) {
    EmbedOptionsText text = Defaults();
    c.mutate(&text);
    v1::EmbedRequest request;
    const absl::Status status = SetEmbedOptions(text, &request);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.expected;
    EXPECT_NE(status.message().find(c.expected), absl::string_view::npos) << status;
  }
}

TEST(SetEmbedOptions, EmbeddingIsTheModelsSentenceEmbedding) {
  EmbedOptionsText text = Defaults();
  text.heads = "sequence, Embedding";
  EXPECT_TRUE(NamesEmbeddingHead(text.heads));
  EXPECT_FALSE(NamesEmbeddingHead("pooled,mean_pooled"));
  v1::EmbedRequest request;
  // Not known yet: refused.
  EXPECT_EQ(SetEmbedOptions(text, &request).code(), absl::StatusCode::kFailedPrecondition);
  // Mean pooling, normalised (all-MiniLM's modules).
  text.model_embedding.emplace();
  text.model_embedding->set_head(v1::HEAD_MEAN_POOLED);
  text.model_embedding->set_normalize(true);
  request.Clear();
  ASSERT_TRUE(SetEmbedOptions(text, &request).ok());
  ASSERT_EQ(request.heads_size(), 2);
  EXPECT_EQ(request.heads(0), v1::HEAD_SEQUENCE);
  EXPECT_EQ(request.heads(1), v1::HEAD_MEAN_POOLED);
  EXPECT_TRUE(request.normalize());
  EXPECT_EQ(request.seq_length(), 0u);  // the model gave none: the server's default
  // The model's truncation (sentence_bert_config.json), unless a seq_length is asked for.
  text.model_embedding->set_max_seq_length(256);
  request.Clear();
  ASSERT_TRUE(SetEmbedOptions(text, &request).ok());
  EXPECT_EQ(request.seq_length(), 256u);
  text.seq_length = 64;
  request.Clear();
  ASSERT_TRUE(SetEmbedOptions(text, &request).ok());
  EXPECT_EQ(request.seq_length(), 64u);
  text.seq_length = 0;
  // CLS pooling without normalisation: normalize stays as asked.
  text.model_embedding->set_head(v1::HEAD_CLS);
  text.model_embedding->set_normalize(false);
  for (bool asked : {false, true}) {
    text.normalize = asked;
    request.Clear();
    ASSERT_TRUE(SetEmbedOptions(text, &request).ok());
    EXPECT_EQ(request.heads(1), v1::HEAD_CLS);
    EXPECT_EQ(request.normalize(), asked);
  }
  // The model's default prompt, unless one is named; a named one is sent as it is.
  text.model_embedding->set_default_prompt_name("query");
  request.Clear();
  ASSERT_TRUE(SetEmbedOptions(text, &request).ok());
  EXPECT_EQ(request.prompt_name(), "query");
  // Not with token inputs (the server refuses a prompt there), nor when "none" is asked for.
  text.token_inputs = true;
  request.Clear();
  ASSERT_TRUE(SetEmbedOptions(text, &request).ok());
  EXPECT_EQ(request.prompt_name(), "");
  text.token_inputs = false;
  text.prompt_name = "none";
  request.Clear();
  ASSERT_TRUE(SetEmbedOptions(text, &request).ok());
  EXPECT_EQ(request.prompt_name(), "");
  text.prompt_name = "passage";
  request.Clear();
  ASSERT_TRUE(SetEmbedOptions(text, &request).ok());
  EXPECT_EQ(request.prompt_name(), "passage");
  text.heads = "pooled";
  request.Clear();
  ASSERT_TRUE(SetEmbedOptions(text, &request).ok());
  EXPECT_EQ(request.prompt_name(), "passage");
  text.prompt_name.clear();
  request.Clear();
  ASSERT_TRUE(SetEmbedOptions(text, &request).ok());
  EXPECT_EQ(request.prompt_name(), "");  // the default is the embedding head's only
  text.heads = "sequence, Embedding";
  // A model whose files name none: refused with their reason.
  text.model_embedding->set_head(v1::HEAD_UNSPECIFIED);
  text.model_embedding->set_note("no modules.json");
  request.Clear();
  const absl::Status none = SetEmbedOptions(text, &request);
  EXPECT_EQ(none.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(none.message().find("no modules.json"), absl::string_view::npos) << none;
}

TEST(SetEmbedOptions, LogitsTakeTheClassifiersLengthAndHuggingFacesTruncation) {
  EmbedOptionsText text = Defaults();
  text.heads = "logits";
  text.truncation = "";
  v1::EmbedRequest request;
  ASSERT_TRUE(SetEmbedOptions(text, &request).ok());  // the classifier unknown: server defaults
  EXPECT_EQ(request.seq_length(), 0u);
  EXPECT_EQ(request.truncation(), v1::TRUNCATION_TRUNCATE);
  text.model_classifier.emplace();
  text.model_classifier->set_max_seq_length(512);
  request.Clear();
  ASSERT_TRUE(SetEmbedOptions(text, &request).ok());
  EXPECT_EQ(request.heads(0), v1::HEAD_LOGITS);
  EXPECT_EQ(request.seq_length(), 512u);
  EXPECT_EQ(request.truncation(), v1::TRUNCATION_LONGEST_FIRST);
  // What the caller sets wins.
  text.seq_length = 64;
  text.truncation = "truncate";
  request.Clear();
  ASSERT_TRUE(SetEmbedOptions(text, &request).ok());
  EXPECT_EQ(request.seq_length(), 64u);
  EXPECT_EQ(request.truncation(), v1::TRUNCATION_TRUNCATE);
  // Other heads do not take it.
  text = Defaults();
  text.truncation = "";
  text.model_classifier.emplace();
  text.model_classifier->set_max_seq_length(512);
  request.Clear();
  ASSERT_TRUE(SetEmbedOptions(text, &request).ok());
  EXPECT_EQ(request.seq_length(), 0u);
  EXPECT_EQ(request.truncation(), v1::TRUNCATION_TRUNCATE);
  // With the sentence embedding too, in either order: the classifier's length.
  for (const char* heads : {"embedding,logits", "logits,embedding"}) {
    text.heads = heads;
    text.model_embedding.emplace();
    text.model_embedding->set_head(v1::HEAD_MEAN_POOLED);
    text.model_embedding->set_max_seq_length(256);
    request.Clear();
    ASSERT_TRUE(SetEmbedOptions(text, &request).ok());
    EXPECT_EQ(request.seq_length(), 512u) << heads;
  }
  // An older server's classifier without a length: the embedding's stays.
  text.model_classifier->set_max_seq_length(0);
  request.Clear();
  ASSERT_TRUE(SetEmbedOptions(text, &request).ok());
  EXPECT_EQ(request.seq_length(), 256u);
  EXPECT_EQ(request.truncation(), v1::TRUNCATION_LONGEST_FIRST);
  EXPECT_TRUE(NamesLogitsHead(" pooled, Logits"));
  EXPECT_FALSE(NamesLogitsHead("pooled,cls"));
  EXPECT_FALSE(NamesLogitsHead("token_logits"));
  EXPECT_TRUE(NamesHead("pooled, Token_Logits", v1::HEAD_TOKEN_LOGITS));
  EXPECT_FALSE(NamesHead("logits", v1::HEAD_TOKEN_LOGITS));
}

TEST(ParseInputLine, TextPairAndTokens) {
  absl::StatusOr<v1::Input> text = ParseInputLine(R"("hello world")");
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(text->text().text_a(), "hello world");
  EXPECT_FALSE(text->text().has_text_b());

  absl::StatusOr<v1::Input> pair = ParseInputLine(R"({"text_a": "q", "text_b": "p"})");
  ASSERT_TRUE(pair.ok()) << pair.status();
  EXPECT_EQ(pair->text().text_a(), "q");
  EXPECT_EQ(pair->text().text_b(), "p");

  absl::StatusOr<v1::Input> tokens =
      ParseInputLine(R"({"input_word_ids": [101, 7, 102], "input_type_ids": [0, 0, 0]})");
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  ASSERT_EQ(tokens->tokens().input_word_ids_size(), 3);
  EXPECT_EQ(tokens->tokens().input_word_ids(2), 102);
  EXPECT_EQ(tokens->tokens().input_type_ids_size(), 3);
}

TEST(ParseInputLine, TakesTheFullInt32Range) {
  absl::StatusOr<v1::Input> input =
      ParseInputLine(R"({"input_word_ids": [2147483647, -2147483648, 0]})");
  ASSERT_TRUE(input.ok()) << input.status();
  EXPECT_EQ(input->tokens().input_word_ids(0), 2147483647);
  EXPECT_EQ(input->tokens().input_word_ids(1), -2147483647 - 1);
}

TEST(ParseInputLine, RejectsMalformedLinesWithoutThrowing) {
  for (const char* line :
       {"not json", "{\"text_a\": 3}", "{\"text_a\": \"a\", \"text_b\": [1]}",
        "{\"input_word_ids\": [1, \"x\"]}", "{\"input_word_ids\": 5}",
        "{\"input_word_ids\": [1], \"input_type_ids\": [0.5]}", "[1, 2]", "{}",
        "{\"input_word_ids\": [2147483648]}", "{\"input_word_ids\": [-2147483649]}",
        "{\"input_word_ids\": [18446744073709551615]}"}) {
    absl::StatusOr<v1::Input> input = ParseInputLine(line);
    EXPECT_EQ(input.status().code(), absl::StatusCode::kInvalidArgument) << line;
  }
}

TEST(ParseInputLine, SaysWhenALineIsNotJson) {
  // Broken JSON is named as such; well-formed JSON of the wrong shape gets the shape's message.
  for (const char* line : {"not json", R"({"text_a": "x",})", "\"unterminated"}) {
    const absl::Status status = ParseInputLine(line).status();
    EXPECT_TRUE(absl::StartsWith(status.message(), "not valid JSON (each line one input: "))
        << line;
  }
  const absl::Status shape = ParseInputLine("[1, 2]").status();
  EXPECT_NE(shape.message().find("expected a JSON string or an object"), absl::string_view::npos)
      << shape;
}

TEST(ParseTruncation, TakesTheThreeNamesOnly) {
  EXPECT_EQ(*ParseTruncation("truncate"), v1::TRUNCATION_TRUNCATE);
  EXPECT_EQ(*ParseTruncation("reject"), v1::TRUNCATION_REJECT);
  EXPECT_EQ(*ParseTruncation("longest_first"), v1::TRUNCATION_LONGEST_FIRST);
  for (const char* text : {"", "rejectt", "REJECT", "truncated", "longest-first"}) {
    EXPECT_EQ(ParseTruncation(text).status().code(), absl::StatusCode::kInvalidArgument) << text;
  }
}

TEST(ParseInputLines, SkipsBlankLinesAndNamesTheBadOne) {
  std::istringstream good("\"a\"\n\n  \n{\"text_a\": \"b\"}\n");
  absl::StatusOr<std::vector<v1::Input>> inputs = ParseInputLines(good, "stdin");
  ASSERT_TRUE(inputs.ok()) << inputs.status();
  ASSERT_EQ(inputs->size(), 2u);
  EXPECT_EQ((*inputs)[1].text().text_a(), "b");
  std::istringstream bad("\"a\"\n\nnot json\n");
  const absl::Status status = ParseInputLines(bad, "in.jsonl").status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("in.jsonl line 3: "), absl::string_view::npos) << status;
}

TEST(SplitIntoCalls, KeepsEachCallWithinBothLimits) {
  using ::testing::ElementsAre;
  EXPECT_TRUE(SplitIntoCalls({}, 4, 0).empty());
  EXPECT_THAT(SplitIntoCalls(std::vector<size_t>(10, 1), 4, 0), ElementsAre(4, 4, 2));
  EXPECT_THAT(SplitIntoCalls(std::vector<size_t>(8, 1), 4, 0), ElementsAre(4, 4));
  EXPECT_THAT(SplitIntoCalls({3, 3, 3, 3}, 100, 7), ElementsAre(2, 2));  // 6 bytes fit, 9 not
  EXPECT_THAT(SplitIntoCalls({3, 4, 1}, 100, 7), ElementsAre(2, 1));     // exactly 7 fits
  // An item over the byte limit goes alone, wherever it is.
  EXPECT_THAT(SplitIntoCalls({1, 50, 1, 1}, 100, 7), ElementsAre(1, 1, 2));
  EXPECT_THAT(SplitIntoCalls({50}, 100, 7), ElementsAre(1));
  // Random sizes: the calls cover every item in order, each within both limits.
  std::mt19937 rng(7);
  for (int round = 0; round < 500; ++round) {
    std::vector<size_t> sizes(rng() % 60);
    for (size_t& size : sizes) size = rng() % 40;
    const size_t max_items = 1 + rng() % 9;
    const uint64_t max_bytes = rng() % 100;
    const std::vector<size_t> calls = SplitIntoCalls(sizes, max_items, max_bytes);
    size_t begin = 0;
    for (const size_t n : calls) {
      ASSERT_GE(n, 1u);
      ASSERT_LE(n, max_items);
      uint64_t bytes = 0;
      for (size_t i = begin; i < begin + n; ++i) bytes += sizes[i];
      if (max_bytes > 0 && n > 1) EXPECT_LE(bytes, max_bytes);
      // Greedy: the next item would not have fitted.
      if (begin + n < sizes.size() && n < max_items) {
        EXPECT_GT(bytes + sizes[begin + n], max_bytes);
      }
      begin += n;
    }
    EXPECT_EQ(begin, sizes.size());
  }
}

}  // namespace
}  // namespace bert
