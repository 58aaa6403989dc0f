// Bias + GELU applied in place after a GEMM (the exact erf GELU has no cuBLASLt epilogue:
// cuBLASLt's GELU epilogues compute the tanh approximation).
#ifndef BERT_KERNELS_CUDA_ACTIVATION_H_
#define BERT_KERNELS_CUDA_ACTIVATION_H_

#include <cuda_runtime.h>

namespace bert {
namespace cuda {

enum class GeluKind { kErf, kTanh };

// x[r, c] = gelu(x[r, c] + bias[c]) for x [rows, cols] of T; bias [cols] of T (may be null).
// Computed in fp32. Returns the launch error.
template <typename T>
cudaError_t LaunchBiasGelu(T* x, const T* bias, int rows, int cols, GeluKind kind,
                           cudaStream_t stream);

}  // namespace cuda
}  // namespace bert

#endif  // BERT_KERNELS_CUDA_ACTIVATION_H_
