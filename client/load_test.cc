// The load tester's parts: workload, statistics, the /metrics reader, and the runner
// against an in-process BertService whose speed the test controls.
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "client/connection.h"
#include "client/load_runner.h"
#include "client/load_stats.h"
#include "client/load_workload.h"
#include "client/metrics_scrape.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "gtest/gtest.h"
#include "server/text/tokenizer.h"

namespace bert {
namespace {

using std::chrono::milliseconds;

std::string DataPath(const std::string& name) {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  const char* workspace = std::getenv("TEST_WORKSPACE");
  if (srcdir != nullptr && workspace != nullptr) {
    return std::string(srcdir) + "/" + workspace + "/tests/data/" + name;
  }
  return "tests/data/" + name;
}

// ---- Workload ----

TEST(LengthDistribution, ParsesAndRejects) {
  absl::StatusOr<LengthDistribution> fixed = ParseLengthDistribution("fixed:20");
  ASSERT_TRUE(fixed.ok()) << fixed.status();
  EXPECT_EQ(fixed->kind, LengthDistribution::Kind::kFixed);
  EXPECT_EQ(fixed->mean, 20);
  absl::StatusOr<LengthDistribution> lognormal = ParseLengthDistribution("lognormal:36:128:0.8");
  ASSERT_TRUE(lognormal.ok()) << lognormal.status();
  EXPECT_EQ(lognormal->kind, LengthDistribution::Kind::kLogNormal);
  EXPECT_EQ(lognormal->max, 128);
  EXPECT_DOUBLE_EQ(lognormal->sigma, 0.8);
  for (const char* bad :
       {"", "fixed", "fixed:x", "fixed:2", "uniform:3:9", "lognormal:36", "lognormal:36:20",
        "lognormal:36:128:0", "lognormal:36:128:x", "fixed:1000000"}) {
    EXPECT_EQ(ParseLengthDistribution(bad).status().code(), absl::StatusCode::kInvalidArgument)
        << bad;
  }
}

TEST(LengthDistribution, LogNormalHasItsMeanAndStaysInRange) {
  const LengthDistribution dist = *ParseLengthDistribution("lognormal:36:128");
  std::mt19937_64 rng(7);
  const std::vector<int> lengths = SampleLengths(dist, 200000, &rng);
  double sum = 0;
  int clipped = 0;
  for (int n : lengths) {
    ASSERT_GE(n, 3);
    ASSERT_LE(n, 128);
    sum += n;
    clipped += n == 128;
  }
  // Clipping at 128 takes ~0.3 tokens off the mean of 36.
  EXPECT_NEAR(sum / lengths.size(), 36.0, 0.7);
  EXPECT_GT(clipped, 0);
  EXPECT_GT(*std::max_element(lengths.begin(), lengths.end()),
            *std::min_element(lengths.begin(), lengths.end()) + 50);
}

TEST(SyntheticText, EveryWordIsOneTokenOfBothVocabularies) {
  for (const char* vocab : {"bert_uncased_vocab.txt", "tiny_vocab_1024.txt"}) {
    auto tokenizer = BertTokenizer::Load(DataPath(vocab), BertTokenizer::Options());
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    for (const char* word : SyntheticWords()) {
      std::vector<int32_t> ids;
      ASSERT_TRUE((*tokenizer)->Tokenize(word, &ids).ok());
      ASSERT_EQ(ids.size(), 1u) << word << " in " << vocab;
      EXPECT_NE(ids[0], (*tokenizer)->unk_id()) << word << " in " << vocab;
    }
    // So a synthetic input of length L encodes to exactly L tokens with [CLS] and [SEP].
    const LengthDistribution dist = *ParseLengthDistribution("lognormal:20:64");
    for (const v1::Input& input : SyntheticInputs(dist, 50, 3)) {
      std::vector<int32_t> ids;
      ASSERT_TRUE((*tokenizer)->Tokenize(input.text().text_a(), &ids).ok());
      const std::string& text = input.text().text_a();
      EXPECT_EQ(ids.size(), static_cast<size_t>(std::count(text.begin(), text.end(), ' ') + 1));
    }
  }
  EXPECT_GT(SyntheticWords().size(), 200u);
}

TEST(SyntheticInputs, SameSeedSameTexts) {
  const LengthDistribution dist = *ParseLengthDistribution("fixed:10");
  const std::vector<v1::Input> a = SyntheticInputs(dist, 20, 5);
  const std::vector<v1::Input> b = SyntheticInputs(dist, 20, 5);
  const std::vector<v1::Input> c = SyntheticInputs(dist, 20, 6);
  int differ = 0;
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(a[i].text().text_a(), b[i].text().text_a());
    differ += a[i].text().text_a() != c[i].text().text_a();
    const std::string& text = a[i].text().text_a();
    EXPECT_EQ(std::count(text.begin(), text.end(), ' '), 7);  // 8 words + [CLS] + [SEP]
  }
  EXPECT_GT(differ, 15);
}

TEST(MakeRequests, TakesThePoolInOrderAndWraps) {
  std::vector<v1::Input> pool(5);
  for (int i = 0; i < 5; ++i) pool[i].mutable_text()->set_text_a(std::to_string(i));
  v1::EmbedRequest options;
  options.add_heads(v1::HEAD_MEAN_POOLED);
  options.set_seq_length(64);
  *options.add_inputs() = pool[0];  // ignored
  const std::vector<v1::EmbedRequest> requests = MakeRequests(pool, 2, 4, options);
  ASSERT_EQ(requests.size(), 4u);
  const char* expected[4][2] = {{"0", "1"}, {"2", "3"}, {"4", "0"}, {"1", "2"}};
  for (int r = 0; r < 4; ++r) {
    ASSERT_EQ(requests[r].inputs_size(), 2);
    EXPECT_EQ(requests[r].inputs(0).text().text_a(), expected[r][0]);
    EXPECT_EQ(requests[r].inputs(1).text().text_a(), expected[r][1]);
    EXPECT_EQ(requests[r].seq_length(), 64u);
    ASSERT_EQ(requests[r].heads_size(), 1);
    EXPECT_EQ(requests[r].request_id(), "load-" + std::to_string(r));
  }
}

TEST(MakeRerankRequests, AQueryThenItsTextsFromThePoolInOrder) {
  std::vector<v1::Input> pool(5);
  for (int i = 0; i < 5; ++i) pool[i].mutable_text()->set_text_a(std::to_string(i));
  v1::RerankRequest options;
  options.set_seq_length(64);
  options.set_query("ignored");
  options.add_texts("ignored");
  const std::vector<v1::RerankRequest> requests = MakeRerankRequests(pool, 2, 3, options);
  ASSERT_EQ(requests.size(), 3u);
  const char* expected[3][3] = {{"0", "1", "2"}, {"3", "4", "0"}, {"1", "2", "3"}};
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(requests[r].query(), expected[r][0]);
    ASSERT_EQ(requests[r].texts_size(), 2);
    EXPECT_EQ(requests[r].texts(0), expected[r][1]);
    EXPECT_EQ(requests[r].texts(1), expected[r][2]);
    EXPECT_EQ(requests[r].seq_length(), 64u);
    EXPECT_EQ(requests[r].request_id(), "load-" + std::to_string(r));
  }
}

// ---- Statistics ----

int64_t Ms(double ms) { return static_cast<int64_t>(ms * 1e6); }

TEST(LatencyHistogram, NearestRankPercentiles) {
  LatencyHistogram h;
  for (int i = 100; i >= 1; --i) h.Add(Ms(i));
  const LatencySummary s = h.Summary();
  EXPECT_EQ(s.count, 100);
  EXPECT_DOUBLE_EQ(s.mean, 50.5);
  // Each value has a bucket of its own here, so the percentiles are exact.
  EXPECT_DOUBLE_EQ(s.p50, 50);
  EXPECT_DOUBLE_EQ(s.p90, 90);
  EXPECT_DOUBLE_EQ(s.p95, 95);
  EXPECT_DOUBLE_EQ(s.p99, 99);
  EXPECT_DOUBLE_EQ(s.p999, 100);
  EXPECT_DOUBLE_EQ(s.max, 100);
  EXPECT_EQ(LatencyHistogram().Summary().count, 0);
  LatencyHistogram one;
  one.Add(Ms(4));
  EXPECT_DOUBLE_EQ(one.Summary().p50, 4.0);
}

TEST(LatencyHistogram, SmallDurationsAreExactAndNegativeOnesCountAsZero) {
  LatencyHistogram h;
  for (int64_t ns = 0; ns < 2048; ++ns) h.Add(ns);
  h.Add(-5);
  const LatencySummary s = h.Summary();
  EXPECT_EQ(s.count, 2049);
  // Nearest rank over 0, 0, 1, 2, ..., 2047.
  EXPECT_DOUBLE_EQ(s.p50, 1023 * 1e-6);
  EXPECT_DOUBLE_EQ(s.p90, 1843 * 1e-6);
  EXPECT_DOUBLE_EQ(s.max, 2047 * 1e-6);
}

TEST(LatencyHistogram, PercentilesAreWithinATenthOfAPercentOfTheExactOnes) {
  // Log-uniform from 1 us to 60 s: every bucket width the histogram has in that range.
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> log10_ns(3, std::log10(60e9));
  std::vector<int64_t> values;
  LatencyHistogram h;
  double sum = 0;
  for (int i = 0; i < 200000; ++i) {
    const int64_t ns = static_cast<int64_t>(std::pow(10, log10_ns(rng)));
    values.push_back(ns);
    h.Add(ns);
    sum += ns;
  }
  std::sort(values.begin(), values.end());
  const auto exact_ms = [&](double q) {
    const size_t rank = static_cast<size_t>(std::ceil(q * values.size()));
    return values[std::max<size_t>(rank, 1) - 1] * 1e-6;
  };
  const LatencySummary s = h.Summary();
  EXPECT_EQ(s.count, 200000);
  EXPECT_NEAR(s.mean, sum / values.size() * 1e-6, 1e-9 * s.mean);
  EXPECT_DOUBLE_EQ(s.max, values.back() * 1e-6);
  for (const auto& [q, got] :
       {std::pair{0.5, s.p50}, {0.9, s.p90}, {0.99, s.p99}, {0.999, s.p999}}) {
    EXPECT_NEAR(got, exact_ms(q), exact_ms(q) / 1024) << "q " << q;
  }
  // Its memory is bounded by the range of the durations, not their number.
  EXPECT_LE(h.memory_bytes(), 512u << 10);
  h.Add(std::numeric_limits<int64_t>::max());
  EXPECT_LE(h.memory_bytes(), 1u << 20);
}

CallRecord Call(int64_t intended_ms, int64_t sent_ms, int64_t done_ms, int code = 0) {
  CallRecord c;
  c.intended_ns = intended_ms * 1000000;
  c.sent_ns = sent_ms < 0 ? -1 : sent_ms * 1000000;
  c.done_ns = done_ms * 1000000;
  c.code = code;
  c.inputs = 2;
  c.tokens = 10;
  c.server_queue_us = 1000;
  c.server_inference_us = 3000;
  return c;
}

TEST(SummarizeStep, CountsByIntentLatencyFromIntentThroughputByArrival) {
  // Window [1000, 2000) ms.
  const std::vector<CallRecord> calls = {
      Call(500, 500, 1100),       // warm-up call: not counted, but it arrived in the window
      Call(1000, 1000, 1010),     // in: 10 ms
      Call(1100, 1300, 1400),     // in: sent 200 ms late: latency 300, service 100
      Call(1900, 1900, 2500),     // in, arrives after the window: latency 600
      Call(1950, -1, 1990, 4),    // in, never sent: DEADLINE_EXCEEDED
      Call(1500, 1500, 1600, 8),  // in, RESOURCE_EXHAUSTED
      Call(2000, 2000, 2010),     // after the window
  };
  const StepSummary s = SummarizeStep(calls, 1000 * 1000000LL, 2000 * 1000000LL);
  EXPECT_DOUBLE_EQ(s.window_s, 1.0);
  EXPECT_EQ(s.calls, 5);
  EXPECT_EQ(s.ok, 3);
  EXPECT_EQ(s.not_sent, 1);
  EXPECT_EQ((std::map<int, int64_t>(s.errors)), (std::map<int, int64_t>{{4, 1}, {8, 1}}));
  // Arrived OK in the window: the warm-up call and the two in-window ones (not the 2500).
  EXPECT_DOUBLE_EQ(s.requests_per_s, 3);
  EXPECT_DOUBLE_EQ(s.sequences_per_s, 6);
  EXPECT_DOUBLE_EQ(s.tokens_per_s, 30);
  EXPECT_EQ(s.latency.count, 3);
  EXPECT_DOUBLE_EQ(s.latency.p50, 300);
  EXPECT_DOUBLE_EQ(s.latency.max, 600);
  // With the failed calls: 10, 40, 100, 300, 600 ms.
  EXPECT_EQ(s.latency_all.count, 5);
  EXPECT_DOUBLE_EQ(s.latency_all.p50, 100);
  EXPECT_DOUBLE_EQ(s.service.max, 600);
  EXPECT_DOUBLE_EQ(s.service.p50, 100);
  EXPECT_DOUBLE_EQ(s.send_lag.max, 200);
  EXPECT_EQ(s.send_lag.count, 4);  // the unsent call has no lag
  EXPECT_DOUBLE_EQ(s.server_inference.p50, 3);
  EXPECT_DOUBLE_EQ(s.server_queue.mean, 1);
}

TEST(StepAccumulator, RecodeMovesFailedCallsOfTheWindowToAnotherStatus) {
  StepAccumulator a(0, Ms(1000));
  for (int i = 0; i < 3; ++i) a.Add(Call(100 + i, 100 + i, 200, /*UNAVAILABLE*/ 14));
  a.Add(Call(300, 300, 310));
  ASSERT_TRUE(a.Recode(14, /*ABORTED*/ 10, 2).ok());
  StepSummary s = a.Summary();
  EXPECT_EQ(s.calls, 4);
  EXPECT_EQ(s.ok, 1);
  EXPECT_EQ((std::map<int, int64_t>(s.errors)), (std::map<int, int64_t>{{10, 2}, {14, 1}}));
  ASSERT_TRUE(a.Recode(14, 10, 1).ok());
  ASSERT_TRUE(a.Recode(14, 10, 0).ok());
  s = a.Summary();
  EXPECT_EQ((std::map<int, int64_t>(s.errors)), (std::map<int, int64_t>{{10, 3}}));
}

TEST(StepAccumulator, KeepsTheFirstMessageOfEachCodeAndTheFailedCallsLatency) {
  StepAccumulator a(0, Ms(1000));
  a.Add(Call(100, 100, 110, /*INVALID_ARGUMENT*/ 3), "layers[0]: 99 is outside [-6, 6)");
  a.Add(Call(120, 120, 150, 3), "another message");
  a.Add(Call(130, 130, 140, /*UNAVAILABLE*/ 14), std::string(1000, 'x'));
  a.Add(Call(200, 200, 210), "an OK call's message is not kept");
  a.Add(Call(2000, 2000, 2010, /*INTERNAL*/ 13), "outside the window");
  StepSummary s = a.Summary();
  EXPECT_EQ(s.error_messages.size(), 2u);
  EXPECT_EQ(s.error_messages.at(3), "layers[0]: 99 is outside [-6, 6)");
  EXPECT_EQ(s.error_messages.at(14), std::string(kMaxErrorMessageBytes, 'x') + "...");
  // Failed calls alone: 10, 30 and 10 ms.
  EXPECT_EQ(s.failed.count, 3);
  EXPECT_DOUBLE_EQ(s.failed.max, 30);
  EXPECT_DOUBLE_EQ(s.failed.p50, 10);
  // A recode moves the calls; the new code takes the message it is given, the old one keeps
  // its own while calls remain filed under it.
  ASSERT_TRUE(a.Recode(14, /*ABORTED*/ 10, 1, "the stream was aborted").ok());
  s = a.Summary();
  EXPECT_EQ(s.error_messages.count(14), 0u);
  EXPECT_EQ(s.error_messages.at(10), "the stream was aborted");
  ASSERT_TRUE(a.Recode(3, 10, 1, "not kept: ABORTED has one").ok());
  s = a.Summary();
  EXPECT_EQ(s.error_messages.at(10), "the stream was aborted");
  EXPECT_EQ(s.error_messages.at(3), "layers[0]: 99 is outside [-6, 6)");
}

TEST(StepAccumulator, CountsLateSendsAndThoseHeldByMaxOutstanding) {
  StepAccumulator a(0, Ms(1000));
  a.Add(Call(100, 100, 110));  // on time
  CallRecord slightly = Call(100, 100, 110);
  slightly.sent_ns += kLateSendNs;  // exactly 1 ms late: not late
  a.Add(slightly);
  a.Add(Call(200, 205, 210));  // 5 ms late, by the sender
  CallRecord held = Call(300, 350, 360);
  held.held = true;  // 50 ms late, waiting for max_outstanding
  a.Add(held);
  a.Add(Call(400, -1, 400, /*DEADLINE_EXCEEDED*/ 4));  // never sent: no send lag
  const StepSummary s = a.Summary();
  EXPECT_EQ(s.send_lag.count, 4);
  EXPECT_EQ(s.late_sends, 2);
  EXPECT_EQ(s.held_sends, 1);
}

TEST(StepAccumulator, RecodeOfMoreCallsThanWereFiledIsAnErrorAndMovesNone) {
  StepAccumulator a(0, Ms(1000));
  for (int i = 0; i < 2; ++i) a.Add(Call(100 + i, 100 + i, 200, /*UNAVAILABLE*/ 14));
  a.Add(Call(300, 300, 310, /*ABORTED*/ 10));
  const std::map<int, int64_t> before{{10, 1}, {14, 2}};
  for (const auto& [from, n] : std::vector<std::pair<int, int64_t>>{{14, 3}, {8, 1}, {14, -1}}) {
    absl::Status status = a.Recode(from, 10, n);
    EXPECT_EQ(status.code(), absl::StatusCode::kInternal) << from << " " << n;
    EXPECT_EQ((std::map<int, int64_t>(a.Summary().errors)), before) << from << " " << n;
  }
}

// ---- /metrics ----

TEST(SumOfSamples, SumsSeriesOfExactlyThatName) {
  const std::string page =
      "# HELP bert_batch_size Sequences per batch\n"
      "# TYPE bert_batch_size histogram\n"
      "bert_batch_size_count 7\n"
      "bert_batch_size_sum 21.5 1700000000000\n"
      "bert_requests_total{method=\"Embed\",code=\"OK\"} 10\n"
      "bert_requests_total{method=\"Embed\",code=\"INVALID_ARGUMENT\"} 2\n"
      "bert_requests_total_extra 100\n";
  EXPECT_EQ(SumOfSamples(page, "bert_batch_size_count"), 7.0);
  EXPECT_EQ(SumOfSamples(page, "bert_batch_size_sum"), 21.5);
  EXPECT_EQ(SumOfSamples(page, "bert_requests_total"), 12.0);
  EXPECT_FALSE(SumOfSamples(page, "bert_batch_size").has_value());
  EXPECT_FALSE(SumOfSamples(page, "bert_queue_depth").has_value());
}

// A one-shot HTTP server on 127.0.0.1 answering every connection with `answer`.
class FakeHttp {
 public:
  // trickle: after `answer`, send a byte every 50 ms until the client goes away.
  explicit FakeHttp(std::string answer, bool trickle = false)
      : answer_(std::move(answer)), trickle_(trickle) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    socklen_t size = sizeof(addr);
    getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &size);
    port_ = ntohs(addr.sin_port);
    EXPECT_EQ(listen(fd_, 4), 0);
    thread_ = std::thread([this] {
      const int client = accept(fd_, nullptr, nullptr);
      if (client < 0) return;
      char buffer[4096];
      std::string request;
      while (request.find("\r\n\r\n") == std::string::npos) {
        const ssize_t n = recv(client, buffer, sizeof(buffer), 0);
        if (n <= 0) break;
        request.append(buffer, n);
      }
      request_ = request;
      send(client, answer_.data(), answer_.size(), MSG_NOSIGNAL);
      while (trickle_ && send(client, "x", 1, MSG_NOSIGNAL) == 1) {
        std::this_thread::sleep_for(milliseconds(50));
      }
      close(client);
    });
  }
  ~FakeHttp() {
    shutdown(fd_, SHUT_RDWR);
    close(fd_);
    Join();
  }
  void Join() {
    if (thread_.joinable()) thread_.join();
  }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  // What the client sent; after Join().
  const std::string& request() const { return request_; }

 private:
  std::string answer_;
  bool trickle_ = false;
  int fd_ = -1;
  int port_ = 0;
  std::thread thread_;
  std::string request_;
};

TEST(FetchMetrics, ReadsTheBodyOfA200) {
  std::string request;
  {
    FakeHttp http("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nbert_queue_depth 3\n");
    absl::StatusOr<std::string> page = FetchMetrics(http.address(), milliseconds(5000));
    ASSERT_TRUE(page.ok()) << page.status();
    EXPECT_EQ(*page, "bert_queue_depth 3\n");
    http.Join();
    request = http.request();
  }
  EXPECT_EQ(request.rfind("GET /metrics HTTP/1.0\r\n", 0), 0u) << request;
}

TEST(FetchMetrics, ASlowServerCannotHoldItPastTheTimeout) {
  // Answers a byte at a time, forever: the whole fetch still ends at its timeout.
  FakeHttp http("HTTP/1.0 200 OK\r\n\r\n", /*trickle=*/true);
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<std::string> page = FetchMetrics(http.address(), milliseconds(500));
  EXPECT_EQ(page.status().code(), absl::StatusCode::kDeadlineExceeded) << page.status();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(3));
}

TEST(FetchMetrics, FailsClearly) {
  {
    FakeHttp http("HTTP/1.0 404 Not Found\r\n\r\nnothing");
    absl::StatusOr<std::string> page = FetchMetrics(http.address(), milliseconds(5000));
    EXPECT_EQ(page.status().code(), absl::StatusCode::kUnavailable);
    EXPECT_NE(page.status().message().find("404"), absl::string_view::npos) << page.status();
  }
  EXPECT_EQ(FetchMetrics("no-port", milliseconds(100)).status().code(),
            absl::StatusCode::kInvalidArgument);
  // A port nothing listens on (bound, never listening).
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  socklen_t size = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &size);
  const std::string closed = "127.0.0.1:" + std::to_string(ntohs(addr.sin_port));
  EXPECT_EQ(FetchMetrics(closed, milliseconds(2000)).status().code(),
            absl::StatusCode::kUnavailable);
  close(fd);
}

// ---- The runner against an in-process server ----

// Embed answers after `delay`, one call at a time when `serial` (a server of fixed
// capacity), or never (until the call is cancelled or its deadline passes) when `hang`.
// EmbedStream answers each message in turn after `delay`, with a RESOURCE_EXHAUSTED error
// for every `stream_error_every`-th message, and ends the stream with ABORTED after
// `stream_end_after` answers (0: never); with `hang` it answers nothing.
class FakeBertService final : public v1::BertService::Service {
 public:
  milliseconds delay{10};
  bool serial = false;
  bool hang = false;
  int stream_error_every = 0;
  int stream_end_after = 0;

  grpc::Status EmbedStream(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<v1::EmbedResponse, v1::EmbedRequest>* stream) override {
    v1::EmbedRequest request;
    if (hang) {  // reads nothing, answers nothing, until the client goes
      while (!context->IsCancelled()) std::this_thread::sleep_for(milliseconds(5));
      return grpc::Status(grpc::StatusCode::CANCELLED, "gone");
    }
    for (int n = 1; stream->Read(&request); ++n) {
      v1::EmbedResponse response;
      std::this_thread::sleep_for(delay);
      if (stream_error_every > 0 && n % stream_error_every == 0) {
        response.mutable_error()->set_code(static_cast<int>(grpc::StatusCode::RESOURCE_EXHAUSTED));
        response.mutable_error()->set_message("refused by the test");
      } else {
        Answer(request, &response);
      }
      response.set_request_id(request.request_id());
      if (!stream->Write(response)) break;
      if (stream_end_after > 0 && n >= stream_end_after) {
        return grpc::Status(grpc::StatusCode::ABORTED, "stream ended by the test");
      }
    }
    return grpc::Status::OK;
  }

  // Each text ranked, 7 tokens per pair.
  grpc::Status Rerank(grpc::ServerContext* context, const v1::RerankRequest* request,
                      v1::RerankResponse* response) override {
    std::this_thread::sleep_for(delay);
    for (int i = 0; i < request->texts_size(); ++i) {
      v1::RankedText* ranked = response->add_ranked();
      ranked->set_index(i);
      ranked->set_num_tokens(7);
    }
    response->mutable_timing()->set_inference_us(delay.count() * 1000);
    ++reranked_;
    return grpc::Status::OK;
  }

  grpc::Status Embed(grpc::ServerContext* context, const v1::EmbedRequest* request,
                     v1::EmbedResponse* response) override {
    const int now_open = ++open_;
    int seen = max_open_.load();
    while (now_open > seen && !max_open_.compare_exchange_weak(seen, now_open)) {
    }
    if (hang) {
      while (!context->IsCancelled()) std::this_thread::sleep_for(milliseconds(5));
      --open_;
      return grpc::Status(grpc::StatusCode::CANCELLED, "gone");
    }
    {
      absl::MutexLockMaybe serial_lock(serial ? &serial_mu_ : nullptr);
      std::this_thread::sleep_for(delay);
    }
    Answer(*request, response);
    --open_;
    return grpc::Status::OK;
  }

  int max_open() const { return max_open_; }
  int answered() const { return answered_; }
  int reranked() const { return reranked_; }

 private:
  // 5 tokens per input.
  void Answer(const v1::EmbedRequest& request, v1::EmbedResponse* response) {
    for (int i = 0; i < request.inputs_size(); ++i) response->add_results()->set_num_tokens(5);
    response->mutable_timing()->set_inference_us(delay.count() * 1000);
    ++answered_;
  }

  std::atomic<int> open_{0};
  std::atomic<int> max_open_{0};
  std::atomic<int> answered_{0};
  std::atomic<int> reranked_{0};
  absl::Mutex serial_mu_;
};

void ExpectSameLatencies(const LatencySummary& a, const LatencySummary& b) {
  EXPECT_EQ(a.count, b.count);
  EXPECT_DOUBLE_EQ(a.mean, b.mean);
  EXPECT_DOUBLE_EQ(a.p50, b.p50);
  EXPECT_DOUBLE_EQ(a.p99, b.p99);
  EXPECT_DOUBLE_EQ(a.max, b.max);
}

// The summary the runner built as calls finished; where the calls were kept, checked
// against one built from them after the step (streams' calls are re-coded in between).
StepSummary Summary(const StepResult& result) {
  const StepSummary& s = result.summary;
  if (!result.calls.empty()) {
    const StepSummary again =
        SummarizeStep(result.calls, result.window_begin_ns, result.window_end_ns);
    EXPECT_EQ(s.calls, again.calls);
    EXPECT_EQ(s.ok, again.ok);
    EXPECT_EQ(s.not_sent, again.not_sent);
    EXPECT_EQ((std::map<int, int64_t>(s.errors)), (std::map<int, int64_t>(again.errors)));
    EXPECT_DOUBLE_EQ(s.requests_per_s, again.requests_per_s);
    ExpectSameLatencies(s.latency, again.latency);
    ExpectSameLatencies(s.latency_all, again.latency_all);
    ExpectSameLatencies(s.service, again.service);
    ExpectSameLatencies(s.send_lag, again.send_lag);
    ExpectSameLatencies(s.server_inference, again.server_inference);
  }
  return s;
}

int64_t Failed(const StepSummary& s) {
  int64_t failed = 0;
  for (const auto& [code, count] : s.errors) failed += count;
  return failed;
}

std::vector<int64_t> SortedIntendedTimes(const StepResult& result) {
  std::vector<int64_t> intended;
  for (const CallRecord& c : result.calls) intended.push_back(c.intended_ns);
  std::sort(intended.begin(), intended.end());
  return intended;
}

LoadStep Closed(int concurrency) {
  LoadStep step;
  step.concurrency = concurrency;
  return step;
}

LoadStep Open(double rate, bool poisson) {
  LoadStep step;
  step.rate = rate;
  step.poisson = poisson;
  return step;
}

class LoadRunnerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ConnectionOptions options;
    options.server = "127.0.0.1:" + std::to_string(port);
    connection_ = std::make_unique<Connection>(*Connection::Create(options));
  }
  void TearDown() override { server_->Shutdown(); }

  // Keeps the calls (keep_calls_) so that the tests can look at each.
  LoadRunner MakeRunner(LoadOptions options, int channels = 2) {
    options.keep_calls = keep_calls_;
    std::vector<std::unique_ptr<v1::BertService::Stub>> stubs;
    for (int i = 0; i < channels; ++i) {
      stubs.push_back(v1::BertService::NewStub(connection_->NewChannel(i)));
    }
    const std::vector<v1::Input> pool = SyntheticInputs(*ParseLengthDistribution("fixed:8"), 8, 1);
    v1::EmbedRequest request_options;
    request_options.add_heads(v1::HEAD_POOLED);
    return LoadRunner(connection_.get(), std::move(stubs),
                      MakeRequests(pool, 2, 4, request_options), options);
  }

  FakeBertService service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<Connection> connection_;
  bool keep_calls_ = true;
};

TEST_F(LoadRunnerTest, RerankCallsCountTheirTextsAndRankedTokens) {
  LoadOptions options;
  options.warmup = milliseconds(100);
  options.duration = milliseconds(400);
  options.keep_calls = true;
  const auto make = [&](LoadOptions o) {
    std::vector<std::unique_ptr<v1::BertService::Stub>> stubs;
    stubs.push_back(v1::BertService::NewStub(connection_->NewChannel(0)));
    const std::vector<v1::Input> pool = SyntheticInputs(*ParseLengthDistribution("fixed:8"), 9, 1);
    return LoadRunner(connection_.get(), std::move(stubs),
                      MakeRerankRequests(pool, 3, 2, v1::RerankRequest()), o);
  };
  absl::StatusOr<StepResult> result = make(options).Run(Closed(2), nullptr);
  ASSERT_TRUE(result.ok()) << result.status();
  const StepSummary s = Summary(*result);
  EXPECT_TRUE(s.errors.empty());
  EXPECT_GT(s.ok, 10);
  EXPECT_EQ(service_.answered(), 0);  // no Embed call
  EXPECT_EQ(static_cast<int>(result->calls.size()), service_.reranked());
  EXPECT_DOUBLE_EQ(s.sequences_per_s, 3 * s.requests_per_s);  // three texts a call
  EXPECT_DOUBLE_EQ(s.tokens_per_s, 21 * s.requests_per_s);    // 7 tokens a ranked pair
  EXPECT_DOUBLE_EQ(s.server_inference.p50, 10.0);
  options.stream = true;
  EXPECT_EQ(make(options).Run(Closed(1), nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(LoadRunnerTest, WithoutKeepCallsOnlyTheSummaryIsReturned) {
  keep_calls_ = false;
  LoadOptions options;
  options.warmup = milliseconds(100);
  options.duration = milliseconds(400);
  absl::StatusOr<StepResult> result = MakeRunner(options).Run(Closed(2), nullptr);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_TRUE(result->calls.empty());
  const StepSummary& s = result->summary;
  EXPECT_TRUE(s.errors.empty());
  EXPECT_GT(s.ok, 10);                   // 2 in flight, 10 ms each, 0.4 s: ~80 on an idle machine
  EXPECT_LT(s.ok, service_.answered());  // the warm-up's calls are not in the window
  EXPECT_EQ(s.latency.count, s.ok);
  EXPECT_GE(s.latency.p50, 10.0);
  EXPECT_DOUBLE_EQ(s.server_inference.p50, 10.0);
  EXPECT_DOUBLE_EQ(s.tokens_per_s, 10 * s.requests_per_s);
}

TEST_F(LoadRunnerTest, ClosedLoopKeepsExactlyConcurrencyInFlight) {
  LoadOptions options;
  options.warmup = milliseconds(200);
  options.duration = milliseconds(800);
  LoadRunner runner = MakeRunner(options);
  std::vector<bool> edges;
  absl::Mutex edges_mu;
  absl::StatusOr<StepResult> result = runner.Run(Closed(3), [&](bool begin) {
    absl::MutexLock lock(&edges_mu);
    edges.push_back(begin);
  });
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(service_.max_open(), 3);
  EXPECT_EQ(edges, (std::vector<bool>{true, false}));
  const StepSummary s = Summary(*result);
  EXPECT_TRUE(s.errors.empty());
  EXPECT_GT(s.ok, 20);  // 3 in flight, 10 ms each, 0.8 s: ~240 on an idle machine
  EXPECT_EQ(static_cast<int>(result->calls.size()), service_.answered());
  EXPECT_DOUBLE_EQ(s.sequences_per_s, 2 * s.requests_per_s);
  EXPECT_DOUBLE_EQ(s.tokens_per_s, 10 * s.requests_per_s);
  EXPECT_GE(s.service.p50, 10.0);
  EXPECT_DOUBLE_EQ(s.server_inference.p50, 10.0);
  for (const CallRecord& c : result->calls) {
    EXPECT_LE(c.intended_ns, c.sent_ns);
    EXPECT_LT(c.sent_ns, c.done_ns);
    EXPECT_LT(c.intended_ns, result->window_end_ns);  // nothing sent for after the window
  }
}

TEST_F(LoadRunnerTest, OpenLoopSendsOnScheduleAndCountsTheBacklogInLatency) {
  // The server answers one call per 20 ms (50/s); the schedule offers 200/s, and the
  // client may keep only one call open, so it falls behind its schedule.
  service_.delay = milliseconds(20);
  service_.serial = true;
  LoadOptions options;
  options.warmup = milliseconds(0);
  options.duration = milliseconds(1000);
  options.max_outstanding = 1;
  absl::StatusOr<StepResult> result = MakeRunner(options).Run(Open(200, false), nullptr);
  ASSERT_TRUE(result.ok()) << result.status();
  const StepSummary s = Summary(*result);
  // Every scheduled call is accounted for: 200 intended, each answered (or timed out).
  EXPECT_EQ(s.calls, 200);
  EXPECT_EQ(s.ok + Failed(s), 200);
  EXPECT_EQ(service_.max_open(), 1);
  EXPECT_LE(s.requests_per_s, 55);  // the server's rate, not the offered one
  // The service time stays near 20 ms; the latency from the intended send grows with the
  // backlog (the last calls waited ~3 s to be sent).
  EXPECT_LT(s.service.p50, 200);
  EXPECT_GT(s.latency.p50, 1000);
  EXPECT_GT(s.latency.p50, 5 * s.service.p50);
  EXPECT_GT(s.send_lag.max, 2000);
  // Nearly every send was late, and it was the limit of one open call that held them.
  EXPECT_GT(s.late_sends, 150);
  EXPECT_GT(s.held_sends, s.late_sends / 2);
  EXPECT_EQ(result->stopped_ns, -1);
}

TEST_F(LoadRunnerTest, OpenLoopConstantRateKeepsItsSchedule) {
  service_.delay = milliseconds(1);
  LoadOptions options;
  options.warmup = milliseconds(100);
  options.duration = milliseconds(1000);
  absl::StatusOr<StepResult> result = MakeRunner(options).Run(Open(100, false), nullptr);
  ASSERT_TRUE(result.ok()) << result.status();
  const StepSummary s = Summary(*result);
  EXPECT_EQ(s.calls, 100);  // intended times 0, 10, 20, ... ms; 100 of them in the window
  EXPECT_TRUE(s.errors.empty());
  const std::vector<int64_t> intended = SortedIntendedTimes(*result);
  for (size_t i = 1; i < intended.size(); ++i) {
    EXPECT_NEAR(intended[i] - intended[i - 1], 10000000, 1);
  }
  // The sends kept to it: a sender seconds late would show here (loose bounds for a
  // loaded machine; the sleep alone is accurate to ~0.1 ms).
  EXPECT_LT(s.send_lag.p50, 5.0);
  EXPECT_LT(s.send_lag.max, 1000.0);
  EXPECT_EQ(s.held_sends, 0);  // nothing waited for max_outstanding (4,096)
}

TEST_F(LoadRunnerTest, DeadlinesCountFromTheIntendedSendTime) {
  // Calls take 400 ms, deadlines are 200 ms, one call in flight at a time at 100/s: each
  // call waits ~190 ms to be sent, then has only what is left of its 200 ms.
  service_.delay = milliseconds(400);
  LoadOptions options;
  options.warmup = milliseconds(0);
  options.duration = milliseconds(500);
  options.timeout = milliseconds(200);
  options.max_outstanding = 1;
  absl::StatusOr<StepResult> result = MakeRunner(options).Run(Open(100, false), nullptr);
  ASSERT_TRUE(result.ok()) << result.status();
  const StepSummary s = Summary(*result);
  EXPECT_EQ(s.calls, 50);
  EXPECT_EQ(s.ok, 0);
  EXPECT_EQ(s.errors.at(static_cast<int>(grpc::StatusCode::DEADLINE_EXCEEDED)), 50);
  int sent_late = 0;
  for (const CallRecord& c : result->calls) {
    // Ended at intended + 200 ms; a deadline from the actual send would give ~390 ms. gRPC's
    // timers work in whole milliseconds and may fire a little early (198.6 ms was seen in the
    // sanitized build), hence the 5 ms margin.
    EXPECT_GE(c.done_ns - c.intended_ns, 195000000);
    EXPECT_LT(c.done_ns - c.intended_ns, 300000000);
    sent_late += c.sent_ns < 0 || c.sent_ns - c.intended_ns > 100000000;
  }
  EXPECT_GT(sent_late, 25);
  EXPECT_EQ(s.latency_all.count, 50);
  EXPECT_GE(s.latency_all.p50, 195.0);
}

TEST_F(LoadRunnerTest, PoissonRateHasItsMean) {
  service_.delay = milliseconds(0);
  LoadOptions options;
  options.warmup = milliseconds(0);
  options.duration = milliseconds(1000);
  options.seed = 11;
  absl::StatusOr<StepResult> result = MakeRunner(options).Run(Open(400, true), nullptr);
  ASSERT_TRUE(result.ok()) << result.status();
  // Poisson(400): 400 +- 20 (1 sd); the seed fixes the draw.
  EXPECT_NEAR(static_cast<double>(result->calls.size()), 400, 80);
  const std::vector<int64_t> intended = SortedIntendedTimes(*result);
  std::set<int64_t> gaps;
  for (size_t i = 1; i < intended.size(); ++i) gaps.insert(intended[i] - intended[i - 1]);
  EXPECT_GT(gaps.size(), intended.size() / 2);  // not a constant schedule
}

TEST_F(LoadRunnerTest, CallsThatHangEndAtTheirDeadline) {
  service_.hang = true;
  LoadOptions options;
  options.warmup = milliseconds(0);
  options.duration = milliseconds(300);
  options.timeout = milliseconds(400);
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<StepResult> result = MakeRunner(options).Run(Closed(2), nullptr);
  const auto took = std::chrono::steady_clock::now() - start;
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_LT(took, std::chrono::seconds(5));
  ASSERT_EQ(result->calls.size(), 2u);  // two open until the window ended; none after
  for (const CallRecord& c : result->calls) {
    EXPECT_EQ(c.code, static_cast<int>(grpc::StatusCode::DEADLINE_EXCEEDED));
  }
}

TEST_F(LoadRunnerTest, AServerThatIsDownGivesUnavailable) {
  server_->Shutdown();
  LoadOptions options;
  options.warmup = milliseconds(0);
  options.duration = milliseconds(200);
  options.timeout = milliseconds(1000);
  absl::StatusOr<StepResult> result = MakeRunner(options).Run(Open(50, false), nullptr);
  ASSERT_TRUE(result.ok()) << result.status();
  const StepSummary s = Summary(*result);
  EXPECT_EQ(s.calls, 10);
  EXPECT_EQ(s.ok, 0);
  EXPECT_EQ(s.errors.count(static_cast<int>(grpc::StatusCode::UNAVAILABLE)), 1u);
  // gRPC's reason comes with the count.
  EXPECT_FALSE(s.error_messages.at(static_cast<int>(grpc::StatusCode::UNAVAILABLE)).empty());
}

// A closed loop against a server that refuses everything: a slot refused a second time in
// a row frees only after the backoff, so the calls sent follow from it, instead of as many
// as the client can make.
TEST_F(LoadRunnerTest, AClosedLoopWaitsTheBackoffAfterRefusedCalls) {
  server_->Shutdown();  // every call: UNAVAILABLE at once
  LoadOptions options;
  options.warmup = milliseconds(0);
  options.duration = milliseconds(400);
  options.refused_backoff = milliseconds(50);
  absl::StatusOr<StepResult> result = MakeRunner(options).Run(Closed(2), nullptr);
  ASSERT_TRUE(result.ok()) << result.status();
  const StepSummary s = Summary(*result);
  EXPECT_EQ(s.ok, 0);
  // Per slot: the first call, its retry at once, then one per 50 ms: 2 x (2 + 7) calls, a
  // few more where a refusal takes less than its share.
  EXPECT_GE(s.calls, 10);
  EXPECT_LE(s.calls, 24);
  // From the third call of each slot on (the 5th in time), each is intended one backoff
  // after the refusal before it, and sent on time. Of any three calls in a row, two are
  // the same slot's (2 slots).
  std::vector<CallRecord> calls = result->calls;
  std::sort(calls.begin(), calls.end(),
            [](const CallRecord& a, const CallRecord& b) { return a.intended_ns < b.intended_ns; });
  for (size_t i = 6; i < calls.size(); ++i) {
    EXPECT_GE(calls[i].intended_ns - calls[i - 2].intended_ns, 50'000'000) << i;
  }
  EXPECT_LT(s.send_lag.p50, 5.0);

  options.refused_backoff = milliseconds(0);  // at once: far more calls
  result = MakeRunner(options).Run(Closed(2), nullptr);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_GT(Summary(*result).calls, 100);
}

LoadOptions StreamOptions(milliseconds duration) {
  LoadOptions options;
  options.warmup = milliseconds(0);
  options.duration = duration;
  options.stream = true;
  return options;
}

// A refusal after an accepted call (at the admission limit, the next call can come a moment
// before the server has taken the last one's place back) is sent again at once.
TEST_F(LoadRunnerTest, ALoneRefusalIsSentAgainAtOnce) {
  service_.delay = milliseconds(2);
  service_.stream_error_every = 3;  // every third message refused, never two in a row
  LoadOptions options = StreamOptions(milliseconds(400));
  options.refused_backoff = std::chrono::seconds(10);  // would end the step at once
  absl::StatusOr<StepResult> result = MakeRunner(options, /*channels=*/1).Run(Closed(1), nullptr);
  ASSERT_TRUE(result.ok()) << result.status();
  const StepSummary s = Summary(*result);
  EXPECT_GT(s.errors.at(static_cast<int>(grpc::StatusCode::RESOURCE_EXHAUSTED)), 5);
  EXPECT_GT(s.ok, 2 * s.errors.at(static_cast<int>(grpc::StatusCode::RESOURCE_EXHAUSTED)) - 4);
}

TEST_F(LoadRunnerTest, StreamAnswersEveryCallInOrder) {
  service_.delay = milliseconds(5);
  absl::StatusOr<StepResult> result =
      MakeRunner(StreamOptions(milliseconds(600))).Run(Closed(4), nullptr);
  ASSERT_TRUE(result.ok()) << result.status();
  const StepSummary s = Summary(*result);
  // An answer matched to the wrong call (request_id) would be INTERNAL.
  EXPECT_TRUE(s.errors.empty());
  EXPECT_GT(s.ok, 20);
  EXPECT_EQ(static_cast<int>(result->calls.size()), service_.answered());
  EXPECT_DOUBLE_EQ(s.tokens_per_s, 10 * s.requests_per_s);
  for (const CallRecord& c : result->calls) {
    EXPECT_LE(c.intended_ns, c.sent_ns);
    EXPECT_LT(c.sent_ns, c.done_ns);
  }
}

TEST_F(LoadRunnerTest, StreamErrorsPerMessageAreCounted) {
  service_.delay = milliseconds(1);
  service_.stream_error_every = 3;
  absl::StatusOr<StepResult> result =
      MakeRunner(StreamOptions(milliseconds(500)), /*channels=*/1).Run(Closed(2), nullptr);
  ASSERT_TRUE(result.ok()) << result.status();
  const StepSummary s = Summary(*result);
  const int64_t refused = s.errors.at(static_cast<int>(grpc::StatusCode::RESOURCE_EXHAUSTED));
  EXPECT_EQ(s.ok + refused, s.calls);
  // One stream: every third message of the run is refused.
  int64_t all_refused = 0;
  for (const CallRecord& c : result->calls) {
    all_refused += c.code == static_cast<int>(grpc::StatusCode::RESOURCE_EXHAUSTED);
  }
  EXPECT_EQ(all_refused, static_cast<int64_t>(result->calls.size()) / 3);
  EXPECT_EQ(s.error_messages.at(static_cast<int>(grpc::StatusCode::RESOURCE_EXHAUSTED)),
            "refused by the test");
}

TEST_F(LoadRunnerTest, AStreamThatEndsFailsItsCallsAndTheStepEnds) {
  service_.delay = milliseconds(1);
  service_.stream_end_after = 3;
  for (const bool keep : {true, false}) {
    SCOPED_TRACE(keep ? "calls kept" : "calls not kept");
    keep_calls_ = keep;
    const auto start = std::chrono::steady_clock::now();
    absl::StatusOr<StepResult> result =
        MakeRunner(StreamOptions(milliseconds(500)), /*channels=*/1).Run(Open(100, false), nullptr);
    const auto took = std::chrono::steady_clock::now() - start;
    ASSERT_TRUE(result.ok()) << result.status();
    const StepSummary s = Summary(*result);
    EXPECT_EQ(s.calls, 50);
    EXPECT_EQ(s.ok, 3);
    // The stream's own status reaches the calls it failed, those sent after it ended too.
    EXPECT_EQ(s.errors.at(static_cast<int>(grpc::StatusCode::ABORTED)), 47);
    EXPECT_EQ(s.errors.size(), 1u);
    EXPECT_EQ(s.error_messages.at(static_cast<int>(grpc::StatusCode::ABORTED)),
              "stream ended by the test");
    EXPECT_EQ(s.error_messages.size(), 1u);
    EXPECT_EQ(result->stopped_ns, -1);  // an open loop keeps its schedule
    EXPECT_LT(took, std::chrono::seconds(5));
  }
}

TEST_F(LoadRunnerTest, CallsQueuedOnAStreamThatEndsFailToo) {
  // Calls arrive much faster than the stream answers them, so many wait behind the first
  // ones when it ends.
  service_.delay = milliseconds(20);
  service_.stream_end_after = 3;
  absl::StatusOr<StepResult> result =
      MakeRunner(StreamOptions(milliseconds(300)), /*channels=*/1).Run(Open(400, false), nullptr);
  ASSERT_TRUE(result.ok()) << result.status();
  const StepSummary s = Summary(*result);
  EXPECT_EQ(s.calls, 120);
  EXPECT_EQ(s.ok, 3);
  EXPECT_EQ(s.errors.at(static_cast<int>(grpc::StatusCode::ABORTED)), 117);
}

TEST_F(LoadRunnerTest, AClosedLoopStopsWhenEveryStreamHasEnded) {
  service_.delay = milliseconds(1);
  service_.stream_end_after = 3;
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<StepResult> result =
      MakeRunner(StreamOptions(milliseconds(2000)), /*channels=*/2).Run(Closed(2), nullptr);
  const auto took = std::chrono::steady_clock::now() - start;
  ASSERT_TRUE(result.ok()) << result.status();
  const StepSummary s = Summary(*result);
  EXPECT_EQ(s.ok, 6);  // three per stream
  // Without the stop it would fail calls as fast as it could for the whole 2 s window.
  EXPECT_LT(s.calls, 50);
  EXPECT_LT(took, std::chrono::milliseconds(1500));
  // The step says when it stopped, and why.
  EXPECT_GE(result->stopped_ns, 0);
  EXPECT_LT(result->stopped_ns, result->window_end_ns);
  EXPECT_EQ(result->stopped_why, "ABORTED: stream ended by the test");
}

TEST_F(LoadRunnerTest, DrainCancelsAStreamThatNeverAnswers) {
  service_.hang = true;
  LoadOptions options = StreamOptions(milliseconds(300));
  options.timeout = milliseconds(100);
  options.drain_grace = milliseconds(200);
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<StepResult> result = MakeRunner(options, /*channels=*/1).Run(Closed(2), nullptr);
  const auto took = std::chrono::steady_clock::now() - start;
  ASSERT_TRUE(result.ok()) << result.status();
  const StepSummary s = Summary(*result);
  EXPECT_EQ(s.calls, 2);  // two sent at the start, never answered
  EXPECT_EQ(s.ok, 0);
  // Ended by Drain's cancel or the stream's deadline, which fall together here.
  const int64_t cancelled = s.errors.count(static_cast<int>(grpc::StatusCode::CANCELLED))
                                ? s.errors.at(static_cast<int>(grpc::StatusCode::CANCELLED))
                                : 0;
  const int64_t expired = s.errors.count(static_cast<int>(grpc::StatusCode::DEADLINE_EXCEEDED))
                              ? s.errors.at(static_cast<int>(grpc::StatusCode::DEADLINE_EXCEEDED))
                              : 0;
  EXPECT_EQ(cancelled + expired, 2);
  EXPECT_LT(took, std::chrono::seconds(3));  // window + timeout + grace, then cancelled
}

TEST_F(LoadRunnerTest, LateStreamAnswersCountAsDeadlineExceeded) {
  service_.delay = milliseconds(300);
  LoadOptions options = StreamOptions(milliseconds(400));
  options.timeout = milliseconds(100);
  absl::StatusOr<StepResult> result = MakeRunner(options, /*channels=*/1).Run(Closed(1), nullptr);
  ASSERT_TRUE(result.ok()) << result.status();
  const StepSummary s = Summary(*result);
  EXPECT_EQ(s.ok, 0);
  EXPECT_EQ(s.errors.at(static_cast<int>(grpc::StatusCode::DEADLINE_EXCEEDED)), s.calls);
  EXPECT_GE(s.calls, 1);
}

TEST_F(LoadRunnerTest, RejectsBadOptions) {
  LoadOptions options;
  options.max_outstanding = 0;
  EXPECT_EQ(MakeRunner(options).Run(Open(10, true), nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
  options = LoadOptions();
  options.duration = milliseconds(0);
  EXPECT_EQ(MakeRunner(options).Run(Closed(1), nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(LoadRunnerTest, RejectsAStepWithoutExactlyOneMode) {
  LoadRunner runner = MakeRunner(LoadOptions());
  LoadStep both = Closed(1);
  both.rate = 5;
  EXPECT_EQ(runner.Run(LoadStep(), nullptr).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      runner.Run(Open(std::numeric_limits<double>::infinity(), true), nullptr).status().code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(runner.Run(both, nullptr).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace bert
