// Scalar activations shared by the CPU kernels (header-only, inline).
#ifndef BERT_KERNELS_CPU_ACTIVATION_H_
#define BERT_KERNELS_CPU_ACTIVATION_H_

#include <algorithm>
#include <cmath>

namespace bert {
namespace cpu {

// The coefficients of the rational erf below, highest power of x^2 first: one copy for the
// scalar function and gemm.cc's vector rows, which evaluate them in the same order.
inline constexpr float kErfNumerator[] = {1.9845609e-06f, 2.8862184e-04f, 4.0038838e-03f,
                                          5.3477455e-02f, 1.9618656e-01f, 1.1283790e+00f};
inline constexpr float kErfDenominator[] = {3.7607828e-05f, 1.2173105e-03f, 1.5447116e-02f,
                                            1.1646663e-01f, 5.0719708e-01f, 1.0f};

// erf(x) as x * P(x^2) / Q(x^2) on |x| <= 3.925 and +-1 beyond (where float erf rounds to 1).
// Coefficients from our own least-squares fit of the rational form against erf in double;
// max abs error about 4e-7 when evaluated in float, i.e. a GELU within about 2e-7 relative
// of the exact one. gemm.cc has AVX2 and AVX-512 twins of it.
inline float ErfRational(float x) {
  const float c = std::min(std::max(x, -3.925f), 3.925f);
  const float t = c * c;
  // Written out (not a loop), so that compilers contract it into FMAs as they always have.
  const float* n = kErfNumerator;
  const float* d = kErfDenominator;
  const float p = ((((n[0] * t + n[1]) * t + n[2]) * t + n[3]) * t + n[4]) * t + n[5];
  const float q = ((((d[0] * t + d[1]) * t + d[2]) * t + d[3]) * t + d[4]) * t + d[5];
  return c * p / q;
}

// GELU with the vectorisable erf above (used by the GEMM epilogue).
inline float GeluErfFast(float x) {
  return 0.5f * x * (1.0f + ErfRational(x * 0.70710678118654752f));
}

// GELU, tanh approximation ("gelu_new", "gelu_pytorch_tanh").
inline float GeluTanh(float x) {
  const float inner = 0.79788456080286536f * (x + 0.044715f * x * x * x);
  return 0.5f * x * (1.0f + std::tanh(inner));
}

}  // namespace cpu
}  // namespace bert

#endif  // BERT_KERNELS_CPU_ACTIVATION_H_
