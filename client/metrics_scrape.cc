#include "client/metrics_scrape.h"

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace bert {
namespace {

// A socket closed on scope exit.
class Socket {
 public:
  explicit Socket(int fd) : fd_(fd) {}
  ~Socket() {
    if (fd_ >= 0) close(fd_);
  }
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  int fd() const { return fd_; }
  int Release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

using Clock = std::chrono::steady_clock;

// Waits until `fd` is ready for `events`; false at `deadline` or on error.
bool WaitFor(int fd, short events, Clock::time_point deadline) {
  pollfd p{fd, events, 0};
  int rc;
  do {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return false;
    rc = poll(&p, 1, static_cast<int>(left));
  } while (rc < 0 && errno == EINTR);
  return rc > 0 && (p.revents & (events | POLLHUP)) != 0;
}

// A socket connected to the first of `addresses` that accepts, by `deadline`.
absl::StatusOr<int> Connect(const addrinfo* addresses, const std::string& host_port,
                            Clock::time_point deadline) {
  std::string last_error = "no address";
  for (const addrinfo* a = addresses; a != nullptr; a = a->ai_next) {
    Socket socket_fd(::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK, 0));
    if (socket_fd.fd() < 0) {
      last_error = strerror(errno);
      continue;
    }
    if (connect(socket_fd.fd(), a->ai_addr, a->ai_addrlen) != 0 && errno != EINPROGRESS) {
      last_error = strerror(errno);
      continue;
    }
    if (!WaitFor(socket_fd.fd(), POLLOUT, deadline)) {
      last_error = "timed out";  // the next address, if any, gets what time is left
      continue;
    }
    int error = 0;
    socklen_t error_size = sizeof(error);
    getsockopt(socket_fd.fd(), SOL_SOCKET, SO_ERROR, &error, &error_size);
    if (error != 0) {
      last_error = strerror(error);
      continue;
    }
    return socket_fd.Release();
  }
  const std::string message = absl::StrCat("connect ", host_port, ": ", last_error);
  return Clock::now() >= deadline ? absl::DeadlineExceededError(message)
                                  : absl::UnavailableError(message);
}

}  // namespace

absl::StatusOr<std::string> FetchMetrics(const std::string& host_port,
                                         std::chrono::milliseconds timeout) {
  const size_t colon = host_port.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == host_port.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics address ", host_port, ": expected HOST:PORT"));
  }
  std::string host = host_port.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  const std::string port = host_port.substr(colon + 1);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &found); rc != 0) {
    return absl::UnavailableError(absl::StrCat("resolve ", host_port, ": ", gai_strerror(rc)));
  }
  std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> addresses(found, freeaddrinfo);
  const Clock::time_point deadline = Clock::now() + timeout;
  absl::StatusOr<int> fd = Connect(found, host_port, deadline);
  if (!fd.ok()) return fd.status();
  Socket socket_fd(*fd);
  const std::string request =
      absl::StrCat("GET /metrics HTTP/1.0\r\nHost: ", host_port, "\r\n\r\n");
  for (size_t sent = 0; sent < request.size();) {
    if (!WaitFor(socket_fd.fd(), POLLOUT, deadline)) {
      return absl::DeadlineExceededError("metrics request: timed out");
    }
    const ssize_t n =
        send(socket_fd.fd(), request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno != EAGAIN && errno != EINTR) {
      return absl::UnavailableError(absl::StrCat("metrics request: ", strerror(errno)));
    }
    if (n > 0) sent += n;
  }
  constexpr size_t kMaxBytes = 64 << 20;
  std::string answer;
  char buffer[16384];
  while (true) {
    if (!WaitFor(socket_fd.fd(), POLLIN, deadline)) {
      return absl::DeadlineExceededError("metrics answer: timed out");
    }
    const ssize_t n = recv(socket_fd.fd(), buffer, sizeof(buffer), 0);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      return absl::UnavailableError(absl::StrCat("metrics answer: ", strerror(errno)));
    }
    answer.append(buffer, n);
    if (answer.size() > kMaxBytes) return absl::ResourceExhaustedError("metrics page too big");
  }
  const size_t body = answer.find("\r\n\r\n");
  const absl::string_view status_line = absl::string_view(answer).substr(0, answer.find("\r\n"));
  // "HTTP/1.x 200 OK": the code is the second field.
  const std::vector<absl::string_view> fields = absl::StrSplit(status_line, ' ');
  if (answer.empty()) {
    return absl::UnavailableError(
        "the connection was closed without an answer (a busy /metrics listener, or not the "
        "server's --metrics_address?)");
  }
  if (!absl::StartsWith(status_line, "HTTP/")) {
    return absl::UnavailableError(
        "no HTTP answer (is this the gRPC port? /metrics is served on the server's "
        "--metrics_address)");
  }
  if (body == std::string::npos || fields.size() < 2 || fields[1] != "200") {
    return absl::UnavailableError(absl::StrCat("metrics answer: ", status_line.substr(0, 200)));
  }
  return answer.substr(body + 4);
}

std::optional<double> SumOfSamples(absl::string_view page, absl::string_view name) {
  std::optional<double> sum;
  for (absl::string_view line : absl::StrSplit(page, '\n')) {
    if (line.empty() || line[0] == '#' || !absl::ConsumePrefix(&line, name)) continue;
    // The name must end here: "x_sum" is not a sample of "x".
    if (!line.empty() && line[0] == '{') {
      const size_t close = line.find('}');
      if (close == absl::string_view::npos) continue;
      line.remove_prefix(close + 1);
    } else if (line.empty() || line[0] != ' ') {
      continue;
    }
    line = absl::StripLeadingAsciiWhitespace(line);
    // A sample may carry a timestamp after its value.
    const absl::string_view value = line.substr(0, line.find(' '));
    double v;
    if (!absl::SimpleAtod(value, &v)) continue;
    sum = sum.value_or(0) + v;
  }
  return sum;
}

}  // namespace bert
