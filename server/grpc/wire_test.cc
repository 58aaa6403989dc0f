#include "server/grpc/wire.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
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
  EXPECT_EQ(FindInvalidUtf8Field<v1::EmbedRequest>(wire), "inputs[2].text.text_b");
  v1::EmbedRequest parsed;
  absl::Status s = ParseEmbedRequest(ToBuffer(wire), WireLimits(), &parsed);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "inputs[2].text.text_b: invalid UTF-8");
}

TEST(WireTest, RequestIdAndTokenizeRequests) {
  v1::EmbedRequest request;
  request.add_inputs()->mutable_text()->set_text_a("x");
  request.set_request_id("id @@");
  EXPECT_EQ(FindInvalidUtf8Field<v1::EmbedRequest>(WithInvalidUtf8(request)), "request_id");
  request.set_request_id("id");
  request.set_prompt_name("query @@");
  v1::EmbedRequest parsed_embed;
  EXPECT_EQ(
      ParseEmbedRequest(ToBuffer(WithInvalidUtf8(request)), WireLimits(), &parsed_embed).message(),
      "prompt_name: invalid UTF-8");

  v1::TokenizeRequest tokenize;
  tokenize.add_inputs()->set_text_a("ok");
  tokenize.add_inputs()->set_text_a("@@");
  v1::TokenizeRequest parsed;
  absl::Status s = ParseTokenizeRequest(ToBuffer(WithInvalidUtf8(tokenize)), WireLimits(), &parsed);
  EXPECT_EQ(s.message(), "inputs[1].text_a: invalid UTF-8");
  tokenize.mutable_inputs(1)->set_text_a("fine");
  tokenize.set_prompt_name("@@");
  EXPECT_EQ(
      ParseTokenizeRequest(ToBuffer(WithInvalidUtf8(tokenize)), WireLimits(), &parsed).message(),
      "prompt_name: invalid UTF-8");
}

TEST(WireTest, OnlyValidUtf8RequestIdsAreEchoed) {
  // What a parse that failed on the request_id's own bytes leaves behind.
  v1::EmbedRequest partial;
  ASSERT_FALSE(ParseEmbedRequest(ToBuffer(std::string("\x4a\x02"
                                                      "a\xff",
                                                      4)),
                                 WireLimits(), &partial)
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
  ASSERT_TRUE(ParseEmbedRequest(buffer, WireLimits(), &parsed).ok());
  EXPECT_EQ(parsed.inputs(0).text().text_a(), "caf\xc3\xa9");
  EXPECT_EQ(parsed.heads(0), v1::HEAD_SEQUENCE);
  EXPECT_EQ(FindInvalidUtf8Field<v1::EmbedRequest>(request.SerializeAsString()), "");
}

// A request with `n` entries of each repeated field: empty inputs, heads packed, layers
// unpacked (as a hostile client may write them).
std::string ManyEntries(int inputs, int heads, int layers) {
  std::string wire;
  for (int i = 0; i < inputs; ++i) wire += std::string("\x0a\x00", 2);  // inputs = 1, empty
  if (heads > 0) {
    wire += '\x1a';  // heads = 3, packed
    wire += static_cast<char>(heads);
    wire += std::string(heads, '\x01');
  }
  for (int i = 0; i < layers; ++i) wire += std::string("\x20\x00", 2);  // layers = 4, varint 0
  return wire;
}

TEST(WireTest, RepeatedFieldsOverTheLimitsAreRefusedBeforeParsing) {
  WireLimits limits;
  limits.max_inputs = 4;
  limits.max_heads = 5;
  limits.max_layers = 12;
  EXPECT_TRUE(CheckRequestWire<v1::EmbedRequest>(ManyEntries(4, 5, 12), limits).ok());
  EXPECT_TRUE(CheckRequestWire<v1::EmbedRequest>(ManyEntries(4, 5, 12), WireLimits()).ok());
  const struct {
    std::string wire;
    const char* message;
  } cases[] = {
      {ManyEntries(5, 1, 0), "inputs: 5 inputs exceed the limit of 4"},
      {ManyEntries(1, 6, 0), "heads: 6 entries exceed the limit of 5"},
      {ManyEntries(1, 1, 13), "layers: 13 entries exceed the limit of 12"},
  };
  for (const auto& c : cases) {
    const absl::Status checked = CheckRequestWire<v1::EmbedRequest>(c.wire, limits);
    EXPECT_EQ(checked.code(), absl::StatusCode::kInvalidArgument) << c.message;
    EXPECT_EQ(checked.message(), c.message);
    // The parse refuses it the same way, from a buffer of one slice or of several.
    v1::EmbedRequest parsed;
    EXPECT_EQ(ParseEmbedRequest(ToBuffer(c.wire), limits, &parsed).message(), c.message);
    std::vector<grpc::Slice> pieces = {grpc::Slice(c.wire.substr(0, 3)),
                                       grpc::Slice(c.wire.substr(3))};
    grpc::ByteBuffer split(pieces.data(), pieces.size());
    EXPECT_EQ(ParseEmbedRequest(split, limits, &parsed).message(), c.message);
  }
  // The refused request's id is still there to be echoed (field 9 as the parser reads it: a
  // varint 9 is an unknown field, not the id).
  v1::EmbedRequest with_id;
  ASSERT_FALSE(
      ParseEmbedRequest(ToBuffer(ManyEntries(9, 0, 0) + "\x4a\x03id7" + std::string("\x48\x00", 2)),
                        limits, &with_id)
          .ok());
  EXPECT_EQ(EchoableRequestId(with_id), "id7");
  // What the scan cannot read is refused, not skipped: a group (which the parser would step
  // over, with every entry after it), a truncated varint, a length past the end.
  for (const std::string& prefix :
       {std::string("\x7b\x7c"), std::string("\x0a\xff"), std::string("\x0a\x7f", 2)}) {
    const std::string wire = prefix + ManyEntries(9, 0, 0);
    EXPECT_EQ(CheckRequestWire<v1::EmbedRequest>(wire, limits).message(),
              "the request is not a valid protobuf message")
        << testing::PrintToString(prefix);
    EXPECT_EQ(CheckRequestWire<v1::TokenizeRequest>(wire, limits).message(),
              "the request is not a valid protobuf message");
  }
  // Packed and unpacked entries of one field add up.
  std::string mixed = ManyEntries(1, 0, 8);
  mixed += "\x22\x05";  // layers = 4, packed: five one-byte varints
  mixed += std::string(5, '\x02');
  EXPECT_EQ(CheckRequestWire<v1::EmbedRequest>(mixed, limits).message(),
            "layers: 13 entries exceed the limit of 12");
  // Tokenize: inputs only.
  v1::TokenizeRequest tokenize;
  for (int i = 0; i < 5; ++i) tokenize.add_inputs()->set_text_a("x");
  EXPECT_EQ(
      ParseTokenizeRequest(ToBuffer(tokenize.SerializeAsString()), limits, &tokenize).message(),
      "inputs: 5 inputs exceed the limit of 4");
  EXPECT_TRUE(
      CheckRequestWire<v1::TokenizeRequest>(tokenize.SerializeAsString(), WireLimits()).ok());
}

TEST(WireTest, RerankRequests) {
  v1::RerankRequest request;
  request.set_query("what is bert");
  request.add_texts("a text");
  request.add_texts("a bad @@ text");
  v1::RerankRequest parsed;
  EXPECT_EQ(ParseRerankRequest(ToBuffer(WithInvalidUtf8(request)), WireLimits(), &parsed).message(),
            "texts[1]: invalid UTF-8");
  request.set_texts(1, "fine");
  request.set_query("@@");
  EXPECT_EQ(FindInvalidUtf8Field<v1::RerankRequest>(WithInvalidUtf8(request)), "query");
  request.set_query("fine");
  request.set_request_id("@@");
  EXPECT_EQ(FindInvalidUtf8Field<v1::RerankRequest>(WithInvalidUtf8(request)), "request_id");
  request.set_request_id("r-1");
  request.set_top_n(1);
  ASSERT_TRUE(
      ParseRerankRequest(ToBuffer(request.SerializeAsString()), WireLimits(), &parsed).ok());
  EXPECT_EQ(parsed.SerializeAsString(), request.SerializeAsString());
  // More texts than the server takes inputs: refused before parsing.
  WireLimits limits;
  limits.max_inputs = 2;
  EXPECT_TRUE(CheckRequestWire<v1::RerankRequest>(request.SerializeAsString(), limits).ok());
  request.add_texts("");
  const absl::Status over =
      ParseRerankRequest(ToBuffer(request.SerializeAsString()), limits, &parsed);
  EXPECT_EQ(over.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(over.message(), "texts: 3 texts exceed the limit of 2");
}

TEST(WireTest, GarbageIsInvalidArgument) {
  v1::EmbedRequest parsed;
  absl::Status s =
      ParseEmbedRequest(ToBuffer(std::string("\x0a\xff\xff\xff", 4)), WireLimits(), &parsed);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
}

// `count` fields the messages do not have (field 15, varint 0): two bytes each.
std::string Unknown(int count) {
  std::string wire;
  for (int i = 0; i < count; ++i) wire += std::string("\x78\x00", 2);
  return wire;
}

// `payload` as length-delimited field `number` (< 16).
std::string Field(int number, const std::string& payload) {
  std::string wire(1, static_cast<char>(number << 3 | 2));
  for (size_t n = payload.size();; n >>= 7) {
    wire += static_cast<char>((n & 0x7f) | (n >= 0x80 ? 0x80 : 0));
    if (n < 0x80) break;
  }
  return wire + payload;
}

TEST(WireTest, DecodeRequests) {
  v1::DecodeRequest request;
  request.add_inputs()->add_ids(101);
  request.add_inputs();  // an empty sequence
  request.mutable_inputs(1)->add_ids(-1);
  request.set_keep_special_tokens(true);
  v1::DecodeRequest parsed;
  ASSERT_TRUE(
      ParseDecodeRequest(ToBuffer(request.SerializeAsString()), WireLimits(), &parsed).ok());
  EXPECT_EQ(parsed.SerializeAsString(), request.SerializeAsString());
  // More sequences than the server takes inputs: refused before parsing.
  WireLimits limits;
  limits.max_inputs = 2;
  EXPECT_TRUE(CheckRequestWire<v1::DecodeRequest>(request.SerializeAsString(), limits).ok());
  request.add_inputs();
  const absl::Status over =
      ParseDecodeRequest(ToBuffer(request.SerializeAsString()), limits, &parsed);
  EXPECT_EQ(over.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(over.message(), "inputs: 3 inputs exceed the limit of 2");
  // The ids of all inputs together, packed or not, before parsing.
  limits.max_inputs = 0;
  limits.max_ids = 5;
  request.mutable_inputs(2)->add_ids(300);  // packed: [101], [-1], [300]
  EXPECT_TRUE(CheckRequestWire<v1::DecodeRequest>(request.SerializeAsString(), limits).ok());
  std::string wire = request.SerializeAsString();
  wire += std::string("\x0a\x04\x08\x05\x08\x06", 6);  // unpacked: [5, 6]
  EXPECT_TRUE(CheckRequestWire<v1::DecodeRequest>(wire, limits).ok());
  wire += std::string("\x0a\x02\x08\x07", 4);  // a sixth id
  EXPECT_EQ(ParseDecodeRequest(ToBuffer(wire), limits, &parsed).message(),
            "inputs: 6 ids exceed the limit of 5 in one request");
  // A group at the top level, even with no limit on the inputs: refused.
  EXPECT_EQ(
      CheckRequestWire<v1::DecodeRequest>(std::string("\x0a\x00\x13\x14", 4), limits).message(),
      "the request is not a valid protobuf message");
  // Fields the request's messages do not have, each kept by the parser: some are fine, not
  // millions, inside the inputs as at the top level, all counted together.
  limits.max_inputs = 8;
  const std::string unknown = Unknown(kMaxUnknownFields);
  EXPECT_TRUE(CheckRequestWire<v1::DecodeRequest>(unknown, limits).ok());
  EXPECT_EQ(CheckRequestWire<v1::DecodeRequest>(unknown + Unknown(1), limits).message(),
            absl::StrCat("the request has ", kMaxUnknownFields + 1,
                         " unknown fields (numbers its messages do not have, or fields sent "
                         "with another wire type), over the limit of ",
                         kMaxUnknownFields));
  std::string nested = Field(1, unknown);  // in one input
  EXPECT_TRUE(CheckRequestWire<v1::DecodeRequest>(nested, limits).ok());
  EXPECT_FALSE(
      CheckRequestWire<v1::DecodeRequest>(nested + std::string("\x0a\x02\x10\x00", 4), limits)
          .ok());
  EXPECT_FALSE(
      CheckRequestWire<v1::DecodeRequest>(nested + std::string("\x20\x00", 2), limits).ok());
  // A known field repeated is not unknown: the parser keeps its last value.
  std::string repeated;
  for (int i = 0; i < 2000; ++i) repeated += std::string("\x10\x01", 2);  // keep_special_tokens
  EXPECT_TRUE(CheckRequestWire<v1::DecodeRequest>(repeated, limits).ok());
  // A 5-byte tag past 32 bits, which protobuf's parser would read as field 1 (its low bits):
  // not counted as something else but refused.
  EXPECT_EQ(CheckRequestWire<v1::DecodeRequest>(std::string("\x8a\x80\x80\x80\x10\x02\x08\x05", 8),
                                                limits)
                .message(),
            "the request is not a valid protobuf message");
  EXPECT_EQ(CheckRequestWire<v1::TokenizeRequest>(std::string("\x8a\x80\x80\x80\x10\x00", 6),
                                                  WireLimits{.max_inputs = 4})
                .message(),
            "the request is not a valid protobuf message");
  // A group inside an input, which the parser would skip with whatever follows it: refused.
  EXPECT_EQ(
      CheckRequestWire<v1::DecodeRequest>(std::string("\x0a\x03\x13\x14\x00", 5), limits).message(),
      "the request is not a valid protobuf message");
  EXPECT_EQ(ParseDecodeRequest(ToBuffer(std::string("\x0a\xff\xff\xff", 4)), WireLimits(), &parsed)
                .code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(WireTest, UnknownFieldsAreCountedInEveryNestedMessage) {
  WireLimits limits;
  limits.max_inputs = 4;
  const std::string text = Field(1, "hi");  // TextInput.text_a
  // EmbedRequest.inputs[0] (Input): in the Input, in its TextInput, in its TokenInput.
  const int over = kMaxUnknownFields + 1;
  const std::string in_input = Field(1, Field(1, text) + Unknown(over));
  const std::string in_text = Field(1, Field(1, text + Unknown(over)));
  const std::string in_tokens = Field(1, Field(2, Field(1, "\x65\x66") + Unknown(over)));
  for (const std::string& wire : {in_input, in_text, in_tokens}) {
    const absl::Status checked = CheckRequestWire<v1::EmbedRequest>(wire, limits);
    EXPECT_EQ(checked.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(absl::StartsWith(checked.message(),
                                 absl::StrCat("the request has ", over, " unknown fields")))
        << checked.message();
    v1::EmbedRequest parsed;  // and refused so before parsing
    EXPECT_EQ(ParseEmbedRequest(ToBuffer(wire), limits, &parsed).message(), checked.message());
  }
  // Spread over the levels and the inputs, they add up.
  const int quarter = kMaxUnknownFields / 4;
  const std::string spread = Field(1, Field(1, text + Unknown(quarter)) + Unknown(quarter)) +
                             Field(1, Field(2, Unknown(quarter))) + Unknown(quarter);
  EXPECT_TRUE(CheckRequestWire<v1::EmbedRequest>(spread, limits).ok());
  EXPECT_FALSE(CheckRequestWire<v1::EmbedRequest>(spread + Unknown(1), limits).ok());
  // Tokenize's TextInput.
  EXPECT_FALSE(CheckRequestWire<v1::TokenizeRequest>(Field(1, text + Unknown(over)), limits).ok());
  EXPECT_TRUE(
      CheckRequestWire<v1::TokenizeRequest>(Field(1, text + Unknown(over - 1)), limits).ok());
  // A known number sent with another wire type is an unknown field to the parser: text_a as a
  // varint, inputs as a fixed32.
  std::string mistyped;
  for (int i = 0; i < over; ++i) mistyped += std::string("\x08\x00", 2);
  EXPECT_FALSE(CheckRequestWire<v1::TokenizeRequest>(Field(1, mistyped), limits).ok());
  EXPECT_TRUE(CheckRequestWire<v1::TokenizeRequest>(Field(1, mistyped.substr(2)), limits).ok());
  std::string fixed;
  for (int i = 0; i < over; ++i) fixed += std::string("\x0d\x00\x00\x00\x00", 5);
  EXPECT_FALSE(CheckRequestWire<v1::TokenizeRequest>(fixed, limits).ok());
  // Known fields repeated, at any level, are not: the parser keeps the last.
  std::string repeated;
  for (int i = 0; i < 2000; ++i) repeated += text;
  EXPECT_TRUE(CheckRequestWire<v1::EmbedRequest>(Field(1, Field(1, repeated)), limits).ok());
  // Tags and lengths of more than 5 bytes, which protobuf's parser refuses (where upb takes
  // them): refused as the parser would, before it.
  EXPECT_EQ(CheckRequestWire<v1::EmbedRequest>(
                Field(1, Field(1, text)) + std::string("\x4a\x81\x80\x80\x80\x80\x00x", 8), limits)
                .message(),
            "the request is not a valid protobuf message");
  EXPECT_EQ(CheckRequestWire<v1::EmbedRequest>(
                std::string("\xca\x80\x80\x80\x80\x00\x01x", 8) + Field(1, Field(1, text)), limits)
                .message(),
            "the request is not a valid protobuf message");
  EXPECT_TRUE(CheckRequestWire<v1::EmbedRequest>(
                  Field(1, Field(1, text)) + std::string("\x4a\x81\x80\x80\x80\x00x", 7), limits)
                  .ok());
  // A group inside a nested message is refused, as at the top level.
  EXPECT_EQ(
      CheckRequestWire<v1::EmbedRequest>(Field(1, Field(1, text + "\x7b\x7c")), limits).message(),
      "the request is not a valid protobuf message");
}

TEST(WireTest, TokenIdsOfAllInputsAreCountedBeforeParsing) {
  WireLimits limits;
  limits.max_inputs = 4;
  limits.max_ids = 6;
  v1::EmbedRequest request;
  for (int i = 0; i < 2; ++i) {
    auto* tokens = request.add_inputs()->mutable_tokens();
    for (int id : {101, 7, 102}) tokens->add_input_word_ids(id);
  }
  request.add_inputs()->mutable_text()->set_text_a("text inputs count no ids");
  EXPECT_TRUE(CheckRequestWire<v1::EmbedRequest>(request.SerializeAsString(), limits).ok());
  request.mutable_inputs(1)->mutable_tokens()->add_input_word_ids(5);
  v1::EmbedRequest parsed;
  EXPECT_EQ(ParseEmbedRequest(ToBuffer(request.SerializeAsString()), limits, &parsed).message(),
            "inputs: 7 input_word_ids exceed the limit of 6 in one request");
  request.mutable_inputs(1)->mutable_tokens()->mutable_input_word_ids()->RemoveLast();
  for (int i = 0; i < 7; ++i) request.mutable_inputs(0)->mutable_tokens()->add_input_type_ids(0);
  EXPECT_EQ(CheckRequestWire<v1::EmbedRequest>(request.SerializeAsString(), limits).message(),
            "inputs: 7 input_type_ids exceed the limit of 6 in one request");
  // Packed ids of one to three bytes each, any count (the scan reads eight bytes at a time).
  for (int n = 0; n <= 40; ++n) {
    v1::EmbedRequest packed;
    auto* tokens = packed.add_inputs()->mutable_tokens();
    for (int j = 0; j < n; ++j)
      tokens->add_input_word_ids(j % 3 == 0 ? 5 : j % 3 == 1 ? 300 : 20000);
    WireLimits exact = limits;
    exact.max_ids = n;
    EXPECT_TRUE(CheckRequestWire<v1::EmbedRequest>(packed.SerializeAsString(), exact).ok()) << n;
    if (n < 2) continue;  // a limit of 0 is none
    exact.max_ids = n - 1;
    EXPECT_FALSE(CheckRequestWire<v1::EmbedRequest>(packed.SerializeAsString(), exact).ok()) << n;
  }
  // Unpacked entries count one each.
  std::string ids;
  for (int i = 0; i < 6; ++i) ids += std::string("\x08\x01", 2);
  EXPECT_TRUE(CheckRequestWire<v1::EmbedRequest>(Field(1, Field(2, ids)), limits).ok());
  EXPECT_EQ(
      CheckRequestWire<v1::EmbedRequest>(Field(1, Field(2, ids + "\x08\x01")), limits).message(),
      "inputs: 7 input_word_ids exceed the limit of 6 in one request");
}

// The scans take their fields from the proto: every string field of every request message
// is read as the parser reads it, and named by its path.
TEST(WireTest, EveryStringFieldOfTheRequestsIsNamed) {
  v1::EmbedRequest embed;
  embed.add_inputs()->mutable_tokens()->add_input_word_ids(1);
  embed.add_inputs()->mutable_text()->set_text_a("@@");
  EXPECT_EQ(FindInvalidUtf8Field<v1::EmbedRequest>(WithInvalidUtf8(embed)),
            "inputs[1].text.text_a");
  v1::TokenizeRequest tokenize;
  tokenize.add_inputs()->set_text_b("@@");
  EXPECT_EQ(FindInvalidUtf8Field<v1::TokenizeRequest>(WithInvalidUtf8(tokenize)),
            "inputs[0].text_b");
  v1::RerankRequest rerank;
  rerank.add_texts("a");
  rerank.add_texts("b");
  rerank.add_texts("@@");
  EXPECT_EQ(FindInvalidUtf8Field<v1::RerankRequest>(WithInvalidUtf8(rerank)), "texts[2]");
}

}  // namespace
}  // namespace bert
