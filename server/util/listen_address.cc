#include "server/util/listen_address.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/util/status_macros.h"

namespace bert {

std::string ListeningAddress(const std::string& address, int port) {
  if (absl::StartsWith(address, "unix:") || absl::StartsWith(address, "unix-abstract:")) {
    return address;
  }
  return absl::StrCat(address.substr(0, address.rfind(':')), ":", port);
}

absl::Status CheckUnixSocketFree(const std::string& address) {
  if (!absl::StartsWith(address, "unix:")) return absl::OkStatus();
  std::string path = address.substr(5);
  if (absl::StartsWith(path, "//")) path = path.substr(2);  // unix:///abs/path
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

absl::Status AddExclusiveListeningPort(const std::string& address,
                                       std::shared_ptr<grpc::ServerCredentials> credentials,
                                       grpc::ServerBuilder* builder, int* port) {
  RETURN_IF_ERROR(CheckUnixSocketFree(address));
  builder->AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder->AddListeningPort(address, std::move(credentials), port);
  return absl::OkStatus();
}

}  // namespace bert
