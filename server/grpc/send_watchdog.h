// Puts a time limit on answers waiting for their client. An answer handed to gRPC leaves
// only as fast as the client's HTTP/2 flow-control window lets it, and a request's admission
// permit is held until then (Pipeline::Admit), so a client that stops reading (keeping its
// window at 0) and set no deadline could hold its permits, and lock every other client out,
// for ever. A call whose answer has waited longer than the limit is cancelled, which ends it
// and frees its permit.
//
// A reactor calls Watch(context) just before it hands an answer over (Finish, StartWrite)
// and Unwatch(id) once it is out (OnWriteDone) and at the latest in OnDone, before the
// context goes. One thread checks the watched calls. It takes an overdue call out of the
// watched set and calls TryCancel on it without holding its lock (gRPC may run the call's
// reactions, OnDone included, inside TryCancel); an Unwatch of that call from another thread
// waits until TryCancel has returned, so the context outlives it. Thread-safe.
#ifndef BERT_SERVER_GRPC_SEND_WATCHDOG_H_
#define BERT_SERVER_GRPC_SEND_WATCHDOG_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/server_context.h"

namespace bert {

// Anything with TryCancel(): a gRPC server context, or a test's stand-in.
class Cancellable {
 public:
  virtual ~Cancellable() = default;
  virtual void TryCancel() = 0;
};

class SendWatchdog {
 public:
  // `limit` <= 0: no limit (Watch returns 0 and nothing is ever cancelled). `on_cancel` (may
  // be empty) runs on the watchdog's thread after each call it cancelled.
  explicit SendWatchdog(absl::Duration limit, std::function<void()> on_cancel = nullptr);
  ~SendWatchdog();
  SendWatchdog(const SendWatchdog&) = delete;
  SendWatchdog& operator=(const SendWatchdog&) = delete;

  // Starts the clock for an answer of the call of `context`; the id to Unwatch with (0 when
  // there is no limit). The context must stay valid until Unwatch.
  uint64_t Watch(grpc::CallbackServerContext* context);
  uint64_t Watch(Cancellable* call);
  // Stops it; 0 and ids already stopped (or cancelled) are ignored.
  void Unwatch(uint64_t id);

  // Calls cancelled so far.
  int64_t cancelled() const { return cancelled_.load(); }

 private:
  struct Entry {
    absl::Time deadline;
    grpc::CallbackServerContext* context = nullptr;  // one of the two
    Cancellable* call = nullptr;
  };
  uint64_t Add(Entry entry);
  void Run();

  const absl::Duration limit_;
  const std::function<void()> on_cancel_;
  absl::Mutex mu_;
  std::map<uint64_t, Entry> watched_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, Entry> cancelling_ ABSL_GUARDED_BY(mu_);  // TryCancel running on them
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<int64_t> cancelled_{0};
  std::thread thread_;
};

}  // namespace bert

#endif  // BERT_SERVER_GRPC_SEND_WATCHDOG_H_
