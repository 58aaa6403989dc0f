#include "server/grpc/metrics_http.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
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
    const std::string& address, std::shared_ptr<prometheus::Registry> registry) {
  const size_t colon = address.rfind(':');
  int port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(address.substr(colon + 1), &port) ||
      port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("bad metrics address ", address));
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
      new MetricsHttpServer(fd, ntohs(addr.sin_port), std::move(registry)));
}

MetricsHttpServer::MetricsHttpServer(int fd, int port,
                                     std::shared_ptr<prometheus::Registry> registry)
    : listen_fd_(fd), port_(port), registry_(std::move(registry)) {
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
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) continue;
    {
      absl::MutexLock lock(&handlers_->mu);
      ++handlers_->running;  // only this thread adds: still below the cap
    }
    std::thread([this, fd, handlers = handlers_] {
      HandleConnection(fd);
      ::close(fd);
      absl::MutexLock lock(&handlers->mu);
      --handlers->running;
    }).detach();
  }
}

void MetricsHttpServer::HandleConnection(int fd) {
  // Read the request head, bounded in size and in total time; the body, if any, is ignored.
  const Clock::time_point read_deadline = Clock::now() + std::chrono::milliseconds(kReadTimeoutMs);
  std::string request;
  char buffer[2048];
  while (request.find("\r\n\r\n") == std::string::npos && request.size() < 16384) {
    if (!WaitFor(fd, POLLIN, read_deadline)) return;
    const ssize_t n = ::recv(fd, buffer, sizeof(buffer), 0);
    if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
    if (n <= 0) return;
    request.append(buffer, static_cast<size_t>(n));
  }
  const Clock::time_point write_deadline =
      Clock::now() + std::chrono::milliseconds(kWriteTimeoutMs);
  const bool metrics =
      absl::StartsWith(request, "GET /metrics ") || absl::StartsWith(request, "GET /metrics?");
  if (!metrics) {
    WriteAll(fd, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
             write_deadline);
    return;
  }
  const std::string body = prometheus::TextSerializer().Serialize(registry_->Collect());
  WriteAll(fd,
           absl::StrCat("HTTP/1.1 200 OK\r\n"
                        "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                        "Content-Length: ",
                        body.size(), "\r\nConnection: close\r\n\r\n", body),
           write_deadline);
}

}  // namespace bert
