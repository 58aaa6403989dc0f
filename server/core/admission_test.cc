#include "server/core/admission.h"

#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace bert {
namespace {

// Raises `*max` to `value` if it is lower (from any number of threads).
template <typename T>
void RaiseTo(std::atomic<T>* max, T value) {
  T seen = max->load();
  while (value > seen && !max->compare_exchange_weak(seen, value)) {
  }
}

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
          RaiseTo(&max_seen, admission.in_flight());
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_LE(max_seen.load(), 5);
  EXPECT_GE(max_seen.load(), 1);
  EXPECT_EQ(admission.in_flight(), 0);
}

TEST(AdmissionTest, AnsweredRequestsGiveTheirPlacesUpToTheSendingLimit) {
  Admission admission(2);
  Admission::Permit a = admission.TryAcquire();
  Admission::Permit b = admission.TryAcquire();
  EXPECT_FALSE(admission.TryAcquire().valid());
  a.MarkAnswered();  // being sent: its place goes to the next request
  EXPECT_TRUE(a.sending());
  EXPECT_EQ(admission.working(), 1);
  EXPECT_EQ(admission.in_flight(), 2);
  Admission::Permit c = admission.TryAcquire();
  EXPECT_TRUE(c.valid());
  b.MarkAnswered();
  c.MarkAnswered();  // two answers are already being sent: c keeps its place
  EXPECT_FALSE(c.sending());
  EXPECT_EQ(admission.sending(), 2);
  Admission::Permit d = admission.TryAcquire();
  EXPECT_TRUE(d.valid());
  EXPECT_FALSE(admission.TryAcquire().valid());  // c and d hold both places
  Admission::Permit moved;
  moved = std::move(a);  // (move assignment keeps the permit's kind)
  EXPECT_TRUE(moved.sending());
  EXPECT_FALSE(a.sending());
  moved.Reset();  // an answer sent: its sending place is free, not a working one
  EXPECT_EQ(admission.sending(), 1);
  EXPECT_FALSE(admission.TryAcquire().valid());
  c.MarkAnswered();  // now there is room
  EXPECT_TRUE(c.sending());
  EXPECT_TRUE(admission.TryAcquire().valid());
  b.Reset();
  c.Reset();
  d.Reset();
  EXPECT_EQ(admission.in_flight(), 0);
}

TEST(AdmissionTest, ConcurrentMovesNeverLoseOrExceedAPlace) {
  Admission admission(4);
  std::atomic<int> max_sending{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 2000; ++i) {
        Admission::Permit p = admission.TryAcquire();
        if (!p.valid()) continue;
        EXPECT_GE(admission.in_flight(), 1);
        p.MarkAnswered();
        RaiseTo(&max_sending, admission.sending());
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_LE(max_sending.load(), 4);
  EXPECT_GE(max_sending.load(), 1);
  EXPECT_EQ(admission.in_flight(), 0);
  EXPECT_EQ(admission.working(), 0);
  EXPECT_EQ(admission.sending(), 0);
}

TEST(AdmissionTest, BytesAreRefusedBeyondTheBudgetAndReturnedOnDestruction) {
  Admission admission(4, /*byte_limit=*/100);
  Admission::Bytes a = admission.TryReserveBytes(60);
  EXPECT_TRUE(a.valid());
  EXPECT_EQ(a.count(), 60);
  EXPECT_FALSE(admission.TryReserveBytes(41).valid());
  Admission::Bytes b = admission.TryReserveBytes(40);
  EXPECT_TRUE(b.valid());
  EXPECT_EQ(admission.bytes_reserved(), 100);
  Admission::Bytes moved = std::move(a);
  EXPECT_FALSE(a.valid());
  EXPECT_EQ(admission.bytes_reserved(), 100);
  moved = Admission::Bytes();
  EXPECT_EQ(admission.bytes_reserved(), 40);
  EXPECT_FALSE(admission.TryReserveBytes(101).valid());  // never fits
  b.Reset();
  EXPECT_EQ(admission.bytes_reserved(), 0);
}

TEST(AdmissionTest, APermitReturnsTheBytesItHolds) {
  Admission admission(1, /*byte_limit=*/100);
  Admission::Permit permit = admission.TryAcquire();
  permit.Hold(admission.TryReserveBytes(70));
  EXPECT_EQ(admission.bytes_reserved(), 70);
  Admission::Permit moved = std::move(permit);
  EXPECT_EQ(admission.bytes_reserved(), 70);
  moved.Reset();
  EXPECT_EQ(admission.bytes_reserved(), 0);
  EXPECT_EQ(admission.in_flight(), 0);
}

TEST(AdmissionTest, WithoutABudgetBytesAreCountedButNeverRefused) {
  Admission admission(1);
  Admission::Bytes a = admission.TryReserveBytes(int64_t{1} << 40);
  Admission::Bytes b = admission.TryReserveBytes(int64_t{1} << 40);
  EXPECT_TRUE(a.valid() && b.valid());
  EXPECT_EQ(admission.bytes_reserved(), int64_t{1} << 41);
}

TEST(AdmissionTest, ConcurrentReservationsNeverPassTheBudget) {
  Admission admission(1, /*byte_limit=*/1000);
  std::atomic<int64_t> max_seen{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 2000; ++i) {
        Admission::Bytes bytes = admission.TryReserveBytes(100 + 37 * t);
        if (bytes.valid()) {
          RaiseTo(&max_seen, admission.bytes_reserved());
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_LE(max_seen.load(), 1000);
  EXPECT_GT(max_seen.load(), 0);
  EXPECT_EQ(admission.bytes_reserved(), 0);
}

}  // namespace
}  // namespace bert
