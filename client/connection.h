// How the bundled tools reach a bert_server: the channel (plain, TLS or mutual TLS) and what
// each call carries (deadline, bearer token). The flags --server, --tls, --ca, --cert, --key,
// --token and --token_file are defined here once for every tool that links this library.
#ifndef BERT_CLIENT_CONNECTION_H_
#define BERT_CLIENT_CONNECTION_H_

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "grpcpp/channel.h"
#include "grpcpp/client_context.h"

namespace bert {

struct ConnectionOptions {
  std::string server;      // HOST:PORT or unix:PATH
  bool tls = false;        // TLS with the system roots, or with ca_file's
  std::string ca_file;     // PEM root certificates; implies TLS
  std::string cert_file;   // PEM certificate chain presented to the server (mutual TLS)
  std::string key_file;    // its PEM private key; with cert_file, implies TLS
  std::string token;       // bearer token sent as "authorization: Bearer <token>"
  std::string token_file;  // read the token from this file instead (whitespace stripped)
};

// The options the command-line flags give.
ConnectionOptions ConnectionOptionsFromFlags();

// Makes --help (and --helpshort) list every flag defined under client/, these connection
// flags included; by default the flags library lists only those of the program's own file.
// Call before parsing the command line.
void ShowClientFlagsInHelp();

// Whether the gRPC target `server` (HOST:PORT, [HOST]:PORT, dns:///..., ipv4:/ipv6:) names
// this host's loopback: localhost, 127.0.0.0/8 or ::1. Such channels never use a proxy.
bool IsLoopbackTarget(absl::string_view server);

// A connected client's channel settings. Thread-safe after Create.
class Connection {
 public:
  // Reads the CA and token files; fails (INVALID_ARGUMENT / NOT_FOUND) when one cannot be
  // read. Does not contact the server.
  static absl::StatusOr<Connection> Create(const ConnectionOptions& options);

  // A new channel. Channels with different `index` do not share a connection (TCP or Unix socket),
  // so a load generator can spread its calls over several. No receive-size limit: responses with
  // every layer are large.
  std::shared_ptr<grpc::Channel> NewChannel(int index = 0) const;

  // Sets the deadline and the bearer token on a call's context.
  void Prepare(grpc::ClientContext* context, std::chrono::system_clock::time_point deadline) const;

 private:
  Connection() = default;

  std::string server_;
  bool tls_ = false;
  std::string root_certs_;  // empty: the system roots
  std::string cert_chain_;  // empty: no client certificate
  std::string private_key_;
  std::string token_;
};

}  // namespace bert

#endif  // BERT_CLIENT_CONNECTION_H_
