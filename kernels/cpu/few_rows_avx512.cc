// The few-rows kernel for AVX-512F: this file is compiled with it enabled (bazel/copts.bzl),
// and gemm.cc calls it only where the CPU and the OS support it.
#include "kernels/cpu/few_rows_kernel.h"
// Nothing else but <immintrin.h>: an inline function of another header, compiled here with
// this file's instruction set, could be the copy the linker keeps for the whole program.

#if defined(__x86_64__)
// GCC 12's AVX-512 intrinsics fill unused operands with a self-initialised value that its own
// -Wuninitialized and -Wmaybe-uninitialized report (GCC bug 105593) wherever they are
// inlined: false positives.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

namespace bert {
namespace cpu {
namespace few_rows {
namespace {

struct Avx512 {
  using V = __m512;
  static constexpr int kLanes = 16;
  // 24 accumulators, 6 weight vectors and 1 input vector of the 32 registers: each input
  // vector serves 6 weight rows, each weight vector 4 input rows (bench/RESULTS_cpu.md).
  static constexpr int kWeightRows = 6;
  static constexpr int kInputRows = 4;

  static V Zero() { return _mm512_setzero_ps(); }
  static V Load(const float* p) { return _mm512_loadu_ps(p); }
  static V LoadFirst(const float* p, int n) {
    return _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << n) - 1), p);
  }
  static V Fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static float Sum(V v) {
    // In a fixed order (the halves, then as Avx2::Sum): a compiler may reorder
    // _mm512_reduce_add_ps's additions, and the sum must not depend on where it is inlined.
    const __m512 halves = _mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, 0x4E));
    const __m256 eight = _mm512_castps512_ps256(halves);
    const __m128 pairs = _mm_add_ps(_mm256_castps256_ps128(eight), _mm256_extractf128_ps(eight, 1));
    const __m128 quads = _mm_add_ps(pairs, _mm_movehl_ps(pairs, pairs));
    return _mm_cvtss_f32(_mm_add_ss(quads, _mm_shuffle_ps(quads, quads, 1)));
  }
};

}  // namespace

void DotsAvx512(const float* x, int rows, int in, const float* w, int o_begin, int o_end, float* y,
                int ld) {
  Dots<Avx512>(x, rows, in, w, o_begin, o_end, y, ld);
}

}  // namespace few_rows
}  // namespace cpu
}  // namespace bert

#endif  // defined(__x86_64__)
