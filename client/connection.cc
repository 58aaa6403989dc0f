#include "client/connection.h"

#include <arpa/inet.h>

#include <fstream>
#include <sstream>

#include "absl/flags/flag.h"
#include "absl/flags/usage_config.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"

ABSL_FLAG(std::string, server, "127.0.0.1:50051",
          "Server address: HOST:PORT, or unix:PATH for a Unix domain socket");
ABSL_FLAG(bool, tls, false, "Use TLS (system roots unless --ca)");
ABSL_FLAG(std::string, ca, "", "PEM root certificate(s) for TLS; implies --tls");
ABSL_FLAG(std::string, cert, "",
          "PEM client certificate (chain) for a server that requires one (mutual TLS; with "
          "--key; implies --tls)");
ABSL_FLAG(std::string, key, "", "PEM private key of --cert");
ABSL_FLAG(std::string, token, "", "Bearer token sent as 'authorization: Bearer <token>'");
ABSL_FLAG(std::string, token_file, "", "Read the bearer token from this file");

namespace bert {
namespace {

absl::StatusOr<std::string> ReadFile(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read the ", what, " file ", path));
  std::stringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

}  // namespace

ConnectionOptions ConnectionOptionsFromFlags() {
  ConnectionOptions options;
  options.server = absl::GetFlag(FLAGS_server);
  options.tls = absl::GetFlag(FLAGS_tls);
  options.ca_file = absl::GetFlag(FLAGS_ca);
  options.cert_file = absl::GetFlag(FLAGS_cert);
  options.key_file = absl::GetFlag(FLAGS_key);
  options.token = absl::GetFlag(FLAGS_token);
  options.token_file = absl::GetFlag(FLAGS_token_file);
  return options;
}

void ShowClientFlagsInHelp() {
  const auto in_client = [](absl::string_view file) { return absl::StrContains(file, "client/"); };
  absl::FlagsUsageConfig config;
  config.contains_help_flags = in_client;
  config.contains_helpshort_flags = in_client;
  absl::SetFlagsUsageConfig(config);
}

absl::StatusOr<Connection> Connection::Create(const ConnectionOptions& options) {
  if (options.server.empty()) return absl::InvalidArgumentError("no server address");
  for (const absl::string_view scheme : {"http://", "https://", "grpc://", "grpcs://"}) {
    if (absl::StartsWith(options.server, scheme)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--server=", options.server, ": give HOST:PORT (or unix:PATH), not a URL; TLS is --tls"));
    }
  }
  Connection connection;
  connection.server_ = options.server;
  if (options.cert_file.empty() != options.key_file.empty()) {
    return absl::InvalidArgumentError("--cert and --key go together");
  }
  connection.tls_ = options.tls || !options.ca_file.empty() || !options.cert_file.empty();
  if (!options.cert_file.empty()) {
    absl::StatusOr<std::string> chain = ReadFile(options.cert_file, "certificate");
    if (!chain.ok()) return chain.status();
    absl::StatusOr<std::string> key = ReadFile(options.key_file, "key");
    if (!key.ok()) return key.status();
    connection.cert_chain_ = *std::move(chain);
    connection.private_key_ = *std::move(key);
  }
  if (!options.ca_file.empty()) {
    absl::StatusOr<std::string> certs = ReadFile(options.ca_file, "CA");
    if (!certs.ok()) return certs.status();
    connection.root_certs_ = *std::move(certs);
  }
  connection.token_ = options.token;
  if (!options.token_file.empty()) {
    absl::StatusOr<std::string> token = ReadFile(options.token_file, "token");
    if (!token.ok()) return token.status();
    connection.token_ = std::string(absl::StripAsciiWhitespace(*token));
  }
  return connection;
}

bool IsLoopbackTarget(absl::string_view server) {
  if (!absl::ConsumePrefix(&server, "dns:///")) absl::ConsumePrefix(&server, "dns:");
  if (!absl::ConsumePrefix(&server, "ipv4:")) absl::ConsumePrefix(&server, "ipv6:");
  // HOST:PORT, [HOST]:PORT, or a bare host.
  absl::string_view host = server;
  if (absl::ConsumePrefix(&host, "[")) {
    host = host.substr(0, host.find(']'));
  } else if (host.find(':') == host.rfind(':')) {
    host = host.substr(0, host.find(':'));
  }  // else an IPv6 literal without brackets or port, as it is
  std::string name = absl::AsciiStrToLower(host);
  if (!name.empty() && name.back() == '.') name.pop_back();  // a fully qualified "localhost."
  if (name == "localhost" || name == "::1" || name == "0.0.0.0" || name == "::") return true;
  // An IPv4 literal in 127.0.0.0/8, also IPv4-mapped (::ffff:127.x.y.z); not a name that
  // merely starts with "127.".
  if (absl::StartsWith(name, "::ffff:")) name.erase(0, 7);
  in_addr v4{};
  return inet_pton(AF_INET, name.c_str(), &v4) == 1 && (ntohl(v4.s_addr) >> 24) == 127;
}

std::shared_ptr<grpc::Channel> Connection::NewChannel(int index) const {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  // gRPC sends even a loopback target through an http_proxy/grpc_proxy from the environment
  // unless no_proxy names it (a container's runtime may set them for every process): this
  // host's own server is never reached through a proxy.
  if (IsLoopbackTarget(server_)) args.SetInt(GRPC_ARG_ENABLE_HTTP_PROXY, 0);
  // Channels with equal arguments share gRPC's subchannel (one connection); a distinct
  // argument per index keeps them apart.
  args.SetInt("bert.channel_index", index);
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  if (tls_) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = root_certs_;
    ssl.pem_cert_chain = cert_chain_;
    ssl.pem_private_key = private_key_;
    credentials = grpc::SslCredentials(ssl);
  } else {
    credentials = grpc::InsecureChannelCredentials();
  }
  return grpc::CreateCustomChannel(server_, credentials, args);
}

void Connection::Prepare(grpc::ClientContext* context,
                         std::chrono::system_clock::time_point deadline) const {
  context->set_deadline(deadline);
  if (!token_.empty()) context->AddMetadata("authorization", absl::StrCat("Bearer ", token_));
}

}  // namespace bert
