// A watchdog for a hung device: a batch that never ends fails nothing, so nothing else
// notices it. It watches the engine from before it is made (the load: a GPU context that
// never comes up) through the warm-up to serving, and calls `on_stuck` once when the current
// phase has run over its limit: the load longer than `load_limit`; one warm-up batch, or one
// served batch, longer than its limit (given with the pipeline, once the engine is known).
// (bert_server then turns health NOT_SERVING and exits 1, so that a supervisor restarts it.)
//
// The phase must be over its limit at two checks in a row, so that a process frozen and
// thawed (SIGSTOP, a paused container) during a short batch is not taken for a hung one (a
// pause as long as the limit, during a batch or the load, still is). Steady clock throughout.
#ifndef BERT_SERVER_CORE_ENGINE_WATCHDOG_H_
#define BERT_SERVER_CORE_ENGINE_WATCHDOG_H_

#include <functional>
#include <optional>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/core/pipeline.h"

namespace bert {

class EngineWatchdog {
 public:
  enum class Phase { kLoad, kWarmup, kServing };
  static const char* PhaseName(Phase phase);

  // What on_stuck is told.
  struct Stuck {
    Phase phase;
    absl::Duration busy;   // how long the load or batch had been running
    absl::Duration limit;  // the phase's limit
  };

  // Starts watching the load at once. A zero limit turns its phase off.
  EngineWatchdog(absl::Duration load_limit, std::function<void(const Stuck&)> on_stuck);
  // Stops watching (and joins its thread; on_stuck may be running and is waited for).
  ~EngineWatchdog();
  EngineWatchdog(const EngineWatchdog&) = delete;
  EngineWatchdog& operator=(const EngineWatchdog&) = delete;

  // The load is over: from now on the watchdog reads `pipeline`'s EngineBusyFor, its warm-up
  // batches against `warmup_limit`, then, once it has started, the served ones against
  // `serving_limit`. `pipeline` must outlive the watchdog, or be detached first by
  // WatchPipeline(nullptr, ...), which stops the watching.
  void WatchPipeline(const Pipeline* pipeline, absl::Duration warmup_limit,
                     absl::Duration serving_limit);

 private:
  void Watch();
  // Checks the current phase until it is stuck (its Stuck) or the watchdog stops (nullopt).
  std::optional<Stuck> WaitUntilStuck();

  const absl::Duration load_limit_;
  const std::function<void(const Stuck&)> on_stuck_;
  BusyClock load_;  // from construction to WatchPipeline
  absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool loading_ ABSL_GUARDED_BY(mu_) = true;
  const Pipeline* pipeline_ ABSL_GUARDED_BY(mu_) = nullptr;
  absl::Duration warmup_limit_ ABSL_GUARDED_BY(mu_);
  absl::Duration serving_limit_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace bert

#endif  // BERT_SERVER_CORE_ENGINE_WATCHDOG_H_
