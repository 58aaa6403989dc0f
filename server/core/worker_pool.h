// A fixed pool of threads running queued closures in FIFO order (tokenization and
// response assembly). The queue is not bounded here: admission bounds the requests that
// can feed it. Thread-safe. The destructor runs what is queued, then joins.
#ifndef BERT_SERVER_CORE_WORKER_POOL_H_
#define BERT_SERVER_CORE_WORKER_POOL_H_

#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace bert {

class WorkerPool {
 public:
  // Throws std::system_error, with no thread left running, when a thread cannot be started
  // (the process's thread limit).
  explicit WorkerPool(int num_threads);
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  void Schedule(std::function<void()> task);

 private:
  void Run();
  // Lets the threads finish the queued tasks and joins them.
  void StopAndJoin();

  absl::Mutex mu_;
  std::deque<std::function<void()>> tasks_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace bert

#endif  // BERT_SERVER_CORE_WORKER_POOL_H_
