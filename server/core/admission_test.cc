#include "server/core/admission.h"

#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace bert {
namespace {

TEST(AdmissionTest, RefusesBeyondLimitAndReleasesOnDestruction) {
  Admission admission(2);
  Admission::Permit a = admission.TryAcquire();
  Admission::Permit b = admission.TryAcquire();
  EXPECT_TRUE(a.valid());
  EXPECT_TRUE(b.valid());
  EXPECT_FALSE(admission.TryAcquire().valid());
  EXPECT_EQ(admission.in_flight(), 2);
  a.Reset();
  EXPECT_EQ(admission.in_flight(), 1);
  {
    Admission::Permit c = admission.TryAcquire();
    EXPECT_TRUE(c.valid());
    EXPECT_FALSE(admission.TryAcquire().valid());
  }
  EXPECT_EQ(admission.in_flight(), 1);
}

TEST(AdmissionTest, MoveTransfersTheSlot) {
  Admission admission(1);
  Admission::Permit a = admission.TryAcquire();
  Admission::Permit b = std::move(a);
  EXPECT_FALSE(a.valid());
  EXPECT_TRUE(b.valid());
  EXPECT_EQ(admission.in_flight(), 1);
  b = Admission::Permit();
  EXPECT_EQ(admission.in_flight(), 0);
}

TEST(AdmissionTest, ConcurrentAcquireNeverExceedsLimit) {
  Admission admission(5);
  std::atomic<int> max_seen{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 2000; ++i) {
        Admission::Permit p = admission.TryAcquire();
        if (p.valid()) {
          int now = admission.in_flight();
          int prev = max_seen.load();
          while (now > prev && !max_seen.compare_exchange_weak(prev, now)) {
          }
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_LE(max_seen.load(), 5);
  EXPECT_GE(max_seen.load(), 1);
  EXPECT_EQ(admission.in_flight(), 0);
}

}  // namespace
}  // namespace bert
