#include "server/engine/cpu_engine.h"

#include <cblas.h>

#include <algorithm>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/blas_core.h"
#include "kernels/cpu/embedding.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/layer_norm.h"
#include "kernels/cpu/pooling.h"
#include "server/util/available_cores.h"
#include "server/util/status_macros.h"

namespace bert {
namespace {

std::string CpuModelName() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) {
        size_t start = line.find_first_not_of(' ', colon + 1);
        return start == std::string::npos ? "" : line.substr(start);
      }
    }
  }
  return "unknown CPU";
}

// Row range of part `p` of `n` over `rows` rows.
inline int PartBegin(int rows, int p, int n) {
  return static_cast<int>(static_cast<int64_t>(rows) * p / n);
}

}  // namespace

absl::StatusOr<std::unique_ptr<CpuEngine>> CpuEngine::Create(std::shared_ptr<const Model> model,
                                                             const CpuEngineOptions& options) {
  if (model == nullptr) return absl::InvalidArgumentError("cpu engine: no model");
  if (options.threads < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("cpu engine: threads must be >= 0, got ", options.threads));
  }
  if (options.max_batch_tokens < 0) {
    return absl::InvalidArgumentError("cpu engine: max_batch_tokens must be >= 0");
  }
  if (options.few_rows_max < 0) {
    return absl::InvalidArgumentError("cpu engine: few_rows_max must be >= 0");
  }
  const ModelWeights& w = model->weights;
  const ModelConfig& c = model->config;
  if (static_cast<int>(w.layers.size()) != c.num_layers ||
      w.word_embeddings.size() != static_cast<int64_t>(c.vocab_size) * c.hidden_size) {
    return absl::InvalidArgumentError("cpu engine: model weights do not match its config");
  }
  const int threads = options.threads > 0 ? options.threads : AvailableCores();
  std::unique_ptr<CpuEngine> engine(new CpuEngine(std::move(model), threads, options.few_rows_max));
  if (options.max_batch_tokens > 0) engine->Reserve(options.max_batch_tokens);
  return engine;
}

CpuEngine::CpuEngine(std::shared_ptr<const Model> model, int threads, int few_rows_max)
    : model_(std::move(model)),
      pool_(threads),
      cpu_name_(CpuModelName()),
      few_rows_limit_(!cpu::LinearFewRowsIsVectorized() ? 0
                      : pool_.num_threads() == 1        ? std::min(few_rows_max, 16)
                                                        : few_rows_max) {
  // The pool provides the parallelism; OpenBLAS threads would compete with it. The setting
  // is process-wide (see cpu_engine.h).
  openblas_set_num_threads(1);
}

EngineInfo CpuEngine::info() const {
  EngineInfo info;
  info.backend = "cpu";
  info.device = absl::StrCat(cpu_name_, " (", pool_.num_threads(), " threads, ",
                             few_rows_limit_ > 0 ? cpu::FewRowsIsaName() : "no",
                             " few-rows kernel, OpenBLAS ", cpu::BlasCoreName(), ")");
  info.dtype = DType::kFloat32;
  return info;
}

void CpuEngine::Reserve(int rows) {
  if (rows <= capacity_rows_) return;
  const ModelConfig& c = model_->config;
  const size_t r = static_cast<size_t>(rows);
  hidden_.resize(r * c.hidden_size);
  qkv_.resize(r * 3 * c.hidden_size);
  context_.resize(r * c.hidden_size);
  intermediate_.resize(r * c.intermediate_size);
  projected_.resize(r * c.hidden_size);
  capacity_rows_ = rows;
}

int CpuEngine::NumParts(int rows, int min_rows, int target_rows) const {
  // One part per thread at least (while parts keep min_rows), and more, smaller parts of
  // about target_rows (up to 4 per thread) so that a thread the OS holds back on a busy
  // machine leaves its share to the others.
  const int n = pool_.num_threads();
  const int per_thread = std::min(n, rows / std::max(1, min_rows));
  const int balanced = std::min(4 * n, rows / std::max(1, target_rows));
  return std::max(1, std::max(per_thread, balanced));
}

void CpuEngine::ParallelLinear(const float* x, int rows, int in, const HostTensor& weight,
                               const float* bias, int out, cpu::Epilogue epilogue, float* y) {
  if (rows <= few_rows_limit_) {
    // By output features, in blocks of 16 (whole cache lines of each output row), one part
    // per thread: each thread reads only its share of the weights. (A part's last outputs
    // past a multiple of the kernel's block width, 3 or 6 weight rows, take its narrower
    // blocks, which sum each output the same way.)
    constexpr int kBlock = 16;
    const int blocks = (out + kBlock - 1) / kBlock;
    const int parts = std::max(1, std::min(pool_.num_threads(), blocks));
    pool_.ParallelFor(parts, [&](int p) {
      const int o0 = std::min(out, kBlock * PartBegin(blocks, p, parts));
      const int o1 = std::min(out, kBlock * PartBegin(blocks, p + 1, parts));
      cpu::LinearFewRows(x, rows, in, weight.data.data(), bias, out, epilogue, o0, o1, y);
    });
    return;
  }
  const int parts = NumParts(rows, /*min_rows=*/16, /*target_rows=*/256);
  pool_.ParallelFor(parts, [&](int p) {
    const int r0 = PartBegin(rows, p, parts);
    const int r1 = PartBegin(rows, p + 1, parts);
    cpu::Linear(x + static_cast<int64_t>(r0) * in, r1 - r0, in, weight.data.data(), bias, out,
                epilogue, y + static_cast<int64_t>(r0) * out);
  });
}

void CpuEngine::ParallelLayerNorm(const float* x, const float* bias, const float* residual,
                                  const HostTensor& gamma, const HostTensor& beta, int rows,
                                  float* out) {
  const int h = model_->config.hidden_size;
  const float eps = model_->config.layer_norm_eps;
  const int parts = NumParts(rows, /*min_rows=*/8, /*target_rows=*/64);
  pool_.ParallelFor(parts, [&](int p) {
    const int64_t r0 = PartBegin(rows, p, parts);
    const int64_t r1 = PartBegin(rows, p + 1, parts);
    cpu::AddBiasResidualLayerNorm(x + r0 * h, bias, residual ? residual + r0 * h : nullptr,
                                  gamma.data.data(), beta.data.data(), r1 - r0, h, eps,
                                  out + r0 * h);
  });
}

void CpuEngine::RunLayer(const LayerWeights& l, const EncoderBatch& batch) {
  const ModelConfig& c = model_->config;
  const int rows = batch.total_rows();
  const int h = c.hidden_size;
  const cpu::Epilogue gelu = c.activation == Activation::kGeluErf ? cpu::Epilogue::kBiasGeluErf
                                                                  : cpu::Epilogue::kBiasGeluTanh;
  ParallelLinear(hidden_.data(), rows, h, l.qkv_weight, l.qkv_bias.data.data(), 3 * h,
                 cpu::Epilogue::kBias, qkv_.data());

  // Attention: contiguous runs of sequences with about equal rows per part.
  const int n = batch.num_sequences();
  const int parts = std::min(n, NumParts(rows, /*min_rows=*/1, /*target_rows=*/128));
  pool_.ParallelFor(parts, [&](int p) {
    const int row_begin = PartBegin(rows, p, parts);
    const int row_end = PartBegin(rows, p + 1, parts);
    // Sequence s belongs to the part holding its first row.
    const int32_t* cu = batch.cu_rows.data();
    const int s0 = static_cast<int>(std::lower_bound(cu, cu + n, row_begin) - cu);
    const int s1 = static_cast<int>(std::lower_bound(cu, cu + n, row_end) - cu);
    if (s1 > s0) {
      cpu::Attention(qkv_.data(), cu + s0, batch.num_valid.data() + s0, s1 - s0, c.num_heads,
                     c.head_dim(), context_.data());
    }
  });

  ParallelLinear(context_.data(), rows, h, l.attention_output_weight, nullptr, h,
                 cpu::Epilogue::kNone, projected_.data());
  ParallelLayerNorm(projected_.data(), l.attention_output_bias.data.data(), hidden_.data(),
                    l.attention_norm_gamma, l.attention_norm_beta, rows, hidden_.data());
  ParallelLinear(hidden_.data(), rows, h, l.intermediate_weight, l.intermediate_bias.data.data(),
                 c.intermediate_size, gelu, intermediate_.data());
  ParallelLinear(intermediate_.data(), rows, c.intermediate_size, l.output_weight, nullptr, h,
                 cpu::Epilogue::kNone, projected_.data());
  ParallelLayerNorm(projected_.data(), l.output_bias.data.data(), hidden_.data(),
                    l.output_norm_gamma, l.output_norm_beta, rows, hidden_.data());
}

absl::Status CpuEngine::Encode(const EncoderBatch& batch, const OutputSelection& selection,
                               EncoderOutput* output) {
  const ModelConfig& c = model_->config;
  const ModelWeights& w = model_->weights;
  RETURN_IF_ERROR(ValidateBatch(c, batch));
  RETURN_IF_ERROR(ValidateSelection(c, has_pooler(), selection));
  if (output == nullptr) return absl::InvalidArgumentError("cpu engine: null output");

  const int n = batch.num_sequences();
  const int rows = batch.total_rows();
  const int h = c.hidden_size;
  const size_t hidden_elems = static_cast<size_t>(rows) * h;
  output->sequence.clear();
  output->layers.resize(selection.layers.size());
  for (auto& layer : output->layers) layer.clear();
  output->pooled.clear();
  output->mean_pooled.clear();
  if (n == 0) return absl::OkStatus();

  Reserve(rows);

  const int parts = std::min(pool_.num_threads(), n);
  pool_.ParallelFor(parts, [&](int p) {
    const int s0 = PartBegin(n, p, parts);
    const int s1 = PartBegin(n, p + 1, parts);
    cpu::EmbeddingLayerNorm(batch.word_ids.data(), batch.type_ids.data(), batch.cu_rows.data() + s0,
                            s1 - s0, w.word_embeddings.data.data(),
                            w.position_embeddings.data.data(), w.token_type_embeddings.data.data(),
                            w.embedding_norm_gamma.data.data(), w.embedding_norm_beta.data.data(),
                            h, c.layer_norm_eps, hidden_.data());
  });

  // Layers past the deepest one requested need not run; every head but `layers` reads the
  // last layer.
  const bool needs_last = selection.sequence || selection.pooled || selection.mean_pooled;
  int last = needs_last ? c.num_layers - 1 : -1;
  if (!selection.layers.empty()) last = std::max(last, selection.layers.back());
  size_t next_selected = 0;
  for (int i = 0; i <= last; ++i) {
    RunLayer(w.layers[i], batch);
    if (next_selected < selection.layers.size() && selection.layers[next_selected] == i) {
      output->layers[next_selected].assign(hidden_.begin(), hidden_.begin() + hidden_elems);
      ++next_selected;
    }
  }
  if (selection.sequence) {
    output->sequence.assign(hidden_.begin(), hidden_.begin() + hidden_elems);
  }
  if (selection.pooled) {
    output->pooled.resize(static_cast<size_t>(n) * h);
    // The [CLS] rows, gathered into the attention-output buffer (free after the last layer;
    // n <= rows), then the dense + tanh layer as the encoder's Linears run: a lone sentence's
    // single row through the few-rows kernel, split across threads.
    cpu::GatherFirstRows(hidden_.data(), batch.cu_rows.data(), n, h, context_.data());
    ParallelLinear(context_.data(), n, h, w.pooler_weight, w.pooler_bias.data.data(), h,
                   cpu::Epilogue::kBiasTanh, output->pooled.data());
    if (selection.normalize) cpu::L2Normalize(output->pooled.data(), n, h);
  }
  if (selection.mean_pooled) {
    output->mean_pooled.resize(static_cast<size_t>(n) * h);
    cpu::MeanPool(hidden_.data(), batch.cu_rows.data(), batch.num_valid.data(), n, h,
                  output->mean_pooled.data());
    if (selection.normalize) cpu::L2Normalize(output->mean_pooled.data(), n, h);
  }
  return absl::OkStatus();
}

}  // namespace bert
