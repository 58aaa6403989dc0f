// Conversions between bert.v1 protobuf messages and server/core types. Unknown enum
// values (proto3 keeps them) are INVALID_ARGUMENT naming the field. Thread-safe.
#ifndef BERT_SERVER_GRPC_CONVERT_H_
#define BERT_SERVER_GRPC_CONVERT_H_

#include <vector>

#include "absl/status/statusor.h"
#include "proto/bert/v1/bert_service.pb.h"
#include "server/core/types.h"

namespace bert {

absl::StatusOr<EmbedRequestSpec> FromProto(const v1::EmbedRequest& request);
absl::StatusOr<TokenizeRequestSpec> FromProto(const v1::TokenizeRequest& request);

// Moves the tensors' bytes out of `result`.
void ToProto(EmbedResult result, v1::EmbedResponse* response);
void ToProto(std::vector<Encoding> encodings, v1::TokenizeResponse* response);

v1::DataType ToProtoDType(OutputDType dtype);

}  // namespace bert

#endif  // BERT_SERVER_GRPC_CONVERT_H_
