#include "server/core/dtype_convert.h"

#include <cmath>
#include <cstring>
#include <limits>

#include "gtest/gtest.h"

namespace bert {
namespace {

float F(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

TEST(DTypeConvertTest, HalfExactValues) {
  EXPECT_EQ(ToHalfBits(0.f), 0x0000);
  EXPECT_EQ(ToHalfBits(-0.f), 0x8000);
  EXPECT_EQ(ToHalfBits(1.f), 0x3c00);
  EXPECT_EQ(ToHalfBits(-2.f), 0xc000);
  EXPECT_EQ(ToHalfBits(65504.f), 0x7bff);
  EXPECT_EQ(ToHalfBits(6.103515625e-05f), 0x0400);         // smallest normal
  EXPECT_EQ(ToHalfBits(5.9604644775390625e-08f), 0x0001);  // smallest subnormal
}

TEST(DTypeConvertTest, HalfRoundsToNearestEven) {
  // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties to even (1.0).
  EXPECT_EQ(ToHalfBits(1.f + std::ldexp(1.f, -11)), 0x3c00);
  // 1 + 3 * 2^-11 is halfway between 1+2^-10 (odd) and 1+2^-9 (even): rounds up.
  EXPECT_EQ(ToHalfBits(1.f + 3 * std::ldexp(1.f, -11)), 0x3c02);
  // Just above halfway rounds up.
  EXPECT_EQ(ToHalfBits(std::nextafter(1.f + std::ldexp(1.f, -11), 2.f)), 0x3c01);
  // Subnormal tie: 1.5 * 2^-24 -> 2 * 2^-24 (even).
  EXPECT_EQ(ToHalfBits(1.5f * 5.9604644775390625e-08f), 0x0002);
  EXPECT_EQ(ToHalfBits(0.5f * 5.9604644775390625e-08f), 0x0000);  // tie to even zero
  // Rounding up across the exponent boundary.
  EXPECT_EQ(ToHalfBits(2.f - std::ldexp(1.f, -12)), 0x4000);
}

TEST(DTypeConvertTest, HalfOverflowInfNan) {
  EXPECT_EQ(ToHalfBits(65520.f), 0x7c00);  // rounds to inf
  EXPECT_EQ(ToHalfBits(65519.f), 0x7bff);  // rounds down to max
  EXPECT_EQ(ToHalfBits(1e9f), 0x7c00);
  EXPECT_EQ(ToHalfBits(-std::numeric_limits<float>::infinity()), 0xfc00);
  const uint16_t nan = ToHalfBits(std::numeric_limits<float>::quiet_NaN());
  EXPECT_EQ(nan & 0x7c00, 0x7c00);
  EXPECT_NE(nan & 0x03ff, 0);
}

TEST(DTypeConvertTest, HalfRoundTripAllHalfValues) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) continue;  // NaN payloads
    const float f = FromHalfBits(static_cast<uint16_t>(h));
    EXPECT_EQ(ToHalfBits(f), h) << h;
  }
}

TEST(DTypeConvertTest, BFloat16RoundsToNearestEven) {
  EXPECT_EQ(ToBFloat16Bits(1.f), 0x3f80);
  EXPECT_EQ(ToBFloat16Bits(-1.f), 0xbf80);
  EXPECT_EQ(ToBFloat16Bits(F(0x3f808000u)), 0x3f80);  // tie, even stays
  EXPECT_EQ(ToBFloat16Bits(F(0x3f818000u)), 0x3f82);  // tie, odd rounds up
  EXPECT_EQ(ToBFloat16Bits(F(0x3f808001u)), 0x3f81);  // above tie
  EXPECT_EQ(ToBFloat16Bits(F(0x7f7fffffu)), 0x7f80);  // max float -> inf
  const uint16_t nan = ToBFloat16Bits(std::numeric_limits<float>::quiet_NaN());
  EXPECT_TRUE(std::isnan(FromBFloat16Bits(nan)));
  EXPECT_EQ(FromBFloat16Bits(0x4049), F(0x40490000u));
}

TEST(DTypeConvertTest, AppendAsWritesLittleEndian) {
  std::string out;
  const float values[] = {1.f, -2.f};
  AppendAs(OutputDType::kFloat16, values, &out);
  ASSERT_EQ(out.size(), 4u);
  EXPECT_EQ(static_cast<uint8_t>(out[0]), 0x00);
  EXPECT_EQ(static_cast<uint8_t>(out[1]), 0x3c);
  EXPECT_EQ(static_cast<uint8_t>(out[3]), 0xc0);
  AppendAs(OutputDType::kBFloat16, values, &out);
  ASSERT_EQ(out.size(), 8u);
  EXPECT_EQ(static_cast<uint8_t>(out[4]), 0x80);
  EXPECT_EQ(static_cast<uint8_t>(out[5]), 0x3f);
  AppendAs(OutputDType::kFloat32, values, &out);
  ASSERT_EQ(out.size(), 16u);
  float back;
  std::memcpy(&back, out.data() + 12, 4);
  EXPECT_EQ(back, -2.f);
}

}  // namespace
}  // namespace bert
