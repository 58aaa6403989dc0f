// The one table from the server's internal absl::Status codes to gRPC status codes.
//   INVALID_ARGUMENT, OUT_OF_RANGE      -> INVALID_ARGUMENT (a bad request)
//   RESOURCE_EXHAUSTED                  -> RESOURCE_EXHAUSTED (overload; retry later)
//   UNAVAILABLE                         -> UNAVAILABLE (loading or draining)
//   DEADLINE_EXCEEDED, CANCELLED        -> the same
//   UNAUTHENTICATED, PERMISSION_DENIED  -> the same
//   FAILED_PRECONDITION                 -> FAILED_PRECONDITION (head the model lacks)
//   everything else                     -> INTERNAL (an engine or server fault)
#ifndef BERT_SERVER_GRPC_STATUS_MAP_H_
#define BERT_SERVER_GRPC_STATUS_MAP_H_

#include <string>

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace bert {

grpc::StatusCode ToGrpcCode(absl::StatusCode code);
grpc::Status ToGrpcStatus(const absl::Status& status);
// Upper-case name of a gRPC code ("INVALID_ARGUMENT"), for logs and metric labels.
const char* GrpcCodeName(grpc::StatusCode code);

}  // namespace bert

#endif  // BERT_SERVER_GRPC_STATUS_MAP_H_
