// A fixed set of worker threads for fork-join loops (ParallelFor), used by the CPU engine to
// split each op across cores. The calling thread takes part, so a pool of n threads starts
// n - 1 workers. One ParallelFor at a time (the engine is single-caller); not reentrant.
#ifndef BERT_SERVER_ENGINE_THREAD_POOL_H_
#define BERT_SERVER_ENGINE_THREAD_POOL_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace bert {

class ThreadPool {
 public:
  // Throws std::system_error, with no thread left running, when a thread cannot be started
  // (the process's thread limit).
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return num_threads_; }

  // Calls fn(part) once for every part in [0, num_parts) and returns when all are done.
  // Threads claim parts as they become free, so a thread that the OS deschedules (a busy
  // machine) does not hold the others up. Which thread runs a part never changes what the
  // part computes: results depend on how the caller splits the work, not on timing.
  void ParallelFor(int num_parts, const std::function<void(int)>& fn);

 private:
  void WorkerLoop();
  // Tells the workers to stop and joins them.
  void StopAndJoin();
  // Claims and runs parts of job `generation` until none is left.
  void RunParts(uint32_t generation, int num_parts, const std::function<void(int)>& fn);

  const int num_threads_;
  std::vector<std::thread> workers_;
  // generation_, readable without the lock: idle workers and a waiting caller spin on it and
  // on parts_done_ for a short while before they sleep (see the .cc).
  std::atomic<uint32_t> published_generation_{0};
  std::atomic<bool> stopping_{false};
  std::mutex mu_;
  std::condition_variable work_cv_;
  std::condition_variable done_cv_;
  const std::function<void(int)>* fn_ = nullptr;  // guarded by mu_
  int num_parts_ = 0;                             // guarded by mu_
  uint32_t generation_ = 0;                       // guarded by mu_
  bool stop_ = false;                             // guarded by mu_
  // (generation << 32) | next unclaimed part: a claim succeeds only for the current job.
  std::atomic<uint64_t> ticket_{0};
  std::atomic<int> parts_done_{0};
};

}  // namespace bert

#endif  // BERT_SERVER_ENGINE_THREAD_POOL_H_
