// A fixed set of worker threads for fork-join loops (ParallelFor), used by the CPU engine to
// split each op across cores. The calling thread takes part, so a pool of n threads starts
// n - 1 workers. One ParallelFor at a time (the engine is single-caller); not reentrant.
#ifndef BERT_SERVER_ENGINE_THREAD_POOL_H_
#define BERT_SERVER_ENGINE_THREAD_POOL_H_

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace bert {

class ThreadPool {
 public:
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return num_threads_; }

  // Calls fn(part) for part in [0, num_parts), spreading parts over the threads, and returns
  // when all are done. Parts are assigned statically (part i on thread i % num_threads), so
  // the split of work — and thus every result — does not depend on timing.
  void ParallelFor(int num_parts, const std::function<void(int)>& fn);

 private:
  void WorkerLoop(int index);

  const int num_threads_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable work_cv_;
  std::condition_variable done_cv_;
  const std::function<void(int)>* fn_ = nullptr;  // guarded by mu_
  int num_parts_ = 0;                              // guarded by mu_
  uint64_t generation_ = 0;                        // guarded by mu_
  int pending_ = 0;                                // guarded by mu_
  bool stop_ = false;                              // guarded by mu_
};

}  // namespace bert

#endif  // BERT_SERVER_ENGINE_THREAD_POOL_H_
