// bert_client: a command-line client of bert.v1.BertService.
//
//   bert_client --server=127.0.0.1:50051 health
//   bert_client --server=127.0.0.1:50051 info
//   bert_client --heads=pooled,sequence embed "Please subscribe" "You are being offered a job"
//       (heads: pooled, sequence, encoder_outputs, default)
//   echo '{"text_a": "a question", "text_b": "its passage"}' | bert_client embed
//   bert_client --server=... tokenize "Hello world" "first ||| second"
//       (the tokens, their ids, and each token's byte offsets in its text)
//   bert_client --server=... decode "101 7592 2088 102" "2023,2003"
//       (token ids back to text, one sequence per argument; without arguments, JSON lines
//       with input_word_ids on stdin, e.g. from `tokenize --json`)
//   bert_client --server=... ner "John Smith lives in Berlin"
//       (a token classifier's named entities: label, score, byte span, text;
//       --aggregation=first|average|max gives each word one label)
//   bert_client --server=... rerank "a query" "a passage" "another passage"
//       (a cross-encoder reranker: the passages best first; without passages as arguments,
//       JSON strings on stdin, one per line)
//
// Texts come from the arguments, or, when there are none, from stdin as JSON lines: a JSON
// string (one text), {"text_a": ..., "text_b": ...} (a pair), or {"input_word_ids": [...],
// "input_type_ids": [...]} (token ids). In an argument, "A ||| B" is the sentence pair (A, B).
// Output: each head's shape and leading values, as TF Hub's BERT notebook prints them; or,
// with --json, one JSON object per input with every value.
// Every call carries a deadline (--timeout_ms).
//
// Exit status: 0 on success; 1 when the server answers with an error or cannot be reached
// (the message says which); 2 for bad flags or input; 3 from `health` when the server
// answers but is not SERVING (e.g. still loading, or draining). A flag that does not parse
// at all (an unknown flag, a number that is not one) exits 1, from the flags library.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <deque>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/notification.h"
#include "client/connection.h"
#include "client/entities.h"
#include "client/request_options.h"
#include "grpcpp/generic/generic_stub.h"
#include "nlohmann/json.hpp"
#include "proto/bert/v1/bert_service.grpc.pb.h"
#include "server/core/classifier_scores.h"
#include "server/core/dtype_convert.h"
#include "server/grpc/status_map.h"

ABSL_FLAG(int, timeout_ms, 30000, "Deadline of each call");
ABSL_FLAG(std::string, heads, "pooled,sequence,encoder_outputs,default",
          "Comma-separated heads: pooled, sequence, encoder_outputs, default, mean_pooled, cls, "
          "logits (models with a classifier, e.g. cross-encoder rerankers: with --pair), "
          "token_logits (models with a token classifier, e.g. named-entity recognition), "
          "embedding (the model's sentence embedding, as GetModelInfo reports it: mean_pooled "
          "or cls, normalised if the model normalises)");
ABSL_FLAG(std::string, layers, "", "Comma-separated encoder layers (negative: from the end)");
ABSL_FLAG(int, seq_length, 0, "Sequence length (0: the server's default)");
ABSL_FLAG(std::string, padding, "pad", "pad (seq_length rows, TF Hub's shapes) or trim");
ABSL_FLAG(std::string, dtype, "float32", "Output dtype: float32, float16, bfloat16");
ABSL_FLAG(bool, normalize, false, "L2-normalise pooled/default/mean_pooled/cls");
ABSL_FLAG(bool, offsets, false,
          "embed: also ask for each token's byte offsets in its text (on with "
          "--heads=token_logits for texts, to show each word's label)");
ABSL_FLAG(int, dimensions, 0,
          "Keep the first N values of pooled/default/mean_pooled/cls (Matryoshka embeddings), "
          "before --normalize; 0: all");
ABSL_FLAG(std::string, truncation, "",
          "truncate (TF Hub's: a pair's texts take tokens in turn), longest_first (Hugging Face "
          "tokenizers': the longer text gives up tokens first) or reject; unset: truncate, or "
          "with --heads=logits longest_first and the classifier's max_seq_length (unless "
          "--seq_length), as CrossEncoder scores pairs; tokenize: truncate");
ABSL_FLAG(std::string, prompt_name, "",
          "One of the model's prompts (info: sentence_embedding.prompts), put in front of each "
          "text; with --heads=embedding the model's default prompt when not given (for text "
          "inputs; none: no prompt)");
ABSL_FLAG(bool, pair, false, "Treat each two arguments as one (text_a, text_b) pair");
ABSL_FLAG(bool, json, false, "Print JSON lines with every value instead of a summary");
ABSL_FLAG(int, show, 5, "Leading values shown per row in the summary");
ABSL_FLAG(int, top_n, 0,
          "rerank: show only the best N texts (0: all). rerank also takes --seq_length (0: the "
          "classifier's length), --truncation (unset: longest_first) and --json; the other "
          "request flags are embed's");
ABSL_FLAG(bool, raw_scores, false,
          "rerank: score by the classifier's logit, without the model's activation");
ABSL_FLAG(bool, keep_special_tokens, false,
          "decode: keep [CLS], [SEP], [PAD], [UNK] and [MASK] in the text");
ABSL_FLAG(std::string, aggregation, "simple",
          "ner: how tokens become entities, as the token-classification pipeline's "
          "aggregation_strategy: simple (each token its own label), or first, average or max "
          "(each word one label: its first piece's, its pieces' mean scores' best, or that of "
          "its most certain piece)");

namespace bert {
namespace {

using json = nlohmann::json;

void Prepare(const Connection& connection, grpc::ClientContext* context) {
  connection.Prepare(context, std::chrono::system_clock::now() +
                                  std::chrono::milliseconds(absl::GetFlag(FLAGS_timeout_ms)));
}

// A hint after gRPC's message for the usual mistakes of a first call.
void PrintHint(const grpc::Status& status) {
  if (status.error_code() != grpc::StatusCode::UNAVAILABLE) return;
  const std::string& message = status.error_message();
  const auto says = [&](const char* words) { return message.find(words) != std::string::npos; };
  if (says("http1.x server")) {
    std::fprintf(stderr, "(that address answers HTTP/1, not gRPC: the metrics port?)\n");
  } else if (says("andshake") || says("SSL") || says("ssl") || says("TLS") ||
             says("Socket closed")) {
    std::fprintf(stderr,
                 "(the connection failed in or before its TLS handshake: does the server use TLS "
                 "(--tls, --ca) or not, and does it require a client certificate (--cert, "
                 "--key)?)\n");
  } else if (says("Connection refused")) {
    std::fprintf(stderr,
                 "(no server answers there: is it running, and is --server its HOST:PORT?)\n");
  }
}

int Fail(const grpc::Status& status) {
  std::fprintf(stderr, "error: %s: %s\n", GrpcCodeName(status.error_code()),
               status.error_message().c_str());
  PrintHint(status);
  return 1;
}

// grpc.health.v1.Health/Check over the generic stub: the request for the whole server is
// the empty message; the response's field 1 (varint) is the status.
int Health(const Connection& connection) {
  grpc::GenericStub stub(connection.NewChannel());
  grpc::ClientContext context;
  Prepare(connection, &context);
  grpc::ByteBuffer request, response;
  grpc::Slice empty;
  request = grpc::ByteBuffer(&empty, 1);
  absl::Notification done;
  grpc::Status status;
  stub.UnaryCall(&context, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request, &response,
                 [&](grpc::Status s) {
                   status = std::move(s);
                   done.Notify();
                 });
  done.WaitForNotification();
  if (!status.ok()) return Fail(status);
  std::vector<grpc::Slice> slices;
  (void)response.Dump(&slices);
  std::string bytes;
  for (const auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  int value = 0;  // absent field = UNKNOWN (0)
  if (bytes.size() >= 2 && bytes[0] == 0x08) value = static_cast<unsigned char>(bytes[1]);
  static const char* kStatus[] = {"UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"};
  std::printf("%s\n", value >= 0 && value <= 3 ? kStatus[value] : "UNKNOWN");
  return value == 1 ? 0 : 3;
}

const char* DTypeName(v1::DataType d) {
  switch (d) {
    case v1::DATA_TYPE_FLOAT32:
      return "float32";
    case v1::DATA_TYPE_FLOAT16:
      return "float16";
    case v1::DATA_TYPE_BFLOAT16:
      return "bfloat16";
    default:
      return "unspecified";
  }
}

int Info(const Connection& connection, v1::BertService::Stub* stub) {
  grpc::ClientContext context;
  Prepare(connection, &context);
  v1::ModelInfo info;
  grpc::Status status = stub->GetModelInfo(&context, v1::GetModelInfoRequest(), &info);
  if (!status.ok()) return Fail(status);
  if (absl::GetFlag(FLAGS_json)) {
    json j = {{"model_name", info.model_name()},
              {"backend", info.backend()},
              {"device", info.device()},
              {"compute_dtype", DTypeName(info.compute_dtype())},
              {"server_version", info.server_version()},
              {"config",
               {{"num_layers", info.config().num_layers()},
                {"hidden_size", info.config().hidden_size()},
                {"num_attention_heads", info.config().num_attention_heads()},
                {"intermediate_size", info.config().intermediate_size()},
                {"vocab_size", info.config().vocab_size()},
                {"max_position_embeddings", info.config().max_position_embeddings()},
                {"type_vocab_size", info.config().type_vocab_size()},
                {"hidden_act", info.config().hidden_act()},
                {"has_pooler", info.config().has_pooler()},
                {"lowercase", info.config().lowercase()}}},
              {"limits",
               {{"max_inputs_per_request", info.limits().max_inputs_per_request()},
                {"max_seq_length", info.limits().max_seq_length()},
                {"default_seq_length", info.limits().default_seq_length()},
                {"max_batch_tokens", info.limits().max_batch_tokens()},
                {"max_concurrent_requests", info.limits().max_concurrent_requests()},
                {"max_message_bytes", info.limits().max_message_bytes()},
                {"max_request_bytes", info.limits().max_request_bytes()},
                {"max_answer_memory_bytes", info.limits().max_answer_memory_bytes()}}},
              {"sentence_embedding",
               {{"head", v1::Head_Name(info.sentence_embedding().head())},
                {"normalize", info.sentence_embedding().normalize()},
                {"note", info.sentence_embedding().note()},
                {"max_seq_length", info.sentence_embedding().max_seq_length()},
                {"prompts",
                 std::map<std::string, std::string>(info.sentence_embedding().prompts().begin(),
                                                    info.sentence_embedding().prompts().end())},
                {"default_prompt_name", info.sentence_embedding().default_prompt_name()},
                {"similarity_fn_name", info.sentence_embedding().similarity_fn_name()}}}};
    if (info.has_classifier()) {
      j["classifier"] = {{"labels", std::vector<std::string>(info.classifier().labels().begin(),
                                                             info.classifier().labels().end())},
                         {"problem_type", info.classifier().problem_type()},
                         {"activation_function", info.classifier().activation_function()},
                         {"max_seq_length", info.classifier().max_seq_length()},
                         {"per_token", info.classifier().per_token()}};
    }
    std::printf("%s\n", j.dump().c_str());
    return 0;
  }
  std::printf("%s", info.DebugString().c_str());
  return 0;
}

// The inputs of embed/tokenize: from the arguments or JSON lines on stdin.
std::vector<v1::Input> ReadInputs(const std::vector<std::string>& args) {
  std::vector<v1::Input> inputs;
  auto text = [&](const std::string& a, const std::string* b) {
    v1::Input input;
    input.mutable_text()->set_text_a(a);
    if (b != nullptr) input.mutable_text()->set_text_b(*b);
    inputs.push_back(std::move(input));
  };
  if (!args.empty()) {
    if (absl::GetFlag(FLAGS_pair)) {
      if (args.size() % 2 != 0) {
        std::fprintf(stderr, "--pair needs an even number of texts\n");
        std::exit(2);
      }
      for (size_t i = 0; i < args.size(); i += 2) text(args[i], &args[i + 1]);
      return inputs;
    }
    for (const std::string& arg : args) {
      const size_t sep = arg.find("|||");
      if (sep == std::string::npos) {
        text(arg, nullptr);
      } else {
        const std::string a(absl::StripAsciiWhitespace(arg.substr(0, sep)));
        const std::string b(absl::StripAsciiWhitespace(arg.substr(sep + 3)));
        text(a, &b);
      }
    }
    return inputs;
  }
  if (isatty(STDIN_FILENO)) {
    std::fprintf(stderr, "reading JSON lines from stdin (Ctrl-D ends; texts may be arguments)\n");
  }
  absl::StatusOr<std::vector<v1::Input>> lines = ParseInputLines(std::cin, "stdin");
  if (!lines.ok()) {
    std::fprintf(stderr, "%s\n", std::string(lines.status().message()).c_str());
    std::exit(2);
  }
  return *std::move(lines);
}

std::vector<float> Decode(const v1::Tensor& t) {
  const std::string& d = t.data();
  std::vector<float> out;
  if (t.dtype() == v1::DATA_TYPE_FLOAT16 || t.dtype() == v1::DATA_TYPE_BFLOAT16) {
    out.resize(d.size() / 2);
    for (size_t i = 0; i < out.size(); ++i) {
      const uint16_t bits = static_cast<uint8_t>(d[2 * i]) |
                            (static_cast<uint16_t>(static_cast<uint8_t>(d[2 * i + 1])) << 8);
      out[i] = t.dtype() == v1::DATA_TYPE_FLOAT16 ? FromHalfBits(bits) : FromBFloat16Bits(bits);
    }
  } else {
    out.resize(d.size() / 4);
    std::memcpy(out.data(), d.data(), out.size() * 4);
  }
  return out;
}

std::string Leading(const std::vector<float>& v, size_t begin, size_t count, size_t show) {
  std::vector<std::string> parts;
  for (size_t i = 0; i < std::min(count, show); ++i) {
    parts.push_back(absl::StrFormat("%.7f", v[begin + i]));
  }
  return absl::StrCat("[", absl::StrJoin(parts, " "), count > show ? " ...]" : "]");
}

std::string Shape(const std::vector<std::string>& dims) {
  return absl::StrCat("(", absl::StrJoin(dims, ", "), ")");
}

// Prints one head over all results: TF Hub's "Shape:(B, ...)" then each input's leading
// values (first rows for per-token heads).
void PrintHead(const std::string& title, const std::vector<const v1::Tensor*>& tensors,
               size_t show) {
  if (tensors.empty()) return;
  std::vector<std::string> dims = {absl::StrCat(tensors.size())};
  for (int64_t d : tensors[0]->shape()) dims.push_back(absl::StrCat(d));
  bool ragged = false;
  for (const v1::Tensor* t : tensors) {
    if (t->shape_size() > 0 && t->shape(0) != tensors[0]->shape(0)) ragged = true;
  }
  // Inputs with different row counts (trimmed padding): the row dimension has no one size.
  if (ragged) dims[1] = "None";
  std::printf("%s Shape:%s%s\n", title.c_str(), ragged ? "ragged " : "", Shape(dims).c_str());
  std::printf("%s Values:\n", title.c_str());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const v1::Tensor& t = *tensors[i];
    const std::vector<float> v = Decode(t);
    if (t.shape_size() == 1) {
      std::printf("  [%zu] %s\n", i, Leading(v, 0, v.size(), show).c_str());
    } else {
      const size_t cols = t.shape(1);
      const size_t rows = t.shape(0);
      std::printf("  [%zu]", i);
      for (size_t r = 0; r < std::min<size_t>(rows, 3); ++r) {
        std::printf("%s%s\n", r == 0 ? " " : "      ", Leading(v, r * cols, cols, show).c_str());
      }
      if (rows > 3) std::printf("       ... (%zu rows)\n", rows);
    }
  }
}

// Each input's logits by label, highest first (the first `show`), with the scores the model's
// problem type implies (classifier_scores.h).
void PrintLogits(const std::vector<const v1::Tensor*>& tensors, const v1::Classifier& classifier,
                 size_t show) {
  if (tensors.empty()) return;
  const int num_labels = classifier.labels_size();
  const ScoreFunction function =
      ScoreFunctionFor(classifier.problem_type(), num_labels, classifier.activation_function());
  std::printf(
      "Logits: %d labels (problem_type %s, activation %s; scores: %s)\n", num_labels,
      classifier.problem_type().empty() ? "unset" : classifier.problem_type().c_str(),
      classifier.activation_function().empty() ? "unset" : classifier.activation_function().c_str(),
      ScoreFunctionName(function));
  for (size_t i = 0; i < tensors.size(); ++i) {
    const std::vector<float> logits = Decode(*tensors[i]);
    const std::vector<double> scores = Scores(function, logits);
    std::vector<int> order(logits.size());
    for (size_t k = 0; k < order.size(); ++k) order[k] = static_cast<int>(k);
    std::stable_sort(order.begin(), order.end(),
                     [&](int a, int b) { return logits[a] > logits[b]; });
    std::string line;
    for (size_t k = 0; k < order.size() && k < show; ++k) {
      const int label = order[k];
      absl::StrAppend(&line, k == 0 ? " " : "  ",
                      label < num_labels ? classifier.labels(label) : "?", " ",
                      absl::StrFormat("%.6g", logits[label]));
      if (!scores.empty()) absl::StrAppend(&line, absl::StrFormat(" (%.4f)", scores[label]));
    }
    if (order.size() > show) absl::StrAppend(&line, "  ...");
    std::printf("  [%zu]%s\n", i, line.c_str());
  }
}

// Each input's most likely label for each real token (the rows after them are padding); with
// the tokens' offsets (return_offsets), as "text=label" for the tokens that have text.
void PrintTokenLabels(const v1::EmbedRequest& request, const v1::EmbedResponse& response,
                      const v1::ModelInfo& info) {
  const v1::Classifier& classifier = info.classifier();
  // The offsets of text_a count from the start of the prompt put in front of it.
  std::string prompt;
  if (!request.prompt_name().empty()) {
    const auto& prompts = info.sentence_embedding().prompts();
    if (auto it = prompts.find(request.prompt_name()); it != prompts.end()) prompt = it->second;
  }
  std::printf("Token Labels (highest logit per token):\n");
  for (int i = 0; i < response.results_size() && i < request.inputs_size(); ++i) {
    const v1::EmbedResult& result = response.results(i);
    const v1::Tensor& t = result.token_logits();
    if (t.shape_size() != 2 || t.shape(1) != classifier.labels_size()) continue;
    const std::vector<float> logits = Decode(t);
    const size_t labels = static_cast<size_t>(t.shape(1));
    const size_t rows = std::min<size_t>(static_cast<size_t>(t.shape(0)), result.num_tokens());
    const bool spans = request.inputs(i).has_text() &&
                       result.token_starts_size() == result.token_ends_size() &&
                       static_cast<size_t>(result.token_starts_size()) == rows;
    const std::string text_a = prompt + request.inputs(i).text().text_a();
    int segment = 0;  // [CLS] a [SEP] b [SEP]: text_b's tokens follow the second special one
    std::string line;
    for (size_t r = 0; r < rows && (r + 1) * labels <= logits.size(); ++r) {
      const auto row = logits.begin() + r * labels;
      const std::string& label =
          classifier.labels(static_cast<int>(std::max_element(row, row + labels) - row));
      if (!spans) {
        absl::StrAppend(&line, r == 0 ? " " : "  ", label);
        continue;
      }
      const uint32_t begin = result.token_starts(r);
      const uint32_t end = result.token_ends(r);
      if (begin == end) {  // [CLS] or [SEP]
        if (r > 0) ++segment;
        continue;
      }
      const std::string& text = segment == 0 ? text_a : request.inputs(i).text().text_b();
      if (begin > end || end > text.size()) continue;
      absl::StrAppend(&line, line.empty() ? " " : "  ", text.substr(begin, end - begin), "=",
                      label);
    }
    std::printf("  [%d]%s\n", i, line.c_str());
  }
}

// The server's limits (GetModelInfo), to size the calls that send many inputs: OK with
// `limits` set, or left empty where the server does not say (the calls are then split only as
// the server refuses them, SendInCalls); the error where the server cannot be reached.
grpc::Status FetchLimits(const Connection& connection, v1::BertService::Stub* stub,
                         std::optional<v1::ServerLimits>* limits) {
  grpc::ClientContext context;
  Prepare(connection, &context);
  v1::ModelInfo info;
  const grpc::Status status = stub->GetModelInfo(&context, v1::GetModelInfoRequest(), &info);
  if (status.ok()) {
    *limits = info.limits();
  } else if (status.error_code() == grpc::StatusCode::UNAVAILABLE ||
             status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED ||
             status.error_code() == grpc::StatusCode::UNAUTHENTICATED) {
    return status;  // every call would fail the same way
  }
  return grpc::Status::OK;
}

// How many inputs each call sends, the inputs being `item_bytes` each on the wire: within the
// server's input and request-size limits (less room for the request's options); all in one
// call without limits.
std::vector<size_t> CallSizes(std::vector<size_t> item_bytes,
                              const std::optional<v1::ServerLimits>& limits) {
  if (!limits.has_value() || limits->max_inputs_per_request() == 0) {
    if (item_bytes.empty()) return {};
    return {item_bytes.size()};
  }
  constexpr uint64_t kRoomForOptions = 64 << 10;
  const uint64_t request_bytes = limits->max_request_bytes();
  const uint64_t max_bytes =
      request_bytes > 2 * kRoomForOptions ? request_bytes - kRoomForOptions : request_bytes / 2;
  for (size_t& bytes : item_bytes) bytes += 6;  // the field's tag and length
  return SplitIntoCalls(item_bytes, limits->max_inputs_per_request(), max_bytes);
}

// The wire size of each message of `items`.
template <typename Messages>
std::vector<size_t> MessageBytes(const Messages& items) {
  std::vector<size_t> bytes;
  bytes.reserve(items.size());
  for (const auto& item : items) bytes.push_back(item.ByteSizeLong());
  return bytes;
}

// Fail's message, naming the inputs of the call that failed when there were several calls.
int FailCall(const grpc::Status& status, size_t begin, size_t count, size_t total) {
  if (count == total) return Fail(status);
  std::fprintf(stderr, "error: %s: %s (in the call with inputs %zu to %zu of %zu)\n",
               GrpcCodeName(status.error_code()), status.error_message().c_str(), begin,
               begin + count - 1, total);
  PrintHint(status);
  return 1;
}

// Whether the server refused a call for holding too much for one request or one answer,
// which fewer inputs avoid: its input and id limits, its message limit for the answer, or
// gRPC's for the request.
bool TooMuchForOneCall(const grpc::Status& status) {
  const std::string& message = status.error_message();
  if (status.error_code() == grpc::StatusCode::INVALID_ARGUMENT) {
    return message.find("-byte message limit") != std::string::npos ||
           message.find(" exceed the limit of ") != std::string::npos;
  }
  return status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED &&
         message.find("larger than max") != std::string::npos;
}

// Sends the command's inputs, `item_bytes` each on the wire, in calls of the server's size
// (CallSizes, by `limits`, or the server's as GetModelInfo gives them where not known and
// there is more than one input), in order: `send(begin, count)` makes one call and handles
// its answer. A call refused as too much for one (TooMuchForOneCall) is sent again as two
// halves; any other failure ends the command. 0, or the exit status (the error printed,
// naming the call's inputs).
int SendInCalls(const Connection& connection, v1::BertService::Stub* stub,
                std::vector<size_t> item_bytes, std::optional<v1::ServerLimits> limits,
                const std::function<grpc::Status(size_t begin, size_t count)>& send) {
  const size_t total = item_bytes.size();
  if (!limits.has_value() && total > 1) {
    if (const grpc::Status status = FetchLimits(connection, stub, &limits); !status.ok()) {
      return Fail(status);
    }
  }
  std::deque<std::pair<size_t, size_t>> calls;
  size_t next = 0;
  for (const size_t count : CallSizes(std::move(item_bytes), limits)) {
    calls.emplace_back(next, count);
    next += count;
  }
  while (!calls.empty()) {
    const auto [begin, count] = calls.front();
    calls.pop_front();
    const grpc::Status status = send(begin, count);
    if (status.ok()) continue;
    if (count > 1 && TooMuchForOneCall(status)) {
      const size_t half = count / 2;
      calls.emplace_front(begin + half, count - half);
      calls.emplace_front(begin, half);
      continue;
    }
    return FailCall(status, begin, count, total);
  }
  return 0;
}

// `text` cut to at most `max_bytes` bytes (at a character's start) and "...", for one-line
// summaries.
std::string Abbreviated(const std::string& text, size_t max_bytes) {
  if (text.size() <= max_bytes) return text;
  size_t end = max_bytes;
  while (end > 0 && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) --end;
  return text.substr(0, end) + "...";
}

// Sends `request`: the server's status, or INTERNAL for an answer without one result per
// input.
grpc::Status EmbedCall(const Connection& connection, v1::BertService::Stub* stub,
                       const v1::EmbedRequest& request, v1::EmbedResponse* response) {
  grpc::ClientContext context;
  Prepare(connection, &context);
  grpc::Status status = stub->Embed(&context, request, response);
  if (status.ok() && response->results_size() != request.inputs_size()) {
    return grpc::Status(grpc::StatusCode::INTERNAL,
                        absl::StrCat("the server answered ", response->results_size(),
                                     " results for ", request.inputs_size(), " inputs"));
  }
  return status;
}

// [[begin, end], ...] of a result's or an encoding's token offsets.
json OffsetsJson(const google::protobuf::RepeatedField<uint32_t>& starts,
                 const google::protobuf::RepeatedField<uint32_t>& ends) {
  json offsets = json::array();
  for (int k = 0; k < starts.size() && k < ends.size(); ++k)
    offsets.push_back({starts[k], ends[k]});
  return offsets;
}

json TensorJson(const v1::Tensor& t) {
  return {{"shape", std::vector<int64_t>(t.shape().begin(), t.shape().end())},
          {"dtype", DTypeName(t.dtype())},
          {"values", Decode(t)}};
}

// One JSON line per result of `response`, whose first input is the command's `first`.
void PrintEmbedJson(const v1::EmbedResponse& response, size_t first) {
  for (int i = 0; i < response.results_size(); ++i) {
    const v1::EmbedResult& r = response.results(i);
    json j = {{"index", first + i},
              {"num_tokens", r.num_tokens()},
              {"truncated", r.truncated()},
              {"timing_us",
               {{"tokenize", r.timing().tokenize_us()},
                {"queue", r.timing().queue_us()},
                {"inference", r.timing().inference_us()},
                {"total", r.timing().total_us()}}}};
    if (r.has_pooled_output()) j["pooled_output"] = TensorJson(r.pooled_output());
    if (r.has_default_output()) j["default"] = TensorJson(r.default_output());
    if (r.has_mean_pooled_output()) j["mean_pooled_output"] = TensorJson(r.mean_pooled_output());
    if (r.has_cls_output()) j["cls_output"] = TensorJson(r.cls_output());
    if (r.has_logits()) j["logits"] = TensorJson(r.logits());
    if (r.has_token_logits()) j["token_logits"] = TensorJson(r.token_logits());
    if (r.token_starts_size() > 0) j["offsets"] = OffsetsJson(r.token_starts(), r.token_ends());
    if (r.has_sequence_output()) j["sequence_output"] = TensorJson(r.sequence_output());
    if (r.encoder_outputs_size() > 0) {
      json layers = json::array();
      for (const auto& lo : r.encoder_outputs()) {
        json t = TensorJson(lo.output());
        t["layer"] = lo.layer();
        layers.push_back(std::move(t));
      }
      j["encoder_outputs"] = std::move(layers);
    }
    std::printf("%s\n", j.dump().c_str());
  }
}

int Embed(const Connection& connection, v1::BertService::Stub* stub,
          const std::vector<std::string>& args) {
  std::vector<v1::Input> inputs = ReadInputs(args);
  if (inputs.empty()) {
    std::fprintf(stderr, "embed: no inputs (arguments, or JSON lines on stdin)\n");
    return 2;
  }
  v1::EmbedRequest request;  // the options; the inputs go in calls of the server's size
  EmbedOptionsText options;
  options.heads = absl::GetFlag(FLAGS_heads);
  options.layers = absl::GetFlag(FLAGS_layers);
  options.seq_length = absl::GetFlag(FLAGS_seq_length);
  options.padding = absl::GetFlag(FLAGS_padding);
  options.dtype = absl::GetFlag(FLAGS_dtype);
  options.truncation = absl::GetFlag(FLAGS_truncation);
  options.normalize = absl::GetFlag(FLAGS_normalize);
  options.dimensions = absl::GetFlag(FLAGS_dimensions);
  options.prompt_name = absl::GetFlag(FLAGS_prompt_name);
  for (const v1::Input& input : inputs) options.token_inputs |= input.has_tokens();
  // The model's own settings for the heads that stand for them.
  std::optional<v1::ModelInfo> info;
  if (NamesEmbeddingHead(options.heads) || NamesLogitsHead(options.heads) ||
      NamesHead(options.heads, v1::HEAD_TOKEN_LOGITS)) {
    grpc::ClientContext context;
    Prepare(connection, &context);
    info.emplace();
    grpc::Status status = stub->GetModelInfo(&context, v1::GetModelInfoRequest(), &*info);
    if (status.ok()) {
      options.model_embedding = info->sentence_embedding();
      if (info->has_classifier()) options.model_classifier = info->classifier();
    } else if (NamesEmbeddingHead(options.heads)) {
      return Fail(status);
    } else {
      // logits alone: the server's defaults, and the raw values shown.
      std::fprintf(stderr,
                   "warning: GetModelInfo failed (%s: %s); sending the server's default length "
                   "and truncation\n",
                   GrpcCodeName(status.error_code()), status.error_message().c_str());
      info.reset();
    }
  }
  if (absl::Status status = SetEmbedOptions(options, &request); !status.ok()) {
    std::fprintf(stderr, "%s\n", std::string(status.message()).c_str());
    return 2;
  }
  // Token labels are shown by word when the inputs are texts.
  if (absl::GetFlag(FLAGS_offsets) ||
      (!options.token_inputs && NamesHead(options.heads, v1::HEAD_TOKEN_LOGITS))) {
    request.set_return_offsets(true);
  }

  // With --json each call's results are printed as they come; otherwise gathered (the timing
  // summed over the calls) for the summary.
  const bool as_json = absl::GetFlag(FLAGS_json);
  v1::EmbedResponse response;
  const int code =
      SendInCalls(connection, stub, MessageBytes(inputs),
                  info.has_value() ? std::optional(info->limits()) : std::nullopt,
                  [&](size_t begin, size_t count) {
                    v1::EmbedRequest call = request;
                    for (size_t i = begin; i < begin + count; ++i) *call.add_inputs() = inputs[i];
                    v1::EmbedResponse answer;
                    const grpc::Status status = EmbedCall(connection, stub, call, &answer);
                    if (!status.ok()) return status;
                    if (as_json) {
                      PrintEmbedJson(answer, begin);
                      return status;
                    }
                    for (v1::EmbedResult& r : *answer.mutable_results())
                      *response.add_results() = std::move(r);
                    v1::Timing* t = response.mutable_timing();
                    t->set_tokenize_us(t->tokenize_us() + answer.timing().tokenize_us());
                    t->set_queue_us(t->queue_us() + answer.timing().queue_us());
                    t->set_inference_us(t->inference_us() + answer.timing().inference_us());
                    t->set_total_us(t->total_us() + answer.timing().total_us());
                    return status;
                  });
  if (code != 0) return code;
  if (as_json) return 0;
  for (v1::Input& input : inputs) *request.add_inputs() = std::move(input);

  const size_t show = absl::GetFlag(FLAGS_show);
  std::printf("Inputs:\n");
  for (int i = 0; i < request.inputs_size(); ++i) {
    const v1::Input& in = request.inputs(i);
    std::string what;
    if (in.has_text()) {  // a text's first 80 bytes
      what = absl::StrCat("\"", Abbreviated(in.text().text_a(), 80), "\"");
      if (in.text().has_text_b()) {
        absl::StrAppend(&what, " ||| \"", Abbreviated(in.text().text_b(), 80), "\"");
      }
    } else {
      what = absl::StrCat(in.tokens().input_word_ids_size(), " token ids");
    }
    const auto& r = response.results(i);
    std::printf("  [%d] %s  (%u tokens%s)\n", i, what.c_str(), r.num_tokens(),
                r.truncated() ? ", truncated" : "");
  }
  std::vector<const v1::Tensor*> pooled, def, mean, cls, logits, token_logits, seq;
  for (const auto& r : response.results()) {
    if (r.has_pooled_output()) pooled.push_back(&r.pooled_output());
    if (r.has_default_output()) def.push_back(&r.default_output());
    if (r.has_mean_pooled_output()) mean.push_back(&r.mean_pooled_output());
    if (r.has_cls_output()) cls.push_back(&r.cls_output());
    if (r.has_logits()) logits.push_back(&r.logits());
    if (r.has_token_logits()) token_logits.push_back(&r.token_logits());
    if (r.has_sequence_output()) seq.push_back(&r.sequence_output());
  }
  PrintHead("Pooled Outputs", pooled, show);
  PrintHead("Default Outputs", def, show);
  PrintHead("Mean Pooled Outputs", mean, show);
  PrintHead("CLS Outputs", cls, show);
  if (!logits.empty()) {
    if (info.has_value() && logits[0]->shape_size() == 1 &&
        info->classifier().labels_size() == logits[0]->shape(0)) {
      PrintLogits(logits, info->classifier(), show);
    } else {
      PrintHead("Logits", logits, show);
    }
  }
  if (!token_logits.empty()) {
    PrintHead("Token Logits", token_logits, show);
    if (info.has_value() && info->classifier().per_token()) {
      PrintTokenLabels(request, response, *info);
    }
  }
  PrintHead("Sequence Outputs", seq, show);
  if (response.results_size() > 0 && response.results(0).encoder_outputs_size() > 0) {
    const int n = response.results(0).encoder_outputs_size();
    std::printf("Encoder Outputs: %d layers\n", n);
    for (int k = 0; k < n; ++k) {
      std::vector<const v1::Tensor*> layer;
      for (const auto& r : response.results()) layer.push_back(&r.encoder_outputs(k).output());
      PrintHead(absl::StrCat("  Layer ", response.results(0).encoder_outputs(k).layer()), layer,
                show);
    }
  }
  const v1::Timing& t = response.timing();
  std::printf("Timing (us): tokenize %lld, queue %lld, inference %lld, total %lld\n",
              static_cast<long long>(t.tokenize_us()), static_cast<long long>(t.queue_us()),
              static_cast<long long>(t.inference_us()), static_cast<long long>(t.total_us()));
  return 0;
}

// Prints each encoding of `response`, whose first text is the command's `first`; INTERNAL
// for an encoding that does not hold together.
grpc::Status PrintEncodings(const v1::TokenizeResponse& response, size_t first) {
  for (int k = 0; k < response.encodings_size(); ++k) {
    const size_t i = first + k;
    const v1::Encoding& e = response.encodings(k);
    if (e.num_tokens() > static_cast<uint32_t>(e.input_word_ids_size()) ||
        (e.input_type_ids_size() > 0 &&
         e.num_tokens() > static_cast<uint32_t>(e.input_type_ids_size()))) {
      return grpc::Status(
          grpc::StatusCode::INTERNAL,
          absl::StrCat("encoding ", i, " has fewer ids than its ", e.num_tokens(), " tokens"));
    }
    json offsets = OffsetsJson(e.token_starts(), e.token_ends());
    if (absl::GetFlag(FLAGS_json)) {
      json j = {{"tokens", std::vector<std::string>(e.tokens().begin(), e.tokens().end())},
                {"offsets", std::move(offsets)},
                {"input_word_ids",
                 std::vector<int>(e.input_word_ids().begin(), e.input_word_ids().end())},
                {"input_mask", std::vector<int>(e.input_mask().begin(), e.input_mask().end())},
                {"input_type_ids",
                 std::vector<int>(e.input_type_ids().begin(), e.input_type_ids().end())},
                {"num_tokens", e.num_tokens()},
                {"truncated", e.truncated()}};
      std::printf("%s\n", j.dump().c_str());
      continue;
    }
    std::printf("[%zu] tokens: %s\n", i, absl::StrJoin(e.tokens(), " ").c_str());
    if (!offsets.empty()) {
      std::printf("    offsets: %s\n",
                  absl::StrJoin(offsets, " ", [](std::string* out, const json& span) {
                    absl::StrAppend(out, span[0].get<uint32_t>(), "-", span[1].get<uint32_t>());
                  }).c_str());
    }
    std::printf(
        "    input_word_ids: %s\n",
        absl::StrJoin(e.input_word_ids().begin(), e.input_word_ids().begin() + e.num_tokens(), " ")
            .c_str());
    if (e.input_type_ids_size() > 0) {
      std::printf("    input_type_ids: %s\n",
                  absl::StrJoin(e.input_type_ids().begin(),
                                e.input_type_ids().begin() + e.num_tokens(), " ")
                      .c_str());
    }
    std::printf("    num_tokens: %u%s (padded to %d)\n", e.num_tokens(),
                e.truncated() ? ", truncated" : "", e.input_word_ids_size());
  }
  return grpc::Status::OK;
}

// --seq_length and --truncation (unset: truncate) for tokenize and ner; false (the error
// printed) for a bad value.
bool LengthAndTruncationFlags(int* seq_length, v1::Truncation* truncation) {
  *seq_length = absl::GetFlag(FLAGS_seq_length);
  if (*seq_length < 0) {
    std::fprintf(stderr, "seq_length must be >= 0\n");
    return false;
  }
  const std::string flag = absl::GetFlag(FLAGS_truncation);
  const absl::StatusOr<v1::Truncation> parsed = ParseTruncation(flag.empty() ? "truncate" : flag);
  if (!parsed.ok()) {
    std::fprintf(stderr, "%s\n", std::string(parsed.status().message()).c_str());
    return false;
  }
  *truncation = *parsed;
  return true;
}

int Tokenize(const Connection& connection, v1::BertService::Stub* stub,
             const std::vector<std::string>& args) {
  std::vector<v1::TextInput> texts;
  for (v1::Input& input : ReadInputs(args)) {
    if (!input.has_text()) {
      std::fprintf(stderr, "tokenize takes texts only\n");
      return 2;
    }
    texts.push_back(std::move(*input.mutable_text()));
  }
  if (texts.empty()) {
    std::fprintf(stderr, "tokenize: no texts (arguments, or JSON lines on stdin)\n");
    return 2;
  }
  v1::TokenizeRequest request;  // the options; the texts go in calls of the server's size
  int seq_length;
  v1::Truncation truncation;
  if (!LengthAndTruncationFlags(&seq_length, &truncation)) return 2;
  request.set_seq_length(seq_length);
  request.set_truncation(truncation);
  if (const std::string prompt = absl::GetFlag(FLAGS_prompt_name); prompt != "none") {
    request.set_prompt_name(prompt);
  }
  return SendInCalls(
      connection, stub, MessageBytes(texts), std::nullopt, [&](size_t begin, size_t count) {
        v1::TokenizeRequest call = request;
        for (size_t i = begin; i < begin + count; ++i) *call.add_inputs() = texts[i];
        grpc::ClientContext context;
        Prepare(connection, &context);
        v1::TokenizeResponse response;
        const grpc::Status status = stub->Tokenize(&context, call, &response);
        if (!status.ok()) return status;
        if (static_cast<size_t>(response.encodings_size()) != count) {
          return grpc::Status(grpc::StatusCode::INTERNAL,
                              absl::StrCat("the server answered ", response.encodings_size(),
                                           " encodings for ", count, " texts"));
        }
        return PrintEncodings(response, begin);
      });
}

// Token ids back to text (Decode): each argument one sequence of ids, separated by spaces or
// commas, or without arguments JSON lines with input_word_ids on stdin (as `tokenize --json`
// prints them: padding ids are special tokens, left out unless --keep_special_tokens).
int DecodeIds(const Connection& connection, v1::BertService::Stub* stub,
              const std::vector<std::string>& args) {
  v1::DecodeRequest request;
  for (const std::string& arg : args) {
    v1::TokenIds* sequence = request.add_inputs();
    for (absl::string_view field : absl::StrSplit(arg, absl::ByAnyChar(" ,"), absl::SkipEmpty())) {
      int32_t id;
      if (!absl::SimpleAtoi(field, &id)) {
        std::fprintf(stderr, "decode: \"%s\" is not a token id (in \"%s\")\n",
                     std::string(field).c_str(), arg.c_str());
        return 2;
      }
      sequence->add_ids(id);
    }
  }
  if (args.empty()) {
    for (v1::Input& input : ReadInputs({})) {
      if (!input.has_tokens()) {
        std::fprintf(stderr, "decode: each line of stdin needs input_word_ids\n");
        return 2;
      }
      *request.add_inputs()->mutable_ids() =
          std::move(*input.mutable_tokens()->mutable_input_word_ids());
    }
    if (request.inputs().empty()) {
      std::fprintf(stderr, "decode: no ids (arguments, or JSON lines on stdin)\n");
      return 2;
    }
  }
  request.set_keep_special_tokens(absl::GetFlag(FLAGS_keep_special_tokens));
  // The sequences go in calls of the server's size.
  return SendInCalls(connection, stub, MessageBytes(request.inputs()), std::nullopt,
                     [&](size_t begin, size_t count) {
                       v1::DecodeRequest call;
                       call.set_keep_special_tokens(request.keep_special_tokens());
                       for (size_t i = begin; i < begin + count; ++i) {
                         *call.add_inputs() = request.inputs(static_cast<int>(i));
                       }
                       grpc::ClientContext context;
                       Prepare(connection, &context);
                       v1::DecodeResponse response;
                       const grpc::Status status = stub->Decode(&context, call, &response);
                       if (!status.ok()) return status;
                       if (static_cast<size_t>(response.texts_size()) != count) {
                         return grpc::Status(
                             grpc::StatusCode::INTERNAL,
                             absl::StrCat("the server answered ", response.texts_size(),
                                          " texts for ", count, " sequences"));
                       }
                       for (const std::string& text : response.texts()) {
                         if (absl::GetFlag(FLAGS_json)) {
                           std::printf("%s\n", json({{"text", text}}).dump().c_str());
                         } else {
                           std::printf("%s\n", text.c_str());
                         }
                       }
                       return status;
                     });
}

// Rerank's answer for all of `request`'s texts, sent in calls of the server's size: each
// call ranks its own texts, and their rankings are merged (each score is the text's own, so
// they compare across calls), best first, top_n kept. 0, or the exit status (the error
// printed).
int CallRerank(const Connection& connection, v1::BertService::Stub* stub,
               const v1::RerankRequest& request, v1::RerankResponse* response) {
  // The server pairs the query with each text: each text costs the query's bytes too.
  std::vector<size_t> bytes;
  for (const std::string& text : request.texts()) {
    bytes.push_back(text.size() + request.query().size());
  }
  // The calls go in text order, so that equal scores stay in text order below, as the server
  // orders them.
  const int code = SendInCalls(
      connection, stub, std::move(bytes), std::nullopt, [&](size_t begin, size_t count) {
        v1::RerankRequest call = request;
        call.clear_texts();
        for (size_t i = begin; i < begin + count; ++i) *call.add_texts() = request.texts(i);
        grpc::ClientContext context;
        Prepare(connection, &context);
        v1::RerankResponse answer;
        const grpc::Status status = stub->Rerank(&context, call, &answer);
        if (!status.ok()) return status;
        response->set_score_function(answer.score_function());
        for (v1::RankedText& ranked : *answer.mutable_ranked()) {
          if (ranked.index() >= count) {
            return grpc::Status(
                grpc::StatusCode::INTERNAL,
                absl::StrCat("the answer ranks text ", ranked.index(), " of ", count));
          }
          ranked.set_index(static_cast<uint32_t>(begin + ranked.index()));
          *response->add_ranked() = std::move(ranked);
        }
        return status;
      });
  if (code != 0) return code;
  // Best first, a NaN score last (as the server ranks them); top_n of all.
  auto* ranked = response->mutable_ranked();
  std::stable_sort(
      ranked->begin(), ranked->end(), [](const v1::RankedText& a, const v1::RankedText& b) {
        return a.score() > b.score() || (!std::isnan(a.score()) && std::isnan(b.score()));
      });
  if (request.top_n() > 0 && static_cast<uint32_t>(ranked->size()) > request.top_n()) {
    ranked->DeleteSubrange(static_cast<int>(request.top_n()),
                           ranked->size() - static_cast<int>(request.top_n()));
  }
  return 0;
}

// The texts best first as the model scores them against the query (Rerank).
int Rerank(const Connection& connection, v1::BertService::Stub* stub,
           const std::vector<std::string>& args) {
  if (args.empty() || absl::GetFlag(FLAGS_pair)) {
    std::fprintf(stderr,
                 "rerank takes a query, then the texts to rank (or none: JSON lines "
                 "on stdin); not --pair\n");
    return 2;
  }
  v1::RerankRequest request;
  request.set_query(args[0]);
  if (args.size() > 1) {
    for (size_t i = 1; i < args.size(); ++i) request.add_texts(args[i]);
  } else {
    for (v1::Input& input : ReadInputs({})) {
      if (!input.has_text() || input.text().has_text_b()) {
        std::fprintf(stderr,
                     "rerank: each line of stdin is one text (a JSON string, or {\"text_a\": "
                     "...} without text_b)\n");
        return 2;
      }
      request.add_texts(std::move(*input.mutable_text()->mutable_text_a()));
    }
    if (request.texts().empty()) {
      std::fprintf(stderr, "rerank: no texts to rank (arguments after the query, or stdin)\n");
      return 2;
    }
  }
  const int seq_length = absl::GetFlag(FLAGS_seq_length);
  const int top_n = absl::GetFlag(FLAGS_top_n);
  if (seq_length < 0 || top_n < 0) {
    std::fprintf(stderr, "seq_length and top_n must be >= 0\n");
    return 2;
  }
  request.set_seq_length(seq_length);  // 0: the classifier's
  request.set_top_n(top_n);
  request.set_raw_scores(absl::GetFlag(FLAGS_raw_scores));
  if (const std::string flag = absl::GetFlag(FLAGS_truncation); !flag.empty()) {
    const absl::StatusOr<v1::Truncation> truncation = ParseTruncation(flag);
    if (!truncation.ok()) {
      std::fprintf(stderr, "%s\n", std::string(truncation.status().message()).c_str());
      return 2;
    }
    request.set_truncation(*truncation);  // else the server's: longest_first
  }
  v1::RerankResponse response;
  if (const int code = CallRerank(connection, stub, request, &response); code != 0) return code;
  const bool as_json = absl::GetFlag(FLAGS_json);
  if (!as_json) {
    const std::string& function = response.score_function();
    std::printf("Ranked %d of %d texts (scores: %s)\n", response.ranked_size(),
                request.texts_size(),
                function == "none" ? "the classifier's logits" : function.c_str());
  }
  for (int rank = 0; rank < response.ranked_size(); ++rank) {
    const v1::RankedText& r = response.ranked(rank);
    if (r.index() >= static_cast<uint32_t>(request.texts_size())) {
      std::fprintf(stderr, "error: the answer ranks text %u of %d\n", r.index(),
                   request.texts_size());
      return 1;
    }
    const std::string& text = request.texts(static_cast<int>(r.index()));
    if (as_json) {
      json j = {{"index", r.index()},
                {"score", r.score()},
                {"text", text},
                {"num_tokens", r.num_tokens()},
                {"truncated", r.truncated()}};
      std::printf("%s\n", j.dump().c_str());
      continue;
    }
    // One line each: a text's line breaks as \n.
    std::printf("%3d. [%u] %.6g%s  %s\n", rank + 1, r.index(), r.score(),
                r.truncated() ? " (truncated)" : "",
                absl::StrReplaceAll(text, {{"\n", "\\n"}, {"\r", "\\r"}}).c_str());
  }
  return 0;
}

// Which tokens continue a word (entities.h, ContinuesWord), from a Tokenize call with the
// same texts and length as `embed`: the one thing the word strategies need that Embed does not
// return (the tokens' vocabulary strings). Each text's offsets must be those of `results`
// (else INTERNAL).
grpc::Status WordContinuations(const Connection& connection, v1::BertService::Stub* stub,
                               const v1::EmbedRequest& embed,
                               const google::protobuf::RepeatedPtrField<v1::EmbedResult>& results,
                               std::vector<std::vector<bool>>* continues) {
  v1::TokenizeRequest request;
  for (const v1::Input& input : embed.inputs()) *request.add_inputs() = input.text();
  request.set_seq_length(embed.seq_length());
  request.set_truncation(embed.truncation());
  grpc::ClientContext context;
  Prepare(connection, &context);
  v1::TokenizeResponse response;
  if (const grpc::Status status = stub->Tokenize(&context, request, &response); !status.ok()) {
    return status;
  }
  if (response.encodings_size() != results.size()) {
    return grpc::Status(grpc::StatusCode::INTERNAL,
                        absl::StrCat("Tokenize answered ", response.encodings_size(),
                                     " encodings for ", results.size(), " texts"));
  }
  continues->assign(results.size(), {});
  for (int i = 0; i < results.size(); ++i) {
    const v1::Encoding& e = response.encodings(i);
    const v1::EmbedResult& r = results[i];
    if (!std::equal(e.token_starts().begin(), e.token_starts().end(), r.token_starts().begin(),
                    r.token_starts().end()) ||
        !std::equal(e.token_ends().begin(), e.token_ends().end(), r.token_ends().begin(),
                    r.token_ends().end()) ||
        e.tokens_size() != e.token_starts_size()) {
      return grpc::Status(grpc::StatusCode::INTERNAL,
                          absl::StrCat("text ", i, ": Tokenize and Embed gave different tokens"));
    }
    const std::string& text = embed.inputs(i).text().text_a();
    for (int k = 0; k < e.tokens_size(); ++k) {
      const uint32_t start = e.token_starts(k), end = e.token_ends(k);
      (*continues)[i].push_back(start < end && end <= text.size() &&
                                ContinuesWord(e.tokens(k),
                                              absl::string_view(text).substr(start, end - start),
                                              e.tokens(k) == "[UNK]"));
    }
  }
  return grpc::Status::OK;
}

// One call of `ner`: the entities of `request`'s texts, whose first is the command's `first`,
// printed; the status of the calls it made.
grpc::Status NerCall(const Connection& connection, v1::BertService::Stub* stub,
                     const v1::EmbedRequest& request, size_t first,
                     const std::vector<std::string>& labels, Aggregation aggregation) {
  v1::EmbedResponse response;
  if (grpc::Status status = EmbedCall(connection, stub, request, &response); !status.ok()) {
    return status;
  }
  std::vector<std::vector<bool>> continues(response.results_size());
  if (aggregation != Aggregation::kSimple) {
    grpc::Status status =
        WordContinuations(connection, stub, request, response.results(), &continues);
    if (!status.ok()) return status;
  }
  for (int n = 0; n < response.results_size(); ++n) {
    const size_t i = first + n;
    const v1::EmbedResult& r = response.results(n);
    const std::string& text = request.inputs(n).text().text_a();
    const std::vector<float> logits = Decode(r.token_logits());
    const size_t width = labels.size();
    std::vector<TaggedToken> tokens;
    for (int k = 0; k < r.token_starts_size() && k < r.token_ends_size(); ++k) {
      const uint32_t start = r.token_starts(k);
      const uint32_t end = r.token_ends(k);
      // [CLS] and [SEP] have no text; a span outside the text would be a server's bug.
      if (start >= end || end > text.size() || (k + 1) * width > logits.size()) continue;
      tokens.push_back({start, end, absl::MakeConstSpan(logits.data() + k * width, width),
                        static_cast<size_t>(k) < continues[n].size() && continues[n][k]});
    }
    const std::vector<Entity> entities = GroupEntities(tokens, labels, aggregation);
    if (absl::GetFlag(FLAGS_json)) {
      json list = json::array();
      for (const Entity& e : entities) {
        list.push_back({{"entity_group", e.group},
                        {"score", e.score},
                        {"word", text.substr(e.start, e.end - e.start)},
                        {"start", e.start},
                        {"end", e.end}});
      }
      json j = {{"index", i},
                {"entities", std::move(list)},
                {"num_tokens", r.num_tokens()},
                {"truncated", r.truncated()}};
      std::printf("%s\n", j.dump(-1, ' ', false, json::error_handler_t::replace).c_str());
      continue;
    }
    std::printf("[%zu] %zu entities%s\n", i, entities.size(), r.truncated() ? " (truncated)" : "");
    for (const Entity& e : entities) {
      std::printf(
          "    %-8s %.4f  [%u, %u)  %s\n", e.group.c_str(), e.score, e.start, e.end,
          absl::StrReplaceAll(text.substr(e.start, e.end - e.start), {{"\n", "\\n"}, {"\r", "\\r"}})
              .c_str());
    }
  }
  return grpc::Status::OK;
}

// Named entities in each text, from a token classifier (HEAD_TOKEN_LOGITS with the tokens'
// offsets), grouped as Hugging Face's token-classification pipeline does with the
// aggregation_strategy --aggregation names (entities.h).
int Ner(const Connection& connection, v1::BertService::Stub* stub,
        const std::vector<std::string>& args) {
  const std::optional<Aggregation> aggregation = ParseAggregation(absl::GetFlag(FLAGS_aggregation));
  if (!aggregation) {
    std::fprintf(stderr, "--aggregation must be simple, first, average or max\n");
    return 2;
  }
  std::vector<v1::Input> inputs = ReadInputs(args);
  for (const v1::Input& input : inputs) {
    if (!input.has_text() || input.text().has_text_b()) {
      std::fprintf(stderr, "ner takes single texts\n");
      return 2;
    }
  }
  if (inputs.empty()) {
    std::fprintf(stderr, "ner: no texts (arguments, or JSON lines on stdin)\n");
    return 2;
  }
  v1::EmbedRequest options;  // the texts go in calls of the server's size
  int seq_length;
  v1::Truncation truncation;
  if (!LengthAndTruncationFlags(&seq_length, &truncation)) return 2;
  v1::ModelInfo info;
  {
    grpc::ClientContext context;
    Prepare(connection, &context);
    grpc::Status status = stub->GetModelInfo(&context, v1::GetModelInfoRequest(), &info);
    if (!status.ok()) return Fail(status);
  }
  if (!info.has_classifier() || !info.classifier().per_token()) {
    std::fprintf(stderr,
                 "error: the model has no token classifier (ModelInfo.classifier): serve a "
                 "BertForTokenClassification checkpoint for ner\n");
    return 1;
  }
  // The length the model's tokenizer truncates to, unless given.
  options.set_seq_length(seq_length > 0 ? seq_length : info.classifier().max_seq_length());
  options.set_truncation(truncation);
  options.add_heads(v1::HEAD_TOKEN_LOGITS);
  options.set_padding(v1::PADDING_TRIM);
  options.set_return_offsets(true);
  const std::vector<std::string> labels(info.classifier().labels().begin(),
                                        info.classifier().labels().end());
  return SendInCalls(connection, stub, MessageBytes(inputs), info.limits(),
                     [&](size_t begin, size_t count) {
                       v1::EmbedRequest request = options;
                       for (size_t i = begin; i < begin + count; ++i) {
                         *request.add_inputs() = inputs[i];
                       }
                       return NerCall(connection, stub, request, begin, labels, *aggregation);
                     });
}

}  // namespace
}  // namespace bert

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "bert_client --server=HOST:PORT <health|info|embed|tokenize|decode|rerank|ner> [texts...]\n"
      "  Texts as arguments (\"A ||| B\" is a pair) or JSON lines on stdin; rerank: the query,\n"
      "  then the texts to rank; decode: sequences of token ids (\"101 7592 102\").");
  bert::ShowClientFlagsInHelp();
  std::vector<char*> rest = absl::ParseCommandLine(argc, argv);
  if (rest.size() < 2) {
    std::fprintf(stderr, "usage: %s\n", absl::ProgramUsageMessage().data());
    return 2;
  }
  const std::string command = rest[1];
  std::vector<std::string> args(rest.begin() + 2, rest.end());
  absl::StatusOr<bert::Connection> connection =
      bert::Connection::Create(bert::ConnectionOptionsFromFlags());
  if (!connection.ok()) {
    std::fprintf(stderr, "%s\n", std::string(connection.status().message()).c_str());
    return 2;
  }
  if (command == "health") return bert::Health(*connection);
  auto stub = bert::v1::BertService::NewStub(connection->NewChannel());
  if (command == "info") return bert::Info(*connection, stub.get());
  if (command == "embed") return bert::Embed(*connection, stub.get(), args);
  if (command == "tokenize") return bert::Tokenize(*connection, stub.get(), args);
  if (command == "decode") return bert::DecodeIds(*connection, stub.get(), args);
  if (command == "rerank") return bert::Rerank(*connection, stub.get(), args);
  if (command == "ner") return bert::Ner(*connection, stub.get(), args);
  std::fprintf(stderr, "unknown command %s (health, info, embed, tokenize, decode, rerank, ner)\n",
               command.c_str());
  return 2;
}
