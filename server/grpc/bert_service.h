// bert.v1.BertService on the gRPC callback API.
//
// Each RPC: bearer-token check (when configured) -> admission -> conversion -> Pipeline.
// Until SetPipeline() is called (model loaded and warmed up) every method answers
// UNAVAILABLE. Thread-safe; gRPC calls the handlers from its own threads and no handler
// blocks on inference (answers are sent from pipeline threads).
#ifndef BERT_SERVER_GRPC_BERT_SERVICE_H_
#define BERT_SERVER_GRPC_BERT_SERVICE_H_

#include <atomic>
#include <memory>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "proto/bert/v1/bert_service.grpc.pb.h"
#include "server/core/pipeline.h"
#include "server/engine/model.h"
#include "server/grpc/metrics.h"
#include "server/grpc/send_watchdog.h"

namespace bert {

struct ServiceConfig {
  std::string model_name;
  std::string auth_token;          // Empty: no authentication.
  uint64_t max_message_bytes = 0;  // responses (0: unchecked)
  uint64_t max_request_bytes = 0;  // reported in GetModelInfo
  // Longest an answer may wait for its client to take it before the call is cancelled
  // (SendWatchdog); zero: no limit.
  absl::Duration send_timeout = absl::ZeroDuration();
  std::string server_version = "0.1.0";
};

// Embed, EmbedStream, Tokenize, Decode and Rerank take raw ByteBuffers and parse requests
// themselves (server/grpc/wire.h) so that invalid UTF-8 is INVALID_ARGUMENT naming the field
// and repeated fields are counted before they are parsed.
using BertServiceBase =
    v1::BertService::WithRawCallbackMethod_Embed<v1::BertService::WithRawCallbackMethod_EmbedStream<
        v1::BertService::WithRawCallbackMethod_Tokenize<
            v1::BertService::WithRawCallbackMethod_Decode<
                v1::BertService::WithRawCallbackMethod_Rerank<
                    v1::BertService::WithCallbackMethod_GetModelInfo<v1::BertService::Service>>>>>>;

class BertServiceImpl final : public BertServiceBase {
 public:
  // `metrics` may be null; it must outlive the service.
  BertServiceImpl(ServiceConfig config, ServerMetrics* metrics);

  // Makes the service ready. `pipeline` must be started and outlive the service;
  // `sentence_embedding` is the served model's (GetModelInfo reports it).
  void SetPipeline(Pipeline* pipeline, SentenceEmbedding sentence_embedding = {}) {
    sentence_embedding_ = std::move(sentence_embedding);
    pipeline_.store(pipeline);  // publishes sentence_embedding_ too
  }
  // The server is draining: from now on each EmbedStream message gets UNAVAILABLE in its
  // response, since a stream may go on for as long as its client likes (its client should
  // open the next stream elsewhere). Unary calls are left to the pipeline's admission.
  void RefuseStreamMessages() { refuse_stream_messages_ = true; }
  bool refusing_stream_messages() const { return refuse_stream_messages_.load(); }

  grpc::ServerUnaryReactor* Embed(grpc::CallbackServerContext* context,
                                  const grpc::ByteBuffer* request,
                                  grpc::ByteBuffer* response) override;
  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* EmbedStream(
      grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context,
                                     const grpc::ByteBuffer* request,
                                     grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* Decode(grpc::CallbackServerContext* context,
                                   const grpc::ByteBuffer* request,
                                   grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* Rerank(grpc::CallbackServerContext* context,
                                   const grpc::ByteBuffer* request,
                                   grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context,
                                         const v1::GetModelInfoRequest* request,
                                         v1::ModelInfo* response) override;

  // Shared by the reactors.
  absl::Status CheckAuth(const grpc::CallbackServerContext* context) const;
  Pipeline* pipeline() const { return pipeline_.load(); }
  ServerMetrics* metrics() const { return metrics_; }
  uint64_t max_message_bytes() const { return config_.max_message_bytes; }
  uint64_t max_request_bytes() const { return config_.max_request_bytes; }
  void Record(const char* method, grpc::StatusCode code, absl::Time start) const;
  // Sets the in-flight and answer-memory gauges from the pipeline's admission counts (after
  // a permit is taken or released, and when an answer is ready).
  void ReportInFlight() const;
  SendWatchdog& send_watchdog() { return send_watchdog_; }
  // OK, or INVALID_ARGUMENT naming its size and `advice` when `response` is over the message
  // limit (for Embed, a request the early estimate, CheckResponseSize, let through); sending it
  // would fail in gRPC after the work.
  absl::Status CheckAnswerSize(const google::protobuf::MessageLite& response,
                               absl::string_view advice =
                                   "ask for fewer inputs, heads or layers, PADDING_TRIM, "
                                   "float16/bfloat16, or a shorter request_id") const;
  // Converts `result` into `response` and checks its size (CheckAnswerSize). If it may be
  // sent, records the stage timings and moves the answer's bytes into `permit`, which holds
  // them until released (the answer sent or dropped); otherwise they are released at once.
  absl::Status BuildAnswer(EmbedResult result, v1::EmbedResponse* response,
                           Admission::Permit* permit);

 private:
  const ServiceConfig config_;
  ServerMetrics* const metrics_;
  std::atomic<Pipeline*> pipeline_{nullptr};
  SentenceEmbedding sentence_embedding_;  // written once, before pipeline_
  std::atomic<bool> refuse_stream_messages_{false};
  SendWatchdog send_watchdog_{config_.send_timeout, [metrics = metrics_] {
                                if (metrics != nullptr) metrics->RecordAbandonedAnswer();
                              }};
  // Reading the admission count and setting the gauge as one step, so that the last of
  // several concurrent updates leaves the latest count.
  mutable absl::Mutex gauge_mu_;
};

}  // namespace bert

#endif  // BERT_SERVER_GRPC_BERT_SERVICE_H_
