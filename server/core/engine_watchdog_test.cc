#include "server/core/engine_watchdog.h"

#include <memory>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "server/core/fake_engine.h"

namespace bert {
namespace {

using Phase = EngineWatchdog::Phase;

// Records the one Stuck a watchdog reports.
struct Report {
  absl::Notification stuck;
  std::optional<EngineWatchdog::Stuck> what;
  std::function<void(const EngineWatchdog::Stuck&)> Callback() {
    return [this](const EngineWatchdog::Stuck& s) {
      what = s;
      stuck.Notify();
    };
  }
};

std::unique_ptr<Pipeline> MakePipeline(FakeEngine** engine) {
  FakeEngine::Options engine_options;
  engine_options.config = FakeEngine::SmallConfig();
  auto fake = std::make_unique<FakeEngine>(engine_options);
  *engine = fake.get();
  auto tokenizer = BertTokenizer::FromTokens({"[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello"},
                                             BertTokenizer::Options());
  EXPECT_TRUE(tokenizer.ok());
  PipelineOptions options;
  options.max_batch_tokens = 64;
  options.max_batch_delay = absl::Milliseconds(1);
  return std::make_unique<Pipeline>(options, std::move(fake), *std::move(tokenizer), nullptr);
}

// Sends one call of "hello"; `answered` is notified when it is answered. False if not admitted.
bool EmbedHello(Pipeline* pipeline, absl::Notification* answered) {
  auto permit = pipeline->Admit();
  if (!permit.ok()) return false;
  EmbedRequestSpec spec;
  InputSpec input;
  input.text_a = "hello";
  spec.inputs = {input};
  // The permit is released once the call is answered, as a server's once its answer is sent.
  pipeline->Embed(std::move(spec), absl::InfiniteFuture(), nullptr,
                  [answered, permit = std::make_shared<Admission::Permit>(*std::move(permit))](
                      absl::StatusOr<EmbedResult>) {
                    permit->Reset();
                    answered->Notify();
                  });
  return true;
}

TEST(EngineWatchdogTest, ALoadOverItsLimitIsStuck) {
  Report report;
  EngineWatchdog watchdog(absl::Milliseconds(100), report.Callback());
  ASSERT_TRUE(report.stuck.WaitForNotificationWithTimeout(absl::Seconds(30)));
  EXPECT_EQ(report.what->phase, Phase::kLoad);
  EXPECT_GT(report.what->busy, absl::Milliseconds(100));
  EXPECT_EQ(report.what->limit, absl::Milliseconds(100));
}

TEST(EngineWatchdogTest, AWarmupBatchOverItsLimitIsStuck) {
  FakeEngine* engine = nullptr;
  std::unique_ptr<Pipeline> pipeline = MakePipeline(&engine);
  Report report;
  {
    EngineWatchdog watchdog(absl::ZeroDuration(), report.Callback());
    watchdog.WatchPipeline(pipeline.get(), absl::Milliseconds(100), absl::ZeroDuration());
    engine->HoldBatches();
    std::thread warmup([&] { EXPECT_TRUE(pipeline->Warmup().ok()); });
    const bool stuck = report.stuck.WaitForNotificationWithTimeout(absl::Seconds(30));
    engine->ReleaseBatches();
    warmup.join();
    ASSERT_TRUE(stuck);
  }
  EXPECT_EQ(report.what->phase, Phase::kWarmup);
  EXPECT_GT(report.what->busy, absl::Milliseconds(100));
}

TEST(EngineWatchdogTest, AServedBatchOverTheServingLimitIsStuck) {
  FakeEngine* engine = nullptr;
  std::unique_ptr<Pipeline> pipeline = MakePipeline(&engine);
  ASSERT_TRUE(pipeline->Warmup().ok());
  pipeline->Start();
  Report report;
  {
    // Load and warm-up limits far above the serving one: the served batch is judged by the
    // latter.
    EngineWatchdog watchdog(absl::Seconds(600), report.Callback());
    watchdog.WatchPipeline(pipeline.get(), absl::Seconds(600), absl::Milliseconds(100));
    absl::SleepFor(absl::Milliseconds(300));  // idle: never stuck
    EXPECT_FALSE(report.stuck.HasBeenNotified());
    engine->HoldBatches();
    absl::Notification answered;
    ASSERT_TRUE(EmbedHello(pipeline.get(), &answered));
    const bool stuck = report.stuck.WaitForNotificationWithTimeout(absl::Seconds(30));
    engine->ReleaseBatches();
    answered.WaitForNotification();
    ASSERT_TRUE(stuck);
  }
  EXPECT_EQ(report.what->phase, Phase::kServing);
  EXPECT_EQ(report.what->limit, absl::Milliseconds(100));
  pipeline->Drain();
}

// Zero limits turn their phases off.
TEST(EngineWatchdogTest, OffPhasesAreNeverStuck) {
  FakeEngine* engine = nullptr;
  std::unique_ptr<Pipeline> pipeline = MakePipeline(&engine);
  Report report;
  EngineWatchdog watchdog(absl::ZeroDuration(), report.Callback());
  absl::SleepFor(absl::Milliseconds(300));  // a "load" of 300 ms with its limit off
  watchdog.WatchPipeline(pipeline.get(), absl::ZeroDuration(), absl::Milliseconds(100));
  engine->HoldBatches();
  std::thread warmup([&] { EXPECT_TRUE(pipeline->Warmup().ok()); });
  absl::SleepFor(absl::Milliseconds(500));  // a warm-up batch of 500 ms, its limit off
  engine->ReleaseBatches();
  warmup.join();
  EXPECT_FALSE(report.stuck.HasBeenNotified());
}

// A detached pipeline is no longer read: a served batch far over the serving limit goes
// unnoticed (and the pipeline may then go).
TEST(EngineWatchdogTest, ADetachedPipelineIsNotWatched) {
  FakeEngine* engine = nullptr;
  std::unique_ptr<Pipeline> pipeline = MakePipeline(&engine);
  ASSERT_TRUE(pipeline->Warmup().ok());
  pipeline->Start();
  Report report;
  EngineWatchdog watchdog(absl::ZeroDuration(), report.Callback());
  watchdog.WatchPipeline(pipeline.get(), absl::ZeroDuration(), absl::Milliseconds(50));
  watchdog.WatchPipeline(nullptr, absl::Milliseconds(50), absl::Milliseconds(50));
  engine->HoldBatches();
  absl::Notification answered;
  ASSERT_TRUE(EmbedHello(pipeline.get(), &answered));
  ASSERT_TRUE(engine->WaitForBatches(2, absl::Seconds(30)));  // the warm-up's, then this one
  absl::SleepFor(absl::Milliseconds(500));                    // ten times the serving limit
  engine->ReleaseBatches();
  answered.WaitForNotification();
  pipeline->Drain();
  pipeline.reset();
  EXPECT_FALSE(report.stuck.HasBeenNotified());
}

}  // namespace
}  // namespace bert
