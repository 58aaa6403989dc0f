// Drives one step of a load run against a BertService: closed loop (a fixed number of
// calls kept in flight) or open loop (calls sent on a schedule of constant or Poisson
// gaps, whether or not earlier ones have been answered), over the gRPC callback API, as
// unary Embed calls, as messages on EmbedStream streams, or as unary Rerank calls.
#ifndef BERT_CLIENT_LOAD_RUNNER_H_
#define BERT_CLIENT_LOAD_RUNNER_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "client/connection.h"
#include "client/load_stats.h"
#include "proto/bert/v1/bert_service.grpc.pb.h"

namespace bert {

// The largest step Run takes.
inline constexpr int kMaxConcurrency = 100000;
inline constexpr double kMaxRate = 1e6;  // calls per second

// One step of a sweep: exactly one of concurrency and rate is set.
struct LoadStep {
  int concurrency = 0;  // closed loop: calls kept in flight
  double rate = 0;      // open loop: calls per second
  bool poisson = true;  // open loop: exponential gaps; false: constant gaps
};

struct LoadOptions {
  std::chrono::nanoseconds warmup{std::chrono::seconds(2)};
  std::chrono::nanoseconds duration{std::chrono::seconds(10)};
  // Each call's deadline, counted from its intended send time. A call the schedule
  // reaches only after its deadline is recorded as DEADLINE_EXCEEDED without being sent,
  // so a step of unary calls ends at most `timeout` after its window (streams: see
  // `stream`).
  std::chrono::milliseconds timeout{std::chrono::seconds(30)};
  // Open loop: sends wait while this many calls are in flight (the wait is counted in
  // the latency of the calls it delays).
  int max_outstanding = 4096;
  // Closed loop: a call refused by the server (RESOURCE_EXHAUSTED, UNAVAILABLE) after a
  // refused call of the same slot frees its slot only this long after its answer, so that
  // a concurrency above what the server admits (or a server that refuses everything) does
  // not turn into a loop of refused calls as fast as the client can send them. A first
  // refusal is sent again at once. 0: always at once.
  std::chrono::milliseconds refused_backoff{20};
  uint64_t seed = 1;  // of the Poisson schedule
  // Send the calls as messages of EmbedStream (one bidirectional stream per channel, calls
  // in turn over them) instead of unary Embed calls. A stream has no per-message deadline:
  // an answer later than `timeout` counts as DEADLINE_EXCEEDED, but an unanswered message
  // holds its place until the stream ends (at the latest window end + timeout +
  // drain_grace, when Drain cancels it), so a stalled stream can stretch a step that long.
  bool stream = false;
  // How long after the last deadline Drain waits before cancelling what is still open.
  std::chrono::milliseconds drain_grace{std::chrono::seconds(10)};
  // Keep every call's record (~100 bytes each) in StepResult::calls, e.g. to write them
  // out. Without it a step's memory does not grow with its length: the summary is built
  // as calls finish.
  bool keep_calls = false;
};

// One step: the summary of its calls over its measured window (after the warm-up), and,
// with LoadOptions::keep_calls, the calls themselves (in the order they finished; times in
// nanoseconds since the step began, like the window's).
struct StepResult {
  StepSummary summary;
  std::vector<CallRecord> calls;
  int64_t window_begin_ns = 0;
  int64_t window_end_ns = 0;
  // A closed loop in stream mode stops sending when every stream has ended (each further
  // call would fail at once): when it stopped (nanoseconds since the step began; -1: it ran
  // to the window's end) and the first stream's end status ("CODE: message").
  int64_t stopped_ns = -1;
  std::string stopped_why;
};

// Sends `requests` in turn (wrapping around) over `stubs` in turn. Not thread-safe: one
// Run at a time.
class LoadRunner {
 public:
  LoadRunner(const Connection* connection,
             std::vector<std::unique_ptr<v1::BertService::Stub>> stubs,
             std::vector<v1::EmbedRequest> requests, LoadOptions options);
  // Sends Rerank calls instead (unary: LoadOptions::stream must be false). A call's inputs
  // are its texts, its tokens those of its ranked pairs.
  LoadRunner(const Connection* connection,
             std::vector<std::unique_ptr<v1::BertService::Stub>> stubs,
             std::vector<v1::RerankRequest> requests, LoadOptions options);

  // Runs `step`: warm-up, then the measured window, then waits for every call sent.
  // `at_window_edge` (may be empty) is called from another thread as the window begins
  // (true) and ends (false), e.g. to read the server's metrics; Run waits for it to
  // return. INVALID_ARGUMENT for a step or options out of range (concurrency <= 1e5,
  // rate <= 1e6/s, positive duration, timeout and max_outstanding; no streams of Rerank
  // calls); INTERNAL when calls
  // are still unanswered long after their deadlines (gRPC broken). After INTERNAL, late
  // callbacks may still use this runner, its stubs and channels: it must not be destroyed
  // (bert_load exits at once).
  absl::StatusOr<StepResult> Run(const LoadStep& step,
                                 const std::function<void(bool begin)>& at_window_edge);

 private:
  class Step;

  const Connection* connection_;
  std::vector<std::unique_ptr<v1::BertService::Stub>> stubs_;
  std::vector<v1::EmbedRequest> requests_;
  std::vector<v1::RerankRequest> rerank_requests_;  // instead of requests_
  LoadOptions options_;
  uint64_t next_call_ = 0;  // the next request and stub, in turn (sender thread only)
};

}  // namespace bert

#endif  // BERT_CLIENT_LOAD_RUNNER_H_
