#include "server/util/available_memory.h"

#include <gtest/gtest.h>

namespace bert {
namespace {

TEST(AvailableMemoryTest, MemAvailableInBytes) {
  EXPECT_EQ(ParseMemAvailable("MemTotal:       24000000 kB\nMemFree:  100 kB\n"
                              "MemAvailable:   23484024 kB\nBuffers: 1 kB\n"),
            int64_t{23484024} * 1024);
  EXPECT_EQ(ParseMemAvailable("MemTotal: 1 kB\n"), std::nullopt);
  EXPECT_EQ(ParseMemAvailable("MemAvailable: many kB\n"), std::nullopt);
}

TEST(AvailableMemoryTest, TheMemoryControllersCgroup) {
  bool v2 = true;
  // cgroup v1 (with a v2 line, as on hybrid systems): the memory controller's path.
  EXPECT_EQ(ParseMemoryCgroup("9:name=systemd:/\n4:memory:/api/abc\n3:cpuset:/\n0::/\n", &v2),
            "/api/abc");
  EXPECT_FALSE(v2);
  EXPECT_EQ(ParseMemoryCgroup("5:cpu,memory:/x:y\n", &v2), "/x:y");  // ':' inside the path
  EXPECT_FALSE(v2);
  // cgroup v2 only.
  EXPECT_EQ(ParseMemoryCgroup("0::/kubepods/pod1/c2\n", &v2), "/kubepods/pod1/c2");
  EXPECT_TRUE(v2);
  EXPECT_EQ(ParseMemoryCgroup("3:cpuset:/\n", &v2), std::nullopt);
}

TEST(AvailableMemoryTest, LimitsAndNoLimit) {
  EXPECT_EQ(ParseCgroupLimit("4294967296\n"), int64_t{4294967296});
  EXPECT_EQ(ParseCgroupLimit("max\n"), std::nullopt);                  // v2: no limit
  EXPECT_EQ(ParseCgroupLimit("9223372036854771712\n"), std::nullopt);  // v1: no limit
}

TEST(AvailableMemoryTest, ThisMachineHasSome) {
  const std::optional<int64_t> available = AvailableMemoryBytes();
  ASSERT_TRUE(available.has_value());  // Linux with /proc: the build's only platform
  EXPECT_GT(*available, 0);
}

}  // namespace
}  // namespace bert
