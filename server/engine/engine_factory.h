// Creates the engine a server or tool asked for, by backend name.
//
// "cpu" builds the CpuEngine (float32 only). "cuda" is the CUDA backend; in a build without
// it, or until it is wired in, it is UNAVAILABLE. "auto" picks CUDA when it is available and
// falls back to the CPU otherwise.
#ifndef BERT_SERVER_ENGINE_ENGINE_FACTORY_H_
#define BERT_SERVER_ENGINE_ENGINE_FACTORY_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/engine/engine.h"
#include "server/engine/model.h"

namespace bert {

struct EngineOptions {
  std::string backend = "auto";  // "auto", "cpu" or "cuda"
  DType dtype = DType::kFloat32;
  int cpu_threads = 0;       // CPU backend: 0 = every available core.
  int max_batch_tokens = 0;  // > 0: size workspaces for this many rows up front.
  bool allow_tf32 = false;   // CUDA backend: TF32 GEMMs for float32.
  // CUDA backend (see CudaEngineOptions in cuda_engine.h for each one's meaning).
  bool cuda_graphs = true;               // replay CUDA graphs for repeated batch shapes ...
  int max_graph_rows = 4096;             // ... of at most this many rows
  bool fused_gelu = true;                // fp16/bf16: bias + GELU in the FFN-up GEMM's epilogue
  bool gemm_autotune = true;             // time cuBLASLt's candidate algorithms per GEMM shape
  bool custom_gemm = false;              // ... and our split-K GEMM kernel for few rows
  bool programmatic_launch = false;      // Hopper: programmatic dependent launches
  bool attention_double_buffer = false;  // attention with two K/V buffers
  bool residual_in_gemm = false;         // bias + residual in the GEMM before each LayerNorm
  bool overlap_copies = true;            // copy outputs back on a second stream
};

absl::StatusOr<std::unique_ptr<Engine>> CreateEngine(std::shared_ptr<const Model> model,
                                                     const EngineOptions& options);

// Parses "float32" / "float16" / "bfloat16" (also "fp32", "fp16", "bf16").
absl::StatusOr<DType> ParseDType(const std::string& name);

}  // namespace bert

#endif  // BERT_SERVER_ENGINE_ENGINE_FACTORY_H_
