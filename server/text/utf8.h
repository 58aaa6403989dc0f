// Strict UTF-8 decoding shared by request validation (server/core) and the tokenizer.
//
// "Strict" is RFC 3629: a code point uses its shortest form (no overlong encodings such as
// C0 AF or E0 80 AF), lies in U+0000..U+10FFFF, is not a UTF-16 surrogate (U+D800..U+DFFF),
// and has all its continuation bytes (a sequence cut off by the end of the text is invalid).
// Lead bytes 80-C1 and F5-FF are never valid.
//
// Pure functions; thread-safe. DecodeUtf8 is inline because the tokenizer calls it for every
// non-ASCII code point.
#ifndef BERT_SERVER_TEXT_UTF8_H_
#define BERT_SERVER_TEXT_UTF8_H_

#include <cstddef>
#include <cstdint>

#include "absl/strings/string_view.h"

namespace bert {

// Decodes the code point starting at text[pos] (pos < text.size()) into *cp. Returns the
// length of its encoding (1 to 4), or 0 when the bytes there are not strict UTF-8, in which
// case *cp is unspecified.
inline int DecodeUtf8(absl::string_view text, size_t pos, int32_t* cp) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data()) + pos;
  const size_t left = text.size() - pos;
  const unsigned char b0 = s[0];
  auto cont = [s](size_t k) { return (s[k] & 0xC0) == 0x80; };
  if (b0 < 0x80) {
    *cp = b0;
    return 1;
  }
  if (b0 >= 0xC2 && b0 <= 0xDF) {  // C0 and C1 could only start overlong forms.
    if (left < 2 || !cont(1)) return 0;
    *cp = ((b0 & 0x1F) << 6) | (s[1] & 0x3F);
    return 2;
  }
  if (b0 >= 0xE0 && b0 <= 0xEF) {
    if (left < 3 || !cont(1) || !cont(2)) return 0;
    if (b0 == 0xE0 && s[1] < 0xA0) return 0;  // Overlong (below U+0800).
    if (b0 == 0xED && s[1] > 0x9F) return 0;  // Surrogate.
    *cp = ((b0 & 0x0F) << 12) | ((s[1] & 0x3F) << 6) | (s[2] & 0x3F);
    return 3;
  }
  if (b0 >= 0xF0 && b0 <= 0xF4) {  // F5-F7 could only start values above U+10FFFF.
    if (left < 4 || !cont(1) || !cont(2) || !cont(3)) return 0;
    if (b0 == 0xF0 && s[1] < 0x90) return 0;  // Overlong (below U+10000).
    if (b0 == 0xF4 && s[1] > 0x8F) return 0;  // Above U+10FFFF.
    *cp = ((b0 & 0x07) << 18) | ((s[1] & 0x3F) << 12) | ((s[2] & 0x3F) << 6) | (s[3] & 0x3F);
    return 4;
  }
  return 0;  // A continuation byte (80-BF) or F5-FF.
}

// The offset of the first code point at or after `pos` that is not strict UTF-8, or
// absl::string_view::npos when text[pos..] is all valid. `pos` must start a code point (or be
// text.size()); the scan decodes forward from there as DecodeUtf8 does.
size_t FindInvalidUtf8(absl::string_view text, size_t pos = 0);

// True when the whole of `text` is strict UTF-8 (the empty string is).
inline bool IsValidUtf8(absl::string_view text) {
  return FindInvalidUtf8(text) == absl::string_view::npos;
}

}  // namespace bert

#endif  // BERT_SERVER_TEXT_UTF8_H_
