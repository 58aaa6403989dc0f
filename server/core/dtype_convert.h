// float32 -> float16 / bfloat16 conversion with round-to-nearest-even, and packing of
// float spans into the wire's little-endian bytes. Pure functions; thread-safe.
#ifndef BERT_SERVER_CORE_DTYPE_CONVERT_H_
#define BERT_SERVER_CORE_DTYPE_CONVERT_H_

#include <cstdint>
#include <string>

#include "absl/types/span.h"
#include "server/core/types.h"

namespace bert {

// IEEE binary16: overflow goes to +-inf, subnormals are kept, NaN stays NaN.
uint16_t ToHalfBits(float value);
float FromHalfBits(uint16_t bits);
// bfloat16: the top 16 bits of float32, rounded to nearest even; NaN stays NaN.
uint16_t ToBFloat16Bits(float value);
float FromBFloat16Bits(uint16_t bits);

// Appends `values` in `dtype` as little-endian bytes to `out`.
void AppendAs(OutputDType dtype, absl::Span<const float> values, std::string* out);

}  // namespace bert

#endif  // BERT_SERVER_CORE_DTYPE_CONVERT_H_
