// The CPU backend: float32 BERT encoder on the kernels/cpu ops (with gemm "amx_bf16", the Linear
// layers' products in bfloat16 on Intel AMX). Where the CPU has AVX2 and
// FMA, the Linear layers run cpu::LinearPacked on weights the engine packs once, when it is
// built (the model's own copies may then be freed: ReadsLinearWeights); elsewhere (aarch64, older
// x86) OpenBLAS sgemm on the weights as given. Attention's small matrix products run OpenBLAS.
//
// Threads: the engine owns a pool of `threads` threads and splits every op into parts (Linear
// layers by chunks of rows and groups of output panels, or by rows for sgemm; LayerNorm by
// rows; embeddings by sequences; attention by sequences and heads) that the threads claim as
// they become free; OpenBLAS itself is set (process-wide, when an engine is built) to one
// thread so that the two never compete for cores. With the packed kernel no split changes a
// bit of the results: a sequence's outputs are the same alone or in any batch, on any number
// of threads (for a given kernel and OpenBLAS core).
// Workspace buffers grow to the largest batch seen (or are sized up front from `max_batch_tokens`)
// and are reused: no large allocation per call after warm-up. The model is shared; the engine only
// reads it. Not thread-safe (see Engine).
#ifndef BERT_SERVER_ENGINE_CPU_ENGINE_H_
#define BERT_SERVER_ENGINE_CPU_ENGINE_H_

#include <memory>
#include <optional>
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
  // The Linear layers' GEMM: "avx512", "avx2" or "portable" (the packed kernel's float32
  // versions), "amx_bf16" (its AMX version: bfloat16 products, float32 sums), "openblas" (sgemm
  // on the weights as given: no packed copy), or "auto": the best float32 packed
  // version where the CPU has AVX2 and FMA, else "openblas" (the portable version was not
  // measured against OpenBLAS's tuned kernels on those CPUs). Create fails for a version this
  // CPU does not run.
  std::string gemm = "auto";
};

// The Linear layers' GEMM: a version of the packed kernel, or OpenBLAS sgemm (nullopt).
using CpuGemm = std::optional<cpu::LinearIsa>;

// Parses CpuEngineOptions::gemm for this CPU. InvalidArgument for an unknown name or a
// version this CPU does not run.
absl::StatusOr<CpuGemm> ParseCpuGemm(const std::string& name);

// How the engine names a GEMM: "AVX-512 packed GEMM", ..., "OpenBLAS GEMM".
std::string CpuGemmName(CpuGemm gemm);

// One Linear layer as the engine runs it: the model's weights [out, in] for OpenBLAS sgemm, or
// their packed copy for the packed kernel (and no pointer into the model).
struct EngineLinear {
  const float* weight = nullptr;
  int in = 0, out = 0;
  cpu::PackedWeights packed;
};

struct LayerLinears {
  EngineLinear qkv, attention_output, intermediate, output;
};

class CpuEngine : public Engine {
 public:
  // ResourceExhausted, before allocating anything, when the workspace for
  // options.max_batch_tokens (WorkspaceBytes) is more than the process may still take
  // (AvailableMemoryBytes).
  static absl::StatusOr<std::unique_ptr<CpuEngine>> Create(std::shared_ptr<const Model> model,
                                                           const CpuEngineOptions& options);
  // Bytes of the activations a batch of `rows` rows needs (with the AMX GEMM, and the Linear
  // layers' inputs in bfloat16).
  static int64_t WorkspaceBytes(const ModelConfig& config, int rows, CpuGemm gemm = CpuGemm());

  const ModelConfig& config() const override { return model_->config; }
  bool has_pooler() const override { return model_->weights.has_pooler; }
  EngineInfo info() const override;
  int num_threads() const { return pool_.num_threads(); }
  // With a packed GEMM the engine runs its packed copies only.
  bool ReadsLinearWeights() const override { return !gemm_.has_value(); }

  absl::Status Encode(const EncoderBatch& batch, const OutputSelection& selection,
                      EncoderOutput* output) override;

 private:
  CpuEngine(std::shared_ptr<const Model> model, int threads, CpuGemm gemm);

  // Fills linears_ and pooler_ (packing the weights for the packed kernel, in parallel).
  // ResourceExhausted where the packed copies do not fit in memory.
  absl::Status PrepareLinears();
  void Reserve(int rows);
  // How many parts to split `rows` rows into (see the .cc).
  int NumParts(int rows, int min_rows, int target_rows) const;
  // y = epilogue(x * weight^T + bias) for `rows` rows, split across the threads.
  void ParallelLinear(const float* x, int rows, const EngineLinear& linear, const float* bias,
                      cpu::Epilogue epilogue, float* y);
  void ParallelLayerNorm(const float* x, const float* bias, const float* residual,
                         const HostTensor& gamma, const HostTensor& beta, int rows, float* out);
  void RunLayer(const LayerWeights& layer, const LayerLinears& linears, const EncoderBatch& batch);

  std::shared_ptr<const Model> model_;
  ThreadPool pool_;
  std::string cpu_name_;
  const CpuGemm gemm_;
  std::vector<LayerLinears> linears_;  // one per layer
  EngineLinear pooler_;                // without a pooler: no weights
  int capacity_rows_ = 0;
  // Workspace, each [capacity_rows_, width].
  std::vector<float> hidden_;        // H: the residual stream
  std::vector<float> qkv_;           // 3H
  std::vector<float> context_;       // H: attention output
  std::vector<float> intermediate_;  // I
  std::vector<float> projected_;     // H: dense output before bias/residual/LN
  // AMX: a Linear layer's inputs rounded to bfloat16 (the kernel's tiles), room for
  // capacity_rows_ rows of max(H, I).
  cpu::Bfloat16Inputs bfloat16_inputs_;
};

}  // namespace bert

#endif  // BERT_SERVER_ENGINE_CPU_ENGINE_H_
