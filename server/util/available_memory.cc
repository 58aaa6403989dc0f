#include "server/util/available_memory.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "server/util/read_file.h"

namespace bert {
namespace {

// The file's text, or nullopt (a file the machine does not have is no error here).
std::optional<std::string> ReadText(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) return std::nullopt;
  return *std::move(text);
}

std::optional<int64_t> ParseInt(absl::string_view text) {
  int64_t value = 0;
  if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(text), &value)) return std::nullopt;
  return value;
}

}  // namespace

std::optional<int64_t> ParseMemAvailable(const std::string& meminfo) {
  for (absl::string_view line : absl::StrSplit(meminfo, '\n')) {
    if (!absl::ConsumePrefix(&line, "MemAvailable:")) continue;
    if (!absl::ConsumeSuffix(&line, "kB")) return std::nullopt;
    const std::optional<int64_t> kib = ParseInt(line);
    if (!kib.has_value()) return std::nullopt;
    return *kib * 1024;
  }
  return std::nullopt;
}

std::optional<std::string> ParseMemoryCgroup(const std::string& proc_cgroup, bool* v2) {
  std::optional<std::string> unified;
  for (absl::string_view line : absl::StrSplit(proc_cgroup, '\n', absl::SkipEmpty())) {
    // "hierarchy-id:controllers:path"
    const std::vector<absl::string_view> fields = absl::StrSplit(line, absl::MaxSplits(':', 2));
    if (fields.size() != 3) continue;
    for (absl::string_view controller : absl::StrSplit(fields[1], ',')) {
      if (controller == "memory") {
        *v2 = false;
        return std::string(fields[2]);
      }
    }
    if (fields[0] == "0" && fields[1].empty()) unified = std::string(fields[2]);
  }
  if (unified.has_value()) *v2 = true;
  return unified;
}

std::optional<int64_t> ParseCgroupLimit(const std::string& text) {
  const std::optional<int64_t> limit = ParseInt(text);  // "max" (v2's no limit) does not parse
  if (!limit.has_value() || *limit >= (int64_t{1} << 62)) return std::nullopt;
  return limit;
}

std::optional<int64_t> AvailableMemoryBytes() {
  std::optional<int64_t> available;
  if (const auto meminfo = ReadText("/proc/meminfo")) available = ParseMemAvailable(*meminfo);
  bool v2 = false;
  const auto proc_cgroup = ReadText("/proc/self/cgroup");
  const auto cgroup = proc_cgroup ? ParseMemoryCgroup(*proc_cgroup, &v2) : std::nullopt;
  if (cgroup.has_value()) {
    const std::string dir = v2 ? "/sys/fs/cgroup" + *cgroup : "/sys/fs/cgroup/memory" + *cgroup;
    const auto limit_text = ReadText(dir + (v2 ? "/memory.max" : "/memory.limit_in_bytes"));
    const auto usage_text = ReadText(dir + (v2 ? "/memory.current" : "/memory.usage_in_bytes"));
    const auto limit = limit_text ? ParseCgroupLimit(*limit_text) : std::nullopt;
    const auto usage = usage_text ? ParseInt(*usage_text) : std::nullopt;
    if (limit.has_value() && usage.has_value()) {
      const int64_t left = std::max<int64_t>(0, *limit - *usage);
      available = available.has_value() ? std::min(*available, left) : left;
    }
  }
  return available;
}

}  // namespace bert
