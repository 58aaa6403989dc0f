#include "server/grpc/wire.h"

#include "gtest/gtest.h"

namespace bert {
namespace {

// Serializes `request` with the marker text "@@" replaced by an invalid byte sequence.
std::string WithInvalidUtf8(const google::protobuf::MessageLite& request) {
  std::string wire = request.SerializeAsString();
  const size_t at = wire.find("@@");
  EXPECT_NE(at, std::string::npos);
  wire[at] = '\xff';
  wire[at + 1] = '\xfe';
  return wire;
}

grpc::ByteBuffer ToBuffer(const std::string& bytes) {
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

TEST(WireTest, NamesTheFieldWithInvalidUtf8) {
  v1::EmbedRequest request;
  request.add_inputs()->mutable_text()->set_text_a("fine");
  request.add_inputs()->mutable_tokens()->add_input_word_ids(5);
  auto* pair = request.add_inputs()->mutable_text();
  pair->set_text_a("also fine");
  pair->set_text_b("bad @@ here");
  request.set_seq_length(16);
  const std::string wire = WithInvalidUtf8(request);
  EXPECT_EQ(FindInvalidUtf8InEmbedRequest(wire), "inputs[2].text.text_b");
  v1::EmbedRequest parsed;
  absl::Status s = ParseEmbedRequest(ToBuffer(wire), &parsed);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "inputs[2].text.text_b: invalid UTF-8");
}

TEST(WireTest, RequestIdAndTokenizeRequests) {
  v1::EmbedRequest request;
  request.add_inputs()->mutable_text()->set_text_a("x");
  request.set_request_id("id @@");
  EXPECT_EQ(FindInvalidUtf8InEmbedRequest(WithInvalidUtf8(request)), "request_id");

  v1::TokenizeRequest tokenize;
  tokenize.add_inputs()->set_text_a("ok");
  tokenize.add_inputs()->set_text_a("@@");
  v1::TokenizeRequest parsed;
  absl::Status s = ParseTokenizeRequest(ToBuffer(WithInvalidUtf8(tokenize)), &parsed);
  EXPECT_EQ(s.message(), "inputs[1].text_a: invalid UTF-8");
}

TEST(WireTest, OnlyValidUtf8RequestIdsAreEchoed) {
  // What a parse that failed on the request_id's own bytes leaves behind.
  v1::EmbedRequest partial;
  ASSERT_FALSE(ParseEmbedRequest(ToBuffer(std::string("\x4a\x02"
                                                      "a\xff",
                                                      4)),
                                 &partial)
                   .ok());
  EXPECT_EQ(EchoableRequestId(partial), "");
  partial.set_request_id("bad \xc3");
  EXPECT_EQ(EchoableRequestId(partial), "");
  v1::EmbedRequest request;
  request.set_request_id("r\xc3\xa9q-7");
  EXPECT_EQ(EchoableRequestId(request), "r\xc3\xa9q-7");
}

TEST(WireTest, ValidRequestsRoundTrip) {
  v1::EmbedRequest request;
  request.add_inputs()->mutable_text()->set_text_a("caf\xc3\xa9");
  request.add_heads(v1::HEAD_SEQUENCE);
  grpc::ByteBuffer buffer;
  Serialize(request, &buffer);
  v1::EmbedRequest parsed;
  ASSERT_TRUE(ParseEmbedRequest(buffer, &parsed).ok());
  EXPECT_EQ(parsed.inputs(0).text().text_a(), "caf\xc3\xa9");
  EXPECT_EQ(parsed.heads(0), v1::HEAD_SEQUENCE);
  EXPECT_EQ(FindInvalidUtf8InEmbedRequest(request.SerializeAsString()), "");
}

TEST(WireTest, GarbageIsInvalidArgument) {
  v1::EmbedRequest parsed;
  absl::Status s = ParseEmbedRequest(ToBuffer(std::string("\x0a\xff\xff\xff", 4)), &parsed);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace bert
