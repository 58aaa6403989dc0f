#include "server/engine/cpu_engine.h"

#include <cblas.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <new>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/blas_core.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/embedding.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/layer_norm.h"
#include "kernels/cpu/pooling.h"
#include "server/util/available_cores.h"
#include "server/util/available_memory.h"
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

// Refuses a workspace for `rows` that this process cannot have, which would otherwise end it
// in std::bad_alloc or, below the kernel's overcommit limit, in the OOM killer while the
// workspace is zeroed.
absl::Status CheckWorkspaceFits(const ModelConfig& c, int rows, CpuGemm gemm) {
  const int64_t bytes = CpuEngine::WorkspaceBytes(c, rows, gemm);
  const std::optional<int64_t> available = AvailableMemoryBytes();
  if (!available.has_value() || bytes <= *available) return absl::OkStatus();
  return absl::ResourceExhaustedError(absl::StrCat(
      "cpu engine: a workspace for max_batch_tokens=", rows, " needs ", bytes >> 20,
      " MiB of activations (", bytes / rows, " bytes a row), more than the ", *available >> 20,
      " MiB this process may still take (the machine's available memory, or its memory "
      "cgroup's limit less its usage); lower max_batch_tokens"));
}

}  // namespace

int64_t CpuEngine::WorkspaceBytes(const ModelConfig& config, int rows, CpuGemm gemm) {
  // Reserve's buffers: hidden, qkv (3), context, projected (hidden each) and intermediate; with
  // AMX, the bfloat16 inputs of the widest layer.
  const int64_t floats =
      int64_t{rows} * (6 * int64_t{config.hidden_size} + config.intermediate_size);
  const int64_t bfloat16_inputs =
      gemm == cpu::LinearIsa::kAmxBf16
          ? cpu::Bfloat16Inputs::Size(rows, std::max(config.hidden_size, config.intermediate_size))
          : 0;
  return floats * static_cast<int64_t>(sizeof(float)) +
         bfloat16_inputs * static_cast<int64_t>(sizeof(uint16_t));
}

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
  ASSIGN_OR_RETURN(const CpuGemm gemm, ParseCpuGemm(options.gemm));
  const ModelWeights& w = model->weights;
  const ModelConfig& c = model->config;
  if (options.max_batch_tokens > 0) {
    RETURN_IF_ERROR(CheckWorkspaceFits(c, options.max_batch_tokens, gemm));
  }
  if (static_cast<int>(w.layers.size()) != c.num_layers ||
      w.word_embeddings.size() != static_cast<int64_t>(c.vocab_size) * c.hidden_size) {
    return absl::InvalidArgumentError("cpu engine: model weights do not match its config");
  }
  const int threads = options.threads > 0 ? options.threads : AvailableCores();
  std::unique_ptr<CpuEngine> engine(new CpuEngine(std::move(model), threads, gemm));
  RETURN_IF_ERROR(engine->PrepareLinears());
  if (options.max_batch_tokens > 0) engine->Reserve(options.max_batch_tokens);
  return engine;
}

absl::StatusOr<CpuGemm> ParseCpuGemm(const std::string& name) {
  cpu::LinearIsa isa;
  if (name == "auto") {
    const cpu::LinearIsa best = cpu::BestLinearIsa();
    return best == cpu::LinearIsa::kPortable ? CpuGemm() : CpuGemm(best);
  } else if (name == "openblas") {
    return CpuGemm();
  } else if (name == "avx512") {
    isa = cpu::LinearIsa::kAvx512;
  } else if (name == "avx2") {
    isa = cpu::LinearIsa::kAvx2;
  } else if (name == "portable") {
    isa = cpu::LinearIsa::kPortable;
  } else if (name == "amx_bf16") {
    isa = cpu::LinearIsa::kAmxBf16;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("cpu engine: unknown GEMM \"", name,
                     "\" (auto, avx512, avx2, portable, openblas or amx_bf16)"));
  }
  if (isa == cpu::LinearIsa::kAmxBf16 && !cpu::HasAmxBf16()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cpu engine: the AMX bfloat16 GEMM (--cpu_gemm=amx_bf16, --dtype=bfloat16) does not run "
        "here: ",
        cpu::AmxBf16Unavailable()));
  }
  if (!cpu::LinearIsaAvailable(isa)) {
    return absl::InvalidArgumentError(
        absl::StrCat("cpu engine: this CPU does not run the ", cpu::LinearIsaName(isa),
                     " GEMM (the best it runs: ", cpu::LinearIsaName(cpu::BestLinearIsa()), ")"));
  }
  return CpuGemm(isa);
}

std::string CpuGemmName(CpuGemm gemm) {
  return gemm ? absl::StrCat(cpu::LinearIsaName(*gemm), " packed GEMM") : "OpenBLAS GEMM";
}

CpuEngine::CpuEngine(std::shared_ptr<const Model> model, int threads, CpuGemm gemm)
    : model_(std::move(model)), pool_(threads), cpu_name_(CpuModelName()), gemm_(gemm) {
  // The pool provides the parallelism; OpenBLAS threads would compete with it. The setting
  // is process-wide (see cpu_engine.h).
  openblas_set_num_threads(1);
}

absl::Status CpuEngine::PrepareLinears() {
  const ModelWeights& w = model_->weights;
  const ModelConfig& c = model_->config;
  const int h = c.hidden_size;
  std::atomic<bool> out_of_memory{false};
  const auto prepare = [&](const HostTensor& t, int out, int in) {
    EngineLinear linear;
    linear.in = in;
    linear.out = out;
    if (gemm_) {
      // Empty only where the allocation failed: the version runs here and out, in > 0.
      linear.packed = cpu::PackedWeights::Pack(t.data.data(), out, in, *gemm_);
      if (linear.packed.empty()) out_of_memory = true;
    } else {
      linear.weight = t.data.data();
    }
    return linear;
  };
  linears_.resize(c.num_layers);
  pool_.ParallelFor(c.num_layers, [&](int i) {
    const LayerWeights& l = w.layers[i];
    LayerLinears& linears = linears_[i];
    linears.qkv = prepare(l.qkv_weight, 3 * h, h);
    linears.attention_output = prepare(l.attention_output_weight, h, h);
    linears.intermediate = prepare(l.intermediate_weight, c.intermediate_size, h);
    linears.output = prepare(l.output_weight, h, c.intermediate_size);
  });
  if (w.has_pooler) pooler_ = prepare(w.pooler_weight, h, h);
  if (out_of_memory) {
    return absl::ResourceExhaustedError(
        "cpu engine: no memory for the packed copy of the Linear weights (as large as the "
        "model's Linear weights; --cpu_gemm=openblas needs none)");
  }
  return absl::OkStatus();
}

EngineInfo CpuEngine::info() const {
  EngineInfo info;
  info.backend = "cpu";
  info.device = absl::StrCat(cpu_name_, " (", pool_.num_threads(), " threads, ", CpuGemmName(gemm_),
                             ", OpenBLAS ", cpu::BlasCoreName(), ")");
  // The AMX GEMM multiplies in bfloat16 (the rest runs in float32): results as precise as a
  // bfloat16 engine's.
  info.dtype = gemm_ == cpu::LinearIsa::kAmxBf16 ? DType::kBFloat16 : DType::kFloat32;
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
  if (gemm_ == cpu::LinearIsa::kAmxBf16 &&
      !bfloat16_inputs_.Reserve(rows, std::max(c.hidden_size, c.intermediate_size))) {
    throw std::bad_alloc();  // as the vectors' resize above
  }
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

void CpuEngine::ParallelLinear(const float* x, int rows, const EngineLinear& linear,
                               const float* bias, cpu::Epilogue epilogue, float* y) {
  if (rows <= 0) return;
  const int in = linear.in;
  const int out = linear.out;
  if (linear.packed.empty()) {
    // OpenBLAS sgemm, by parts of rows (each packs the weights itself).
    const int parts = NumParts(rows, /*min_rows=*/16, /*target_rows=*/256);
    pool_.ParallelFor(parts, [&](int p) {
      const int r0 = PartBegin(rows, p, parts);
      const int r1 = PartBegin(rows, p + 1, parts);
      cpu::Linear(x + static_cast<int64_t>(r0) * in, r1 - r0, in, linear.weight, bias, out,
                  epilogue, y + static_cast<int64_t>(r0) * out);
    });
    return;
  }
  const int panels = linear.packed.num_panels();
  // Chunks of rows, each with every panel in turn: a panel is read from memory once per chunk,
  // and the chunk's inputs (at most 512 KiB) once per panel. Chunks of about equal size (the
  // last may be smaller), in multiples of the kernel's block of rows. Against 2 MiB, 512 KiB
  // ran BERT-base 32 × 128 faster in 7 rounds of 7, one sequence alike (bench/RESULTS_cpu.md).
  constexpr int kChunkFloats = 128 * 1024;
  const int block = linear.packed.block_rows();
  const int max_chunk_rows = std::max(block, kChunkFloats / in / block * block);
  int row_chunks = (rows + max_chunk_rows - 1) / max_chunk_rows;
  // Each chunk's panels in groups, for about four parts per thread (a thread that the OS holds
  // back leaves its share to the others): each part reads only its groups' share of the
  // weights, and a panel is still read once per chunk.
  const int n = pool_.num_threads();
  const int target_parts = 4 * n;
  const int groups =
      n == 1 ? 1 : std::min(panels, std::max(1, (target_parts + row_chunks - 1) / row_chunks));
  // A narrow layer (few panels: MiniLM's 384 outputs are 8) on many threads: smaller chunks,
  // down to one block of rows each, so that every thread still has parts to run.
  if (n > 1 && row_chunks * groups < target_parts) {
    const int blocks = (rows + block - 1) / block;
    row_chunks = std::max(row_chunks, std::min(blocks, (target_parts + groups - 1) / groups));
  }
  const int chunk_rows = ((rows + row_chunks - 1) / row_chunks + block - 1) / block * block;
  row_chunks = (rows + chunk_rows - 1) / chunk_rows;  // rounding up to blocks may leave fewer
  // AMX: each part multiplies its rows rounded to bfloat16. Where several parts share a chunk's
  // rows (groups of panels), the inputs are rounded once first, by whole tiles of rows.
  const bool bfloat16 = linear.packed.isa() == cpu::LinearIsa::kAmxBf16;
  const bool round_first = bfloat16 && groups > 1;
  uint16_t* const a = bfloat16 ? bfloat16_inputs_.data() : nullptr;
  if (round_first) {
    constexpr int kTile = cpu::kBfloat16InputRows;
    const int tiles = (rows + kTile - 1) / kTile;
    const int parts = std::min(tiles, NumParts(rows, /*min_rows=*/kTile, /*target_rows=*/64));
    pool_.ParallelFor(parts, [&](int p) {
      cpu::RoundInputsToBfloat16(x, rows, in, PartBegin(tiles, p, parts) * kTile,
                                 PartBegin(tiles, p + 1, parts) * kTile, a);
    });
  }
  pool_.ParallelFor(row_chunks * groups, [&](int part) {
    const int chunk = part / groups, g = part % groups;
    const int r0 = std::min(rows, chunk * chunk_rows);
    const int r1 = std::min(rows, r0 + chunk_rows);
    const int panel_begin = PartBegin(panels, g, groups);
    const int panel_end = PartBegin(panels, g + 1, groups);
    if (!bfloat16) {
      cpu::LinearPacked(x + static_cast<int64_t>(r0) * in, r1 - r0, linear.packed, bias, epilogue,
                        panel_begin, panel_end, y + static_cast<int64_t>(r0) * out);
      return;
    }
    // chunk_rows is a multiple of the kernel's 32 rows, so r0 of whole tiles.
    if (!round_first) cpu::RoundInputsToBfloat16(x, rows, in, r0, r1, a);
    cpu::LinearPackedOnBfloat16(a, rows, r0, r1, linear.packed, bias, epilogue, panel_begin,
                                panel_end, y);
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

void CpuEngine::RunLayer(const LayerWeights& l, const LayerLinears& linears,
                         const EncoderBatch& batch) {
  const ModelConfig& c = model_->config;
  const int rows = batch.total_rows();
  const cpu::Epilogue gelu = c.activation == Activation::kGeluErf ? cpu::Epilogue::kBiasGeluErf
                                                                  : cpu::Epilogue::kBiasGeluTanh;
  ParallelLinear(hidden_.data(), rows, linears.qkv, l.qkv_bias.data.data(), cpu::Epilogue::kBias,
                 qkv_.data());

  // Attention: contiguous runs of sequences with about equal rows, and while there are fewer
  // runs than four per thread (one long sentence), their heads in groups.
  const int n = batch.num_sequences();
  const int runs = std::min(n, NumParts(rows, /*min_rows=*/1, /*target_rows=*/128));
  const int threads = pool_.num_threads();
  const int head_groups =
      threads == 1 ? 1 : std::clamp((4 * threads + runs - 1) / runs, 1, c.num_heads);
  pool_.ParallelFor(runs * head_groups, [&](int part) {
    const int p = part / head_groups, g = part % head_groups;
    const int row_begin = PartBegin(rows, p, runs);
    const int row_end = PartBegin(rows, p + 1, runs);
    // Sequence s belongs to the run holding its first row.
    const int32_t* cu = batch.cu_rows.data();
    const int s0 = static_cast<int>(std::lower_bound(cu, cu + n, row_begin) - cu);
    const int s1 = static_cast<int>(std::lower_bound(cu, cu + n, row_end) - cu);
    if (s1 > s0) {
      cpu::AttentionHeads(qkv_.data(), cu + s0, batch.num_valid.data() + s0, s1 - s0, c.num_heads,
                          c.head_dim(), PartBegin(c.num_heads, g, head_groups),
                          PartBegin(c.num_heads, g + 1, head_groups), context_.data());
    }
  });

  ParallelLinear(context_.data(), rows, linears.attention_output, nullptr, cpu::Epilogue::kNone,
                 projected_.data());
  ParallelLayerNorm(projected_.data(), l.attention_output_bias.data.data(), hidden_.data(),
                    l.attention_norm_gamma, l.attention_norm_beta, rows, hidden_.data());
  ParallelLinear(hidden_.data(), rows, linears.intermediate, l.intermediate_bias.data.data(), gelu,
                 intermediate_.data());
  ParallelLinear(intermediate_.data(), rows, linears.output, nullptr, cpu::Epilogue::kNone,
                 projected_.data());
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
  output->cls.clear();
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
  const bool needs_last =
      selection.sequence || selection.pooled || selection.mean_pooled || selection.cls;
  int last = needs_last ? c.num_layers - 1 : -1;
  if (!selection.layers.empty()) last = std::max(last, selection.layers.back());
  size_t next_selected = 0;
  for (int i = 0; i <= last; ++i) {
    RunLayer(w.layers[i], linears_[i], batch);
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
    // n <= rows), then the dense + tanh layer as the encoder's Linears run.
    cpu::GatherFirstRows(hidden_.data(), batch.cu_rows.data(), n, h, context_.data());
    ParallelLinear(context_.data(), n, pooler_, w.pooler_bias.data.data(), cpu::Epilogue::kBiasTanh,
                   output->pooled.data());
    if (selection.normalize) cpu::L2Normalize(output->pooled.data(), n, h);
  }
  if (selection.mean_pooled) {
    output->mean_pooled.resize(static_cast<size_t>(n) * h);
    cpu::MeanPool(hidden_.data(), batch.cu_rows.data(), batch.num_valid.data(), n, h,
                  output->mean_pooled.data());
    if (selection.normalize) cpu::L2Normalize(output->mean_pooled.data(), n, h);
  }
  if (selection.cls) {
    output->cls.resize(static_cast<size_t>(n) * h);
    cpu::GatherFirstRows(hidden_.data(), batch.cu_rows.data(), n, h, output->cls.data());
    if (selection.normalize) cpu::L2Normalize(output->cls.data(), n, h);
  }
  return absl::OkStatus();
}

}  // namespace bert
