// Conversions between bert.v1 protobuf messages and server/core types. Unknown enum
// values (proto3 keeps them) are INVALID_ARGUMENT naming the field. Thread-safe.
#ifndef BERT_SERVER_GRPC_CONVERT_H_
#define BERT_SERVER_GRPC_CONVERT_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "proto/bert/v1/bert_service.pb.h"
#include "server/core/classifier_scores.h"
#include "server/core/types.h"

namespace bert {

absl::StatusOr<EmbedRequestSpec> FromProto(const v1::EmbedRequest& request);
absl::StatusOr<TokenizeRequestSpec> FromProto(const v1::TokenizeRequest& request);

// The Embed request a Rerank request stands for: a (query, text) pair per text, asking for
// HEAD_LOGITS in float32, whose answer is the ranking (answer_bytes: RerankAnswerBound).
// seq_length 0 becomes `default_seq_length` (the classifier's), an unspecified truncation
// longest_first. INVALID_ARGUMENT without texts, for an unknown truncation, or when the
// request with the query repeated for each text would be over `max_request_bytes` (0:
// unchecked): what the pairs cost the server, which the equivalent Embed request would be held
// to.
absl::StatusOr<EmbedRequestSpec> EmbedSpecForRerank(const v1::RerankRequest& request,
                                                    int default_seq_length,
                                                    uint64_t max_request_bytes);

// Moves the tensors' bytes out of `result`.
void ToProto(EmbedResult result, v1::EmbedResponse* response);
void ToProto(std::vector<Encoding> encodings, v1::TokenizeResponse* response);
DecodeRequestSpec FromProto(const v1::DecodeRequest& request);
// Moves the texts out of `texts`.
void ToProto(std::vector<std::string> texts, v1::DecodeResponse* response);
// The most bytes a RerankResponse to `request` (ToRerankResponse) can take.
int64_t RerankAnswerBound(const v1::RerankRequest& request);

// The ranking of `request`'s texts from the logits of EmbedSpecForRerank's pairs: each
// logit's score under `function`, best first (RankByScore), top_n of them.
void ToRerankResponse(const EmbedResult& result, const v1::RerankRequest& request,
                      ScoreFunction function, v1::RerankResponse* response);

v1::DataType ToProtoDType(OutputDType dtype);

}  // namespace bert

#endif  // BERT_SERVER_GRPC_CONVERT_H_
