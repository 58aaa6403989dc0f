#include "client/connection.h"

#include "gtest/gtest.h"

namespace bert {
namespace {

TEST(IsLoopbackTarget, NamesThisHostsLoopbackOnly) {
  for (const char* target :
       {"127.0.0.1:50051", "127.1.2.3:1", "localhost:50051", "localhost", "[::1]:50051", "::1",
        "dns:///localhost:50051", "ipv4:127.0.0.1:50051", "ipv6:[::1]:50051", "LOCALHOST:1",
        "localhost.:1", "dns:localhost:1", "0.0.0.0:50051", "[::ffff:127.0.0.1]:1"}) {
    EXPECT_TRUE(IsLoopbackTarget(target)) << target;
  }
  for (const char* target :
       {"10.0.0.1:50051", "bert.default.svc:50051", "128.0.0.1:1", "[::2]:50051",
        "dns:///bert:50051", "localhost.example.com:1", "unix:/run/bert/bert.sock", "",
        "127.example.com:1", "127.0.0.1.example.com:1", "[::ffff:10.0.0.1]:1"}) {
    EXPECT_FALSE(IsLoopbackTarget(target)) << target;
  }
}

}  // namespace
}  // namespace bert
