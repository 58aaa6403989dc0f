#include "kernels/cpu/gemm.h"

#include <cblas.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <cmath>

#include "kernels/cpu/activation.h"

namespace bert {
namespace cpu {

namespace {

// Whether this CPU runs the AVX2+FMA kernels below (checked once).
bool HasAvx2Fma() {
#if defined(__x86_64__)
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return avx2;
#else
  return false;
#endif
}

#if defined(__x86_64__)
// The erf GELU dominates the epilogue's cost and std::erf does not vectorise: an AVX2+FMA
// version of the rational erf (activation.h), chosen at run time so one binary runs on any
// x86-64. Same formula, so both paths agree to float rounding. Other architectures (aarch64)
// take the scalar loop, which the compiler may vectorise itself.
__attribute__((target("avx2,fma"))) void BiasGeluErfRowAvx2(float* y, const float* bias, int n) {
  const __m256 lo = _mm256_set1_ps(-3.925f), hi = _mm256_set1_ps(3.925f);
  const __m256 rsqrt2 = _mm256_set1_ps(0.70710678118654752f);
  const __m256 half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f);
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 x = _mm256_add_ps(_mm256_loadu_ps(y + i), _mm256_loadu_ps(bias + i));
    const __m256 c = _mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(x, rsqrt2), lo), hi);
    const __m256 t = _mm256_mul_ps(c, c);
    __m256 p = _mm256_set1_ps(1.9845609e-06f);
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(2.8862184e-04f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(4.0038838e-03f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(5.3477455e-02f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(1.9618656e-01f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(1.1283790e+00f));
    __m256 q = _mm256_set1_ps(3.7607828e-05f);
    q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(1.2173105e-03f));
    q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(1.5447116e-02f));
    q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(1.1646663e-01f));
    q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(5.0719708e-01f));
    q = _mm256_fmadd_ps(q, t, one);
    const __m256 erf = _mm256_div_ps(_mm256_mul_ps(c, p), q);
    _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_mul_ps(half, x), _mm256_add_ps(one, erf)));
  }
  for (; i < n; ++i) y[i] = GeluErfFast(y[i] + bias[i]);
}
#endif  // defined(__x86_64__)

void BiasGeluErfRow(float* y, const float* bias, int n) {
#if defined(__x86_64__)
  if (HasAvx2Fma()) {
    BiasGeluErfRowAvx2(y, bias, n);
    return;
  }
#endif
  for (int i = 0; i < n; ++i) y[i] = GeluErfFast(y[i] + bias[i]);
}

// dot(a[0, n), b[0, n)) in float: the portable few-rows kernel.
float Dot(const float* a, const float* b, int n) {
  float sum = 0.0f;
  for (int k = 0; k < n; ++k) sum += a[k] * b[k];
  return sum;
}

void DotsPortable(const float* x, int rows, int in, const float* w, int o_begin, int o_end,
                  float* y, int ld) {
  for (int r = 0; r < rows; ++r) {
    for (int o = o_begin; o < o_end; ++o) {
      y[static_cast<int64_t>(r) * ld + o] =
          Dot(x + static_cast<int64_t>(r) * in, w + static_cast<int64_t>(o) * in, in);
    }
  }
}

#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) inline float HorizontalSum(__m256 v) {
  const __m128 pairs = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 quads = _mm_add_ps(pairs, _mm_movehl_ps(pairs, pairs));
  return _mm_cvtss_f32(_mm_add_ss(quads, _mm_shuffle_ps(quads, quads, 1)));
}

// An 8-wide load; masked: only the lanes `mask` selects are read (the others are 0).
template <bool kMasked>
__attribute__((target("avx2,fma"))) inline __m256 LoadAvx2(const float* p, __m256i mask) {
  if constexpr (kMasked) {
    return _mm256_maskload_ps(p, mask);
  } else {
    return _mm256_loadu_ps(p);
  }
}

// acc[j][i] += x[j, k:k+8] * w[i, k:k+8], lane by lane.
template <int W, int X, bool kMasked>
__attribute__((target("avx2,fma"))) inline void DotStepAvx2(const float* x, int in, const float* w,
                                                            int k, __m256i mask,
                                                            __m256 (&acc)[X][W]) {
  __m256 b[W];
#pragma GCC unroll 3
  for (int i = 0; i < W; ++i) b[i] = LoadAvx2<kMasked>(w + static_cast<int64_t>(i) * in + k, mask);
#pragma GCC unroll 4
  for (int j = 0; j < X; ++j) {
    const __m256 v = LoadAvx2<kMasked>(x + static_cast<int64_t>(j) * in + k, mask);
#pragma GCC unroll 3
    for (int i = 0; i < W; ++i) acc[j][i] = _mm256_fmadd_ps(v, b[i], acc[j][i]);
  }
}

// One block of the few-rows kernel: y[j, i] = dot(x[j, :], w[i, :]) for W weight rows and X
// input rows (ld: the distance between rows of y), W × X accumulators of 8 lanes; each weight
// vector is loaded once per X input rows, each input vector once per W weight rows. The last
// in % 8 values are one more step with the lanes past the end masked off (a masked load reads
// nothing there). Every output is thus summed the same way whatever W and X (lane-wise over k
// in steps of 8, then across the lanes), so that a block's shape never changes its bits.
template <int W, int X>
__attribute__((target("avx2,fma"))) inline void DotBlockAvx2(const float* x, int in, const float* w,
                                                             float* y, int ld) {
  const int in8 = in & ~7;
  __m256 acc[X][W];
#pragma GCC unroll 4
  for (int j = 0; j < X; ++j) {
#pragma GCC unroll 3
    for (int i = 0; i < W; ++i) acc[j][i] = _mm256_setzero_ps();
  }
  const __m256i all = _mm256_set1_epi32(-1);
  for (int k = 0; k < in8; k += 8) DotStepAvx2<W, X, false>(x, in, w, k, all, acc);
  if (in8 < in) {
    const __m256i tail =
        _mm256_cmpgt_epi32(_mm256_set1_epi32(in - in8), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    DotStepAvx2<W, X, true>(x, in, w, in8, tail, acc);
  }
#pragma GCC unroll 4
  for (int j = 0; j < X; ++j) {
#pragma GCC unroll 3
    for (int i = 0; i < W; ++i) y[static_cast<int64_t>(j) * ld + i] = HorizontalSum(acc[j][i]);
  }
}

// Every input row against W weight rows: blocks of four input rows, then the last 1-3.
template <int W>
__attribute__((target("avx2,fma"))) void DotRowsAvx2(const float* x, int rows, int in,
                                                     const float* w, float* y, int ld) {
  int r = 0;
  for (; r + 4 <= rows; r += 4) {
    DotBlockAvx2<W, 4>(x + static_cast<int64_t>(r) * in, in, w, y + static_cast<int64_t>(r) * ld,
                       ld);
  }
  const float* xr = x + static_cast<int64_t>(r) * in;
  float* yr = y + static_cast<int64_t>(r) * ld;
  switch (rows - r) {
    case 3:
      DotBlockAvx2<W, 3>(xr, in, w, yr, ld);
      break;
    case 2:
      DotBlockAvx2<W, 2>(xr, in, w, yr, ld);
      break;
    case 1:
      DotBlockAvx2<W, 1>(xr, in, w, yr, ld);
      break;
  }
}

// y[r, o] = dot(x[r, :], w[o, :]) for every row and o in [o_begin, o_end), in blocks of three
// weight rows times four input rows: 12 accumulators, 7 loads per 12 FMAs, and each weight
// row read once per four input rows (the weights, not the arithmetic, bound this kernel at few
// rows: bench/RESULTS_cpu.md).
__attribute__((target("avx2,fma"))) void DotsAvx2(const float* x, int rows, int in, const float* w,
                                                  int o_begin, int o_end, float* y, int ld) {
  int o = o_begin;
  for (; o + 3 <= o_end; o += 3) {
    DotRowsAvx2<3>(x, rows, in, w + static_cast<int64_t>(o) * in, y + o, ld);
  }
  switch (o_end - o) {
    case 2:
      DotRowsAvx2<2>(x, rows, in, w + static_cast<int64_t>(o) * in, y + o, ld);
      break;
    case 1:
      DotRowsAvx2<1>(x, rows, in, w + static_cast<int64_t>(o) * in, y + o, ld);
      break;
  }
}
#endif  // defined(__x86_64__)

}  // namespace

void ApplyEpilogue(float* y, int rows, int features, const float* bias, Epilogue epilogue, int ld) {
  if (epilogue == Epilogue::kNone) return;
  if (ld == 0) ld = features;
  for (int r = 0; r < rows; ++r) {
    float* yr = y + static_cast<int64_t>(r) * ld;
    switch (epilogue) {
      case Epilogue::kNone:
        break;
      case Epilogue::kBias:
        for (int i = 0; i < features; ++i) yr[i] += bias[i];
        break;
      case Epilogue::kBiasGeluErf:
        BiasGeluErfRow(yr, bias, features);
        break;
      case Epilogue::kBiasGeluTanh:
        for (int i = 0; i < features; ++i) yr[i] = GeluTanh(yr[i] + bias[i]);
        break;
      case Epilogue::kBiasTanh:
        for (int i = 0; i < features; ++i) yr[i] = std::tanh(yr[i] + bias[i]);
        break;
    }
  }
}

void Linear(const float* x, int rows, int in_features, const float* weight, const float* bias,
            int out_features, Epilogue epilogue, float* y) {
  if (rows <= 0 || out_features <= 0) return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, out_features, in_features, 1.0f, x,
              in_features, weight, in_features, 0.0f, y, out_features);
  ApplyEpilogue(y, rows, out_features, bias, epilogue);
}

bool LinearFewRowsIsVectorized() { return HasAvx2Fma(); }

namespace {

using DotsFn = void (*)(const float* x, int rows, int in, const float* w, int o_begin, int o_end,
                        float* y, int ld);

// LinearFewRows with the given dot-product kernel.
void FewRowsWith(DotsFn dots, const float* x, int rows, int in_features, const float* weight,
                 const float* bias, int out_features, Epilogue epilogue, int out_begin, int out_end,
                 float* y) {
  if (rows <= 0 || out_begin >= out_end) return;
  dots(x, rows, in_features, weight, out_begin, out_end, y, out_features);
  ApplyEpilogue(y + out_begin, rows, out_end - out_begin,
                bias == nullptr ? nullptr : bias + out_begin, epilogue, out_features);
}

}  // namespace

void LinearFewRows(const float* x, int rows, int in_features, const float* weight,
                   const float* bias, int out_features, Epilogue epilogue, int out_begin,
                   int out_end, float* y) {
#if defined(__x86_64__)
  const DotsFn dots = LinearFewRowsIsVectorized() ? DotsAvx2 : DotsPortable;
#else
  const DotsFn dots = DotsPortable;
#endif
  FewRowsWith(dots, x, rows, in_features, weight, bias, out_features, epilogue, out_begin, out_end,
              y);
}

void LinearFewRowsPortableForTesting(const float* x, int rows, int in_features, const float* weight,
                                     const float* bias, int out_features, Epilogue epilogue,
                                     int out_begin, int out_end, float* y) {
  FewRowsWith(DotsPortable, x, rows, in_features, weight, bias, out_features, epilogue, out_begin,
              out_end, y);
}

}  // namespace cpu
}  // namespace bert
