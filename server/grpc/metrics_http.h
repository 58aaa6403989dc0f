// A minimal HTTP/1.1 listener that answers `GET /metrics` with the Prometheus text format
// of a registry (and 404 otherwise), one connection at a time, on its own thread.
//
// Why not prometheus-cpp's Exposer: its embedded civetweb crashes serving a request once
// libcudart is loaded in the process (reproduced with Debian's prometheus-cpp 1.0.1 and
// CUDA 13's libcudart via LD_PRELOAD), and the CUDA backend links libcudart.
// Thread-safe; the destructor stops and joins the thread.
#ifndef BERT_SERVER_GRPC_METRICS_HTTP_H_
#define BERT_SERVER_GRPC_METRICS_HTTP_H_

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "prometheus/registry.h"

namespace bert {

class MetricsHttpServer {
 public:
  // Binds "host:port" (IPv4 literal or "localhost"; port 0 picks one) and starts serving.
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(
      const std::string& address, std::shared_ptr<prometheus::Registry> registry);
  ~MetricsHttpServer();
  MetricsHttpServer(const MetricsHttpServer&) = delete;
  MetricsHttpServer& operator=(const MetricsHttpServer&) = delete;

  int port() const { return port_; }

 private:
  MetricsHttpServer(int fd, int port, std::shared_ptr<prometheus::Registry> registry);
  void Serve();
  void HandleConnection(int fd);

  const int listen_fd_;
  const int port_;
  std::shared_ptr<prometheus::Registry> registry_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

}  // namespace bert

#endif  // BERT_SERVER_GRPC_METRICS_HTTP_H_
