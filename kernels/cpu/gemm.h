// Linear layers (y = x * W^T + b) through OpenBLAS sgemm, with fused epilogues.
// Thread use is OpenBLAS's (openblas_set_num_threads); the epilogue runs on the caller's
// thread. Weights keep the Hugging Face layout [out_features, in_features].
#ifndef BERT_KERNELS_CPU_GEMM_H_
#define BERT_KERNELS_CPU_GEMM_H_

#include <cstdint>

namespace bert {
namespace cpu {

enum class Epilogue { kNone, kBias, kBiasGeluErf, kBiasGeluTanh, kBiasTanh };

// y[rows, out_features] = epilogue(x[rows, in_features] * weight^T + bias).
// `bias` may be null only with Epilogue::kNone (and is ignored then). `y` must not alias x.
void Linear(const float* x, int rows, int in_features, const float* weight, const float* bias,
            int out_features, Epilogue epilogue, float* y);

// Applies `epilogue` in place to y[rows, features] (the part of Linear after the GEMM), so
// that callers can run the GEMM with Epilogue::kNone and split the epilogue across threads.
void ApplyEpilogue(float* y, int rows, int features, const float* bias, Epilogue epilogue);

}  // namespace cpu
}  // namespace bert

#endif  // BERT_KERNELS_CPU_GEMM_H_
