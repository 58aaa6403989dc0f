// Structured, leveled log lines on stderr: `ts=... level=info msg="..." key=value ...`.
//
//   BERT_LOG(kInfo) << "listening" << LogKv("address", addr);
//
// The level threshold is process-wide (SetLogLevel); lines below it cost one comparison.
// Thread-safe: each line is formatted privately and written with one call.
#ifndef BERT_SERVER_UTIL_LOG_H_
#define BERT_SERVER_UTIL_LOG_H_

#include <sstream>
#include <string>

#include "absl/strings/string_view.h"

namespace bert {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// Parses "debug", "info", "warning"/"warn", "error"; false if unknown.
bool ParseLogLevel(absl::string_view text, LogLevel* level);
void SetLogLevel(LogLevel level);
bool LogEnabled(LogLevel level);

// One key=value pair; values with spaces or quotes are quoted.
struct LogKv {
  template <typename T>
  LogKv(absl::string_view key, const T& value) : key(key) {
    std::ostringstream out;
    out << value;
    this->value = out.str();
  }
  std::string key;
  std::string value;
};

class LogLine {
 public:
  explicit LogLine(LogLevel level);
  ~LogLine();  // Writes the line.
  LogLine(const LogLine&) = delete;
  LogLine& operator=(const LogLine&) = delete;

  // The first streamed text is the message; LogKv pairs follow it.
  LogLine& operator<<(const LogKv& kv);
  template <typename T>
  LogLine& operator<<(const T& value) {
    message_ << value;
    return *this;
  }

 private:
  LogLevel level_;
  std::ostringstream message_;
  std::string fields_;
};

}  // namespace bert

#define BERT_LOG(level)                               \
  if (!::bert::LogEnabled(::bert::LogLevel::level)) { \
  } else                                              \
    ::bert::LogLine(::bert::LogLevel::level)

#endif  // BERT_SERVER_UTIL_LOG_H_
