// The packed Linear kernel on Intel AMX (Sapphire Rapids and later): the weights packed once in
// bfloat16, each call's inputs rounded to bfloat16, products summed in float32 by the tile
// unit (TDPBF16PS). Internal to kernels/cpu: gemm.cc calls it for LinearIsa::kAmxBf16, only
// where HasAmxBf16() (cpu_features.h); linear_amx.cc is the one file compiled with AMX enabled.
//
// Packed layout: panels of kAmxWidth = 32 output features, each two tiles wide (16 features
// each), the inputs' length padded with zeros to a multiple of kAmxDepth = 32 (AmxDepth()).
// For each step of 32 k, tile t of the panel is 16 rows (the pairs of k) of 16 × 2 bfloat16:
// element [step][t][i][j][e] = w[p * 32 + t * 16 + j, step * 32 + 2i + e] (the pair layout
// TDPBF16PS reads its second operand in), zeros past the last feature and past `in`.
#ifndef BERT_KERNELS_CPU_LINEAR_AMX_H_
#define BERT_KERNELS_CPU_LINEAR_AMX_H_

#include <cstdint>
#include <cstring>

namespace bert {
namespace cpu {
namespace packed {

inline constexpr int kAmxWidth = 32;
inline constexpr int kAmxDepth = 32;
// Input rows per block: two tiles of 16 rows, four float32 accumulator tiles.
inline constexpr int kAmxRows = 32;

// `in` rounded up to whole steps of kAmxDepth.
inline int AmxDepth(int in) { return (in + kAmxDepth - 1) / kAmxDepth * kAmxDepth; }

// float32 -> bfloat16 bits as VCVTNEPS2BF16 rounds: to nearest, ties to even; a NaN stays a
// (quiet) NaN; a denormal becomes a zero of its sign, as the instruction and the tile unit
// treat them.
inline uint16_t ToBfloat16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  if ((u & 0x7f800000u) == 0) return static_cast<uint16_t>((u >> 16) & 0x8000u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

inline float FromBfloat16(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// Packs weight[out, in] (float32) into `panels` (ceil(out / 32) panels of 32 * AmxDepth(in)
// bfloat16 each, in the layout above).
void PackAmx(const float* weight, int out, int in, uint16_t* panels);

// y[r, o] = sum over k of bf16(x[r, k]) * w[o, k] (+ bias[o], one float addition to the
// finished sum, if `bias` is not null) for r < rows and the features o of panels
// [panel_begin, panel_end) (within `out`); x's rows are `in` apart, y's `out`. Each output is
// summed in the same order whatever `rows` and the panel range: a row's outputs do not depend
// on the rows beside it.
void LinearAmx(const float* x, int rows, int in, const uint16_t* panels, int out, int panel_begin,
               int panel_end, const float* bias, float* y);

}  // namespace packed
}  // namespace cpu
}  // namespace bert

#endif  // BERT_KERNELS_CPU_LINEAR_AMX_H_
