// The few-rows Linear kernel's dot products (y[r, o] = dot(x[r, :], w[o, :])), written once
// for any vector instruction set. Internal to kernels/cpu: gemm.cc dispatches to the
// instantiations, each compiled in a file of its own with that instruction set enabled
// (few_rows_avx2.cc, few_rows_avx512.cc), so that nothing of it runs on a CPU without it.
//
// An Isa type provides: V (a vector of kLanes floats), Zero(), Load(p), LoadFirst(p, n) (the
// first n < kLanes floats at p, reading nothing past them; zeros above), Fma(a, b, c) = a*b+c
// lane by lane, Sum(v) across the lanes; and the block shape: kWeightRows × kInputRows
// accumulators.
//
// Every output is summed the same way whatever the block it falls in (lane by lane over k in
// steps of kLanes, the last in % kLanes values as one more masked step, then across the
// lanes), so that splitting a layer's outputs across threads never changes its bits.
#ifndef BERT_KERNELS_CPU_FEW_ROWS_KERNEL_H_
#define BERT_KERNELS_CPU_FEW_ROWS_KERNEL_H_

#include <cstdint>

namespace bert {
namespace cpu {
namespace few_rows {

// The dot products for o in [o_begin, o_end) and every row, into y (row stride ld).
using DotsFn = void (*)(const float* x, int rows, int in, const float* w, int o_begin, int o_end,
                        float* y, int ld);

#if defined(__x86_64__)
// few_rows_avx2.cc: blocks of 3 weight rows × 4 input rows of 8 lanes (AVX2 and FMA).
void DotsAvx2(const float* x, int rows, int in, const float* w, int o_begin, int o_end, float* y,
              int ld);
// few_rows_avx512.cc: blocks of 6 weight rows × 4 input rows of 16 lanes (AVX-512F).
void DotsAvx512(const float* x, int rows, int in, const float* w, int o_begin, int o_end, float* y,
                int ld);
#endif

// acc[j][i] += x[j, k:k+kLanes] * w[i, k:k+kLanes]; with kTail, over the first `tail` lanes
// only. Always inlined, so that the accumulators stay in registers.
template <typename Isa, int W, int X, bool kTail>
__attribute__((always_inline)) inline void Step(const float* x, int in, const float* w, int k,
                                                int tail, typename Isa::V (&acc)[X][W]) {
  const auto load = [tail](const float* p) {
    if constexpr (kTail) {
      return Isa::LoadFirst(p, tail);
    } else {
      return Isa::Load(p);
    }
  };
  typename Isa::V b[W];
#pragma GCC unroll 8
  for (int i = 0; i < W; ++i) b[i] = load(w + static_cast<int64_t>(i) * in + k);
#pragma GCC unroll 4
  for (int j = 0; j < X; ++j) {
    const typename Isa::V v = load(x + static_cast<int64_t>(j) * in + k);
#pragma GCC unroll 8
    for (int i = 0; i < W; ++i) acc[j][i] = Isa::Fma(v, b[i], acc[j][i]);
  }
}

// One block: W weight rows × X input rows, W × X accumulators; each weight vector is loaded
// once per X input rows, each input vector once per W weight rows.
template <typename Isa, int W, int X>
inline void Block(const float* x, int in, const float* w, float* y, int ld) {
  typename Isa::V acc[X][W];
#pragma GCC unroll 4
  for (int j = 0; j < X; ++j) {
#pragma GCC unroll 8
    for (int i = 0; i < W; ++i) acc[j][i] = Isa::Zero();
  }
  const int whole = in - in % Isa::kLanes;
  for (int k = 0; k < whole; k += Isa::kLanes) Step<Isa, W, X, false>(x, in, w, k, 0, acc);
  if (whole < in) Step<Isa, W, X, true>(x, in, w, whole, in - whole, acc);
#pragma GCC unroll 4
  for (int j = 0; j < X; ++j) {
#pragma GCC unroll 8
    for (int i = 0; i < W; ++i) y[static_cast<int64_t>(j) * ld + i] = Isa::Sum(acc[j][i]);
  }
}

// The last `rows` (< kInputRows) input rows against W weight rows: one block of that height.
template <typename Isa, int W, int X>
inline void LastRows(int rows, const float* x, int in, const float* w, float* y, int ld) {
  if constexpr (X > 0) {
    if (rows == X) {
      Block<Isa, W, X>(x, in, w, y, ld);
    } else {
      LastRows<Isa, W, X - 1>(rows, x, in, w, y, ld);
    }
  }
}

// Every input row against W weight rows.
template <typename Isa, int W>
void Rows(const float* x, int rows, int in, const float* w, float* y, int ld) {
  constexpr int X = Isa::kInputRows;
  int r = 0;
  for (; r + X <= rows; r += X) {
    Block<Isa, W, X>(x + static_cast<int64_t>(r) * in, in, w, y + static_cast<int64_t>(r) * ld, ld);
  }
  LastRows<Isa, W, X - 1>(rows - r, x + static_cast<int64_t>(r) * in, in, w,
                          y + static_cast<int64_t>(r) * ld, ld);
}

// The last `outputs` (< kWeightRows) outputs: blocks of that width.
template <typename Isa, int W>
inline void LastOutputs(int outputs, const float* x, int rows, int in, const float* w, float* y,
                        int ld) {
  if constexpr (W > 0) {
    if (outputs == W) {
      Rows<Isa, W>(x, rows, in, w, y, ld);
    } else {
      LastOutputs<Isa, W - 1>(outputs, x, rows, in, w, y, ld);
    }
  }
}

template <typename Isa>
void Dots(const float* x, int rows, int in, const float* w, int o_begin, int o_end, float* y,
          int ld) {
  constexpr int W = Isa::kWeightRows;
  int o = o_begin;
  for (; o + W <= o_end; o += W)
    Rows<Isa, W>(x, rows, in, w + static_cast<int64_t>(o) * in, y + o, ld);
  LastOutputs<Isa, W - 1>(o_end - o, x, rows, in, w + static_cast<int64_t>(o) * in, y + o, ld);
}

}  // namespace few_rows
}  // namespace cpu
}  // namespace bert

#endif  // BERT_KERNELS_CPU_FEW_ROWS_KERNEL_H_
