// The CUDA backend of bert::Engine: the BERT encoder on one GPU with our kernels
// (kernels/cuda) and cuBLASLt GEMMs, in fp32, fp16 or bf16.
//
// At creation the weights are converted to the dtype and uploaded once (LayerNorm
// parameters stay fp32), and every device and pinned host buffer is sized once from
// `max_batch_tokens`: Encode allocates no device memory. A batch with more rows than the budget
// runs as consecutive groups of whole sequences (outputs concatenated); a single sequence
// longer than the budget is INVALID_ARGUMENT. One CUDA stream; per batch one packed copy of
// ids/types/cu_rows/num_valid, then embeddings + LayerNorm, the encoder blocks, and the
// requested outputs copied back as fp32.
//
// Every device pointer a batch uses is fixed at creation and the per-batch work is one
// stream of launches, so a later CUDA-graph cache keyed by (rows, sequences, selection) can
// capture it as is (not done yet).
//
// fp32 is exact IEEE fp32 (no TF32) unless `allow_tf32`; fp16/bf16 accumulate in fp32.
// Not thread-safe (Engine's contract: one Encode at a time). The engine uses the current
// CUDA device (device 0 unless the caller set another).
#ifndef BERT_SERVER_ENGINE_CUDA_ENGINE_H_
#define BERT_SERVER_ENGINE_CUDA_ENGINE_H_

#include <memory>

#include "absl/status/statusor.h"
#include "server/engine/engine.h"
#include "server/engine/model.h"

namespace bert {

// Errors: FAILED_PRECONDITION when no usable GPU is present (no driver/device) or the model
// shape is unsupported (head_dim not 32/64/128, hidden > 1024); RESOURCE_EXHAUSTED when the
// weights plus workspace do not fit in free device memory or an allocation fails;
// INVALID_ARGUMENT for max_batch_tokens < 1; INTERNAL for other CUDA/cuBLAS faults.
absl::StatusOr<std::unique_ptr<Engine>> CreateCudaEngine(std::shared_ptr<const Model> model,
                                                         DType dtype, int max_batch_tokens,
                                                         bool allow_tf32);

// Engines made by CreateCudaEngine also implement this (dynamic_cast from Engine): the GPU
// time of the last Encode, measured with CUDA events on the engine's stream from before the
// batch upload to after the last output copy is enqueued (it includes a host wait only when
// the outputs overflow the pinned buffer, e.g. many intermediate layers). For benchmarks.
class CudaEngineTiming {
 public:
  virtual ~CudaEngineTiming() = default;
  virtual float last_gpu_milliseconds() const = 0;
};

// The number of CUDA devices usable by this process (0 when there is no driver or GPU).
int CudaDeviceCount();

}  // namespace bert

#endif  // BERT_SERVER_ENGINE_CUDA_ENGINE_H_
