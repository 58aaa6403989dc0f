// The packed Linear kernel's inner loops (y = x * W^T, W packed once at load time), written
// once for any vector instruction set. Internal to kernels/cpu: gemm.cc dispatches to the
// instantiations, each compiled in a file of its own with that instruction set enabled
// (linear_avx2.cc, linear_avx512.cc), so that nothing of it runs on a CPU without it.
//
// Packed layout: the weights [out, in] in panels of W = 2 * kLanes output features (kAvx2Width,
// kAvx512Width below); panel p holds, for every k in turn, the W weights w[p * W + j, k] (zeros
// past `out`): panel[k * W + j]. A panel is read front to back, once per kRows input rows, and the
// input rows are read where they lie: nothing is copied per call. (sgemm packs the weights
// again on every call: bench/RESULTS_cpu.md.)
//
// An Isa type provides: V (a vector of kLanes floats), Zero(), Load(p), Broadcast(p) (*p in
// every lane), Fma(a, b, c) = a*b+c lane by lane, Store(p, v), StoreFirst(p, v, n) (the first
// n < kLanes lanes only), and kRows, the input rows of a block (2 * kRows accumulators). Each
// file defines its Isa type in an unnamed namespace: the instantiations, compiled with that
// file's instruction set, then have internal linkage, and the linker cannot pick them for
// another file.
//
// Every output is one sum in the order of k, whatever its block, its panel range or the
// number of rows: so a sequence's outputs never depend on its batch or on the threads.
#ifndef BERT_KERNELS_CPU_PACKED_KERNEL_H_
#define BERT_KERNELS_CPU_PACKED_KERNEL_H_

#include <cstdint>

namespace bert {
namespace cpu {
namespace packed {

// y[r, j] = sum over k of x[r, k] * panel[k * width + j], for r < rows and j < cols
// (cols <= width, the instruction set's panel width); x's rows are `in` apart, y's `ldy`.
using PanelFn = void (*)(const float* x, int rows, int in, const float* panel, int cols, float* y,
                         int ldy);

#if defined(__x86_64__)
// linear_avx2.cc: panels of 16 outputs, blocks of 6 rows (AVX2 and FMA).
inline constexpr int kAvx2Width = 16;
void PanelAvx2(const float* x, int rows, int in, const float* panel, int cols, float* y, int ldy);
// linear_avx512.cc: panels of 32 outputs, blocks of 12 rows (AVX-512F).
inline constexpr int kAvx512Width = 32;
void PanelAvx512(const float* x, int rows, int in, const float* panel, int cols, float* y, int ldy);
#endif

// How far ahead of its reads the kernel asks for the panel: 64 steps of k (8 KiB with AVX-512,
// 4 KiB with AVX2). With it, the kernel ran 1.2-1.6× faster at 128 rows and 1.7-1.9× at 16
// (bench/RESULTS_cpu.md): the hardware prefetcher alone left it waiting on the panel.
inline constexpr int kPrefetchSteps = 64;

// One block of R rows against a panel: 2R accumulators, each panel vector loaded once for the
// R rows, each input value broadcast once for the panel's two vectors. kEdge: the panel's last
// `cols` < 2 * kLanes outputs only.
template <typename Isa, int R, bool kEdge>
inline void Block(const float* x, int in, const float* panel, int cols, float* y, int ldy) {
  constexpr int L = Isa::kLanes;
  typename Isa::V acc[R][2];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = Isa::Zero();
  for (int k = 0; k < in; ++k) {
    // The panel's cache lines kPrefetchSteps steps ahead: near its end, those of whatever
    // follows it (a prefetch never faults; the address is computed as an integer).
    const uintptr_t ahead = reinterpret_cast<uintptr_t>(panel) +
                            (static_cast<uintptr_t>(k) + kPrefetchSteps) * 2 * L * sizeof(float);
    __builtin_prefetch(reinterpret_cast<const void*>(ahead));
    if constexpr (2 * L * sizeof(float) > 64) {
      __builtin_prefetch(reinterpret_cast<const void*>(ahead + 64));
    }
    const typename Isa::V b0 = Isa::Load(panel + static_cast<int64_t>(k) * 2 * L);
    const typename Isa::V b1 = Isa::Load(panel + static_cast<int64_t>(k) * 2 * L + L);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const typename Isa::V a = Isa::Broadcast(x + static_cast<int64_t>(r) * in + k);
      acc[r][0] = Isa::Fma(a, b0, acc[r][0]);
      acc[r][1] = Isa::Fma(a, b1, acc[r][1]);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
    float* yr = y + static_cast<int64_t>(r) * ldy;
    if constexpr (!kEdge) {
      Isa::Store(yr, acc[r][0]);
      Isa::Store(yr + L, acc[r][1]);
    } else if (cols <= L) {
      if (cols == L) {
        Isa::Store(yr, acc[r][0]);
      } else {
        Isa::StoreFirst(yr, acc[r][0], cols);
      }
    } else {
      Isa::Store(yr, acc[r][0]);
      if (cols < 2 * L) Isa::StoreFirst(yr + L, acc[r][1], cols - L);
    }
  }
}

// The last `rows` (< kRows) rows: one block of that height.
template <typename Isa, int R, bool kEdge>
inline void LastRows(int rows, const float* x, int in, const float* panel, int cols, float* y,
                     int ldy) {
  if constexpr (R > 0) {
    if (rows == R) {
      Block<Isa, R, kEdge>(x, in, panel, cols, y, ldy);
    } else {
      LastRows<Isa, R - 1, kEdge>(rows, x, in, panel, cols, y, ldy);
    }
  }
}

template <typename Isa, bool kEdge>
void Rows(const float* x, int rows, int in, const float* panel, int cols, float* y, int ldy) {
  constexpr int R = Isa::kRows;
  int r = 0;
  for (; r + R <= rows; r += R) {
    Block<Isa, R, kEdge>(x + static_cast<int64_t>(r) * in, in, panel, cols,
                         y + static_cast<int64_t>(r) * ldy, ldy);
  }
  LastRows<Isa, R - 1, kEdge>(rows - r, x + static_cast<int64_t>(r) * in, in, panel, cols,
                              y + static_cast<int64_t>(r) * ldy, ldy);
}

template <typename Isa>
void Panel(const float* x, int rows, int in, const float* panel, int cols, float* y, int ldy) {
  if (cols == 2 * Isa::kLanes) {
    Rows<Isa, false>(x, rows, in, panel, cols, y, ldy);
  } else {
    Rows<Isa, true>(x, rows, in, panel, cols, y, ldy);
  }
}

}  // namespace packed
}  // namespace cpu
}  // namespace bert

#endif  // BERT_KERNELS_CPU_PACKED_KERNEL_H_
