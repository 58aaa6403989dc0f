#include "server/core/batcher.h"

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "server/core/fake_engine.h"
#include "server/engine/fault_injection.h"

namespace bert {
namespace {

FakeEngine::Options EngineOptions(absl::Duration latency = absl::ZeroDuration()) {
  FakeEngine::Options o;
  o.config = FakeEngine::SmallConfig();
  o.latency = latency;
  return o;
}

// Collects the completion of each item.
struct Completion {
  absl::Notification done;
  absl::Status status;
  BatchSlice slice;
  absl::Time at;
};

BatchItem MakeItem(std::vector<int32_t> ids, int rows, Completion* c) {
  BatchItem item;
  item.word_ids = std::move(ids);
  item.rows = rows;
  item.sequence = true;
  item.mean_pooled = true;
  item.pooled = true;
  item.layers = {0};
  item.done = [c](const absl::Status& s, const BatchSlice& slice) {
    c->status = s;
    c->slice = slice;
    c->at = absl::Now();
    c->done.Notify();
  };
  return item;
}

TEST(BatcherTest, CutsByTokenBudget) {
  FakeEngine engine(EngineOptions());
  BatcherOptions options;
  options.max_batch_tokens = 10;
  options.max_batch_delay = absl::Milliseconds(300);
  std::vector<Completion> c(5);
  {
    Batcher batcher(&engine, options);
    for (int i = 0; i < 5; ++i) batcher.Enqueue(MakeItem({1, 2, 3, 4}, 4, &c[i]));
    for (auto& x : c) x.done.WaitForNotification();
  }
  const auto batches = engine.batches();
  ASSERT_EQ(batches.size(), 3u);
  EXPECT_EQ(batches[0].num_sequences, 2);
  EXPECT_EQ(batches[1].num_sequences, 2);
  EXPECT_EQ(batches[2].num_sequences, 1);
  for (const auto& b : batches) EXPECT_LE(b.total_rows, 10);
  for (auto& x : c) EXPECT_TRUE(x.status.ok()) << x.status;
}

TEST(BatcherTest, PaddingRowsCountAgainstTheBudget) {
  FakeEngine engine(EngineOptions());
  BatcherOptions options;
  options.max_batch_tokens = 16;
  options.max_batch_delay = absl::Milliseconds(300);
  std::vector<Completion> c(4);
  {
    Batcher batcher(&engine, options);
    // Two real tokens each, but padded to 8 rows: only two fit in 16.
    for (int i = 0; i < 4; ++i) batcher.Enqueue(MakeItem({5, 6}, 8, &c[i]));
    for (auto& x : c) x.done.WaitForNotification();
  }
  const auto batches = engine.batches();
  ASSERT_EQ(batches.size(), 2u);
  EXPECT_EQ(batches[0].total_rows, 16);
  EXPECT_EQ(batches[1].total_rows, 16);
}

// BatchItem::rows below the item's tokens (0: no padding) is raised to the tokens once, on
// Enqueue: the budget, the engine's batch, BatchStats and the slices all count the tokens.
TEST(BatcherTest, RowsBelowTheTokensCountAsTheTokens) {
  FakeEngine engine(EngineOptions());
  absl::Mutex mu;
  std::vector<BatchStats> stats;
  BatcherOptions options;
  options.max_batch_tokens = 4;
  options.max_batch_delay = absl::Milliseconds(300);
  options.on_batch = [&](const BatchStats& s) {
    absl::MutexLock lock(&mu);
    stats.push_back(s);
  };
  std::vector<Completion> c(2);
  {
    Batcher batcher(&engine, options);
    batcher.Enqueue(MakeItem({1, 2, 3}, 0, &c[0]));
    batcher.Enqueue(MakeItem({4, 5, 6}, 2, &c[1]));
    for (auto& x : c) x.done.WaitForNotification();
  }
  // 3 + 3 rows exceed the budget of 4: two batches.
  const auto batches = engine.batches();
  ASSERT_EQ(batches.size(), 2u);
  for (const auto& b : batches) EXPECT_EQ(b.total_rows, 3);
  absl::MutexLock lock(&mu);
  ASSERT_EQ(stats.size(), 2u);
  for (const BatchStats& s : stats) {
    EXPECT_EQ(s.rows, 3);
    EXPECT_EQ(s.real_tokens, 3);
    EXPECT_EQ(s.num_sequences, 1);
  }
  for (auto& x : c) {
    ASSERT_TRUE(x.status.ok()) << x.status;
    EXPECT_EQ(x.slice.rows, 3);
  }
}

TEST(BatcherTest, CutsByDelayWhenBudgetIsNotReached) {
  FakeEngine engine(EngineOptions());
  BatcherOptions options;
  options.max_batch_tokens = 1000;
  options.max_batch_delay = absl::Milliseconds(60);
  std::vector<Completion> c(3);
  const absl::Time start = absl::Now();
  {
    Batcher batcher(&engine, options);
    for (int i = 0; i < 3; ++i) batcher.Enqueue(MakeItem({1, 2}, 2, &c[i]));
    for (auto& x : c) x.done.WaitForNotification();
  }
  ASSERT_EQ(engine.batches().size(), 1u);
  EXPECT_EQ(engine.batches()[0].num_sequences, 3);
  EXPECT_GE(c[0].at - start, absl::Milliseconds(50));
}

// adaptive_delay: a caller alone gains nothing by waiting, so after kFruitlessWaits waits the
// batcher stops waiting; every kProbeEvery-th batch waits again, and one whose wait gains a
// sequence makes the next batches wait again.
TEST(BatcherTest, AdaptiveDelayStopsWaitingForALoneCallerAndProbesAgain) {
  FakeEngine engine(EngineOptions());
  BatcherOptions options;
  options.max_batch_delay = absl::Milliseconds(300);
  options.adaptive_delay = true;
  Batcher batcher(&engine, options);
  // Enqueues one item (and, with `company`, a second one 50 ms later) and returns how long
  // the first took.
  auto lone_call = [&](bool company = false) {
    std::vector<Completion> c(2);
    const absl::Time start = absl::Now();
    batcher.Enqueue(MakeItem({1, 2}, 2, &c[0]));
    if (company) {
      absl::SleepFor(absl::Milliseconds(50));
      batcher.Enqueue(MakeItem({3}, 1, &c[1]));
      EXPECT_TRUE(c[1].done.WaitForNotificationWithTimeout(absl::Seconds(30)));
    }
    EXPECT_TRUE(c[0].done.WaitForNotificationWithTimeout(absl::Seconds(30)));
    return c[0].at - start;
  };
  const absl::Duration waited = absl::Milliseconds(250), at_once = absl::Milliseconds(150);
  for (int i = 0; i < Batcher::kFruitlessWaits; ++i) EXPECT_GE(lone_call(), waited) << i;
  for (int i = 1; i < Batcher::kProbeEvery; ++i) EXPECT_LT(lone_call(), at_once) << i;
  EXPECT_GE(lone_call(), waited) << "the probe";
  EXPECT_LT(lone_call(), at_once) << "after a fruitless probe";
  for (int i = 2; i < Batcher::kProbeEvery; ++i) EXPECT_LT(lone_call(), at_once) << i;
  const size_t before = engine.batches().size();
  EXPECT_GE(lone_call(/*company=*/true), waited) << "a probe that gains a sequence";
  ASSERT_EQ(engine.batches().size(), before + 1);
  EXPECT_EQ(engine.batches().back().num_sequences, 2);
  EXPECT_GE(lone_call(), waited) << "waiting pays again";
}

// adaptive_delay learns only from waits that could gain something: batches a full budget
// cuts at once do not count as fruitless waits.
TEST(BatcherTest, AdaptiveDelayLearnsOnlyFromRealWaits) {
  FakeEngine engine(EngineOptions());
  BatcherOptions options;
  options.max_batch_tokens = 2;
  options.max_batch_delay = absl::Milliseconds(300);
  options.adaptive_delay = true;
  Batcher batcher(&engine, options);
  for (int i = 0; i < 2 * Batcher::kFruitlessWaits; ++i) {
    Completion c;
    batcher.Enqueue(MakeItem({1, 2}, 2, &c));  // a full budget
    ASSERT_TRUE(c.done.WaitForNotificationWithTimeout(absl::Seconds(30)));
  }
  Completion lone;
  const absl::Time start = absl::Now();
  batcher.Enqueue(MakeItem({1}, 1, &lone));
  ASSERT_TRUE(lone.done.WaitForNotificationWithTimeout(absl::Seconds(30)));
  EXPECT_GE(lone.at - start, absl::Milliseconds(250)) << "still waiting: nothing learnt yet";
}

// adaptive_delay, once waits have stopped paying: a batch waits (up to the delay) for the
// sequences an Expectation announces and is cut when they are queued, holding them; an
// EnqueueAll given the Expectation releases it with its items; moving an Expectation keeps
// it held; its destructor, Release() and assigning over it release it.
TEST(BatcherTest, AdaptiveDelayWaitsForExpectedSequencesOnly) {
  FakeEngine engine(EngineOptions());
  BatcherOptions options;
  options.max_batch_delay = absl::Seconds(1);
  options.adaptive_delay = true;
  Batcher batcher(&engine, options);
  for (int i = 0; i < Batcher::kFruitlessWaits; ++i) {  // waits that gain nothing
    Completion c;
    batcher.Enqueue(MakeItem({1}, 1, &c));
    ASSERT_TRUE(c.done.WaitForNotificationWithTimeout(absl::Seconds(30)));
  }
  const size_t learned = engine.batches().size();
  // Waits for what was announced, and only that long (the delay is 1 s).
  std::vector<Completion> c(6);
  Batcher::Expectation expected = batcher.Expect();
  batcher.Enqueue(MakeItem({1, 2}, 2, &c[0]));
  EXPECT_FALSE(c[0].done.WaitForNotificationWithTimeout(absl::Milliseconds(300)));
  Batcher::Expectation moved = std::move(expected);
  expected.Release();  // moved from: holds nothing
  std::vector<BatchItem> announced;
  announced.push_back(MakeItem({3, 4, 5}, 3, &c[1]));
  batcher.EnqueueAll(std::move(announced), std::move(moved));
  for (int i = 0; i < 2; ++i)
    ASSERT_TRUE(c[i].done.WaitForNotificationWithTimeout(absl::Seconds(5)));
  ASSERT_EQ(engine.batches().size(), learned + 1);
  EXPECT_EQ(engine.batches().back().num_sequences, 2);
  // Nothing announced: at once.
  const absl::Time start = absl::Now();
  batcher.Enqueue(MakeItem({6}, 1, &c[2]));
  ASSERT_TRUE(c[2].done.WaitForNotificationWithTimeout(absl::Seconds(5)));
  EXPECT_LT(c[2].at - start, absl::Milliseconds(500));
  {
    Batcher::Expectation scoped = batcher.Expect();
    batcher.Enqueue(MakeItem({7}, 1, &c[3]));
    EXPECT_FALSE(c[3].done.WaitForNotificationWithTimeout(absl::Milliseconds(200)));
  }
  ASSERT_TRUE(c[3].done.WaitForNotificationWithTimeout(absl::Seconds(5)));
  EXPECT_LT(c[3].at - start, absl::Milliseconds(900)) << "released by the destructor";
  // Two held, one released: still waiting; assigning over the other releases it.
  const absl::Time again = absl::Now();
  Batcher::Expectation a = batcher.Expect(), b = batcher.Expect();
  batcher.Enqueue(MakeItem({8}, 1, &c[4]));
  a.Release();
  EXPECT_FALSE(c[4].done.WaitForNotificationWithTimeout(absl::Milliseconds(200)));
  b = Batcher::Expectation();
  ASSERT_TRUE(c[4].done.WaitForNotificationWithTimeout(absl::Seconds(5)));
  EXPECT_LT(c[4].at - again, absl::Milliseconds(900)) << "released by the assignment";
}

TEST(BatcherTest, OversizedItemRunsAlone) {
  FakeEngine engine(EngineOptions());
  BatcherOptions options;
  options.max_batch_tokens = 4;
  options.max_batch_delay = absl::Milliseconds(1);
  Completion a, b;
  {
    Batcher batcher(&engine, options);
    batcher.Enqueue(MakeItem(std::vector<int32_t>(10, 7), 10, &a));
    batcher.Enqueue(MakeItem({1}, 1, &b));
    a.done.WaitForNotification();
    b.done.WaitForNotification();
  }
  EXPECT_TRUE(a.status.ok());
  EXPECT_TRUE(b.status.ok());
  ASSERT_EQ(engine.batches().size(), 2u);
  EXPECT_EQ(engine.batches()[0].total_rows, 10);
}

TEST(BatcherTest, SlicesMatchEachItemsRows) {
  FakeEngine engine(EngineOptions());
  BatcherOptions options;
  options.max_batch_tokens = 100;
  options.max_batch_delay = absl::Milliseconds(20);
  Completion a, b;
  {
    Batcher batcher(&engine, options);
    BatchItem first = MakeItem({10, 11, 12}, 5, &a);  // 3 tokens + 2 padding rows
    first.type_ids = {0, 1, 1};
    batcher.Enqueue(std::move(first));
    batcher.Enqueue(MakeItem({20, 21}, 2, &b));
    a.done.WaitForNotification();
    b.done.WaitForNotification();
  }
  ASSERT_TRUE(a.status.ok());
  ASSERT_EQ(engine.batches().size(), 1u);
  EXPECT_EQ(a.slice.index, 0);
  EXPECT_EQ(a.slice.row_begin, 0);
  EXPECT_EQ(a.slice.rows, 5);
  EXPECT_EQ(b.slice.index, 1);
  EXPECT_EQ(b.slice.row_begin, 5);
  EXPECT_EQ(b.slice.rows, 2);
  const int h = 4;
  const EncoderOutput& out = *b.slice.output;
  // b's second row: word 21, type 0, position 1, last layer (1).
  EXPECT_FLOAT_EQ(out.sequence[(b.slice.row_begin + 1) * h + 2], FakeEngine::Value(21, 0, 1, 1, 2));
  // a's padding row 4: word 0, type 0, position 4.
  EXPECT_FLOAT_EQ(out.sequence[4 * h], FakeEngine::Value(0, 0, 4, 1, 0));
  // a's row 1 has type 1.
  EXPECT_FLOAT_EQ(out.sequence[1 * h], FakeEngine::Value(11, 1, 1, 1, 0));
  ASSERT_EQ(*a.slice.layers, std::vector<int>{0});
  EXPECT_FLOAT_EQ(out.layers[0][1 * h], FakeEngine::Value(11, 1, 1, 0, 0));
  // mean over a's 3 valid rows only.
  const float mean = (FakeEngine::Value(10, 0, 0, 1, 0) + FakeEngine::Value(11, 1, 1, 1, 0) +
                      FakeEngine::Value(12, 1, 2, 1, 0)) /
                     3;
  EXPECT_NEAR(out.mean_pooled[0], mean, 1e-2);
}

TEST(BatcherTest, DropsExpiredAndCancelledItems) {
  FakeEngine engine(EngineOptions());
  BatcherOptions options;
  options.max_batch_tokens = 100;
  options.max_batch_delay = absl::Milliseconds(5);
  Completion expired, cancelled, live;
  {
    Batcher batcher(&engine, options);
    BatchItem e = MakeItem({1}, 1, &expired);
    e.deadline = absl::Now() - absl::Seconds(1);
    batcher.Enqueue(std::move(e));
    BatchItem c = MakeItem({2}, 1, &cancelled);
    auto flag = std::make_shared<std::atomic<bool>>(true);
    c.cancelled = flag;
    batcher.Enqueue(std::move(c));
    BatchItem l = MakeItem({3}, 1, &live);
    l.deadline = absl::Now() + absl::Seconds(30);
    batcher.Enqueue(std::move(l));
    expired.done.WaitForNotification();
    cancelled.done.WaitForNotification();
    live.done.WaitForNotification();
  }
  EXPECT_EQ(expired.status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(cancelled.status.code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE(live.status.ok());
  ASSERT_EQ(engine.batches().size(), 1u);
  EXPECT_EQ(engine.batches()[0].num_sequences, 1);
}

// The queue depth the batcher last reported (its reports arrive in order).
class DepthWatch {
 public:
  // Batcher options reporting here: `max_batch_tokens`, a 2 ms delay.
  BatcherOptions Options(int max_batch_tokens) {
    BatcherOptions options;
    options.max_batch_tokens = max_batch_tokens;
    options.max_batch_delay = absl::Milliseconds(2);
    options.on_queue_depth = [this](int depth) { depth_ = depth; };
    return options;
  }
  // Waits until the last report is `depth`; false after 5 s.
  bool WaitFor(int depth) const {
    const absl::Time limit = absl::Now() + absl::Seconds(5);
    while (depth_.load() != depth) {
      if (absl::Now() > limit) return false;
      absl::SleepFor(absl::Milliseconds(1));
    }
    return true;
  }

 private:
  std::atomic<int> depth_{-1};
};

TEST(BatcherTest, NextBatchFormsWhileEngineRuns) {
  FakeEngine engine(EngineOptions());
  engine.HoldBatches();
  DepthWatch depth;
  const BatcherOptions options = depth.Options(100);
  Completion a, b, c;
  {
    Batcher batcher(&engine, options);
    // A failed ASSERT must not leave the engine held: ~Batcher waits for it.
    absl::Cleanup release = [&engine] { engine.ReleaseBatches(); };
    batcher.Enqueue(MakeItem({1}, 1, &a));
    ASSERT_TRUE(engine.WaitForBatches(1, absl::Seconds(5)));  // the engine runs a
    batcher.Enqueue(MakeItem({2}, 1, &b));
    batcher.Enqueue(MakeItem({3}, 1, &c));
    // b and c leave the queue (into the next batch) while a's batch is still running.
    EXPECT_TRUE(depth.WaitFor(0));
    EXPECT_FALSE(a.done.HasBeenNotified());
    engine.ReleaseBatches();
    a.done.WaitForNotification();
    b.done.WaitForNotification();
    c.done.WaitForNotification();
  }
  ASSERT_EQ(engine.batches().size(), 2u);
  EXPECT_EQ(engine.batches()[1].num_sequences, 2);
}

// A batch cut while the engine is busy keeps taking what arrives, up to the budget, until
// the engine takes it: under load, batches fill instead of being cut at the delay.
TEST(BatcherTest, BatchWaitingForTheEngineTakesLaterArrivalsThatFit) {
  FakeEngine engine(EngineOptions());
  engine.HoldBatches();
  DepthWatch depth;
  const BatcherOptions options = depth.Options(3);
  std::vector<Completion> c(6);
  {
    Batcher batcher(&engine, options);
    // A failed ASSERT must not leave the engine held: ~Batcher waits for it.
    absl::Cleanup release = [&engine] { engine.ReleaseBatches(); };
    batcher.Enqueue(MakeItem({1}, 1, &c[0]));
    ASSERT_TRUE(engine.WaitForBatches(1, absl::Seconds(5)));  // the engine runs c[0]
    batcher.Enqueue(MakeItem({2}, 1, &c[1]));
    ASSERT_TRUE(depth.WaitFor(0));  // c[1]'s batch is cut and waits for the engine
    for (int i = 2; i < 6; ++i) batcher.Enqueue(MakeItem({3}, 1, &c[i]));
    // c[2] and c[3] join it (3 rows: the budget); c[4] and c[5] stay queued.
    ASSERT_TRUE(depth.WaitFor(2));
    engine.ReleaseBatches();
    for (auto& x : c) x.done.WaitForNotification();
  }
  std::string sizes;
  for (const auto& b : engine.batches()) sizes += std::to_string(b.num_sequences) + " ";
  ASSERT_EQ(engine.batches().size(), 3u) << sizes;
  EXPECT_EQ(engine.batches()[0].num_sequences, 1);
  EXPECT_EQ(engine.batches()[1].num_sequences, 3);
  EXPECT_EQ(engine.batches()[2].num_sequences, 2);
  for (auto& x : c) EXPECT_TRUE(x.status.ok()) << x.status;
}

// Items that expire or are cancelled while their batch waits for the engine do not run.
TEST(BatcherTest, DropsItemsThatGoStaleWhileTheirBatchWaits) {
  FakeEngine engine(EngineOptions());
  engine.HoldBatches();
  DepthWatch depth;
  const BatcherOptions options = depth.Options(100);
  Completion a, b, expiring, cancelled;
  absl::Time released;
  {
    Batcher batcher(&engine, options);
    // A failed ASSERT must not leave the engine held: ~Batcher waits for it.
    absl::Cleanup release = [&engine] { engine.ReleaseBatches(); };
    batcher.Enqueue(MakeItem({1}, 1, &a));
    ASSERT_TRUE(engine.WaitForBatches(1, absl::Seconds(5)));
    batcher.Enqueue(MakeItem({2}, 1, &b));
    BatchItem soon = MakeItem({3}, 1, &expiring);
    soon.deadline = absl::Now() + absl::Milliseconds(300);
    batcher.Enqueue(std::move(soon));
    auto flag = std::make_shared<std::atomic<bool>>(false);
    BatchItem gone = MakeItem({4}, 1, &cancelled);
    gone.cancelled = flag;
    batcher.Enqueue(std::move(gone));
    ASSERT_TRUE(depth.WaitFor(0));  // all three wait in the next batch
    absl::SleepFor(absl::Milliseconds(400));
    *flag = true;
    released = absl::Now();
    engine.ReleaseBatches();
    for (Completion* x : {&a, &b, &expiring, &cancelled}) x->done.WaitForNotification();
  }
  EXPECT_TRUE(b.status.ok()) << b.status;
  EXPECT_EQ(expiring.status.code(), absl::StatusCode::kDeadlineExceeded);
  // Dropped when the engine took the batch, not before it joined it.
  EXPECT_GE(expiring.at, released);
  EXPECT_EQ(cancelled.status.code(), absl::StatusCode::kCancelled);
  ASSERT_EQ(engine.batches().size(), 2u);
  EXPECT_EQ(engine.batches()[1].num_sequences, 1);  // b alone
}

TEST(BatcherTest, EngineErrorReachesEveryItemOfTheBatch) {
  FakeEngine engine(EngineOptions());
  engine.SetFailure(absl::InternalError("device fault"));
  BatcherOptions options;
  options.max_batch_delay = absl::Milliseconds(5);
  Completion a, b;
  {
    Batcher batcher(&engine, options);
    batcher.Enqueue(MakeItem({1}, 1, &a));
    batcher.Enqueue(MakeItem({2}, 1, &b));
    a.done.WaitForNotification();
    b.done.WaitForNotification();
  }
  EXPECT_EQ(a.status.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(b.status.code(), absl::StatusCode::kInternal);
}

TEST(BatcherTest, DrainRunsQueuedItemsThenRefuses) {
  FakeEngine engine(EngineOptions(absl::Milliseconds(20)));
  BatcherOptions options;
  options.max_batch_tokens = 2;
  options.max_batch_delay = absl::Seconds(10);  // Drain must not wait for this.
  std::vector<Completion> c(6);
  Batcher batcher(&engine, options);
  for (int i = 0; i < 5; ++i) batcher.Enqueue(MakeItem({1}, 1, &c[i]));
  const absl::Time start = absl::Now();
  batcher.Drain();
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(c[i].done.HasBeenNotified()) << i;
    EXPECT_TRUE(c[i].status.ok());
  }
  batcher.Enqueue(MakeItem({1}, 1, &c[5]));
  ASSERT_TRUE(c[5].done.HasBeenNotified());
  EXPECT_EQ(c[5].status.code(), absl::StatusCode::kUnavailable);
}

// EnqueueAll: the batcher finds a request's items all queued at once (the queue's depth goes
// from 0 to 3 in one step), so even without a batching delay an idle engine gets them in one
// batch; after Drain every one is refused.
TEST(BatcherTest, EnqueueAllKeepsItemsTogether) {
  FakeEngine engine(EngineOptions());
  absl::Mutex mu;
  std::vector<int> depths;
  BatcherOptions options;
  options.max_batch_delay = absl::ZeroDuration();
  options.on_queue_depth = [&](int depth) {
    absl::MutexLock lock(&mu);
    depths.push_back(depth);
  };
  std::vector<Completion> c(6);
  Batcher batcher(&engine, options);
  for (int round = 0; round < 2; ++round) {
    std::vector<BatchItem> items;
    for (int i = 0; i < 3; ++i) items.push_back(MakeItem({1, 2, 3}, 0, &c[3 * round + i]));
    if (round == 1) batcher.Drain();
    batcher.EnqueueAll(std::move(items));
  }
  for (int i = 0; i < 6; ++i) {
    ASSERT_TRUE(c[i].done.WaitForNotificationWithTimeout(absl::Seconds(30))) << i;
    EXPECT_EQ(c[i].status.code(), i < 3 ? absl::StatusCode::kOk : absl::StatusCode::kUnavailable)
        << i;
  }
  const std::vector<FakeEngine::Record> batches = engine.batches();
  ASSERT_EQ(batches.size(), 1u);
  EXPECT_EQ(batches[0].num_sequences, 3);
  absl::MutexLock lock(&mu);
  EXPECT_EQ(depths, (std::vector<int>{3, 0}));
}

// A batch that fails on an engine that stays healthy is that batch's error only; an engine
// that reports itself unusable after a failed batch (Engine::Health) is reported once, and
// the batches after it keep getting answers (its errors), so nothing waits.
TEST(BatcherTest, ReportsAnEngineThatBrokeForGoodOnce) {
  auto fake = std::make_unique<FakeEngine>(EngineOptions());
  FakeEngine* inner = fake.get();
  auto engine = std::make_unique<FaultInjectingEngine>(std::move(fake), /*trigger_word_id=*/42);
  engine->Arm();
  absl::Mutex mu;
  std::vector<absl::Status> reported;
  BatcherOptions options;
  options.max_batch_delay = absl::Milliseconds(1);
  options.on_engine_failure = [&](const absl::Status& s) {
    absl::MutexLock lock(&mu);
    reported.push_back(s);
  };
  std::vector<Completion> c(5);
  {
    Batcher batcher(engine.get(), options);
    auto run = [&](int i, std::vector<int32_t> ids) {
      batcher.Enqueue(MakeItem(std::move(ids), 0, &c[i]));
      c[i].done.WaitForNotification();
    };
    run(0, {1, 2, 3});
    inner->SetFailure(absl::InternalError("a failed batch, engine still fine"));
    run(1, {1, 2});
    inner->SetFailure(absl::OkStatus());
    run(2, {4, 42, 5});  // breaks the engine
    run(3, {1});
    run(4, {2});
  }
  EXPECT_TRUE(c[0].status.ok()) << c[0].status;
  EXPECT_EQ(c[1].status.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(c[2].status.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(c[3].status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(c[4].status.code(), absl::StatusCode::kUnavailable);
  absl::MutexLock lock(&mu);
  ASSERT_EQ(reported.size(), 1u);
  EXPECT_EQ(reported[0].code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(reported[0], engine->Health());
}

// on_fallbacks: the totals after a batch that changed them, measured from the totals the
// engine had when the Batcher started (the warm-up's are not reported again).
TEST(BatcherTest, ReportsFallbacksOnlyWhenTheyChange) {
  auto engine = std::make_unique<FaultInjectingEngine>(
      std::make_unique<FakeEngine>(EngineOptions()), /*trigger_word_id=*/42,
      FaultInjectingEngine::Fault::kFallback);
  engine->Arm();
  OutputSelection pooled;
  pooled.pooled = true;
  EncoderOutput out;
  EncoderBatch warmup;
  warmup.Add(std::vector<int32_t>{42}, {}, 0);
  ASSERT_TRUE(engine->Encode(warmup, pooled, &out).ok());  // a fallback before the Batcher
  absl::Mutex mu;
  std::vector<std::vector<EngineFallback>> reports;
  BatcherOptions options;
  options.max_batch_delay = absl::Milliseconds(1);
  options.on_fallbacks = [&](const std::vector<EngineFallback>& totals) {
    absl::MutexLock lock(&mu);
    reports.push_back(totals);
  };
  std::vector<Completion> c(4);
  {
    Batcher batcher(engine.get(), options);
    auto run = [&](int i, std::vector<int32_t> ids) {
      batcher.Enqueue(MakeItem(std::move(ids), 0, &c[i]));
      c[i].done.WaitForNotification();
    };
    run(0, {1, 2, 3});
    run(1, {4, 42, 5});  // one more fallback
    run(2, {1, 2});
    run(3, {42});  // and another
  }
  for (const Completion& x : c) EXPECT_TRUE(x.status.ok()) << x.status;
  absl::MutexLock lock(&mu);
  ASSERT_EQ(reports.size(), 2u);
  for (size_t i = 0; i < reports.size(); ++i) {
    ASSERT_EQ(reports[i].size(), 1u);
    EXPECT_EQ(reports[i][0].path, "debug_fault");
    EXPECT_EQ(reports[i][0].count, static_cast<int64_t>(i) + 2);
  }
}

// BusyFor: how long the current batch has been in the engine (a watchdog's reading), zero
// while the engine is idle.
TEST(BatcherTest, BusyForCountsTheRunningBatchOnly) {
  FakeEngine engine(EngineOptions());
  BatcherOptions options;
  options.max_batch_delay = absl::Milliseconds(1);
  Completion c;
  Batcher batcher(&engine, options);
  EXPECT_EQ(batcher.BusyFor(), absl::ZeroDuration());
  engine.HoldBatches();
  batcher.Enqueue(MakeItem({1, 2}, 0, &c));
  if (!engine.WaitForBatches(1, absl::Seconds(30))) {
    engine.ReleaseBatches();  // so that the Batcher can drain
    FAIL() << "the batch never reached the engine";
  }
  absl::SleepFor(absl::Milliseconds(50));
  EXPECT_GE(batcher.BusyFor(), absl::Milliseconds(50));
  engine.ReleaseBatches();
  c.done.WaitForNotification();
  EXPECT_EQ(batcher.BusyFor(), absl::ZeroDuration());
}

}  // namespace
}  // namespace bert
