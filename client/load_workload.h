// What bert_load sends: a pool of inputs (synthetic texts of a chosen length distribution,
// or JSON lines from a file) cut into EmbedRequests that share one set of options.
#ifndef BERT_CLIENT_LOAD_WORKLOAD_H_
#define BERT_CLIENT_LOAD_WORKLOAD_H_

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "proto/bert/v1/bert_service.pb.h"

namespace bert {

// Sequence lengths in tokens, [CLS] and [SEP] included, in [3, max].
struct LengthDistribution {
  enum class Kind { kFixed, kLogNormal };
  Kind kind = Kind::kLogNormal;
  int mean = 36;       // kFixed: every length
  int max = 128;       // kLogNormal: lengths above are clipped to it
  double sigma = 0.6;  // kLogNormal: of the underlying normal
};

// "fixed:N" or "lognormal:MEAN:MAX[:SIGMA]" (the benchmarks' variable-length batch is
// lognormal:36:128, sigma 0.6).
absl::StatusOr<LengthDistribution> ParseLengthDistribution(absl::string_view spec);

// `n` lengths drawn from `dist`.
std::vector<int> SampleLengths(const LengthDistribution& dist, int n, std::mt19937_64* rng);

// A text of `words` words, each a single token of an uncased BERT vocabulary (bert-base's
// and the test vocabulary's), so that it encodes to words + 2 tokens. Lower-case ASCII
// separated by spaces.
std::string SyntheticText(int words, std::mt19937_64* rng);

// The words SyntheticText draws from.
absl::Span<const char* const> SyntheticWords();

// `n` single-text inputs whose encodings follow `dist`.
std::vector<v1::Input> SyntheticInputs(const LengthDistribution& dist, int n, uint64_t seed);

// Inputs from a file of JSON lines (client/request_options.h's syntax); blank lines are
// skipped. Errors name the line.
absl::StatusOr<std::vector<v1::Input>> ReadInputFile(const std::string& path);

// `count` requests of `inputs_per_request` inputs each, taken from `pool` in order and
// wrapping around, each a copy of `options` (whose inputs are ignored) with a request_id
// "load-<index>".
std::vector<v1::EmbedRequest> MakeRequests(const std::vector<v1::Input>& pool,
                                           int inputs_per_request, int count,
                                           const v1::EmbedRequest& options);

// The same for Rerank: each request's query is the next input's text_a, its texts the
// `texts_per_request` after it (the pool's inputs are single texts), each a copy of `options`
// (whose query and texts are ignored) with a request_id "load-<index>".
std::vector<v1::RerankRequest> MakeRerankRequests(const std::vector<v1::Input>& pool,
                                                  int texts_per_request, int count,
                                                  const v1::RerankRequest& options);

}  // namespace bert

#endif  // BERT_CLIENT_LOAD_WORKLOAD_H_
