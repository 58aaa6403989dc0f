// The packed Linear kernel for AVX2 and FMA: this file is compiled with them enabled
// (bazel/copts.bzl), and gemm.cc calls it only where the CPU has them.
#include "kernels/cpu/packed_kernel.h"
// Nothing else but <immintrin.h>: an inline function of another header, compiled here with
// this file's instruction set, could be the copy the linker keeps for the whole program.

#if defined(__x86_64__)
#include <immintrin.h>

namespace bert {
namespace cpu {
namespace packed {
namespace {

struct Avx2 {
  using V = __m256;
  static constexpr int kLanes = 8;
  // 12 accumulators (6 rows × the panel's 2 vectors), 2 panel vectors and 1 broadcast input
  // of the 16 registers.
  static constexpr int kVectors = 2;
  static constexpr int kRows = 6;

  static V Zero() { return _mm256_setzero_ps(); }
  static V Load(const float* p) { return _mm256_loadu_ps(p); }
  static V LoadFirst(const float* p, int n) { return _mm256_maskload_ps(p, First(n)); }
  static V Broadcast(const float* p) { return _mm256_broadcast_ss(p); }
  static V Fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V Add(V a, V b) { return _mm256_add_ps(a, b); }
  static void Store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static void StoreFirst(float* p, V v, int n) { _mm256_maskstore_ps(p, First(n), v); }
  // The mask of lanes [0, n).
  static __m256i First(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
};

}  // namespace

void PanelAvx2(const float* x, int rows, int in, const float* panel, int cols, const float* bias,
               float* y, int ldy) {
  static_assert(Avx2::kVectors * Avx2::kLanes == kAvx2Width && Avx2::kRows == kAvx2Rows);
  Panel<Avx2>(x, rows, in, panel, cols, bias, y, ldy);
}

}  // namespace packed
}  // namespace cpu
}  // namespace bert

#endif  // defined(__x86_64__)
