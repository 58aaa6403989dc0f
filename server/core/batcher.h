// The dynamic batcher: many requests' sequences in, engine-sized ragged batches out.
//
// One batcher thread owns the queue. It cuts a batch when the queued rows reach the
// token budget (`max_batch_tokens`, counting every row the engine will compute, padding
// rows included) or when the oldest queued sequence has waited `max_batch_delay` (with
// `adaptive_delay`, only where waiting pays: see BatcherOptions). Before
// a sequence enters a batch, and again when the engine takes the batch, the batcher drops
// it if its deadline has passed or its client has cancelled (completing it with
// DEADLINE_EXCEEDED / CANCELLED). Batches go to the engine thread through a one-slot
// handoff, so the next batch forms while the engine runs the current one; until the engine
// takes it, that batch keeps taking newly queued sequences that fit the budget (under
// load, batches fill up instead of being cut at the delay). The engine thread is the only
// user of the Engine.
//
// Every enqueued item's `done` runs exactly once, on the batcher or engine thread (or, for
// an item enqueued after Drain(), inside Enqueue); keep it short (schedule real work
// elsewhere). Thread-safe: Enqueue from any thread.
#ifndef BERT_SERVER_CORE_BATCHER_H_
#define BERT_SERVER_CORE_BATCHER_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/engine/engine.h"

namespace bert {

// What one finished batch hands each of its items.
struct BatchSlice {
  std::shared_ptr<const EncoderOutput> output;
  std::shared_ptr<const std::vector<int>> layers;  // The batch's selection.layers.
  int index = 0;                                   // The item's sequence index in the batch.
  int row_begin = 0;  // Its first row in the batch's row-major outputs.
  int rows = 0;
  int64_t queue_us = 0;      // Enqueue to the start of its batch's Encode.
  int64_t inference_us = 0;  // Its batch's Encode.
};

struct BatchItem {
  std::vector<int32_t> word_ids;
  std::vector<int32_t> type_ids;  // Same length as word_ids, or empty (all 0).
  // Rows to compute, padding rows included: word_ids.size() plus the TF-Hub padding rows
  // (e.g. seq_length under PAD_TO_SEQ_LENGTH). Enqueue raises a smaller value (0: no padding)
  // to word_ids.size(); from then on these rows are what the item costs in the token budget,
  // what the engine computes for it and what BatchStats::rows and BatchSlice::rows count.
  int rows = 0;
  // What this item needs from its batch.
  bool pooled = false;
  bool mean_pooled = false;
  bool cls = false;
  bool sequence = false;
  std::vector<int> layers;  // Sorted, unique, 0-based.
  absl::Time deadline = absl::InfiniteFuture();
  std::shared_ptr<const std::atomic<bool>> cancelled;  // May be null.
  std::function<void(const absl::Status&, const BatchSlice&)> done;
};

struct BatchStats {
  int num_sequences = 0;
  int rows = 0;         // Rows computed, padding rows included.
  int real_tokens = 0;  // Rows that are real tokens.
  int64_t inference_us = 0;
  absl::Status status;  // the engine's
};

struct BatcherOptions {
  int max_batch_tokens = 8192;
  absl::Duration max_batch_delay = absl::Microseconds(2000);
  // Wait out max_batch_delay only while waiting pays; false: every new batch waits it out (or
  // a full budget). With it, the batcher counts the waits in a row that gained no sequence.
  // After kFruitlessWaits of them (a caller alone: each wait only delays its answer), a new
  // batch waits only for sequences expected (Expect(): e.g. requests being tokenized) and
  // is otherwise handed over at once, except every kProbeEvery-th, which waits out the
  // delay again; one wait that gains a sequence (callers in step) restores waiting.
  bool adaptive_delay = false;
  std::function<void(const BatchStats&)> on_batch;  // Engine thread; may be empty.
  // Engine thread, at most once; may be empty: a batch failed and the engine reports itself
  // unusable for good (Engine::Health), with that error.
  std::function<void(const absl::Status&)> on_engine_failure;
  // Engine thread; may be empty: the engine's fallback totals (Engine::Fallbacks), after a
  // batch that raised any of them above what the engine reported when the Batcher started
  // (or at its last report).
  std::function<void(const std::vector<EngineFallback>&)> on_fallbacks;
  // Queued sequences, after each change; may be empty. Called with the batcher's lock held
  // (so the reports arrive in order): keep it quick and never call the Batcher from it.
  std::function<void(int)> on_queue_depth;
};

// How long a call (an engine batch) has been running, for a watchdog on another thread. On
// the steady clock, so that a step of the wall clock makes no call look stuck (or fresh).
// Times one call at a time: Begin and End alternate, from one thread at a time.
class BusyClock {
 public:
  void Begin();          // the call starts
  absl::Duration End();  // it returned: how long it ran
  // Zero while no call runs. Any thread.
  absl::Duration BusyFor() const;

 private:
  std::atomic<int64_t> started_ns_{0};  // steady-clock nanoseconds at Begin; 0 while idle
};

class Batcher {
 public:
  // BatcherOptions::adaptive_delay's rule.
  static constexpr int kFruitlessWaits = 3;
  static constexpr int kProbeEvery = 32;

  // `engine` must outlive the Batcher. Starts both threads.
  Batcher(Engine* engine, BatcherOptions options);
  // Drain(), then joins the threads.
  ~Batcher();
  Batcher(const Batcher&) = delete;
  Batcher& operator=(const Batcher&) = delete;

  // A note that sequences are on their way (e.g. a request being tokenized), for
  // BatcherOptions::adaptive_delay: once waits have stopped paying, a new batch still waits
  // (up to max_batch_delay) while any is held. Released by the EnqueueAll it is passed to (with its
  // sequences), by Release() (a request that failed first) or by its destructor, whichever
  // comes first. Movable; must not outlive its Batcher.
  class Expectation {
   public:
    Expectation() = default;  // holds nothing
    Expectation(Expectation&& other) noexcept : batcher_(other.batcher_) {
      other.batcher_ = nullptr;
    }
    Expectation& operator=(Expectation&& other) noexcept;
    ~Expectation() { Release(); }
    void Release();

   private:
    friend class Batcher;
    explicit Expectation(Batcher* batcher) : batcher_(batcher) {}
    Batcher* batcher_ = nullptr;
  };
  // Any thread. Holds nothing without adaptive_delay (nothing would read it).
  Expectation Expect();

  // Queues one sequence. After Drain() the item is completed with UNAVAILABLE.
  void Enqueue(BatchItem item);
  // Queues sequences at once (a request's inputs): the batcher finds all of them queued or none,
  // so that it does not cut a batch between them (beyond the token budget it still must).
  // `announced`: the Expectation that announced them, released as they are queued.
  void EnqueueAll(std::vector<BatchItem> items, Expectation announced);
  void EnqueueAll(std::vector<BatchItem> items);

  // Stops taking items, runs everything already queued without waiting for the delay,
  // and returns when the engine has finished the last batch.
  void Drain();

  // How long the engine has been running its current batch; zero while it is idle. Any
  // thread (a watchdog's: a batch that never ends means a hung device).
  absl::Duration BusyFor() const;

 private:
  struct Queued {
    BatchItem item;
    absl::Time enqueued;
  };
  using Dropped = std::pair<Queued, absl::Status>;  // an item and why it will not run
  struct Batch {
    std::vector<Queued> items;
    int rows = 0;  // The items' rows.
  };

  // How a new batch for the handoff waits for more sequences.
  enum class Wait { kNone, kForExpected, kForDelay };
  Wait ChooseWait() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Before a batch for the empty handoff is cut (the queue is not empty): waits for a full
  // budget or the oldest item's delay, whichever comes first (waiting for expected
  // sequences, until none is expected; or not at all: ChooseWait), and learns from the wait
  // whether waiting pays (adaptive_delay).
  void WaitBeforeCutting() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Moves queued items into `batch` while they fit the budget, dropping expired and
  // cancelled ones into `dropped`.
  void TakeFitting(Batch* batch, std::vector<Dropped>* dropped) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReportDepth() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void BatcherLoop();
  void EngineLoop();
  void RunBatch(Batch batch);
  // Calls on_fallbacks if the engine's fallback counts changed since fallbacks_.
  void ReportNewFallbacks();

  Engine* const engine_;
  const BatcherOptions options_;
  bool engine_failed_ = false;  // engine thread only: on_engine_failure was called
  // Engine thread only: the fallback totals last seen (read when the engine thread starts).
  std::vector<EngineFallback> fallbacks_;
  BusyClock busy_;  // the engine's current batch

  absl::Mutex mu_;
  std::deque<Queued> queue_ ABSL_GUARDED_BY(mu_);
  int queued_rows_ ABSL_GUARDED_BY(mu_) = 0;
  int expected_ ABSL_GUARDED_BY(mu_) = 0;  // Expectations held
  // adaptive_delay's state: delay waits in a row that gained nothing; batches not waited
  // for since the last probe.
  int fruitless_waits_ ABSL_GUARDED_BY(mu_) = 0;
  int skipped_waits_ ABSL_GUARDED_BY(mu_) = 0;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  // The one-slot handoff to the engine thread.
  std::optional<Batch> slot_ ABSL_GUARDED_BY(mu_);
  bool batcher_done_ ABSL_GUARDED_BY(mu_) = false;
  bool engine_done_ ABSL_GUARDED_BY(mu_) = false;

  std::thread batcher_thread_;
  std::thread engine_thread_;
};

}  // namespace bert

#endif  // BERT_SERVER_CORE_BATCHER_H_
