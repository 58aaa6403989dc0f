#include "server/text/utf8.h"

#include <string>

#include "gtest/gtest.h"

namespace bert {
namespace {

// An encoder written from the RFC 3629 table, independent of the decoder under test.
std::string Encode(uint32_t cp) {
  std::string out;
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return out;
}

int Decode(const std::string& bytes, int32_t* cp) { return DecodeUtf8(bytes, 0, cp); }

TEST(Utf8Test, EveryScalarValueRoundTrips) {
  for (uint32_t cp = 0; cp <= 0x10FFFF; ++cp) {
    if (cp >= 0xD800 && cp <= 0xDFFF) continue;
    const std::string bytes = Encode(cp);
    int32_t decoded = -1;
    ASSERT_EQ(Decode(bytes, &decoded), static_cast<int>(bytes.size())) << std::hex << cp;
    ASSERT_EQ(decoded, static_cast<int32_t>(cp)) << std::hex << cp;
    ASSERT_TRUE(IsValidUtf8(bytes)) << std::hex << cp;
  }
}

// Every byte sequence of each length is tried; exactly the shortest forms of scalar values
// may be accepted, so the accepted counts are fixed by the standard.
TEST(Utf8Test, AcceptsExactlyTheScalarValues) {
  int32_t cp;
  int one = 0, two = 0, three = 0, four = 0;
  for (int b0 = 0; b0 < 256; ++b0) {
    if (Decode(std::string(1, static_cast<char>(b0)), &cp) == 1) ++one;
    for (int b1 = 0; b1 < 256; ++b1) {
      const std::string s2 = {static_cast<char>(b0), static_cast<char>(b1)};
      if (Decode(s2, &cp) == 2) ++two;
      if (b0 < 0xE0 || b0 > 0xEF) continue;
      for (int b2 = 0; b2 < 256; ++b2) {
        if (Decode(s2 + static_cast<char>(b2), &cp) == 3) ++three;
      }
    }
  }
  for (int b0 = 0xF0; b0 <= 0xFF; ++b0) {
    for (int b1 = 0x80; b1 <= 0xBF; ++b1) {
      for (int b2 = 0x80; b2 <= 0xBF; ++b2) {
        for (int b3 = 0x80; b3 <= 0xBF; ++b3) {
          const std::string s = {static_cast<char>(b0), static_cast<char>(b1),
                                 static_cast<char>(b2), static_cast<char>(b3)};
          if (Decode(s, &cp) == 4) ++four;
        }
      }
    }
  }
  EXPECT_EQ(one, 0x80);
  EXPECT_EQ(two, 0x800 - 0x80);
  EXPECT_EQ(three, 0x10000 - 0x800 - 0x800);  // Less the 2048 surrogates.
  EXPECT_EQ(four, 0x110000 - 0x10000);
}

TEST(Utf8Test, RejectsOverlongEncodings) {
  for (const char* bad : {"\xc0\x80", "\xc0\xaf", "\xc1\xbf",  // 2-byte forms of ASCII
                          "\xe0\x80\xaf", "\xe0\x9f\xbf",      // 3-byte forms below U+0800
                          "\xf0\x80\x80\xaf", "\xf0\x8f\xbf\xbf"}) {  // 4-byte below U+10000
    int32_t cp;
    EXPECT_EQ(Decode(bad, &cp), 0) << bad;
    EXPECT_FALSE(IsValidUtf8(bad)) << bad;
  }
}

TEST(Utf8Test, RejectsSurrogates) {
  for (const char* bad : {"\xed\xa0\x80", "\xed\xaf\xbf", "\xed\xb0\x80", "\xed\xbf\xbf",
                          "\xed\xa0\xbd\xed\xb8\x80"}) {  // CESU-8 pair for U+1F600
    int32_t cp;
    EXPECT_EQ(Decode(bad, &cp), 0) << bad;
    EXPECT_FALSE(IsValidUtf8(bad)) << bad;
  }
  EXPECT_TRUE(IsValidUtf8("\xed\x9f\xbf"));  // U+D7FF, just below.
  EXPECT_TRUE(IsValidUtf8("\xee\x80\x80"));  // U+E000, just above.
}

TEST(Utf8Test, RejectsValuesAboveU10FFFF) {
  for (const char* bad : {"\xf4\x90\x80\x80", "\xf4\xbf\xbf\xbf", "\xf5\x80\x80\x80",
                          "\xf7\xbf\xbf\xbf", "\xf8\x88\x80\x80\x80"}) {
    int32_t cp;
    EXPECT_EQ(Decode(bad, &cp), 0) << bad;
    EXPECT_FALSE(IsValidUtf8(bad)) << bad;
  }
  EXPECT_TRUE(IsValidUtf8("\xf4\x8f\xbf\xbf"));  // U+10FFFF itself.
}

TEST(Utf8Test, RejectsTruncatedAndStrayBytes) {
  for (const std::string bad : {"\xc3", "\xe2\x82", "\xf0\x9f\x98", "abc\xe2\x82",
                                "\xe2\x82x", "\xf0\x9f\x98x", "\x80", "a\xbf", "\xfe", "\xff"}) {
    EXPECT_FALSE(IsValidUtf8(bad)) << bad;
  }
  // A complete sequence right at the end of the text is fine.
  EXPECT_TRUE(IsValidUtf8("abc\xe2\x82\xac"));
  // DecodeUtf8 looks only at text[pos...]: the cut-off sequence is invalid where it starts.
  int32_t cp;
  const std::string text = "\xe2\x82\xac\xe2\x82";
  EXPECT_EQ(DecodeUtf8(text, 0, &cp), 3);
  EXPECT_EQ(cp, 0x20AC);
  EXPECT_EQ(DecodeUtf8(text, 3, &cp), 0);
}

TEST(Utf8Test, EmptyAndMixedText) {
  EXPECT_TRUE(IsValidUtf8(""));
  EXPECT_TRUE(IsValidUtf8("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"));
  EXPECT_TRUE(IsValidUtf8(std::string("a\0b", 3)));  // NUL is a valid code point.
  EXPECT_FALSE(IsValidUtf8("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98"));
}

// FindInvalidUtf8 skips ASCII eight bytes at a time: a bad byte at any position, right after
// or inside such a block and in the tail, is found where a byte-by-byte decode finds it.
TEST(Utf8Test, FindInvalidUtf8GivesTheFirstBadOffset) {
  const std::string ascii(40, 'x');
  for (size_t at = 0; at <= ascii.size(); ++at) {
    for (const std::string bad : {"\xff", "\xe2\x82", "\xc0\xaf", "\xed\xa0\x80"}) {
      const std::string text = ascii.substr(0, at) + bad + ascii.substr(at) + "\xff";
      EXPECT_EQ(FindInvalidUtf8(text), at) << at;
      EXPECT_EQ(FindInvalidUtf8(text, at), at) << at;
      EXPECT_EQ(FindInvalidUtf8(text, at + bad.size()), text.size() - 1) << at;
    }
    const std::string good = ascii.substr(0, at) + "\xc3\xa9\xf0\x9f\x98\x80" + ascii.substr(at);
    EXPECT_EQ(FindInvalidUtf8(good), absl::string_view::npos) << at;
    EXPECT_EQ(FindInvalidUtf8(good, at), absl::string_view::npos) << at;
  }
  EXPECT_EQ(FindInvalidUtf8("", 0), absl::string_view::npos);
  EXPECT_EQ(FindInvalidUtf8("ab\xff", 3), absl::string_view::npos);  // pos == size: nothing left.
}

}  // namespace
}  // namespace bert
