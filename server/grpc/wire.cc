#include "server/grpc/wire.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "grpcpp/support/proto_buffer_reader.h"
#include "server/text/utf8.h"
#include "server/util/status_macros.h"

namespace bert {
namespace {

constexpr int kVarint = 0;
constexpr int kFixed64 = 1;
constexpr int kLengthDelimited = 2;
constexpr int kFixed32 = 5;

bool ReadVarint(absl::string_view* data, uint64_t* value) {
  uint64_t result = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (data->empty()) return false;
    const uint8_t byte = static_cast<uint8_t>(data->front());
    data->remove_prefix(1);
    result |= static_cast<uint64_t>(byte & 0x7f) << shift;
    if ((byte & 0x80) == 0) {
      *value = result;
      return true;
    }
  }
  return false;
}

// Reads one field; `payload` is set for length-delimited fields, `wire_type` (if not null)
// to the field's wire type. False at the end or on malformed input.
bool NextField(absl::string_view* data, int* number, absl::string_view* payload,
               int* wire_type = nullptr) {
  uint64_t tag;
  if (data->empty() || !ReadVarint(data, &tag)) return false;
  *number = static_cast<int>(tag >> 3);
  *payload = absl::string_view();
  if (wire_type != nullptr) *wire_type = static_cast<int>(tag & 7);
  uint64_t length = 0;
  switch (tag & 7) {
    case kVarint:
      return ReadVarint(data, &length);
    case kFixed64:
      if (data->size() < 8) return false;
      data->remove_prefix(8);
      return true;
    case kFixed32:
      if (data->size() < 4) return false;
      data->remove_prefix(4);
      return true;
    case kLengthDelimited:
      if (!ReadVarint(data, &length) || length > data->size()) return false;
      *payload = data->substr(0, length);
      data->remove_prefix(length);
      return true;
    default:
      return false;
  }
}

// TextInput: text_a = 1, text_b = 2.
std::string CheckTextInput(absl::string_view data, const std::string& prefix) {
  int number;
  absl::string_view payload;
  while (NextField(&data, &number, &payload)) {
    if ((number == 1 || number == 2) && !IsValidUtf8(payload)) {
      return absl::StrCat(prefix, number == 1 ? "text_a" : "text_b");
    }
  }
  return "";
}

std::string WireToString(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  std::string out;
  if (!buffer.Dump(&slices).ok()) return out;
  for (const grpc::Slice& s : slices) {
    out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  return out;
}

// Entries of a repeated scalar field seen once: a packed run holds one varint per byte
// without the continuation bit; an unpacked entry is one varint.
int64_t ScalarEntries(int wire_type, absl::string_view payload) {
  if (wire_type != kLengthDelimited) return 1;
  int64_t n = 0;
  for (char c : payload) n += (static_cast<uint8_t>(c) & 0x80) == 0 ? 1 : 0;
  return n;
}

// As validation words it ("inputs: 300 inputs exceed the limit of 256").
absl::Status OverLimit(const char* field, int64_t count, int limit) {
  const bool inputs = absl::string_view(field) == "inputs";
  return absl::InvalidArgumentError(absl::StrCat(
      field, ": ", count, inputs ? " inputs" : " entries", " exceed the limit of ", limit));
}

absl::Status NotAMessage() {
  return absl::InvalidArgumentError("the request is not a valid protobuf message");
}

// Counts `field`'s entries (message fields: occurrences; scalars: ScalarEntries) in the
// top level of `wire`; INVALID_ARGUMENT when they are over `limit` (0: unchecked), or when
// the scan cannot read to the end. That check fails closed: the parser would skip what the
// scan cannot read (a group, which these messages never have), and with it the entries
// after it, uncounted.
absl::Status CheckCount(absl::string_view wire, int field, bool scalar, const char* name,
                        int limit) {
  if (limit <= 0) return absl::OkStatus();
  int64_t count = 0;
  int number, wire_type;
  absl::string_view payload;
  while (NextField(&wire, &number, &payload, &wire_type)) {
    if (number == field) count += scalar ? ScalarEntries(wire_type, payload) : 1;
  }
  if (!wire.empty()) return NotAMessage();
  return count > limit ? OverLimit(name, count, limit) : absl::OkStatus();
}

// The bytes of `buffer`: a view of its only slice, or a copy into `flat` when it has more.
absl::string_view WireView(const grpc::ByteBuffer& buffer, std::vector<grpc::Slice>* slices,
                           std::string* flat) {
  if (!buffer.Dump(slices).ok()) return absl::string_view();
  if (slices->size() == 1) {
    const grpc::Slice& s = slices->front();
    return absl::string_view(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  for (const grpc::Slice& s : *slices)
    flat->append(reinterpret_cast<const char*>(s.begin()), s.size());
  return *flat;
}

// The last value of the top-level length-delimited field `field` (as the parser keeps it),
// or "".
absl::string_view LastBytesField(absl::string_view wire, int field) {
  absl::string_view last;
  int number;
  absl::string_view payload;
  while (NextField(&wire, &number, &payload)) {
    if (number == field) last = payload;
  }
  return last;
}

template <typename Message>
absl::Status Parse(const grpc::ByteBuffer& buffer, Message* message,
                   std::string (*find_invalid)(absl::string_view)) {
  // Parsed straight from the buffer's slices (a copy of a ByteBuffer shares them): requests
  // can be tens of MB. Only a request that fails to parse is flattened, to say why.
  grpc::ByteBuffer slices(buffer);
  grpc::ProtoBufferReader reader(&slices);
  if (message->ParseFromZeroCopyStream(&reader)) return absl::OkStatus();
  const std::string wire = WireToString(buffer);
  const std::string field = find_invalid(wire);
  if (!field.empty()) return absl::InvalidArgumentError(absl::StrCat(field, ": invalid UTF-8"));
  return NotAMessage();
}

}  // namespace

std::string FindInvalidUtf8InEmbedRequest(absl::string_view data) {
  int number;
  absl::string_view payload;
  int input_index = 0;
  while (NextField(&data, &number, &payload)) {
    if (number == 1) {  // inputs
      absl::string_view input = payload;
      int inner;
      absl::string_view inner_payload;
      while (NextField(&input, &inner, &inner_payload)) {
        if (inner == 1) {  // Input.text
          std::string bad =
              CheckTextInput(inner_payload, absl::StrCat("inputs[", input_index, "].text."));
          if (!bad.empty()) return bad;
        }
      }
      ++input_index;
    } else if (number == 9 && !IsValidUtf8(payload)) {
      return "request_id";
    }
  }
  return "";
}

std::string FindInvalidUtf8InTokenizeRequest(absl::string_view data) {
  int number;
  absl::string_view payload;
  int input_index = 0;
  while (NextField(&data, &number, &payload)) {
    if (number == 1) {
      std::string bad = CheckTextInput(payload, absl::StrCat("inputs[", input_index, "]."));
      if (!bad.empty()) return bad;
      ++input_index;
    }
  }
  return "";
}

absl::Status CheckEmbedRequestCounts(absl::string_view wire, const WireLimits& limits) {
  // EmbedRequest: inputs = 1, heads = 3, layers = 4.
  RETURN_IF_ERROR(CheckCount(wire, 1, /*scalar=*/false, "inputs", limits.max_inputs));
  RETURN_IF_ERROR(CheckCount(wire, 3, /*scalar=*/true, "heads", limits.max_heads));
  return CheckCount(wire, 4, /*scalar=*/true, "layers", limits.max_layers);
}

absl::Status CheckTokenizeRequestCounts(absl::string_view wire, const WireLimits& limits) {
  return CheckCount(wire, 1, /*scalar=*/false, "inputs", limits.max_inputs);  // inputs = 1
}

absl::Status ParseEmbedRequest(const grpc::ByteBuffer& buffer, const WireLimits& limits,
                               v1::EmbedRequest* request) {
  std::vector<grpc::Slice> slices;
  std::string flat;
  const absl::string_view wire = WireView(buffer, &slices, &flat);
  if (absl::Status counted = CheckEmbedRequestCounts(wire, limits); !counted.ok()) {
    // Unparsed, but its answer can still echo the request_id (EchoableRequestId).
    request->set_request_id(std::string(LastBytesField(wire, 9)));  // request_id = 9
    return counted;
  }
  return Parse(buffer, request, &FindInvalidUtf8InEmbedRequest);
}

absl::Status ParseTokenizeRequest(const grpc::ByteBuffer& buffer, const WireLimits& limits,
                                  v1::TokenizeRequest* request) {
  std::vector<grpc::Slice> slices;
  std::string flat;
  RETURN_IF_ERROR(CheckTokenizeRequestCounts(WireView(buffer, &slices, &flat), limits));
  return Parse(buffer, request, &FindInvalidUtf8InTokenizeRequest);
}

std::string EchoableRequestId(const v1::EmbedRequest& request) {
  return IsValidUtf8(request.request_id()) ? request.request_id() : std::string();
}

void Serialize(const google::protobuf::MessageLite& message, grpc::ByteBuffer* buffer) {
  // One allocation, written in place (responses can be megabytes).
  const size_t size = message.ByteSizeLong();
  grpc::Slice slice(size);
  message.SerializeWithCachedSizesToArray(const_cast<uint8_t*>(slice.begin()));
  grpc::ByteBuffer out(&slice, 1);
  buffer->Swap(&out);
}

}  // namespace bert
