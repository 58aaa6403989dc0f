#include "server/grpc/send_watchdog.h"

#include <atomic>
#include <thread>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace bert {
namespace {

// Counts its cancellations; `on_cancel` (if set) runs inside TryCancel, as gRPC may run a
// call's reactions there.
class FakeCall : public Cancellable {
 public:
  void TryCancel() override {
    ++cancels;
    if (on_cancel) on_cancel();
  }
  std::atomic<int> cancels{0};
  std::function<void()> on_cancel;
};

TEST(SendWatchdogTest, CancelsOnlyCallsPastTheLimit) {
  SendWatchdog watchdog(absl::Milliseconds(200));
  FakeCall slow, quick;
  watchdog.Watch(&slow);
  const uint64_t quick_id = watchdog.Watch(&quick);
  watchdog.Unwatch(quick_id);  // its answer went out in time
  absl::SleepFor(absl::Milliseconds(600));
  EXPECT_EQ(slow.cancels, 1);  // once, then no longer watched
  EXPECT_EQ(quick.cancels, 0);
  EXPECT_EQ(watchdog.cancelled(), 1);
}

TEST(SendWatchdogTest, NoLimitWatchesNothing) {
  SendWatchdog watchdog(absl::ZeroDuration());
  FakeCall call;
  EXPECT_EQ(watchdog.Watch(&call), 0u);
  watchdog.Unwatch(0);
  EXPECT_EQ(call.cancels, 0);
}

TEST(SendWatchdogTest, AnUnwatchInsideTryCancelDoesNotWait) {
  // The call's OnDone, run inside TryCancel on the watchdog's own thread, unwatches it.
  SendWatchdog watchdog(absl::Milliseconds(50));
  FakeCall call;
  absl::Notification unwatched;
  uint64_t id = 0;
  call.on_cancel = [&] {
    watchdog.Unwatch(id);
    unwatched.Notify();
  };
  id = watchdog.Watch(&call);
  EXPECT_TRUE(unwatched.WaitForNotificationWithTimeout(absl::Seconds(10)));
}

TEST(SendWatchdogTest, AnUnwatchFromElsewhereWaitsForTryCancelToReturn) {
  // OnDone on another thread must not let the context go while TryCancel still runs.
  SendWatchdog watchdog(absl::Milliseconds(50));
  FakeCall call;
  absl::Notification in_cancel, release;
  std::atomic<bool> cancel_returned{false};
  call.on_cancel = [&] {
    in_cancel.Notify();
    release.WaitForNotification();
    cancel_returned = true;
  };
  const uint64_t id = watchdog.Watch(&call);
  ASSERT_TRUE(in_cancel.WaitForNotificationWithTimeout(absl::Seconds(10)));
  std::thread done([&] {
    watchdog.Unwatch(id);
    EXPECT_TRUE(cancel_returned.load());  // not before TryCancel returned
  });
  absl::SleepFor(absl::Milliseconds(100));
  release.Notify();
  done.join();
}

}  // namespace
}  // namespace bert
