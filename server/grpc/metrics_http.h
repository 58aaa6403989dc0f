// A minimal HTTP/1.1 listener that answers `GET /metrics` (and HEAD) with the Prometheus
// text format of a registry, and the two probes of load balancers and orchestrators that
// speak HTTP only: `/livez` (200 while the listener answers) and, given a readiness source,
// `/readyz` (200 "SERVING" while it says ready, else 503 "NOT_SERVING"). Other paths get
// 404, other methods 405, a request head that is not HTTP 400, one over kMaxHeadBytes 431,
// one not sent within kReadTimeoutMs 408. Each
// connection is served on a thread of its own, at most kMaxConnections at once (more wait in
// the listen backlog) and kMaxConnectionsPerClient from one address (more are closed at once,
// so that one client's idle connections cannot hold the scrapers out), and within deadlines:
// its request head must arrive within kReadTimeoutMs and its answer be taken within
// kWriteTimeoutMs. The listener has no authentication: bind it where only scrapers reach it.
//
// Why not prometheus-cpp's Exposer: its embedded civetweb crashes serving a request once
// libcudart is loaded in the process (reproduced with Debian's prometheus-cpp 1.0.1 and
// CUDA 13's libcudart via LD_PRELOAD), and the CUDA backend links libcudart.
// Thread-safe; the destructor stops and joins the thread.
#ifndef BERT_SERVER_GRPC_METRICS_HTTP_H_
#define BERT_SERVER_GRPC_METRICS_HTTP_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "prometheus/registry.h"

namespace bert {

class MetricsHttpServer {
 public:
  static constexpr int kMaxConnections = 32;
  static constexpr int kMaxConnectionsPerClient = 8;
  static constexpr int kReadTimeoutMs = 2000;
  static constexpr int kWriteTimeoutMs = 5000;
  static constexpr size_t kMaxHeadBytes = 16384;

  // Binds "host:port" (IPv4 literal or "localhost"; port 0 picks one) and starts serving.
  // `ready` (thread-safe, called on each `/readyz`; null: no `/readyz`, 404) says whether the
  // server takes calls.
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(
      const std::string& address, std::shared_ptr<prometheus::Registry> registry,
      std::function<bool()> ready = nullptr);
  ~MetricsHttpServer();
  MetricsHttpServer(const MetricsHttpServer&) = delete;
  MetricsHttpServer& operator=(const MetricsHttpServer&) = delete;

  int port() const { return port_; }

 private:
  MetricsHttpServer(int fd, int port, std::shared_ptr<prometheus::Registry> registry,
                    std::function<bool()> ready);
  void Serve();
  // Starts a handler thread for the accepted connection `fd` from `client` (an IPv4 address),
  // or closes it when that client has its share of connections; false when no thread could
  // be started.
  bool Dispatch(int fd, uint32_t client);
  void HandleConnection(int fd);

  const int listen_fd_;
  const int port_;
  std::shared_ptr<prometheus::Registry> registry_;
  const std::function<bool()> ready_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
  // The connections' handler threads running, in all and by client address. Shared with
  // them, so that the mutex outlives the last handler's unlock even when the destructor,
  // waiting for it, goes on at once.
  struct Handlers {
    absl::Mutex mu;
    int running ABSL_GUARDED_BY(mu) = 0;
    absl::flat_hash_map<uint32_t, int> by_client ABSL_GUARDED_BY(mu);
    void Release(uint32_t client) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu);
  };
  const std::shared_ptr<Handlers> handlers_ = std::make_shared<Handlers>();
};

}  // namespace bert

#endif  // BERT_SERVER_GRPC_METRICS_HTTP_H_
