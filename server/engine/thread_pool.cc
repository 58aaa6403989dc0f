#include "server/engine/thread_pool.h"

#include <algorithm>
#include <chrono>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace bert {
namespace {

// How long an idle worker, or a caller waiting for the last parts, checks for work before it
// sleeps on a condition variable. The engine calls ParallelFor about a hundred times per
// batch, microseconds apart; a sleeping thread takes a futex wake-up (tens of microseconds in
// a VM) to join each time. 50 us made BERT-base ~1.2× faster on one sequence of 8-16 tokens
// on 2 threads, no different at 128 (bench/RESULTS_cpu.md); an idle engine spins for that
// long once, then sleeps.
constexpr auto kSpin = std::chrono::microseconds(50);

inline void CpuRelax() {
#if defined(__x86_64__)
  _mm_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Spins until done() or kSpin has passed.
template <typename Done>
void SpinUntil(Done done) {
  const auto deadline = std::chrono::steady_clock::now() + kSpin;
  while (!done() && std::chrono::steady_clock::now() < deadline) {
    for (int i = 0; i < 16; ++i) CpuRelax();
  }
}

}  // namespace

ThreadPool::ThreadPool(int num_threads) : num_threads_(std::max(1, num_threads)) {
  try {
    for (int i = 1; i < num_threads_; ++i) workers_.emplace_back([this] { WorkerLoop(); });
  } catch (...) {  // the threads started so far must not outlive the pool
    StopAndJoin();
    throw;
  }
}

ThreadPool::~ThreadPool() { StopAndJoin(); }

void ThreadPool::StopAndJoin() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  stopping_.store(true, std::memory_order_release);
  work_cv_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void ThreadPool::RunParts(uint32_t generation, int num_parts, const std::function<void(int)>& fn) {
  uint64_t current = ticket_.load(std::memory_order_acquire);
  while (true) {
    if (static_cast<uint32_t>(current >> 32) != generation) return;
    const int part = static_cast<int>(current & 0xffffffffu);
    if (part >= num_parts) return;
    if (!ticket_.compare_exchange_weak(current, current + 1, std::memory_order_acq_rel)) {
      continue;  // `current` was reloaded
    }
    fn(part);
    if (parts_done_.fetch_add(1, std::memory_order_acq_rel) + 1 == num_parts) {
      std::lock_guard<std::mutex> lock(mu_);
      done_cv_.notify_one();
    }
    current = ticket_.load(std::memory_order_acquire);
  }
}

void ThreadPool::ParallelFor(int num_parts, const std::function<void(int)>& fn) {
  if (num_parts <= 0) return;
  if (num_threads_ == 1 || num_parts == 1) {
    for (int p = 0; p < num_parts; ++p) fn(p);
    return;
  }
  uint32_t generation;
  {
    std::lock_guard<std::mutex> lock(mu_);
    generation = ++generation_;
    fn_ = &fn;
    num_parts_ = num_parts;
    parts_done_.store(0, std::memory_order_relaxed);
    ticket_.store(static_cast<uint64_t>(generation) << 32, std::memory_order_release);
    published_generation_.store(generation, std::memory_order_release);
  }
  work_cv_.notify_all();
  RunParts(generation, num_parts, fn);
  SpinUntil([&] { return parts_done_.load(std::memory_order_acquire) == num_parts; });
  std::unique_lock<std::mutex> lock(mu_);
  done_cv_.wait(lock, [&] { return parts_done_.load(std::memory_order_acquire) == num_parts; });
  // Late workers see a finished job (all parts claimed) and go back to waiting.
  fn_ = nullptr;
}

void ThreadPool::WorkerLoop() {
  uint32_t seen = 0;
  while (true) {
    const std::function<void(int)>* fn;
    int num_parts;
    uint32_t generation;
    SpinUntil([&] {
      return stopping_.load(std::memory_order_acquire) ||
             published_generation_.load(std::memory_order_acquire) != seen;
    });
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_cv_.wait(lock, [&] { return stop_ || (generation_ != seen && fn_ != nullptr); });
      if (stop_) return;
      seen = generation = generation_;
      fn = fn_;
      num_parts = num_parts_;
    }
    RunParts(generation, num_parts, *fn);
  }
}

}  // namespace bert
