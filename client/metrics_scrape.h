// Reads a bert_server's Prometheus /metrics page over plain HTTP, for the load tester's
// server-side view of a step (batch sizes formed while it ran).
#ifndef BERT_CLIENT_METRICS_SCRAPE_H_
#define BERT_CLIENT_METRICS_SCRAPE_H_

#include <chrono>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace bert {

// GET http://HOST:PORT/metrics with HTTP/1.0; the body of a 200 answer. The whole fetch
// (connecting to each resolved address in turn, sending, reading) ends within `timeout`.
absl::StatusOr<std::string> FetchMetrics(const std::string& host_port,
                                         std::chrono::milliseconds timeout);

// The sum over every series of `name` (any labels) in a Prometheus text page; nullopt when
// the page has no sample of it.
std::optional<double> SumOfSamples(absl::string_view page, absl::string_view name);

}  // namespace bert

#endif  // BERT_CLIENT_METRICS_SCRAPE_H_
