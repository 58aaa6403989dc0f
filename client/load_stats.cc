#include "client/load_stats.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace bert {
namespace {

constexpr int kOk = 0;
constexpr int kDeadlineExceeded = 4;  // grpc::StatusCode::DEADLINE_EXCEEDED

double NsToMs(int64_t ns) { return static_cast<double>(ns) * 1e-6; }
double UsToMs(int64_t us) { return static_cast<double>(us) * 1e-3; }

}  // namespace

LatencySummary Summarize(std::vector<double> values_ms) {
  LatencySummary s;
  s.count = static_cast<int64_t>(values_ms.size());
  if (values_ms.empty()) return s;
  std::sort(values_ms.begin(), values_ms.end());
  const auto rank = [&](double q) {
    // Nearest rank: the smallest value with at least q of the values at or below it.
    const size_t k = static_cast<size_t>(std::ceil(q * static_cast<double>(values_ms.size())));
    return values_ms[std::max<size_t>(k, 1) - 1];
  };
  s.mean = std::accumulate(values_ms.begin(), values_ms.end(), 0.0) / values_ms.size();
  s.p50 = rank(0.50);
  s.p90 = rank(0.90);
  s.p99 = rank(0.99);
  s.p999 = rank(0.999);
  s.max = values_ms.back();
  return s;
}

StepSummary SummarizeStep(const std::vector<CallRecord>& calls, int64_t window_begin_ns,
                          int64_t window_end_ns) {
  StepSummary s;
  s.window_s = static_cast<double>(window_end_ns - window_begin_ns) * 1e-9;
  std::vector<double> latency, latency_all, service, lag, total, tokenize, queue, inference;
  int64_t arrived = 0, arrived_inputs = 0, arrived_tokens = 0;
  for (const CallRecord& c : calls) {
    if (c.code == kOk && c.done_ns >= window_begin_ns && c.done_ns < window_end_ns) {
      ++arrived;
      arrived_inputs += c.inputs;
      arrived_tokens += c.tokens;
    }
    if (!InWindow(c, window_begin_ns, window_end_ns)) continue;
    ++s.calls;
    latency_all.push_back(NsToMs(c.done_ns - c.intended_ns));
    if (c.sent_ns >= 0) lag.push_back(NsToMs(c.sent_ns - c.intended_ns));
    if (c.code != kOk) {
      ++s.errors[c.code];
      if (c.sent_ns < 0 && c.code == kDeadlineExceeded) ++s.not_sent;
      continue;
    }
    ++s.ok;
    latency.push_back(NsToMs(c.done_ns - c.intended_ns));
    service.push_back(NsToMs(c.done_ns - c.sent_ns));
    total.push_back(UsToMs(c.server_total_us));
    tokenize.push_back(UsToMs(c.server_tokenize_us));
    queue.push_back(UsToMs(c.server_queue_us));
    inference.push_back(UsToMs(c.server_inference_us));
  }
  if (s.window_s > 0) {
    s.requests_per_s = arrived / s.window_s;
    s.sequences_per_s = arrived_inputs / s.window_s;
    s.tokens_per_s = arrived_tokens / s.window_s;
  }
  s.latency = Summarize(std::move(latency));
  s.latency_all = Summarize(std::move(latency_all));
  s.service = Summarize(std::move(service));
  s.send_lag = Summarize(std::move(lag));
  s.server_total = Summarize(std::move(total));
  s.server_tokenize = Summarize(std::move(tokenize));
  s.server_queue = Summarize(std::move(queue));
  s.server_inference = Summarize(std::move(inference));
  return s;
}

}  // namespace bert
