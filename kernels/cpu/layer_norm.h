// LayerNorm over the last dimension, fused with the bias and the residual add that precede
// it in every BERT block. Single-threaded; callers may split `rows` across threads.
#ifndef BERT_KERNELS_CPU_LAYER_NORM_H_
#define BERT_KERNELS_CPU_LAYER_NORM_H_

namespace bert {
namespace cpu {

// out[r] = LayerNorm(x[r] + bias + residual[r]) * gamma + beta for r in [0, rows).
// `bias` and `residual` may be null (then not added). `out` may alias `x` or `residual`
// (each element is read before it is written). Statistics in double; 8 values at a time where
// the CPU has AVX2 and FMA.
void AddBiasResidualLayerNorm(const float* x, const float* bias, const float* residual,
                              const float* gamma, const float* beta, int rows, int hidden,
                              float eps, float* out);
// The same one value at a time: what AddBiasResidualLayerNorm runs on CPUs without AVX2 and FMA
// (declared for its tests, which run both on any CPU).
void AddBiasResidualLayerNormPortable(const float* x, const float* bias, const float* residual,
                                      const float* gamma, const float* beta, int rows, int hidden,
                                      float eps, float* out);

}  // namespace cpu
}  // namespace bert

#endif  // BERT_KERNELS_CPU_LAYER_NORM_H_
