#include "server/grpc/metrics.h"

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "server/grpc/status_map.h"

namespace bert {
namespace {

prometheus::Histogram::BucketBoundaries LatencyBuckets() {
  // 100 us .. ~26 s, doubling.
  prometheus::Histogram::BucketBoundaries b;
  for (double v = 1e-4; v < 30; v *= 2) b.push_back(v);
  return b;
}

prometheus::Histogram::BucketBoundaries PowersOfTwo(double max) {
  prometheus::Histogram::BucketBoundaries b;
  for (double v = 1; v <= max; v *= 2) b.push_back(v);
  return b;
}

}  // namespace

ServerMetrics::ServerMetrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      requests_(prometheus::BuildCounter()
                    .Name("bert_requests_total")
                    .Help("Calls answered (EmbedStream: messages), by method and gRPC status code")
                    .Register(*registry_)),
      latency_(prometheus::BuildHistogram()
                   .Name("bert_request_latency_seconds")
                   .Help("Latency by stage: total (arrival to answer), tokenize, queue "
                         "(waiting for a batch and the engine), inference (the batch)")
                   .Register(*registry_)),
      latency_total_(latency_.Add({{"stage", "total"}}, LatencyBuckets())),
      latency_tokenize_(latency_.Add({{"stage", "tokenize"}}, LatencyBuckets())),
      latency_queue_(latency_.Add({{"stage", "queue"}}, LatencyBuckets())),
      latency_inference_(latency_.Add({{"stage", "inference"}}, LatencyBuckets())),
      batch_size_(prometheus::BuildHistogram()
                      .Name("bert_batch_size")
                      .Help("Sequences per engine batch")
                      .Register(*registry_)
                      .Add({}, PowersOfTwo(1024))),
      batch_tokens_(prometheus::BuildHistogram()
                        .Name("bert_batch_tokens")
                        .Help("Rows per engine batch, padding rows included")
                        .Register(*registry_)
                        .Add({}, PowersOfTwo(65536))),
      queue_depth_(prometheus::BuildGauge()
                       .Name("bert_queue_depth")
                       .Help("Sequences waiting for the batcher")
                       .Register(*registry_)
                       .Add({})),
      in_flight_(prometheus::BuildGauge()
                     .Name("bert_requests_in_flight")
                     .Help("Admitted requests whose answers are not yet sent")
                     .Register(*registry_)
                     .Add({})),
      answer_memory_(
          prometheus::BuildGauge()
              .Name("bert_answer_memory_bytes")
              .Help(
                  "Bytes of Embed, Rerank and Decode answers held, from the request's tokenization "
                  "until the answer is sent (at most --max_answer_memory_mb); "
                  "updated as requests are admitted, answered and done")
              .Register(*registry_)
              .Add({})),
      abandoned_answers_(prometheus::BuildCounter()
                             .Name("bert_answers_abandoned_total")
                             .Help("Calls cancelled because their client did not take the answer "
                                   "within --send_timeout_s (an EmbedStream counts once)")
                             .Register(*registry_)
                             .Add({})),
      cancelled_(prometheus::BuildCounter()
                     .Name("bert_calls_cancelled_total")
                     .Help("Calls cancelled after they began, by method: by their client, their "
                           "deadline, a lost connection, the send timeout or the server's "
                           "shutdown; an answer already recorded in bert_requests_total did not "
                           "reach its client")
                     .Register(*registry_)),
      tokens_processed_(prometheus::BuildCounter()
                            .Name("bert_tokens_processed_total")
                            .Help("Real (non-padding) tokens run through the engine")
                            .Register(*registry_)
                            .Add({})),
      batches_(prometheus::BuildCounter()
                   .Name("bert_engine_batches_total")
                   .Help("Engine batches by result")
                   .Register(*registry_)),
      batches_ok_(batches_.Add({{"result", "ok"}})),
      batches_failed_(batches_.Add({{"result", "error"}})),
      device_memory_(prometheus::BuildGauge()
                         .Name("bert_device_memory_used_bytes")
                         .Help("Device memory in use (CUDA backends; 0 on the CPU)")
                         .Register(*registry_)
                         .Add({})),
      fallbacks_(prometheus::BuildCounter()
                     .Name("bert_engine_fallbacks_total")
                     .Help("Times the engine left a path for an equivalent one (same results, "
                           "usually slower), by path (what one count means: server/README.md); "
                           "the server log names the flag that turns the path off")
                     .Register(*registry_)),
      serving_(prometheus::BuildGauge()
                   .Name("bert_serving")
                   .Help("1 while the server's health is SERVING, 0 while loading, warming up, "
                         "draining or after an engine failure")
                   .Register(*registry_)
                   .Add({})),
      start_time_(prometheus::BuildGauge()
                      .Name("process_start_time_seconds")
                      .Help("Start time of the process since the Unix epoch, in seconds")
                      .Register(*registry_)
                      .Add({})) {
  start_time_.Set(absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch()));
  // Each method's series from the start, so that rate() and increase() see the first one.
  for (const char* method : {"Embed", "EmbedStream", "Tokenize", "Decode", "Rerank"})
    cancelled_.Add({{"method", method}});
}

ServerMetrics::~ServerMetrics() = default;

absl::StatusOr<int> ServerMetrics::Serve(const std::string& address) {
  // /readyz says what health says (http_ goes first on destruction, so serving_ outlives it).
  auto http =
      MetricsHttpServer::Start(address, registry_, [this] { return serving_.Value() == 1; });
  if (!http.ok()) return http.status();
  http_ = *std::move(http);
  return http_->port();
}

void ServerMetrics::OnBatch(const BatchStats& stats) {
  batch_size_.Observe(stats.num_sequences);
  batch_tokens_.Observe(stats.rows);
  if (stats.status.ok()) {
    batches_ok_.Increment();
    tokens_processed_.Increment(stats.real_tokens);
  } else {
    batches_failed_.Increment();
  }
  absl::MutexLock lock(&reader_mu_);
  if (device_memory_reader_) device_memory_.Set(static_cast<double>(device_memory_reader_()));
}

void ServerMetrics::OnQueueDepth(int depth) { queue_depth_.Set(depth); }

void ServerMetrics::OnEngineFallbacks(const std::vector<EngineFallback>& totals) {
  absl::MutexLock lock(&fallbacks_mu_);
  for (const EngineFallback& fallback : totals) {
    prometheus::Counter& counter = fallbacks_.Add({{"path", fallback.path}});
    const double added = static_cast<double>(fallback.count) - counter.Value();
    if (added > 0) counter.Increment(added);
  }
}

void ServerMetrics::RecordRequest(const std::string& method, grpc::StatusCode code,
                                  double total_seconds) {
  requests_.Add({{"method", method}, {"code", GrpcCodeName(code)}}).Increment();
  latency_total_.Observe(total_seconds);
}

void ServerMetrics::RecordStages(const StageTiming& timing) {
  latency_tokenize_.Observe(timing.tokenize_us * 1e-6);
  latency_queue_.Observe(timing.queue_us * 1e-6);
  latency_inference_.Observe(timing.inference_us * 1e-6);
}

void ServerMetrics::SetInFlight(int in_flight) { in_flight_.Set(in_flight); }

void ServerMetrics::SetAnswerMemory(int64_t bytes) {
  answer_memory_.Set(static_cast<double>(bytes));
}

void ServerMetrics::RecordAbandonedAnswer() { abandoned_answers_.Increment(); }

void ServerMetrics::RecordCancelled(const std::string& method) {
  cancelled_.Add({{"method", method}}).Increment();
}

void ServerMetrics::SetServing(bool serving) { serving_.Set(serving ? 1 : 0); }

void ServerMetrics::SetDeviceMemoryReader(std::function<int64_t()> reader) {
  absl::MutexLock lock(&reader_mu_);
  device_memory_reader_ = std::move(reader);
}

}  // namespace bert
