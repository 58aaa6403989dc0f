#include "bench/int_list.h"

#include <cstdio>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"

namespace bert {

std::optional<std::vector<int>> PositiveInts(absl::string_view value, absl::string_view flag) {
  std::vector<int> values;
  for (absl::string_view part : absl::StrSplit(value, ',')) {
    int n = 0;
    if (!absl::SimpleAtoi(part, &n) || n < 1) {
      std::fprintf(stderr, "bad --%s entry: %s\n", std::string(flag).c_str(),
                   std::string(part).c_str());
      return std::nullopt;
    }
    values.push_back(n);
  }
  return values;
}

}  // namespace bert
