// The CPU backend: float32 BERT encoder on the kernels/cpu ops, GEMMs through OpenBLAS.
//
// Threads: the engine owns a pool of `threads` threads and splits every op into parts by
// rows (GEMMs, LayerNorm) or sequences (embeddings, attention) that the threads claim as they
// become free; OpenBLAS itself is set (process-wide, when an engine is built) to one thread
// so that the two never compete for cores. Batches of few rows (a short sentence alone) take
// cpu::LinearFewRows instead of OpenBLAS, split by output features.
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
  // Batches of at most this many rows run their Linear layers on cpu::LinearFewRows, which
  // reads the weights in place, split by output features across the threads, instead of
  // OpenBLAS sgemm, which copies them on every call and gets row parts of >= 16 rows. With one
  // thread at most 16 rows (past that sgemm's kernel wins); not at all where the few-rows
  // kernel is not vectorised (cpu::LinearFewRowsIsVectorized). Measured in
  // bench/RESULTS_cpu.md. 0: never.
  int few_rows_max = kDefaultFewRowsMax;
  static constexpr int kDefaultFewRowsMax = 32;
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
  CpuEngine(std::shared_ptr<const Model> model, int threads, int few_rows_max);

  void Reserve(int rows);
  // How many parts to split `rows` rows into (see the .cc).
  int NumParts(int rows, int min_rows, int target_rows) const;
  // Runs Linear over row blocks in parallel (or, for at most few_rows_limit_ rows,
  // LinearFewRows over blocks of outputs).
  void ParallelLinear(const float* x, int rows, int in, const HostTensor& weight, const float* bias,
                      int out, cpu::Epilogue epilogue, float* y);
  void ParallelLayerNorm(const float* x, const float* bias, const float* residual,
                         const HostTensor& gamma, const HostTensor& beta, int rows, float* out);
  void RunLayer(const LayerWeights& layer, const EncoderBatch& batch);

  std::shared_ptr<const Model> model_;
  ThreadPool pool_;
  std::string cpu_name_;
  const int few_rows_limit_;  // see CpuEngineOptions::few_rows_max
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
