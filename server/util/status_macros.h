// RETURN_IF_ERROR / ASSIGN_OR_RETURN for absl::Status code (abseil 20220623 has none).
#ifndef BERT_SERVER_UTIL_STATUS_MACROS_H_
#define BERT_SERVER_UTIL_STATUS_MACROS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define BERT_STATUS_CONCAT_INNER_(a, b) a##b
#define BERT_STATUS_CONCAT_(a, b) BERT_STATUS_CONCAT_INNER_(a, b)

// Returns the status of `expr` from the enclosing function if it is not OK.
#define RETURN_IF_ERROR(expr)                  \
  do {                                         \
    ::absl::Status _status = (expr);           \
    if (!_status.ok()) return _status;         \
  } while (0)

// `ASSIGN_OR_RETURN(auto x, MakeX());` declares/assigns x or returns the error.
#define ASSIGN_OR_RETURN(lhs, expr) \
  ASSIGN_OR_RETURN_IMPL_(BERT_STATUS_CONCAT_(_statusor_, __LINE__), lhs, expr)

#define ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                           \
  if (!statusor.ok()) return statusor.status();     \
  lhs = std::move(statusor).value()

#endif  // BERT_SERVER_UTIL_STATUS_MACROS_H_
