// bert_server: serves a BERT-architecture encoder over gRPC (bert.v1.BertService).
//
//   bert_server --model_dir=models/all-MiniLM-L6-v2 [--address=127.0.0.1:50051] ...
//
// Startup: listen at once (health NOT_SERVING), load the vocabulary and the model, build
// the engine, warm it up at the largest batch shape, then report SERVING. SIGTERM or
// SIGINT: report NOT_SERVING, serve on for --drain_delay_s, then send every connection
// GOAWAY and close the listener, answer every call the service has taken (bounded by
// --drain_timeout_s), exit 0; before SERVING (nothing accepted yet), exit 0 at once.
#include <semaphore.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <new>
#include <string>
#include <system_error>
#include <thread>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpc/grpc.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/resource_quota.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "kernels/cpu/blas_core.h"
#include "kernels/cpu/cpu_features.h"
#include "server/core/batcher.h"
#include "server/core/engine_watchdog.h"
#include "server/core/pipeline.h"
#include "server/engine/cuda_engine.h"
#include "server/engine/engine_factory.h"
#include "server/engine/fault_injection.h"
#include "server/engine/model.h"
#include "server/grpc/bert_service.h"
#include "server/grpc/metrics.h"
#include "server/text/lowercase.h"
#include "server/text/tokenizer.h"
#include "server/util/available_cores.h"
#include "server/util/device_memory.h"
#include "server/util/listen_address.h"
#include "server/util/log.h"
#include "server/util/read_file.h"
#include "server/util/status_macros.h"

ABSL_FLAG(std::string, model_dir, "",
          "Model directory (config.json, model.safetensors, vocab.txt)");
ABSL_FLAG(std::string, vocab, "", "WordPiece vocabulary; default <model_dir>/vocab.txt");
ABSL_FLAG(std::string, address, "127.0.0.1:50051",
          "gRPC listen address: HOST:PORT (port 0: pick one) or unix:PATH (a Unix domain socket)");
ABSL_FLAG(std::string, metrics_address, "",
          "HTTP address of Prometheus /metrics and the /livez and /readyz probes, e.g. "
          "127.0.0.1:9090 (empty: off)");
ABSL_FLAG(std::string, backend, "auto", "auto (CUDA when a GPU is present, else CPU), cpu, cuda");
ABSL_FLAG(
    std::string, dtype, "auto",
    "Compute dtype: auto (float16 with --backend=cuda, else float32; bfloat16 with "
    "--cpu_gemm=amx_bf16), float32, float16, bfloat16 (on the CPU backend: Intel AMX's bfloat16 "
    "GEMM, Sapphire Rapids or later)");
ABSL_FLAG(int, max_concurrent_requests, 64,
          "Requests worked on at once before RESOURCE_EXHAUSTED (as many Embed answers again "
          "may be waiting to be sent)");
ABSL_FLAG(int, max_inputs_per_request, 256, "Inputs allowed in one request");
ABSL_FLAG(int, max_batch_tokens, 8192, "Token budget of one engine batch (padding rows count)");
ABSL_FLAG(int, max_batch_delay_us, 2000,
          "Longest a batch waits for more sequences while the engine is idle (a batch "
          "waiting for a busy engine keeps filling); at most 1000000");
// Its help spells out Batcher::kFruitlessWaits and kProbeEvery (checked below).
ABSL_FLAG(bool, adaptive_batch_delay, true,
          "Wait out --max_batch_delay_us only while waiting gains sequences: after 3 waits in a "
          "row that gained none (a caller alone), a batch waits only for requests being "
          "tokenized, checking again every 32nd batch; false: every batch for an idle engine "
          "waits the delay");
ABSL_FLAG(int, tokenization_workers, 0,
          "Threads that tokenize and assemble responses (0: one per usable CPU)");
ABSL_FLAG(int, cpu_threads, 0, "Threads of the CPU engine (0: all cores)");
ABSL_FLAG(std::string, cpu_gemm, bert::CpuEngineOptions().gemm,
          "CPU engine: the Linear layers' GEMM: avx512, avx2 or portable (our packed kernel's "
          "float32 versions), openblas (OpenBLAS sgemm, no packed copy of the weights), auto "
          "(the best packed version where the CPU has AVX2 and FMA, else openblas), or amx_bf16 "
          "(Intel AMX, products of bfloat16 inputs and weights: what --dtype=bfloat16 runs)");
// Accepted so that command lines written for earlier versions still start the server.
ABSL_FLAG(int, cpu_few_rows_max, -1, "Deprecated, no effect (see --cpu_gemm)");
// The CUDA engine's tuning switches: one flag per entry of bert::CudaTuningSwitches(), read
// through that table (a switch without its flag here stops the server at startup; a flag
// added here without a table entry would never be read).
ABSL_FLAG(bool, cuda_graphs, bert::CudaEngineOptions().cuda_graphs,
          "CUDA backend: replay captured CUDA graphs for batch shapes seen before");
ABSL_FLAG(int, cuda_graph_max_rows, bert::CudaEngineOptions().max_graph_rows,
          "CUDA backend: capture graphs only for batches of at most this many rows");
ABSL_FLAG(bool, fused_gelu, bert::CudaEngineOptions().fused_gelu,
          "CUDA backend, float16/bfloat16: bias + GELU in the FFN GEMM's epilogue (tanh form, "
          "< 1/4 fp16 ulp from erf GELU); false: a separate pass in the model's own GELU form");
ABSL_FLAG(bool, residual_in_gemm, bert::CudaEngineOptions().residual_in_gemm,
          "CUDA backend: add bias and residual in the GEMM's epilogue before each LayerNorm");
ABSL_FLAG(bool, cuda_overlap_copies, bert::CudaEngineOptions().overlap_copies,
          "CUDA backend: copy outputs back on a second stream, overlapping later layers");
ABSL_FLAG(bool, gemm_autotune, bert::CudaEngineOptions().gemm_autotune,
          "CUDA backend: time cuBLASLt's candidate algorithms per GEMM shape on first use");
ABSL_FLAG(bool, cuda_pdl, bert::CudaEngineOptions().programmatic_launch,
          "CUDA backend, Hopper and later: programmatic dependent launches of our kernels "
          "(each scheduled while the previous one finishes; same results)");
ABSL_FLAG(bool, cuda_attention_double_buffer, bert::CudaEngineOptions().attention_double_buffer,
          "CUDA backend, float16/bfloat16: attention copies the next key tile while computing "
          "on the current one (two K/V buffers; same results)");
ABSL_FLAG(int, cuda_attention_tile, bert::CudaEngineOptions().attention_tile,
          "CUDA backend, float16/bfloat16: the attention kernel's query tile, 16, 32 or 64 rows; "
          "0: chosen per batch (shorter tiles where 64 rows would leave SMs idle; same results)");
ABSL_FLAG(int, cuda_layer_norm_hoist_max_rows, bert::CudaEngineOptions().layer_norm_hoist_max_rows,
          "CUDA backend: batches of at most this many rows run the LayerNorm that loads its "
          "parameters before its reductions; 0: never (same results)");
ABSL_FLAG(int, cuda_layer_norm_in_gemm_max_rows,
          bert::CudaEngineOptions().layer_norm_in_gemm_max_rows,
          "CUDA backend, float16/bfloat16: batches of at most this many rows run each block's "
          "closing projection and its LayerNorm as one kernel (our split-K GEMM); 0: off");
ABSL_FLAG(bool, custom_gemm, bert::CudaEngineOptions().custom_gemm,
          "CUDA backend, float16/bfloat16, with --gemm_autotune: also time our split-K GEMM "
          "kernel for batches of at most 256 rows (used where faster and in agreement with "
          "cuBLASLt)");
ABSL_FLAG(int, default_seq_length, 128, "seq_length of requests that leave it 0");
ABSL_FLAG(int64_t, max_message_bytes, 64 << 20,
          "Largest response message (and request, when larger than --max_request_bytes)");
ABSL_FLAG(int64_t, max_request_bytes, 16 << 20,
          "Largest request message, at most --max_message_bytes (0: that); what gRPC may "
          "buffer per unfinished incoming message");
ABSL_FLAG(int, max_streams_per_connection, 256,
          "Calls one client connection may have open at once (HTTP/2 streams); more wait in "
          "the client");
ABSL_FLAG(int64_t, max_answer_memory_mb, 1024,
          "Embed answers held at once (computed or being computed, not yet sent), MiB: a "
          "request whose answer would pass it gets RESOURCE_EXHAUSTED; at least "
          "--max_message_bytes; 0: unlimited");
ABSL_FLAG(int64_t, grpc_memory_limit_mb, 2048,
          "Memory gRPC may use for its connections (incoming messages included), MiB: above "
          "it gRPC sheds connections; 0: unlimited");
ABSL_FLAG(std::string, lowercase, "auto",
          "Lowercase and strip accents: auto (from tokenizer_config.json or the vocab), "
          "true, false");
ABSL_FLAG(std::string, tls_cert, "", "PEM server certificate chain (with --tls_key: TLS)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key for --tls_cert");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA certificate(s): with --tls_cert, require every client to present a "
          "certificate they signed (mutual TLS; empty: clients need none)");
ABSL_FLAG(std::string, auth_token, "", "Require 'authorization: Bearer <token>'");
ABSL_FLAG(std::string, auth_token_file, "", "Read the bearer token from this file");
ABSL_FLAG(int, drain_timeout_s, 30, "On SIGTERM, longest wait for accepted calls");
ABSL_FLAG(int, drain_delay_s, 0,
          "On SIGTERM, seconds to go on serving with health NOT_SERVING before the drain, so that "
          "load balancers stop sending new connections here first (a second signal ends it); "
          "0: drain at once");
ABSL_FLAG(int, max_connection_age_s, 0,
          "Ask each client connection to close (HTTP/2 GOAWAY; calls in progress go on) after "
          "about this many seconds (gRPC adds up to 10 % jitter), so that clients behind one "
          "address reconnect and spread over replicas added since; 0: never");
ABSL_FLAG(int, max_connection_age_grace_s, 0,
          "After --max_connection_age_s, longest the calls still in progress on that connection "
          "may go on before it is closed; 0: no limit");
ABSL_FLAG(int, max_connection_idle_s, 0,
          "Close (GOAWAY) a connection that has had no call for this many seconds; 0: never");
ABSL_FLAG(int, keepalive_time_s, 7200,
          "Ping a client after this many seconds without traffic on its connection, to find "
          "peers that are gone (gRPC pings only connections with calls in progress unless "
          "--keepalive_permit_without_calls)");
ABSL_FLAG(int, keepalive_timeout_s, 20,
          "Close a connection whose client has not answered a keepalive ping within this many "
          "seconds");
ABSL_FLAG(int, keepalive_min_client_ping_interval_s, 300,
          "Shortest interval between a client's pings that the server accepts while it sends "
          "no data; a client that pings more often is disconnected (GOAWAY \"too_many_pings\")");
ABSL_FLAG(bool, keepalive_permit_without_calls, false,
          "Accept client pings (and send keepalive pings) on connections without calls in "
          "progress; otherwise such a client ping counts as too frequent");
ABSL_FLAG(int, send_timeout_s, 20,
          "Longest an answer may wait for its client to take it (HTTP/2 flow control) before "
          "the call is cancelled, freeing its admission; 0: no limit");
ABSL_FLAG(std::string, log_level, "info", "debug, info, warning, error");
ABSL_FLAG(int, debug_engine_fault_word_id, -1,
          "Testing only: after warm-up, the first batch holding this word id meets "
          "--debug_engine_fault; -1: off");
ABSL_FLAG(std::string, debug_engine_fault, "break",
          "Testing only: break (the engine fails for good, as a lost GPU context would; the "
          "server stops serving and exits 1), hang (the batch never ends, as on a hung GPU; "
          "--engine_watchdog_s then stops the server), hang_in_warmup (the same, from the "
          "warm-up on: the warm-up's batches hold word ids 0 up to the model's positions), "
          "hang_in_load (the engine's creation never returns, whatever the id, as a GPU context "
          "that never comes up) or fallback (each batch holding the id is served, and counted as "
          "a fallback on the path \"debug_fault\", as the CUDA engine counts a graph or tuning "
          "it could not use)");
ABSL_FLAG(int, engine_watchdog_s, -1,
          "Exit with status 1 (after turning health NOT_SERVING) when one served engine batch "
          "runs longer than this many seconds, e.g. on a hung GPU, so that a supervisor restarts "
          "the server; -1: 60 with the CUDA backend, off with the CPU backend; 0: off");
ABSL_FLAG(int, engine_startup_watchdog_s, -1,
          "The same before serving: exit with status 1 when loading the model and engine, or one "
          "warm-up batch (which also loads kernels and tunes GEMMs), takes longer than this many "
          "seconds; -1: 600 where a GPU may be in use (the load unless --backend=cpu, the "
          "warm-up with the CUDA engine), else off; 0: off");
ABSL_FLAG(bool, mutex_deadlock_detection, false,
          "Debugging: leave abseil's lock-order checker on (in abseil builds without NDEBUG, "
          "such as Debian's, it checks every mutex acquisition for cycles and aborts on one; "
          "costs CPU on every lock; the tests' servers run with it)");

namespace bert {
namespace {

static_assert(Batcher::kFruitlessWaits == 3 && Batcher::kProbeEvery == 32,
              "--adaptive_batch_delay's help and server/README.md state these values");

std::string BaseName(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeCredentials() {
  const std::string cert = absl::GetFlag(FLAGS_tls_cert);
  const std::string key = absl::GetFlag(FLAGS_tls_key);
  const std::string client_ca = absl::GetFlag(FLAGS_tls_client_ca);
  if (cert.empty() && key.empty()) {
    if (!client_ca.empty()) {
      return absl::InvalidArgumentError(
          "--tls_client_ca (clients' certificates) needs --tls_cert and --tls_key (TLS)");
    }
    return grpc::InsecureServerCredentials();
  }
  if (cert.empty() || key.empty()) {
    return absl::InvalidArgumentError("--tls_cert and --tls_key go together");
  }
  auto cert_pem = ReadFile(cert);
  if (!cert_pem.ok()) return cert_pem.status();
  auto key_pem = ReadFile(key);
  if (!key_pem.ok()) return key_pem.status();
  grpc::SslServerCredentialsOptions options(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  options.pem_key_cert_pairs.push_back({*key_pem, *cert_pem});
  if (!client_ca.empty()) {
    auto ca_pem = ReadFile(client_ca);
    if (!ca_pem.ok()) return ca_pem.status();
    if (ca_pem->find("-----BEGIN CERTIFICATE-----") == std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("--tls_client_ca: ", client_ca, " holds no PEM certificate"));
    }
    // A client without a certificate these CAs signed fails the handshake: no call of its
    // reaches the service, health included.
    options.pem_root_certs = *ca_pem;
    options.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(options);
}

absl::StatusOr<std::string> AuthToken() {
  std::string token = absl::GetFlag(FLAGS_auth_token);
  const std::string file = absl::GetFlag(FLAGS_auth_token_file);
  if (!file.empty()) {
    auto content = ReadFile(file);
    if (!content.ok()) return content.status();
    token = std::string(absl::StripAsciiWhitespace(*content));
    if (token.empty()) return absl::InvalidArgumentError(absl::StrCat(file, " is empty"));
  }
  return token;
}

struct Loaded {
  Loaded() = default;
  Loaded(Loaded&&) = default;
  Loaded& operator=(Loaded&&) = default;
  ~Loaded() { watchdog.reset(); }  // it may be reading the pipeline

  std::unique_ptr<EngineWatchdog> watchdog;
  std::unique_ptr<Pipeline> pipeline;
  SentenceEmbedding sentence_embedding;  // the model's, for GetModelInfo
};

// --vocab, or <model_dir>/vocab.txt.
std::string VocabPath() {
  const std::string vocab = absl::GetFlag(FLAGS_vocab);
  return vocab.empty() ? absl::GetFlag(FLAGS_model_dir) + "/vocab.txt" : vocab;
}

// --tokenization_workers, with 0 resolved to the CPUs this process may use.
int TokenizationWorkers() {
  const int flag = absl::GetFlag(FLAGS_tokenization_workers);
  return flag > 0 ? flag : AvailableCores();
}

// What the CUDA engine's warm-up (which runs every GEMM bucket and one graph capture and
// replay) set up. Its fallbacks are logged by EngineLog.
void LogCudaWarmup(const Engine& engine) {
  const auto* cuda = dynamic_cast<const CudaEngineTiming*>(&engine);
  if (cuda == nullptr) return;
  const CudaGraphStats graphs = cuda->graph_stats();
  const cuda::GemmStats gemm = cuda->gemm_stats();
  BERT_LOG(kInfo) << "cuda engine after warm-up" << LogKv("graphs_captured", graphs.captures)
                  << LogKv("graph_failures", graphs.capture_failures)
                  << LogKv("tuned_buckets", gemm.tuned_buckets)
                  << LogKv("tuning_fallbacks", gemm.tuning_fallbacks)
                  << LogKv("abandoned_buckets", gemm.abandoned_buckets);
}

// Warnings about the engine while it serves (besides the metrics): a failed batch (at most
// one line a second; each line counts the failures since the previous one), and each fallback the
// engine takes, in the warm-up or later, naming the flag that avoids its path. Thread-safe.
class EngineLog final : public PipelineObserver {
 public:
  void OnBatch(const BatchStats& stats) override {
    if (stats.status.ok()) return;
    absl::MutexLock lock(&mu_);
    ++failed_batches_;
    const auto now = std::chrono::steady_clock::now();
    if (logged_a_failure_ && now - last_failure_line_ < std::chrono::seconds(1)) return;
    BERT_LOG(kWarning) << "engine batch failed" << LogKv("error", stats.status.ToString())
                       << LogKv("sequences", stats.num_sequences) << LogKv("rows", stats.rows)
                       << LogKv("failed_since_last_line", failed_batches_);
    logged_a_failure_ = true;
    last_failure_line_ = now;
    failed_batches_ = 0;
  }

  void OnEngineFallbacks(const std::vector<EngineFallback>& totals) override {
    absl::MutexLock lock(&mu_);
    for (const EngineFallback& fallback : totals) {
      int64_t& logged = logged_fallbacks_[fallback.path];
      if (fallback.count <= logged) continue;
      const int64_t added = fallback.count - logged;
      logged = fallback.count;
      if (!LogEnabled(LogLevel::kWarning)) continue;
      LogLine line(LogLevel::kWarning);
      line << "engine fell back from a default path (same results, slower)"
           << LogKv("path", fallback.path) << LogKv("new", added) << LogKv("total", fallback.count);
      if (!fallback.detail.empty()) line << LogKv("last", fallback.detail);
      line << LogKv("avoid", fallback.avoid);
    }
  }

 private:
  absl::Mutex mu_;
  bool logged_a_failure_ ABSL_GUARDED_BY(mu_) = false;
  std::chrono::steady_clock::time_point last_failure_line_ ABSL_GUARDED_BY(mu_);
  int64_t failed_batches_ ABSL_GUARDED_BY(mu_) = 0;                       // since the last line
  std::map<std::string, int64_t> logged_fallbacks_ ABSL_GUARDED_BY(mu_);  // by path
};

// The CUDA tuning flags, read through the engine's table of them, and range-checked with any
// backend: a value out of range is a mistake in the command line, which should wait neither
// for a GPU nor for the model's load to show.
absl::StatusOr<CudaEngineOptions> CudaTuningFromFlags() {
  CudaEngineOptions cuda;
  for (const CudaTuningSwitch& s : CudaTuningSwitches()) {
    const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(s.flag);
    if (flag == nullptr) return absl::InternalError(absl::StrCat("no flag --", s.flag));
    RETURN_IF_ERROR(SetCudaTuning(s.flag, flag->CurrentValue(), &cuda));
  }
  RETURN_IF_ERROR(ValidateCudaEngineOptions(cuda));
  return cuda;
}

// A watchdog limit in seconds: the flag's when set (>= 0), else `gpu_default` where a GPU may
// be in use, else 0 (off).
int WatchdogLimitS(int flag, bool gpu, int gpu_default) {
  return flag >= 0 ? flag : gpu ? gpu_default : 0;
}

// The engine's backend, dtype and CPU options as the flags give them (the rest, which needs the
// model or the CUDA flags, is set where the engine is made).
absl::StatusOr<EngineOptions> EngineOptionsFromFlags() {
  EngineOptions options;
  options.backend = absl::GetFlag(FLAGS_backend);
  options.cpu_threads = absl::GetFlag(FLAGS_cpu_threads);
  options.cpu_gemm = absl::GetFlag(FLAGS_cpu_gemm);
  const std::string dtype = absl::GetFlag(FLAGS_dtype);
  options.auto_dtype = dtype == "auto";  // float16 on the CUDA backend; the CPU's by its GEMM
  if (!options.auto_dtype) {
    ASSIGN_OR_RETURN(options.dtype, ParseDType(dtype));
  }
  return options;
}

// `on_engine_failure`: see PipelineOptions::on_engine_failure. `on_stuck`: the engine
// watchdog's (--engine_startup_watchdog_s, --engine_watchdog_s), which watches from here on.
absl::StatusOr<Loaded> LoadAndWarmUp(PipelineObserver* observer,
                                     std::function<void(const absl::Status&)> on_engine_failure,
                                     std::function<void(const EngineWatchdog::Stuck&)> on_stuck) {
  ASSIGN_OR_RETURN(const CudaEngineOptions cuda_tuning, CudaTuningFromFlags());
  // Checked whatever the backend, as the CUDA flags are: a mistake in the command line should
  // not wait for a machine without a GPU to show. With --backend=cpu the dtype is known too.
  RETURN_IF_ERROR(ParseCpuGemm(absl::GetFlag(FLAGS_cpu_gemm)).status());
  ASSIGN_OR_RETURN(EngineOptions engine_options, EngineOptionsFromFlags());
  if (engine_options.backend == "cpu") {
    ASSIGN_OR_RETURN(const std::string gemm, CpuGemmFor(engine_options));
    RETURN_IF_ERROR(ParseCpuGemm(gemm).status());
  }
  // The startup limit: for the load unless --backend=cpu (the engine is not known yet), for
  // the warm-up with the CUDA engine.
  const int startup_flag = absl::GetFlag(FLAGS_engine_startup_watchdog_s);
  const int load_s = WatchdogLimitS(startup_flag, absl::GetFlag(FLAGS_backend) != "cpu", 600);
  Loaded loaded;
  loaded.watchdog = std::make_unique<EngineWatchdog>(absl::Seconds(load_s), std::move(on_stuck));
  const std::string model_dir = absl::GetFlag(FLAGS_model_dir);
  struct stat st;
  if (const bool exists = stat(model_dir.c_str(), &st) == 0; !exists || !S_ISDIR(st.st_mode)) {
    char cwd[4096];
    return absl::NotFoundError(absl::StrCat(
        "the model directory ", model_dir, exists ? " is not a directory" : " does not exist",
        model_dir.empty() || model_dir[0] == '/'
            ? ""
            : absl::StrCat(" (relative to ", getcwd(cwd, sizeof(cwd)) ? cwd : "?", ")"),
        ": a model directory holds config.json, model.safetensors and vocab.txt (unless "
        "--vocab names one); tools/fetch_default_model.sh fetches the default model into "
        "models/all-MiniLM-L6-v2"));
  }
  const std::string vocab = VocabPath();
  auto lowercase = ResolveLowercase(absl::GetFlag(FLAGS_lowercase), model_dir, vocab);
  if (!lowercase.ok()) return lowercase.status();
  BertTokenizer::Options tokenizer_options;
  tokenizer_options.lowercase = *lowercase;
  auto tokenizer = BertTokenizer::Load(vocab, tokenizer_options);
  if (!tokenizer.ok()) return tokenizer.status();
  BERT_LOG(kInfo) << "vocabulary loaded" << LogKv("path", vocab)
                  << LogKv("size", (*tokenizer)->vocab_size())
                  << LogKv("lowercase", *lowercase ? "true" : "false");

  const absl::Time load_start = absl::Now();
  auto model = LoadModel(model_dir);
  if (!model.ok()) return model.status();
  // Not const: the Linear weights are freed below where the engine keeps its own copies.
  auto shared_model = std::make_shared<Model>(*std::move(model));
  if ((*tokenizer)->vocab_size() != shared_model->config.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat(vocab, " has ", (*tokenizer)->vocab_size(),
                                                   " tokens but the model's vocab_size is ",
                                                   shared_model->config.vocab_size));
  }
  const int max_positions = shared_model->config.max_position_embeddings;
  int max_batch_tokens = absl::GetFlag(FLAGS_max_batch_tokens);
  if (max_batch_tokens < max_positions) {
    BERT_LOG(kWarning) << "raising --max_batch_tokens to fit one longest sequence"
                       << LogKv("from", max_batch_tokens) << LogKv("to", max_positions);
    max_batch_tokens = max_positions;
  }

  if (absl::GetFlag(FLAGS_cpu_few_rows_max) != -1) {
    BERT_LOG(kWarning) << "--cpu_few_rows_max is deprecated and has no effect (see --cpu_gemm)";
  }
  engine_options.max_batch_tokens = max_batch_tokens;
  engine_options.cuda = cuda_tuning;
  auto engine = CreateEngine(shared_model, engine_options);
  if (!engine.ok()) return engine.status();
  FaultInjectingEngine* fault_injection = nullptr;  // armed after the warm-up
  if (const int word_id = absl::GetFlag(FLAGS_debug_engine_fault_word_id); word_id >= 0) {
    const std::string fault = absl::GetFlag(FLAGS_debug_engine_fault);
    if (fault == "hang_in_load") {
      BERT_LOG(kWarning) << "testing: the engine's creation never returns";
      for (;;) absl::SleepFor(absl::Hours(1));
    }
    const std::map<std::string, FaultInjectingEngine::Fault> faults = {
        {"break", FaultInjectingEngine::Fault::kBreak},
        {"hang", FaultInjectingEngine::Fault::kHang},
        {"hang_in_warmup", FaultInjectingEngine::Fault::kHang},
        {"fallback", FaultInjectingEngine::Fault::kFallback}};
    const auto found = faults.find(fault);
    if (found == faults.end()) {
      return absl::InvalidArgumentError(
          "--debug_engine_fault must be break, hang, hang_in_warmup, hang_in_load or fallback");
    }
    const bool in_warmup = fault == "hang_in_warmup";
    BERT_LOG(kWarning) << "testing: a batch holding this word id meets a fault"
                       << LogKv("word_id", word_id) << LogKv("fault", fault)
                       << LogKv("from", in_warmup ? "the warm-up" : "after the warm-up");
    auto wrapped =
        std::make_unique<FaultInjectingEngine>(*std::move(engine), word_id, found->second);
    if (in_warmup) {
      wrapped->Arm();
    } else {
      fault_injection = wrapped.get();
    }
    *engine = std::move(wrapped);
  }
  // An engine that runs its own copies of the Linear weights (the CPU engine's packed ones)
  // leaves the model's to be freed: nothing else reads them, and no other engine is built
  // from this model.
  if (!(*engine)->ReadsLinearWeights()) {
    const size_t bytes = ReleaseLinearWeights(shared_model.get());
    BERT_LOG(kInfo) << "freed the model's Linear weights (the engine runs its packed copies)"
                    << LogKv("mb", bytes >> 20);
  }
  const EngineInfo info = (*engine)->info();
  BERT_LOG(kInfo) << "model loaded" << LogKv("model", shared_model->name)
                  << LogKv("layers", shared_model->config.num_layers)
                  << LogKv("hidden", shared_model->config.hidden_size)
                  << LogKv("backend", info.backend) << LogKv("device", info.device)
                  << LogKv("dtype", DTypeName(info.dtype))
                  << LogKv("ms", absl::ToInt64Milliseconds(absl::Now() - load_start));
  loaded.sentence_embedding = shared_model->sentence_embedding;
  const SentenceEmbedding& embedding = loaded.sentence_embedding;
  BERT_LOG(kInfo) << "sentence embedding"
                  << LogKv("head",
                           embedding.pooling == SentenceEmbedding::Pooling::kMean  ? "mean_pooled"
                           : embedding.pooling == SentenceEmbedding::Pooling::kCls ? "cls"
                                                                                   : "unknown")
                  << LogKv("normalize", embedding.normalize ? "true" : "false")
                  << LogKv("max_seq_length", embedding.max_seq_length)
                  << LogKv("from", embedding.note);
  if (embedding.defective) {
    BERT_LOG(kWarning) << "the model's sentence-transformers files are defective; serving "
                          "without a sentence embedding"
                       << LogKv("error", embedding.note);
  }
  const Classifier& classifier = shared_model->classifier;
  if (!classifier.note.empty()) {
    BERT_LOG(kInfo) << classifier.note;
  }
  if (classifier.present()) {
    // The first labels only: a model may have thousands.
    const size_t shown = std::min<size_t>(classifier.labels.size(), 8);
    const std::vector<std::string> first(classifier.labels.begin(),
                                         classifier.labels.begin() + shown);
    BERT_LOG(kInfo) << "classifier" << LogKv("kind", classifier.per_token ? "token" : "sequence")
                    << LogKv("num_labels", classifier.num_labels())
                    << LogKv("labels", absl::StrCat(absl::StrJoin(first, ","),
                                                    shown < classifier.labels.size() ? ",..." : ""))
                    << LogKv("problem_type",
                             classifier.problem_type.empty() ? "unset" : classifier.problem_type)
                    << LogKv("activation_function", classifier.activation_function.empty()
                                                        ? "unset"
                                                        : classifier.activation_function)
                    << LogKv("max_seq_length", classifier.max_seq_length);
  }
  if (info.backend == "cpu" && cpu::BlasCoreReplacementFailed()) {
    BERT_LOG(kWarning) << "OpenBLAS ignored the OPENBLAS_CORETYPE set at startup"
                       << LogKv("core", cpu::BlasCoreName());
  } else if (info.backend == "cpu" && !cpu::BlasCoreReplaced().empty()) {
    BERT_LOG(kInfo) << "OpenBLAS core chosen at startup (OPENBLAS_CORETYPE)"
                    << LogKv("core", cpu::BlasCoreName())
                    << LogKv("library_choice", cpu::BlasCoreReplaced());
  }
  if (info.backend == "cpu" && info.dtype == DType::kFloat32 && cpu::HasAmxBf16()) {
    // The faster engine this CPU could run, at bfloat16's precision instead of float32's.
    BERT_LOG(kInfo) << "this CPU has Intel AMX: --dtype=bfloat16 runs the Linear layers in "
                       "bfloat16 on it, about twice the float32 throughput at bfloat16's "
                       "precision (README, Performance)";
  }
  if (info.backend == "cuda" && LogEnabled(LogLevel::kInfo)) {
    LogLine line(LogLevel::kInfo);
    line << "cuda engine options";
    for (const auto& [flag, value] : CudaTuningValues(engine_options.cuda)) {
      line << LogKv(flag, value);
    }
  }

  PipelineOptions options;
  options.max_concurrent_requests = absl::GetFlag(FLAGS_max_concurrent_requests);
  options.max_inputs_per_request = absl::GetFlag(FLAGS_max_inputs_per_request);
  options.max_batch_tokens = max_batch_tokens;
  options.max_batch_delay = absl::Microseconds(absl::GetFlag(FLAGS_max_batch_delay_us));
  options.adaptive_batch_delay = absl::GetFlag(FLAGS_adaptive_batch_delay);
  options.tokenization_workers = TokenizationWorkers();
  options.default_seq_length = absl::GetFlag(FLAGS_default_seq_length);
  options.max_response_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  options.max_answer_memory_bytes = absl::GetFlag(FLAGS_max_answer_memory_mb) << 20;
  options.prompts = shared_model->sentence_embedding.prompts;
  options.classifier = std::move(shared_model->classifier);  // the pipeline's from now on
  // The CUDA engine tunes and loads per shape: do it before SERVING.
  options.warmup_row_buckets = info.backend == "cuda";
  options.on_engine_failure = std::move(on_engine_failure);
  loaded.pipeline =
      std::make_unique<Pipeline>(options, *std::move(engine), *std::move(tokenizer), observer);
  const bool cuda = info.backend == "cuda";
  const int warmup_s = WatchdogLimitS(startup_flag, cuda, 600);
  const int serving_s = WatchdogLimitS(absl::GetFlag(FLAGS_engine_watchdog_s), cuda, 60);
  const auto limit = [](int s) { return s > 0 ? std::to_string(s) : std::string("off"); };
  BERT_LOG(kInfo) << "engine watchdog" << LogKv("load_limit_s", limit(load_s))
                  << LogKv("warmup_limit_s", limit(warmup_s)) << LogKv("limit_s", limit(serving_s));
  loaded.watchdog->WatchPipeline(loaded.pipeline.get(), absl::Seconds(warmup_s),
                                 absl::Seconds(serving_s));
  const absl::Time warm_start = absl::Now();
  absl::Status warm = loaded.pipeline->Warmup();
  if (!warm.ok()) return warm;
  BERT_LOG(kInfo) << "warm-up done" << LogKv("max_batch_tokens", max_batch_tokens)
                  << LogKv("ms", absl::ToInt64Milliseconds(absl::Now() - warm_start))
                  << LogKv("longest_batch_ms",
                           absl::ToInt64Milliseconds(loaded.pipeline->longest_warmup_batch()));
  LogCudaWarmup(loaded.pipeline->engine());
  if (fault_injection != nullptr) fault_injection->Arm();  // before the engine thread starts
  loaded.pipeline->Start();
  return loaded;
}

// --max_request_bytes, or --max_message_bytes where it is 0 or larger.
int64_t MaxRequestBytes() {
  const int64_t request = absl::GetFlag(FLAGS_max_request_bytes);
  const int64_t message = absl::GetFlag(FLAGS_max_message_bytes);
  return request == 0 ? message : std::min(request, message);
}

// --cpu_threads and --tokenization_workers: more threads than any machine has cores only cost
// memory, and past the process's thread limit they cannot be started.
constexpr int kMaxThreadsFlag = 1024;

// The connection flags are seconds that gRPC takes as int milliseconds.
constexpr int kMaxConnectionFlagSeconds = std::numeric_limits<int>::max() / 1000;

bool ConnectionFlagsInRange() {
  const auto in_range = [](int seconds, int least) {
    return seconds >= least && seconds <= kMaxConnectionFlagSeconds;
  };
  return in_range(absl::GetFlag(FLAGS_drain_delay_s), 0) &&
         in_range(absl::GetFlag(FLAGS_max_connection_age_s), 0) &&
         in_range(absl::GetFlag(FLAGS_max_connection_age_grace_s), 0) &&
         in_range(absl::GetFlag(FLAGS_max_connection_idle_s), 0) &&
         in_range(absl::GetFlag(FLAGS_keepalive_time_s), 1) &&
         in_range(absl::GetFlag(FLAGS_keepalive_timeout_s), 1) &&
         in_range(absl::GetFlag(FLAGS_keepalive_min_client_ping_interval_s), 0);
}

// How long connections live and how the server finds the dead ones (the connection flags).
void AddConnectionArguments(grpc::ServerBuilder* builder) {
  const auto milliseconds = [](int seconds) { return seconds * 1000; };
  if (const int age = absl::GetFlag(FLAGS_max_connection_age_s); age > 0) {
    builder->AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS, milliseconds(age));
  }
  if (const int grace = absl::GetFlag(FLAGS_max_connection_age_grace_s); grace > 0) {
    builder->AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS, milliseconds(grace));
  }
  if (const int idle = absl::GetFlag(FLAGS_max_connection_idle_s); idle > 0) {
    builder->AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS, milliseconds(idle));
  }
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS,
                              milliseconds(absl::GetFlag(FLAGS_keepalive_time_s)));
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
                              milliseconds(absl::GetFlag(FLAGS_keepalive_timeout_s)));
  builder->AddChannelArgument(
      GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
      milliseconds(absl::GetFlag(FLAGS_keepalive_min_client_ping_interval_s)));
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS,
                              absl::GetFlag(FLAGS_keepalive_permit_without_calls) ? 1 : 0);
}

int Validate() {
  if (absl::GetFlag(FLAGS_model_dir).empty()) {
    BERT_LOG(kError) << "--model_dir is required: a directory with config.json, "
                        "model.safetensors and vocab.txt, e.g. --model_dir=models/all-MiniLM-L6-v2 "
                        "(tools/fetch_default_model.sh fetches that one)";
    return 2;
  }
  const std::string backend = absl::GetFlag(FLAGS_backend);
  if (backend != "auto" && backend != "cpu" && backend != "cuda") {
    BERT_LOG(kError) << "--backend must be auto, cpu or cuda" << LogKv("value", backend);
    return 2;
  }
  if (absl::GetFlag(FLAGS_max_concurrent_requests) < 1 ||
      absl::GetFlag(FLAGS_max_inputs_per_request) < 1 ||
      absl::GetFlag(FLAGS_max_batch_tokens) < 1 || absl::GetFlag(FLAGS_max_batch_delay_us) < 0 ||
      absl::GetFlag(FLAGS_max_batch_delay_us) > 1000000 ||
      absl::GetFlag(FLAGS_tokenization_workers) < 0 ||
      absl::GetFlag(FLAGS_tokenization_workers) > kMaxThreadsFlag ||
      absl::GetFlag(FLAGS_cpu_threads) < 0 || absl::GetFlag(FLAGS_cpu_threads) > kMaxThreadsFlag ||
      absl::GetFlag(FLAGS_default_seq_length) < 2 ||
      absl::GetFlag(FLAGS_max_message_bytes) < 1024 ||
      absl::GetFlag(FLAGS_max_message_bytes) > (int64_t{1} << 31) - 1 ||
      (absl::GetFlag(FLAGS_max_request_bytes) != 0 &&
       absl::GetFlag(FLAGS_max_request_bytes) < 1024) ||
      absl::GetFlag(FLAGS_max_request_bytes) > (int64_t{1} << 31) - 1 ||
      absl::GetFlag(FLAGS_max_streams_per_connection) < 1 ||
      absl::GetFlag(FLAGS_send_timeout_s) < 0 || absl::GetFlag(FLAGS_grpc_memory_limit_mb) < 0 ||
      absl::GetFlag(FLAGS_grpc_memory_limit_mb) > (int64_t{1} << 30) ||
      absl::GetFlag(FLAGS_engine_watchdog_s) < -1 ||
      absl::GetFlag(FLAGS_engine_startup_watchdog_s) < -1 ||
      absl::GetFlag(FLAGS_drain_timeout_s) < 0 || !ConnectionFlagsInRange()) {
    BERT_LOG(kError) << "a numeric limit flag is out of range (see --help)";
    return 2;
  }
  const int64_t answer_memory_mb = absl::GetFlag(FLAGS_max_answer_memory_mb);
  if (answer_memory_mb < 0 || answer_memory_mb > (int64_t{1} << 30)) {
    BERT_LOG(kError) << "--max_answer_memory_mb must be 0 (unlimited) to 2^30"
                     << LogKv("max_answer_memory_mb", answer_memory_mb);
    return 2;
  }
  if (answer_memory_mb > 0 && (answer_memory_mb << 20) < absl::GetFlag(FLAGS_max_message_bytes)) {
    BERT_LOG(kError) << "--max_answer_memory_mb must be 0 (unlimited) or hold the largest answer, "
                        "--max_message_bytes"
                     << LogKv("max_answer_memory_mb", answer_memory_mb)
                     << LogKv("max_message_bytes", absl::GetFlag(FLAGS_max_message_bytes));
    return 2;
  }
  return 0;
}

void LogConfig() {
  BERT_LOG(kInfo)
      << "effective config" << LogKv("model_dir", absl::GetFlag(FLAGS_model_dir))
      << LogKv("vocab", VocabPath()) << LogKv("address", absl::GetFlag(FLAGS_address))
      << LogKv("metrics_address", absl::GetFlag(FLAGS_metrics_address))
      << LogKv("backend", absl::GetFlag(FLAGS_backend))
      << LogKv("dtype", absl::GetFlag(FLAGS_dtype))
      << LogKv("max_concurrent_requests", absl::GetFlag(FLAGS_max_concurrent_requests))
      << LogKv("max_inputs_per_request", absl::GetFlag(FLAGS_max_inputs_per_request))
      << LogKv("max_batch_tokens", absl::GetFlag(FLAGS_max_batch_tokens))
      << LogKv("max_batch_delay_us", absl::GetFlag(FLAGS_max_batch_delay_us))
      << LogKv("adaptive_batch_delay", absl::GetFlag(FLAGS_adaptive_batch_delay))
      << LogKv("tokenization_workers", TokenizationWorkers())
      << LogKv("cpu_threads", absl::GetFlag(FLAGS_cpu_threads))
      << LogKv("cpu_gemm", absl::GetFlag(FLAGS_cpu_gemm))
      << LogKv("default_seq_length", absl::GetFlag(FLAGS_default_seq_length))
      << LogKv("max_message_bytes", absl::GetFlag(FLAGS_max_message_bytes))
      << LogKv("max_request_bytes", MaxRequestBytes())
      << LogKv("max_streams_per_connection", absl::GetFlag(FLAGS_max_streams_per_connection))
      << LogKv("max_answer_memory_mb", absl::GetFlag(FLAGS_max_answer_memory_mb))
      << LogKv("grpc_memory_limit_mb", absl::GetFlag(FLAGS_grpc_memory_limit_mb))
      << LogKv("send_timeout_s", absl::GetFlag(FLAGS_send_timeout_s))
      << LogKv("lowercase", absl::GetFlag(FLAGS_lowercase))
      << LogKv("tls", absl::GetFlag(FLAGS_tls_cert).empty()        ? "off"
                      : absl::GetFlag(FLAGS_tls_client_ca).empty() ? "on"
                                                                   : "mutual")
      << LogKv("auth", absl::GetFlag(FLAGS_auth_token).empty() &&
                               absl::GetFlag(FLAGS_auth_token_file).empty()
                           ? "off"
                           : "bearer")
      << LogKv("drain_timeout_s", absl::GetFlag(FLAGS_drain_timeout_s))
      << LogKv("drain_delay_s", absl::GetFlag(FLAGS_drain_delay_s))
      << LogKv("max_connection_age_s", absl::GetFlag(FLAGS_max_connection_age_s))
      << LogKv("max_connection_age_grace_s", absl::GetFlag(FLAGS_max_connection_age_grace_s))
      << LogKv("max_connection_idle_s", absl::GetFlag(FLAGS_max_connection_idle_s))
      << LogKv("keepalive_time_s", absl::GetFlag(FLAGS_keepalive_time_s))
      << LogKv("keepalive_timeout_s", absl::GetFlag(FLAGS_keepalive_timeout_s))
      << LogKv("keepalive_min_client_ping_interval_s",
               absl::GetFlag(FLAGS_keepalive_min_client_ping_interval_s))
      << LogKv("keepalive_permit_without_calls",
               absl::GetFlag(FLAGS_keepalive_permit_without_calls))
      << LogKv("engine_watchdog_s", absl::GetFlag(FLAGS_engine_watchdog_s))
      << LogKv("engine_startup_watchdog_s", absl::GetFlag(FLAGS_engine_startup_watchdog_s))
      << LogKv("log_level", absl::GetFlag(FLAGS_log_level));
}

// SIGTERM and SIGINT. They are caught by a handler rather than blocked and taken with
// sigwait: threads that libraries start before main (OpenBLAS's) do not block them, so a
// blocked signal could land on such a thread instead and take its default action, killing
// the process, or, as PID 1 in a container, be discarded (the kernel drops signals that PID 1
// has no handler for). The handler only posts a semaphore; a watcher thread does the rest.
const char* SignalName(int signal_number) {
  return signal_number == SIGTERM ? "SIGTERM" : "SIGINT";
}

class StopSignals {
 public:
  // Installs the handlers and starts the watcher. A signal before MarkServing ends the
  // process at once with status 0 (nothing has been accepted yet); after it, Wait returns,
  // and a second one ends WaitForAnother.
  static StopSignals& Install() {
    if (instance_ == nullptr) new StopSignals;  // sets instance_; lives until exit
    return *instance_;
  }

  void MarkServing() {
    absl::MutexLock lock(&mu_);
    serving_ = true;
  }

  // Blocks until SIGTERM or SIGINT arrives (after MarkServing), or EngineFailed is called;
  // returns the signal (0 for an engine failure).
  int Wait() {
    stop_.WaitForNotification();
    return engine_failed_ ? 0 : last_signal_;
  }

  // After Wait: blocks for `delay` or until another signal arrives, or EngineFailed is called.
  void WaitForAnother(absl::Duration delay) { again_.WaitForNotificationWithTimeout(delay); }

  // The engine is unusable for good: stop as on a signal. Any thread.
  void EngineFailed() {
    engine_failed_ = true;
    sem_post(&posted_);
  }
  bool engine_failed() const { return engine_failed_; }

 private:
  StopSignals() {
    sem_init(&posted_, 0, 0);
    instance_ = this;  // before the handlers can run
    struct sigaction action = {};
    action.sa_handler = &StopSignals::OnSignal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &action, nullptr);
    sigaction(SIGINT, &action, nullptr);
    std::thread([this] { Watch(); }).detach();
  }

  static void OnSignal(int signal_number) {  // async-signal-safe: an atomic store, sem_post
    last_signal_ = signal_number;
    sem_post(&instance_->posted_);
  }

  void Watch() {
    WaitPosted();
    {
      absl::MutexLock lock(&mu_);
      if (!serving_) {
        BERT_LOG(kInfo) << "stopping during startup"
                        << LogKv("signal", engine_failed_ ? "none (engine failure)"
                                                          : SignalName(last_signal_));
        std::fflush(stderr);
        std::_Exit(engine_failed_ ? 1 : 0);  // still loading or warming up on another thread
      }
    }
    stop_.Notify();
    WaitPosted();
    again_.Notify();
  }

  void WaitPosted() {
    while (sem_wait(&posted_) != 0) {  // EINTR
    }
  }

  static StopSignals* instance_;
  static volatile sig_atomic_t last_signal_;
  sem_t posted_;
  absl::Mutex mu_;
  bool serving_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<bool> engine_failed_{false};
  absl::Notification stop_;
  absl::Notification again_;
};

StopSignals* StopSignals::instance_ = nullptr;
volatile sig_atomic_t StopSignals::last_signal_ = 0;

// grpc::Server::Shutdown on a thread of its own, so that the drain can start with it: it sends
// GOAWAY on every connection and closes the listeners at once, so clients send their next calls
// elsewhere (or to a new connection), then waits for the calls in progress, cancelling what is
// left at `deadline`. Calls that never end by themselves (a health Watch, an idle EmbedStream)
// would hold it until then: CancelRemainingCalls ends them sooner.
//
// gRPC C++ has no grace period in its shutdown: a call whose client sent it before the GOAWAY
// arrived, but which reaches the server after Shutdown began, is never handed to the service
// and ends CANCELLED (about one round trip's worth of calls per connection). --drain_delay_s
// with clients or load balancers that follow health avoids it; --max_connection_age_s's
// GOAWAY, which keeps serving, has no such window.
class BackgroundShutdown {
 public:
  BackgroundShutdown(grpc::Server* server, absl::Time deadline) : server_(server) {
    std::thread([server, deadline, done = done_] {
      server->Shutdown(absl::ToChronoTime(deadline));
      done->Notify();
    }).detach();
  }

  // True once Shutdown has returned (every call done), waiting up to `timeout` for it.
  bool WaitDone(absl::Duration timeout) { return done_->WaitForNotificationWithTimeout(timeout); }

  // Cancels every call still open, again every 100 ms (a first cancel that came before the
  // thread began the shutdown would reach only the calls then open), until Shutdown returns
  // or `timeout` passes. False if it has not returned (the process must not wait on).
  bool CancelRemainingCalls(absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    do {
      grpc_server_cancel_all_calls(server_->c_server());
      if (WaitDone(std::min(absl::Milliseconds(100), deadline - absl::Now()))) return true;
    } while (absl::Now() < deadline);
    return false;
  }

 private:
  grpc::Server* const server_;
  const std::shared_ptr<absl::Notification> done_ = std::make_shared<absl::Notification>();
};

int Run() {
  StopSignals& stop_signals = StopSignals::Install();

  LogLevel level;
  if (!ParseLogLevel(absl::GetFlag(FLAGS_log_level), &level)) {
    BERT_LOG(kError) << "--log_level must be debug, info, warning or error";
    return 2;
  }
  SetLogLevel(level);
  if (int rc = Validate(); rc != 0) return rc;
  LogConfig();

  auto token = AuthToken();
  if (!token.ok()) {
    BERT_LOG(kError) << "auth token" << LogKv("error", token.status().message());
    return 2;
  }
  auto credentials = MakeCredentials();
  if (!credentials.ok()) {
    BERT_LOG(kError) << "TLS" << LogKv("error", credentials.status().message());
    return 2;
  }

  ServerMetrics metrics;
  const std::string metrics_address = absl::GetFlag(FLAGS_metrics_address);
  if (!metrics_address.empty()) {
    auto port = metrics.Serve(metrics_address);
    if (!port.ok()) {
      BERT_LOG(kError) << "metrics" << LogKv("error", port.status().message());
      return 1;
    }
    const std::string host = metrics_address.substr(0, metrics_address.rfind(':'));
    BERT_LOG(kInfo) << "metrics listening" << LogKv("address", absl::StrCat(host, ":", *port));
  }

  ServiceConfig service_config;
  service_config.model_name = BaseName(absl::GetFlag(FLAGS_model_dir));
  service_config.auth_token = *token;
  service_config.max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  service_config.max_request_bytes = MaxRequestBytes();
  service_config.send_timeout = absl::Seconds(absl::GetFlag(FLAGS_send_timeout_s));
  BertServiceImpl service(service_config, &metrics);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  const std::string address = absl::GetFlag(FLAGS_address);
  if (absl::Status added = AddExclusiveListeningPort(address, *credentials, &builder, &port);
      !added.ok()) {
    BERT_LOG(kError) << "cannot listen" << LogKv("address", address)
                     << LogKv("error", added.message());
    return 1;
  }
  // What one client can make gRPC hold before any handler runs: incoming messages are
  // buffered until complete (a peer may send part of one and stop), up to the request limit
  // per stream, on up to max_streams_per_connection streams per connection; the memory quota
  // bounds all connections together.
  builder.SetMaxReceiveMessageSize(static_cast<int>(MaxRequestBytes()));
  builder.SetMaxSendMessageSize(static_cast<int>(absl::GetFlag(FLAGS_max_message_bytes)));
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS,
                             absl::GetFlag(FLAGS_max_streams_per_connection));
  AddConnectionArguments(&builder);
  grpc::ResourceQuota quota("bert_server");
  if (const int64_t limit_mb = absl::GetFlag(FLAGS_grpc_memory_limit_mb); limit_mb > 0) {
    quota.Resize(static_cast<size_t>(limit_mb) << 20);
    builder.SetResourceQuota(quota);
  }
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    const std::string reason = ListenFailureReason(address);
    BERT_LOG(kError) << "cannot listen" << LogKv("address", address)
                     << LogKv("error", reason.empty() ? "see gRPC's message above" : reason);
    return 1;
  }
  // Health of the server ("") and of its service, always set together. Thread-safe.
  const auto set_serving = [health = server->GetHealthCheckService(), &metrics](bool serving) {
    health->SetServingStatus(serving);
    health->SetServingStatus("bert.v1.BertService", serving);
    metrics.SetServing(serving);
  };
  set_serving(false);
  const std::string listening = ListeningAddress(address, port);
  BERT_LOG(kInfo) << "listening" << LogKv("address", listening) << LogKv("health", "NOT_SERVING");

  // A device fault that leaves the engine unusable for good: stop serving at once (health
  // NOT_SERVING, so probes and load balancers see it), drain (every request now fails fast)
  // and exit 1, so that a supervisor restarts the process.
  auto on_engine_failure = [set_serving, &stop_signals](const absl::Status& error) {
    BERT_LOG(kError) << "engine failed; stopping" << LogKv("error", error.ToString())
                     << LogKv("health", "NOT_SERVING");
    set_serving(false);
    stop_signals.EngineFailed();
  };
  // A hung device (the watchdog): nothing can be drained, the engine thread is stuck.
  auto on_stuck = [set_serving](const EngineWatchdog::Stuck& stuck) {
    BERT_LOG(kError) << (stuck.phase == EngineWatchdog::Phase::kLoad
                             ? "engine load stuck; exiting"
                             : "engine batch stuck; exiting")
                     << LogKv("phase", EngineWatchdog::PhaseName(stuck.phase))
                     << LogKv("busy_s", absl::ToDoubleSeconds(stuck.busy))
                     << LogKv("limit_s", absl::ToDoubleSeconds(stuck.limit))
                     << LogKv("health", "NOT_SERVING");
    set_serving(false);
    std::fflush(stderr);
    std::_Exit(1);
  };
  EngineLog engine_log;
  PipelineObservers observers({&metrics, &engine_log});
  auto loaded = [&]() -> absl::StatusOr<Loaded> {
    try {
      return LoadAndWarmUp(&observers, on_engine_failure, on_stuck);
    } catch (const std::bad_alloc&) {  // what the engines' own checks did not foresee
      return absl::ResourceExhaustedError(
          "out of memory loading the model and warming up the engine (a lower "
          "--max_batch_tokens needs less)");
    } catch (const std::system_error& e) {  // std::thread: the process's thread limit
      return absl::ResourceExhaustedError(
          absl::StrCat("cannot start the threads asked for (", e.what(),
                       "): lower --cpu_threads or --tokenization_workers"));
    }
  }();
  if (!loaded.ok()) {
    BERT_LOG(kError) << "startup failed" << LogKv("error", loaded.status().ToString());
    server->Shutdown(std::chrono::system_clock::now());
    return 1;
  }
  if (loaded->pipeline->engine().info().backend == "cuda") {
    metrics.SetDeviceMemoryReader([] { return std::max<int64_t>(0, DeviceMemoryInUseBytes()); });
  }
  stop_signals.MarkServing();
  service.SetPipeline(loaded->pipeline.get(), loaded->sentence_embedding);
  set_serving(true);
  BERT_LOG(kInfo) << "serving" << LogKv("address", listening)
                  << LogKv("model", service_config.model_name) << LogKv("health", "SERVING");

  const int signal_number = stop_signals.Wait();  // 0: the engine failed
  const char* const signal_name = signal_number == 0 ? "none" : SignalName(signal_number);
  set_serving(false);
  const absl::Duration drain_delay = absl::Seconds(absl::GetFlag(FLAGS_drain_delay_s));
  if (!stop_signals.engine_failed() && drain_delay > absl::ZeroDuration()) {
    // Health says NOT_SERVING, so that load balancers and clients that follow it send their
    // calls elsewhere; calls are still served meanwhile.
    BERT_LOG(kInfo) << "not serving; draining after the delay" << LogKv("signal", signal_name)
                    << LogKv("drain_delay_s", absl::ToInt64Seconds(drain_delay))
                    << LogKv("health", "NOT_SERVING");
    stop_signals.WaitForAnother(drain_delay);
  }
  const absl::Time drain_start = absl::Now();
  const absl::Time drain_deadline =
      drain_start + absl::Seconds(absl::GetFlag(FLAGS_drain_timeout_s));
  const bool engine_failed = stop_signals.engine_failed();
  service.RefuseStreamMessages();
  // With a failed engine every request is refused (UNAVAILABLE: its client may try another
  // server). Otherwise every call the service is handed is served (see BackgroundShutdown).
  if (engine_failed) loaded->pipeline->StopAdmitting();
  BERT_LOG(kInfo) << "draining" << LogKv("signal", signal_name)
                  << LogKv("engine_failed", engine_failed ? "true" : "false")
                  << LogKv("in_flight", loaded->pipeline->in_flight());
  BackgroundShutdown shutdown(server.get(), drain_deadline);
  const auto left = [drain_deadline] {
    return std::max(drain_deadline - absl::Now(), absl::ZeroDuration());
  };
  loaded->pipeline->WaitIdle(left());
  // Shutdown returns once every call is done, cancelled ones included, so answers a client was
  // too slow to take have then given their admission back. Calls that never end by themselves
  // (health Watch, open EmbedStreams) get a second, then are cancelled, once the service is
  // idle again: a call it took meanwhile is answered first (within the drain's deadline).
  bool shut_down = shutdown.WaitDone(absl::Seconds(1));
  if (!shut_down) {
    loaded->pipeline->WaitIdle(left());
    shut_down = shutdown.CancelRemainingCalls(absl::Seconds(5));
  }
  const bool drained = loaded->pipeline->Drain(absl::Seconds(1));
  if (!drained || !shut_down) {
    BERT_LOG(kWarning) << (drained ? "gRPC's shutdown did not finish; exiting"
                                   : "requests still in flight after --drain_timeout_s; exiting")
                       << LogKv("in_flight", loaded->pipeline->in_flight());
    std::fflush(stderr);
    // Bounded shutdown: do not wait on a stuck engine. (The engine may also have failed
    // during the drain: read the flag again.)
    std::_Exit(stop_signals.engine_failed() ? 1 : 0);
  }
  server->Wait();
  BERT_LOG(kInfo) << "stopped" << LogKv("ms", absl::ToInt64Milliseconds(absl::Now() - drain_start));
  loaded->watchdog.reset();
  server.reset();
  loaded->pipeline.reset();
  return stop_signals.engine_failed() ? 1 : 0;
}

}  // namespace
}  // namespace bert

int main(int argc, char** argv) {
  // First: this may execute the program again (kernels/cpu/blas_core.h).
  bert::cpu::ReexecForBetterBlasCore(argv);
  absl::SetProgramUsageMessage(
      "Serves a BERT encoder over gRPC.\n  bert_server --model_dir=DIR [--address=HOST:PORT]");
  // --help lists the server's flags (by default the flags library lists only those of a file
  // named after the program).
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = [](absl::string_view file) {
    return absl::StrContains(file, "server/main.cc");
  };
  usage.contains_helpshort_flags = usage.contains_help_flags;
  absl::SetFlagsUsageConfig(usage);
  absl::ParseCommandLine(argc, argv);
  // Debian's abseil is built without NDEBUG, which leaves absl::Mutex's lock-order checker
  // on: every acquisition then updates one process-wide graph under its own lock (2-9 % of
  // the host path's CPU per sequence, bench/RESULTS_server.md).
  if (!absl::GetFlag(FLAGS_mutex_deadlock_detection)) {
    absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  }
  return bert::Run();
}
