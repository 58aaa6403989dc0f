// Multi-head self-attention over a ragged batch, from a fused QKV activation.
#ifndef BERT_KERNELS_CPU_ATTENTION_H_
#define BERT_KERNELS_CPU_ATTENTION_H_

#include <cstdint>

namespace bert {
namespace cpu {

// qkv: [rows, 3 * hidden] (Q | K | V blocks, head h at columns h*head_dim inside each block),
// hidden = num_heads * head_dim. For sequence s (rows cu_rows[s] .. cu_rows[s+1], absolute
// row indices), every row is a query; only its first num_valid[s] rows are keys/values.
// out[row, h*head_dim + d] = softmax(q . K^T / sqrt(head_dim)) . V for head h.
// Rows outside [cu_rows[0], cu_rows[num_seqs]) are not touched, so callers may pass a
// sub-range of sequences (cu_rows + k, num_valid + k). The softmax is Softmax below.
// Single-threaded BLAS use is up to the caller's OpenBLAS setting.
void Attention(const float* qkv, const int32_t* cu_rows, const int32_t* num_valid, int num_seqs,
               int num_heads, int head_dim, float* out);

// p[0, n) = softmax(p[0, n)) in place, in float with the maximum subtracted: exp through an
// AVX2 polynomial where the CPU has AVX2 and FMA (within a few float ulps of std::exp; values
// more than 87.3 below the maximum become 0), else std::exp. Its bits depend only on the n
// values, not on where they lie.
void Softmax(float* p, int n);
// The same with std::exp, one value at a time: what Softmax runs on CPUs without AVX2 and FMA
// (declared for its tests, which run both on any CPU).
void SoftmaxPortable(float* p, int n);

// Attention for heads [head_begin, head_end) only (their columns of `out`), so that callers
// can split one sequence across threads; each head's result is the same as Attention's.
void AttentionHeads(const float* qkv, const int32_t* cu_rows, const int32_t* num_valid,
                    int num_seqs, int num_heads, int head_dim, int head_begin, int head_end,
                    float* out);

}  // namespace cpu
}  // namespace bert

#endif  // BERT_KERNELS_CPU_ATTENTION_H_
