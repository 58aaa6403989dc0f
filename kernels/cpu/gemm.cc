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
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (avx2) {
    BiasGeluErfRowAvx2(y, bias, n);
    return;
  }
#endif
  for (int i = 0; i < n; ++i) y[i] = GeluErfFast(y[i] + bias[i]);
}

}  // namespace

void ApplyEpilogue(float* y, int rows, int features, const float* bias, Epilogue epilogue) {
  if (epilogue == Epilogue::kNone) return;
  for (int r = 0; r < rows; ++r) {
    float* yr = y + static_cast<int64_t>(r) * features;
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

}  // namespace cpu
}  // namespace bert
