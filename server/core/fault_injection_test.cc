// FaultInjectingEngine (server/engine/fault_injection.h), over the core's FakeEngine.
#include "server/engine/fault_injection.h"

#include <memory>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "server/core/fake_engine.h"

namespace bert {
namespace {

EncoderBatch Batch(std::vector<int32_t> ids) {
  EncoderBatch batch;
  batch.Add(ids, {}, 0);
  return batch;
}

TEST(FaultInjectingEngineTest, BreaksForGoodOnTheTriggerOnlyOnceArmed) {
  FakeEngine::Options options;
  options.config = FakeEngine::SmallConfig();
  auto fake = std::make_unique<FakeEngine>(options);
  FakeEngine* inner = fake.get();
  FaultInjectingEngine engine(std::move(fake), /*trigger_word_id=*/42);
  OutputSelection pooled;
  pooled.pooled = true;
  EncoderOutput out;

  // Not armed (a server's warm-up): the trigger is an ordinary word.
  EXPECT_TRUE(engine.Encode(Batch({1, 42, 3}), pooled, &out).ok());
  // Health passes the wrapped engine's through.
  EXPECT_TRUE(engine.Health().ok());
  inner->SetFailure(absl::InternalError("a batch of the wrapped engine failed"));
  EXPECT_EQ(engine.Encode(Batch({1, 2}), pooled, &out).code(), absl::StatusCode::kInternal);
  EXPECT_TRUE(engine.Health().ok());
  inner->SetFailure(absl::OkStatus());

  engine.Arm();
  EXPECT_TRUE(engine.Encode(Batch({1, 2, 3}), pooled, &out).ok());
  EXPECT_FALSE(out.pooled.empty());
  EXPECT_EQ(engine.Encode(Batch({5, 42}), pooled, &out).code(), absl::StatusCode::kInternal);
  EXPECT_TRUE(out.pooled.empty());
  EXPECT_EQ(engine.Health().code(), absl::StatusCode::kUnavailable);
  // For good: batches without the trigger fail too, with the health's error.
  EXPECT_EQ(engine.Encode(Batch({1, 2, 3}), pooled, &out), engine.Health());
}

TEST(FaultInjectingEngineTest, FallbackServesTheBatchAndCountsIt) {
  FakeEngine::Options options;
  options.config = FakeEngine::SmallConfig();
  FaultInjectingEngine engine(std::make_unique<FakeEngine>(options), /*trigger_word_id=*/42,
                              FaultInjectingEngine::Fault::kFallback);
  OutputSelection pooled;
  pooled.pooled = true;
  EncoderOutput out;
  auto count = [&engine] {
    const std::vector<EngineFallback> fallbacks = engine.Fallbacks();
    EXPECT_EQ(fallbacks.size(), 1u);  // FakeEngine has none of its own
    return fallbacks.empty() ? -1 : fallbacks[0].count;
  };
  EXPECT_EQ(count(), 0);  // listed before any fallback
  EXPECT_TRUE(engine.Encode(Batch({42}), pooled, &out).ok());
  EXPECT_EQ(count(), 0);  // not armed
  engine.Arm();
  EXPECT_TRUE(engine.Encode(Batch({1, 42, 3}), pooled, &out).ok());
  EXPECT_FLOAT_EQ(out.pooled[0], FakeEngine::Value(1, 0, 0, 1, 0) + 0.5f);  // served as usual
  EXPECT_TRUE(engine.Encode(Batch({1, 2}), pooled, &out).ok());
  EXPECT_TRUE(engine.Encode(Batch({42}), pooled, &out).ok());
  EXPECT_EQ(count(), 2);
  EXPECT_EQ(engine.Fallbacks()[0].path, "debug_fault");
  EXPECT_TRUE(engine.Health().ok());
}

}  // namespace
}  // namespace bert
