// The packed Linear kernel's inner loops (y = x * W^T, W packed once at load time), written
// once for any vector instruction set. Internal to kernels/cpu: gemm.cc dispatches to the
// instantiations, each compiled in a file of its own with that instruction set enabled
// (linear_avx2.cc, linear_avx512.cc), so that nothing of it runs on a CPU without it.
//
// Packed layout: the weights [out, in] in panels of W = kVectors * kLanes output features
// (kAvx2Width, kAvx512Width below); panel p holds, for every k in turn, the W weights
// w[p * W + j, k] (zeros past `out`): panel[k * W + j]. A panel is read front to back, once per
// kRows input rows, and the input rows are read where they lie: nothing is copied per call.
// (sgemm packs the weights again on every call: bench/RESULTS_cpu.md.)
//
// An Isa type provides: V (a vector of kLanes floats), Zero(), Load(p), LoadFirst(p, n) (the
// first n < kLanes lanes, zeros after), Broadcast(p) (*p in every lane), Fma(a, b, c) = a*b+c
// and Add(a, b) lane by lane, Store(p, v), StoreFirst(p, v, n) (the first n lanes only), kVectors
// (the vectors of a panel's row) and kRows (the input rows of a block): kRows * kVectors
// accumulators. Each file defines its Isa type in an unnamed namespace: the instantiations,
// compiled with that file's instruction set, then have internal linkage, and the linker cannot pick
// them for another file.
//
// Every output is one sum in the order of k, whatever its block, its panel range or the
// number of rows: so a sequence's outputs never depend on its batch or on the threads.
#ifndef BERT_KERNELS_CPU_PACKED_KERNEL_H_
#define BERT_KERNELS_CPU_PACKED_KERNEL_H_

#include <cstdint>

namespace bert {
namespace cpu {
namespace packed {

// y[r, j] = sum over k of x[r, k] * panel[k * width + j] (+ bias[j] if `bias` is not null, one
// float addition to the finished sum), for r < rows and j < cols (cols <= width, the
// instruction set's panel width); x's rows are `in` apart, y's `ldy`.
using PanelFn = void (*)(const float* x, int rows, int in, const float* panel, int cols,
                         const float* bias, float* y, int ldy);

#if defined(__x86_64__)
// linear_avx2.cc: panels of 16 outputs, blocks of 6 rows (AVX2 and FMA).
inline constexpr int kAvx2Width = 16;
inline constexpr int kAvx2Rows = 6;
void PanelAvx2(const float* x, int rows, int in, const float* panel, int cols, const float* bias,
               float* y, int ldy);
// linear_avx512.cc: panels of 48 outputs, blocks of 8 rows (AVX-512F).
inline constexpr int kAvx512Width = 48;
inline constexpr int kAvx512Rows = 8;
void PanelAvx512(const float* x, int rows, int in, const float* panel, int cols, const float* bias,
                 float* y, int ldy);
#endif

// How far ahead of its reads the kernel asks for the panel, into L1: 64 steps of k (12 KiB
// with AVX-512, 4 KiB with AVX2). With it, the kernel ran 1.2-1.6× faster at 128 rows and
// 1.7-1.9× at 16 (bench/RESULTS_cpu.md): the hardware prefetcher alone left it waiting on the
// panel.
inline constexpr int kPrefetchSteps = 64;

// Where a block asks for the next panel, into L2. A panel is read once per block of rows, and
// only the first block finds it outside the caches (the weights of a model are larger than
// any L2, and a layer's are read once per batch). So while the blocks of panel p run, each
// asks for its share of panel p + 1 (the memory right after p: the panels lie one after the
// other), a few bytes per step of k, and the first block of p + 1 then reads from L2.
// Position within the share in 1/256 bytes: the share per step is bytes_per_step / blocks.
// One cache line per step: with AVX-512 (3 lines per step) and fewer than 3 blocks (at most
// 16 rows) that asks for a third or two thirds of the next panel. Asking for all of it (up to
// 3 lines per step) was measured no faster at 8-16 rows and slower at 128 (bench/RESULTS_cpu.md).
struct NextPanel {
  uintptr_t start;    // this block's share of the next panel
  uint32_t per_step;  // bytes of it per step of k, × 256
};

inline NextPanel NextPanelShare(const float* panel, int in, int width, int block, int blocks) {
  const uint64_t step_bytes = static_cast<uint64_t>(width) * sizeof(float);
  const uint64_t panel_bytes = step_bytes * static_cast<uint64_t>(in);
  return {reinterpret_cast<uintptr_t>(panel) + panel_bytes +
              panel_bytes * static_cast<uint64_t>(block) / static_cast<uint64_t>(blocks),
          static_cast<uint32_t>(step_bytes * 256 / static_cast<uint64_t>(blocks))};
}

// One block of R rows against a panel: R * kVectors accumulators, each panel vector loaded once
// for the R rows, each input value broadcast once for the panel's vectors. kEdge: the panel's
// last `cols` < width outputs only.
template <typename Isa, int R, bool kEdge>
inline void Block(const float* x, int in, const float* panel, int cols, const float* bias, float* y,
                  int ldy, NextPanel next) {
  constexpr int L = Isa::kLanes;
  constexpr int NV = Isa::kVectors;
  constexpr int kStepBytes = NV * L * sizeof(float);
  static_assert(kStepBytes % 64 == 0, "a step of k is whole cache lines");
  typename Isa::V acc[R][NV];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[r][v] = Isa::Zero();
  }
  uint64_t next_pos = 0;  // × 256
  for (int k = 0; k < in; ++k) {
    // The panel's cache lines kPrefetchSteps steps ahead: near its end, those of whatever
    // follows it (a prefetch never faults; the addresses are computed as integers).
    const uintptr_t ahead = reinterpret_cast<uintptr_t>(panel) +
                            (static_cast<uintptr_t>(k) + kPrefetchSteps) * kStepBytes;
#pragma GCC unroll 4
    for (int line = 0; line < kStepBytes / 64; ++line) {
      __builtin_prefetch(reinterpret_cast<const void*>(ahead + 64 * line));
    }
    __builtin_prefetch(reinterpret_cast<const void*>(next.start + (next_pos >> 8)), 0, 2);
    next_pos += next.per_step;
    typename Isa::V b[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) b[v] = Isa::Load(panel + static_cast<int64_t>(k) * NV * L + v * L);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const typename Isa::V a = Isa::Broadcast(x + static_cast<int64_t>(r) * in + k);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[r][v] = Isa::Fma(a, b[v], acc[r][v]);
    }
  }
  if (bias != nullptr) {  // the same rounding as adding it to the stored sums afterwards
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      if (kEdge && cols <= v * L) continue;  // past the panel's last output
      const typename Isa::V b = !kEdge || cols >= (v + 1) * L
                                    ? Isa::Load(bias + v * L)
                                    : Isa::LoadFirst(bias + v * L, cols - v * L);
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) acc[r][v] = Isa::Add(acc[r][v], b);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
    float* yr = y + static_cast<int64_t>(r) * ldy;
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      if (!kEdge || cols >= (v + 1) * L) {
        Isa::Store(yr + v * L, acc[r][v]);
      } else if (cols > v * L) {
        Isa::StoreFirst(yr + v * L, acc[r][v], cols - v * L);
      }
    }
  }
}

// The last `rows` (< kRows) rows: one block of that height.
template <typename Isa, int R, bool kEdge>
inline void LastRows(int rows, const float* x, int in, const float* panel, int cols,
                     const float* bias, float* y, int ldy, NextPanel next) {
  if constexpr (R > 0) {
    if (rows == R) {
      Block<Isa, R, kEdge>(x, in, panel, cols, bias, y, ldy, next);
    } else {
      LastRows<Isa, R - 1, kEdge>(rows, x, in, panel, cols, bias, y, ldy, next);
    }
  }
}

template <typename Isa, bool kEdge>
void Rows(const float* x, int rows, int in, const float* panel, int cols, const float* bias,
          float* y, int ldy) {
  constexpr int R = Isa::kRows;
  constexpr int kWidth = Isa::kVectors * Isa::kLanes;
  const int blocks = (rows + R - 1) / R;
  int block = 0;
  int r = 0;
  for (; r + R <= rows; r += R, ++block) {
    Block<Isa, R, kEdge>(x + static_cast<int64_t>(r) * in, in, panel, cols, bias,
                         y + static_cast<int64_t>(r) * ldy, ldy,
                         NextPanelShare(panel, in, kWidth, block, blocks));
  }
  if (r < rows) {
    LastRows<Isa, R - 1, kEdge>(rows - r, x + static_cast<int64_t>(r) * in, in, panel, cols, bias,
                                y + static_cast<int64_t>(r) * ldy, ldy,
                                NextPanelShare(panel, in, kWidth, block, blocks));
  }
}

template <typename Isa>
void Panel(const float* x, int rows, int in, const float* panel, int cols, const float* bias,
           float* y, int ldy) {
  if (cols == Isa::kVectors * Isa::kLanes) {
    Rows<Isa, false>(x, rows, in, panel, cols, bias, y, ldy);
  } else {
    Rows<Isa, true>(x, rows, in, panel, cols, bias, y, ldy);
  }
}

}  // namespace packed
}  // namespace cpu
}  // namespace bert

#endif  // BERT_KERNELS_CPU_PACKED_KERNEL_H_
