// Scalar activations shared by the CPU kernels (header-only, inline).
#ifndef BERT_KERNELS_CPU_ACTIVATION_H_
#define BERT_KERNELS_CPU_ACTIVATION_H_

#include <cmath>

namespace bert {
namespace cpu {

// GELU, exact form: x * Phi(x) = 0.5 x (1 + erf(x / sqrt(2))).
inline float GeluErf(float x) { return 0.5f * x * (1.0f + std::erf(x * 0.70710678118654752f)); }

// GELU, tanh approximation ("gelu_new", "gelu_pytorch_tanh").
inline float GeluTanh(float x) {
  const float inner = 0.79788456080286536f * (x + 0.044715f * x * x * x);
  return 0.5f * x * (1.0f + std::tanh(inner));
}

}  // namespace cpu
}  // namespace bert

#endif  // BERT_KERNELS_CPU_ACTIVATION_H_
