#include "server/text/utf8.h"

namespace bert {

bool IsValidUtf8(absl::string_view text) {
  size_t i = 0;
  int32_t cp;
  while (i < text.size()) {
    if (static_cast<unsigned char>(text[i]) < 0x80) {
      ++i;
      continue;
    }
    const int len = DecodeUtf8(text, i, &cp);
    if (len == 0) return false;
    i += len;
  }
  return true;
}

}  // namespace bert
