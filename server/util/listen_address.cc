#include "server/util/listen_address.h"

#include <netdb.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "server/util/status_macros.h"

namespace bert {

namespace {

// The path of a unix: address (unix:PATH, unix:///PATH).
std::string UnixPath(const std::string& address) {
  std::string path = address.substr(5);
  if (absl::StartsWith(path, "//")) path = path.substr(2);
  return path;
}

// The directory a path's file is in ("." for a bare name).
std::string DirectoryOf(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

// HOST and PORT of "HOST:PORT" (brackets of "[HOST]" taken off); false when there is no
// colon, no host, or a port that is not 0-65535.
bool SplitHostPort(const std::string& address, std::string* host, std::string* port) {
  const size_t colon = address.rfind(':');
  int number = -1;
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(address.substr(colon + 1), &number) || number < 0 || number > 65535) {
    return false;
  }
  *host = address.substr(0, colon);
  if (host->size() >= 2 && host->front() == '[' && host->back() == ']') {
    *host = host->substr(1, host->size() - 2);
  }
  *port = address.substr(colon + 1);
  return true;
}

}  // namespace

std::string ListeningAddress(const std::string& address, int port) {
  if (absl::StartsWith(address, "unix:") || absl::StartsWith(address, "unix-abstract:")) {
    return address;
  }
  return absl::StrCat(address.substr(0, address.rfind(':')), ":", port);
}

absl::Status CheckUnixSocketFree(const std::string& address) {
  if (!absl::StartsWith(address, "unix:")) return absl::OkStatus();
  const std::string path = UnixPath(address);
  struct stat st;
  if (lstat(path.c_str(), &st) != 0) return absl::OkStatus();  // nothing there yet
  if (!S_ISSOCK(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat(path, " exists and is not a socket"));
  }
  sockaddr_un peer{};
  if (path.size() >= sizeof(peer.sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": socket path too long"));
  }
  peer.sun_family = AF_UNIX;
  path.copy(peer.sun_path, path.size());
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("socket(): ", strerror(errno)));
  const int rc = connect(fd, reinterpret_cast<const sockaddr*>(&peer), sizeof(peer));
  const int error = errno;
  close(fd);
  if (rc == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, ": another process is serving on this socket"));
  }
  if (error != ECONNREFUSED) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, ": cannot tell whether it is in use (", strerror(error), ")"));
  }
  return absl::OkStatus();
}

absl::Status CheckListenAddress(const std::string& address) {
  if (absl::StartsWith(address, "unix-abstract:")) return absl::OkStatus();
  if (absl::StartsWith(address, "unix:")) {
    const std::string path = UnixPath(address);
    const std::string directory = DirectoryOf(path);
    struct stat st;
    if (path.empty() || path.back() == '/') {
      return absl::InvalidArgumentError(absl::StrCat(
          address, ": unix: needs the socket file's path, e.g. unix:/run/bert/bert.sock"));
    }
    if (stat(directory.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      return absl::InvalidArgumentError(absl::StrCat(address, ": the directory ", directory,
                                                     " does not exist (create it first: mkdir -p ",
                                                     directory, ")"));
    }
    return absl::OkStatus();
  }
  std::string host, port;
  if (!SplitHostPort(address, &host, &port)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "\"", address,
        "\" is not an address to listen on: give HOST:PORT (e.g. 127.0.0.1:50051, 0.0.0.0:50051 "
        "or [::]:50051; port 0 picks a free one) or unix:PATH"));
  }
  return absl::OkStatus();
}

std::string ListenFailureReason(const std::string& address) {
  if (absl::StartsWith(address, "unix-abstract:")) return "";
  if (absl::StartsWith(address, "unix:")) {
    const std::string directory = DirectoryOf(UnixPath(address));
    if (access(directory.c_str(), W_OK | X_OK) != 0) {
      return absl::StrCat("cannot create a socket in ", directory, ": ", strerror(errno));
    }
    return "";
  }
  std::string host, service;
  if (!SplitHostPort(address, &host, &service)) return "";
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* found = nullptr;
  if (const int rc =
          getaddrinfo(host.empty() ? nullptr : host.c_str(), service.c_str(), &hints, &found);
      rc != 0) {
    return absl::StrCat("cannot resolve ", host, ": ", gai_strerror(rc));
  }
  std::string reason;
  for (const addrinfo* a = found; a != nullptr && reason.empty(); a = a->ai_next) {
    const int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    // As gRPC binds: connections a stopped server left in TIME_WAIT do not count as in use.
    const int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, a->ai_addr, a->ai_addrlen) != 0) {
      reason = strerror(errno);
      if (errno == EADDRINUSE) reason += " (another process listens on this port)";
    }
    close(fd);
  }
  freeaddrinfo(found);
  return reason;
}

absl::Status AddExclusiveListeningPort(const std::string& address,
                                       std::shared_ptr<grpc::ServerCredentials> credentials,
                                       grpc::ServerBuilder* builder, int* port) {
  RETURN_IF_ERROR(CheckListenAddress(address));
  RETURN_IF_ERROR(CheckUnixSocketFree(address));
  builder->AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder->AddListeningPort(address, std::move(credentials), port);
  return absl::OkStatus();
}

}  // namespace bert
