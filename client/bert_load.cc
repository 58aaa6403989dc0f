// bert_load: the load tester of bert.v1.BertService.
//
//   # closed loop: 1, 8 and 32 calls kept in flight, 10 s each after a 2 s warm-up
//   bert_load --server=127.0.0.1:50051 --concurrency=1,8,32
//   # open loop: Poisson arrivals at 100 and 200 calls/s, latency from the intended send time
//   bert_load --server=127.0.0.1:50051 --rate=100,200 --metrics=127.0.0.1:9090
//       --json_out=report.json --csv_out=calls.csv
//
// Workload: synthetic texts whose encodings follow --lengths (default lognormal:36:128,
// the benchmarks' variable-length batch), or JSON lines from --input_file (bert_client's
// syntax); --inputs_per_request inputs per call; --input_kind=tokens sends them as token
// ids (tokenized once by the server before the run) to leave tokenization out. --api=stream
// sends the calls as messages on EmbedStream (one stream per channel) instead of unary
// Embed calls; a message answered later than --timeout_ms counts as DEADLINE_EXCEEDED (a
// stream has no per-message deadline: see server/README.md). --api=rerank sends Rerank
// calls to a cross-encoder: an input as the query and the --inputs_per_request after it as
// the texts to rank, at --seq_length (0: the classifier's) with --truncation (unset: the
// server's longest_first); the Embed options do not apply.
//
// Latency is measured from each call's intended send time (open loop: its place in the
// schedule, so a server that falls behind cannot hide its queue: no coordinated omission;
// closed loop: when its slot freed);
// the time from the actual send is reported next to it as "service". Throughput counts the
// OK answers that arrive within the measured window; failed calls are counted by status
// code, with the first message of each, and, in "all p99", with their latency too. Sends
// more than 1 ms late are counted, with their cause (the sender thread, or the open loop's
// --max_outstanding: the server). With --metrics, the server's mean batch size over the
// window is read from its /metrics page. The JSON report is rewritten after every step.
// Percentiles come from histograms of 0.1 % resolution built as calls finish, so a step's
// memory does not grow with its length; --csv_out keeps every call until its step ends.
//
// Exit status: 0 when every step ran and had OK answers. 1, and the sweep stops after the
// step, when a step had no OK answer, its failed calls were over --max_error_percent, the
// server stopped answering during it, or (--api=stream, closed loop) every stream ended
// before its window did; also when the server cannot be reached at the start, its Tokenize
// fails (--input_kind=tokens), or a report cannot be rewritten during the sweep. 2 for bad
// flag values, a workload over the server's limits, a report file that cannot be written or
// a /metrics address that does not answer (found before the first step). A flag that does
// not parse at all (an unknown flag, a number that is not one) exits 1, from the flags
// library.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "client/connection.h"
#include "client/load_runner.h"
#include "client/load_stats.h"
#include "client/load_workload.h"
#include "client/metrics_scrape.h"
#include "client/request_options.h"
#include "nlohmann/json.hpp"
#include "proto/bert/v1/bert_service.grpc.pb.h"
#include "server/grpc/status_map.h"

ABSL_FLAG(std::string, concurrency, "",
          "Closed loop: comma-separated numbers of calls kept in flight, one step each "
          "(default 8 when --rate is not given)");
ABSL_FLAG(std::string, rate, "", "Open loop: comma-separated calls per second, one step each");
ABSL_FLAG(std::string, arrival, "poisson", "Open loop gaps: poisson or constant");
ABSL_FLAG(double, duration_s, 10, "Measured seconds per step (at most 3600)");
ABSL_FLAG(double, warmup_s, 2, "Seconds of load before each step's measured window");
ABSL_FLAG(int, timeout_ms, 30000,
          "Deadline of each call, from its intended send time (--api=stream: answers later "
          "count as DEADLINE_EXCEEDED)");
ABSL_FLAG(int, max_outstanding, 4096, "Open loop: most calls in flight (sends wait beyond)");
ABSL_FLAG(int, refused_backoff_ms, 20,
          "Closed loop: a slot whose call is refused (RESOURCE_EXHAUSTED, UNAVAILABLE) a "
          "second time in a row sends its next call this long after the answer, not at once; "
          "0: always at once");
ABSL_FLAG(std::string, api, "unary",
          "unary (Embed calls), stream (messages on EmbedStream: one stream per channel, "
          "calls in turn over them) or rerank (Rerank calls: a query and --inputs_per_request "
          "texts each; a model with a one-label classifier)");
ABSL_FLAG(int, channels, 4, "gRPC channels (connections) the calls are spread over");
ABSL_FLAG(uint64_t, seed, 1, "Seed of the synthetic texts and the Poisson schedule");
ABSL_FLAG(std::string, lengths, "lognormal:36:128",
          "Synthetic input lengths in tokens with [CLS]/[SEP]: fixed:N or "
          "lognormal:MEAN:MAX[:SIGMA]");
ABSL_FLAG(std::string, input_file, "", "JSON lines of inputs instead of synthetic texts");
ABSL_FLAG(int, inputs_per_request, 1, "Inputs in each call");
ABSL_FLAG(int, pool_size, 4096, "Synthetic inputs generated (used in turn), at most 1e6");
ABSL_FLAG(std::string, input_kind, "text", "text, or tokens (tokenized by the server first)");
ABSL_FLAG(std::string, heads, "pooled", "Heads asked for (as bert_client's --heads)");
ABSL_FLAG(std::string, layers, "", "Encoder layers asked for");
ABSL_FLAG(int, seq_length, 0,
          "Sequence length of each input (0: the synthetic maximum, or the server's default "
          "with --input_file; --api=rerank: the classifier's)");
ABSL_FLAG(std::string, padding, "trim", "pad or trim");
ABSL_FLAG(std::string, dtype, "float32", "Output dtype: float32, float16, bfloat16");
ABSL_FLAG(std::string, truncation, "",
          "truncate, longest_first or reject; unset: truncate (with --heads=logits too: no "
          "classifier defaults), or with --api=rerank the server's longest_first");
ABSL_FLAG(bool, normalize, false, "L2-normalise pooled outputs");
ABSL_FLAG(int, dimensions, 0, "Keep the first N values of the vector heads (0: all)");
ABSL_FLAG(std::string, prompt_name, "", "One of the model's prompts (as bert_client's)");
ABSL_FLAG(std::string, metrics, "", "HOST:PORT of the server's /metrics (optional)");
ABSL_FLAG(double, max_error_percent, 100,
          "Fail the run (exit 1, no further step) when a step's failed calls are more than "
          "this percentage of its calls; 100: only a step without any OK answer fails it");
ABSL_FLAG(std::string, json_out, "", "Write the report as JSON here");
ABSL_FLAG(std::string, csv_out, "",
          "Write one CSV row per call here (keeps every call in memory until its step ends)");

namespace bert {
namespace {

using json = nlohmann::json;

// A step's memory no longer grows with its length; the cap keeps a mistyped duration from
// holding the server (and the load generator) for days.
constexpr double kMaxDurationS = 3600;
// With --csv_out every call's record is kept until its step ends (~100 bytes each). An
// open loop schedules rate x (warm-up + duration) calls whatever the server manages (the
// late ones are recorded as not sent), so a mistyped rate would exhaust memory; a closed
// loop's calls are bounded by the server's throughput. Without --csv_out a step's memory
// does not grow with its calls.
constexpr double kMaxScheduledCalls = 50e6;
constexpr int kMaxPoolSize = 1'000'000;
constexpr int64_t kMaxPoolTokens = 200'000'000;  // ~1 GB of synthetic text
// More sends than this fraction later than kLateSendNs: the step says it fell behind.
constexpr double kLateSendsWarning = 0.01;
// How long the check that the server still answers, after a step with errors, may take.
constexpr auto kServerCheckTimeout = std::chrono::seconds(5);

int Usage(const std::string& message) {
  std::fprintf(stderr, "bert_load: %s\n", message.c_str());
  return 2;
}

// The sweep the flags ask for.
absl::StatusOr<std::vector<LoadStep>> ParseSteps() {
  const std::string concurrency = absl::GetFlag(FLAGS_concurrency);
  const std::string rate = absl::GetFlag(FLAGS_rate);
  if (!concurrency.empty() && !rate.empty()) {
    return absl::InvalidArgumentError("give --concurrency (closed loop) or --rate (open loop)");
  }
  const std::string arrival = absl::GetFlag(FLAGS_arrival);
  if (arrival != "poisson" && arrival != "constant") {
    return absl::InvalidArgumentError("--arrival: poisson or constant");
  }
  std::vector<LoadStep> steps;
  for (absl::string_view part : absl::StrSplit(rate, ',', absl::SkipWhitespace())) {
    LoadStep step;
    if (!absl::SimpleAtod(part, &step.rate) || !(step.rate > 0 && step.rate <= kMaxRate)) {
      return absl::InvalidArgumentError(absl::StrCat("--rate: bad value ", part));
    }
    step.poisson = arrival == "poisson";
    steps.push_back(step);
  }
  if (!steps.empty()) return steps;
  for (absl::string_view part :
       absl::StrSplit(concurrency.empty() ? "8" : concurrency, ',', absl::SkipWhitespace())) {
    LoadStep step;
    if (!absl::SimpleAtoi(part, &step.concurrency) || step.concurrency < 1 ||
        step.concurrency > kMaxConcurrency) {
      return absl::InvalidArgumentError(absl::StrCat("--concurrency: bad value ", part));
    }
    steps.push_back(step);
  }
  if (steps.empty()) return absl::InvalidArgumentError("--concurrency: no value");
  return steps;
}

std::string StepLabel(const LoadStep& step) {
  return step.concurrency > 0 ? absl::StrCat("c=", step.concurrency)
                              : absl::StrCat(step.poisson ? "poisson " : "constant ",
                                             absl::StrFormat("%g/s", step.rate));
}

// What every call sends: the inputs and the request options.
struct Workload {
  std::vector<v1::Input> pool;
  v1::EmbedRequest options;  // no inputs
  int inputs_per_request = 1;
  EmbedOptionsText options_text;  // what `options` was made from
  // --api=rerank: the Rerank calls' options (no query, no texts) instead of `options`.
  std::optional<v1::RerankRequest> rerank;
};

std::vector<std::string> HeadNames(const v1::EmbedRequest& request) {
  std::vector<std::string> names;
  for (int head : request.heads()) names.push_back(v1::Head_Name(static_cast<v1::Head>(head)));
  return names;
}

// The head "embedding" stands for the served model's sentence embedding: `options` again,
// with what GetModelInfo says it is.
absl::Status ResolveEmbeddingHead(const v1::ModelInfo& info, Workload* w) {
  if (!NamesEmbeddingHead(w->options_text.heads)) return absl::OkStatus();
  w->options_text.model_embedding = info.sentence_embedding();
  // The model's truncation, as sentence-transformers applies it, unless --seq_length says
  // (rather than the synthetic lengths' longest).
  if (absl::GetFlag(FLAGS_seq_length) == 0 && info.sentence_embedding().max_seq_length() > 0) {
    w->options_text.seq_length = 0;
  }
  w->options.Clear();
  return SetEmbedOptions(w->options_text, &w->options);
}

// The workload the flags describe, before contacting the server (a bad file fails at once).
absl::StatusOr<Workload> BuildWorkload() {
  Workload w;
  w.inputs_per_request = absl::GetFlag(FLAGS_inputs_per_request);
  const int pool_size = absl::GetFlag(FLAGS_pool_size);
  if (w.inputs_per_request < 1 || pool_size < 1 || pool_size > kMaxPoolSize) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--inputs_per_request must be positive, --pool_size in [1, ", kMaxPoolSize, "]"));
  }
  int seq_length = absl::GetFlag(FLAGS_seq_length);
  if (!absl::GetFlag(FLAGS_input_file).empty()) {
    absl::StatusOr<std::vector<v1::Input>> read = ReadInputFile(absl::GetFlag(FLAGS_input_file));
    if (!read.ok()) return read.status();
    w.pool = *std::move(read);
  } else {
    absl::StatusOr<LengthDistribution> lengths =
        ParseLengthDistribution(absl::GetFlag(FLAGS_lengths));
    if (!lengths.ok()) return lengths.status();
    if (static_cast<int64_t>(pool_size) * lengths->mean > kMaxPoolTokens) {
      return absl::InvalidArgumentError(
          absl::StrCat("--pool_size x mean length is over ", kMaxPoolTokens, " tokens"));
    }
    w.pool = SyntheticInputs(*lengths, pool_size, absl::GetFlag(FLAGS_seed));
    if (seq_length == 0) seq_length = lengths->max;
  }
  EmbedOptionsText text;
  text.heads = absl::GetFlag(FLAGS_heads);
  text.layers = absl::GetFlag(FLAGS_layers);
  text.seq_length = seq_length;
  text.padding = absl::GetFlag(FLAGS_padding);
  text.dtype = absl::GetFlag(FLAGS_dtype);
  text.truncation = absl::GetFlag(FLAGS_truncation);
  text.normalize = absl::GetFlag(FLAGS_normalize);
  text.dimensions = absl::GetFlag(FLAGS_dimensions);
  text.prompt_name = absl::GetFlag(FLAGS_prompt_name);
  // Token inputs (or texts sent as the server's tokens) take no prompt.
  text.token_inputs = absl::GetFlag(FLAGS_input_kind) == "tokens";
  for (const v1::Input& input : w.pool) text.token_inputs |= input.has_tokens();
  // The other options are checked now; "embedding" is resolved once the server is known
  // (ResolveEmbeddingHead), and meanwhile checked as if it were mean_pooled.
  EmbedOptionsText checked = text;
  if (NamesEmbeddingHead(text.heads)) {
    checked.model_embedding.emplace();
    checked.model_embedding->set_head(v1::HEAD_MEAN_POOLED);
  }
  if (absl::Status status = SetEmbedOptions(checked, &w.options); !status.ok()) return status;
  w.options_text = std::move(text);
  if (absl::GetFlag(FLAGS_api) == "rerank") {
    for (const v1::Input& input : w.pool) {
      if (!input.has_text() || input.text().has_text_b()) {
        return absl::InvalidArgumentError(
            "--api=rerank: the inputs must be single texts (queries and texts to rank)");
      }
    }
    if (absl::GetFlag(FLAGS_input_kind) != "text") {
      return absl::InvalidArgumentError("--api=rerank sends texts: --input_kind=text");
    }
    // Embed's options, which a Rerank call does not carry: refused rather than left unsent.
    std::vector<std::string> embed_only;
    if (absl::GetFlag(FLAGS_heads) != "pooled") embed_only.push_back("--heads");
    if (!absl::GetFlag(FLAGS_layers).empty()) embed_only.push_back("--layers");
    if (absl::GetFlag(FLAGS_padding) != "trim") embed_only.push_back("--padding");
    if (absl::GetFlag(FLAGS_dtype) != "float32") embed_only.push_back("--dtype");
    if (absl::GetFlag(FLAGS_normalize)) embed_only.push_back("--normalize");
    if (absl::GetFlag(FLAGS_dimensions) != 0) embed_only.push_back("--dimensions");
    if (!absl::GetFlag(FLAGS_prompt_name).empty()) embed_only.push_back("--prompt_name");
    if (!embed_only.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--api=rerank: ", absl::StrJoin(embed_only, ", "),
                       " apply to Embed calls only (Rerank takes --seq_length and --truncation)"));
    }
    w.rerank.emplace();
    w.rerank->set_seq_length(std::max(0, absl::GetFlag(FLAGS_seq_length)));  // 0: the model's
    if (const std::string flag = absl::GetFlag(FLAGS_truncation); !flag.empty()) {
      absl::StatusOr<v1::Truncation> truncation = ParseTruncation(flag);
      if (!truncation.ok()) return truncation.status();
      w.rerank->set_truncation(*truncation);
    }
  }
  return w;
}

// The workload against the server's limits: a sweep it would reject call by call fails
// here instead.
absl::Status CheckLimits(const Workload& w, const v1::ServerLimits& limits) {
  if (limits.max_inputs_per_request() > 0 &&
      static_cast<uint32_t>(w.inputs_per_request) > limits.max_inputs_per_request()) {
    return absl::InvalidArgumentError(absl::StrCat("--inputs_per_request=", w.inputs_per_request,
                                                   " is over the server's ",
                                                   limits.max_inputs_per_request()));
  }
  const uint32_t seq_length = w.rerank ? w.rerank->seq_length() : w.options.seq_length();
  if (limits.max_seq_length() > 0 && seq_length > limits.max_seq_length()) {
    return absl::InvalidArgumentError(
        absl::StrCat("sequence length ", seq_length,
                     " (--seq_length or the longest synthetic input) is over "
                     "the server's ",
                     limits.max_seq_length()));
  }
  return absl::OkStatus();
}

// When a closed loop sends a refused call's slot again, in words.
std::string BackoffText() {
  const int ms = absl::GetFlag(FLAGS_refused_backoff_ms);
  return ms == 0 ? "at once"
                 : absl::StrCat("at once, and ", ms, " ms later after a second refusal in a row");
}

// A closed loop over the server's admission limit measures that limit plus a stream of
// refused calls (RESOURCE_EXHAUSTED), sent again at once and, from a slot's second refusal in
// a row, after --refused_backoff_ms: says so before the sweep.
void WarnOverAdmission(const std::vector<LoadStep>& steps, const v1::ServerLimits& limits) {
  const uint32_t admitted = limits.max_concurrent_requests();
  if (admitted == 0) return;
  for (const LoadStep& step : steps) {
    if (step.concurrency > 0 && static_cast<uint32_t>(step.concurrency) > admitted) {
      std::fprintf(stderr,
                   "bert_load: warning: --concurrency=%d is over the server's "
                   "max_concurrent_requests %u: calls past it are refused (RESOURCE_EXHAUSTED) "
                   "and sent again %s (--refused_backoff_ms)\n",
                   step.concurrency, admitted, BackoffText().c_str());
    }
  }
}

// Replaces every text input by the token ids the server makes of it.
absl::Status TokenizeOnServer(v1::BertService::Stub* stub, const Connection& connection,
                              const v1::ModelInfo& info, Workload* w) {
  std::vector<v1::Input>& inputs = w->pool;
  const size_t chunk = std::max<uint32_t>(1, info.limits().max_inputs_per_request());
  for (size_t begin = 0; begin < inputs.size(); begin += chunk) {
    const size_t end = std::min(inputs.size(), begin + chunk);
    v1::TokenizeRequest request;
    request.set_seq_length(w->options.seq_length());
    request.set_truncation(w->options.truncation());
    std::vector<size_t> texts;  // the pool indices in the request
    for (size_t i = begin; i < end; ++i) {
      if (!inputs[i].has_text()) continue;
      *request.add_inputs() = inputs[i].text();
      texts.push_back(i);
    }
    if (texts.empty()) continue;
    grpc::ClientContext context;
    connection.Prepare(&context, std::chrono::system_clock::now() + std::chrono::seconds(60));
    v1::TokenizeResponse response;
    const grpc::Status status = stub->Tokenize(&context, request, &response);
    if (!status.ok()) {
      return absl::UnavailableError(absl::StrCat("Tokenize: ", GrpcCodeName(status.error_code()),
                                                 ": ", status.error_message()));
    }
    if (static_cast<size_t>(response.encodings_size()) != texts.size()) {
      return absl::InternalError(absl::StrCat("Tokenize answered ", response.encodings_size(),
                                              " encodings for ", texts.size(), " texts"));
    }
    for (size_t k = 0; k < texts.size(); ++k) {
      const v1::Encoding& e = response.encodings(k);
      const uint32_t num_tokens = e.num_tokens();
      if (num_tokens > static_cast<uint32_t>(e.input_word_ids_size()) ||
          (e.input_type_ids_size() > 0 &&
           num_tokens > static_cast<uint32_t>(e.input_type_ids_size()))) {
        return absl::InternalError("Tokenize answered fewer ids than its num_tokens");
      }
      const int n = static_cast<int>(num_tokens);
      v1::TokenInput* tokens = inputs[texts[k]].mutable_tokens();  // clears the text
      tokens->mutable_input_word_ids()->Assign(e.input_word_ids().begin(),
                                               e.input_word_ids().begin() + n);
      if (e.input_type_ids_size() > 0) {
        tokens->mutable_input_type_ids()->Assign(e.input_type_ids().begin(),
                                                 e.input_type_ids().begin() + n);
      }
    }
  }
  return absl::OkStatus();
}

// The server's batching over a window, from two reads of its /metrics.
struct BatchView {
  std::optional<double> mean_sequences;
  std::optional<double> mean_rows;  // rows the engine computed, padding included
  std::string error;
};

BatchView BatchesBetween(const absl::StatusOr<std::string>& before,
                         const absl::StatusOr<std::string>& after) {
  BatchView view;
  if (!before.ok() || !after.ok()) {
    view.error = std::string((before.ok() ? after : before).status().message());
    return view;
  }
  const auto delta = [&](const char* name) -> std::optional<double> {
    const std::optional<double> a = SumOfSamples(*before, name);
    const std::optional<double> b = SumOfSamples(*after, name);
    if (!a || !b || !std::isfinite(*b - *a)) return std::nullopt;
    return *b - *a;
  };
  const std::optional<double> batches = delta("bert_batch_size_count");
  const std::optional<double> sequences = delta("bert_batch_size_sum");
  const std::optional<double> rows = delta("bert_batch_tokens_sum");
  if (!batches || !(*batches > 0)) {
    view.error = "no batch counted in the window";
    return view;
  }
  if (sequences) view.mean_sequences = *sequences / *batches;
  if (rows) view.mean_rows = *rows / *batches;
  return view;
}

json LatencyJson(const LatencySummary& s) {
  return {{"count", s.count}, {"mean", s.mean}, {"p50", s.p50},   {"p90", s.p90},
          {"p95", s.p95},     {"p99", s.p99},   {"p999", s.p999}, {"max", s.max}};
}

// Whether a step's sends fell behind their intended times (open loop: the schedule; closed
// loop: the moment a slot freed): more than kLateSendsWarning of them over kLateSendNs late.
// The latencies then include that delay, and an open loop did not offer its rate.
bool FellBehind(const StepSummary& s) {
  return s.late_sends > kLateSendsWarning * static_cast<double>(s.send_lag.count);
}

double ErrorPercent(const StepSummary& s) {
  return s.calls > 0 ? 100.0 * static_cast<double>(s.calls - s.ok) / s.calls : 0.0;
}

// The step's end before its window's, in seconds into the window, as the report gives it.
std::optional<double> StoppedEarlyS(const StepResult& r) {
  if (r.stopped_ns < 0) return std::nullopt;
  return std::max<double>(0, static_cast<double>(r.stopped_ns - r.window_begin_ns) * 1e-9);
}

json StepJson(const LoadStep& step, const StepResult& result, const BatchView* batches) {
  const StepSummary& s = result.summary;
  json errors = json::object();
  json messages = json::object();
  for (const auto& [code, count] : s.errors) {
    const char* name = GrpcCodeName(static_cast<grpc::StatusCode>(code));
    errors[name] = count;
    const auto message = s.error_messages.find(code);
    if (message != s.error_messages.end()) messages[name] = message->second;
  }
  json j = {{"label", StepLabel(step)},
            {"mode", step.concurrency > 0 ? "closed" : "open"},
            {"window_s", s.window_s},
            {"calls", s.calls},
            {"ok", s.ok},
            {"errors", errors},
            {"error_messages", messages},
            {"not_sent", s.not_sent},
            {"requests_per_s", s.requests_per_s},
            {"sequences_per_s", s.sequences_per_s},
            {"tokens_per_s", s.tokens_per_s},
            {"latency_ms", LatencyJson(s.latency)},
            {"latency_all_ms", LatencyJson(s.latency_all)},
            {"failed_latency_ms", LatencyJson(s.failed)},
            {"service_ms", LatencyJson(s.service)},
            {"send_lag_ms", LatencyJson(s.send_lag)},
            {"late_sends", s.late_sends},
            {"late_sends_held_by_max_outstanding", s.held_sends},
            {"fell_behind_schedule", FellBehind(s)},
            {"server_ms",
             {{"total", LatencyJson(s.server_total)},
              {"tokenize", LatencyJson(s.server_tokenize)},
              {"queue", LatencyJson(s.server_queue)},
              {"inference", LatencyJson(s.server_inference)}}}};
  if (const std::optional<double> stopped = StoppedEarlyS(result)) {
    j["stopped_early_s"] = *stopped;
    j["stopped_why"] = result.stopped_why;
  }
  if (step.concurrency > 0) {
    j["concurrency"] = step.concurrency;
  } else {
    j["rate"] = step.rate;
    j["arrival"] = step.poisson ? "poisson" : "constant";
  }
  if (batches != nullptr) {
    json b = json::object();
    if (batches->mean_sequences) b["mean_sequences"] = *batches->mean_sequences;
    if (batches->mean_rows) b["mean_rows"] = *batches->mean_rows;
    if (!batches->error.empty()) b["error"] = batches->error;
    j["server_batches"] = b;
  }
  return j;
}

void PrintHeader(bool with_batches) {
  std::printf("%-16s %8s %7s %10s %10s %11s %8s %8s %8s %8s %8s %8s %8s %8s%s\n", "step", "calls",
              "err %", "req/s", "seq/s", "tokens/s", "p50", "p90", "p99", "max", "all p99",
              "svc p50", "srv q50", "srv i50", with_batches ? "   batch" : "");
  std::printf("%-16s %s\n", "",
              "latency (ms) from the intended send, OK calls; all: failed ones too; svc: from the "
              "actual send; srv: the server's queue and inference medians");
}

// A latency column: "-" where no call was measured (0.00 would read as a real value).
std::string Ms(const LatencySummary& s, double value) {
  return s.count > 0 ? absl::StrFormat("%.2f", value) : "-";
}

// `client_cpu_percent`: the load generator's CPU use during the step (100: one whole CPU).
void PrintStep(const LoadStep& step, const StepResult& result, const BatchView* batches,
               double client_cpu_percent) {
  const StepSummary& s = result.summary;
  const int64_t errors = s.calls - s.ok;
  std::printf("%-16s %8lld %7.2f %10.1f %10.1f %11.0f %8s %8s %8s %8s %8s %8s %8s %8s",
              StepLabel(step).c_str(), static_cast<long long>(s.calls), ErrorPercent(s),
              s.requests_per_s, s.sequences_per_s, s.tokens_per_s,
              Ms(s.latency, s.latency.p50).c_str(), Ms(s.latency, s.latency.p90).c_str(),
              Ms(s.latency, s.latency.p99).c_str(), Ms(s.latency, s.latency.max).c_str(),
              Ms(s.latency_all, s.latency_all.p99).c_str(), Ms(s.service, s.service.p50).c_str(),
              Ms(s.server_queue, s.server_queue.p50).c_str(),
              Ms(s.server_inference, s.server_inference.p50).c_str());
  if (batches != nullptr && batches->mean_sequences) {
    std::printf(" %7.2f", *batches->mean_sequences);
  }
  std::printf("\n");
  if (errors > 0) {
    std::string list;
    for (const auto& [code, count] : s.errors) {
      absl::StrAppend(&list, list.empty() ? "" : ", ",
                      GrpcCodeName(static_cast<grpc::StatusCode>(code)), " ", count);
    }
    std::printf("  errors: %s%s; failed calls' latency p50 %.2f ms, max %.2f ms\n", list.c_str(),
                s.not_sent > 0 ? absl::StrCat(" (", s.not_sent, " never sent: late)").c_str() : "",
                s.failed.p50, s.failed.max);
    for (const auto& [code, message] : s.error_messages) {
      std::printf("    %s: %s\n", GrpcCodeName(static_cast<grpc::StatusCode>(code)),
                  message.c_str());
    }
  }
  if (const std::optional<double> stopped = StoppedEarlyS(result)) {
    std::printf("  stopped %.2f s into its %.2f s window: every stream ended (%s)\n", *stopped,
                s.window_s, result.stopped_why.c_str());
  }
  if (FellBehind(s)) {
    const bool held = 2 * s.held_sends >= s.late_sends;
    // Late without being held: the sending thread did not run in time, because the load
    // generator is busy (near a whole CPU) or because other processes had the CPUs.
    const std::string why =
        held ? "they waited for --max_outstanding calls in flight (the server is behind)"
        : client_cpu_percent >= 80
            ? absl::StrFormat("the load generator is slow (it used %.0f %% of a CPU)",
                              client_cpu_percent)
            : absl::StrFormat(
                  "the sending thread did not get a CPU in time (the load generator used %.0f %% "
                  "of one: this host's CPUs were busy, e.g. with the server, or a CPU quota "
                  "held it back)",
                  client_cpu_percent);
    std::printf(
        "  warning: %lld of %lld sends (%.1f %%) went out more than 1 ms after their intended "
        "time (send lag p50 %.2f ms, p90 %.2f ms, max %.2f ms): %s\n",
        static_cast<long long>(s.late_sends), static_cast<long long>(s.send_lag.count),
        100.0 * static_cast<double>(s.late_sends) / static_cast<double>(s.send_lag.count),
        s.send_lag.p50, s.send_lag.p90, s.send_lag.max, why.c_str());
  }
  if (batches != nullptr && !batches->error.empty()) {
    std::printf("  metrics: %s\n", batches->error.c_str());
  }
  std::fflush(stdout);
}

void WriteCsvRows(std::ofstream& out, int step_index, const StepResult& result) {
  for (const CallRecord& c : result.calls) {
    out << step_index << ',' << c.intended_ns / 1000 << ','
        << (c.sent_ns < 0 ? -1 : c.sent_ns / 1000) << ',' << c.done_ns / 1000 << ','
        << GrpcCodeName(static_cast<grpc::StatusCode>(c.code)) << ',' << c.inputs << ',' << c.tokens
        << ',' << (InWindow(c, result.window_begin_ns, result.window_end_ns) ? 1 : 0) << ','
        << c.server_tokenize_us << ',' << c.server_queue_us << ',' << c.server_inference_us << ','
        << c.server_total_us << '\n';
  }
}

// The report's header: what ran against what, enough to run it again.
json ReportHeader(const v1::ModelInfo& info, const Workload& w, size_t requests) {
  const auto embed_only = [&w](json value) { return w.rerank ? json(nullptr) : value; };
  return {{"server",
           {{"address", ConnectionOptionsFromFlags().server},
            {"model_name", info.model_name()},
            {"backend", info.backend()},
            {"device", info.device()}}},
          {"workload",
           {{"inputs_per_request", w.inputs_per_request},
            {"input_kind", absl::GetFlag(FLAGS_input_kind)},
            {"input_file", absl::GetFlag(FLAGS_input_file)},
            // Synthetic inputs only.
            {"lengths", absl::GetFlag(FLAGS_input_file).empty() ? json(absl::GetFlag(FLAGS_lengths))
                                                                : json(nullptr)},
            {"pool_size", w.pool.size()},
            {"requests", requests},
            {"seed", absl::GetFlag(FLAGS_seed)},
            {"seq_length", w.rerank ? w.rerank->seq_length() : w.options.seq_length()},
            // Embed's options: none with --api=rerank.
            {"heads", embed_only(absl::GetFlag(FLAGS_heads))},
            // As sent ("embedding" resolved to the model's head).
            {"heads_sent", embed_only(HeadNames(w.options))},
            {"layers", embed_only(absl::GetFlag(FLAGS_layers))},
            {"padding", embed_only(absl::GetFlag(FLAGS_padding))},
            {"dtype", embed_only(absl::GetFlag(FLAGS_dtype))},
            {"truncation",
             v1::Truncation_Name(w.rerank ? w.rerank->truncation() : w.options.truncation())},
            {"normalize", embed_only(w.options.normalize())},
            {"dimensions", embed_only(w.options.dimensions())},
            {"prompt_name", embed_only(w.options.prompt_name())}}},
          {"run",
           {{"warmup_s", absl::GetFlag(FLAGS_warmup_s)},
            {"duration_s", absl::GetFlag(FLAGS_duration_s)},
            {"timeout_ms", absl::GetFlag(FLAGS_timeout_ms)},
            {"max_outstanding", absl::GetFlag(FLAGS_max_outstanding)},
            {"refused_backoff_ms", absl::GetFlag(FLAGS_refused_backoff_ms)},
            {"max_error_percent", absl::GetFlag(FLAGS_max_error_percent)},
            {"arrival", absl::GetFlag(FLAGS_arrival)},
            {"api", absl::GetFlag(FLAGS_api)},
            {"channels", absl::GetFlag(FLAGS_channels)}}},
          {"steps", json::array()}};
}

// User + system CPU seconds this process has used.
double ProcessCpuSeconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  const auto seconds = [](const timeval& t) { return t.tv_sec + t.tv_usec * 1e-6; };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

// Writes `report` to a temporary file beside `path`, then renames it over `path`, so a
// reader never sees half a report.
absl::Status WriteJson(const std::string& path, const json& report) {
  const std::string temporary = path + ".tmp";
  std::ofstream out(temporary);
  out << report.dump(2) << '\n';
  out.close();
  if (!out || std::rename(temporary.c_str(), path.c_str()) != 0) {
    std::remove(temporary.c_str());
    return absl::InternalError(absl::StrCat("cannot write ", path));
  }
  return absl::OkStatus();
}

// Why the sweep must stop after this step (empty: it goes on). `server_answers` asks the
// server whether it still answers (called only after a step with errors).
std::string StepFailure(const LoadStep& step, const StepResult& result,
                        const std::function<absl::Status()>& server_answers) {
  const StepSummary& s = result.summary;
  const std::string label = StepLabel(step);
  if (s.calls > s.ok) {
    if (absl::Status status = server_answers(); !status.ok()) {
      return absl::StrCat("the server stopped answering during step ", label, ": ",
                          status.message());
    }
  }
  if (const std::optional<double> stopped = StoppedEarlyS(result)) {
    return absl::StrFormat("step %s stopped %.2f s into its window: every stream ended (%s)", label,
                           *stopped, result.stopped_why);
  }
  if (s.ok == 0) return absl::StrCat("step ", label, " had no OK answer");
  const double max_percent = absl::GetFlag(FLAGS_max_error_percent);
  if (ErrorPercent(s) > max_percent) {
    return absl::StrFormat("step %s: %.2f %% of its calls failed, over --max_error_percent=%g",
                           label, ErrorPercent(s), max_percent);
  }
  return {};
}

// Runs the steps, printing each and rewriting the reports as it ends, until one fails
// (StepFailure). Returns the exit status.
int RunSweep(LoadRunner* runner, const std::vector<LoadStep>& steps, json report,
             const std::function<absl::Status()>& server_answers) {
  const std::string metrics = absl::GetFlag(FLAGS_metrics);
  const std::string json_out = absl::GetFlag(FLAGS_json_out);
  std::ofstream csv;
  if (!absl::GetFlag(FLAGS_csv_out).empty()) {
    csv.open(absl::GetFlag(FLAGS_csv_out));
    if (!csv) return Usage(absl::StrCat("cannot write ", absl::GetFlag(FLAGS_csv_out)));
    csv << "step,intended_us,sent_us,done_us,code,inputs,tokens,in_window,server_tokenize_us,"
           "server_queue_us,server_inference_us,server_total_us\n";
  }
  // An unwritable report path fails before the first step, not after the last.
  if (!json_out.empty()) {
    if (absl::Status status = WriteJson(json_out, report); !status.ok()) {
      return Usage(std::string(status.message()));
    }
  }
  PrintHeader(!metrics.empty());
  for (size_t i = 0; i < steps.size(); ++i) {
    // Written by Run's edge thread, read after Run has joined it.
    absl::StatusOr<std::string> before = absl::UnavailableError("not read");
    absl::StatusOr<std::string> after = absl::UnavailableError("not read");
    std::function<void(bool)> at_edge;
    if (!metrics.empty()) {
      at_edge = [&](bool begin) {
        (begin ? before : after) = FetchMetrics(metrics, std::chrono::seconds(5));
      };
    }
    const double cpu_before = ProcessCpuSeconds();
    const auto wall_before = std::chrono::steady_clock::now();
    absl::StatusOr<StepResult> result = runner->Run(steps[i], at_edge);
    const double wall_s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_before).count();
    // The load generator's own CPU use: near 100 % per busy thread means it may be the
    // bottleneck, not the server.
    const double client_cpu_percent = 100.0 * (ProcessCpuSeconds() - cpu_before) / wall_s;
    if (!result.ok()) {
      std::fprintf(stderr, "bert_load: %s\n", std::string(result.status().message()).c_str());
      if (result.status().code() == absl::StatusCode::kInternal) {
        // Calls are still open: their callbacks may yet run and use the runner, so nothing
        // may be destroyed (LoadRunner::Run).
        std::fflush(nullptr);
        std::_Exit(1);
      }
      return 1;
    }
    std::optional<BatchView> batches;
    if (!metrics.empty()) batches = BatchesBetween(before, after);
    const BatchView* view = batches ? &*batches : nullptr;
    PrintStep(steps[i], *result, view, client_cpu_percent);
    report["steps"].push_back(StepJson(steps[i], *result, view));
    report["steps"].back()["client_cpu_percent"] = client_cpu_percent;
    if (!json_out.empty()) {
      if (absl::Status status = WriteJson(json_out, report); !status.ok()) {
        std::fprintf(stderr, "bert_load: %s\n", std::string(status.message()).c_str());
        return 1;
      }
    }
    if (csv.is_open()) WriteCsvRows(csv, static_cast<int>(i), *result);
    if (const std::string failure = StepFailure(steps[i], *result, server_answers);
        !failure.empty()) {
      std::fprintf(stderr, "bert_load: %s%s\n", failure.c_str(),
                   i + 1 < steps.size() ? "; the sweep stops here" : "");
      return 1;
    }
  }
  return 0;
}

int Main() {
  absl::StatusOr<std::vector<LoadStep>> steps = ParseSteps();
  if (!steps.ok()) return Usage(std::string(steps.status().message()));
  const double duration_s = absl::GetFlag(FLAGS_duration_s);
  const double warmup_s = absl::GetFlag(FLAGS_warmup_s);
  if (!(duration_s > 0 && duration_s <= kMaxDurationS) || !(warmup_s >= 0 && warmup_s <= 3600)) {
    return Usage(
        absl::StrCat("--duration_s must be in (0, ", kMaxDurationS, "], --warmup_s in [0, 3600]"));
  }
  const bool keep_calls = !absl::GetFlag(FLAGS_csv_out).empty();
  for (const LoadStep& step : *steps) {
    if (keep_calls && step.rate * (warmup_s + duration_s) > kMaxScheduledCalls) {
      return Usage(absl::StrFormat(
          "--rate=%g for %g s (warm-up included) schedules more than %g calls, whose records "
          "for --csv_out (~100 bytes each) would take too much memory: lower the rate or "
          "--duration_s, or leave out --csv_out",
          step.rate, warmup_s + duration_s, kMaxScheduledCalls));
    }
  }
  const int channels = absl::GetFlag(FLAGS_channels);
  if (channels < 1 || channels > 256 || absl::GetFlag(FLAGS_timeout_ms) < 1 ||
      absl::GetFlag(FLAGS_max_outstanding) < 1) {
    return Usage("--channels (<= 256), --timeout_ms and --max_outstanding must be positive");
  }
  if (absl::GetFlag(FLAGS_refused_backoff_ms) < 0 ||
      absl::GetFlag(FLAGS_refused_backoff_ms) > 60000) {
    return Usage("--refused_backoff_ms: 0 to 60000");
  }
  const std::string input_kind = absl::GetFlag(FLAGS_input_kind);
  if (input_kind != "text" && input_kind != "tokens") return Usage("--input_kind: text or tokens");
  const std::string api = absl::GetFlag(FLAGS_api);
  if (api != "unary" && api != "stream" && api != "rerank") {
    return Usage("--api: unary, stream or rerank");
  }
  if (!(absl::GetFlag(FLAGS_max_error_percent) >= 0 &&
        absl::GetFlag(FLAGS_max_error_percent) <= 100)) {
    return Usage("--max_error_percent must be in [0, 100]");
  }
  absl::StatusOr<Workload> workload = BuildWorkload();
  if (!workload.ok()) return Usage(std::string(workload.status().message()));

  absl::StatusOr<Connection> connection = Connection::Create(ConnectionOptionsFromFlags());
  if (!connection.ok()) return Usage(std::string(connection.status().message()));
  std::vector<std::unique_ptr<v1::BertService::Stub>> stubs;
  for (int i = 0; i < channels; ++i) {
    stubs.push_back(v1::BertService::NewStub(connection->NewChannel(i)));
  }
  // GetModelInfo at the start, and after a step with errors to tell a server that stopped
  // answering from one that refused calls; on a channel of its own.
  std::unique_ptr<v1::BertService::Stub> checker =
      v1::BertService::NewStub(connection->NewChannel(channels));
  v1::ModelInfo info;
  {
    grpc::ClientContext context;
    connection->Prepare(&context, std::chrono::system_clock::now() + std::chrono::seconds(10));
    const grpc::Status status = checker->GetModelInfo(&context, {}, &info);
    if (!status.ok()) {
      std::fprintf(stderr, "bert_load: cannot reach %s: %s: %s\n",
                   ConnectionOptionsFromFlags().server.c_str(), GrpcCodeName(status.error_code()),
                   status.error_message().c_str());
      return 1;
    }
  }
  if (absl::Status status = ResolveEmbeddingHead(info, &*workload); !status.ok()) {
    return Usage(std::string(status.message()));
  }
  if (workload->rerank && info.classifier().labels_size() != 1) {
    // Every call would be refused (FAILED_PRECONDITION): say so once instead.
    return Usage(absl::StrCat(
        "--api=rerank needs a cross-encoder (a model with a classifier of one label); the "
        "served model ",
        info.has_classifier()
            ? absl::StrCat("has a classifier of ", info.classifier().labels_size(), " labels")
            : "has no classifier"));
  }
  if (!workload->rerank && NamesLogitsHead(workload->options_text.heads) &&
      !info.has_classifier()) {
    // Every call would be refused (FAILED_PRECONDITION): say so once instead.
    return Usage("--heads=logits: the served model has no sequence-classification head");
  }
  if (absl::Status status = CheckLimits(*workload, info.limits()); !status.ok()) {
    return Usage(std::string(status.message()));
  }
  WarnOverAdmission(*steps, info.limits());
  if (const std::string metrics = absl::GetFlag(FLAGS_metrics); !metrics.empty()) {
    // A wrong address fails now, not after the first step.
    if (absl::StatusOr<std::string> page = FetchMetrics(metrics, std::chrono::seconds(5));
        !page.ok()) {
      return Usage(absl::StrCat("--metrics=", metrics, ": ", page.status().message()));
    }
  }
  if (input_kind == "tokens") {
    if (absl::Status status = TokenizeOnServer(stubs[0].get(), *connection, info, &*workload);
        !status.ok()) {
      std::fprintf(stderr, "bert_load: %s\n", std::string(status.message()).c_str());
      return 1;
    }
  }
  // Every input is sent: the requests take the pool in order (the last one wraps around).
  // A Rerank call takes one input more, its query.
  const int per_request = workload->inputs_per_request;
  const int per_call = per_request + (workload->rerank ? 1 : 0);
  const int request_count = static_cast<int>((workload->pool.size() + per_call - 1) / per_call);
  LoadOptions load;
  load.duration = std::chrono::nanoseconds(static_cast<int64_t>(duration_s * 1e9));
  load.warmup = std::chrono::nanoseconds(static_cast<int64_t>(warmup_s * 1e9));
  load.timeout = std::chrono::milliseconds(absl::GetFlag(FLAGS_timeout_ms));
  load.max_outstanding = absl::GetFlag(FLAGS_max_outstanding);
  load.refused_backoff = std::chrono::milliseconds(absl::GetFlag(FLAGS_refused_backoff_ms));
  load.seed = absl::GetFlag(FLAGS_seed);
  load.stream = api == "stream";
  load.keep_calls = keep_calls;
  json report = ReportHeader(info, *workload, request_count);
  LoadRunner runner =
      workload->rerank
          ? LoadRunner(
                &*connection, std::move(stubs),
                MakeRerankRequests(workload->pool, per_request, request_count, *workload->rerank),
                load)
          : LoadRunner(&*connection, std::move(stubs),
                       MakeRequests(workload->pool, per_request, request_count, workload->options),
                       load);
  std::printf("bert_load: %s (%s, %s), %d %s per call from %zu %s inputs, %d channel(s)%s\n",
              info.model_name().c_str(), info.backend().c_str(), info.device().c_str(), per_request,
              workload->rerank ? "text(s) and a query to rerank" : "input(s)",
              workload->pool.size(), input_kind.c_str(), channels,
              load.stream ? ", one EmbedStream each" : "");
  workload->pool.clear();  // the requests hold copies
  v1::BertService::Stub* const check_stub = checker.get();
  const Connection* const check_connection = &*connection;
  const auto server_answers = [check_stub, check_connection]() -> absl::Status {
    grpc::ClientContext context;
    check_connection->Prepare(&context, std::chrono::system_clock::now() + kServerCheckTimeout);
    v1::ModelInfo ignored;
    const grpc::Status status = check_stub->GetModelInfo(&context, {}, &ignored);
    if (status.ok()) return absl::OkStatus();
    return absl::UnavailableError(
        absl::StrCat(GrpcCodeName(status.error_code()), ": ", status.error_message()));
  };
  return RunSweep(&runner, *steps, std::move(report), server_answers);
}

}  // namespace
}  // namespace bert

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "bert_load --server=HOST:PORT [--concurrency=1,8,32 | --rate=100,200] [options]\n"
      "  Closed- or open-loop load on bert.v1.BertService/Embed (or Rerank); see --help.");
  bert::ShowClientFlagsInHelp();
  const std::vector<char*> rest = absl::ParseCommandLine(argc, argv);
  if (rest.size() > 1) return bert::Usage(absl::StrCat("unexpected argument ", rest[1]));
  // As bert_server: no lock-order checking on every mutex acquisition (Debian's abseil keeps
  // it on), so that the load generator spends its CPU on calls.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  return bert::Main();
}
