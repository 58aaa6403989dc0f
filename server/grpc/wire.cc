#include "server/grpc/wire.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/inlined_vector.h"
#include "absl/numeric/bits.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "google/protobuf/descriptor.h"
#include "grpcpp/support/proto_buffer_reader.h"
#include "server/text/utf8.h"
#include "server/util/status_macros.h"

namespace bert {
namespace {

constexpr int kVarint = 0;
constexpr int kFixed64 = 1;
constexpr int kLengthDelimited = 2;
constexpr int kFixed32 = 5;

// Reads a varint of at most `max_bytes` bytes (a value: 10; protobuf's parser reads tags and
// lengths in at most 5).
bool ReadVarint(absl::string_view* data, uint64_t* value, int max_bytes = 10) {
  uint64_t result = 0;
  for (int shift = 0; shift < 7 * max_bytes; shift += 7) {
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
  // another field than the one a scan would see. Tags and lengths longer than 5 bytes, which
  // the parser refuses, are refused here too.
  if (data->empty() || !ReadVarint(data, &tag, 5) || tag > 0xFFFFFFFFu) return false;
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
      if (!ReadVarint(data, &length, 5) || length > data->size()) return false;
      *payload = data->substr(0, length);
      data->remove_prefix(length);
      return true;
    default:
      return false;
  }
}

// Entries of a repeated scalar field seen once: a packed run holds one varint per byte
// without the continuation bit (counted eight bytes at a time); an unpacked entry is one
// varint.
int64_t ScalarEntries(int wire_type, absl::string_view payload) {
  if (wire_type != kLengthDelimited) return 1;
  int64_t n = 0;
  size_t i = 0;
  for (; i + 8 <= payload.size(); i += 8) {
    uint64_t word;
    std::memcpy(&word, payload.data() + i, sizeof(word));
    n += 8 - absl::popcount(word & 0x8080808080808080ull);
  }
  for (; i < payload.size(); ++i) n += (static_cast<uint8_t>(payload[i]) & 0x80) == 0 ? 1 : 0;
  return n;
}

absl::Status NotAMessage() {
  return absl::InvalidArgumentError("the request is not a valid protobuf message");
}

// As protobuf's parser: deeper nesting does not parse.
constexpr int kMaxDepth = 100;

// How the scans read one message type: for each field number, the field it is (from the
// proto's descriptor), and the wire types the parser takes for it.
class Shape {
 public:
  struct Field {
    const google::protobuf::FieldDescriptor* descriptor = nullptr;  // null: not a field here
    int wire_type = -1;
    bool packable = false;          // a repeated scalar: also taken packed (length-delimited)
    const Shape* nested = nullptr;  // a message field: the shape of its messages

    // Whether the parser reads an entry sent as `type` into this field (else it keeps it as
    // an unknown field).
    bool Takes(int type) const {
      return descriptor != nullptr && (type == wire_type || (packable && type == kLengthDelimited));
    }
  };

  const Field& at(int number) const {
    static const Field kNone;
    return number >= 0 && static_cast<size_t>(number) < fields_.size() ? fields_[number] : kNone;
  }

  // The shape of `type` and of every message type in it, built once per type and kept for
  // the process's life (they are few and small).
  static const Shape& Of(const google::protobuf::Descriptor* type) {
    static absl::Mutex mutex(absl::kConstInit);
    static auto* shapes =
        new absl::flat_hash_map<const google::protobuf::Descriptor*, std::unique_ptr<Shape>>();
    absl::MutexLock lock(&mutex);
    return *Build(type, shapes);
  }

 private:
  using Shapes = absl::flat_hash_map<const google::protobuf::Descriptor*, std::unique_ptr<Shape>>;

  static const Shape* Build(const google::protobuf::Descriptor* type, Shapes* shapes) {
    auto [it, added] = shapes->try_emplace(type);
    if (!added) return it->second.get();  // built, or being built (a recursive type)
    it->second = std::make_unique<Shape>();
    Shape* shape = it->second.get();
    for (int i = 0; i < type->field_count(); ++i) {
      const google::protobuf::FieldDescriptor* f = type->field(i);
      if (static_cast<size_t>(f->number()) >= shape->fields_.size()) {
        shape->fields_.resize(f->number() + 1);
      }
      Field& field = shape->fields_[f->number()];
      field.descriptor = f;
      field.wire_type = WireTypeOf(*f);
      field.packable = f->is_packable();
      if (f->type() == google::protobuf::FieldDescriptor::TYPE_MESSAGE) {
        field.nested = Build(f->message_type(), shapes);
      }
    }
    return shape;
  }

  static int WireTypeOf(const google::protobuf::FieldDescriptor& f) {
    using FD = google::protobuf::FieldDescriptor;
    switch (f.type()) {
      case FD::TYPE_DOUBLE:
      case FD::TYPE_FIXED64:
      case FD::TYPE_SFIXED64:
        return kFixed64;
      case FD::TYPE_FLOAT:
      case FD::TYPE_FIXED32:
      case FD::TYPE_SFIXED32:
        return kFixed32;
      case FD::TYPE_STRING:
      case FD::TYPE_BYTES:
      case FD::TYPE_MESSAGE:
        return kLengthDelimited;
      case FD::TYPE_GROUP:
        return -1;  // the scan cannot read groups; none of the requests has one
      default:
        return kVarint;
    }
  }

  std::vector<Field> fields_;  // by field number (the requests' are all below 16)
};

// A repeated field counted wherever it occurs in a request (every EmbedRequest.inputs, or
// every TokenInput.input_word_ids of all its inputs together), and how its refusal reads:
// "<path>: <count> <noun> exceed the limit of <limit><suffix>", as validation words it
// ("inputs: 300 inputs exceed the limit of 256").
struct Counted {
  const google::protobuf::FieldDescriptor* field;
  int64_t limit;  // 0: unchecked
  const char* path;
  const char* noun;
  const char* suffix = "";
};

// What a scan found: the entries of each counted field, and the unknown fields.
struct Tally {
  explicit Tally(size_t counted) : entries(counted, 0) {}
  absl::InlinedVector<int64_t, 5> entries;
  int64_t unknown = 0;
};

// Reads `wire` as a message of `shape` and everything nested in it, adding to `tally`.
// False where it cannot read to the end: malformed data, a group (which the parser would skip
// with whatever is in it, uncounted), or nesting deeper than the parser takes.
bool Scan(absl::string_view wire, const Shape& shape, absl::Span<const Counted> counted,
          Tally* tally, int depth = 0) {
  if (depth > kMaxDepth) return false;
  int number, wire_type;
  absl::string_view payload;
  while (NextField(&wire, &number, &payload, &wire_type)) {
    const Shape::Field& field = shape.at(number);
    if (!field.Takes(wire_type)) {
      ++tally->unknown;
      continue;
    }
    for (size_t i = 0; i < counted.size(); ++i) {
      if (counted[i].field == field.descriptor) {
        tally->entries[i] += field.packable ? ScalarEntries(wire_type, payload) : 1;
      }
    }
    if (field.nested != nullptr && !Scan(payload, *field.nested, counted, tally, depth + 1)) {
      return false;
    }
  }
  return wire.empty();
}

// The checks before parsing (see CheckRequestWire in wire.h).
absl::Status CheckWire(absl::string_view wire, const Shape& shape,
                       absl::Span<const Counted> counted) {
  if (std::all_of(counted.begin(), counted.end(), [](const Counted& c) { return c.limit <= 0; })) {
    return absl::OkStatus();
  }
  Tally tally(counted.size());
  if (!Scan(wire, shape, counted, &tally)) return NotAMessage();
  if (tally.unknown > kMaxUnknownFields) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the request has ", tally.unknown, " unknown fields (numbers its messages do not have, ",
        "or fields sent with another wire type), over the limit of ", kMaxUnknownFields));
  }
  for (size_t i = 0; i < counted.size(); ++i) {
    const Counted& c = counted[i];
    if (c.limit > 0 && tally.entries[i] > c.limit) {
      return absl::InvalidArgumentError(absl::StrCat(c.path, ": ", tally.entries[i], " ", c.noun,
                                                     " exceed the limit of ", c.limit, c.suffix));
    }
  }
  return absl::OkStatus();
}

// The fields counted in each request type, and their limits (no allocation: a call's).
using CountedList = absl::InlinedVector<Counted, 5>;

// Field `number` of `Message` (its generated constant: a field renamed or removed in the proto
// fails the build, not a request).
template <typename Message>
const google::protobuf::FieldDescriptor* FieldOf(int number) {
  return Message::descriptor()->FindFieldByNumber(number);
}

template <typename Message>
CountedList CountedFields(const WireLimits& limits);

template <>
CountedList CountedFields<v1::EmbedRequest>(const WireLimits& limits) {
  using Request = v1::EmbedRequest;
  using Tokens = v1::TokenInput;
  static const auto* const inputs = FieldOf<Request>(Request::kInputsFieldNumber);
  static const auto* const heads = FieldOf<Request>(Request::kHeadsFieldNumber);
  static const auto* const layers = FieldOf<Request>(Request::kLayersFieldNumber);
  static const auto* const word_ids = FieldOf<Tokens>(Tokens::kInputWordIdsFieldNumber);
  static const auto* const type_ids = FieldOf<Tokens>(Tokens::kInputTypeIdsFieldNumber);
  return {
      {inputs, limits.max_inputs, "inputs", "inputs"},
      {heads, limits.max_heads, "heads", "entries"},
      {layers, limits.max_layers, "layers", "entries"},
      {word_ids, limits.max_ids, "inputs", "input_word_ids", " in one request"},
      {type_ids, limits.max_ids, "inputs", "input_type_ids", " in one request"},
  };
}

template <>
CountedList CountedFields<v1::TokenizeRequest>(const WireLimits& limits) {
  using Request = v1::TokenizeRequest;
  static const auto* const inputs = FieldOf<Request>(Request::kInputsFieldNumber);
  return {{inputs, limits.max_inputs, "inputs", "inputs"}};
}

template <>
CountedList CountedFields<v1::RerankRequest>(const WireLimits& limits) {
  using Request = v1::RerankRequest;
  static const auto* const texts = FieldOf<Request>(Request::kTextsFieldNumber);
  return {{texts, limits.max_inputs, "texts", "texts"}};
}

template <>
CountedList CountedFields<v1::DecodeRequest>(const WireLimits& limits) {
  using Request = v1::DecodeRequest;
  static const auto* const inputs = FieldOf<Request>(Request::kInputsFieldNumber);
  static const auto* const ids = FieldOf<v1::TokenIds>(v1::TokenIds::kIdsFieldNumber);
  return {
      {inputs, limits.max_inputs, "inputs", "inputs"},
      {ids, limits.max_ids, "inputs", "ids", " in one request"},
  };
}

// The path of the first string field of `wire` (a message of `shape`) that is not valid
// UTF-8, after `prefix` ("inputs[2].text.text_b"), or "".
std::string FindInvalidUtf8(absl::string_view wire, const Shape& shape, const std::string& prefix,
                            int depth = 0) {
  if (depth > kMaxDepth) return "";
  absl::flat_hash_map<int, int> seen;  // entries so far of each repeated field
  int number, wire_type;
  absl::string_view payload;
  while (NextField(&wire, &number, &payload, &wire_type)) {
    const Shape::Field& field = shape.at(number);
    if (!field.Takes(wire_type)) continue;
    const google::protobuf::FieldDescriptor& f = *field.descriptor;
    const bool is_string = f.type() == google::protobuf::FieldDescriptor::TYPE_STRING;
    if (!is_string && field.nested == nullptr) continue;
    const int index = f.is_repeated() ? seen[number]++ : -1;
    const auto path = [&] {  // built only where it is needed
      return index < 0 ? absl::StrCat(prefix, f.name())
                       : absl::StrCat(prefix, f.name(), "[", index, "]");
    };
    if (is_string) {
      if (!IsValidUtf8(payload)) return path();
    } else {
      std::string bad = FindInvalidUtf8(payload, *field.nested, path() + ".", depth + 1);
      if (!bad.empty()) return bad;
    }
  }
  return "";
}

// The bytes of `buffer`: a view of its only slice, or a copy into `flat` when it has more.
absl::StatusOr<absl::string_view> WireView(const grpc::ByteBuffer& buffer,
                                           std::vector<grpc::Slice>* slices, std::string* flat) {
  if (!buffer.Dump(slices).ok()) return NotAMessage();  // nothing to scan: nothing parsed
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
  int number, wire_type;
  absl::string_view payload;
  while (NextField(&wire, &number, &payload, &wire_type)) {
    if (number == field && wire_type == kLengthDelimited) last = payload;
  }
  return last;
}

}  // namespace

template <typename Message>
absl::Status CheckRequestWire(absl::string_view wire, const WireLimits& limits) {
  static const Shape& shape = Shape::Of(Message::descriptor());
  return CheckWire(wire, shape, CountedFields<Message>(limits));
}

template <typename Message>
std::string FindInvalidUtf8Field(absl::string_view wire) {
  static const Shape& shape = Shape::Of(Message::descriptor());
  return FindInvalidUtf8(wire, shape, "");
}

#define BERT_WIRE_REQUEST(Message)                                                       \
  template absl::Status CheckRequestWire<Message>(absl::string_view, const WireLimits&); \
  template std::string FindInvalidUtf8Field<Message>(absl::string_view);
BERT_WIRE_REQUEST(v1::EmbedRequest)
BERT_WIRE_REQUEST(v1::TokenizeRequest)
BERT_WIRE_REQUEST(v1::RerankRequest)
BERT_WIRE_REQUEST(v1::DecodeRequest)
#undef BERT_WIRE_REQUEST

namespace {

// Parses `buffer`, whose bytes `wire` views (WireView) and which passed CheckRequestWire,
// into `request`; a request that does not parse is looked at on the wire to say why.
template <typename Message>
absl::Status Parse(const grpc::ByteBuffer& buffer, absl::string_view wire, Message* request) {
  // Parsed straight from the buffer's slices (a copy of a ByteBuffer shares them): requests
  // can be tens of MB.
  grpc::ByteBuffer shared(buffer);
  grpc::ProtoBufferReader reader(&shared);
  if (request->ParseFromZeroCopyStream(&reader)) return absl::OkStatus();
  const std::string field = FindInvalidUtf8Field<Message>(wire);
  if (!field.empty()) return absl::InvalidArgumentError(absl::StrCat(field, ": invalid UTF-8"));
  return NotAMessage();
}

template <typename Message>
absl::Status CheckAndParse(const grpc::ByteBuffer& buffer, const WireLimits& limits,
                           Message* request) {
  std::vector<grpc::Slice> slices;
  std::string flat;
  ASSIGN_OR_RETURN(const absl::string_view wire, WireView(buffer, &slices, &flat));
  RETURN_IF_ERROR(CheckRequestWire<Message>(wire, limits));
  return Parse(buffer, wire, request);
}

}  // namespace

absl::Status ParseEmbedRequest(const grpc::ByteBuffer& buffer, const WireLimits& limits,
                               v1::EmbedRequest* request) {
  std::vector<grpc::Slice> slices;
  std::string flat;
  ASSIGN_OR_RETURN(const absl::string_view wire, WireView(buffer, &slices, &flat));
  if (absl::Status checked = CheckRequestWire<v1::EmbedRequest>(wire, limits); !checked.ok()) {
    // Unparsed, but its answer can still echo the request_id (EchoableRequestId).
    request->set_request_id(
        std::string(LastBytesField(wire, v1::EmbedRequest::kRequestIdFieldNumber)));
    return checked;
  }
  return Parse(buffer, wire, request);
}

absl::Status ParseTokenizeRequest(const grpc::ByteBuffer& buffer, const WireLimits& limits,
                                  v1::TokenizeRequest* request) {
  return CheckAndParse(buffer, limits, request);
}

absl::Status ParseRerankRequest(const grpc::ByteBuffer& buffer, const WireLimits& limits,
                                v1::RerankRequest* request) {
  return CheckAndParse(buffer, limits, request);
}

absl::Status ParseDecodeRequest(const grpc::ByteBuffer& buffer, const WireLimits& limits,
                                v1::DecodeRequest* request) {
  return CheckAndParse(buffer, limits, request);
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
