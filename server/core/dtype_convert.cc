#include "server/core/dtype_convert.h"

#include <cstring>

namespace bert {
namespace {

uint32_t Bits(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  return bits;
}

float FromBits(uint32_t bits) {
  float value;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
}

void PutLe16(uint16_t v, char* p) {
  p[0] = static_cast<char>(v & 0xff);
  p[1] = static_cast<char>(v >> 8);
}

}  // namespace

int BytesPerElement(OutputDType dtype) { return dtype == OutputDType::kFloat32 ? 4 : 2; }

uint16_t ToHalfBits(float value) {
  const uint32_t x = Bits(value);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t abs = x & 0x7fffffffu;
  if (abs >= 0x7f800000u) {  // inf or NaN
    return sign | (abs > 0x7f800000u ? 0x7e00u : 0x7c00u);
  }
  if (abs >= 0x477ff000u) {  // >= 65520 rounds to inf
    return sign | 0x7c00u;
  }
  if (abs < 0x38800000u) {  // below the smallest normal half (2^-14): subnormal or zero
    // value = abs_f / 2^-24 units; round to nearest even.
    const uint32_t exp = abs >> 23;
    if (exp < 102) return sign;  // < 2^-25: rounds to zero
    const uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
    const int shift = 126 - static_cast<int>(exp);  // 14 + (127 - 1 - exp) ... see below
    // half subnormal = mant * 2^(exp-127-23) / 2^-24 = mant >> (126 - exp)
    const uint32_t q = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1);
    const uint32_t halfway = 1u << (shift - 1);
    uint32_t r = q;
    if (rem > halfway || (rem == halfway && (q & 1u))) ++r;
    return sign | static_cast<uint16_t>(r);
  }
  // Normal: rebias exponent (127 -> 15), round 13 dropped mantissa bits to nearest even.
  uint32_t h = ((abs >> 13) - (112u << 10));
  const uint32_t rem = abs & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;  // may carry into exponent: fine
  return sign | static_cast<uint16_t>(h);
}

float FromHalfBits(uint16_t bits) {
  const uint32_t sign = (static_cast<uint32_t>(bits) & 0x8000u) << 16;
  const uint32_t exp = (bits >> 10) & 0x1fu;
  uint32_t mant = bits & 0x3ffu;
  if (exp == 0x1f) return FromBits(sign | 0x7f800000u | (mant << 13));
  if (exp == 0) {
    if (mant == 0) return FromBits(sign);
    // Subnormal: mant * 2^-24.
    float v = static_cast<float>(mant) * 5.9604644775390625e-8f;
    return sign ? -v : v;
  }
  return FromBits(sign | ((exp + 112u) << 23) | (mant << 13));
}

uint16_t ToBFloat16Bits(float value) {
  const uint32_t x = Bits(value);
  if ((x & 0x7fffffffu) > 0x7f800000u) {  // NaN: keep it quiet and NaN
    return static_cast<uint16_t>((x >> 16) | 0x0040u);
  }
  const uint32_t rounding = 0x7fffu + ((x >> 16) & 1u);
  return static_cast<uint16_t>((x + rounding) >> 16);
}

float FromBFloat16Bits(uint16_t bits) { return FromBits(static_cast<uint32_t>(bits) << 16); }

void AppendAs(OutputDType dtype, absl::Span<const float> values, std::string* out) {
  const size_t start = out->size();
  out->resize(start + values.size() * BytesPerElement(dtype));
  char* p = &(*out)[start];
  switch (dtype) {
    case OutputDType::kFloat32:
      // The hosts we build for are little-endian (x86-64, aarch64).
      std::memcpy(p, values.data(), values.size() * sizeof(float));
      break;
    case OutputDType::kFloat16:
      for (float v : values) {
        PutLe16(ToHalfBits(v), p);
        p += 2;
      }
      break;
    case OutputDType::kBFloat16:
      for (float v : values) {
        PutLe16(ToBFloat16Bits(v), p);
        p += 2;
      }
      break;
  }
}

}  // namespace bert
