#include "server/core/pipeline.h"

#include <atomic>
#include <cmath>
#include <cstring>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "server/core/dtype_convert.h"
#include "server/core/fake_engine.h"
#include "server/engine/fault_injection.h"

namespace bert {
namespace {

constexpr int kHidden = 4;

// MakePipeline's options unless a test asks for others.
PipelineOptions TestOptions(int max_concurrent = 8) {
  PipelineOptions options;
  options.max_concurrent_requests = max_concurrent;
  options.max_inputs_per_request = 4;
  options.max_batch_delay = absl::Milliseconds(1);
  return options;
}

std::unique_ptr<Pipeline> MakePipeline(const PipelineOptions& options = TestOptions()) {
  FakeEngine::Options engine_options;
  engine_options.config = FakeEngine::SmallConfig();
  auto tokenizer = BertTokenizer::FromTokens(
      {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "good", "morning"},
      BertTokenizer::Options());
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status();
  auto pipeline = std::make_unique<Pipeline>(options, std::make_unique<FakeEngine>(engine_options),
                                             *std::move(tokenizer), nullptr);
  EXPECT_TRUE(pipeline->Warmup().ok());
  pipeline->Start();
  return pipeline;
}

// A pipeline over `engine` with a token budget of `budget`, for its warm-up only.
Pipeline WarmupPipeline(std::unique_ptr<Engine> engine, bool row_buckets, int budget = 300) {
  auto tokenizer = BertTokenizer::FromTokens({"[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello"},
                                             BertTokenizer::Options());
  EXPECT_TRUE(tokenizer.ok());
  PipelineOptions options;
  options.max_batch_tokens = budget;
  options.warmup_row_buckets = row_buckets;
  return Pipeline(options, std::move(engine), *std::move(tokenizer), nullptr);
}

FakeEngine::Options SmallEngine() {
  FakeEngine::Options options;
  options.config = FakeEngine::SmallConfig();  // 64 positions
  return options;
}

TEST(PipelineWarmupTest, RowBucketsUpToTheBudgetWhenAsked) {
  for (const bool buckets : {false, true}) {
    auto engine = std::make_unique<FakeEngine>(SmallEngine());
    FakeEngine* fake = engine.get();
    Pipeline pipeline = WarmupPipeline(std::move(engine), buckets);
    ASSERT_TRUE(pipeline.Warmup().ok());
    std::vector<std::pair<int, int>> got;  // (sequences, rows)
    for (const FakeEngine::Record& r : fake->batches()) {
      got.emplace_back(r.num_sequences, r.total_rows);
    }
    // First the largest shape: 4 sequences of 64 rows; then the row buckets 16 ... 128 and
    // the full budget of 300 rows (bucket 512) in sequences of at most 64 rows; bucket 256 is
    // the first shape's and runs once. Then the pooler's buckets: 32, 64, ... one-row
    // sequences, up to the budget's 300.
    std::vector<std::pair<int, int>> want = {{4, 256}};
    if (buckets) {
      want.insert(want.end(), {{1, 16}, {1, 32}, {1, 64}, {2, 128}, {5, 300}});
      want.insert(want.end(), {{2, 32}, {2, 32}, {2, 32}});  // the repeat check
      want.insert(want.end(), {{32, 32}, {64, 64}, {128, 128}, {256, 256}, {300, 300}});
    }
    EXPECT_EQ(got, want) << "warmup_row_buckets " << buckets;
  }
}

// A token budget below two 16-row sequences: the repeat check's batch shrinks to fit it.
TEST(PipelineWarmupTest, RepeatCheckFitsASmallTokenBudget) {
  for (const int budget : {1, 2, 8, 31}) {
    auto engine = std::make_unique<FakeEngine>(SmallEngine());
    FakeEngine* fake = engine.get();
    Pipeline pipeline = WarmupPipeline(std::move(engine), /*row_buckets=*/true, budget);
    const absl::Status status = pipeline.Warmup();
    EXPECT_TRUE(status.ok()) << budget << ": " << status;
    for (const FakeEngine::Record& r : fake->batches()) EXPECT_LE(r.total_rows, budget) << budget;
  }
}

// An engine whose outputs drift from call to call (as a broken CUDA-graph replay would).
class DriftingEngine final : public Engine {
 public:
  explicit DriftingEngine(FakeEngine::Options options) : engine_(std::move(options)) {}
  const ModelConfig& config() const override { return engine_.config(); }
  bool has_pooler() const override { return engine_.has_pooler(); }
  EngineInfo info() const override { return engine_.info(); }
  absl::Status Encode(const EncoderBatch& batch, const OutputSelection& selection,
                      EncoderOutput* output) override {
    absl::Status status = engine_.Encode(batch, selection, output);
    if (status.ok() && !output->sequence.empty()) output->sequence[0] *= 1.0f + 0.01f * ++calls_;
    return status;
  }

 private:
  FakeEngine engine_;
  int calls_ = 0;
};

// With the row buckets (the CUDA engine's warm-up), the same small batch runs three times and
// must give the same outputs: an engine whose outputs drift fails the warm-up.
TEST(PipelineWarmupTest, RepeatCheckFailsAnEngineWhoseOutputsDrift) {
  for (const bool drifting : {false, true}) {
    std::unique_ptr<Engine> engine;
    if (drifting) {
      engine = std::make_unique<DriftingEngine>(SmallEngine());
    } else {
      engine = std::make_unique<FakeEngine>(SmallEngine());
    }
    Pipeline pipeline = WarmupPipeline(std::move(engine), /*row_buckets=*/true);
    const absl::Status status = pipeline.Warmup();
    if (drifting) {
      EXPECT_EQ(status.code(), absl::StatusCode::kInternal) << status;
      EXPECT_NE(status.message().find("--cuda_graphs=false"), absl::string_view::npos) << status;
    } else {
      EXPECT_TRUE(status.ok()) << status;
    }
  }
}

// A watchdog reads EngineBusyFor from before Start: a warm-up batch that never ends (a hung
// device) must show.
TEST(PipelineWarmupTest, EngineBusyForCoversTheWarmup) {
  auto engine = std::make_unique<FakeEngine>(SmallEngine());
  FakeEngine* fake = engine.get();
  Pipeline pipeline = WarmupPipeline(std::move(engine), /*row_buckets=*/false);
  EXPECT_EQ(pipeline.EngineBusyFor(), absl::ZeroDuration());
  fake->HoldBatches();
  absl::Status warm;
  std::thread warmup([&] { warm = pipeline.Warmup(); });
  const bool started = fake->WaitForBatches(1, absl::Seconds(30));
  absl::SleepFor(absl::Milliseconds(50));
  const absl::Duration busy = pipeline.EngineBusyFor();
  fake->ReleaseBatches();
  warmup.join();
  ASSERT_TRUE(started);
  EXPECT_GE(busy, absl::Milliseconds(50));
  EXPECT_TRUE(warm.ok()) << warm;
  EXPECT_EQ(pipeline.EngineBusyFor(), absl::ZeroDuration());
  EXPECT_FALSE(pipeline.started());
}

absl::StatusOr<EmbedResult> EmbedSync(Pipeline* pipeline, EmbedRequestSpec spec) {
  // Held until the answer is back, as a server holds it until the answer is sent.
  auto permit = pipeline->Admit();
  if (!permit.ok()) return permit.status();
  absl::Notification done;
  absl::StatusOr<EmbedResult> out;
  pipeline->Embed(std::move(spec), absl::InfiniteFuture(), nullptr,
                  [&](absl::StatusOr<EmbedResult> r) {
                    out = std::move(r);
                    done.Notify();
                  });
  done.WaitForNotification();
  return out;
}

std::vector<float> Floats(const TensorData& t) {
  std::vector<float> v;
  if (t.dtype == OutputDType::kFloat32) {
    v.resize(t.bytes.size() / 4);
    std::memcpy(v.data(), t.bytes.data(), t.bytes.size());
  } else {
    for (size_t i = 0; i + 1 < t.bytes.size(); i += 2) {
      const uint16_t bits = static_cast<uint8_t>(t.bytes[i]) |
                            (static_cast<uint16_t>(static_cast<uint8_t>(t.bytes[i + 1])) << 8);
      v.push_back(t.dtype == OutputDType::kFloat16 ? FromHalfBits(bits) : FromBFloat16Bits(bits));
    }
  }
  return v;
}

InputSpec Text(const std::string& a, const char* b = nullptr) {
  InputSpec s;
  s.text_a = a;
  if (b != nullptr) s.text_b = std::string(b);
  return s;
}

TEST(PipelineTest, PaddedHeadsCarryPaddingRowsAndLayersInOrder) {
  auto pipeline = MakePipeline();
  EmbedRequestSpec spec;
  spec.inputs = {Text("hello world", "good")};  // [CLS] hello world [SEP] good [SEP]
  spec.seq_length = 8;
  spec.heads = {Head::kSequence, Head::kEncoderOutputs, Head::kPooled, Head::kDefault};
  spec.layers = {1, 0, -1};
  auto result = EmbedSync(pipeline.get(), spec);
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->results.size(), 1u);
  const InputResult& r = result->results[0];
  EXPECT_EQ(r.num_tokens, 6);
  EXPECT_EQ(r.sequence.shape, (std::vector<int64_t>{8, kHidden}));
  const std::vector<float> seq = Floats(r.sequence);
  const int words[8] = {2, 5, 6, 3, 7, 3, 0, 0};
  const int types[8] = {0, 0, 0, 0, 1, 1, 0, 0};
  for (int row = 0; row < 8; ++row) {
    EXPECT_FLOAT_EQ(seq[row * kHidden + 1], FakeEngine::Value(words[row], types[row], row, 1, 1))
        << row;
  }
  ASSERT_EQ(r.layers.size(), 3u);
  EXPECT_EQ(r.layers[0].first, 1);
  EXPECT_EQ(r.layers[1].first, 0);
  EXPECT_EQ(r.layers[2].first, 1);
  EXPECT_FLOAT_EQ(Floats(r.layers[1].second)[2 * kHidden], FakeEngine::Value(words[2], 0, 2, 0, 0));
  EXPECT_EQ(r.pooled.shape, (std::vector<int64_t>{kHidden}));
  EXPECT_EQ(Floats(r.pooled), Floats(r.default_output));
  EXPECT_FLOAT_EQ(Floats(r.pooled)[0], FakeEngine::Value(2, 0, 0, 1, 0) + 0.5f);
  EXPECT_FALSE(r.mean_pooled.present);
  EXPECT_FALSE(r.cls.present);
}

TEST(PipelineTest, ClsHeadIsTheLastLayersFirstRow) {
  auto pipeline = MakePipeline();
  EmbedRequestSpec spec;
  spec.inputs = {Text("hello world"), Text("good")};  // [CLS] hello world [SEP], [CLS] good [SEP]
  spec.seq_length = 8;
  spec.heads = {Head::kCls, Head::kSequence};
  auto result = EmbedSync(pipeline.get(), spec);
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->results.size(), 2u);
  for (const InputResult& r : result->results) {
    ASSERT_TRUE(r.cls.present);
    EXPECT_EQ(r.cls.shape, (std::vector<int64_t>{kHidden}));
    const std::vector<float> cls = Floats(r.cls);
    const std::vector<float> seq = Floats(r.sequence);
    EXPECT_EQ(cls, std::vector<float>(seq.begin(), seq.begin() + kHidden));
    EXPECT_FLOAT_EQ(cls[3], FakeEngine::Value(2, 0, 0, 1, 3));  // word 2 = [CLS], position 0
    EXPECT_FALSE(r.pooled.present);
    EXPECT_FALSE(r.mean_pooled.present);
  }
  // Normalised, in bfloat16, alone.
  spec.heads = {Head::kCls};
  spec.normalize = true;
  spec.dtype = OutputDType::kBFloat16;
  auto normalized = EmbedSync(pipeline.get(), spec);
  ASSERT_TRUE(normalized.ok()) << normalized.status();
  const InputResult& n = normalized->results[0];
  EXPECT_EQ(n.cls.bytes.size(), kHidden * 2u);
  EXPECT_FALSE(n.sequence.present);
  double norm = 0;
  for (float x : Floats(n.cls)) norm += x * x;
  EXPECT_NEAR(std::sqrt(norm), 1.0, 1e-2);
}

TEST(PipelineTest, DimensionsKeepTheVectorsLeadingValuesThenNormalize) {
  auto pipeline = MakePipeline();
  EmbedRequestSpec spec;
  spec.inputs = {Text("hello world"), Text("good")};
  spec.seq_length = 8;
  spec.heads = {Head::kPooled, Head::kDefault, Head::kMeanPooled, Head::kCls, Head::kSequence};
  auto full = EmbedSync(pipeline.get(), spec);
  ASSERT_TRUE(full.ok()) << full.status();
  spec.dimensions = 2;
  auto cut = EmbedSync(pipeline.get(), spec);
  ASSERT_TRUE(cut.ok()) << cut.status();
  spec.normalize = true;
  auto unit = EmbedSync(pipeline.get(), spec);
  ASSERT_TRUE(unit.ok()) << unit.status();
  for (size_t i = 0; i < spec.inputs.size(); ++i) {
    const InputResult& f = full->results[i];
    const InputResult& c = cut->results[i];
    const InputResult& u = unit->results[i];
    for (auto member : {&InputResult::pooled, &InputResult::default_output,
                        &InputResult::mean_pooled, &InputResult::cls}) {
      EXPECT_EQ((c.*member).shape, (std::vector<int64_t>{2}));
      const std::vector<float> whole = Floats(f.*member);
      EXPECT_EQ(Floats(c.*member), std::vector<float>(whole.begin(), whole.begin() + 2));
      const double norm = std::hypot(double{whole[0]}, double{whole[1]});
      const std::vector<float> normalized = Floats(u.*member);
      ASSERT_EQ(normalized.size(), 2u);
      EXPECT_NEAR(normalized[0], whole[0] / norm, 1e-6);
      EXPECT_NEAR(normalized[1], whole[1] / norm, 1e-6);
    }
    EXPECT_EQ(Floats(c.sequence), Floats(f.sequence));  // not a vector head: whole
  }
  // HEAD_DEFAULT alone (it shares pooled_output's bytes when both are asked for).
  spec.heads = {Head::kDefault};
  spec.normalize = false;
  auto alone = EmbedSync(pipeline.get(), spec);
  ASSERT_TRUE(alone.ok()) << alone.status();
  for (size_t i = 0; i < spec.inputs.size(); ++i) {
    EXPECT_EQ(Floats(alone->results[i].default_output), Floats(cut->results[i].default_output));
    EXPECT_FALSE(alone->results[i].pooled.present);
  }
}

TEST(PipelineTest, LogitsAreTheClassifierOnTheRawPooledOutput) {
  PipelineOptions options = TestOptions();
  Classifier& classifier = options.classifier;
  classifier.weight.shape = {2, kHidden};
  classifier.weight.data = {1e-5f, -2e-5f, 3e-5f, 1e-4f, -1e-5f, 1e-5f, 2.5e-5f, 0};  // ~24, ~-2
  classifier.bias.shape = {2};
  classifier.bias.data = {0.5f, -7.0f};
  classifier.labels = {"LABEL_0", "LABEL_1"};
  auto pipeline = MakePipeline(options);
  EmbedRequestSpec spec;
  spec.inputs = {Text("hello world", "good"), Text("morning")};
  spec.seq_length = 8;
  spec.heads = {Head::kLogits, Head::kPooled};
  spec.normalize = true;  // the pooled output, not the logits
  auto result = EmbedSync(pipeline.get(), spec);
  ASSERT_TRUE(result.ok()) << result.status();
  for (const InputResult& r : result->results) {
    ASSERT_TRUE(r.logits.present);
    EXPECT_EQ(r.logits.shape, (std::vector<int64_t>{2}));
    // The raw pooled output: the fake engine's [CLS] row (word 2, position 0, last layer) + 0.5.
    std::vector<double> pooled(kHidden);
    for (int h = 0; h < kHidden; ++h) pooled[h] = FakeEngine::Value(2, 0, 0, 1, h) + 0.5;
    const std::vector<float> logits = Floats(r.logits);
    for (int label = 0; label < 2; ++label) {
      double want = classifier.bias.data[label];
      for (int h = 0; h < kHidden; ++h) {
        want += static_cast<double>(classifier.weight.data[label * kHidden + h]) * pooled[h];
      }
      EXPECT_NEAR(logits[label], want, 1e-6 * std::abs(want)) << label;
    }
    double norm = 0;
    for (float x : Floats(r.pooled)) norm += x * x;
    EXPECT_NEAR(std::sqrt(norm), 1.0, 1e-6);
  }
  // Alone (the engine computes the pooled output for it), in float16.
  spec.heads = {Head::kLogits};
  spec.dtype = OutputDType::kFloat16;
  auto half = EmbedSync(pipeline.get(), spec);
  ASSERT_TRUE(half.ok()) << half.status();
  EXPECT_EQ(half->results[0].logits.bytes.size(), 2 * 2u);
  EXPECT_FALSE(half->results[0].pooled.present);
  EXPECT_NEAR(Floats(half->results[0].logits)[0], Floats(result->results[0].logits)[0],
              std::abs(Floats(result->results[0].logits)[0]) * 1e-3);

  // Without a classifier: refused before any work.
  auto plain = MakePipeline();
  auto refused = EmbedSync(plain.get(), spec);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition) << refused.status();
}

TEST(PipelineTest, APromptGoesInFrontOfTextA) {
  PipelineOptions options = TestOptions();
  options.prompts = {{"greeting", "hello "}};
  auto pipeline = MakePipeline(options);
  EmbedRequestSpec spec;
  spec.inputs = {Text("world", "good"), Text("good morning")};
  spec.seq_length = 8;
  spec.heads = {Head::kSequence};
  spec.padding = PaddingMode::kTrim;
  spec.prompt_name = "greeting";
  auto with_prompt = EmbedSync(pipeline.get(), spec);
  ASSERT_TRUE(with_prompt.ok()) << with_prompt.status();
  // The same as the prompt written into the texts.
  spec.prompt_name = "";
  spec.inputs = {Text("hello world", "good"), Text("hello good morning")};
  auto written = EmbedSync(pipeline.get(), spec);
  ASSERT_TRUE(written.ok()) << written.status();
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(with_prompt->results[i].num_tokens, written->results[i].num_tokens);
    EXPECT_EQ(with_prompt->results[i].sequence.bytes, written->results[i].sequence.bytes);
  }
  EXPECT_EQ(with_prompt->results[0].num_tokens, 6);  // [CLS] hello world [SEP] good [SEP]
  // An unknown name is refused.
  spec.prompt_name = "farewell";
  auto unknown = EmbedSync(pipeline.get(), spec);
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  // Tokenize shows the tokens Embed computes.
  TokenizeRequestSpec tokenize;
  tokenize.inputs = {Text("world", "good")};
  tokenize.seq_length = 8;
  tokenize.prompt_name = "greeting";
  auto encodings = pipeline->Tokenize(tokenize);
  ASSERT_TRUE(encodings.ok()) << encodings.status();
  EXPECT_EQ((*encodings)[0].tokens,
            (std::vector<std::string>{"[CLS]", "hello", "world", "[SEP]", "good", "[SEP]"}));
  tokenize.prompt_name = "farewell";
  EXPECT_EQ(pipeline->Tokenize(tokenize).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(PipelineTest, TrimNormalizeAndHalfPrecision) {
  auto pipeline = MakePipeline();
  EmbedRequestSpec spec;
  spec.inputs = {Text("hello"), Text("good morning world")};
  spec.seq_length = 16;
  spec.heads = {Head::kSequence, Head::kMeanPooled};
  spec.padding = PaddingMode::kTrim;
  spec.dtype = OutputDType::kFloat16;
  spec.normalize = true;
  auto result = EmbedSync(pipeline.get(), spec);
  ASSERT_TRUE(result.ok()) << result.status();
  const InputResult& a = result->results[0];
  const InputResult& b = result->results[1];
  EXPECT_EQ(a.sequence.shape, (std::vector<int64_t>{3, kHidden}));
  EXPECT_EQ(b.sequence.shape, (std::vector<int64_t>{5, kHidden}));
  EXPECT_EQ(a.sequence.bytes.size(), 3u * kHidden * 2);
  const std::vector<float> mean = Floats(b.mean_pooled);
  double norm = 0;
  for (float x : mean) norm += x * x;
  EXPECT_NEAR(std::sqrt(norm), 1.0, 2e-3);
  EXPECT_FALSE(a.pooled.present);
}

TEST(PipelineTest, TruncationAndRejectOfTexts) {
  auto pipeline = MakePipeline();
  EmbedRequestSpec spec;
  spec.inputs = {Text("hello world good morning hello world")};
  spec.seq_length = 4;
  auto truncated = EmbedSync(pipeline.get(), spec);
  ASSERT_TRUE(truncated.ok());
  EXPECT_TRUE(truncated->results[0].truncated);
  EXPECT_EQ(truncated->results[0].num_tokens, 4);
  spec.truncation = Truncation::kReject;
  spec.inputs.insert(spec.inputs.begin(), Text("hello"));
  auto rejected = EmbedSync(pipeline.get(), spec);
  EXPECT_EQ(rejected.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(rejected.status().message().find("inputs[1]"), absl::string_view::npos)
      << rejected.status();
  EXPECT_EQ(pipeline->in_flight(), 0);
}

TEST(PipelineTest, AdmissionLimitAndDrain) {
  auto pipeline = MakePipeline(TestOptions(/*max_concurrent=*/1));
  auto first = pipeline->Admit();
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(pipeline->Admit().status().code(), absl::StatusCode::kResourceExhausted);
  first->Reset();
  EXPECT_TRUE(pipeline->Admit().ok());
  EmbedRequestSpec bad;  // empty: answered at once, permit released
  auto r = EmbedSync(pipeline.get(), bad);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(pipeline->in_flight(), 0);
  pipeline->Drain();
  EXPECT_EQ(pipeline->Admit().status().code(), absl::StatusCode::kUnavailable);
}

TEST(PipelineTest, DrainWaitsForAnswersBeingSent) {
  auto pipeline = MakePipeline();
  auto permit = pipeline->Admit();
  ASSERT_TRUE(permit.ok());
  permit->MarkAnswered();
  ASSERT_TRUE(permit->sending());
  EXPECT_EQ(pipeline->in_flight(), 1);
  EXPECT_FALSE(pipeline->Drain(absl::Milliseconds(50)));  // the answer is not sent yet
  permit->Reset();
  EXPECT_TRUE(pipeline->Drain(absl::Seconds(5)));
}

// A server that has sent its clients away (GOAWAY) serves the calls it is handed while it waits
// for the rest; only StopAdmitting refuses.
TEST(PipelineTest, WaitIdleAdmitsUntilStopAdmitting) {
  const auto OneText = [](const std::string& text) {
    EmbedRequestSpec spec;
    spec.inputs = {Text(text)};
    spec.seq_length = 8;
    spec.heads = {Head::kPooled};
    return spec;
  };
  auto pipeline = MakePipeline();
  auto permit = pipeline->Admit();
  ASSERT_TRUE(permit.ok());
  EXPECT_FALSE(pipeline->WaitIdle(absl::Milliseconds(20)));
  auto late = pipeline->Admit();  // arrived while waiting: admitted
  ASSERT_TRUE(late.ok());
  auto served = EmbedSync(pipeline.get(), OneText("served while waiting"));
  ASSERT_TRUE(served.ok()) << served.status();
  permit->Reset();
  late->Reset();
  EXPECT_TRUE(pipeline->WaitIdle(absl::Seconds(5)));
  pipeline->StopAdmitting();
  EXPECT_EQ(pipeline->Admit().status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(EmbedSync(pipeline.get(), OneText("refused")).status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_TRUE(pipeline->Drain(absl::Seconds(5)));
}

// The byte budget's tests: one input's sequence output padded to 16 rows, an answer of
// kPaddedAnswer bytes (16 rows x 4 floats, and 1,024 + 128 + 48 bytes of framing).
constexpr int64_t kPaddedAnswer = 16 * kHidden * 4 + 1024 + 128 + 48;

EmbedRequestSpec PaddedSequenceSpec() {
  EmbedRequestSpec spec;
  spec.inputs = {Text("hello world")};
  spec.seq_length = 16;
  spec.heads = {Head::kSequence};
  return spec;
}

std::unique_ptr<Pipeline> BudgetPipeline(int64_t max_answer_memory_bytes) {
  PipelineOptions options = TestOptions();
  options.max_answer_memory_bytes = max_answer_memory_bytes;
  return MakePipeline(options);
}

TEST(PipelineTest, AnswersCountAgainstTheByteBudgetUntilReleased) {
  constexpr int64_t kAnswer = kPaddedAnswer;
  auto pipeline = BudgetPipeline(2 * kAnswer + 1300);  // a pooled answer (1,216) fits too
  const EmbedRequestSpec spec = PaddedSequenceSpec();
  auto first = EmbedSync(pipeline.get(), spec);
  auto second = EmbedSync(pipeline.get(), spec);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(first->memory.count(), kAnswer);
  EXPECT_EQ(pipeline->answer_memory_bytes(), 2 * kAnswer);
  // A third answer would pass the budget: refused (before its tokenization: padded, its size
  // is known from the request), nothing held for it.
  auto third = EmbedSync(pipeline.get(), spec);
  EXPECT_EQ(third.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(third.status().message().find("answers being computed or sent"),
            absl::string_view::npos)
      << third.status();
  EXPECT_EQ(pipeline->answer_memory_bytes(), 2 * kAnswer);
  // A smaller one still fits (pooled only: one vector).
  EmbedRequestSpec pooled = spec;
  pooled.heads = {Head::kPooled};
  auto small = EmbedSync(pipeline.get(), pooled);
  ASSERT_TRUE(small.ok()) << small.status();
  small->memory.Reset();
  // Held in a permit, the bytes go with it (as the server holds an answer until sent).
  auto permit = pipeline->Admit();
  ASSERT_TRUE(permit.ok());
  permit->Hold(std::move(first->memory));
  EXPECT_EQ(pipeline->answer_memory_bytes(), 2 * kAnswer);
  permit->Reset();
  EXPECT_EQ(pipeline->answer_memory_bytes(), kAnswer);
  EXPECT_TRUE(EmbedSync(pipeline.get(), spec).ok());  // fits again (and released at once)
  second->memory.Reset();
  EXPECT_EQ(pipeline->answer_memory_bytes(), 0);
  EXPECT_EQ(pipeline->in_flight(), 0);
}

TEST(PipelineTest, AnAnswerThatCannotFitIsRefusedBeforeTokenization) {
  auto pipeline = BudgetPipeline(kPaddedAnswer + kPaddedAnswer / 2);  // one fits, two do not
  const EmbedRequestSpec spec = PaddedSequenceSpec();
  auto held = EmbedSync(pipeline.get(), spec);
  ASSERT_TRUE(held.ok()) << held.status();
  // Padded, the answer's size is known from the request: refused on the caller's thread,
  // before Embed returns, without tokenizing.
  auto permit = pipeline->Admit();
  ASSERT_TRUE(permit.ok());
  std::thread::id answered_on;
  absl::Status status;
  pipeline->Embed(spec, absl::InfiniteFuture(), nullptr, [&](absl::StatusOr<EmbedResult> r) {
    answered_on = std::this_thread::get_id();
    status = r.status();
  });
  EXPECT_EQ(answered_on, std::this_thread::get_id());
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
  permit->Reset();
  held->memory.Reset();
  EXPECT_TRUE(EmbedSync(pipeline.get(), spec).ok());  // fits again
}

TEST(PipelineTest, AnAnswerLargerThanItsLeastSizeIsRefusedAfterTokenization) {
  // Four inputs of 4 tokens each ([CLS] hello world [SEP]), trimmed: 1,024 + 4 x (176 + 4 x
  // 16) = 1,984 bytes. Before tokenization only one token per input is sure: 1,792 bytes,
  // which fit in the budget of 1,900, so the request is tokenized and then refused.
  auto pipeline = BudgetPipeline(1900);
  EmbedRequestSpec spec;
  spec.inputs = {Text("hello world"), Text("hello world"), Text("hello world"),
                 Text("hello world")};
  spec.heads = {Head::kSequence};
  spec.padding = PaddingMode::kTrim;
  auto permit = pipeline->Admit();
  ASSERT_TRUE(permit.ok());
  absl::Notification done;
  std::thread::id answered_on;
  absl::Status status;
  pipeline->Embed(spec, absl::InfiniteFuture(), nullptr, [&](absl::StatusOr<EmbedResult> r) {
    answered_on = std::this_thread::get_id();
    status = r.status();
    done.Notify();
  });
  done.WaitForNotification();
  EXPECT_NE(answered_on, std::this_thread::get_id());  // on a tokenization worker
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
  EXPECT_NE(status.message().find("this one's 1984 bytes"), absl::string_view::npos) << status;
  EXPECT_EQ(pipeline->answer_memory_bytes(), 0);
}

TEST(PipelineTest, AFailedRequestHoldsNoAnswerBytes) {
  auto pipeline = BudgetPipeline(1 << 20);
  EmbedRequestSpec spec;
  spec.inputs = {Text("hello world good morning")};
  spec.seq_length = 4;
  spec.truncation = Truncation::kReject;  // too long: fails at tokenization, before reserving
  spec.heads = {Head::kSequence};
  EXPECT_EQ(EmbedSync(pipeline.get(), spec).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(pipeline->answer_memory_bytes(), 0);

  // Cancelled before its batch: it fails after its bytes were reserved, and has returned
  // them by the time its caller hears of it.
  spec.truncation = Truncation::kTruncate;
  auto permit = pipeline->Admit();
  ASSERT_TRUE(permit.ok());
  absl::Notification done;
  absl::StatusOr<EmbedResult> out;
  int64_t held_when_answered = -1;
  pipeline->Embed(spec, absl::InfiniteFuture(), std::make_shared<std::atomic<bool>>(true),
                  [&](absl::StatusOr<EmbedResult> r) {
                    held_when_answered = pipeline->answer_memory_bytes();
                    out = std::move(r);
                    done.Notify();
                  });
  done.WaitForNotification();
  EXPECT_EQ(out.status().code(), absl::StatusCode::kCancelled) << out.status();
  EXPECT_EQ(held_when_answered, 0);
  EXPECT_EQ(pipeline->answer_memory_bytes(), 0);
}

// Records OnEngineFallbacks.
class FallbackRecorder : public PipelineObserver {
 public:
  void OnEngineFallbacks(const std::vector<EngineFallback>& totals) override {
    absl::MutexLock lock(&mu_);
    reports_.push_back(totals.size() == 1 ? totals[0].count : -1);
  }
  std::vector<int64_t> reports() const {
    absl::MutexLock lock(&mu_);
    return reports_;
  }

 private:
  mutable absl::Mutex mu_;
  std::vector<int64_t> reports_;  // the one path's count, per report
};

// The observer hears the warm-up's fallbacks once, at Start, then each change while serving.
TEST(PipelineTest, ObserverHearsTheEnginesFallbacks) {
  constexpr int32_t kHello = 5;  // in the vocab below, and in the warm-up (word ids 0..63)
  auto engine = std::make_unique<FaultInjectingEngine>(
      std::make_unique<FakeEngine>(SmallEngine()), kHello, FaultInjectingEngine::Fault::kFallback);
  engine->Arm();
  FallbackRecorder recorder;
  auto tokenizer = BertTokenizer::FromTokens(
      {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world"}, BertTokenizer::Options());
  ASSERT_TRUE(tokenizer.ok());
  PipelineOptions options;
  options.max_batch_delay = absl::Milliseconds(1);
  Pipeline pipeline(options, std::move(engine), *std::move(tokenizer), &recorder);
  ASSERT_TRUE(pipeline.Warmup().ok());
  EXPECT_TRUE(recorder.reports().empty());
  pipeline.Start();
  const std::vector<int64_t> at_start = recorder.reports();
  ASSERT_EQ(at_start.size(), 1u);
  const int64_t warmup = at_start[0];
  EXPECT_GE(warmup, 1);  // the warm-up's one batch held the word

  EmbedRequestSpec world;
  world.inputs = {Text("world")};
  ASSERT_TRUE(EmbedSync(&pipeline, world).ok());
  EmbedRequestSpec hello;
  hello.inputs = {Text("hello world")};
  ASSERT_TRUE(EmbedSync(&pipeline, hello).ok());
  ASSERT_TRUE(EmbedSync(&pipeline, world).ok());
  EXPECT_EQ(recorder.reports(), (std::vector<int64_t>{warmup, warmup + 1}));
  pipeline.Drain();
}

// Records the queue depths the batcher reports.
class DepthRecorder : public PipelineObserver {
 public:
  void OnQueueDepth(int depth) override {
    absl::MutexLock lock(&mu_);
    depths_.push_back(depth);
  }
  std::vector<int> depths() const {
    absl::MutexLock lock(&mu_);
    return depths_;
  }

 private:
  mutable absl::Mutex mu_;
  std::vector<int> depths_;
};

// A request's inputs reach the batcher together (the queue's depth steps from 0 to 4, never
// through 1-3): with no batching delay at all, an idle engine still gets them in one batch.
TEST(PipelineTest, ARequestsInputsFormOneBatchWithoutADelay) {
  auto engine = std::make_unique<FakeEngine>(SmallEngine());
  FakeEngine* fake = engine.get();
  auto tokenizer = BertTokenizer::FromTokens({"[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello", "world"},
                                             BertTokenizer::Options());
  ASSERT_TRUE(tokenizer.ok());
  PipelineOptions options;
  options.max_batch_delay = absl::ZeroDuration();
  DepthRecorder recorder;
  Pipeline pipeline(options, std::move(engine), *std::move(tokenizer), &recorder);
  ASSERT_TRUE(pipeline.Warmup().ok());
  pipeline.Start();
  for (int round = 0; round < 20; ++round) {
    const size_t before = fake->batches().size();
    EmbedRequestSpec spec;
    spec.inputs = {Text("hello"), Text("world"), Text("hello world"), Text("world hello world")};
    ASSERT_TRUE(EmbedSync(&pipeline, spec).ok());
    const std::vector<FakeEngine::Record> batches = fake->batches();
    ASSERT_EQ(batches.size(), before + 1) << "round " << round;
    EXPECT_EQ(batches.back().num_sequences, 4) << "round " << round;
  }
  pipeline.Drain();
  const std::vector<int> depths = recorder.depths();
  EXPECT_EQ(depths.size(), 40u);  // 4 then 0, per request
  for (int depth : depths) EXPECT_TRUE(depth == 0 || depth == 4) << depth;
}

// A pipeline whose batching delay is `delay`, waited out adaptively or every time.
std::unique_ptr<Pipeline> DelayPipeline(absl::Duration delay, bool adaptive) {
  PipelineOptions options = TestOptions();
  options.max_batch_delay = delay;
  options.adaptive_batch_delay = adaptive;
  return MakePipeline(options);
}

// How long one lone "hello world" request takes.
absl::Duration LoneRequest(Pipeline* pipeline) {
  EmbedRequestSpec spec;
  spec.inputs = {Text("hello world")};
  const absl::Time start = absl::Now();
  EXPECT_TRUE(EmbedSync(pipeline, spec).ok());
  return absl::Now() - start;
}

// The default, adaptive delay: a caller alone waits out the delay only until waiting has
// gained nothing a few times (Batcher::kFruitlessWaits), then its requests reach the idle
// engine at once. A request that failed while being tokenized must not leave the batcher
// expecting its sequences: checked while that request's answer is still being delivered
// (its callback blocks), so that only a release before the answer passes.
TEST(PipelineTest, ALoneCallerStopsWaitingForTheBatchingDelay) {
  auto pipeline = DelayPipeline(absl::Milliseconds(300), /*adaptive=*/true);
  for (int round = 0; round < Batcher::kFruitlessWaits; ++round) {
    EXPECT_GE(LoneRequest(pipeline.get()), absl::Milliseconds(250)) << "round " << round;
  }
  for (int round = 0; round < 3; ++round) {
    EXPECT_LT(LoneRequest(pipeline.get()), absl::Milliseconds(150)) << "round " << round;
  }
  EmbedRequestSpec too_long;
  too_long.inputs = {Text("hello world hello world hello world")};
  too_long.seq_length = 4;
  too_long.truncation = Truncation::kReject;
  auto permit = pipeline->Admit();
  ASSERT_TRUE(permit.ok());
  absl::Notification failed, answered;
  pipeline->Embed(too_long, absl::InfiniteFuture(), nullptr,
                  [&, permit = std::make_shared<Admission::Permit>(*std::move(permit))](
                      absl::StatusOr<EmbedResult> r) {
                    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
                    failed.Notify();
                    answered.WaitForNotificationWithTimeout(absl::Seconds(30));
                  });
  ASSERT_TRUE(failed.WaitForNotificationWithTimeout(absl::Seconds(30)));
  EXPECT_LT(LoneRequest(pipeline.get()), absl::Milliseconds(150)) << "after the failed request";
  answered.Notify();
  EXPECT_TRUE(pipeline->Drain(absl::Seconds(5)));
}

// adaptive_batch_delay = false: every batch for an idle engine waits the delay.
TEST(PipelineTest, WithoutTheAdaptiveDelayEveryLoneRequestWaits) {
  auto pipeline = DelayPipeline(absl::Milliseconds(300), /*adaptive=*/false);
  for (int round = 0; round < Batcher::kFruitlessWaits + 1; ++round) {
    EXPECT_GE(LoneRequest(pipeline.get()), absl::Milliseconds(250)) << "round " << round;
  }
  EXPECT_TRUE(pipeline->Drain(absl::Seconds(5)));
}

// Counts every hook.
class CountingObserver : public PipelineObserver {
 public:
  void OnBatch(const BatchStats&) override { ++batches; }
  void OnQueueDepth(int) override { ++depths; }
  void OnEngineFallbacks(const std::vector<EngineFallback>&) override { ++fallbacks; }
  std::atomic<int> batches{0}, depths{0}, fallbacks{0};
};

TEST(PipelineObserversTest, EveryHookReachesEveryObserver) {
  CountingObserver a, b;
  PipelineObservers both({&a, &b});
  both.OnBatch(BatchStats());
  both.OnQueueDepth(3);
  both.OnEngineFallbacks({});
  for (const CountingObserver* o : {&a, &b}) {
    EXPECT_EQ(o->batches, 1);
    EXPECT_EQ(o->depths, 1);
    EXPECT_EQ(o->fallbacks, 1);
  }
}

// A watchdog polls EngineBusyFor and started() from its own thread while the pipeline warms
// up, starts, serves and drains: the reading moves from the warm-up's clock to the Batcher's.
// A crash check (a Batcher read before it exists would fault; the sanitized build would
// report a use of freed memory): its expectations only guard the loop.
TEST(PipelineTest, EngineBusyForCanBeReadThroughWarmupStartAndServing) {
  auto pipeline = std::make_unique<Pipeline>(
      PipelineOptions(), std::make_unique<FakeEngine>(SmallEngine()),
      *BertTokenizer::FromTokens({"[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello"},
                                 BertTokenizer::Options()),
      nullptr);
  std::atomic<bool> stop{false};
  std::atomic<int> reads{0}, reads_started{0};
  std::thread reader([&] {
    while (!stop.load()) {
      (void)pipeline->EngineBusyFor();
      if (pipeline->started()) ++reads_started;
      ++reads;
    }
  });
  ASSERT_TRUE(pipeline->Warmup().ok());
  pipeline->Start();
  EmbedRequestSpec spec;
  spec.inputs = {Text("hello")};
  EXPECT_TRUE(EmbedSync(pipeline.get(), spec).ok());
  pipeline->Drain();
  while (reads_started.load() == 0) absl::SleepFor(absl::Milliseconds(1));
  stop = true;
  reader.join();  // before the Pipeline goes, as EngineBusyFor requires
  EXPECT_GT(reads.load(), 0);
}

TEST(PipelineTest, TokenizeReturnsPaddedEncodings) {
  auto pipeline = MakePipeline();
  TokenizeRequestSpec spec;
  spec.inputs = {Text("Hello WORLD", "good")};
  spec.seq_length = 8;
  auto encodings = pipeline->Tokenize(spec);
  ASSERT_TRUE(encodings.ok()) << encodings.status();
  const Encoding& e = (*encodings)[0];
  EXPECT_EQ(e.tokens,
            (std::vector<std::string>{"[CLS]", "hello", "world", "[SEP]", "good", "[SEP]"}));
  EXPECT_EQ(e.word_ids, (std::vector<int32_t>{2, 5, 6, 3, 7, 3, 0, 0}));
  EXPECT_EQ(e.mask, (std::vector<int32_t>{1, 1, 1, 1, 1, 1, 0, 0}));
  EXPECT_EQ(e.type_ids, (std::vector<int32_t>{0, 0, 0, 0, 1, 1, 0, 0}));
}

TEST(PipelineTest, DecodeGivesOneTextPerInput) {
  auto pipeline = MakePipeline();
  DecodeRequestSpec spec;
  spec.inputs = {{2, 5, 6, 3, 0, 0}, {}, {4, 7, 8}};
  auto result = pipeline->Decode(spec);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->texts, (std::vector<std::string>{"hello world", "", "good morning"}));
  spec.keep_special_tokens = true;
  absl::Notification done;
  absl::StatusOr<DecodeResult> on_worker;
  pipeline->DecodeOnWorker(spec, [&](absl::StatusOr<DecodeResult> r) {
    on_worker = std::move(r);
    done.Notify();
  });
  done.WaitForNotification();
  ASSERT_TRUE(on_worker.ok()) << on_worker.status();
  EXPECT_EQ(on_worker->texts, (std::vector<std::string>{"[CLS] hello world [SEP] [PAD] [PAD]", "",
                                                        "[MASK] good morning"}));
  // Validation: every id in the model's vocabulary, at least one input, at most the limit.
  spec.inputs = {{5}, {5, -1}};
  EXPECT_EQ(pipeline->Decode(spec).status().message(),
            "inputs[1].ids[1]: -1 is outside the vocabulary [0, 100)");
  spec.inputs = {{100}};
  EXPECT_EQ(pipeline->Decode(spec).status().code(), absl::StatusCode::kInvalidArgument);
  spec.inputs.clear();
  EXPECT_EQ(pipeline->Decode(spec).status().code(), absl::StatusCode::kInvalidArgument);
  spec.inputs.assign(5, {5});  // max_inputs_per_request is 4
  EXPECT_EQ(pipeline->Decode(spec).status().message(), "inputs: 5 inputs exceed the limit of 4");
}

TEST(PipelineTest, DecodeRefusesTextsThatCouldPassTheMessageLimit) {
  PipelineOptions options = TestOptions();
  // "hello world" twice: a bound of 2 * (6 + 6) for the tokens and 6 per text for framing.
  options.max_response_bytes = 2 * (6 + 6) + 2 * 6;
  auto pipeline = MakePipeline(options);
  DecodeRequestSpec spec;
  spec.inputs = {{5, 6}, {5, 6}};
  EXPECT_TRUE(pipeline->Decode(spec).ok());
  // Special tokens that are left out do not count...
  spec.inputs[1] = {2, 5, 6, 3, 0, 0, 0};
  EXPECT_TRUE(pipeline->Decode(spec).ok());
  // ...kept, they do.
  spec.keep_special_tokens = true;
  EXPECT_EQ(pipeline->Decode(spec).status().code(), absl::StatusCode::kInvalidArgument);
  spec.keep_special_tokens = false;
  spec.inputs[1] = {5, 6, 7};
  const absl::Status over = pipeline->Decode(spec).status();
  EXPECT_EQ(over.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(over.message(),
            "the texts could take 41 bytes, over the server's 36-byte message limit: send fewer "
            "ids");
}

TEST(PipelineTest, DecodeAnswersCountInTheAnswerMemoryUntilLetGo) {
  PipelineOptions options = TestOptions();
  options.max_answer_memory_bytes = 40;
  auto pipeline = MakePipeline(options);
  DecodeRequestSpec spec;
  spec.inputs = {{5, 6}};  // a bound of 6 + 6 + 6 bytes
  auto first = pipeline->Decode(spec);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(pipeline->answer_memory_bytes(), 18);
  auto second = pipeline->Decode(spec);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(pipeline->answer_memory_bytes(), 36);
  const absl::Status third = pipeline->Decode(spec).status();  // 54 would pass 40
  EXPECT_EQ(third.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(third.message().find("of answers being computed or sent"), absl::string_view::npos)
      << third;
  first->memory.Reset();
  EXPECT_EQ(pipeline->answer_memory_bytes(), 18);
  EXPECT_TRUE(pipeline->Decode(spec).ok());  // its bytes go when the result does
  EXPECT_EQ(pipeline->answer_memory_bytes(), 18);
}

}  // namespace
}  // namespace bert
