#include "client/metrics_scrape.h"

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

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

 private:
  int fd_;
};

// Waits until `fd` is ready for `events`; false on timeout or error.
bool WaitFor(int fd, short events, std::chrono::milliseconds timeout) {
  pollfd p{fd, events, 0};
  int rc;
  do {
    rc = poll(&p, 1, static_cast<int>(timeout.count()));
  } while (rc < 0 && errno == EINTR);
  return rc > 0 && (p.revents & (events | POLLHUP)) != 0;
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
  Socket socket_fd(::socket(found->ai_family, found->ai_socktype | SOCK_NONBLOCK, 0));
  if (socket_fd.fd() < 0) return absl::InternalError(absl::StrCat("socket: ", strerror(errno)));
  if (connect(socket_fd.fd(), found->ai_addr, found->ai_addrlen) != 0 && errno != EINPROGRESS) {
    return absl::UnavailableError(absl::StrCat("connect ", host_port, ": ", strerror(errno)));
  }
  if (!WaitFor(socket_fd.fd(), POLLOUT, timeout)) {
    return absl::DeadlineExceededError(absl::StrCat("connect ", host_port, ": timed out"));
  }
  int error = 0;
  socklen_t error_size = sizeof(error);
  getsockopt(socket_fd.fd(), SOL_SOCKET, SO_ERROR, &error, &error_size);
  if (error != 0) {
    return absl::UnavailableError(absl::StrCat("connect ", host_port, ": ", strerror(error)));
  }
  const std::string request =
      absl::StrCat("GET /metrics HTTP/1.0\r\nHost: ", host_port, "\r\n\r\n");
  for (size_t sent = 0; sent < request.size();) {
    if (!WaitFor(socket_fd.fd(), POLLOUT, timeout)) {
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
    if (!WaitFor(socket_fd.fd(), POLLIN, timeout)) {
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
  if (body == std::string::npos || status_line.find(" 200") == absl::string_view::npos) {
    return absl::UnavailableError(absl::StrCat("metrics answer: ", status_line));
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
