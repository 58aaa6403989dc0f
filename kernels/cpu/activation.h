// Scalar activations shared by the CPU kernels (header-only, inline).
#ifndef BERT_KERNELS_CPU_ACTIVATION_H_
#define BERT_KERNELS_CPU_ACTIVATION_H_

#include <algorithm>
#include <cmath>

namespace bert {
namespace cpu {

// erf(x) as x * P(x^2) / Q(x^2) on |x| <= 3.925 and +-1 beyond (where float erf rounds to 1).
// Coefficients from our own least-squares fit of the rational form against erf in double;
// max abs error about 4e-7 when evaluated in float, i.e. a GELU within about 2e-7 relative
// of the exact one. gemm.cc has an AVX2 twin of it.
inline float ErfRational(float x) {
  const float c = std::min(std::max(x, -3.925f), 3.925f);
  const float t = c * c;
  const float p =
      ((((1.9845609e-06f * t + 2.8862184e-04f) * t + 4.0038838e-03f) * t + 5.3477455e-02f) * t +
       1.9618656e-01f) *
          t +
      1.1283790e+00f;
  const float q =
      ((((3.7607828e-05f * t + 1.2173105e-03f) * t + 1.5447116e-02f) * t + 1.1646663e-01f) * t +
       5.0719708e-01f) *
          t +
      1.0f;
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
