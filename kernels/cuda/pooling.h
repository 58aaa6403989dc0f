// Sequence-level heads over the last hidden states of a ragged batch: the BERT pooler's
// pieces (gather each sequence's first row; bias + tanh after the dense GEMM), masked mean
// pooling, and L2 normalisation. Twins of kernels/cpu/pooling.h (Pooler = GatherFirstRows,
// a GEMM without epilogue (kernels/cuda/gemm.h), then BiasTanhToFloat).
#ifndef BERT_KERNELS_CUDA_POOLING_H_
#define BERT_KERNELS_CUDA_POOLING_H_

#include <cuda_runtime.h>

#include <cstdint>

namespace bert {
namespace cuda {

// out[s] = hidden_states[cu_rows[s]] for s < num_seqs; rows of `hidden` T values.
template <typename T>
cudaError_t LaunchGatherFirstRows(const T* hidden_states, const int32_t* cu_rows, int num_seqs,
                                  int hidden, T* out, cudaStream_t stream);

// out[r, c] = tanh(x[r, c] + bias[c]) as fp32; x [rows, cols] of T, bias [cols] of T.
template <typename T>
cudaError_t LaunchBiasTanhToFloat(const T* x, const T* bias, int rows, int cols, float* out,
                                  cudaStream_t stream);

// out[s] = mean of hidden_states rows cu_rows[s] .. cu_rows[s] + num_valid[s] - 1 (fp32
// accumulation, fp32 output [num_seqs, hidden]).
template <typename T>
cudaError_t LaunchMeanPool(const T* hidden_states, const int32_t* cu_rows, const int32_t* num_valid,
                           int num_seqs, int hidden, float* out, cudaStream_t stream);

// x[r] /= max(||x[r]||_2, 1e-12) in place, x [rows, hidden] fp32.
cudaError_t LaunchL2Normalize(float* x, int rows, int hidden, cudaStream_t stream);

}  // namespace cuda
}  // namespace bert

#endif  // BERT_KERNELS_CUDA_POOLING_H_
