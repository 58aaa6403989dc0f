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
//
// The helpers below are `static inline`: a copy that the AMX file compiles out of line, with its
// instruction set, must never be the one another file calls (linear_avx512.cc says why).
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
inline constexpr int kAmxTileRows = 16;

// `in` rounded up to whole steps of kAmxDepth.
static inline int AmxDepth(int in) { return (in + kAmxDepth - 1) / kAmxDepth * kAmxDepth; }

// The bfloat16 values AmxInputs writes for `rows` rows: rows rounded up to 16 (a tile), each
// AmxDepth(in) long.
static inline int64_t AmxInputSize(int rows, int in) {
  return (static_cast<int64_t>(rows) + kAmxTileRows - 1) / kAmxTileRows * kAmxTileRows *
         AmxDepth(in);
}

// float32 -> bfloat16 bits as VCVTNEPS2BF16 rounds: to nearest, ties to even; a NaN stays a
// (quiet) NaN; a denormal becomes a zero of its sign, as the instruction and the tile unit
// treat them.
static inline uint16_t ToBfloat16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  if ((u & 0x7f800000u) == 0) return static_cast<uint16_t>((u >> 16) & 0x8000u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

static inline float FromBfloat16(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// Packs weight[out, in] (float32) into `panels` (ceil(out / 32) panels of 32 * AmxDepth(in)
// bfloat16 each, in the layout above).
void PackAmx(const float* weight, int out, int in, uint16_t* panels);

// x[rows, in] (float32) rounded to bfloat16 as the tile unit reads it, a[AmxInputSize(rows, in)]
// (best on a 64-byte boundary), in tiles: for each 16 rows in turn and each step of 32 k, the 16
// rows' 32 values (a tile, 1 KiB in one piece); zeros past `in` and in the rows past `rows`. Row r0
// (a multiple of 16) starts at a + r0 * AmxDepth(in).
void AmxInputs(const float* x, int rows, int in, uint16_t* a);

// One panel against the inputs `a` (AmxInputs of `rows` rows): y[r, j] = the sum over k of
// a[r, k] * panel's weight (j, k) (+ bias[j], one float addition to the finished sum, if `bias`
// is not null), for r < rows and j < cols (<= 32); y's rows are `ldy` apart. Each output is
// summed in the same order whatever `rows`: a row's outputs do not depend on the rows beside it.
void AmxPanel(const uint16_t* a, int rows, int in, const uint16_t* panel, int cols,
              const float* bias, float* y, int ldy);

}  // namespace packed
}  // namespace cpu
}  // namespace bert

#endif  // BERT_KERNELS_CPU_LINEAR_AMX_H_
