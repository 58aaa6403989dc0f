#include "kernels/cpu/attention.h"

#include <cblas.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/cpu_features.h"

namespace bert {
namespace cpu {

void SoftmaxPortable(float* p, int n) {
  if (n <= 0) return;
  const float m = *std::max_element(p, p + n);
  float sum = 0.0f;
  for (int j = 0; j < n; ++j) {
    p[j] = std::exp(p[j] - m);
    sum += p[j];
  }
  const float inv = 1.0f / sum;
  for (int j = 0; j < n; ++j) p[j] *= inv;
}

namespace {

#if defined(__x86_64__)
// e^x for x <= 0 (here: a score minus its row's maximum), 8 lanes. x = n ln 2 + r with
// |r| <= ln 2 / 2 (ln 2 in two parts, the first exact in few bits, so that little rounding
// enters r), e^r by the degree-7 polynomial of Cephes' expf (its published coefficients;
// within 1-2 ulp of e^r), and 2^n put into the exponent bits. Below -87.3 (e^x < 1.2e-38,
// nothing next to the row's maximum's 1) the result is flushed to 0. A NaN stays NaN, as with
// std::exp (so does a row with +inf, whose maximum minus itself is NaN).
__attribute__((target("avx2,fma"))) inline __m256 ExpNonPositiveAvx2(__m256 x) {
  const __m256 lowest = _mm256_set1_ps(-87.3f);
  const __m256 under = _mm256_cmp_ps(x, lowest, _CMP_LT_OQ);
  x = _mm256_max_ps(lowest, x);  // the second operand where either is NaN: x
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 poly = _mm256_set1_ps(1.9875691500e-4f);
  poly = _mm256_fmadd_ps(poly, r, _mm256_set1_ps(1.3981999507e-3f));
  poly = _mm256_fmadd_ps(poly, r, _mm256_set1_ps(8.3334519073e-3f));
  poly = _mm256_fmadd_ps(poly, r, _mm256_set1_ps(4.1665795894e-2f));
  poly = _mm256_fmadd_ps(poly, r, _mm256_set1_ps(1.6666665459e-1f));
  poly = _mm256_fmadd_ps(poly, r, _mm256_set1_ps(5.0000001201e-1f));
  poly = _mm256_fmadd_ps(poly, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i exponent =
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  const __m256 e = _mm256_mul_ps(poly, _mm256_castsi256_ps(exponent));
  return _mm256_andnot_ps(under, e);
}

__attribute__((target("avx2,fma"))) void SoftmaxAvx2(float* p, int n) {
  __m256 vmax = _mm256_set1_ps(-INFINITY);
  int j = 0;
  for (; j + 8 <= n; j += 8) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(p + j));
  float m = -INFINITY;
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, vmax);
  for (float v : lanes) m = std::max(m, v);
  for (int t = j; t < n; ++t) m = std::max(m, p[t]);

  const __m256 vm = _mm256_set1_ps(m);
  __m256 vsum = _mm256_setzero_ps();
  for (j = 0; j + 8 <= n; j += 8) {
    const __m256 e = ExpNonPositiveAvx2(_mm256_sub_ps(_mm256_loadu_ps(p + j), vm));
    _mm256_storeu_ps(p + j, e);
    vsum = _mm256_add_ps(vsum, e);
  }
  if (j < n) {  // the last n - j < 8 values, in a vector padded with -inf (e^-inf = 0)
    alignas(32) float tail[8];
    for (int t = 0; t < 8; ++t) tail[t] = j + t < n ? p[j + t] - m : -INFINITY;
    const __m256 e = ExpNonPositiveAvx2(_mm256_load_ps(tail));
    _mm256_store_ps(tail, e);
    for (int t = 0; j + t < n; ++t) p[j + t] = tail[t];
    vsum = _mm256_add_ps(vsum, e);  // lanes past n hold e^-inf = 0
  }
  _mm256_store_ps(lanes, vsum);
  float sum = 0.0f;
  for (float v : lanes) sum += v;

  const __m256 inv = _mm256_set1_ps(1.0f / sum);
  for (j = 0; j + 8 <= n; j += 8)
    _mm256_storeu_ps(p + j, _mm256_mul_ps(_mm256_loadu_ps(p + j), inv));
  for (; j < n; ++j) p[j] *= 1.0f / sum;
}
#endif  // defined(__x86_64__)

}  // namespace

void Softmax(float* p, int n) {
  if (n <= 0) return;
#if defined(__x86_64__)
  if (HasAvx2Fma()) {
    SoftmaxAvx2(p, n);
    return;
  }
#endif
  SoftmaxPortable(p, n);
}

void Attention(const float* qkv, const int32_t* cu_rows, const int32_t* num_valid, int num_seqs,
               int num_heads, int head_dim, float* out) {
  AttentionHeads(qkv, cu_rows, num_valid, num_seqs, num_heads, head_dim, 0, num_heads, out);
}

void AttentionHeads(const float* qkv, const int32_t* cu_rows, const int32_t* num_valid,
                    int num_seqs, int num_heads, int head_dim, int head_begin, int head_end,
                    float* out) {
  head_begin = std::max(0, head_begin);
  head_end = std::min(num_heads, head_end);
  const int hidden = num_heads * head_dim;
  const int ld_qkv = 3 * hidden;
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  std::vector<float> scores;
  for (int s = 0; s < num_seqs; ++s) {
    const int first = cu_rows[s];
    const int rows = cu_rows[s + 1] - first;
    const int keys = num_valid[s];
    if (rows <= 0 || keys <= 0) continue;
    scores.resize(static_cast<size_t>(rows) * keys);
    for (int h = head_begin; h < head_end; ++h) {
      const float* q = qkv + static_cast<int64_t>(first) * ld_qkv + h * head_dim;
      const float* k = q + hidden;
      const float* v = q + 2 * hidden;
      float* o = out + static_cast<int64_t>(first) * hidden + h * head_dim;
      // scores[rows, keys] = scale * Q K^T
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, keys, head_dim, scale, q, ld_qkv,
                  k, ld_qkv, 0.0f, scores.data(), keys);
      for (int r = 0; r < rows; ++r) Softmax(scores.data() + static_cast<int64_t>(r) * keys, keys);
      // out[rows, head_dim] = P V
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, head_dim, keys, 1.0f,
                  scores.data(), keys, v, ld_qkv, 0.0f, o, hidden);
    }
  }
}

}  // namespace cpu
}  // namespace bert
