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

// dot(a[0, n), b[0, n)) in float: the portable few-rows kernel, and the AVX2 one's tails.
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

// y[r, o] = dot(x[r, :], w[o, :]) for every row and o in [o_begin, o_end): blocks of four
// weight rows times two input rows, eight accumulators (enough to hide the FMA latency), each
// weight vector loaded once per pair of input rows.
__attribute__((target("avx2,fma"))) void DotsAvx2(const float* x, int rows, int in, const float* w,
                                                  int o_begin, int o_end, float* y, int ld) {
  const int in8 = in & ~7;
  int o = o_begin;
  for (; o + 4 <= o_end; o += 4) {
    const float* w0 = w + static_cast<int64_t>(o) * in;
    const float* w1 = w0 + in;
    const float* w2 = w1 + in;
    const float* w3 = w2 + in;
    int r = 0;
    for (; r + 2 <= rows; r += 2) {
      const float* x0 = x + static_cast<int64_t>(r) * in;
      const float* x1 = x0 + in;
      __m256 a00 = _mm256_setzero_ps(), a01 = a00, a02 = a00, a03 = a00;
      __m256 a10 = a00, a11 = a00, a12 = a00, a13 = a00;
      for (int k = 0; k < in8; k += 8) {
        const __m256 b0 = _mm256_loadu_ps(w0 + k), b1 = _mm256_loadu_ps(w1 + k);
        const __m256 b2 = _mm256_loadu_ps(w2 + k), b3 = _mm256_loadu_ps(w3 + k);
        const __m256 v0 = _mm256_loadu_ps(x0 + k);
        a00 = _mm256_fmadd_ps(v0, b0, a00);
        a01 = _mm256_fmadd_ps(v0, b1, a01);
        a02 = _mm256_fmadd_ps(v0, b2, a02);
        a03 = _mm256_fmadd_ps(v0, b3, a03);
        const __m256 v1 = _mm256_loadu_ps(x1 + k);
        a10 = _mm256_fmadd_ps(v1, b0, a10);
        a11 = _mm256_fmadd_ps(v1, b1, a11);
        a12 = _mm256_fmadd_ps(v1, b2, a12);
        a13 = _mm256_fmadd_ps(v1, b3, a13);
      }
      float* y0 = y + static_cast<int64_t>(r) * ld + o;
      float* y1 = y0 + ld;
      y0[0] = HorizontalSum(a00) + Dot(x0 + in8, w0 + in8, in - in8);
      y0[1] = HorizontalSum(a01) + Dot(x0 + in8, w1 + in8, in - in8);
      y0[2] = HorizontalSum(a02) + Dot(x0 + in8, w2 + in8, in - in8);
      y0[3] = HorizontalSum(a03) + Dot(x0 + in8, w3 + in8, in - in8);
      y1[0] = HorizontalSum(a10) + Dot(x1 + in8, w0 + in8, in - in8);
      y1[1] = HorizontalSum(a11) + Dot(x1 + in8, w1 + in8, in - in8);
      y1[2] = HorizontalSum(a12) + Dot(x1 + in8, w2 + in8, in - in8);
      y1[3] = HorizontalSum(a13) + Dot(x1 + in8, w3 + in8, in - in8);
    }
    if (r < rows) {  // an odd last row
      const float* x0 = x + static_cast<int64_t>(r) * in;
      __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
      for (int k = 0; k < in8; k += 8) {
        const __m256 v0 = _mm256_loadu_ps(x0 + k);
        a0 = _mm256_fmadd_ps(v0, _mm256_loadu_ps(w0 + k), a0);
        a1 = _mm256_fmadd_ps(v0, _mm256_loadu_ps(w1 + k), a1);
        a2 = _mm256_fmadd_ps(v0, _mm256_loadu_ps(w2 + k), a2);
        a3 = _mm256_fmadd_ps(v0, _mm256_loadu_ps(w3 + k), a3);
      }
      float* y0 = y + static_cast<int64_t>(r) * ld + o;
      y0[0] = HorizontalSum(a0) + Dot(x0 + in8, w0 + in8, in - in8);
      y0[1] = HorizontalSum(a1) + Dot(x0 + in8, w1 + in8, in - in8);
      y0[2] = HorizontalSum(a2) + Dot(x0 + in8, w2 + in8, in - in8);
      y0[3] = HorizontalSum(a3) + Dot(x0 + in8, w3 + in8, in - in8);
    }
  }
  // The last (out_end - o_begin) % 4 outputs.
  for (; o < o_end; ++o) {
    const float* wo = w + static_cast<int64_t>(o) * in;
    for (int r = 0; r < rows; ++r) {
      const float* xr = x + static_cast<int64_t>(r) * in;
      __m256 a = _mm256_setzero_ps();
      for (int k = 0; k < in8; k += 8) {
        a = _mm256_fmadd_ps(_mm256_loadu_ps(xr + k), _mm256_loadu_ps(wo + k), a);
      }
      y[static_cast<int64_t>(r) * ld + o] = HorizontalSum(a) + Dot(xr + in8, wo + in8, in - in8);
    }
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
