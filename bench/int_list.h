// The benchmarks' list flags ("--rows=1,16,128", "--batches=1,8,32").
#ifndef BERT_BENCH_INT_LIST_H_
#define BERT_BENCH_INT_LIST_H_

#include <optional>
#include <vector>

#include "absl/strings/string_view.h"

namespace bert {

// The positive integers of a comma-separated flag value; nullopt for anything else, the bad
// entry printed to stderr as "bad --<flag> entry: <entry>".
std::optional<std::vector<int>> PositiveInts(absl::string_view value, absl::string_view flag);

}  // namespace bert

#endif  // BERT_BENCH_INT_LIST_H_
