// Sentence-level heads: BERT's pooler (first row through dense + tanh), mean pooling over
// the valid rows, and in-place L2 normalisation.
#ifndef BERT_KERNELS_CPU_POOLING_H_
#define BERT_KERNELS_CPU_POOLING_H_

#include <cstdint>

namespace bert {
namespace cpu {

// out[s] = hidden_states[cu_rows[s]]: each sequence's first ([CLS]) row; out [num_seqs, hidden].
void GatherFirstRows(const float* hidden_states, const int32_t* cu_rows, int num_seqs, int hidden,
                     float* out);

// out[s] = tanh(weight . hidden_states[cu_rows[s]] + bias); weight [hidden, hidden]
// (HF layout), out [num_seqs, hidden]. On the caller's thread, through sgemm (CpuEngine runs
// the same function as GatherFirstRows and its own parallel Linear).
void Pooler(const float* hidden_states, const int32_t* cu_rows, int num_seqs, int hidden,
            const float* weight, const float* bias, float* out);

// out[s] = mean of hidden_states rows cu_rows[s] .. cu_rows[s] + num_valid[s] - 1
// (accumulated in double); out [num_seqs, hidden].
void MeanPool(const float* hidden_states, const int32_t* cu_rows, const int32_t* num_valid,
              int num_seqs, int hidden, float* out);

// x[r] /= max(||x[r]||_2, 1e-12) for each of `rows` rows, in place.
void L2Normalize(float* x, int rows, int hidden);

}  // namespace cpu
}  // namespace bert

#endif  // BERT_KERNELS_CPU_POOLING_H_
