#include "server/grpc/metrics_http.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "prometheus/gauge.h"

namespace bert {
namespace {

using Clock = std::chrono::steady_clock;

// A connection to 127.0.0.1:`port` from `source` (any 127.x.y.z address reaches it), or -1.
int ConnectTo(int port, const char* source) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in from{};
  from.sin_family = AF_INET;
  inet_pton(AF_INET, source, &from.sin_addr);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&from), sizeof(from)) != 0 ||
      ::connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof(to)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

class MetricsHttpTest : public testing::Test {
 protected:
  void SetUp() override {
    auto registry = std::make_shared<prometheus::Registry>();
    prometheus::BuildGauge()
        .Name("bert_test_gauge")
        .Help("a test gauge")
        .Register(*registry)
        .Add({})
        .Set(7);
    auto server =
        MetricsHttpServer::Start("127.0.0.1:0", registry, [this] { return ready_.load(); });
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
  }

  int Connect(const char* source = "127.0.0.1") const { return ConnectTo(server_->port(), source); }

  // Everything the server sends on `fd` until it closes the connection (or `timeout` passes;
  // `reset` tells whether the connection was reset).
  static std::string ReadAll(int fd, std::chrono::milliseconds timeout = std::chrono::seconds(10),
                             bool* reset = nullptr) {
    const Clock::time_point deadline = Clock::now() + timeout;
    std::string out;
    char buffer[4096];
    while (Clock::now() < deadline) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      const ssize_t n = ::recv(fd, buffer, sizeof(buffer), 0);
      if (n < 0 && reset != nullptr) *reset = errno == ECONNRESET;
      if (n <= 0) break;
      out.append(buffer, static_cast<size_t>(n));
    }
    return out;
  }

  // Sends `request` on a new connection and returns the whole answer.
  std::string Ask(const std::string& request, const char* source = "127.0.0.1") const {
    const int fd = Connect(source);
    EXPECT_GE(fd, 0);
    if (fd < 0) return "";
    EXPECT_EQ(::send(fd, request.data(), request.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(request.size()));
    std::string answer = ReadAll(fd);
    ::close(fd);
    return answer;
  }

  std::atomic<bool> ready_{false};  // what /readyz reports; outlives server_
  std::unique_ptr<MetricsHttpServer> server_;
};

// The answer's body (after the blank line), or "" when there is none.
std::string Body(const std::string& answer) {
  const size_t end = answer.find("\r\n\r\n");
  return end == std::string::npos ? "" : answer.substr(end + 4);
}

TEST_F(MetricsHttpTest, ServesTheRegistry) {
  const std::string answer = Ask("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_TRUE(absl::StartsWith(answer, "HTTP/1.1 200 OK\r\n")) << answer;
  EXPECT_TRUE(absl::StrContains(answer, "Content-Type: text/plain; version=0.0.4")) << answer;
  EXPECT_TRUE(absl::StrContains(answer, "\r\n\r\n# HELP bert_test_gauge a test gauge\n")) << answer;
  EXPECT_TRUE(absl::StrContains(answer, "bert_test_gauge 7")) << answer;
  EXPECT_TRUE(absl::StartsWith(Ask("GET /metrics?name[]=x HTTP/1.0\r\n\r\n"), "HTTP/1.1 200 OK"));
  // HEAD: the same head, no body.
  const std::string head = Ask("HEAD /metrics HTTP/1.1\r\n\r\n");
  EXPECT_TRUE(absl::StartsWith(head, "HTTP/1.1 200 OK\r\n")) << head;
  EXPECT_TRUE(absl::EndsWith(head, "\r\n\r\n")) << head;
  EXPECT_FALSE(absl::StrContains(head, "bert_test_gauge")) << head;
}

TEST_F(MetricsHttpTest, BadRequestsGetTheirStatus) {
  const struct {
    std::string request;
    const char* status;
  } cases[] = {
      {"GET / HTTP/1.1\r\n\r\n", "404 Not Found"},
      {"GET /metrics/../etc HTTP/1.1\r\n\r\n", "404 Not Found"},
      {"GET /metricsx HTTP/1.1\r\n\r\n", "404 Not Found"},
      {"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", "405 Method Not Allowed"},
      {"DELETE /metrics HTTP/1.1\r\n\r\n", "405 Method Not Allowed"},
      {"GET /metrics HTTP/1.1 junk\r\n\r\n", "400 Bad Request"},
      {"GET /metrics HTTP/2.0\r\n\r\n", "400 Bad Request"},
      {"GET  /metrics HTTP/1.1\r\n\r\n", "400 Bad Request"},
      {std::string("\x16\x03\x01\x02\x00\x01\r\n\r\n", 10), "400 Bad Request"},  // TLS
      {"GET /metrics HTTP/1.1\r\nX: " + std::string(20000, 'a'),
       "431 Request Header Fields Too Large"},
  };
  for (const auto& c : cases) {
    const std::string answer = Ask(c.request);
    EXPECT_TRUE(absl::StartsWith(answer, absl::StrCat("HTTP/1.1 ", c.status, "\r\n")))
        << c.request.substr(0, 40) << " -> " << answer;
  }
  EXPECT_TRUE(absl::StrContains(Ask("PUT /metrics HTTP/1.1\r\n\r\n"), "\r\nAllow: GET, HEAD\r\n"));
}

TEST_F(MetricsHttpTest, ProbesFollowTheReadinessSource) {
  std::string live = Ask("GET /livez HTTP/1.1\r\n\r\n");
  EXPECT_TRUE(absl::StartsWith(live, "HTTP/1.1 200 OK\r\n")) << live;
  EXPECT_EQ(Body(live), "OK\n");
  std::string ready = Ask("GET /readyz HTTP/1.1\r\n\r\n");
  EXPECT_TRUE(absl::StartsWith(ready, "HTTP/1.1 503 Service Unavailable\r\n")) << ready;
  EXPECT_TRUE(absl::StrContains(ready, "\r\nContent-Length: 12\r\n")) << ready;
  EXPECT_EQ(Body(ready), "NOT_SERVING\n");
  // The process still answers while not ready.
  EXPECT_TRUE(absl::StartsWith(Ask("GET /livez HTTP/1.1\r\n\r\n"), "HTTP/1.1 200 OK\r\n"));

  ready_ = true;
  ready = Ask("GET /readyz?verbose HTTP/1.0\r\n\r\n");
  EXPECT_TRUE(absl::StartsWith(ready, "HTTP/1.1 200 OK\r\n")) << ready;
  EXPECT_EQ(Body(ready), "SERVING\n");
  // HEAD: the status alone.
  const std::string head = Ask("HEAD /readyz HTTP/1.1\r\n\r\n");
  EXPECT_TRUE(absl::StartsWith(head, "HTTP/1.1 200 OK\r\n")) << head;
  EXPECT_EQ(Body(head), "");
  ready_ = false;
  EXPECT_TRUE(absl::StartsWith(Ask("HEAD /readyz HTTP/1.1\r\n\r\n"), "HTTP/1.1 503 "));

  for (const char* path : {"/readyz/", "/ready", "/livez/x", "/healthz"}) {
    EXPECT_TRUE(absl::StartsWith(Ask(absl::StrCat("GET ", path, " HTTP/1.1\r\n\r\n")),
                                 "HTTP/1.1 404 Not Found\r\n"))
        << path;
  }
  EXPECT_TRUE(absl::StartsWith(Ask("POST /readyz HTTP/1.1\r\n\r\n"), "HTTP/1.1 405 "));
}

// A listener started without a readiness source.
class MetricsHttpNoReadinessTest : public MetricsHttpTest {
 protected:
  void SetUp() override {
    auto server = MetricsHttpServer::Start("127.0.0.1:0", std::make_shared<prometheus::Registry>());
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
  }
};

TEST_F(MetricsHttpNoReadinessTest, WithoutASourceThereIsNoReadyz) {
  EXPECT_TRUE(absl::StartsWith(Ask("GET /readyz HTTP/1.1\r\n\r\n"), "HTTP/1.1 404 "));
  EXPECT_TRUE(absl::StartsWith(Ask("GET /livez HTTP/1.1\r\n\r\n"), "HTTP/1.1 200 OK\r\n"));
}

TEST_F(MetricsHttpTest, AHeadNotSentInTimeGets408) {
  const int fd = Connect();
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::send(fd, "GET /metrics HTTP/1.1\r\n", 23, MSG_NOSIGNAL), 23);
  const Clock::time_point start = Clock::now();
  const std::string answer = ReadAll(fd);
  ::close(fd);
  EXPECT_TRUE(absl::StartsWith(answer, "HTTP/1.1 408 Request Timeout\r\n")) << answer;
  EXPECT_GE(Clock::now() - start,
            std::chrono::milliseconds(MetricsHttpServer::kReadTimeoutMs - 100));
}

// A client still sending when the server has answered (a head of 1 MB: refused after 16 KB)
// gets the answer, not a reset: the server reads what comes after it before closing.
TEST_F(MetricsHttpTest, AClientStillSendingGetsTheAnswer) {
  const int fd = Connect();
  ASSERT_GE(fd, 0);
  const std::string big = "GET /metrics HTTP/1.1\r\nX: " + std::string(1 << 20, 'a');
  std::thread sender([&] {
    size_t sent = 0;
    while (sent < big.size()) {
      const ssize_t n = ::send(fd, big.data() + sent, big.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) break;
      sent += static_cast<size_t>(n);
    }
  });
  sender.join();
  bool reset = false;
  const std::string answer = ReadAll(fd, std::chrono::seconds(10), &reset);
  ::close(fd);
  EXPECT_TRUE(absl::StartsWith(answer, "HTTP/1.1 431 ")) << answer.substr(0, 80);
  EXPECT_FALSE(reset);
}

// One client's idle connections take at most kMaxConnectionsPerClient handlers: the next one
// from it is closed at once, and another client is served meanwhile.
TEST_F(MetricsHttpTest, OneClientCannotTakeEveryHandler) {
  std::vector<int> idle;
  for (int i = 0; i < MetricsHttpServer::kMaxConnectionsPerClient; ++i) {
    idle.push_back(Connect());
    ASSERT_GE(idle.back(), 0);
  }
  const int extra = Connect();
  ASSERT_GE(extra, 0);
  const Clock::time_point start = Clock::now();
  // Closed without an answer, well before the read timeout would have answered 408.
  EXPECT_EQ(ReadAll(extra, std::chrono::milliseconds(MetricsHttpServer::kReadTimeoutMs - 500)), "");
  EXPECT_LT(Clock::now() - start,
            std::chrono::milliseconds(MetricsHttpServer::kReadTimeoutMs - 500));
  ::close(extra);
  const std::string other = Ask("GET /metrics HTTP/1.1\r\n\r\n", "127.0.0.2");
  EXPECT_TRUE(absl::StartsWith(other, "HTTP/1.1 200 OK")) << other;
  EXPECT_LT(Clock::now() - start,
            std::chrono::milliseconds(MetricsHttpServer::kReadTimeoutMs - 500));
  // The idle ones time out (408) and give their places back.
  for (int fd : idle) {
    EXPECT_TRUE(absl::StartsWith(ReadAll(fd), "HTTP/1.1 408 ")) << fd;
    ::close(fd);
  }
  EXPECT_TRUE(absl::StartsWith(Ask("GET /metrics HTTP/1.1\r\n\r\n"), "HTTP/1.1 200 OK"));
}

// Out of descriptors, a pending connection cannot be accepted and stays pending: the listener
// waits between tries instead of spinning on it, and serves it once descriptors are free.
TEST_F(MetricsHttpTest, OutOfDescriptorsTheListenerWaits) {
  // Out of descriptors, the test calls no member function (UBSan's check of one needs a pipe).
  const int port = server_->port();
  rlimit old{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &old), 0);
  std::vector<int> filler;
  const int probe = ::open("/dev/null", O_RDONLY | O_CLOEXEC);  // the lowest free descriptor
  ASSERT_GE(probe, 0);
  ::close(probe);
  rlimit low = old;
  low.rlim_cur = probe + 32;
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &low), 0);
  const auto restore = [&] {  // also when an assertion ends the test early
    for (int fd : filler) ::close(fd);
    filler.clear();
    ::setrlimit(RLIMIT_NOFILE, &old);
  };
  absl::Cleanup restore_on_return = restore;
  for (int fd; (fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0;) filler.push_back(fd);
  ASSERT_FALSE(filler.empty());
  ::close(filler.back());  // one left, for the client's socket: the server's accept fails
  filler.pop_back();
  const int client = ConnectTo(port, "127.0.0.1");
  ASSERT_GE(client, 0);
  ASSERT_EQ(::send(client, "GET /metrics HTTP/1.1\r\n\r\n", 25, MSG_NOSIGNAL), 25);
  const auto cpu_seconds = [] {
    rusage usage{};
    ::getrusage(RUSAGE_SELF, &usage);
    return usage.ru_utime.tv_sec + usage.ru_stime.tv_sec +
           1e-6 * (usage.ru_utime.tv_usec + usage.ru_stime.tv_usec);
  };
  const double before = cpu_seconds();
  std::this_thread::sleep_for(std::chrono::seconds(1));
  const double used = cpu_seconds() - before;
  restore();
  EXPECT_LT(used, 0.3);  // spinning on accept took a whole core
  const std::string answer = ReadAll(client);
  ::close(client);
  EXPECT_TRUE(absl::StartsWith(answer, "HTTP/1.1 200 OK")) << answer;
}

}  // namespace
}  // namespace bert
