#include "kernels/cpu/layer_norm.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <cmath>
#include <cstdint>

#include "kernels/cpu/cpu_features.h"

namespace bert {
namespace cpu {

namespace {

// x[i] + bias[i] + residual[i], in that order (either may be null).
inline float Sum(const float* x, const float* bias, const float* residual, int i) {
  float v = x[i];
  if (bias) v += bias[i];
  if (residual) v += residual[i];
  return v;
}

// One row; the sum goes straight into the output row: element i is written only after x[i]
// and residual[i] are read, so `out` may alias either input, and no scratch is needed.
void RowScalar(const float* x, const float* bias, const float* residual, const float* gamma,
               const float* beta, int hidden, float eps, float* o) {
  double sum = 0.0;
  for (int i = 0; i < hidden; ++i) {
    o[i] = Sum(x, bias, residual, i);
    sum += o[i];
  }
  const double mean = sum / hidden;
  double sq = 0.0;
  for (int i = 0; i < hidden; ++i) {
    const double d = o[i] - mean;
    sq += d * d;
  }
  const double inv_std = 1.0 / std::sqrt(sq / hidden + static_cast<double>(eps));
  const float m = static_cast<float>(mean);
  const float s = static_cast<float>(inv_std);
  for (int i = 0; i < hidden; ++i) o[i] = (o[i] - m) * s * gamma[i] + beta[i];
}

#if defined(__x86_64__)
// The sum of a vector's 4 doubles, in a fixed order.
__attribute__((target("avx2,fma"))) inline double HorizontalSum(__m256d v) {
  alignas(32) double lanes[4];
  _mm256_store_pd(lanes, v);
  return (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
}

// The same row 8 floats at a time, with the statistics still in double (two vectors of 4
// partial sums each, so the sums run in a fixed order that depends only on `hidden`). Element
// i is still written only after x[i] and residual[i] are read.
__attribute__((target("avx2,fma"))) void RowAvx2(const float* x, const float* bias,
                                                 const float* residual, const float* gamma,
                                                 const float* beta, int hidden, float eps,
                                                 float* o) {
  const int vec_end = hidden / 8 * 8;
  __m256d sum_lo = _mm256_setzero_pd(), sum_hi = _mm256_setzero_pd();
  for (int i = 0; i < vec_end; i += 8) {
    __m256 v = _mm256_loadu_ps(x + i);
    if (bias) v = _mm256_add_ps(v, _mm256_loadu_ps(bias + i));
    if (residual) v = _mm256_add_ps(v, _mm256_loadu_ps(residual + i));
    _mm256_storeu_ps(o + i, v);
    sum_lo = _mm256_add_pd(sum_lo, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
    sum_hi = _mm256_add_pd(sum_hi, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
  }
  double sum = HorizontalSum(_mm256_add_pd(sum_lo, sum_hi));
  for (int i = vec_end; i < hidden; ++i) {
    o[i] = Sum(x, bias, residual, i);
    sum += o[i];
  }
  const double mean = sum / hidden;

  const __m256d vmean = _mm256_set1_pd(mean);
  __m256d sq_lo = _mm256_setzero_pd(), sq_hi = _mm256_setzero_pd();
  for (int i = 0; i < vec_end; i += 8) {
    const __m256 v = _mm256_loadu_ps(o + i);
    const __m256d d_lo = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(v)), vmean);
    const __m256d d_hi = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)), vmean);
    sq_lo = _mm256_fmadd_pd(d_lo, d_lo, sq_lo);
    sq_hi = _mm256_fmadd_pd(d_hi, d_hi, sq_hi);
  }
  double sq = HorizontalSum(_mm256_add_pd(sq_lo, sq_hi));
  for (int i = vec_end; i < hidden; ++i) {
    const double d = o[i] - mean;
    sq += d * d;
  }
  const double inv_std = 1.0 / std::sqrt(sq / hidden + static_cast<double>(eps));

  const float m = static_cast<float>(mean);
  const float s = static_cast<float>(inv_std);
  const __m256 vm = _mm256_set1_ps(m), vs = _mm256_set1_ps(s);
  for (int i = 0; i < vec_end; i += 8) {
    const __m256 n = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(o + i), vm), vs);
    _mm256_storeu_ps(o + i,
                     _mm256_fmadd_ps(n, _mm256_loadu_ps(gamma + i), _mm256_loadu_ps(beta + i)));
  }
  for (int i = vec_end; i < hidden; ++i) o[i] = std::fma((o[i] - m) * s, gamma[i], beta[i]);
}
#endif  // defined(__x86_64__)

// Rows one by one, with the AVX2 row where `avx2` (the caller checked the CPU).
void AddBiasResidualLayerNormRows(const float* x, const float* bias, const float* residual,
                                  const float* gamma, const float* beta, int rows, int hidden,
                                  float eps, bool avx2, float* out) {
  for (int r = 0; r < rows; ++r) {
    const int64_t offset = static_cast<int64_t>(r) * hidden;
    const float* rr = residual ? residual + offset : nullptr;
#if defined(__x86_64__)
    if (avx2) {
      RowAvx2(x + offset, bias, rr, gamma, beta, hidden, eps, out + offset);
      continue;
    }
#endif
    RowScalar(x + offset, bias, rr, gamma, beta, hidden, eps, out + offset);
  }
}

}  // namespace

void AddBiasResidualLayerNorm(const float* x, const float* bias, const float* residual,
                              const float* gamma, const float* beta, int rows, int hidden,
                              float eps, float* out) {
  AddBiasResidualLayerNormRows(x, bias, residual, gamma, beta, rows, hidden, eps, HasAvx2Fma(),
                               out);
}

void AddBiasResidualLayerNormPortable(const float* x, const float* bias, const float* residual,
                                      const float* gamma, const float* beta, int rows, int hidden,
                                      float eps, float* out) {
  AddBiasResidualLayerNormRows(x, bias, residual, gamma, beta, rows, hidden, eps, false, out);
}

}  // namespace cpu
}  // namespace bert
