// Fused multi-head attention over packed variable-length sequences (implementation:
// kernels/cuda/attention.cu, owned by the attention kernel's author; this declaration is
// the shared API of notes/kernels_api.md).
#ifndef BERT_KERNELS_CUDA_ATTENTION_H_
#define BERT_KERNELS_CUDA_ATTENTION_H_

#include <cuda_runtime.h>

#include <cstdint>

namespace bert {
namespace cuda {

// qkv [rows, 3*hidden] (Q | K | V, head h at columns h*head_dim.. inside each block),
// out [rows, hidden]. head_dim in {32, 64, 128}; rows per sequence up to 512; keys of
// sequence s are its first num_valid[s] rows. fp32 statistics and accumulation.
// Launch errors are checked by the caller (cudaGetLastError).
template <typename T>
void LaunchVarlenAttention(const T* qkv, const int32_t* cu_rows, const int32_t* num_valid,
                           int num_seqs, int max_rows, int num_heads, int head_dim, T* out,
                           cudaStream_t stream);

}  // namespace cuda
}  // namespace bert

#endif  // BERT_KERNELS_CUDA_ATTENTION_H_
