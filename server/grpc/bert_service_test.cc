#include "server/grpc/bert_service.h"

#include <string>

#include "gtest/gtest.h"

namespace bert {
namespace {

v1::EmbedResponse WithTensorBytes(size_t bytes) {
  v1::EmbedResponse response;
  response.add_results()->mutable_sequence_output()->set_data(std::string(bytes, '\0'));
  return response;
}

TEST(BertServiceTest, AnAnswerOverTheMessageLimitIsRefusedBeforeItIsSent) {
  ServiceConfig config;
  config.max_message_bytes = 1000;
  const BertServiceImpl service(config, nullptr);
  EXPECT_TRUE(service.CheckAnswerSize(WithTensorBytes(900)).ok());
  const v1::EmbedResponse over = WithTensorBytes(1000);  // plus its framing: over 1,000
  const absl::Status status = service.CheckAnswerSize(over);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find(std::to_string(over.ByteSizeLong()) +
                                  " bytes, over the "
                                  "server's 1000-byte message limit"),
            absl::string_view::npos)
      << status;
  config.max_message_bytes = 0;  // unchecked
  EXPECT_TRUE(BertServiceImpl(config, nullptr).CheckAnswerSize(over).ok());
}

}  // namespace
}  // namespace bert
