#include "kernels/cpu/gemm.h"

#include <cblas.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <cmath>

#include "kernels/cpu/activation.h"
#include "kernels/cpu/few_rows_kernel.h"

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

// Whether this CPU (and OS: libgcc checks the register state) runs AVX-512F.
bool HasAvx512() {
#if defined(__x86_64__)
  static const bool avx512 = HasAvx2Fma() && __builtin_cpu_supports("avx512f");
  return avx512;
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

bool FewRowsIsaAvailable(FewRowsIsa isa) {
  switch (isa) {
    case FewRowsIsa::kPortable:
      return true;
    case FewRowsIsa::kAvx2:
      return HasAvx2Fma();
    case FewRowsIsa::kAvx512:
      return HasAvx512();
  }
  return false;
}

namespace {

// The dot products for `isa`, which must be available.
few_rows::DotsFn DotsFor(FewRowsIsa isa) {
#if defined(__x86_64__)
  if (isa == FewRowsIsa::kAvx512) return few_rows::DotsAvx512;
  if (isa == FewRowsIsa::kAvx2) return few_rows::DotsAvx2;
#endif
  return DotsPortable;
}

// The best instruction set this CPU runs (checked once).
FewRowsIsa BestFewRowsIsa() {
  static const FewRowsIsa best = HasAvx512()    ? FewRowsIsa::kAvx512
                                 : HasAvx2Fma() ? FewRowsIsa::kAvx2
                                                : FewRowsIsa::kPortable;
  return best;
}

// LinearFewRows with the given dot-product kernel.
void FewRowsWith(few_rows::DotsFn dots, const float* x, int rows, int in_features,
                 const float* weight, const float* bias, int out_features, Epilogue epilogue,
                 int out_begin, int out_end, float* y) {
  if (rows <= 0 || out_begin >= out_end) return;
  dots(x, rows, in_features, weight, out_begin, out_end, y, out_features);
  ApplyEpilogue(y + out_begin, rows, out_end - out_begin,
                bias == nullptr ? nullptr : bias + out_begin, epilogue, out_features);
}

}  // namespace

const char* FewRowsIsaName() {
  switch (BestFewRowsIsa()) {
    case FewRowsIsa::kAvx512:
      return "AVX-512";
    case FewRowsIsa::kAvx2:
      return "AVX2";
    case FewRowsIsa::kPortable:
      break;
  }
  return "portable";
}

void LinearFewRows(const float* x, int rows, int in_features, const float* weight,
                   const float* bias, int out_features, Epilogue epilogue, int out_begin,
                   int out_end, float* y) {
  FewRowsWith(DotsFor(BestFewRowsIsa()), x, rows, in_features, weight, bias, out_features, epilogue,
              out_begin, out_end, y);
}

void LinearFewRowsForTesting(FewRowsIsa isa, const float* x, int rows, int in_features,
                             const float* weight, const float* bias, int out_features,
                             Epilogue epilogue, int out_begin, int out_end, float* y) {
  if (!FewRowsIsaAvailable(isa)) return;
  FewRowsWith(DotsFor(isa), x, rows, in_features, weight, bias, out_features, epilogue, out_begin,
              out_end, y);
}

}  // namespace cpu
}  // namespace bert
