// Prometheus metrics of the server (prometheus-cpp), served as text on /metrics by a small
// HTTP listener on its own address (server/grpc/metrics_http.h). Thread-safe.
//
//   bert_requests_total{method,code}                  counter
//   bert_request_latency_seconds{stage}               histogram: total, tokenize, queue,
//                                                     inference
//   bert_batch_size / bert_batch_tokens               histograms per engine batch
//   bert_queue_depth, bert_requests_in_flight         gauges
//   bert_answer_memory_bytes                          gauge: Embed (Rerank, Decode) answers held,
//                                                     from their requests' tokenization until
//                                                     sent
//                                                     (--max_answer_memory_mb)
//   bert_answers_abandoned_total                      counter: calls the send timeout cancelled
//   bert_calls_cancelled_total{method}                counter: calls cancelled after they
//                                                     began (client, deadline, connection,
//                                                     send timeout, shutdown)
//   bert_tokens_processed_total                       counter (real tokens through the engine)
//   bert_engine_batches_total{result}                 counter
//   bert_device_memory_used_bytes                     gauge, when a reader is installed
//   bert_engine_fallbacks_total{path}                 counter: times the engine left a
//                                                     default path (Engine::Fallbacks)
//   bert_serving                                      gauge: 1 while health is SERVING
//   process_start_time_seconds                        gauge: when the server started (Unix
//                                                     time; a restart changes it)
#ifndef BERT_SERVER_GRPC_METRICS_H_
#define BERT_SERVER_GRPC_METRICS_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/support/status.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "server/core/pipeline.h"
#include "server/grpc/metrics_http.h"

namespace bert {

class ServerMetrics : public PipelineObserver {
 public:
  ServerMetrics();
  ~ServerMetrics() override;

  // Starts the HTTP listener ("host:port", port 0 picks one): /metrics, /livez, and /readyz
  // (200 while SetServing(true) holds, else 503). Returns the bound port.
  absl::StatusOr<int> Serve(const std::string& address);

  void OnBatch(const BatchStats& stats) override;
  void OnQueueDepth(int depth) override;
  void OnEngineFallbacks(const std::vector<EngineFallback>& totals) override;

  void RecordRequest(const std::string& method, grpc::StatusCode code, double total_seconds);
  void RecordStages(const StageTiming& timing);
  void SetInFlight(int in_flight);
  void SetAnswerMemory(int64_t bytes);
  // An answer given up: its client did not take it within the send timeout.
  void RecordAbandonedAnswer();
  // A call cancelled after it began (gRPC's OnCancel): by its client, its deadline, a lost
  // connection, the send timeout, or the server's shutdown.
  void RecordCancelled(const std::string& method);
  // What the health service says: SERVING (true) or NOT_SERVING; /readyz follows it.
  void SetServing(bool serving);
  // Polled on each batch: bytes of device memory in use (CUDA backends).
  void SetDeviceMemoryReader(std::function<int64_t()> reader);

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Histogram>& latency_;
  prometheus::Histogram& latency_total_;
  prometheus::Histogram& latency_tokenize_;
  prometheus::Histogram& latency_queue_;
  prometheus::Histogram& latency_inference_;
  prometheus::Histogram& batch_size_;
  prometheus::Histogram& batch_tokens_;
  prometheus::Gauge& queue_depth_;
  prometheus::Gauge& in_flight_;
  prometheus::Gauge& answer_memory_;
  prometheus::Counter& abandoned_answers_;
  prometheus::Family<prometheus::Counter>& cancelled_;  // by method
  prometheus::Counter& tokens_processed_;
  prometheus::Family<prometheus::Counter>& batches_;  // by result
  prometheus::Counter& batches_ok_;
  prometheus::Counter& batches_failed_;
  prometheus::Gauge& device_memory_;
  prometheus::Family<prometheus::Counter>& fallbacks_;  // by path
  prometheus::Gauge& serving_;
  prometheus::Gauge& start_time_;
  absl::Mutex fallbacks_mu_;  // serialises OnEngineFallbacks' read-then-increment
  absl::Mutex reader_mu_;
  std::function<int64_t()> device_memory_reader_ ABSL_GUARDED_BY(reader_mu_);
  std::unique_ptr<MetricsHttpServer> http_;
};

}  // namespace bert

#endif  // BERT_SERVER_GRPC_METRICS_H_
