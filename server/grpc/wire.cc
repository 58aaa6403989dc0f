#include "server/grpc/wire.h"

#include <algorithm>
#include <array>
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
  // A tag past 32 bits is not one: protobuf's parser would cut it to its low 32 bits and read
  // another field than the one a scan would see.
  if (data->empty() || !ReadVarint(data, &tag) || tag > 0xFFFFFFFFu) return false;
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

// Entries of a repeated scalar field seen once: a packed run holds one varint per byte
// without the continuation bit; an unpacked entry is one varint.
int64_t ScalarEntries(int wire_type, absl::string_view payload) {
  if (wire_type != kLengthDelimited) return 1;
  int64_t n = 0;
  for (char c : payload) n += (static_cast<uint8_t>(c) & 0x80) == 0 ? 1 : 0;
  return n;
}

// As validation words it ("inputs: 300 inputs exceed the limit of 256"; "texts: 300 texts
// ...").
absl::Status OverLimit(const char* field, int64_t count, int limit) {
  const absl::string_view name = field;
  const bool inputs = name == "inputs" || name == "texts";
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", count, " ", inputs ? name : "entries",
                                                 " exceed the limit of ", limit));
}

absl::Status NotAMessage() {
  return absl::InvalidArgumentError("the request is not a valid protobuf message");
}

// Fields a scan meets besides the counted repeated ones: a request's singular fields, and
// fields it does not know, which the parser keeps (16 bytes or more each, from 2 on the wire).
// No request needs more than a few.
constexpr int64_t kMaxOtherFields = 1024;

absl::Status TooManyOtherFields(int64_t count) {
  return absl::InvalidArgumentError(absl::StrCat(
      "the request has ", count, " fields besides its repeated ones, over the limit of ",
      kMaxOtherFields, " (unknown fields, or singular ones repeated)"));
}

// A repeated field to count on the wire, and the most entries allowed (0: unchecked).
struct Counted {
  int field;
  bool scalar;  // a repeated scalar (packed or not), else a message field
  const char* name;
  int limit;
};

// Counts the entries of `fields` (message fields: occurrences; scalars: ScalarEntries) in the
// top level of `wire`, in one pass; INVALID_ARGUMENT naming the first over its limit, or when
// the scan cannot read to the end. That check fails closed: the parser would skip what the
// scan cannot read (a group, which these messages never have), and with it the entries after
// it, uncounted. With no limit set, nothing is scanned.
template <size_t N>
absl::Status CheckCounts(absl::string_view wire, const std::array<Counted, N>& fields) {
  if (std::all_of(fields.begin(), fields.end(), [](const Counted& f) { return f.limit <= 0; })) {
    return absl::OkStatus();
  }
  std::array<int64_t, N> counts{};
  int64_t others = 0;
  int number, wire_type;
  absl::string_view payload;
  while (NextField(&wire, &number, &payload, &wire_type)) {
    bool counted = false;
    for (size_t i = 0; i < N; ++i) {
      if (number == fields[i].field) {
        counts[i] += fields[i].scalar ? ScalarEntries(wire_type, payload) : 1;
        counted = true;
      }
    }
    if (!counted) ++others;
  }
  if (!wire.empty()) return NotAMessage();
  if (others > kMaxOtherFields) return TooManyOtherFields(others);
  for (size_t i = 0; i < N; ++i) {
    if (fields[i].limit > 0 && counts[i] > fields[i].limit) {
      return OverLimit(fields[i].name, counts[i], fields[i].limit);
    }
  }
  return absl::OkStatus();
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

// Parses `buffer`, whose bytes `wire` views (WireView), into `message`; a request that does
// not parse is looked at on the wire to say why.
template <typename Message>
absl::Status Parse(const grpc::ByteBuffer& buffer, absl::string_view wire, Message* message,
                   std::string (*find_invalid)(absl::string_view)) {
  // Parsed straight from the buffer's slices (a copy of a ByteBuffer shares them): requests
  // can be tens of MB.
  grpc::ByteBuffer slices(buffer);
  grpc::ProtoBufferReader reader(&slices);
  if (message->ParseFromZeroCopyStream(&reader)) return absl::OkStatus();
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
    } else if (number == 10 && !IsValidUtf8(payload)) {
      return "prompt_name";
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
    } else if (number == 4 && !IsValidUtf8(payload)) {
      return "prompt_name";
    }
  }
  return "";
}

std::string FindInvalidUtf8InRerankRequest(absl::string_view data) {
  // RerankRequest: query = 1, texts = 2, request_id = 8.
  int number;
  absl::string_view payload;
  int text_index = 0;
  while (NextField(&data, &number, &payload)) {
    if (number == 2) {
      if (!IsValidUtf8(payload)) return absl::StrCat("texts[", text_index, "]");
      ++text_index;
    } else if ((number == 1 || number == 8) && !IsValidUtf8(payload)) {
      return number == 1 ? "query" : "request_id";
    }
  }
  return "";
}

absl::Status CheckEmbedRequestCounts(absl::string_view wire, const WireLimits& limits) {
  // EmbedRequest: inputs = 1, heads = 3, layers = 4.
  return CheckCounts(wire, std::array<Counted, 3>{{{1, false, "inputs", limits.max_inputs},
                                                   {3, true, "heads", limits.max_heads},
                                                   {4, true, "layers", limits.max_layers}}});
}

absl::Status CheckTokenizeRequestCounts(absl::string_view wire, const WireLimits& limits) {
  // TokenizeRequest: inputs = 1.
  return CheckCounts(wire, std::array<Counted, 1>{{{1, false, "inputs", limits.max_inputs}}});
}

absl::Status CheckRerankRequestCounts(absl::string_view wire, const WireLimits& limits) {
  // RerankRequest: texts = 2.
  return CheckCounts(wire, std::array<Counted, 1>{{{2, false, "texts", limits.max_inputs}}});
}

absl::Status CheckDecodeRequestCounts(absl::string_view wire, const WireLimits& limits) {
  // DecodeRequest: inputs = 1 (TokenIds: ids = 1).
  RETURN_IF_ERROR(
      CheckCounts(wire, std::array<Counted, 1>{{{1, false, "inputs", limits.max_inputs}}}));
  if (limits.max_decode_ids <= 0) return absl::OkStatus();
  int64_t ids = 0;
  int64_t others = 0;  // in the inputs (CheckCounts limits those of the top level)
  int number, wire_type;
  absl::string_view input;
  while (NextField(&wire, &number, &input)) {
    if (number != 1) continue;
    absl::string_view payload;
    while (NextField(&input, &number, &payload, &wire_type)) {
      if (number == 1) {
        ids += ScalarEntries(wire_type, payload);
      } else {
        ++others;
      }
    }
    if (!input.empty()) return NotAMessage();  // as CheckCounts: what the scan cannot read
  }
  if (!wire.empty()) return NotAMessage();
  if (others > kMaxOtherFields) return TooManyOtherFields(others);
  if (ids > limits.max_decode_ids) {
    // As validation words it.
    return absl::InvalidArgumentError(absl::StrCat("inputs: ", ids, " ids exceed the limit of ",
                                                   limits.max_decode_ids, " in one request"));
  }
  return absl::OkStatus();
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
  return Parse(buffer, wire, request, &FindInvalidUtf8InEmbedRequest);
}

absl::Status ParseTokenizeRequest(const grpc::ByteBuffer& buffer, const WireLimits& limits,
                                  v1::TokenizeRequest* request) {
  std::vector<grpc::Slice> slices;
  std::string flat;
  const absl::string_view wire = WireView(buffer, &slices, &flat);
  RETURN_IF_ERROR(CheckTokenizeRequestCounts(wire, limits));
  return Parse(buffer, wire, request, &FindInvalidUtf8InTokenizeRequest);
}

absl::Status ParseRerankRequest(const grpc::ByteBuffer& buffer, const WireLimits& limits,
                                v1::RerankRequest* request) {
  std::vector<grpc::Slice> slices;
  std::string flat;
  const absl::string_view wire = WireView(buffer, &slices, &flat);
  RETURN_IF_ERROR(CheckRerankRequestCounts(wire, limits));
  return Parse(buffer, wire, request, &FindInvalidUtf8InRerankRequest);
}

absl::Status ParseDecodeRequest(const grpc::ByteBuffer& buffer, const WireLimits& limits,
                                v1::DecodeRequest* request) {
  std::vector<grpc::Slice> slices;
  std::string flat;
  const absl::string_view wire = WireView(buffer, &slices, &flat);
  RETURN_IF_ERROR(CheckDecodeRequestCounts(wire, limits));
  return Parse(buffer, wire, request, [](absl::string_view) { return std::string(); });
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
