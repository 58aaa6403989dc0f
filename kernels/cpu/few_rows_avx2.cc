// The few-rows kernel for AVX2 and FMA: this file is compiled with them enabled
// (bazel/copts.bzl), and gemm.cc calls it only where the CPU has them.
#include "kernels/cpu/few_rows_kernel.h"
// Nothing else but <immintrin.h>: an inline function of another header, compiled here with
// this file's instruction set, could be the copy the linker keeps for the whole program.

#if defined(__x86_64__)
#include <immintrin.h>

namespace bert {
namespace cpu {
namespace few_rows {
namespace {

struct Avx2 {
  using V = __m256;
  static constexpr int kLanes = 8;
  // 12 accumulators, 3 weight vectors and 1 input vector: the 16 registers. 7 loads per 12 FMAs.
  static constexpr int kWeightRows = 3;
  static constexpr int kInputRows = 4;

  static V Zero() { return _mm256_setzero_ps(); }
  static V Load(const float* p) { return _mm256_loadu_ps(p); }
  static V LoadFirst(const float* p, int n) {
    const __m256i first =
        _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    return _mm256_maskload_ps(p, first);
  }
  static V Fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static float Sum(V v) {
    const __m128 pairs = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    const __m128 quads = _mm_add_ps(pairs, _mm_movehl_ps(pairs, pairs));
    return _mm_cvtss_f32(_mm_add_ss(quads, _mm_shuffle_ps(quads, quads, 1)));
  }
};

}  // namespace

void DotsAvx2(const float* x, int rows, int in, const float* w, int o_begin, int o_end, float* y,
              int ld) {
  Dots<Avx2>(x, rows, in, w, o_begin, o_end, y, ld);
}

}  // namespace few_rows
}  // namespace cpu
}  // namespace bert

#endif  // defined(__x86_64__)
