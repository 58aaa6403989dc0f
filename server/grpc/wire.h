// Request parsing for the raw (ByteBuffer) handlers. gRPC's generated parsing refuses a
// proto3 string field holding invalid UTF-8 before the service sees it (answering
// UNIMPLEMENTED); the service parses requests itself so that such a request gets
// INVALID_ARGUMENT naming the field ("inputs[2].text.text_a: invalid UTF-8").
//
// Before parsing, the repeated fields are counted on the wire and a request with more
// entries than the server takes is refused (INVALID_ARGUMENT) without being parsed: an entry
// can cost two bytes on the wire and a hundred times that once parsed (an empty Input is a
// message object), so a request within the message size limit could otherwise take
// gigabytes before validation refused it.
// Thread-safe (pure functions).
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
  int max_inputs = 0;          // EmbedRequest.inputs, TokenizeRequest.inputs, DecodeRequest.inputs
  int max_heads = 0;           // EmbedRequest.heads
  int max_layers = 0;          // EmbedRequest.layers
  int64_t max_decode_ids = 0;  // DecodeRequest: the ids of all its inputs together
};

absl::Status ParseEmbedRequest(const grpc::ByteBuffer& buffer, const WireLimits& limits,
                               v1::EmbedRequest* request);
absl::Status ParseTokenizeRequest(const grpc::ByteBuffer& buffer, const WireLimits& limits,
                                  v1::TokenizeRequest* request);
// RerankRequest.texts is held to limits.max_inputs.
absl::Status ParseRerankRequest(const grpc::ByteBuffer& buffer, const WireLimits& limits,
                                v1::RerankRequest* request);
// A DecodeRequest has no strings: its inputs, and the ids in all of them, are counted first.
absl::Status ParseDecodeRequest(const grpc::ByteBuffer& buffer, const WireLimits& limits,
                                v1::DecodeRequest* request);

// The checks the Parse*Request functions make before parsing: OK, or
// INVALID_ARGUMENT naming the field whose entries are over `limits`, or saying the request
// is not a valid message when the top level cannot be read to its end (malformed data, or a
// group, which the parser would skip with whatever follows it). With no limit set, nothing
// is checked.
absl::Status CheckEmbedRequestCounts(absl::string_view wire, const WireLimits& limits);
absl::Status CheckTokenizeRequestCounts(absl::string_view wire, const WireLimits& limits);
absl::Status CheckRerankRequestCounts(absl::string_view wire, const WireLimits& limits);
absl::Status CheckDecodeRequestCounts(absl::string_view wire, const WireLimits& limits);

// The request_id to echo in the answer to `request`, which may be what a failed parse left
// behind: its request_id when that is valid UTF-8, else "". A proto3 string must be UTF-8,
// so echoing the bytes that made the parse fail would make the answer itself unparseable
// for the client (on EmbedStream, ending the whole stream instead of one message).
std::string EchoableRequestId(const v1::EmbedRequest& request);

// Serializes `message` into `buffer` (replacing its content). Cannot fail: the message is
// written in place into one slice of its own size. Responses are kept under 2 GiB upstream
// (CheckResponseSize against --max_message_bytes), so protobuf's size limit is not reached.
void Serialize(const google::protobuf::MessageLite& message, grpc::ByteBuffer* buffer);

// The path of the first string field with invalid UTF-8 in a serialized request, or "".
std::string FindInvalidUtf8InEmbedRequest(absl::string_view wire);
std::string FindInvalidUtf8InTokenizeRequest(absl::string_view wire);
std::string FindInvalidUtf8InRerankRequest(absl::string_view wire);

}  // namespace bert

#endif  // BERT_SERVER_GRPC_WIRE_H_
