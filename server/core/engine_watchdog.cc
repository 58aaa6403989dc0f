#include "server/core/engine_watchdog.h"

#include <algorithm>
#include <optional>
#include <utility>

namespace bert {

const char* EngineWatchdog::PhaseName(Phase phase) {
  switch (phase) {
    case Phase::kLoad:
      return "load";
    case Phase::kWarmup:
      return "warm-up";
    case Phase::kServing:
      return "serving";
  }
  return "?";
}

EngineWatchdog::EngineWatchdog(absl::Duration load_limit,
                               std::function<void(const Stuck&)> on_stuck)
    : load_limit_(load_limit), on_stuck_(std::move(on_stuck)) {
  load_.Begin();
  thread_ = std::thread([this] { Watch(); });
}

EngineWatchdog::~EngineWatchdog() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  thread_.join();
}

void EngineWatchdog::WatchPipeline(const Pipeline* pipeline, absl::Duration warmup_limit,
                                   absl::Duration serving_limit) {
  absl::MutexLock lock(&mu_);
  if (loading_) load_.End();
  loading_ = false;
  pipeline_ = pipeline;
  warmup_limit_ = warmup_limit;
  serving_limit_ = serving_limit;
}

void EngineWatchdog::Watch() {
  if (std::optional<Stuck> stuck = WaitUntilStuck()) on_stuck_(*stuck);
}

std::optional<EngineWatchdog::Stuck> EngineWatchdog::WaitUntilStuck() {
  int over = 0;  // consecutive checks that found the current phase over its limit
  std::optional<Phase> last_phase;
  absl::MutexLock lock(&mu_);
  for (;;) {
    // The current phase, how long it has run and its limit.
    Phase phase = Phase::kLoad;
    absl::Duration busy = absl::ZeroDuration();
    absl::Duration limit = absl::ZeroDuration();  // detached: never stuck
    if (loading_) {
      busy = load_.BusyFor();
      limit = load_limit_;
    } else if (pipeline_ != nullptr) {
      phase = pipeline_->started() ? Phase::kServing : Phase::kWarmup;
      busy = pipeline_->EngineBusyFor();
      limit = phase == Phase::kServing ? serving_limit_ : warmup_limit_;
    }
    if (phase != last_phase) over = 0;
    last_phase = phase;
    over = limit > absl::ZeroDuration() && busy > limit ? over + 1 : 0;
    if (over >= 2) return Stuck{phase, busy, limit};
    const absl::Duration period =
        limit > absl::ZeroDuration() ? std::min(absl::Seconds(1), limit / 4) : absl::Seconds(1);
    if (mu_.AwaitWithTimeout(absl::Condition(&stop_), period)) return std::nullopt;
  }
}

}  // namespace bert
