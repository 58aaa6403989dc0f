#include "client/load_stats.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"

namespace bert {
namespace {

constexpr int kOk = 0;
constexpr int kDeadlineExceeded = 4;  // grpc::StatusCode::DEADLINE_EXCEEDED

// LatencyHistogram's layout: durations below 2^kSubBits ns have a bucket each; each power
// of two above is split into 2^(kSubBits - 1) buckets.
constexpr int kSubBits = 11;
constexpr int64_t kExactBelow = int64_t{1} << kSubBits;  // 2,048 ns
constexpr int64_t kPerOctave = kExactBelow / 2;          // 1,024 buckets

double NsToMs(double ns) { return ns * 1e-6; }

// Saturates instead of overflowing on a nonsensical server timing.
int64_t UsToNs(int64_t us) {
  constexpr int64_t kMaxUs = std::numeric_limits<int64_t>::max() / 1000;
  return std::min(us, kMaxUs) * 1000;
}

}  // namespace

size_t LatencyHistogram::BucketOf(int64_t ns) {
  if (ns < kExactBelow) return static_cast<size_t>(std::max<int64_t>(ns, 0));
  // ns lies in [2^e, 2^(e+1)) with e >= kSubBits; its top kSubBits bits pick the bucket.
  const int e = 63 - __builtin_clzll(static_cast<unsigned long long>(ns));
  const int64_t top = ns >> (e - kSubBits + 1);  // in [kPerOctave, kExactBelow)
  return static_cast<size_t>(kExactBelow + (e - kSubBits) * kPerOctave + (top - kPerOctave));
}

void LatencyHistogram::Add(int64_t ns) {
  ns = std::max<int64_t>(ns, 0);
  const size_t i = BucketOf(ns);
  if (i >= buckets_.size()) {
    // Up to the end of i's power of two, allocated exactly (a few dozen growths at most).
    constexpr size_t kExact = kExactBelow, kOctave = kPerOctave;
    const size_t end = i < kExact ? kExact : kExact + ((i - kExact) / kOctave + 1) * kOctave;
    buckets_.reserve(end);
    buckets_.resize(end);
  }
  ++buckets_[i].count;
  buckets_[i].sum_ns += static_cast<double>(ns);
  ++count_;
  sum_ns_ += static_cast<double>(ns);
  max_ns_ = std::max(max_ns_, ns);
}

double LatencyHistogram::PercentileNs(double q) const {
  const int64_t rank =
      std::max<int64_t>(static_cast<int64_t>(std::ceil(q * static_cast<double>(count_))), 1);
  int64_t seen = 0;
  for (const Bucket& b : buckets_) {
    seen += b.count;
    if (seen >= rank) return b.sum_ns / static_cast<double>(b.count);
  }
  return static_cast<double>(max_ns_);  // not reached while count_ > 0
}

LatencySummary LatencyHistogram::Summary() const {
  LatencySummary s;
  s.count = count_;
  if (count_ == 0) return s;
  s.mean = NsToMs(sum_ns_ / static_cast<double>(count_));
  s.p50 = NsToMs(PercentileNs(0.50));
  s.p90 = NsToMs(PercentileNs(0.90));
  s.p95 = NsToMs(PercentileNs(0.95));
  s.p99 = NsToMs(PercentileNs(0.99));
  s.p999 = NsToMs(PercentileNs(0.999));
  s.max = NsToMs(static_cast<double>(max_ns_));
  return s;
}

StepAccumulator::StepAccumulator(int64_t window_begin_ns, int64_t window_end_ns)
    : window_begin_ns_(window_begin_ns), window_end_ns_(window_end_ns) {}

void StepAccumulator::KeepMessage(int code, absl::string_view message) {
  if (message.empty() || counts_.error_messages.count(code) > 0) return;
  std::string kept(message.substr(0, kMaxErrorMessageBytes));
  if (message.size() > kMaxErrorMessageBytes) kept += "...";
  counts_.error_messages.emplace(code, std::move(kept));
}

void StepAccumulator::Add(const CallRecord& c, absl::string_view message) {
  if (c.code == kOk && c.done_ns >= window_begin_ns_ && c.done_ns < window_end_ns_) {
    ++arrived_;
    arrived_inputs_ += c.inputs;
    arrived_tokens_ += c.tokens;
  }
  if (!InWindow(c, window_begin_ns_, window_end_ns_)) return;
  ++counts_.calls;
  latency_all_.Add(c.done_ns - c.intended_ns);
  if (c.sent_ns >= 0) {
    send_lag_.Add(c.sent_ns - c.intended_ns);
    if (c.sent_ns - c.intended_ns > kLateSendNs) {
      ++counts_.late_sends;
      if (c.held) ++counts_.held_sends;
    }
  }
  if (c.code != kOk) {
    ++counts_.errors[c.code];
    KeepMessage(c.code, message);
    failed_.Add(c.done_ns - c.intended_ns);
    if (c.sent_ns < 0 && c.code == kDeadlineExceeded) ++counts_.not_sent;
    return;
  }
  ++counts_.ok;
  latency_.Add(c.done_ns - c.intended_ns);
  service_.Add(c.done_ns - c.sent_ns);
  server_total_.Add(UsToNs(c.server_total_us));
  server_tokenize_.Add(UsToNs(c.server_tokenize_us));
  server_queue_.Add(UsToNs(c.server_queue_us));
  server_inference_.Add(UsToNs(c.server_inference_us));
}

absl::Status StepAccumulator::Recode(int from, int to, int64_t n, absl::string_view message) {
  if (n == 0 || from == to) return absl::OkStatus();
  auto it = counts_.errors.find(from);
  const int64_t filed = it == counts_.errors.end() ? 0 : it->second;
  if (n < 0 || n > filed) {
    return absl::InternalError(absl::StrCat("cannot file ", n, " calls of status ", from, " under ",
                                            to, ": ", filed, " are filed under it"));
  }
  if ((it->second -= n) == 0) {
    counts_.errors.erase(it);
    counts_.error_messages.erase(from);
  }
  counts_.errors[to] += n;
  KeepMessage(to, message);
  return absl::OkStatus();
}

StepSummary StepAccumulator::Summary() const {
  StepSummary s = counts_;
  s.window_s = static_cast<double>(window_end_ns_ - window_begin_ns_) * 1e-9;
  if (s.window_s > 0) {
    s.requests_per_s = arrived_ / s.window_s;
    s.sequences_per_s = arrived_inputs_ / s.window_s;
    s.tokens_per_s = arrived_tokens_ / s.window_s;
  }
  s.latency = latency_.Summary();
  s.latency_all = latency_all_.Summary();
  s.failed = failed_.Summary();
  s.service = service_.Summary();
  s.send_lag = send_lag_.Summary();
  s.server_total = server_total_.Summary();
  s.server_tokenize = server_tokenize_.Summary();
  s.server_queue = server_queue_.Summary();
  s.server_inference = server_inference_.Summary();
  return s;
}

StepSummary SummarizeStep(const std::vector<CallRecord>& calls, int64_t window_begin_ns,
                          int64_t window_end_ns) {
  StepAccumulator accumulator(window_begin_ns, window_end_ns);
  for (const CallRecord& c : calls) accumulator.Add(c);
  return accumulator.Summary();
}

}  // namespace bert
