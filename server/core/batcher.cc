#include "server/core/batcher.h"

#include <algorithm>
#include <chrono>
#include <utility>

namespace bert {
namespace {

// A monotonic clock: a wall-clock step must not make a batch look stuck (or fresh).
int64_t SteadyNanos() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

Batcher::Batcher(Engine* engine, BatcherOptions options)
    : engine_(engine), options_(std::move(options)) {
  batcher_thread_ = std::thread([this] { BatcherLoop(); });
  engine_thread_ = std::thread([this] { EngineLoop(); });
}

Batcher::~Batcher() {
  Drain();
  if (batcher_thread_.joinable()) batcher_thread_.join();
  if (engine_thread_.joinable()) engine_thread_.join();
}

Batcher::Expectation Batcher::Expect() {
  if (!options_.adaptive_delay) return Expectation();  // nothing reads the count
  absl::MutexLock lock(&mu_);
  ++expected_;
  return Expectation(this);
}

Batcher::Expectation& Batcher::Expectation::operator=(Expectation&& other) noexcept {
  if (this != &other) {
    Release();
    batcher_ = other.batcher_;
    other.batcher_ = nullptr;
  }
  return *this;
}

void Batcher::Expectation::Release() {
  if (batcher_ == nullptr) return;
  absl::MutexLock lock(&batcher_->mu_);  // the batcher's wait re-checks its condition
  --batcher_->expected_;
  batcher_ = nullptr;
}

void Batcher::Enqueue(BatchItem item) {
  std::vector<BatchItem> one;
  one.push_back(std::move(item));
  EnqueueAll(std::move(one));
}

void Batcher::EnqueueAll(std::vector<BatchItem> items) {
  EnqueueAll(std::move(items), Expectation());
}

void Batcher::EnqueueAll(std::vector<BatchItem> items, Expectation announced) {
  // The one place an item's rows are settled: the budget, the batch and its stats use them.
  for (BatchItem& item : items) {
    item.rows = std::max(item.rows, static_cast<int>(item.word_ids.size()));
  }
  {
    absl::MutexLock lock(&mu_);
    // Released with the items queued, in one step: the batcher never sees the items still
    // announced (it would wait for them), nor the announcement gone before them.
    if (announced.batcher_ == this) {
      --expected_;
      announced.batcher_ = nullptr;
    }
    if (!draining_) {
      const absl::Time now = absl::Now();
      for (BatchItem& item : items) {
        queued_rows_ += item.rows;
        queue_.push_back(Queued{std::move(item), now});
      }
      ReportDepth();
      return;
    }
  }
  for (BatchItem& item : items) {
    item.done(absl::UnavailableError("the server is shutting down"), BatchSlice{});
  }
}

void Batcher::ReportDepth() {
  if (options_.on_queue_depth) options_.on_queue_depth(static_cast<int>(queue_.size()));
}

void Batcher::Drain() {
  absl::MutexLock lock(&mu_);
  draining_ = true;
  mu_.Await(absl::Condition(&engine_done_));
}

namespace {

// Why an item must not run (its deadline passed or its client cancelled), or OK.
absl::Status WhyStale(const BatchItem& item, absl::Time now) {
  // gRPC also cancels a call whose deadline passed: name the deadline first.
  if (item.deadline <= now) {
    return absl::DeadlineExceededError("the deadline passed before inference");
  }
  if (item.cancelled != nullptr && item.cancelled->load()) {
    return absl::CancelledError("the client cancelled the call");
  }
  return absl::OkStatus();
}

}  // namespace

Batcher::Wait Batcher::ChooseWait() {
  if (!options_.adaptive_delay || fruitless_waits_ < kFruitlessWaits) return Wait::kForDelay;
  if (++skipped_waits_ >= kProbeEvery) {
    skipped_waits_ = 0;
    return Wait::kForDelay;  // a probe: would waiting gain sequences again?
  }
  return expected_ > 0 ? Wait::kForExpected : Wait::kNone;
}

void Batcher::WaitBeforeCutting() {
  const Wait wait = ChooseWait();
  const size_t queued_before = queue_.size();
  const absl::Time cut_at = queue_.front().enqueued + options_.max_batch_delay;
  // A wait that a full budget, or a deadline already past (items that waited while an earlier
  // batch took the budget), ends at once says nothing about whether waiting pays.
  const bool learn = options_.adaptive_delay && wait == Wait::kForDelay &&
                     queued_rows_ < options_.max_batch_tokens && cut_at > absl::Now();
  if (wait != Wait::kNone) {
    auto ready = [this, wait]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return draining_ || queued_rows_ >= options_.max_batch_tokens ||
             (wait == Wait::kForExpected && expected_ == 0);
    };
    mu_.AwaitWithDeadline(absl::Condition(&ready), cut_at);
  }
  if (!learn) return;
  if (queue_.size() > queued_before) {
    fruitless_waits_ = 0;  // waiting pays: the next probe comes a full period later
    skipped_waits_ = 0;
  } else {
    ++fruitless_waits_;
  }
}

void Batcher::TakeFitting(Batch* batch, std::vector<Dropped>* dropped) {
  const absl::Time now = absl::Now();
  while (!queue_.empty()) {
    Queued& front = queue_.front();
    if (absl::Status why = WhyStale(front.item, now); !why.ok()) {
      queued_rows_ -= front.item.rows;
      dropped->emplace_back(std::move(front), std::move(why));
      queue_.pop_front();
      continue;
    }
    // Always take at least one item, even one larger than the budget alone.
    if (!batch->items.empty() && batch->rows + front.item.rows > options_.max_batch_tokens) break;
    batch->rows += front.item.rows;
    queued_rows_ -= front.item.rows;
    batch->items.push_back(std::move(front));
    queue_.pop_front();
  }
}

void Batcher::BatcherLoop() {
  for (;;) {
    std::vector<Dropped> dropped;
    {
      absl::MutexLock lock(&mu_);
      auto has_work = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return draining_ || !queue_.empty();
      };
      mu_.Await(absl::Condition(&has_work));
      if (queue_.empty()) break;  // draining and nothing left
      // A batch the engine has not taken yet keeps taking what arrives and fits: it could
      // not start earlier anyway, and a fuller batch costs less per sequence.
      auto taken_or_fitting = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return !slot_.has_value() || (!queue_.empty() && slot_->rows + queue_.front().item.rows <=
                                                             options_.max_batch_tokens);
      };
      mu_.Await(absl::Condition(&taken_or_fitting));
      if (slot_.has_value()) {
        TakeFitting(&*slot_, &dropped);
      } else {
        WaitBeforeCutting();
        Batch batch;
        TakeFitting(&batch, &dropped);
        // Only this thread fills the slot, and it was empty: hand the batch over.
        if (!batch.items.empty()) slot_ = std::move(batch);
      }
      ReportDepth();
    }
    for (auto& [queued, status] : dropped) queued.item.done(status, BatchSlice{});
  }
  absl::MutexLock lock(&mu_);
  batcher_done_ = true;
}

void Batcher::EngineLoop() {
  if (options_.on_fallbacks) fallbacks_ = engine_->Fallbacks();
  for (;;) {
    Batch batch;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return slot_.has_value() || batcher_done_;
      };
      mu_.Await(absl::Condition(&ready));
      if (!slot_.has_value()) break;
      batch = std::move(*slot_);
      slot_.reset();
    }
    // Items may have expired or been cancelled while the batch waited for the engine.
    std::vector<Queued> live;
    const absl::Time now = absl::Now();
    for (Queued& q : batch.items) {
      if (absl::Status why = WhyStale(q.item, now); !why.ok()) {
        q.item.done(why, BatchSlice{});
      } else {
        live.push_back(std::move(q));
      }
    }
    if (live.empty()) continue;
    batch.items = std::move(live);
    RunBatch(std::move(batch));
  }
  absl::MutexLock lock(&mu_);
  engine_done_ = true;
}

void Batcher::ReportNewFallbacks() {
  std::vector<EngineFallback> now = engine_->Fallbacks();
  bool changed = now.size() != fallbacks_.size();
  for (size_t i = 0; !changed && i < now.size(); ++i) {
    changed = now[i].count != fallbacks_[i].count;
  }
  if (!changed) return;
  fallbacks_ = std::move(now);
  options_.on_fallbacks(fallbacks_);
}

void BusyClock::Begin() {
  started_ns_.store(std::max<int64_t>(1, SteadyNanos()), std::memory_order_relaxed);
}

absl::Duration BusyClock::End() {
  const int64_t started = started_ns_.exchange(0, std::memory_order_relaxed);
  return absl::Nanoseconds(SteadyNanos() - started);
}

absl::Duration BusyClock::BusyFor() const {
  const int64_t started = started_ns_.load(std::memory_order_relaxed);
  if (started == 0) return absl::ZeroDuration();
  return absl::Nanoseconds(SteadyNanos() - started);
}

absl::Duration Batcher::BusyFor() const { return busy_.BusyFor(); }

void Batcher::RunBatch(Batch batch) {
  EncoderBatch encoder_batch;
  OutputSelection selection;
  BatchStats stats;
  for (const Queued& q : batch.items) {
    const BatchItem& item = q.item;
    // TF-Hub padding rows (word id 0 = [PAD], type 0) up to item.rows; attended to by nobody.
    encoder_batch.Add(item.word_ids, item.type_ids, item.rows);
    selection.pooled |= item.pooled;
    selection.mean_pooled |= item.mean_pooled;
    selection.cls |= item.cls;
    selection.sequence |= item.sequence;
    selection.layers.insert(selection.layers.end(), item.layers.begin(), item.layers.end());
    stats.rows += item.rows;
    stats.real_tokens += static_cast<int>(item.word_ids.size());
  }
  std::sort(selection.layers.begin(), selection.layers.end());
  selection.layers.erase(std::unique(selection.layers.begin(), selection.layers.end()),
                         selection.layers.end());
  stats.num_sequences = static_cast<int>(batch.items.size());

  auto output = std::make_shared<EncoderOutput>();
  const absl::Time start = absl::Now();  // the items' queue time ends here
  busy_.Begin();
  absl::Status status = engine_->Encode(encoder_batch, selection, output.get());
  stats.inference_us = absl::ToInt64Microseconds(busy_.End());
  stats.status = status;

  // Stats first, so that metrics already count a batch whose answers a client has seen.
  if (options_.on_batch) options_.on_batch(stats);
  if (options_.on_fallbacks) ReportNewFallbacks();
  if (!status.ok() && !engine_failed_) {
    const absl::Status health = engine_->Health();
    if (!health.ok()) {
      engine_failed_ = true;
      if (options_.on_engine_failure) options_.on_engine_failure(health);
    }
  }
  auto layers = std::make_shared<const std::vector<int>>(std::move(selection.layers));
  for (size_t i = 0; i < batch.items.size(); ++i) {
    BatchSlice slice;
    slice.output = output;
    slice.layers = layers;
    slice.index = static_cast<int>(i);
    slice.row_begin = encoder_batch.cu_rows[i];
    slice.rows = encoder_batch.cu_rows[i + 1] - encoder_batch.cu_rows[i];
    slice.queue_us = absl::ToInt64Microseconds(start - batch.items[i].enqueued);
    slice.inference_us = stats.inference_us;
    batch.items[i].item.done(status, slice);
  }
}

}  // namespace bert
