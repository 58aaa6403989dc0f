// The records of a load run's calls and their summary over a measured window.
//
// Latencies are taken from each call's *intended* send time, not from when it was sent: a
// call the load generator could not send on time (because it was waiting for the server)
// still counts the wait, so overload is not hidden (no coordinated omission). The time
// from the actual send is reported next to it as the service time.
#ifndef BERT_CLIENT_LOAD_STATS_H_
#define BERT_CLIENT_LOAD_STATS_H_

#include <cstdint>
#include <map>
#include <vector>

namespace bert {

// One call. Times are nanoseconds since the step began (steady clock).
struct CallRecord {
  int64_t intended_ns = 0;  // when the schedule wanted it sent
  int64_t sent_ns = -1;     // when it was handed to gRPC; -1: never sent (too late)
  int64_t done_ns = 0;      // when its answer or error arrived
  int code = 0;             // grpc::StatusCode
  int inputs = 0;           // inputs in the request
  int64_t tokens = 0;       // real tokens the server reported (OK answers)
  // The server's Timing of the whole request (OK answers), microseconds.
  int64_t server_tokenize_us = 0;
  int64_t server_queue_us = 0;
  int64_t server_inference_us = 0;
  int64_t server_total_us = 0;
};

// Order statistics of a set of durations, milliseconds; nearest-rank percentiles.
struct LatencySummary {
  int64_t count = 0;
  double mean = 0, p50 = 0, p90 = 0, p99 = 0, p999 = 0, max = 0;
};

LatencySummary Summarize(std::vector<double> values_ms);

// Whether a call belongs to the window [begin, end): by its intended send time.
inline bool InWindow(const CallRecord& call, int64_t window_begin_ns, int64_t window_end_ns) {
  return call.intended_ns >= window_begin_ns && call.intended_ns < window_end_ns;
}

// A step's results over its measured window [begin, end).
//
// Calls whose intended send time lies in the window make up the counts, the error table
// and the latencies (each waited for to its end). `latency` covers the OK calls; in
// overload, when calls fail, `latency_all` (failed calls at the time their error arrived)
// keeps them in view. Throughput counts the OK answers that arrived within the window, so
// that a server that falls behind shows its own rate, not the offered one.
struct StepSummary {
  double window_s = 0;
  int64_t calls = 0;              // intended in the window
  int64_t ok = 0;                 // ... answered OK
  std::map<int, int64_t> errors;  // ... failed, by grpc::StatusCode
  int64_t not_sent = 0;           // ... of the errors, never sent: past their deadline
  double requests_per_s = 0;      // OK answers arriving in the window, per second
  double sequences_per_s = 0;     // ... their inputs
  double tokens_per_s = 0;        // ... their real tokens
  LatencySummary latency;         // OK calls: done - intended
  LatencySummary latency_all;     // every call, failed ones too: done - intended
  LatencySummary service;         // OK calls: done - sent
  LatencySummary send_lag;        // sent calls: sent - intended
  LatencySummary server_total;    // OK calls: the server's own times
  LatencySummary server_tokenize;
  LatencySummary server_queue;
  LatencySummary server_inference;
};

StepSummary SummarizeStep(const std::vector<CallRecord>& calls, int64_t window_begin_ns,
                          int64_t window_end_ns);

}  // namespace bert

#endif  // BERT_CLIENT_LOAD_STATS_H_
