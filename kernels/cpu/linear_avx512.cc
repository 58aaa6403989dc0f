// The packed Linear kernel for AVX-512F: this file is compiled with it enabled
// (bazel/copts.bzl), and gemm.cc calls it only where the CPU and the OS support it.
#include "kernels/cpu/packed_kernel.h"
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
namespace packed {
namespace {

struct Avx512 {
  using V = __m512;
  static constexpr int kLanes = 16;
  // 24 accumulators (8 rows × the panel's 3 vectors), 3 panel vectors and 1 broadcast input
  // of the 32 registers. Against 12 rows × 2 vectors, 11 loads per 24 multiply-adds instead of
  // 14, and 8 input rows to keep in L1 instead of 12: 1.05-1.2× faster at 24-168 rows
  // (bench/RESULTS_cpu.md).
  static constexpr int kVectors = 3;
  static constexpr int kRows = 8;

  static V Zero() { return _mm512_setzero_ps(); }
  static V Load(const float* p) { return _mm512_loadu_ps(p); }
  static V LoadFirst(const float* p, int n) {
    return _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << n) - 1), p);
  }
  static V Broadcast(const float* p) { return _mm512_set1_ps(*p); }
  static V Fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V Add(V a, V b) { return _mm512_add_ps(a, b); }
  static void Store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static void StoreFirst(float* p, V v, int n) {
    _mm512_mask_storeu_ps(p, static_cast<__mmask16>((1u << n) - 1), v);
  }
};

}  // namespace

void PanelAvx512(const float* x, int rows, int in, const float* panel, int cols, const float* bias,
                 float* y, int ldy) {
  static_assert(Avx512::kVectors * Avx512::kLanes == kAvx512Width && Avx512::kRows == kAvx512Rows);
  Panel<Avx512>(x, rows, in, panel, cols, bias, y, ldy);
}

}  // namespace packed
}  // namespace cpu
}  // namespace bert

#endif  // defined(__x86_64__)
