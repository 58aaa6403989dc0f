#include "server/grpc/bert_service.h"

#include <chrono>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/grpc/convert.h"
#include "server/grpc/status_map.h"
#include "server/grpc/wire.h"
#include "server/util/log.h"

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

// Embed: one request, answered from a pipeline thread.
class EmbedReactor final : public grpc::ServerUnaryReactor {
 public:
  EmbedReactor(BertServiceImpl* service, grpc::CallbackServerContext* context,
               const grpc::ByteBuffer* request, grpc::ByteBuffer* response)
      : service_(service), out_(response), start_(absl::Now()) {
    absl::Status status = Begin(context, request);
    if (!status.ok()) Done(status);
  }

  void OnCancel() override { cancelled_->store(true); }
  void OnDone() override { delete this; }

 private:
  absl::Status Begin(grpc::CallbackServerContext* context, const grpc::ByteBuffer* wire) {
    absl::Status auth = service_->CheckAuth(context);
    if (!auth.ok()) return auth;
    Pipeline* pipeline = service_->pipeline();
    if (pipeline == nullptr) return NotReady();
    auto permit = pipeline->Admit();
    if (!permit.ok()) return permit.status();
    if (service_->metrics() != nullptr) service_->metrics()->SetInFlight(pipeline->in_flight());
    v1::EmbedRequest request;
    absl::Status parsed = ParseEmbedRequest(*wire, &request);
    if (!parsed.ok()) return parsed;
    auto spec = FromProto(request);
    if (!spec.ok()) return spec.status();
    response_->set_request_id(request.request_id());
    pipeline->Embed(*std::move(spec), DeadlineOf(context), cancelled_, *std::move(permit),
                    [this](absl::StatusOr<EmbedResult> result) {
                      if (!result.ok()) {
                        Done(result.status());
                        return;
                      }
                      if (service_->metrics() != nullptr) {
                        service_->metrics()->RecordStages(result->timing);
                      }
                      ToProto(*std::move(result), response_.get());
                      Done(absl::OkStatus());
                    });
    return absl::OkStatus();
  }

  void Done(absl::Status status) {
    if (status.ok()) status = Serialize(*response_, out_);
    grpc::Status grpc_status = ToGrpcStatus(status);
    service_->Record("Embed", grpc_status.error_code(), start_);
    response_.reset();
    Finish(grpc_status);
  }

  BertServiceImpl* const service_;
  grpc::ByteBuffer* const out_;
  std::unique_ptr<v1::EmbedResponse> response_ = std::make_unique<v1::EmbedResponse>();
  const absl::Time start_;
  std::shared_ptr<std::atomic<bool>> cancelled_ = std::make_shared<std::atomic<bool>>(false);
};

// EmbedStream: reads one request, answers it, then reads the next, so responses keep the
// requests' order. A bad request gets a response with `error`; the stream goes on.
class StreamReactor final : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  StreamReactor(BertServiceImpl* service, grpc::CallbackServerContext* context)
      : service_(service), context_(context) {
    absl::Status auth = service_->CheckAuth(context);
    if (!auth.ok()) {
      Finish(ToGrpcStatus(auth));
      return;
    }
    StartRead(&wire_in_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {  // The client has finished sending (or the call is gone).
      Finish(grpc::Status::OK);
      return;
    }
    start_ = absl::Now();
    response_.Clear();
    request_.Clear();
    absl::Status status = ParseEmbedRequest(wire_in_, &request_);
    response_.set_request_id(request_.request_id());
    if (status.ok()) status = Submit();
    if (!status.ok()) Answer(status);
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "the stream was closed"));
      return;
    }
    StartRead(&wire_in_);
  }

  void OnCancel() override { cancelled_->store(true); }
  void OnDone() override { delete this; }

 private:
  absl::Status Submit() {
    Pipeline* pipeline = service_->pipeline();
    if (pipeline == nullptr) return NotReady();
    auto permit = pipeline->Admit();
    if (!permit.ok()) return permit.status();
    auto spec = FromProto(request_);
    if (!spec.ok()) return spec.status();
    pipeline->Embed(*std::move(spec), DeadlineOf(context_), cancelled_, *std::move(permit),
                    [this](absl::StatusOr<EmbedResult> result) {
                      if (!result.ok()) {
                        Answer(result.status());
                        return;
                      }
                      if (service_->metrics() != nullptr) {
                        service_->metrics()->RecordStages(result->timing);
                      }
                      ToProto(*std::move(result), &response_);
                      Answer(absl::OkStatus());
                    });
    return absl::OkStatus();
  }

  void Answer(const absl::Status& status) {
    const grpc::Status grpc_status = ToGrpcStatus(status);
    service_->Record("EmbedStream", grpc_status.error_code(), start_);
    if (!status.ok()) {
      const std::string id = response_.request_id();
      response_.Clear();
      response_.set_request_id(id);
      response_.mutable_error()->set_code(static_cast<int>(grpc_status.error_code()));
      response_.mutable_error()->set_message(grpc_status.error_message());
    }
    absl::Status serialized = Serialize(response_, &wire_out_);
    if (!serialized.ok()) {
      Finish(ToGrpcStatus(serialized));
      return;
    }
    response_.Clear();
    StartWrite(&wire_out_);
  }

  BertServiceImpl* const service_;
  grpc::CallbackServerContext* const context_;
  grpc::ByteBuffer wire_in_;
  grpc::ByteBuffer wire_out_;
  v1::EmbedRequest request_;
  v1::EmbedResponse response_;
  absl::Time start_;
  std::shared_ptr<std::atomic<bool>> cancelled_ = std::make_shared<std::atomic<bool>>(false);
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

void BertServiceImpl::Record(const char* method, grpc::StatusCode code, absl::Time start) const {
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  if (metrics_ != nullptr) {
    metrics_->RecordRequest(method, code, seconds);
    Pipeline* p = pipeline();
    if (p != nullptr) metrics_->SetInFlight(p->in_flight());
  }
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
  const absl::Time start = absl::Now();
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  auto run = [&]() -> absl::Status {
    absl::Status auth = CheckAuth(context);
    if (!auth.ok()) return auth;
    Pipeline* p = pipeline();
    if (p == nullptr) return NotReady();
    auto permit = p->Admit();
    if (!permit.ok()) return permit.status();
    v1::TokenizeRequest request;
    absl::Status parsed = ParseTokenizeRequest(*wire, &request);
    if (!parsed.ok()) return parsed;
    auto spec = FromProto(request);
    if (!spec.ok()) return spec.status();
    auto encodings = p->Tokenize(*spec);
    if (!encodings.ok()) return encodings.status();
    v1::TokenizeResponse response;
    ToProto(*std::move(encodings), &response);
    return Serialize(response, out);
  };
  const grpc::Status status = ToGrpcStatus(run());
  Record("Tokenize", status.error_code(), start);
  reactor->Finish(status);
  return reactor;
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
    response->set_server_version(config_.server_version);
    return absl::OkStatus();
  };
  const grpc::Status status = ToGrpcStatus(run());
  Record("GetModelInfo", status.error_code(), start);
  reactor->Finish(status);
  return reactor;
}

}  // namespace bert
