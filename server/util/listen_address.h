// Listening addresses of the gRPC servers (bert_server, the host-path benchmark's server):
// how to add them to a server, how to report them, and whether a Unix socket path is free to
// bind.
#ifndef BERT_SERVER_UTIL_LISTEN_ADDRESS_H_
#define BERT_SERVER_UTIL_LISTEN_ADDRESS_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_builder.h"

namespace bert {

// The address a server listens on, as clients give it: HOST:PORT with the port gRPC picked
// (for port 0), or the Unix domain socket's address unchanged ("unix:PATH",
// "unix-abstract:NAME").
std::string ListeningAddress(const std::string& address, int port);

// gRPC replaces whatever socket file is at a unix: path when it binds, and removes it at
// shutdown. A second server on a path would so take it over from a live one, whose drain
// would then delete the newcomer's socket. OK for a non-unix: address, a free path, or a
// stale socket (one nothing accepts on: ECONNREFUSED), which gRPC replaces;
// FAILED_PRECONDITION for a live socket, one that cannot be checked, or a file that is not
// a socket.
absl::Status CheckUnixSocketFree(const std::string& address);

// INVALID_ARGUMENT, saying what is wrong and what would do, for an address gRPC could not
// listen on for its form alone: not HOST:PORT with a port of 0-65535, unix:, or
// unix-abstract:; or a unix: path whose directory does not exist.
absl::Status CheckListenAddress(const std::string& address);

// Why a server could not listen on `address` (a TCP address or a unix: path) where gRPC's
// own reason went to its log only: the error of binding it again here ("Address already in
// use", "Permission denied", ...), or "" when that bind succeeds.
std::string ListenFailureReason(const std::string& address);

// Adds `address` to `builder` as its one listening port (`port` receives the port once the
// server starts), refusing to share it: CheckListenAddress's error for an address that cannot
// work, CheckUnixSocketFree's error for a unix: path in use,
// and for TCP gRPC's port sharing (SO_REUSEPORT, on by default) turned off, so that a second
// server on a port in use fails to start instead of silently taking part of its traffic.
absl::Status AddExclusiveListeningPort(const std::string& address,
                                       std::shared_ptr<grpc::ServerCredentials> credentials,
                                       grpc::ServerBuilder* builder, int* port);

}  // namespace bert

#endif  // BERT_SERVER_UTIL_LISTEN_ADDRESS_H_
