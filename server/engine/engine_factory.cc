#include "server/engine/engine_factory.h"

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/engine/cpu_engine.h"
#include "server/util/status_macros.h"
#ifdef BERT_WITH_CUDA
#include "server/engine/cuda_engine.h"
#endif

namespace bert {
namespace {

absl::StatusOr<std::unique_ptr<Engine>> CreateCpu(std::shared_ptr<const Model> model,
                                                  const EngineOptions& options) {
  CpuEngineOptions cpu;
  ASSIGN_OR_RETURN(cpu.gemm, CpuGemmFor(options));
  cpu.threads = options.cpu_threads;
  cpu.max_batch_tokens = options.max_batch_tokens;
  auto engine = CpuEngine::Create(std::move(model), cpu);
  if (!engine.ok()) return engine.status();
  return std::unique_ptr<Engine>(std::move(engine).value());
}

// The CUDA backend exists only in builds with CUDA (BERT_WITH_CUDA, set by the
// //bazel:cuda_off select in BUILD), so that a CPU-only build never links CUDA.
absl::StatusOr<std::unique_ptr<Engine>> CreateCuda(std::shared_ptr<const Model> model,
                                                   const EngineOptions& options) {
#ifdef BERT_WITH_CUDA
  CudaEngineOptions cuda = options.cuda;
  cuda.dtype = options.dtype;
  if (options.max_batch_tokens > 0) cuda.max_batch_tokens = options.max_batch_tokens;
  auto engine = CreateCudaEngine(std::move(model), cuda);
  // No usable GPU, or a model shape the CUDA kernels do not support, is FAILED_PRECONDITION
  // (CreateCudaEngine says which, before allocating anything): UNAVAILABLE here, so that
  // "auto" falls back to the CPU.
  if (!engine.ok() && absl::IsFailedPrecondition(engine.status())) {
    return absl::UnavailableError(engine.status().message());
  }
  return engine;
#else
  (void)model;
  (void)options;
  return absl::UnavailableError("CUDA backend not available in this build (--config=nocuda)");
#endif
}

}  // namespace

absl::StatusOr<std::string> CpuGemmFor(const EngineOptions& options) {
  const bool amx = options.cpu_gemm == "amx_bf16";
  const DType dtype =
      options.auto_dtype ? (amx ? DType::kBFloat16 : DType::kFloat32) : options.dtype;
  if (dtype == DType::kFloat16) {
    return absl::InvalidArgumentError(
        "the cpu backend does not run float16 (float32, or bfloat16 on Intel AMX)");
  }
  if (dtype == DType::kBFloat16) {
    if (!amx && options.cpu_gemm != "auto") {
      return absl::InvalidArgumentError(absl::StrCat(
          "--dtype=bfloat16 on the cpu backend is the AMX GEMM: --cpu_gemm=amx_bf16 (or auto), "
          "not ",
          options.cpu_gemm));
    }
    return std::string("amx_bf16");
  }
  if (amx) {
    return absl::InvalidArgumentError(
        "--cpu_gemm=amx_bf16 multiplies in bfloat16: run it with --dtype=bfloat16");
  }
  return options.cpu_gemm;
}

absl::StatusOr<DType> ParseDType(const std::string& name) {
  if (name == "float32" || name == "fp32") return DType::kFloat32;
  if (name == "float16" || name == "fp16") return DType::kFloat16;
  if (name == "bfloat16" || name == "bf16") return DType::kBFloat16;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown dtype \"", name, "\" (float32, float16 or bfloat16)"));
}

absl::StatusOr<std::unique_ptr<Engine>> CreateEngine(std::shared_ptr<const Model> model,
                                                     const EngineOptions& options) {
  if (model == nullptr) return absl::InvalidArgumentError("CreateEngine: no model");
  // With auto_dtype each backend its own dtype: float16 on CUDA; the CPU's follows from its
  // GEMM (CpuGemmFor).
  EngineOptions cuda = options;
  if (options.auto_dtype) cuda.dtype = DType::kFloat16;
  if (options.backend == "cpu") return CreateCpu(std::move(model), options);
  if (options.backend == "cuda") return CreateCuda(std::move(model), cuda);
  if (options.backend == "auto") {
    auto engine = CreateCuda(model, cuda);
    if (engine.ok() || !absl::IsUnavailable(engine.status())) return engine;
    return CreateCpu(std::move(model), options);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown backend \"", options.backend, "\" (auto, cpu or cuda)"));
}

}  // namespace bert
