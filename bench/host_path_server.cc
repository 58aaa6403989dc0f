// bert_server's host path alone: the same gRPC service, validation, tokenization, batching
// and response assembly, in front of an engine that computes nothing (it answers zeros of
// the right shapes at once). A load generator against it measures what the host side of a
// server costs per sequence, i.e. how many sequences per second it can feed a GPU engine
// (bench/host_path.py drives it with bert_load and reads its CPU time).
//
//   host_path_server --vocab=tests/data/bert_uncased_vocab.txt [--address=127.0.0.1:0]
//       [--tokenization_workers=1] [--max_batch_tokens=16384] [--max_batch_delay_us=2000]
//       [--max_concurrent_requests=1024] [--max_inputs_per_request=256] [--exit_on_stdin_eof]
//
// The model is BERT-base's shape (hidden 768, 12 layers, 512 positions, the vocabulary's
// size). Prints "listening on ADDRESS" (HOST:PORT with the port picked, or the unix: address)
// once it serves; exits 0 on SIGTERM/SIGINT (or, with
// --exit_on_stdin_eof, when stdin closes), after answering what it accepted.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "server/core/pipeline.h"
#include "server/engine/engine.h"
#include "server/engine/model.h"
#include "server/grpc/bert_service.h"
#include "server/grpc/metrics.h"
#include "server/text/tokenizer.h"
#include "server/util/listen_address.h"

ABSL_FLAG(std::string, vocab, "", "WordPiece vocabulary (uncased)");
ABSL_FLAG(std::string, address, "127.0.0.1:0",
          "gRPC listen address: HOST:PORT (port 0: pick one) or unix:PATH");
ABSL_FLAG(int, tokenization_workers, 1, "Threads that tokenize and assemble responses");
ABSL_FLAG(int, max_batch_tokens, 16384, "Token budget of one engine batch");
ABSL_FLAG(int, max_batch_delay_us, 2000, "Longest a batch waits for more sequences");
ABSL_FLAG(int, max_concurrent_requests, 1024, "Requests in flight before RESOURCE_EXHAUSTED");
ABSL_FLAG(int, max_inputs_per_request, 256, "Inputs allowed in one request");
ABSL_FLAG(bool, exit_on_stdin_eof, false,
          "Also stop when stdin closes (so that a parent that dies takes the server along)");

namespace bert {
namespace {

// Answers every batch at once with zeros of the selected outputs' shapes.
class NullEngine : public Engine {
 public:
  explicit NullEngine(ModelConfig config) : config_(config) {}

  const ModelConfig& config() const override { return config_; }
  bool has_pooler() const override { return true; }
  EngineInfo info() const override { return {"null", "none (host path only)", DType::kFloat32}; }

  absl::Status Encode(const EncoderBatch& batch, const OutputSelection& selection,
                      EncoderOutput* output) override {
    if (absl::Status s = ValidateBatch(config_, batch); !s.ok()) return s;
    if (absl::Status s = ValidateSelection(config_, true, selection); !s.ok()) return s;
    const size_t hidden = static_cast<size_t>(config_.hidden_size);
    const size_t rows = static_cast<size_t>(batch.total_rows()) * hidden;
    const size_t sequences = static_cast<size_t>(batch.num_sequences()) * hidden;
    *output = EncoderOutput();
    if (selection.sequence) output->sequence.assign(rows, 0.f);
    for (size_t i = 0; i < selection.layers.size(); ++i) output->layers.emplace_back(rows, 0.f);
    if (selection.pooled) output->pooled.assign(sequences, 0.f);
    if (selection.mean_pooled) output->mean_pooled.assign(sequences, 0.f);
    if (selection.cls) output->cls.assign(sequences, 0.f);
    return absl::OkStatus();
  }

 private:
  const ModelConfig config_;
};

std::atomic<bool> stop_requested{false};  // lock-free: set from a signal handler

void OnSignal(int) { stop_requested.store(true); }

int Main() {
  auto tokenizer = BertTokenizer::Load(absl::GetFlag(FLAGS_vocab), BertTokenizer::Options());
  if (!tokenizer.ok()) {
    std::fprintf(stderr, "host_path_server: %s\n", tokenizer.status().ToString().c_str());
    return 2;
  }
  ModelConfig config = BertBaseConfig();
  config.vocab_size = (*tokenizer)->vocab_size();

  PipelineOptions options;
  options.max_concurrent_requests = absl::GetFlag(FLAGS_max_concurrent_requests);
  options.max_inputs_per_request = absl::GetFlag(FLAGS_max_inputs_per_request);
  options.max_batch_tokens = absl::GetFlag(FLAGS_max_batch_tokens);
  options.max_batch_delay = absl::Microseconds(absl::GetFlag(FLAGS_max_batch_delay_us));
  options.tokenization_workers = absl::GetFlag(FLAGS_tokenization_workers);
  options.max_response_bytes = 64 << 20;
  ServerMetrics metrics;
  Pipeline pipeline(options, std::make_unique<NullEngine>(config), *std::move(tokenizer), &metrics);
  if (absl::Status warm = pipeline.Warmup(); !warm.ok()) {
    std::fprintf(stderr, "host_path_server: %s\n", warm.ToString().c_str());
    return 1;
  }
  pipeline.Start();

  signal(SIGTERM, OnSignal);
  signal(SIGINT, OnSignal);
  ServiceConfig service_config;
  service_config.model_name = "null-bert-base";
  service_config.max_message_bytes = 64 << 20;
  BertServiceImpl service(service_config, &metrics);
  service.SetPipeline(&pipeline);
  grpc::ServerBuilder builder;
  int port = 0;
  const std::string address = absl::GetFlag(FLAGS_address);
  if (absl::Status added =
          AddExclusiveListeningPort(address, grpc::InsecureServerCredentials(), &builder, &port);
      !added.ok()) {
    std::fprintf(stderr, "host_path_server: %s\n", added.ToString().c_str());
    return 1;
  }
  builder.SetMaxReceiveMessageSize(64 << 20);
  builder.SetMaxSendMessageSize(64 << 20);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    std::fprintf(stderr, "host_path_server: cannot listen on %s\n", address.c_str());
    return 1;
  }
  std::printf("listening on %s\n", ListeningAddress(address, port).c_str());
  std::fflush(stdout);

  if (absl::GetFlag(FLAGS_exit_on_stdin_eof)) {
    std::thread([] {
      char c;
      while (read(STDIN_FILENO, &c, 1) > 0) {
      }
      stop_requested.store(true);
    }).detach();
  }
  while (!stop_requested.load()) absl::SleepFor(absl::Milliseconds(100));
  pipeline.Drain(absl::Seconds(10));
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(200));
  return 0;
}

}  // namespace
}  // namespace bert

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);  // as bert_server
  return bert::Main();
}
