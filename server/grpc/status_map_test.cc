#include "server/grpc/status_map.h"

#include "gtest/gtest.h"

namespace bert {
namespace {

TEST(StatusMapTest, TableMatchesTheContract) {
  struct Case {
    absl::Status status;
    grpc::StatusCode code;
  };
  const Case cases[] = {
      {absl::OkStatus(), grpc::StatusCode::OK},
      {absl::InvalidArgumentError("x"), grpc::StatusCode::INVALID_ARGUMENT},
      {absl::OutOfRangeError("x"), grpc::StatusCode::INVALID_ARGUMENT},
      {absl::ResourceExhaustedError("x"), grpc::StatusCode::RESOURCE_EXHAUSTED},
      {absl::UnavailableError("x"), grpc::StatusCode::UNAVAILABLE},
      {absl::DeadlineExceededError("x"), grpc::StatusCode::DEADLINE_EXCEEDED},
      {absl::CancelledError("x"), grpc::StatusCode::CANCELLED},
      {absl::UnauthenticatedError("x"), grpc::StatusCode::UNAUTHENTICATED},
      {absl::FailedPreconditionError("x"), grpc::StatusCode::FAILED_PRECONDITION},
      {absl::InternalError("x"), grpc::StatusCode::INTERNAL},
      {absl::UnknownError("x"), grpc::StatusCode::INTERNAL},
      {absl::DataLossError("x"), grpc::StatusCode::INTERNAL},
      {absl::NotFoundError("x"), grpc::StatusCode::INTERNAL},
  };
  for (const Case& c : cases) {
    const grpc::Status s = ToGrpcStatus(c.status);
    EXPECT_EQ(s.error_code(), c.code) << c.status;
    EXPECT_EQ(s.error_message(), std::string(c.status.message()));
  }
  EXPECT_STREQ(GrpcCodeName(grpc::StatusCode::RESOURCE_EXHAUSTED), "RESOURCE_EXHAUSTED");
}

}  // namespace
}  // namespace bert
