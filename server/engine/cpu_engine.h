// The CPU backend: float32 BERT encoder on the kernels/cpu ops. The Linear layers run
// cpu::LinearPacked on weights the engine packs once, when it is built (as much memory again
// as the model's Linear weights); attention's small matrix products run OpenBLAS.
//
// Threads: the engine owns a pool of `threads` threads and splits every op into parts (Linear
// layers by chunks of rows and groups of output panels, LayerNorm by rows, embeddings and
// attention by sequences) that the threads claim as they become free; OpenBLAS itself is set
// (process-wide, when an engine is built) to one thread so that the two never compete for
// cores. No split changes a bit of the results: a sequence's outputs are the same alone or in
// any batch, on any number of threads.
// Workspace buffers grow to the largest batch seen (or are sized up front from `max_batch_tokens`)
// and are reused: no large allocation per call after warm-up. The model is shared and read-only.
// Not thread-safe (see Engine).
#ifndef BERT_SERVER_ENGINE_CPU_ENGINE_H_
#define BERT_SERVER_ENGINE_CPU_ENGINE_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/cpu/gemm.h"
#include "server/engine/engine.h"
#include "server/engine/model.h"
#include "server/engine/thread_pool.h"

namespace bert {

struct CpuEngineOptions {
  int threads = 0;           // 0: every core this process may use.
  int max_batch_tokens = 0;  // > 0: allocate the workspace for this many rows up front.
  // The Linear kernel's instruction set: "auto" (the best this CPU runs), "avx512", "avx2" or
  // "portable". Create fails for one this CPU does not run.
  std::string isa = "auto";
};

// Parses CpuEngineOptions::isa; "auto" is cpu::BestLinearIsa(). InvalidArgument for an
// unknown name or one this CPU does not run.
absl::StatusOr<cpu::LinearIsa> ParseLinearIsa(const std::string& name);

// One encoder layer's Linear weights, packed for cpu::LinearPacked.
struct PackedLayer {
  cpu::PackedWeights qkv;
  cpu::PackedWeights attention_output;
  cpu::PackedWeights intermediate;
  cpu::PackedWeights output;
};

class CpuEngine : public Engine {
 public:
  static absl::StatusOr<std::unique_ptr<CpuEngine>> Create(std::shared_ptr<const Model> model,
                                                           const CpuEngineOptions& options);

  const ModelConfig& config() const override { return model_->config; }
  bool has_pooler() const override { return model_->weights.has_pooler; }
  EngineInfo info() const override;
  int num_threads() const { return pool_.num_threads(); }

  absl::Status Encode(const EncoderBatch& batch, const OutputSelection& selection,
                      EncoderOutput* output) override;

 private:
  CpuEngine(std::shared_ptr<const Model> model, int threads, cpu::LinearIsa isa);

  void Reserve(int rows);
  // How many parts to split `rows` rows into (see the .cc).
  int NumParts(int rows, int min_rows, int target_rows) const;
  // y = epilogue(x * weight^T + bias) for `rows` rows, split across the threads.
  void ParallelLinear(const float* x, int rows, const cpu::PackedWeights& weight, const float* bias,
                      cpu::Epilogue epilogue, float* y);
  void ParallelLayerNorm(const float* x, const float* bias, const float* residual,
                         const HostTensor& gamma, const HostTensor& beta, int rows, float* out);
  void RunLayer(const LayerWeights& layer, const PackedLayer& packed, const EncoderBatch& batch);

  std::shared_ptr<const Model> model_;
  ThreadPool pool_;
  std::string cpu_name_;
  const cpu::LinearIsa isa_;
  std::vector<PackedLayer> packed_layers_;  // one per layer
  cpu::PackedWeights packed_pooler_;        // empty without a pooler
  int capacity_rows_ = 0;
  // Workspace, each [capacity_rows_, width].
  std::vector<float> hidden_;        // H: the residual stream
  std::vector<float> qkv_;           // 3H
  std::vector<float> context_;       // H: attention output
  std::vector<float> intermediate_;  // I
  std::vector<float> projected_;     // H: dense output before bias/residual/LN
};

}  // namespace bert

#endif  // BERT_SERVER_ENGINE_CPU_ENGINE_H_
