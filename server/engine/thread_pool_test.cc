#include "server/engine/thread_pool.h"

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace bert {
namespace {

TEST(ThreadPoolTest, EveryPartRunsExactlyOnce) {
  for (int threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    EXPECT_EQ(pool.num_threads(), threads);
    for (int parts : {0, 1, 2, 5, 64}) {
      std::vector<std::atomic<int>> hits(parts);
      for (auto& h : hits) h = 0;
      pool.ParallelFor(parts, [&](int p) { hits[p]++; });
      for (int p = 0; p < parts; ++p) EXPECT_EQ(hits[p].load(), 1) << threads << " " << parts;
    }
  }
}

TEST(ThreadPoolTest, UsesSeveralThreadsAndIsReusable) {
  ThreadPool pool(2);
  bool saw_worker = false;
  for (int round = 0; round < 2000; ++round) {
    std::atomic<int> sum{0};
    std::vector<std::thread::id> ids(8);
    pool.ParallelFor(8, [&](int p) {
      ids[p] = std::this_thread::get_id();
      // Long enough that the woken worker usually claims some parts.
      for (int i = 0; i < 2000; ++i) sum += (i == p);
    });
    ASSERT_EQ(sum.load(), 8);
    for (const auto& id : ids) saw_worker |= id != std::this_thread::get_id();
  }
  EXPECT_TRUE(saw_worker);
}

TEST(ThreadPoolTest, ManyShortJobsBackToBack) {
  ThreadPool pool(3);
  std::atomic<int64_t> total{0};
  for (int round = 0; round < 20000; ++round) {
    pool.ParallelFor(1 + round % 5, [&](int p) { total += p + 1; });
  }
  int64_t expected = 0;
  for (int round = 0; round < 20000; ++round) {
    const int n = 1 + round % 5;
    expected += n * (n + 1) / 2;
  }
  EXPECT_EQ(total.load(), expected);
}

// Between jobs the workers spin for a while, then sleep: jobs far enough apart for them to
// fall asleep run every part too, with the workers taking part.
TEST(ThreadPoolTest, JobsAfterTheWorkersSleepRunEveryPart) {
  ThreadPool pool(3);
  bool saw_worker = false;
  for (int round = 0; round < 20; ++round) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));  // well past the spin
    std::vector<std::atomic<int>> hits(6);
    for (auto& h : hits) h = 0;
    std::vector<std::thread::id> ids(6);
    pool.ParallelFor(6, [&](int p) {
      ids[p] = std::this_thread::get_id();
      hits[p]++;
      std::this_thread::sleep_for(std::chrono::microseconds(200));  // lets a worker claim one
    });
    for (int p = 0; p < 6; ++p) ASSERT_EQ(hits[p].load(), 1) << "round " << round;
    for (const auto& id : ids) saw_worker |= id != std::this_thread::get_id();
  }
  EXPECT_TRUE(saw_worker);
}

TEST(ThreadPoolTest, ZeroOrNegativeThreadsMeansOne) {
  ThreadPool pool(0);
  EXPECT_EQ(pool.num_threads(), 1);
}

}  // namespace
}  // namespace bert
