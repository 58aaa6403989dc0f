// The records of a load run's calls and their summary over a measured window.
//
// Latencies are taken from each call's *intended* send time, not from when it was sent: a
// call the load generator could not send on time (because it was waiting for the server)
// still counts the wait, so overload is not hidden (no coordinated omission). The time
// from the actual send is reported next to it as the service time.
#ifndef BERT_CLIENT_LOAD_STATS_H_
#define BERT_CLIENT_LOAD_STATS_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace bert {

// One call. Times are nanoseconds since the step began (steady clock).
struct CallRecord {
  int64_t intended_ns = 0;  // when the schedule wanted it sent
  int64_t sent_ns = -1;     // when it was handed to gRPC; -1: never sent (too late)
  // Open loop: its send waited for a free place under LoadOptions::max_outstanding (the
  // server was behind), rather than only for the sender thread.
  bool held = false;
  int64_t done_ns = 0;  // when its answer or error arrived
  int code = 0;         // grpc::StatusCode
  int inputs = 0;       // inputs in the request
  int64_t tokens = 0;   // real tokens the server reported (OK answers)
  // The server's Timing of the whole request (OK answers), microseconds.
  int64_t server_tokenize_us = 0;
  int64_t server_queue_us = 0;
  int64_t server_inference_us = 0;
  int64_t server_total_us = 0;
};

// A set of durations summarised, milliseconds (a LatencyHistogram's): count and maximum
// exact, mean exact up to a double's sum, percentiles the nearest rank within 0.1 %.
struct LatencySummary {
  int64_t count = 0;
  double mean = 0, p50 = 0, p90 = 0, p95 = 0, p99 = 0, p999 = 0, max = 0;
};

// A set of durations (nanoseconds) counted in log-linear buckets, so that a run of any
// length takes a bounded amount of memory (at most ~0.9 MB; ~0.4 MB for durations up to a
// minute). Durations below 2,048 ns have a bucket each; above, every power of two is split
// into 1,024 buckets, each at most 1/1,024 of its values wide. Each bucket keeps the count
// and the sum of its values; a percentile is the mean of the bucket that holds the
// nearest-rank value, so it is within 0.1 % of the exact percentile (exact when that bucket
// holds one distinct value). The count and maximum are exact, the mean up to its double sum.
// Not thread-safe.
class LatencyHistogram {
 public:
  // Negative durations count as 0.
  void Add(int64_t ns);
  int64_t count() const { return count_; }
  LatencySummary Summary() const;
  // The memory it holds.
  size_t memory_bytes() const { return sizeof(*this) + buckets_.capacity() * sizeof(Bucket); }

 private:
  struct Bucket {
    int64_t count = 0;
    double sum_ns = 0;
  };
  static size_t BucketOf(int64_t ns);
  // Nearest rank: the mean of the bucket holding the smallest value with at least a
  // fraction q of the values at or below it.
  double PercentileNs(double q) const;

  std::vector<Bucket> buckets_;  // up to the end of the largest power of two used
  int64_t count_ = 0;
  double sum_ns_ = 0;
  int64_t max_ns_ = 0;
};

// Whether a call belongs to the window [begin, end): by its intended send time.
inline bool InWindow(const CallRecord& call, int64_t window_begin_ns, int64_t window_end_ns) {
  return call.intended_ns >= window_begin_ns && call.intended_ns < window_end_ns;
}

// A send later than this after its intended time counts as late (StepSummary::late_sends).
inline constexpr int64_t kLateSendNs = 1'000'000;

// A step's results over its measured window [begin, end).
//
// Calls whose intended send time lies in the window make up the counts, the error table
// and the latencies (each waited for to its end). `latency` covers the OK calls; in
// overload, when calls fail, `latency_all` (failed calls at the time their error arrived)
// keeps them in view, and `failed` summarises the failed ones alone. Throughput counts the
// OK answers that arrived within the window, so that a server that falls behind shows its
// own rate, not the offered one.
struct StepSummary {
  double window_s = 0;
  int64_t calls = 0;              // intended in the window
  int64_t ok = 0;                 // ... answered OK
  std::map<int, int64_t> errors;  // ... failed, by grpc::StatusCode
  // The first message seen for each code in `errors` (at most kMaxErrorMessageBytes), so
  // that a report says why calls failed, not only how.
  std::map<int, std::string> error_messages;
  int64_t not_sent = 0;         // ... of the errors, never sent: past their deadline
  int64_t late_sends = 0;       // ... sent more than kLateSendNs after their intended time
  int64_t held_sends = 0;       // ... of those, held by max_outstanding (CallRecord::held)
  double requests_per_s = 0;    // OK answers arriving in the window, per second
  double sequences_per_s = 0;   // ... their inputs
  double tokens_per_s = 0;      // ... their real tokens
  LatencySummary latency;       // OK calls: done - intended
  LatencySummary latency_all;   // every call, failed ones too: done - intended
  LatencySummary failed;        // failed calls: done - intended
  LatencySummary service;       // OK calls: done - sent
  LatencySummary send_lag;      // sent calls: sent - intended
  LatencySummary server_total;  // OK calls: the server's own times
  LatencySummary server_tokenize;
  LatencySummary server_queue;
  LatencySummary server_inference;
};

// Builds a StepSummary one finished call at a time, in bounded memory (LatencyHistogram).
// Not thread-safe.
class StepAccumulator {
 public:
  StepAccumulator(int64_t window_begin_ns, int64_t window_end_ns);

  // `message`: why the call failed (kept as its code's example if it is the first).
  void Add(const CallRecord& call, absl::string_view message = {});
  // Files `n` failed calls of the window, added with status `from`, under `to` instead (a
  // stream's calls fail when it ends, before its final status is known); `message` is the
  // example for `to`. INTERNAL, with nothing moved, when fewer than `n` calls are filed
  // under `from`: the caller's count of them is wrong.
  absl::Status Recode(int from, int to, int64_t n, absl::string_view message = {});
  StepSummary Summary() const;

 private:
  const int64_t window_begin_ns_;
  const int64_t window_end_ns_;
  StepSummary counts_;  // calls, ok, errors, not_sent
  int64_t arrived_ = 0, arrived_inputs_ = 0, arrived_tokens_ = 0;
  // Keeps `message` as the example of `code` unless one is kept already.
  void KeepMessage(int code, absl::string_view message);

  LatencyHistogram latency_, latency_all_, failed_, service_, send_lag_;
  LatencyHistogram server_total_, server_tokenize_, server_queue_, server_inference_;
};

// The longest error message a StepSummary keeps (longer ones are cut, marked with "...").
inline constexpr size_t kMaxErrorMessageBytes = 300;

// The summary of a step's calls (all of them kept): a StepAccumulator fed every call.
StepSummary SummarizeStep(const std::vector<CallRecord>& calls, int64_t window_begin_ns,
                          int64_t window_end_ns);

}  // namespace bert

#endif  // BERT_CLIENT_LOAD_STATS_H_
