// Creates the engine a server or tool asked for, by backend name.
//
// "cpu" builds the CpuEngine (float32; bfloat16 with the AMX GEMM). "cuda" is the CUDA backend;
// in a build without
// it, or until it is wired in, it is UNAVAILABLE. "auto" picks CUDA when it is available and
// falls back to the CPU otherwise.
#ifndef BERT_SERVER_ENGINE_ENGINE_FACTORY_H_
#define BERT_SERVER_ENGINE_ENGINE_FACTORY_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/engine/cpu_engine.h"
#include "server/engine/cuda_engine.h"
#include "server/engine/engine.h"
#include "server/engine/model.h"

namespace bert {

struct EngineOptions {
  std::string backend = "auto";  // "auto", "cpu" or "cuda"
  DType dtype = DType::kFloat32;
  // The dtype by backend instead of `dtype`: float16 on the CUDA backend (also the one
  // "auto" finds); on the CPU's float32, or bfloat16 with cpu_gemm "amx_bf16".
  bool auto_dtype = false;
  int cpu_threads = 0;            // CPU backend: 0 = every available core.
  std::string cpu_gemm = "auto";  // CPU backend: CpuEngineOptions::gemm.
  int max_batch_tokens = 0;       // > 0: size workspaces for this many rows up front.
  // CUDA backend: every option but `dtype` and `max_batch_tokens`, which come from above
  // (max_batch_tokens 0: CudaEngineOptions' own default).
  CudaEngineOptions cuda;
};
absl::StatusOr<std::unique_ptr<Engine>> CreateEngine(std::shared_ptr<const Model> model,
                                                     const EngineOptions& options);

// The CPU backend's GEMM for `options` (dtype or auto_dtype, cpu_gemm): cpu_gemm itself in
// float32, "amx_bf16" in bfloat16 (which it is; with cpu_gemm "auto" or "amx_bf16");
// INVALID_ARGUMENT for float16 or a GEMM of the other precision, saying what to run instead.
// (Whether this CPU runs that GEMM is ParseCpuGemm's.)
absl::StatusOr<std::string> CpuGemmFor(const EngineOptions& options);

// Parses "float32" / "float16" / "bfloat16" (also "fp32", "fp16", "bf16").
absl::StatusOr<DType> ParseDType(const std::string& name);

}  // namespace bert

#endif  // BERT_SERVER_ENGINE_ENGINE_FACTORY_H_
