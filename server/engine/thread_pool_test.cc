#include "server/engine/thread_pool.h"

#include <atomic>
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
  for (int round = 0; round < 200; ++round) {
    std::vector<std::thread::id> ids(2);
    pool.ParallelFor(2, [&](int p) { ids[p] = std::this_thread::get_id(); });
    ASSERT_NE(ids[0], ids[1]);
    ASSERT_EQ(ids[0], std::this_thread::get_id());  // the caller takes part 0
  }
}

TEST(ThreadPoolTest, ZeroOrNegativeThreadsMeansOne) {
  ThreadPool pool(0);
  EXPECT_EQ(pool.num_threads(), 1);
}

}  // namespace
}  // namespace bert
