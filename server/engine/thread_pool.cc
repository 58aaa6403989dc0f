#include "server/engine/thread_pool.h"

#include <algorithm>

namespace bert {

ThreadPool::ThreadPool(int num_threads) : num_threads_(std::max(1, num_threads)) {
  for (int i = 1; i < num_threads_; ++i) workers_.emplace_back([this, i] { WorkerLoop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void ThreadPool::ParallelFor(int num_parts, const std::function<void(int)>& fn) {
  if (num_parts <= 0) return;
  if (num_threads_ == 1 || num_parts == 1) {
    for (int p = 0; p < num_parts; ++p) fn(p);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    fn_ = &fn;
    num_parts_ = num_parts;
    pending_ = num_threads_ - 1;
    ++generation_;
  }
  work_cv_.notify_all();
  for (int p = 0; p < num_parts; p += num_threads_) fn(p);
  std::unique_lock<std::mutex> lock(mu_);
  done_cv_.wait(lock, [this] { return pending_ == 0; });
  fn_ = nullptr;
}

void ThreadPool::WorkerLoop(int index) {
  uint64_t seen = 0;
  while (true) {
    const std::function<void(int)>* fn;
    int num_parts;
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_cv_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
      fn = fn_;
      num_parts = num_parts_;
    }
    for (int p = index; p < num_parts; p += num_threads_) (*fn)(p);
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (--pending_ == 0) done_cv_.notify_one();
    }
  }
}

}  // namespace bert
