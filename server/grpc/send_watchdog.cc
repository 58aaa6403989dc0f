#include "server/grpc/send_watchdog.h"

#include <algorithm>
#include <thread>
#include <utility>

#include "absl/time/clock.h"

namespace bert {

SendWatchdog::SendWatchdog(absl::Duration limit, std::function<void()> on_cancel)
    : limit_(limit), on_cancel_(std::move(on_cancel)) {
  if (limit_ > absl::ZeroDuration()) thread_ = std::thread([this] { Run(); });
}

SendWatchdog::~SendWatchdog() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

uint64_t SendWatchdog::Watch(grpc::CallbackServerContext* context) {
  Entry entry;
  entry.context = context;
  return Add(entry);
}

uint64_t SendWatchdog::Watch(Cancellable* call) {
  Entry entry;
  entry.call = call;
  return Add(entry);
}

uint64_t SendWatchdog::Add(Entry entry) {
  if (limit_ <= absl::ZeroDuration()) return 0;
  entry.deadline = absl::Now() + limit_;
  absl::MutexLock lock(&mu_);
  const uint64_t id = next_id_++;
  watched_.emplace(id, entry);
  return id;
}

void SendWatchdog::Unwatch(uint64_t id) {
  if (id == 0) return;
  absl::MutexLock lock(&mu_);
  if (watched_.erase(id) > 0) return;
  // Being cancelled: from inside TryCancel (the checking thread itself) it may go on; from
  // any other thread, only once TryCancel has returned.
  if (std::this_thread::get_id() == thread_.get_id()) return;
  const auto cancelled = [this, id]()
                             ABSL_SHARED_LOCKS_REQUIRED(mu_) { return cancelling_.count(id) == 0; };
  mu_.Await(absl::Condition(&cancelled));
}

void SendWatchdog::Run() {
  // Checked a few times per limit (at most every 100 ms), so a call is cancelled at most
  // that much past its limit.
  const absl::Duration every = std::min(absl::Milliseconds(100), limit_ / 4);
  absl::MutexLock lock(&mu_);
  while (!stopping_) {
    const absl::Time now = absl::Now();
    for (auto it = watched_.begin(); it != watched_.end();) {
      if (it->second.deadline > now) {
        ++it;
        continue;
      }
      cancelling_.insert(*it);
      it = watched_.erase(it);
    }
    if (!cancelling_.empty()) {
      std::map<uint64_t, Entry> overdue = cancelling_;
      mu_.Unlock();
      for (const auto& [id, entry] : overdue) {
        if (entry.context != nullptr) {
          entry.context->TryCancel();
        } else {
          entry.call->TryCancel();
        }
        if (on_cancel_) on_cancel_();
      }
      mu_.Lock();
      cancelled_.fetch_add(static_cast<int64_t>(overdue.size()));
      cancelling_.clear();  // wakes the Unwatch calls waiting for them
    }
    mu_.AwaitWithTimeout(absl::Condition(&stopping_), every);
  }
}

}  // namespace bert
