#include "server/grpc/metrics_http.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <system_error>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "prometheus/text_serializer.h"

namespace bert {
namespace {

using Clock = std::chrono::steady_clock;

// Milliseconds left until `deadline` (0 once it has passed).
int MsLeft(Clock::time_point deadline) {
  const auto left =
      std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left > 0 ? static_cast<int>(left) : 0;
}

// Waits until `fd` is ready for `events` or `deadline` passes; false on the deadline or an
// error.
bool WaitFor(int fd, short events, Clock::time_point deadline) {
  while (true) {
    const int left = MsLeft(deadline);
    if (left == 0) return false;
    pollfd p{fd, events, 0};
    const int ready = ::poll(&p, 1, left);
    if (ready < 0 && errno == EINTR) continue;
    return ready > 0;
  }
}

// Sends all of `data` before `deadline` (`fd` is non-blocking); stops early on an error.
void WriteAll(int fd, const std::string& data, Clock::time_point deadline) {
  size_t sent = 0;
  while (sent < data.size()) {
    const ssize_t n = ::send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (!WaitFor(fd, POLLOUT, deadline)) return;
    } else {
      return;
    }
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<MetricsHttpServer>> MetricsHttpServer::Start(
    const std::string& address, std::shared_ptr<prometheus::Registry> registry,
    std::function<bool()> ready) {
  const size_t colon = address.rfind(':');
  int port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(address.substr(colon + 1), &port) ||
      port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        "bad metrics address \"", address, "\": give HOST:PORT, e.g. 127.0.0.1:9090 (port 0 picks one)"));
  }
  std::string host = address.substr(0, colon);
  if (host == "localhost") host = "127.0.0.1";
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (host.empty() || host == "0.0.0.0") {
    addr.sin_addr.s_addr = htonl(INADDR_ANY);
  } else if (inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics address ", address, ": host must be an IPv4 address"));
  }
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("socket: ", std::strerror(errno)));
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || ::listen(fd, 128) != 0) {
    const std::string error = std::strerror(errno);
    ::close(fd);
    return absl::UnavailableError(absl::StrCat("cannot listen on ", address, ": ", error));
  }
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  return std::unique_ptr<MetricsHttpServer>(
      new MetricsHttpServer(fd, ntohs(addr.sin_port), std::move(registry), std::move(ready)));
}

MetricsHttpServer::MetricsHttpServer(int fd, int port,
                                     std::shared_ptr<prometheus::Registry> registry,
                                     std::function<bool()> ready)
    : listen_fd_(fd), port_(port), registry_(std::move(registry)), ready_(std::move(ready)) {
  thread_ = std::thread([this] { Serve(); });
}

MetricsHttpServer::~MetricsHttpServer() {
  stopping_ = true;
  ::shutdown(listen_fd_, SHUT_RDWR);
  if (thread_.joinable()) thread_.join();
  ::close(listen_fd_);
  // Handlers end within their deadlines.
  absl::MutexLock lock(&handlers_->mu);
  handlers_->mu.Await(absl::Condition(
      +[](int* running) { return *running == 0; }, &handlers_->running));
}

void MetricsHttpServer::Handlers::Release(uint32_t client) {
  --running;
  auto it = by_client.find(client);
  if (--it->second == 0) by_client.erase(it);
}

void MetricsHttpServer::Serve() {
  const auto below_cap = [](Handlers* h) ABSL_SHARED_LOCKS_REQUIRED(h->mu) {
    return h->running < kMaxConnections;
  };
  while (!stopping_.load()) {
    {
      // At the cap, further connections wait in the listen backlog (not refused): a handler
      // ends within its deadlines.
      absl::MutexLock lock(&handlers_->mu);
      if (!handlers_->mu.AwaitWithTimeout(absl::Condition(+below_cap, handlers_.get()),
                                          absl::Milliseconds(200))) {
        continue;
      }
    }
    pollfd p{listen_fd_, POLLIN, 0};
    const int ready = ::poll(&p, 1, 200);
    if (ready <= 0) continue;
    sockaddr_in peer{};
    socklen_t peer_len = sizeof(peer);
    const int fd = ::accept4(listen_fd_, reinterpret_cast<sockaddr*>(&peer), &peer_len,
                             SOCK_CLOEXEC | SOCK_NONBLOCK);
    bool pause = false;
    if (fd < 0) {
      // Out of descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM): the connection stays
      // pending and poll would report it again at once; wait instead of spinning.
      pause = errno != EINTR && errno != ECONNABORTED && errno != EAGAIN;
    } else {
      pause = !Dispatch(fd, peer.sin_addr.s_addr);
    }
    if (pause) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

bool MetricsHttpServer::Dispatch(int fd, uint32_t client) {
  {
    absl::MutexLock lock(&handlers_->mu);
    int& from_client = handlers_->by_client[client];
    if (from_client >= kMaxConnectionsPerClient) {
      ::close(fd);
      return true;
    }
    ++from_client;
    ++handlers_->running;  // only this thread adds: still below the cap
  }
  try {
    std::thread([this, fd, client, handlers = handlers_] {
      HandleConnection(fd);
      ::close(fd);
      absl::MutexLock lock(&handlers->mu);
      handlers->Release(client);
    }).detach();
    return true;
  } catch (const std::system_error&) {  // no thread to be had (memory, a process limit)
    ::close(fd);
    absl::MutexLock lock(&handlers_->mu);
    handlers_->Release(client);
    return false;
  }
}

namespace {

constexpr char kMetricsContentType[] = "text/plain; version=0.0.4; charset=utf-8";
constexpr char kTextContentType[] = "text/plain; charset=utf-8";

std::string Response(absl::string_view status, absl::string_view content_type, size_t length,
                     absl::string_view extra_headers = "") {
  return absl::StrCat("HTTP/1.1 ", status, "\r\nContent-Type: ", content_type,
                      "\r\nContent-Length: ", length, "\r\n", extra_headers,
                      "Connection: close\r\n\r\n");
}

// An error answer with its reason as a one-line body.
std::string ErrorResponse(absl::string_view status, absl::string_view extra_headers = "") {
  const std::string body = absl::StrCat(status, "\n");
  return Response(status, kTextContentType, body.size(), extra_headers) + body;
}

// Closes the sending side and reads what the client still sends (a body nobody asked for)
// until it closes, for at most `ms`: closing with unread bytes would reset the connection,
// which can discard the answer before the client has read it.
void Linger(int fd, int ms) {
  ::shutdown(fd, SHUT_WR);
  const Clock::time_point deadline = Clock::now() + std::chrono::milliseconds(ms);
  char buffer[4096];
  size_t drained = 0;
  while (drained < (1u << 20) && WaitFor(fd, POLLIN, deadline)) {
    const ssize_t n = ::recv(fd, buffer, sizeof(buffer), 0);
    if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
    if (n <= 0) return;
    drained += static_cast<size_t>(n);
  }
}

}  // namespace

void MetricsHttpServer::HandleConnection(int fd) {
  // Read the request head, bounded in size and in total time.
  const Clock::time_point read_deadline = Clock::now() + std::chrono::milliseconds(kReadTimeoutMs);
  std::string request;
  char buffer[2048];
  size_t head_end = std::string::npos;
  bool timed_out = false;
  while (head_end == std::string::npos && request.size() <= kMaxHeadBytes) {
    if (!WaitFor(fd, POLLIN, read_deadline)) {
      timed_out = true;
      break;
    }
    const ssize_t n = ::recv(fd, buffer, sizeof(buffer), 0);
    if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
    if (n <= 0) return;  // the client went, or the connection failed: nobody to answer
    // Searched from just before the new bytes: the blank line may straddle two reads.
    const size_t from = request.size() < 3 ? 0 : request.size() - 3;
    request.append(buffer, static_cast<size_t>(n));
    head_end = request.find("\r\n\r\n", from);
  }
  const Clock::time_point write_deadline =
      Clock::now() + std::chrono::milliseconds(kWriteTimeoutMs);
  std::string answer;
  if (head_end == std::string::npos || head_end + 4 > kMaxHeadBytes) {
    answer =
        ErrorResponse(timed_out ? "408 Request Timeout" : "431 Request Header Fields Too Large");
  } else {
    // The request line: METHOD SP TARGET SP HTTP/1.x.
    const absl::string_view line = absl::string_view(request).substr(0, request.find("\r\n"));
    const std::vector<absl::string_view> parts = absl::StrSplit(line, ' ');
    const bool http = parts.size() == 3 && !parts[0].empty() && !parts[1].empty() &&
                      (parts[2] == "HTTP/1.1" || parts[2] == "HTTP/1.0");
    const absl::string_view path = http ? parts[1].substr(0, parts[1].find('?')) : "";
    if (!http) {
      answer = ErrorResponse("400 Bad Request");
    } else if (parts[0] != "GET" && parts[0] != "HEAD") {
      answer = ErrorResponse("405 Method Not Allowed", "Allow: GET, HEAD\r\n");
    } else {
      // The status, the content type and the body of the path.
      absl::string_view status = "200 OK";
      absl::string_view content_type = kTextContentType;
      std::string body;
      if (path == "/metrics") {
        content_type = kMetricsContentType;
        body = prometheus::TextSerializer().Serialize(registry_->Collect());
      } else if (path == "/livez") {
        body = "OK\n";
      } else if (path == "/readyz" && ready_ != nullptr) {
        const bool ready = ready_();
        if (!ready) status = "503 Service Unavailable";
        body = ready ? "SERVING\n" : "NOT_SERVING\n";
      } else {
        status = "404 Not Found";
        body = absl::StrCat(status, "\n");
      }
      answer = Response(status, content_type, body.size());
      if (parts[0] == "GET") answer += body;
    }
  }
  WriteAll(fd, answer, write_deadline);
  Linger(fd, std::min(1000, MsLeft(write_deadline)));
}

}  // namespace bert
