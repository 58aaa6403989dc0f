// Request parsing for the raw (ByteBuffer) handlers. gRPC's generated parsing refuses a
// proto3 string field holding invalid UTF-8 before the service sees it (answering
// UNIMPLEMENTED); the service parses requests itself so that such a request gets
// INVALID_ARGUMENT naming the field ("inputs[2].text.text_a: invalid UTF-8").
//
// Before parsing, a request is read on the wire, nested messages included, and refused
// (INVALID_ARGUMENT) without being parsed when it has more entries in a repeated field than
// the server takes, or more than a few fields its messages do not know: an entry can cost two
// bytes on the wire and a hundred times that once parsed (an empty Input is a message object,
// an unknown field is kept at 16 bytes or more), so a request within the message size limit
// could otherwise take gigabytes before validation refused it. The scans know each message by
// its descriptor (the proto is the one list of fields).
// Thread-safe (pure functions, and shapes built once under a lock).
#ifndef BERT_SERVER_GRPC_WIRE_H_
#define BERT_SERVER_GRPC_WIRE_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "grpcpp/support/byte_buffer.h"
#include "proto/bert/v1/bert_service.pb.h"

namespace bert {

// The most entries of each repeated field a request may have (0: unchecked).
struct WireLimits {
  int max_inputs = 0;   // EmbedRequest, TokenizeRequest, DecodeRequest: inputs; RerankRequest:
                        // texts
  int max_heads = 0;    // EmbedRequest.heads
  int max_layers = 0;   // EmbedRequest.layers
  int64_t max_ids = 0;  // token ids in all the inputs of one request together: each of
                        // TokenInput's input_word_ids and input_type_ids, TokenIds.ids
};

// The most unknown fields (numbers a message does not have, or known ones sent with another
// wire type) a request may hold in all its messages together: the parser keeps each, at 16
// bytes or more from 2 on the wire. A request of ours has none; a client built with a newer
// proto may send a few in each input, which this leaves room for (256 in each of 256 inputs),
// while a 16 MiB request could otherwise hold 8 million of them.
inline constexpr int64_t kMaxUnknownFields = 1 << 16;

// Each checks the request on the wire (CheckRequestWire), then parses it: OK, or
// INVALID_ARGUMENT naming what is wrong.
absl::Status ParseEmbedRequest(const grpc::ByteBuffer& buffer, const WireLimits& limits,
                               v1::EmbedRequest* request);
absl::Status ParseTokenizeRequest(const grpc::ByteBuffer& buffer, const WireLimits& limits,
                                  v1::TokenizeRequest* request);
absl::Status ParseRerankRequest(const grpc::ByteBuffer& buffer, const WireLimits& limits,
                                v1::RerankRequest* request);
absl::Status ParseDecodeRequest(const grpc::ByteBuffer& buffer, const WireLimits& limits,
                                v1::DecodeRequest* request);

// The checks the Parse*Request functions make before parsing `wire`, a serialized `Message`
// (EmbedRequest, TokenizeRequest, RerankRequest or DecodeRequest): OK, or INVALID_ARGUMENT
// - naming the field whose entries in the whole request are over `limits` ("inputs: 300
//   inputs exceed the limit of 256", "inputs: 140000 ids exceed the limit of 131072 in one
//   request"), as validation words it;
// - when the request and its nested messages hold more than kMaxUnknownFields unknown fields;
// - saying the request is not a valid message when the scan cannot read a message to its end
//   (malformed data, or a group, which the parser would skip with whatever is in it).
// With no limit set, nothing is checked.
template <typename Message>
absl::Status CheckRequestWire(absl::string_view wire, const WireLimits& limits);

// The path of the first string field with invalid UTF-8 in `wire`, a serialized `Message`
// ("inputs[2].text.text_b", "request_id"), or "".
template <typename Message>
std::string FindInvalidUtf8Field(absl::string_view wire);

// The request_id to echo in the answer to `request`, which may be what a failed parse left
// behind: its request_id when that is valid UTF-8, else "". A proto3 string must be UTF-8,
// so echoing the bytes that made the parse fail would make the answer itself unparseable
// for the client (on EmbedStream, ending the whole stream instead of one message).
std::string EchoableRequestId(const v1::EmbedRequest& request);

// Serializes `message` into `buffer` (replacing its content). Cannot fail: the message is
// written in place into one slice of its own size. Responses are kept under 2 GiB upstream
// (CheckResponseSize against --max_message_bytes), so protobuf's size limit is not reached.
void Serialize(const google::protobuf::MessageLite& message, grpc::ByteBuffer* buffer);

}  // namespace bert

#endif  // BERT_SERVER_GRPC_WIRE_H_
