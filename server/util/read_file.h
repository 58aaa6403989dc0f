// A whole file's bytes, for the small files the server reads (model configs, TLS keys, /proc).
#ifndef BERT_SERVER_UTIL_READ_FILE_H_
#define BERT_SERVER_UTIL_READ_FILE_H_

#include <string>

#include "absl/status/statusor.h"

namespace bert {

// The bytes of `path`; NOT_FOUND "<path>: cannot open" when it cannot be opened, DATA_LOSS
// "<path>: read failed" when reading it fails part way.
absl::StatusOr<std::string> ReadFile(const std::string& path);

}  // namespace bert

#endif  // BERT_SERVER_UTIL_READ_FILE_H_
