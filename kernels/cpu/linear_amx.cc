// The AMX bfloat16 Linear kernel (linear_amx.h): this file is compiled with AMX and AVX-512
// BF16 enabled (bazel/copts.bzl), and gemm.cc calls it only where the CPU and the OS support
// them.
#include "kernels/cpu/linear_amx.h"
// Nothing else but <immintrin.h> (and <cstring>'s memset): an inline function or template of
// another header, compiled here with this file's instruction set, could be the copy the linker
// keeps for the whole program.

#if defined(__x86_64__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

namespace bert {
namespace cpu {
namespace packed {
namespace {

// A tile's bfloat16 values: 16 rows of 64 bytes.
constexpr int kTileValues = 16 * kAmxDepth;

// Tiles: 0-3 the float32 sums of a block (rows 0-15 and 16-31, features 0-15 and 16-31), 4 and 5
// its two row tiles of inputs, 6 and 7 the panel's two tiles of weights. Every tile is 16 rows
// of 64 bytes.
struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t bytes_per_row[16] = {};
  uint8_t rows[16] = {};
};

void ConfigureTiles() {
  TileConfig config;
  for (int t = 0; t < 8; ++t) {
    config.bytes_per_row[t] = 64;
    config.rows[t] = 16;
  }
  _tile_loadconfig(&config);
}

// The sums of one block against one panel, into c[32][32] (float32, 128 bytes a row): `a` is
// the block's first tile of rows (AmxInputs' layout); with `two`, the next tile (rows 16-31)
// follows it `steps` tiles later.
void Block(const uint16_t* a, int steps, const uint16_t* panel, bool two, float* c) {
  const uint16_t* a1 = a + static_cast<int64_t>(steps) * kTileValues;
  _tile_zero(0);
  _tile_zero(1);
  if (two) {
    _tile_zero(2);
    _tile_zero(3);
  }
  for (int step = 0; step < steps; ++step) {
    const uint16_t* b = panel + static_cast<int64_t>(step) * 2 * kTileValues;
    _tile_loadd(4, a + static_cast<int64_t>(step) * kTileValues, 64);
    _tile_loadd(6, b, 64);
    _tile_loadd(7, b + kTileValues, 64);
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    if (two) {
      _tile_loadd(5, a1 + static_cast<int64_t>(step) * kTileValues, 64);
      _tile_dpbf16ps(2, 5, 6);
      _tile_dpbf16ps(3, 5, 7);
    }
  }
  _tile_stored(0, c, 128);
  _tile_stored(1, c + 16, 128);
  if (two) {
    _tile_stored(2, c + 16 * 32, 128);
    _tile_stored(3, c + 16 * 32 + 16, 128);
  }
}

// y[r, j] = c[r][j] (+ bias[j]) for r < rows, j < cols (<= 32): the block's sums, two vectors
// of 16 a row (masked past `cols`).
void StoreRows(const float* c, int rows, int cols, const float* bias, float* y, int ldy) {
  const __mmask16 first = cols >= 16 ? 0xffff : static_cast<__mmask16>((1u << cols) - 1);
  const __mmask16 second = cols >= 32   ? 0xffff
                           : cols <= 16 ? 0
                                        : static_cast<__mmask16>((1u << (cols - 16)) - 1);
  const __m512 b0 = bias == nullptr ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(first, bias);
  const __m512 b1 = bias == nullptr || second == 0 ? _mm512_setzero_ps()
                                                   : _mm512_maskz_loadu_ps(second, bias + 16);
  for (int r = 0; r < rows; ++r) {
    const float* cr = c + r * kAmxWidth;
    float* yr = y + static_cast<int64_t>(r) * ldy;
    __m512 v0 = _mm512_load_ps(cr), v1 = _mm512_load_ps(cr + 16);
    if (bias != nullptr) {  // one float addition to the finished sum, as the other versions
      v0 = _mm512_add_ps(v0, b0);
      v1 = _mm512_add_ps(v1, b1);
    }
    _mm512_mask_storeu_ps(yr, first, v0);
    if (second != 0) _mm512_mask_storeu_ps(yr + 16, second, v1);
  }
}

}  // namespace

void PackAmx(const float* weight, int out, int in, uint16_t* panels) {
  const int depth = AmxDepth(in);
  const int num_panels = (out + kAmxWidth - 1) / kAmxWidth;
  for (int p = 0; p < num_panels; ++p) {
    uint16_t* panel = panels + static_cast<int64_t>(p) * kAmxWidth * depth;
    for (int step = 0; step < depth / kAmxDepth; ++step) {
      for (int t = 0; t < 2; ++t) {
        for (int i = 0; i < 16; ++i) {
          for (int j = 0; j < 16; ++j) {
            for (int e = 0; e < 2; ++e) {
              const int o = p * kAmxWidth + t * 16 + j;
              const int k = step * kAmxDepth + 2 * i + e;
              panel[(((static_cast<int64_t>(step) * 2 + t) * 16 + i) * 16 + j) * 2 + e] =
                  o < out && k < in ? ToBfloat16(weight[static_cast<int64_t>(o) * in + k]) : 0;
            }
          }
        }
      }
    }
  }
}

void AmxInputs(const float* x, int rows, int in, uint16_t* a) {
  const int steps = AmxDepth(in) / kAmxDepth;
  const int tiles = (rows + kAmxTileRows - 1) / kAmxTileRows;
  for (int t = 0; t < tiles; ++t) {
    uint16_t* tile_row = a + static_cast<int64_t>(t) * steps * kTileValues;
    for (int i = 0; i < kAmxTileRows; ++i, tile_row += kAmxDepth) {
      const int r = t * kAmxTileRows + i;
      if (r >= rows) {
        for (int step = 0; step < steps; ++step) {
          std::memset(tile_row + static_cast<int64_t>(step) * kTileValues, 0, 2 * kAmxDepth);
        }
        continue;
      }
      const float* xr = x + static_cast<int64_t>(r) * in;
      for (int step = 0; step < steps; ++step) {
        // Past `in` the masked loads give zeros, which round to bfloat16 zeros.
        const int k = step * kAmxDepth;
        const int left = in - k;
        const __mmask16 lo = left >= 16 ? 0xffff : static_cast<__mmask16>((1u << left) - 1);
        const __mmask16 hi = left >= 32   ? 0xffff
                             : left <= 16 ? 0
                                          : static_cast<__mmask16>((1u << (left - 16)) - 1);
        // (k < in: the first half has a value; the second may have none, and then its address
        // would be past the row's end.)
        const __m256bh v0 = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(lo, xr + k));
        const __m256bh v1 = _mm512_cvtneps_pbh(hi == 0 ? _mm512_setzero_ps()
                                                       : _mm512_maskz_loadu_ps(hi, xr + k + 16));
        uint16_t* out = tile_row + static_cast<int64_t>(step) * kTileValues;
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), (__m256i)v0);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 16), (__m256i)v1);
      }
    }
  }
}

void AmxPanel(const uint16_t* a, int rows, int in, const uint16_t* panel, int cols,
              const float* bias, float* y, int ldy) {
  const int steps = AmxDepth(in) / kAmxDepth;
  alignas(64) float c[kAmxRows * kAmxWidth];
  ConfigureTiles();
  for (int r0 = 0; r0 < rows; r0 += kAmxRows) {
    const int block_rows = rows - r0 < kAmxRows ? rows - r0 : kAmxRows;
    Block(a + static_cast<int64_t>(r0) * steps * kAmxDepth, steps, panel, block_rows > 16, c);
    StoreRows(c, block_rows, cols, bias, y + static_cast<int64_t>(r0) * ldy, ldy);
  }
  _tile_release();
}

}  // namespace packed
}  // namespace cpu
}  // namespace bert

#endif  // defined(__x86_64__)
