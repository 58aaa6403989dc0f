#include "server/grpc/bert_service.h"

#include <chrono>
#include <deque>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "server/core/rerank.h"
#include "server/grpc/convert.h"
#include "server/grpc/status_map.h"
#include "server/grpc/wire.h"
#include "server/util/log.h"
#include "server/util/status_macros.h"

namespace bert {
namespace {

// The call's deadline as absl::Time (InfiniteFuture when the client set none).
absl::Time DeadlineOf(const grpc::CallbackServerContext* context) {
  const auto deadline = context->deadline();
  if (deadline >= std::chrono::system_clock::now() + std::chrono::hours(24 * 365)) {
    return absl::InfiniteFuture();
  }
  return absl::FromChrono(deadline);
}

bool ConstantTimeEquals(absl::string_view a, absl::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

absl::Status NotReady() { return absl::UnavailableError("the model is still loading"); }

// What the wire check refuses before parsing: as validation would after it.
WireLimits WireLimitsOf(const RequestLimits& limits) {
  WireLimits wire;
  wire.max_inputs = limits.max_inputs_per_request;
  wire.max_heads = kNumHeads;
  wire.max_layers = MaxLayerEntries(limits);
  wire.max_ids = MaxRequestIds(limits);
  return wire;
}

// A unary call that holds an admission permit from its start until it is done, i.e. until
// its answer has been sent (or the call failed): answers waiting for a slow reader count
// against the limit (Embed's among the answers being sent, GivePlaceToNext), for at most the
// send timeout (SendWatchdog), which watches each answer from the moment it is handed to gRPC.
class AdmittedUnaryReactor : public grpc::ServerUnaryReactor {
 public:
  // The call was cancelled (its client, its deadline, a lost connection, the send timeout):
  // work not yet at the engine is dropped (cancelled()).
  void OnCancel() override {
    cancelled_->store(true);
    if (service_->metrics() != nullptr) service_->metrics()->RecordCancelled(method_);
  }

  void OnDone() override {
    service_->send_watchdog().Unwatch(send_watch_);
    if (permit_.valid()) {
      permit_.Reset();
      service_->ReportInFlight();
    }
    delete this;
  }

 protected:
  AdmittedUnaryReactor(BertServiceImpl* service, grpc::CallbackServerContext* context,
                       const char* method)
      : service_(service), context_(context), method_(method), start_(absl::Now()) {}

  // Authenticates the call and takes its permit: the pipeline to use, or why not.
  absl::StatusOr<Pipeline*> Admit() {
    RETURN_IF_ERROR(service_->CheckAuth(context_));
    Pipeline* pipeline = service_->pipeline();
    if (pipeline == nullptr) return NotReady();
    ASSIGN_OR_RETURN(permit_, pipeline->Admit());
    service_->ReportInFlight();
    return pipeline;
  }

  // BertServiceImpl::BuildAnswer with this call's permit: the answer's bytes stay counted
  // until the call is done.
  absl::Status BuildAnswer(EmbedResult result, v1::EmbedResponse* response) {
    return service_->BuildAnswer(std::move(result), response, &permit_);
  }

  // Rerank's and Decode's: the answer's share of the byte budget, held until the call is done.
  void HoldAnswerBytes(Admission::Bytes bytes) { permit_.Hold(std::move(bytes)); }

  // The permit's place goes to the next request while the answer is sent, unless too many
  // answers are being sent (Admission::Permit::MarkAnswered). For answers whose bytes the
  // permit holds (Embed's, Rerank's); others keep their places until done.
  void GivePlaceToNext() { permit_.MarkAnswered(); }

  // Records the call and hands its status (and, if OK, the answer already in place) to gRPC.
  void Done(const absl::Status& status) {
    const grpc::Status grpc_status = ToGrpcStatus(status);
    service_->Record(method_, grpc_status.error_code(), start_);
    send_watch_ = service_->send_watchdog().Watch(context_);
    Finish(grpc_status);
  }

  // What the pipeline polls (Pipeline::Embed's `cancelled`).
  const std::shared_ptr<std::atomic<bool>>& cancelled() const { return cancelled_; }

  BertServiceImpl* const service_;
  grpc::CallbackServerContext* const context_;

 private:
  std::shared_ptr<std::atomic<bool>> cancelled_ = std::make_shared<std::atomic<bool>>(false);
  const char* const method_;
  const absl::Time start_;
  Admission::Permit permit_;  // from Admit until OnDone
  uint64_t send_watch_ = 0;   // set before Finish, read in OnDone
};

// Embed: one request, answered from a pipeline thread.
class EmbedReactor final : public AdmittedUnaryReactor {
 public:
  EmbedReactor(BertServiceImpl* service, grpc::CallbackServerContext* context,
               const grpc::ByteBuffer* request, grpc::ByteBuffer* response)
      : AdmittedUnaryReactor(service, context, "Embed"), out_(response) {
    absl::Status status = Begin(request);
    if (!status.ok()) Answer(status);
  }

 private:
  absl::Status Begin(const grpc::ByteBuffer* wire) {
    ASSIGN_OR_RETURN(Pipeline * pipeline, Admit());
    v1::EmbedRequest request;
    RETURN_IF_ERROR(ParseEmbedRequest(*wire, WireLimitsOf(pipeline->limits()), &request));
    auto spec = FromProto(request);
    if (!spec.ok()) return spec.status();
    response_->set_request_id(request.request_id());
    pipeline->Embed(*std::move(spec), DeadlineOf(context_), cancelled(),
                    [this](absl::StatusOr<EmbedResult> result) {
                      if (!result.ok()) {
                        Answer(result.status());
                        return;
                      }
                      Answer(BuildAnswer(*std::move(result), response_.get()));
                    });
    return absl::OkStatus();
  }

  void Answer(const absl::Status& status) {
    if (status.ok()) Serialize(*response_, out_);
    response_.reset();
    GivePlaceToNext();
    Done(status);
  }

  grpc::ByteBuffer* const out_;
  std::unique_ptr<v1::EmbedResponse> response_ = std::make_unique<v1::EmbedResponse>();
};

// EmbedStream: up to kMaxInFlight requests of one stream are processed at once, and the
// responses are written strictly in request order (a finished response waits for the ones
// before it). A bad request gets a response with `error`; the stream goes on. The reactor
// finishes only when reads are done and every pending request has been answered, so no
// pipeline callback can outlive it. Each admitted message holds its permit until its answer
// is written (or dropped, when the client has gone).
class StreamReactor final : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  static constexpr size_t kMaxInFlight = 16;

  StreamReactor(BertServiceImpl* service, grpc::CallbackServerContext* context)
      : service_(service), context_(context) {
    absl::Status auth = service_->CheckAuth(context);
    if (!auth.ok()) {
      finished_ = true;
      const grpc::Status status = ToGrpcStatus(auth);
      service_->Record("EmbedStream", status.error_code(), absl::Now());
      Finish(status);
      return;
    }
    reading_ = true;
    StartRead(&wire_in_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {  // The client has finished sending (or the call is gone).
      Actions actions;
      {
        absl::MutexLock lock(&mu_);
        reading_ = false;
        reads_done_ = true;
        actions = NextActionsLocked();
      }
      Run(actions);
      return;
    }
    auto slot = std::make_shared<Slot>();
    slot->start = absl::Now();
    v1::EmbedRequest request;
    Pipeline* pipeline = service_->pipeline();
    absl::Status status =
        pipeline == nullptr
            ? NotReady()
            : ParseEmbedRequest(wire_in_, WireLimitsOf(pipeline->limits()), &request);
    slot->request_id = EchoableRequestId(request);
    bool gone;
    {
      absl::MutexLock lock(&mu_);
      pending_.push_back(slot);
      gone = broken_;
    }
    // A client that has gone (cancelled, or its answers could not be written) gets no more
    // work done for it.
    if (status.ok() && (gone || cancelled_->load())) {
      status = absl::CancelledError("the stream was cancelled");
    }
    if (status.ok()) status = Submit(pipeline, request, slot);
    if (!status.ok()) Complete(slot, status, nullptr);
    Actions actions;
    {
      absl::MutexLock lock(&mu_);
      reading_ = false;
      actions = NextActionsLocked();
    }
    Run(actions);
  }

  void OnWriteDone(bool ok) override {
    // Not under mu_: TryCancel (SendWatchdog) may run this stream's reactions inside it, and
    // Unwatch of a call being cancelled waits for TryCancel. (write_watch_ changes only when
    // the next write is chosen, after writing_ is cleared below.)
    service_->send_watchdog().Unwatch(write_watch_);
    Actions actions;
    bool released;
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      released = ReleaseFrontLocked();
      if (!ok) broken_ = true;
      released |= DropReadyIfBrokenLocked();
      actions = NextActionsLocked();
    }
    if (released) service_->ReportInFlight();
    Run(actions);
  }

  void OnCancel() override {
    cancelled_->store(true);
    if (service_->metrics() != nullptr) service_->metrics()->RecordCancelled("EmbedStream");
  }
  void OnDone() override {
    service_->send_watchdog().Unwatch(write_watch_);  // (OnWriteDone did, unless cancelled)
    delete this;
  }

 private:
  struct Slot {
    absl::Time start;
    std::string request_id;
    Admission::Permit permit;  // admitted messages: until written or dropped
    bool ready = false;
    grpc::ByteBuffer wire;
  };
  struct Actions {
    std::shared_ptr<Slot> write;
    bool read = false;
    bool finish = false;
    grpc::Status finish_status;
  };

  absl::Status Submit(Pipeline* pipeline, const v1::EmbedRequest& request,
                      const std::shared_ptr<Slot>& slot) {
    if (service_->refusing_stream_messages()) {
      return absl::UnavailableError(
          "the server is shutting down: open the next stream on a new connection");
    }
    auto permit = pipeline->Admit();
    if (!permit.ok()) return permit.status();
    slot->permit = *std::move(permit);  // read by no other thread before the slot is ready
    service_->ReportInFlight();
    auto spec = FromProto(request);
    if (!spec.ok()) return spec.status();
    pipeline->Embed(*std::move(spec), DeadlineOf(context_), cancelled_,
                    [this, slot](absl::StatusOr<EmbedResult> result) {
                      if (!result.ok()) {
                        Complete(slot, result.status(), nullptr);
                      } else {
                        Complete(slot, absl::OkStatus(), &*result);
                      }
                    });
    return absl::OkStatus();
  }

  // Builds the slot's response (any thread), then writes whatever is next in order.
  void Complete(const std::shared_ptr<Slot>& slot, absl::Status status, EmbedResult* result) {
    // On a pipeline worker, outside gRPC's reactions: once mu_ is released below, another
    // thread may finish the stream and delete this reactor, so what follows uses a copy.
    BertServiceImpl* const service = service_;
    v1::EmbedResponse response;
    response.set_request_id(slot->request_id);
    // The answer's bytes are held until written or dropped, as the permit.
    if (status.ok()) status = service->BuildAnswer(std::move(*result), &response, &slot->permit);
    const grpc::Status grpc_status = ToGrpcStatus(status);
    service->Record("EmbedStream", grpc_status.error_code(), slot->start);
    if (!status.ok()) {
      response.Clear();
      response.set_request_id(slot->request_id);
      response.mutable_error()->set_code(static_cast<int>(grpc_status.error_code()));
      response.mutable_error()->set_message(grpc_status.error_message());
      // An error about a request_id near the message limit cannot echo it: the answer would
      // be over the limit and end the stream. Answers come in order, so it still matches.
      const uint64_t limit = service->max_message_bytes();  // 0: unchecked
      if (limit > 0 && response.ByteSizeLong() > limit) response.clear_request_id();
    }
    Serialize(response, &slot->wire);
    slot->permit.MarkAnswered();  // as the unary calls' answers (before the slot is ready)
    Actions actions;
    bool released;
    {
      absl::MutexLock lock(&mu_);
      slot->ready = true;
      released = DropReadyIfBrokenLocked();
      actions = NextActionsLocked();
    }
    if (released) service->ReportInFlight();
    // Unless this thread was given the next write, a read or the finish (each of which keeps
    // the stream from finishing elsewhere until it is started), another thread may already
    // have finished the stream and deleted this reactor: `this` is not touched again, not
    // even to call Run with nothing to do.
    if (actions.write != nullptr || actions.read || actions.finish) Run(actions);
  }

  // Pops the written front slot and releases its permit; true if it held one.
  bool ReleaseFrontLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const bool held = pending_.front()->permit.valid();
    pending_.front()->permit.Reset();
    pending_.pop_front();
    return held;
  }

  // The client is gone: drops the answers that are ready at the front (releasing their
  // permits); the others are dropped as they become ready. True if a permit was released.
  bool DropReadyIfBrokenLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    bool released = false;
    while (broken_ && !writing_ && !pending_.empty() && pending_.front()->ready) {
      released |= ReleaseFrontLocked();
    }
    return released;
  }

  Actions NextActionsLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    Actions a;
    if (finished_) return a;
    if (!broken_ && !writing_ && !pending_.empty() && pending_.front()->ready) {
      writing_ = true;
      a.write = pending_.front();
      write_watch_ = service_->send_watchdog().Watch(context_);
    }
    if (!broken_ && !reading_ && !reads_done_ && pending_.size() < kMaxInFlight) {
      reading_ = true;
      a.read = true;
    }
    if ((reads_done_ || broken_) && !reading_ && !writing_ && pending_.empty()) {
      finished_ = true;
      a.finish = true;
      a.finish_status =
          broken_ ? grpc::Status(grpc::StatusCode::CANCELLED, "stream closed") : grpc::Status::OK;
    }
    return a;
  }

  // Starts what `a` says. Once an operation is started the stream may finish on another
  // thread (the write done, the last answer sent): nothing after it may use `this` but the
  // operations `a` still holds, which keep the stream open until they are started.
  void Run(const Actions& a) {
    if (a.write != nullptr) StartWrite(&a.write->wire);
    if (a.read) StartRead(&wire_in_);
    if (a.finish) Finish(a.finish_status);
  }

  BertServiceImpl* const service_;
  grpc::CallbackServerContext* const context_;
  grpc::ByteBuffer wire_in_;  // Owned by the one outstanding read.
  std::shared_ptr<std::atomic<bool>> cancelled_ = std::make_shared<std::atomic<bool>>(false);

  absl::Mutex mu_;
  std::deque<std::shared_ptr<Slot>> pending_ ABSL_GUARDED_BY(mu_);
  bool reading_ ABSL_GUARDED_BY(mu_) = false;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  // SendWatchdog's id for the write in flight: set (under mu_) when it is chosen, read in its
  // OnWriteDone.
  uint64_t write_watch_ = 0;
};

// Tokenize: parsed on gRPC's thread, tokenized on a pipeline worker (a large request would
// otherwise hold one of gRPC's threads), answered from there.
class TokenizeReactor final : public AdmittedUnaryReactor {
 public:
  TokenizeReactor(BertServiceImpl* service, grpc::CallbackServerContext* context,
                  const grpc::ByteBuffer* request, grpc::ByteBuffer* response)
      : AdmittedUnaryReactor(service, context, "Tokenize"), out_(response) {
    absl::Status status = Begin(request);
    if (!status.ok()) Done(status);
  }

 private:
  absl::Status Begin(const grpc::ByteBuffer* wire) {
    ASSIGN_OR_RETURN(Pipeline * pipeline, Admit());
    v1::TokenizeRequest request;
    RETURN_IF_ERROR(ParseTokenizeRequest(*wire, WireLimitsOf(pipeline->limits()), &request));
    auto spec = FromProto(request);
    if (!spec.ok()) return spec.status();
    pipeline->TokenizeOnWorker(
        *std::move(spec), [this](absl::StatusOr<std::vector<Encoding>> encodings) {
          if (!encodings.ok()) {
            Done(encodings.status());
            return;
          }
          v1::TokenizeResponse response;
          ToProto(*std::move(encodings), &response);
          // As Embed's: refused rather than cut off by gRPC.
          if (absl::Status size =
                  service_->CheckAnswerSize(response, "send fewer inputs or a smaller seq_length");
              !size.ok()) {
            Done(size);
            return;
          }
          Serialize(response, out_);
          Done(absl::OkStatus());
        });
    return absl::OkStatus();
  }

  grpc::ByteBuffer* const out_;
};

// Decode: as Tokenize, parsed on gRPC's thread, decoded and answered on a pipeline worker; its
// answer's bytes are counted in the answer memory budget until it is sent.
class DecodeReactor final : public AdmittedUnaryReactor {
 public:
  DecodeReactor(BertServiceImpl* service, grpc::CallbackServerContext* context,
                const grpc::ByteBuffer* request, grpc::ByteBuffer* response)
      : AdmittedUnaryReactor(service, context, "Decode"), out_(response) {
    absl::Status status = Begin(request);
    if (!status.ok()) Done(status);
  }

 private:
  absl::Status Begin(const grpc::ByteBuffer* wire) {
    ASSIGN_OR_RETURN(Pipeline * pipeline, Admit());
    v1::DecodeRequest request;
    RETURN_IF_ERROR(ParseDecodeRequest(*wire, WireLimitsOf(pipeline->limits()), &request));
    pipeline->DecodeOnWorker(FromProto(request), [this](absl::StatusOr<DecodeResult> result) {
      if (!result.ok()) {
        Done(result.status());
        return;
      }
      v1::DecodeResponse response;
      ToProto(std::move(result->texts), &response);
      // Within the bound the pipeline checked; checked as every answer is.
      if (absl::Status size = service_->CheckAnswerSize(response, "send fewer ids"); !size.ok()) {
        Done(size);
        return;
      }
      // The answer's bytes stay counted until it has been sent, as Embed's and Rerank's.
      HoldAnswerBytes(std::move(result->memory));
      Serialize(response, out_);
      Done(absl::OkStatus());
    });
    return absl::OkStatus();
  }

  grpc::ByteBuffer* const out_;
};

// Rerank: the Embed request of (query, text) pairs it stands for (EmbedSpecForRerank), whose
// logits are scored and ranked on the pipeline thread that finishes it, and answered there.
class RerankReactor final : public AdmittedUnaryReactor {
 public:
  RerankReactor(BertServiceImpl* service, grpc::CallbackServerContext* context,
                const grpc::ByteBuffer* request, grpc::ByteBuffer* response)
      : AdmittedUnaryReactor(service, context, "Rerank"), out_(response) {
    absl::Status status = Begin(request);
    if (!status.ok()) Answer(status);
  }

 private:
  absl::Status Begin(const grpc::ByteBuffer* wire) {
    ASSIGN_OR_RETURN(Pipeline * pipeline, Admit());
    RETURN_IF_ERROR(ParseRerankRequest(*wire, WireLimitsOf(pipeline->limits()), &request_));
    const int num_labels = pipeline->limits().num_labels;
    if (num_labels == 0 || pipeline->limits().token_classifier) {
      return absl::FailedPreconditionError(absl::StrCat(
          "Rerank needs a cross-encoder: a model with a sequence-classification head of one "
          "label (ModelInfo.classifier); this one has ",
          num_labels == 0 ? "none" : "a token classifier"));
    }
    if (num_labels != 1) {
      return absl::FailedPreconditionError(absl::StrCat(
          "Rerank needs a classifier of one label (a cross-encoder's relevance); this model's "
          "has ",
          num_labels, ": ask Embed for HEAD_LOGITS"));
    }
    const Classifier& classifier = pipeline->options().classifier;
    ASSIGN_OR_RETURN(EmbedRequestSpec spec, EmbedSpecForRerank(request_, classifier.max_seq_length,
                                                               service_->max_request_bytes()));
    // Checked before any work, against the answer's largest size (its texts are known).
    const uint64_t limit = service_->max_message_bytes();  // 0: unchecked
    if (limit > 0 && static_cast<uint64_t>(spec.answer_bytes) > limit) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the ranking could take ", spec.answer_bytes, " bytes, over the server's ", limit,
          "-byte message limit: ask for fewer texts (top_n) or without return_text, or a "
          "shorter request_id"));
    }
    function_ = RerankScoreFunction(classifier.activation_function, request_.raw_scores());
    pipeline->Embed(std::move(spec), DeadlineOf(context_), cancelled(),
                    [this](absl::StatusOr<EmbedResult> result) {
                      Answer(result.ok() ? Rank(*std::move(result)) : result.status());
                    });
    return absl::OkStatus();
  }

  // The ranking into out_ (within the message limit: Begin checked its bound), its bytes
  // counted in the permit until the call is done; the request is let go.
  absl::Status Rank(EmbedResult result) {
    v1::RerankResponse response;
    ToRerankResponse(result, request_, function_, &response);
    if (service_->metrics() != nullptr) service_->metrics()->RecordStages(result.timing);
    HoldAnswerBytes(std::move(result.memory));
    Serialize(response, out_);
    v1::RerankRequest().Swap(&request_);  // its texts can be megabytes
    return absl::OkStatus();
  }

  void Answer(const absl::Status& status) {
    GivePlaceToNext();
    Done(status);
  }

  grpc::ByteBuffer* const out_;
  v1::RerankRequest request_;  // from Begin until the answer is built (Rank)
  ScoreFunction function_ = ScoreFunction::kNone;
};

}  // namespace

BertServiceImpl::BertServiceImpl(ServiceConfig config, ServerMetrics* metrics)
    : config_(std::move(config)), metrics_(metrics) {}

absl::Status BertServiceImpl::CheckAuth(const grpc::CallbackServerContext* context) const {
  if (config_.auth_token.empty()) return absl::OkStatus();
  const auto& metadata = context->client_metadata();
  auto it = metadata.find("authorization");
  if (it == metadata.end()) {
    return absl::UnauthenticatedError("missing \"authorization: Bearer <token>\" metadata");
  }
  absl::string_view value(it->second.data(), it->second.size());
  constexpr absl::string_view kPrefix = "Bearer ";
  if (!absl::StartsWith(value, kPrefix) ||
      !ConstantTimeEquals(value.substr(kPrefix.size()), config_.auth_token)) {
    return absl::UnauthenticatedError("invalid bearer token");
  }
  return absl::OkStatus();
}

void BertServiceImpl::ReportInFlight() const {
  Pipeline* p = pipeline();
  if (metrics_ == nullptr || p == nullptr) return;
  absl::MutexLock lock(&gauge_mu_);
  metrics_->SetInFlight(p->in_flight());
  metrics_->SetAnswerMemory(p->answer_memory_bytes());
}

absl::Status BertServiceImpl::BuildAnswer(EmbedResult result, v1::EmbedResponse* response,
                                          Admission::Permit* permit) {
  const StageTiming timing = result.timing;
  Admission::Bytes memory = std::move(result.memory);
  ToProto(std::move(result), response);
  absl::Status status = CheckAnswerSize(*response);
  if (status.ok()) {
    if (metrics_ != nullptr) metrics_->RecordStages(timing);
    permit->Hold(std::move(memory));
  }
  memory.Reset();  // (moved, unless the answer was refused: only its error is left to send)
  ReportInFlight();
  return status;
}

absl::Status BertServiceImpl::CheckAnswerSize(const google::protobuf::MessageLite& response,
                                              absl::string_view advice) const {
  const uint64_t limit = config_.max_message_bytes;  // 0: unchecked
  const size_t size = response.ByteSizeLong();
  if (limit == 0 || size <= limit) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("the response would be ", size,
                                                 " bytes, over the server's ", limit,
                                                 "-byte message limit: ", advice));
}

void BertServiceImpl::Record(const char* method, grpc::StatusCode code, absl::Time start) const {
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  if (metrics_ != nullptr) metrics_->RecordRequest(method, code, seconds);
  ReportInFlight();
  if (LogEnabled(LogLevel::kDebug)) {
    BERT_LOG(kDebug) << "rpc" << LogKv("method", method) << LogKv("code", GrpcCodeName(code))
                     << LogKv("ms", seconds * 1e3);
  }
}

grpc::ServerUnaryReactor* BertServiceImpl::Embed(grpc::CallbackServerContext* context,
                                                 const grpc::ByteBuffer* request,
                                                 grpc::ByteBuffer* response) {
  return new EmbedReactor(this, context, request, response);
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* BertServiceImpl::EmbedStream(
    grpc::CallbackServerContext* context) {
  return new StreamReactor(this, context);
}

grpc::ServerUnaryReactor* BertServiceImpl::Tokenize(grpc::CallbackServerContext* context,
                                                    const grpc::ByteBuffer* wire,
                                                    grpc::ByteBuffer* out) {
  return new TokenizeReactor(this, context, wire, out);
}

grpc::ServerUnaryReactor* BertServiceImpl::Decode(grpc::CallbackServerContext* context,
                                                  const grpc::ByteBuffer* wire,
                                                  grpc::ByteBuffer* out) {
  return new DecodeReactor(this, context, wire, out);
}

grpc::ServerUnaryReactor* BertServiceImpl::Rerank(grpc::CallbackServerContext* context,
                                                  const grpc::ByteBuffer* wire,
                                                  grpc::ByteBuffer* out) {
  return new RerankReactor(this, context, wire, out);
}

grpc::ServerUnaryReactor* BertServiceImpl::GetModelInfo(grpc::CallbackServerContext* context,
                                                        const v1::GetModelInfoRequest* request,
                                                        v1::ModelInfo* response) {
  const absl::Time start = absl::Now();
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  auto run = [&]() -> absl::Status {
    absl::Status auth = CheckAuth(context);
    if (!auth.ok()) return auth;
    Pipeline* p = pipeline();
    if (p == nullptr) return NotReady();
    const Engine& engine = p->engine();
    const ModelConfig& c = engine.config();
    const EngineInfo info = engine.info();
    response->set_model_name(config_.model_name);
    v1::ModelConfig* mc = response->mutable_config();
    mc->set_num_layers(c.num_layers);
    mc->set_hidden_size(c.hidden_size);
    mc->set_num_attention_heads(c.num_heads);
    mc->set_intermediate_size(c.intermediate_size);
    mc->set_vocab_size(c.vocab_size);
    mc->set_max_position_embeddings(c.max_position_embeddings);
    mc->set_type_vocab_size(c.type_vocab_size);
    mc->set_hidden_act(c.activation == Activation::kGeluTanh ? "gelu_tanh" : "gelu");
    mc->set_has_pooler(engine.has_pooler());
    mc->set_lowercase(p->tokenizer().lowercase());
    response->set_backend(info.backend);
    response->set_device(info.device);
    switch (info.dtype) {
      case DType::kFloat32:
        response->set_compute_dtype(v1::DATA_TYPE_FLOAT32);
        break;
      case DType::kFloat16:
        response->set_compute_dtype(v1::DATA_TYPE_FLOAT16);
        break;
      case DType::kBFloat16:
        response->set_compute_dtype(v1::DATA_TYPE_BFLOAT16);
        break;
    }
    v1::ServerLimits* limits = response->mutable_limits();
    limits->set_max_inputs_per_request(p->limits().max_inputs_per_request);
    limits->set_max_seq_length(p->limits().max_seq_length);
    limits->set_default_seq_length(p->limits().default_seq_length);
    limits->set_max_batch_tokens(p->options().max_batch_tokens);
    limits->set_max_concurrent_requests(p->options().max_concurrent_requests);
    limits->set_max_message_bytes(config_.max_message_bytes);
    limits->set_max_request_bytes(config_.max_request_bytes);
    limits->set_max_answer_memory_bytes(p->options().max_answer_memory_bytes);
    response->set_server_version(config_.server_version);
    v1::SentenceEmbedding* embedding = response->mutable_sentence_embedding();
    switch (sentence_embedding_.pooling) {
      case SentenceEmbedding::Pooling::kMean:
        embedding->set_head(v1::HEAD_MEAN_POOLED);
        break;
      case SentenceEmbedding::Pooling::kCls:
        embedding->set_head(v1::HEAD_CLS);
        break;
      case SentenceEmbedding::Pooling::kUnknown:
        embedding->set_head(v1::HEAD_UNSPECIFIED);
        break;
    }
    embedding->set_normalize(sentence_embedding_.normalize);
    embedding->set_note(sentence_embedding_.note);
    embedding->set_max_seq_length(sentence_embedding_.max_seq_length);
    for (const auto& [name, text] : sentence_embedding_.prompts) {
      (*embedding->mutable_prompts())[name] = text;
    }
    embedding->set_default_prompt_name(sentence_embedding_.default_prompt_name);
    embedding->set_similarity_fn_name(sentence_embedding_.similarity_fn_name);
    const Classifier& classifier = p->options().classifier;
    if (p->limits().num_labels > 0) {
      v1::Classifier* out = response->mutable_classifier();
      for (const std::string& label : classifier.labels) out->add_labels(label);
      out->set_problem_type(classifier.problem_type);
      out->set_activation_function(classifier.activation_function);
      out->set_max_seq_length(classifier.max_seq_length);
      out->set_per_token(p->limits().token_classifier);
    }
    return absl::OkStatus();
  };
  const grpc::Status status = ToGrpcStatus(run());
  Record("GetModelInfo", status.error_code(), start);
  reactor->Finish(status);
  return reactor;
}

}  // namespace bert
