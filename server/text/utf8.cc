#include "server/text/utf8.h"

#include <cstring>

namespace bert {

size_t FindInvalidUtf8(absl::string_view text, size_t pos) {
  const size_t n = text.size();
  size_t i = pos;
  int32_t cp;
  while (i < n) {
    // Eight ASCII bytes at a time: what is left of a long text after the tokenizer stopped
    // early is mostly ASCII, and requests are checked whole before they are tokenized.
    if (n - i >= 8) {
      uint64_t chunk;
      std::memcpy(&chunk, text.data() + i, 8);
      if ((chunk & 0x8080808080808080ull) == 0) {
        i += 8;
        continue;
      }
    }
    if (static_cast<unsigned char>(text[i]) < 0x80) {
      ++i;
      continue;
    }
    const int len = DecodeUtf8(text, i, &cp);
    if (len == 0) return i;
    i += len;
  }
  return absl::string_view::npos;
}

}  // namespace bert
