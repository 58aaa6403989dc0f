// The CUDA engine's tuning switches by flag name (cuda_engine.h). Built with and without
// CUDA: the server reads and logs its flags through it either way.
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "server/engine/cuda_engine.h"

namespace bert {

const std::vector<CudaTuningSwitch>& CudaTuningSwitches() {
  using O = CudaEngineOptions;
  static const auto* switches = new std::vector<CudaTuningSwitch>{
      {"cuda_graphs", &O::cuda_graphs, nullptr},
      {"cuda_graph_max_rows", nullptr, &O::max_graph_rows},
      {"fused_gelu", &O::fused_gelu, nullptr},
      {"gemm_autotune", &O::gemm_autotune, nullptr},
      {"custom_gemm", &O::custom_gemm, nullptr},
      {"cuda_pdl", &O::programmatic_launch, nullptr},
      {"cuda_attention_double_buffer", &O::attention_double_buffer, nullptr},
      {"residual_in_gemm", &O::residual_in_gemm, nullptr},
      {"cuda_overlap_copies", &O::overlap_copies, nullptr},
      {"cuda_attention_tile", nullptr, &O::attention_tile},
      {"cuda_layer_norm_hoist_max_rows", nullptr, &O::layer_norm_hoist_max_rows},
      {"cuda_layer_norm_in_gemm_max_rows", nullptr, &O::layer_norm_in_gemm_max_rows},
  };
  return *switches;
}

namespace {

std::string ValueOf(const CudaTuningSwitch& s, const CudaEngineOptions& o) {
  if (s.on != nullptr) return o.*s.on ? "true" : "false";
  return std::to_string(o.*s.value);
}

}  // namespace

std::vector<std::pair<std::string, std::string>> CudaTuningValues(const CudaEngineOptions& options,
                                                                  bool only_changed) {
  const CudaEngineOptions defaults;
  std::vector<std::pair<std::string, std::string>> values;
  for (const CudaTuningSwitch& s : CudaTuningSwitches()) {
    std::string value = ValueOf(s, options);
    if (only_changed && value == ValueOf(s, defaults)) continue;
    values.emplace_back(s.flag, std::move(value));
  }
  return values;
}

absl::Status SetCudaTuning(absl::string_view flag, absl::string_view value,
                           CudaEngineOptions* options) {
  for (const CudaTuningSwitch& s : CudaTuningSwitches()) {
    if (flag != s.flag) continue;
    // Parsed aside: a failed parse may leave a partial number behind.
    bool on = false;
    int number = 0;
    if (s.on != nullptr ? !absl::SimpleAtob(value, &on) : !absl::SimpleAtoi(value, &number)) {
      return absl::InvalidArgumentError(absl::StrCat("--", flag, ": bad value '", value, "'"));
    }
    if (s.on != nullptr) {
      options->*s.on = on;
    } else {
      options->*s.value = number;
    }
    return absl::OkStatus();
  }
  return absl::NotFoundError(absl::StrCat("no CUDA engine option --", flag));
}

absl::Status ValidateCudaEngineOptions(const CudaEngineOptions& options) {
  if (options.max_batch_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("CUDA engine: max_batch_tokens must be >= 1, got ", options.max_batch_tokens));
  }
  // The tuning switches by their flags' names, as a user sets them.
  if (options.max_graph_rows < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--cuda_graph_max_rows must be >= 0, got ", options.max_graph_rows));
  }
  const int tile = options.attention_tile;
  if (tile != 0 && tile != 16 && tile != 32 && tile != 64) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--cuda_attention_tile must be 0 (chosen per batch), 16, 32 or 64, got ", tile));
  }
  if (options.layer_norm_hoist_max_rows < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--cuda_layer_norm_hoist_max_rows must be >= 0, got ", options.layer_norm_hoist_max_rows));
  }
  if (options.layer_norm_in_gemm_max_rows < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--cuda_layer_norm_in_gemm_max_rows must be >= 0, got ",
                     options.layer_norm_in_gemm_max_rows));
  }
  return absl::OkStatus();
}

}  // namespace bert
