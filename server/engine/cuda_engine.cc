#include "server/engine/cuda_engine.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/cuda/activation.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/convert.h"
#include "kernels/cuda/cuda_utils.h"
#include "kernels/cuda/embedding.h"
#include "kernels/cuda/fault.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/launch.h"
#include "kernels/cuda/layer_norm.h"
#include "kernels/cuda/pooling.h"
#include "kernels/cuda/split_k_gemm.h"
#include "server/util/status_macros.h"

namespace bert {
namespace {

using cuda::CudaStatus;
using cuda::DeviceBuffer;
using GraphFault = CudaEngineOptions::Testing::GraphFault;
using DeviceFault = CudaEngineOptions::Testing::DeviceFault;

// The options' header is CUDA-free, so it spells the kernels' constants out.
static_assert(CudaEngineOptions().layer_norm_hoist_max_rows == cuda::kDefaultLayerNormHoistMaxRows);
static_assert(static_cast<int>(cuda::AttentionTile::kAuto) == 0 &&
              static_cast<int>(cuda::AttentionTile::kRows16) == 16 &&
              static_cast<int>(cuda::AttentionTile::kRows32) == 32 &&
              static_cast<int>(cuda::AttentionTile::kRows64) == 64);

absl::Status ToStatus(const CudaStatus& s, const char* what) {
  if (s.ok()) return absl::OkStatus();
  const std::string msg = absl::StrCat("CUDA engine: ", what, ": ", s.message());
  if (s.out_of_memory()) return absl::ResourceExhaustedError(msg);
  return absl::InternalError(msg);
}

absl::Status CudaCall(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return absl::OkStatus();
  const std::string msg = absl::StrCat("CUDA engine: ", what, " failed: ", cudaGetErrorName(err),
                                       " (", cudaGetErrorString(err), ")");
  if (err == cudaErrorMemoryAllocation) return absl::ResourceExhaustedError(msg);
  return absl::InternalError(msg);
}

// Device copies of one encoder block. Matrices and biases in T, LayerNorm parameters fp32.
template <typename T>
struct DeviceLayer {
  DeviceBuffer<T> qkv_weight, qkv_bias;
  DeviceBuffer<T> attention_output_weight, attention_output_bias;
  DeviceBuffer<float> attention_norm_gamma, attention_norm_beta;
  DeviceBuffer<T> intermediate_weight, intermediate_bias;
  DeviceBuffer<T> output_weight, output_bias;
  DeviceBuffer<float> output_norm_gamma, output_norm_beta;
};

template <typename T>
class CudaEngine final : public Engine, public CudaEngineTiming {
 public:
  static absl::StatusOr<std::unique_ptr<Engine>> Create(std::shared_ptr<const Model> model,
                                                        const CudaEngineOptions& options);

  const ModelConfig& config() const override { return model_->config; }
  bool has_pooler() const override { return model_->weights.has_pooler; }
  EngineInfo info() const override {
    EngineInfo info;
    info.backend = "cuda";
    info.device = device_name_;
    info.dtype = options_.dtype;
    return info;
  }
  absl::Status Encode(const EncoderBatch& batch, const OutputSelection& selection,
                      EncoderOutput* output) override;
  absl::Status Health() const override { return broken_; }
  std::vector<EngineFallback> Fallbacks() const override;
  float last_gpu_milliseconds() const override { return last_gpu_ms_; }
  void set_op_observer(CudaOpObserver* observer) override { observer_ = observer; }
  CudaGraphStats graph_stats() const override {
    CudaGraphStats stats = graph_stats_;
    stats.cached = static_cast<int>(graphs_.size());
    return stats;
  }
  cuda::GemmStats gemm_stats() const override {
    return gemm_ == nullptr ? cuda::GemmStats() : gemm_->stats();
  }
  CudaPathStats path_stats() const override { return path_stats_; }
  bool programmatic_launch() const override { return programmatic_; }

 private:
  CudaEngine(std::shared_ptr<const Model> model, const CudaEngineOptions& options)
      : options_(options), model_(std::move(model)) {}

  absl::Status Init();
  // Whether the FFN's bias + GELU runs as the FFN-up GEMM's epilogue (see fused_gelu).
  bool GeluInEpilogue() const;
  // hidden_ = LayerNorm(x · weightᵀ + bias + hidden_): the projection closing an attention or
  // FFN block. `scratch` [rows, hidden] takes the GEMM's output; `norm_op` names the
  // LayerNorm for the op observer, `block` the errors. residual_in_gemm picks where bias and
  // residual are added.
  absl::Status ProjectAddNorm(const T* x, int in_features, const T* weight, const T* bias, int rows,
                              T* scratch, const char* norm_op, const float* gamma,
                              const float* beta, const char* block);
  // Uploads a host fp32 tensor as T (through the fp32 staging buffer) or as fp32.
  absl::Status Upload(const HostTensor& tensor, DeviceBuffer<T>* out);
  absl::Status UploadFloat(const HostTensor& tensor, DeviceBuffer<float>* out);
  // Encode for a validated batch (split into groups that fit the workspace).
  absl::Status EncodeValid(const EncoderBatch& batch, const OutputSelection& selection,
                           EncoderOutput* output);
  // After a failed batch: whether the fault left the CUDA context unusable ("sticky": every
  // later call returns it, so a stream synchronisation does too), which sets broken_.
  void CheckContext();
  // Encode for a validated batch within the workspace.
  absl::Status EncodeFitting(const EncoderBatch& batch, const OutputSelection& selection,
                             EncoderOutput* output);
  // Writes the batch's ids/types/cu_rows/num_valid into the pinned staging buffer (host only).
  void StageInputs(const EncoderBatch& batch);
  // Enqueues the whole device side of a batch of this shape: the upload from the pinned
  // staging buffer, the forward, and the copies into host_out_ (recorded in pending_). Uses
  // only fixed pointers and the shape, so it can be captured into a graph.
  absl::Status EnqueueForward(int rows, int n, int max_rows, const OutputSelection& selection);
  // Output values the selection copies back for a batch of this shape.
  size_t OutputValues(int rows, int n, const OutputSelection& selection) const;
  // Where the next op starts (profiling only).
  void Mark(const char* op) {
    if (observer_ != nullptr) observer_->OnOp(op, static_cast<void*>(stream_.get()));
  }
  // Output copies. Each output is first put in fp32 into a device staging buffer (stage_) on
  // the main stream (except fp32 layer and sequence outputs without overlap_copies, which are
  // copied straight from the hidden state), then copied into the pinned buffer for output
  // `slot` — on copy_stream_
  // when overlap_copies, so that the copy of layer l's output runs while layer l + 1
  // computes. overlap_copies uses two stages in turn (one fills while the other's copy runs);
  // without it every copy runs on the main stream, which frees its stage in stream order, so
  // one stage serves (num_stages_). Events order the two streams: a stage is refilled only after
  // its copy (stage_free_), copied only after it is filled (stage_ready_), and JoinCopies makes the
  // main stream wait for every copy in flight (before the batch's stop event, a Flush, and the
  // end of a graph capture, which thereby joins the copy stream back). Flush fills the output
  // (it runs early when the pinned buffer is full, never while capturing).
  //
  // Converts (or, for fp32, copies) `count` device values of T into a stage and copies it out;
  // fp32 without overlap_copies copies straight from `src`, in stream order.
  absl::Status CopyOut(const T* src, size_t count, int slot);
  // The next stage to fill: its index and buffer (on the main stream, after its previous
  // copy is done).
  absl::Status AcquireStage(int* index, float** stage);
  // Copies `count` fp32 values at `src` into the pinned buffer for `slot`: `src` is stage
  // `index`, or, when index < 0 (only without overlap_copies), any device buffer. Marks no op:
  // its callers mark "copy_out" once per output (CopyOut before staging, the heads before
  // the copy).
  absl::Status CopyToHost(const float* src, int index, size_t count, int slot);
  absl::Status JoinCopies();
  // Forgets copies in flight whose events a failed capture recorded (they were never run).
  void ForgetCopies();
  // Joins the copies, waits for the stream, then moves the pending outputs into *output_.
  absl::Status Flush();

  // Output slots: >= 0 is output->layers[slot].
  static constexpr int kSlotSequence = -1;
  static constexpr int kSlotPooled = -2;
  static constexpr int kSlotMeanPooled = -3;
  static constexpr int kSlotCls = -4;
  struct PendingCopy {
    size_t offset;  // in host_out_
    size_t count;
    int slot;
  };
  std::vector<PendingCopy> pending_;
  size_t pending_used_ = 0;
  EncoderOutput* output_ = nullptr;  // the Encode's output while it runs
  bool capturing_ = false;
  // options_.programmatic_launch where the device and the loaded code support it
  // (cuda::ProgrammaticLaunchAvailable).
  bool programmatic_ = false;

  // CUDA graphs. Key: {rows, sequences, max_rows, sequence, pooled, mean_pooled, normalize,
  // cls, layers...}.
  using GraphKey = std::vector<int>;
  struct CachedGraph {
    GraphKey key;
    cuda::CudaGraphExec exec;
    std::vector<PendingCopy> copies;  // what the graph copies into host_out_
    size_t copied_values = 0;
    unsigned long long last_use = 0;
  };
  // Runs the device side of a staged batch: replay, capture or eagerly.
  absl::Status RunDevice(int rows, int n, int max_rows, const OutputSelection& selection);
  absl::Status CaptureAndLaunch(GraphKey key, int rows, int n, int max_rows,
                                const OutputSelection& selection);
  // After `key`'s graph failed to be captured, instantiated or launched (`why`): clears the
  // error, drops any graph of the key, never tries to graph it again, and runs the batch
  // eagerly instead (which reports any real fault). Nothing of the failed attempt is left
  // enqueued: a refused capture or launch enqueues nothing.
  absl::Status RunEagerInstead(GraphKey key, std::string why, int rows, int n, int max_rows,
                               const OutputSelection& selection);
  CudaOpObserver* observer_ = nullptr;
  std::vector<std::unique_ptr<CachedGraph>> graphs_;
  std::vector<GraphKey> seen_once_;    // keys run once (bounded), captured when seen again
  std::vector<GraphKey> ungraphable_;  // keys whose graph failed (bounded); run eagerly
  unsigned long long use_clock_ = 0;
  CudaGraphStats graph_stats_;
  absl::Status broken_;               // set for good by CheckContext (see Engine::Health)
  bool refused_launch_done_ = false;  // testing.device_fault == kRefusedLaunch
  // Incremented where EnqueueForward picks a path, so replays count nothing (see the header).
  CudaPathStats path_stats_;

  const CudaEngineOptions options_;
  std::shared_ptr<const Model> model_;
  std::string device_name_;

  cuda::CudaStream stream_;
  cuda::CudaStream copy_stream_;  // output copies (overlap_copies)
  cuda::CudaEvent start_, stop_;
  float last_gpu_ms_ = 0.f;
  std::unique_ptr<cuda::Gemm> gemm_;

  // Weights.
  DeviceBuffer<T> word_embeddings_, position_embeddings_, type_embeddings_;
  DeviceBuffer<float> embedding_gamma_, embedding_beta_;
  std::vector<DeviceLayer<T>> layers_;
  DeviceBuffer<T> pooler_weight_, pooler_bias_;

  // Workspace, sized from max_batch_tokens (a sequence has >= 1 row, so <= that many of them).
  DeviceBuffer<int32_t> ints_;  // word ids | type ids | cu_rows | num_valid
  cuda::PinnedBuffer<int32_t> host_ints_;
  DeviceBuffer<T> hidden_;                // [tokens, hidden]: the residual stream
  DeviceBuffer<T> qkv_;                   // [tokens, 3 * hidden]; reused for GEMM outputs
  DeviceBuffer<T> context_;               // [tokens, hidden]: attention output
  DeviceBuffer<T> ffn_;                   // [tokens, intermediate]
  DeviceBuffer<T> pool_in_, pool_dense_;  // [tokens (as sequences), hidden]
  // [tokens, hidden] fp32 outputs before the copy out: the first num_stages_ are allocated
  // (with their events), and only those are used.
  DeviceBuffer<float> stage_[2];
  cuda::CudaEvent stage_ready_[2], stage_free_[2];
  bool stage_in_flight_[2] = {false, false};  // a copy out of the stage may still run
  int num_stages_ = 1;                        // 2 with overlap_copies (set in Init)
  int next_stage_ = 0;
  cuda::PinnedBuffer<float> host_out_;  // [2 * tokens, hidden]: outputs before Flush
  DeviceBuffer<float> staging_;         // fp32 staging for weight conversion (load only)
  // layer_norm_in_gemm_max_rows (float16/bfloat16; 0 otherwise, and then nothing allocated):
  // our split-K kernel's workspace for the projections with the LayerNorm inside: partial
  // tiles for num_sms_ CTAs, the [rows, hidden] fp32 sums and their tiles' statistics, tile
  // and row-block counters. 0 also for models whose shape the kernel does not take.
  int layer_norm_gemm_rows_ = 0;
  int num_sms_ = 0;
  DeviceBuffer<float> norm_partials_, norm_rows_, norm_stats_;
  DeviceBuffer<unsigned> norm_tile_counters_, norm_row_counters_;
};

template <typename T>
absl::StatusOr<std::unique_ptr<Engine>> CudaEngine<T>::Create(std::shared_ptr<const Model> model,
                                                              const CudaEngineOptions& options) {
  std::unique_ptr<CudaEngine<T>> engine(new CudaEngine<T>(std::move(model), options));
  RETURN_IF_ERROR(engine->Init());
  return std::unique_ptr<Engine>(std::move(engine));
}

template <typename T>
bool CudaEngine<T>::GeluInEpilogue() const {
  // cuBLASLt's GELU epilogue is the tanh form and may use a fast tanh: never in fp32, so
  // that fp32 stays exact.
  if (std::is_same<T, float>::value) return false;
  return options_.fused_gelu && path_stats_.gelu_epilogue_refused == 0;
}

template <typename T>
absl::Status CudaEngine<T>::Upload(const HostTensor& tensor, DeviceBuffer<T>* out) {
  if constexpr (std::is_same<T, float>::value) return UploadFloat(tensor, out);
  const size_t n = static_cast<size_t>(tensor.size());
  RETURN_IF_ERROR(ToStatus(out->Allocate(n), "allocating weights"));
  if (n == 0) return absl::OkStatus();
  // Through the fp32 staging buffer (stream-ordered: each copy waits for the previous
  // conversion that read the staging buffer).
  const size_t chunk = staging_.size();
  for (size_t offset = 0; offset < n; offset += chunk) {
    const size_t count = std::min(chunk, n - offset);
    RETURN_IF_ERROR(
        CudaCall(cudaMemcpyAsync(staging_.get(), tensor.data.data() + offset, count * sizeof(float),
                                 cudaMemcpyHostToDevice, stream_.get()),
                 "weight upload"));
    RETURN_IF_ERROR(CudaCall(
        cuda::LaunchConvert<float, T>(staging_.get(), count, out->get() + offset, stream_.get()),
        "weight conversion"));
  }
  return absl::OkStatus();
}

template <typename T>
absl::Status CudaEngine<T>::UploadFloat(const HostTensor& tensor, DeviceBuffer<float>* out) {
  const size_t n = static_cast<size_t>(tensor.size());
  RETURN_IF_ERROR(ToStatus(out->Allocate(n), "allocating weights"));
  if (n == 0) return absl::OkStatus();
  return CudaCall(cudaMemcpyAsync(out->get(), tensor.data.data(), n * sizeof(float),
                                  cudaMemcpyHostToDevice, stream_.get()),
                  "weight upload");
}

template <typename T>
absl::Status CudaEngine<T>::ProjectAddNorm(const T* x, int in_features, const T* weight,
                                           const T* bias, int rows, T* scratch, const char* norm_op,
                                           const float* gamma, const float* beta,
                                           const char* block) {
  const ModelConfig& c = model_->config;
  const int h = c.hidden_size;
  cudaStream_t stream = stream_.get();
  if constexpr (!std::is_same<T, float>::value) {
    if (rows <= layer_norm_gemm_rows_) {
      // One launch: GEMM, bias, residual and the LayerNorm (layer_norm_in_gemm_max_rows).
      cuda::SplitKGemmArgs args;
      args.x = x;
      args.weight = weight;
      args.bias = bias;
      args.residual = hidden_.get();
      args.y = hidden_.get();
      args.rows = rows;
      args.in_features = in_features;
      args.out_features = h;
      args.splits = cuda::SplitKGemmSplitsToFill(rows, in_features, h, num_sms_);
      args.partials = norm_partials_.get();
      args.counters = norm_tile_counters_.get();
      args.programmatic = programmatic_;
      args.gamma = gamma;
      args.beta = beta;
      args.eps = c.layer_norm_eps;
      args.norm_rows = norm_rows_.get();
      args.norm_stats = norm_stats_.get();
      args.row_counters = norm_row_counters_.get();
      constexpr cuda::SplitKEpilogue kFused = cuda::SplitKEpilogue::kBiasResidualLayerNorm;
      if (cuda::SplitKGemmUnsupported(args, kFused).empty()) {
        const cudaError_t launched = cuda::LaunchSplitKGemm<T>(args, kFused, stream);
        if (launched == cudaSuccess) ++path_stats_.layer_norm_gemms;
        return CudaCall(launched, absl::StrCat(block, " GEMM + LayerNorm").c_str());
      }
    }
  }
  // With residual_in_gemm the GEMM adds bias and residual, and the LayerNorm reads only its
  // output; otherwise the LayerNorm kernel adds them.
  const bool in_gemm = options_.residual_in_gemm;
  const CudaStatus projected =
      in_gemm ? gemm_->Run<T>(x, rows, in_features, weight, bias, h,
                              cuda::GemmEpilogue::kBiasResidual, scratch, stream, hidden_.get())
              : gemm_->Run<T>(x, rows, in_features, weight, nullptr, h, cuda::GemmEpilogue::kNone,
                              scratch, stream);
  if (!projected.ok()) return ToStatus(projected, absl::StrCat(block, " GEMM").c_str());
  if (in_gemm) ++path_stats_.residual_gemms;
  Mark(norm_op);
  const cudaError_t normed = cuda::LaunchAddBiasResidualLayerNorm<T>(
      scratch, in_gemm ? nullptr : bias, in_gemm ? nullptr : hidden_.get(), gamma, beta, rows, h,
      c.layer_norm_eps, hidden_.get(), stream, programmatic_, options_.layer_norm_hoist_max_rows);
  if (normed == cudaSuccess) return absl::OkStatus();
  return CudaCall(normed, absl::StrCat(block, " LayerNorm").c_str());
}

template <typename T>
absl::Status CudaEngine<T>::Init() {
  const ModelConfig& c = model_->config;
  const ModelWeights& w = model_->weights;
  if (c.num_heads <= 0 || c.hidden_size % c.num_heads != 0) {
    return absl::FailedPreconditionError(absl::StrCat("CUDA engine: hidden_size ", c.hidden_size,
                                                      " is not a multiple of num_heads ",
                                                      c.num_heads));
  }
  const int head_dim = c.head_dim();
  if (!cuda::IsSupportedAttentionHeadDim(head_dim)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "CUDA engine: head_dim ", head_dim, " unsupported (the attention kernel supports 32, ",
        "64 and 128); use the CPU backend"));
  }
  if (c.hidden_size > cuda::kMaxLayerNormHidden) {
    return absl::FailedPreconditionError(absl::StrCat("CUDA engine: hidden_size ", c.hidden_size,
                                                      " > ", cuda::kMaxLayerNormHidden,
                                                      " unsupported"));
  }
  if (static_cast<int>(w.layers.size()) != c.num_layers) {
    return absl::FailedPreconditionError("CUDA engine: model has the wrong number of layers");
  }

  // Device, name, memory check before allocating anything big.
  RETURN_IF_ERROR(CudaCall(cudaFree(nullptr), "initialising the CUDA context"));
  int device = 0;
  RETURN_IF_ERROR(CudaCall(cudaGetDevice(&device), "cudaGetDevice"));
  cudaDeviceProp prop;
  RETURN_IF_ERROR(CudaCall(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties"));
  device_name_ = prop.name;
  programmatic_ = options_.programmatic_launch && cuda::ProgrammaticLaunchAvailable();

  size_t weight_values = w.word_embeddings.size() + w.position_embeddings.size() +
                         w.token_type_embeddings.size() + w.pooler_weight.size() +
                         w.pooler_bias.size();
  size_t largest = std::max({w.word_embeddings.size(), w.position_embeddings.size(),
                             w.token_type_embeddings.size(), w.pooler_weight.size()});
  for (const LayerWeights& l : w.layers) {
    weight_values += l.qkv_weight.size() + l.qkv_bias.size() + l.attention_output_weight.size() +
                     l.attention_output_bias.size() + l.intermediate_weight.size() +
                     l.intermediate_bias.size() + l.output_weight.size() + l.output_bias.size();
    largest = std::max({largest, static_cast<size_t>(l.qkv_weight.size()),
                        static_cast<size_t>(l.intermediate_weight.size()),
                        static_cast<size_t>(l.output_weight.size())});
  }
  const size_t tokens = static_cast<size_t>(options_.max_batch_tokens);
  const size_t hidden = static_cast<size_t>(c.hidden_size);
  const size_t inter = static_cast<size_t>(c.intermediate_size);
  const size_t staging_values =
      std::is_same<T, float>::value ? 0 : std::min<size_t>(largest, 4u << 20);
  num_stages_ = options_.overlap_copies ? 2 : 1;
  // The shapes the kernel takes (split_k_gemm.h): outputs (hidden) a multiple of 64 and at
  // most 1,024, inputs (hidden, intermediate) multiples of 32.
  const bool norm_in_gemm_shape = c.hidden_size % cuda::kSplitKBlockCols == 0 &&
                                  c.hidden_size <= cuda::kSplitKMaxLayerNormWidth &&
                                  c.hidden_size % cuda::kSplitKBlockK == 0 &&
                                  c.intermediate_size % cuda::kSplitKBlockK == 0;
  if (!std::is_same<T, float>::value && norm_in_gemm_shape) {
    layer_norm_gemm_rows_ =
        std::min(options_.layer_norm_in_gemm_max_rows, options_.max_batch_tokens);
  }
  num_sms_ = prop.multiProcessorCount;
  const size_t norm_rows = static_cast<size_t>(layer_norm_gemm_rows_);
  const size_t norm_partial_floats =
      norm_rows == 0
          ? 0
          : static_cast<size_t>(num_sms_) * cuda::kSplitKBlockRows * cuda::kSplitKBlockCols;
  // (All of these are 0 when layer_norm_gemm_rows_ is.)
  const size_t norm_tiles =
      static_cast<size_t>(cuda::SplitKGemmTiles(layer_norm_gemm_rows_, c.hidden_size));
  const size_t norm_row_blocks =
      static_cast<size_t>(cuda::SplitKGemmRowBlocks(layer_norm_gemm_rows_));
  const size_t norm_stats_floats =
      cuda::SplitKGemmNormStatsFloats(layer_norm_gemm_rows_, c.hidden_size);
  const size_t workspace_bytes =
      tokens * (hidden * 3 + hidden + hidden + inter + 2 * hidden) * sizeof(T) +
      num_stages_ * tokens * hidden * sizeof(float) + tokens * 4 * sizeof(int32_t) +
      cuda::kGemmDefaultWorkspaceBytes + staging_values * sizeof(float) +
      (norm_partial_floats + norm_rows * hidden + norm_stats_floats) * sizeof(float) +
      (norm_tiles + norm_row_blocks) * sizeof(unsigned);
  const size_t needed = weight_values * sizeof(T) + workspace_bytes;
  size_t free_bytes = 0, total_bytes = 0;
  RETURN_IF_ERROR(CudaCall(cudaMemGetInfo(&free_bytes, &total_bytes), "cudaMemGetInfo"));
  if (needed + (64u << 20) > free_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("CUDA engine: model ", model_->name, " in ", DTypeName(options_.dtype),
                     " with a ", options_.max_batch_tokens, "-token workspace needs ", needed >> 20,
                     " MiB but ", prop.name, " has ", free_bytes >> 20, " MiB free of ",
                     total_bytes >> 20, " MiB; lower --max_batch_tokens or use a smaller dtype"));
  }

  RETURN_IF_ERROR(ToStatus(stream_.Create(), "creating the stream"));
  RETURN_IF_ERROR(ToStatus(copy_stream_.Create(), "creating the copy stream"));
  for (int k = 0; k < num_stages_; ++k) {
    RETURN_IF_ERROR(ToStatus(stage_ready_[k].Create(cudaEventDisableTiming), "creating events"));
    RETURN_IF_ERROR(ToStatus(stage_free_[k].Create(cudaEventDisableTiming), "creating events"));
  }
  RETURN_IF_ERROR(ToStatus(start_.Create(), "creating events"));
  RETURN_IF_ERROR(ToStatus(stop_.Create(), "creating events"));
  cuda::GemmOptions gemm_options;
  gemm_options.allow_tf32 = options_.allow_tf32;
  gemm_options.autotune = options_.gemm_autotune;
  gemm_options.custom_gemm = options_.custom_gemm;
  gemm_options.programmatic_launch = programmatic_;
  gemm_options.force_custom_splits = options_.force_custom_gemm_splits;
  gemm_options.refuse_gelu_epilogue_for_testing = options_.testing.refuse_gelu_epilogue;
  gemm_options.refuse_gelu_epilogue_at_run_for_testing =
      options_.testing.refuse_gelu_epilogue_at_run;
  RETURN_IF_ERROR(ToStatus(cuda::Gemm::Create(gemm_options, &gemm_), "creating cuBLASLt"));
  RETURN_IF_ERROR(ToStatus(staging_.Allocate(staging_values), "allocating staging"));

  RETURN_IF_ERROR(Upload(w.word_embeddings, &word_embeddings_));
  RETURN_IF_ERROR(Upload(w.position_embeddings, &position_embeddings_));
  RETURN_IF_ERROR(Upload(w.token_type_embeddings, &type_embeddings_));
  RETURN_IF_ERROR(UploadFloat(w.embedding_norm_gamma, &embedding_gamma_));
  RETURN_IF_ERROR(UploadFloat(w.embedding_norm_beta, &embedding_beta_));
  layers_.resize(w.layers.size());
  for (size_t i = 0; i < w.layers.size(); ++i) {
    const LayerWeights& src = w.layers[i];
    DeviceLayer<T>& dst = layers_[i];
    RETURN_IF_ERROR(Upload(src.qkv_weight, &dst.qkv_weight));
    RETURN_IF_ERROR(Upload(src.qkv_bias, &dst.qkv_bias));
    RETURN_IF_ERROR(Upload(src.attention_output_weight, &dst.attention_output_weight));
    RETURN_IF_ERROR(Upload(src.attention_output_bias, &dst.attention_output_bias));
    RETURN_IF_ERROR(UploadFloat(src.attention_norm_gamma, &dst.attention_norm_gamma));
    RETURN_IF_ERROR(UploadFloat(src.attention_norm_beta, &dst.attention_norm_beta));
    RETURN_IF_ERROR(Upload(src.intermediate_weight, &dst.intermediate_weight));
    RETURN_IF_ERROR(Upload(src.intermediate_bias, &dst.intermediate_bias));
    RETURN_IF_ERROR(Upload(src.output_weight, &dst.output_weight));
    RETURN_IF_ERROR(Upload(src.output_bias, &dst.output_bias));
    RETURN_IF_ERROR(UploadFloat(src.output_norm_gamma, &dst.output_norm_gamma));
    RETURN_IF_ERROR(UploadFloat(src.output_norm_beta, &dst.output_norm_beta));
  }
  if (w.has_pooler) {
    RETURN_IF_ERROR(Upload(w.pooler_weight, &pooler_weight_));
    RETURN_IF_ERROR(Upload(w.pooler_bias, &pooler_bias_));
  }

  RETURN_IF_ERROR(ToStatus(ints_.Allocate(tokens * 4 + 1), "allocating workspace"));
  RETURN_IF_ERROR(ToStatus(host_ints_.Allocate(tokens * 4 + 1), "allocating pinned memory"));
  RETURN_IF_ERROR(ToStatus(hidden_.Allocate(tokens * hidden), "allocating workspace"));
  RETURN_IF_ERROR(ToStatus(qkv_.Allocate(tokens * hidden * 3), "allocating workspace"));
  RETURN_IF_ERROR(ToStatus(context_.Allocate(tokens * hidden), "allocating workspace"));
  RETURN_IF_ERROR(ToStatus(ffn_.Allocate(tokens * inter), "allocating workspace"));
  RETURN_IF_ERROR(ToStatus(pool_in_.Allocate(tokens * hidden), "allocating workspace"));
  RETURN_IF_ERROR(ToStatus(pool_dense_.Allocate(tokens * hidden), "allocating workspace"));
  for (int k = 0; k < num_stages_; ++k) {
    RETURN_IF_ERROR(ToStatus(stage_[k].Allocate(tokens * hidden), "allocating workspace"));
  }
  RETURN_IF_ERROR(ToStatus(host_out_.Allocate(2 * tokens * hidden), "allocating pinned memory"));
  if (layer_norm_gemm_rows_ > 0) {
    RETURN_IF_ERROR(ToStatus(norm_partials_.Allocate(norm_partial_floats), "allocating workspace"));
    RETURN_IF_ERROR(ToStatus(norm_rows_.Allocate(norm_rows * hidden), "allocating workspace"));
    RETURN_IF_ERROR(ToStatus(norm_stats_.Allocate(norm_stats_floats), "allocating workspace"));
    RETURN_IF_ERROR(ToStatus(norm_tile_counters_.Allocate(norm_tiles), "allocating workspace"));
    RETURN_IF_ERROR(ToStatus(norm_row_counters_.Allocate(norm_row_blocks), "allocating workspace"));
    // The kernel leaves its counters at zero; they start there.
    RETURN_IF_ERROR(CudaCall(
        cudaMemsetAsync(norm_tile_counters_.get(), 0, norm_tile_counters_.bytes(), stream_.get()),
        "clearing counters"));
    RETURN_IF_ERROR(CudaCall(
        cudaMemsetAsync(norm_row_counters_.get(), 0, norm_row_counters_.bytes(), stream_.get()),
        "clearing counters"));
  }

  RETURN_IF_ERROR(CudaCall(cudaStreamSynchronize(stream_.get()), "loading weights"));
  staging_.Reset();  // Only needed while loading.
  return absl::OkStatus();
}

template <typename T>
absl::Status CudaEngine<T>::Flush() {
  const absl::Status joined = JoinCopies();
  if (!joined.ok()) {
    // Still wait for both streams, so that no copy is left writing the pinned buffers the
    // next batch reuses.
    cudaStreamSynchronize(copy_stream_.get());
    cudaStreamSynchronize(stream_.get());
    ForgetCopies();  // waited for now, one way or another
    return joined;
  }
  RETURN_IF_ERROR(CudaCall(cudaStreamSynchronize(stream_.get()), "running the encoder"));
  for (const PendingCopy& p : pending_) {
    std::vector<float>* dst = p.slot == kSlotSequence     ? &output_->sequence
                              : p.slot == kSlotPooled     ? &output_->pooled
                              : p.slot == kSlotMeanPooled ? &output_->mean_pooled
                              : p.slot == kSlotCls        ? &output_->cls
                                                          : &output_->layers[p.slot];
    const float* from = host_out_.get() + p.offset;
    dst->assign(from, from + p.count);
  }
  pending_.clear();
  pending_used_ = 0;
  return absl::OkStatus();
}

template <typename T>
absl::Status CudaEngine<T>::AcquireStage(int* index, float** stage) {
  const int k = next_stage_;
  next_stage_ = (k + 1) % num_stages_;
  if (stage_in_flight_[k]) {
    // Cleared only once waited for: after a failed wait (in a capture CUDA invalidated), the
    // clean-up's JoinCopies must still try to join the copy stream back.
    RETURN_IF_ERROR(CudaCall(cudaStreamWaitEvent(stream_.get(), stage_free_[k].get(), 0),
                             "ordering the output copy"));
    stage_in_flight_[k] = false;
  }
  *index = k;
  *stage = stage_[k].get();
  return absl::OkStatus();
}

template <typename T>
absl::Status CudaEngine<T>::CopyToHost(const float* src, int index, size_t count, int slot) {
  if (count == 0) return absl::OkStatus();
  if (pending_used_ + count > host_out_.size()) {
    // RunDevice never captures such a batch; a sync here would break the capture.
    if (capturing_) return absl::InternalError("CUDA engine: output overflow while capturing");
    RETURN_IF_ERROR(Flush());
  }
  float* dst = host_out_.get() + pending_used_;
  if (options_.overlap_copies && index >= 0) {
    cudaStream_t copy = copy_stream_.get();
    RETURN_IF_ERROR(CudaCall(cudaEventRecord(stage_ready_[index].get(), stream_.get()),
                             "ordering the output copy"));
    RETURN_IF_ERROR(CudaCall(cudaStreamWaitEvent(copy, stage_ready_[index].get(), 0),
                             "ordering the output copy"));
    // The copy stream now follows the compute stream (in a capture: it has joined it), so it
    // must be joined back (JoinCopies) even if the copy itself fails. If recording stage_free_
    // fails too, nothing can join it: RunEagerInstead then finds the copy stream still
    // capturing and reports the engine unusable.
    const absl::Status copied =
        CudaCall(cudaMemcpyAsync(dst, src, count * sizeof(float), cudaMemcpyDeviceToHost, copy),
                 "copying outputs");
    RETURN_IF_ERROR(
        CudaCall(cudaEventRecord(stage_free_[index].get(), copy), "ordering the output copy"));
    stage_in_flight_[index] = true;
    RETURN_IF_ERROR(copied);
    if (capturing_ && options_.testing.graph_fault == GraphFault::kAfterFork) {
      return absl::InternalError("CUDA engine: injected fault after the copy stream forked");
    }
    ++path_stats_.copy_stream_copies;
  } else {
    RETURN_IF_ERROR(CudaCall(
        cudaMemcpyAsync(dst, src, count * sizeof(float), cudaMemcpyDeviceToHost, stream_.get()),
        "copying outputs"));
  }
  pending_.push_back(PendingCopy{pending_used_, count, slot});
  pending_used_ += count;
  return absl::OkStatus();
}

template <typename T>
absl::Status CudaEngine<T>::JoinCopies() {
  for (int k = 0; k < num_stages_; ++k) {
    if (!stage_in_flight_[k]) continue;
    RETURN_IF_ERROR(CudaCall(cudaStreamWaitEvent(stream_.get(), stage_free_[k].get(), 0),
                             "joining the output copies"));
    stage_in_flight_[k] = false;  // (as in AcquireStage: only once waited for)
  }
  return absl::OkStatus();
}

template <typename T>
void CudaEngine<T>::ForgetCopies() {
  for (int k = 0; k < num_stages_; ++k) stage_in_flight_[k] = false;
}

template <typename T>
absl::Status CudaEngine<T>::CopyOut(const T* src, size_t count, int slot) {
  if (count == 0) return absl::OkStatus();
  Mark("copy_out");
  if (std::is_same<T, float>::value && !options_.overlap_copies) {
    // In stream order the copy ends before the next layer overwrites `src`: no stage needed.
    return CopyToHost(reinterpret_cast<const float*>(src), -1, count, slot);
  }
  int index = 0;
  float* stage = nullptr;
  RETURN_IF_ERROR(AcquireStage(&index, &stage));
  // The stage decouples the copy from `src`, which the next layer overwrites.
  if (std::is_same<T, float>::value) {
    RETURN_IF_ERROR(CudaCall(
        cudaMemcpyAsync(stage, src, count * sizeof(float), cudaMemcpyDeviceToDevice, stream_.get()),
        "staging outputs"));
  } else {
    RETURN_IF_ERROR(CudaCall(cuda::LaunchConvert<T, float>(src, count, stage, stream_.get()),
                             "converting outputs"));
  }
  return CopyToHost(stage, index, count, slot);
}

template <typename T>
absl::Status CudaEngine<T>::Encode(const EncoderBatch& batch, const OutputSelection& selection,
                                   EncoderOutput* output) {
  if (!broken_.ok()) {
    *output = EncoderOutput();
    return broken_;
  }
  RETURN_IF_ERROR(ValidateBatch(model_->config, batch));
  RETURN_IF_ERROR(ValidateSelection(model_->config, has_pooler(), selection));
  const absl::Status status = EncodeValid(batch, selection, output);
  if (!status.ok() && !absl::IsInvalidArgument(status)) CheckContext();
  return status;
}

template <typename T>
void CudaEngine<T>::CheckContext() {
  if (!broken_.ok()) return;  // already known, with a more specific message
  cudaGetLastError();         // a refused call's error is not sticky: clear it
  cudaError_t err = cudaStreamSynchronize(stream_.get());
  if (err == cudaSuccess) err = cudaStreamSynchronize(copy_stream_.get());
  if (err == cudaSuccess) return;
  broken_ = absl::UnavailableError(
      absl::StrCat("CUDA engine: the GPU context is unusable after ", cudaGetErrorName(err), " (",
                   cudaGetErrorString(err), "); only a new process recovers"));
}

template <typename T>
absl::Status CudaEngine<T>::EncodeValid(const EncoderBatch& batch, const OutputSelection& selection,
                                        EncoderOutput* output) {
  if (batch.total_rows() <= options_.max_batch_tokens)
    return EncodeFitting(batch, selection, output);

  // More rows than the workspace: run consecutive groups of whole sequences that fit, and
  // concatenate their outputs (every output is laid out along rows or sequences).
  *output = EncoderOutput();
  output->layers.resize(selection.layers.size());
  const int n = batch.num_sequences();
  float total_ms = 0.f;
  EncoderBatch part;
  EncoderOutput part_output;
  for (int first = 0; first < n;) {
    int last = first;
    int rows = 0;
    while (last < n && rows + batch.rows(last) <= options_.max_batch_tokens)
      rows += batch.rows(last++);
    if (last == first) {
      *output = EncoderOutput();
      return absl::InvalidArgumentError(absl::StrCat(
          "sequence ", first, " has ", batch.rows(first), " rows, more than this CUDA engine's ",
          "max_batch_tokens ", options_.max_batch_tokens));
    }
    const int row_begin = batch.cu_rows[first];
    const int row_end = batch.cu_rows[last];
    part.word_ids.assign(batch.word_ids.begin() + row_begin, batch.word_ids.begin() + row_end);
    part.type_ids.assign(batch.type_ids.begin() + row_begin, batch.type_ids.begin() + row_end);
    part.num_valid.assign(batch.num_valid.begin() + first, batch.num_valid.begin() + last);
    part.cu_rows.clear();
    for (int s = first; s <= last; ++s) part.cu_rows.push_back(batch.cu_rows[s] - row_begin);
    const absl::Status st = EncodeFitting(part, selection, &part_output);
    if (!st.ok()) {
      *output = EncoderOutput();
      return st;
    }
    total_ms += last_gpu_ms_;
    auto append = [](const std::vector<float>& from, std::vector<float>* to) {
      to->insert(to->end(), from.begin(), from.end());
    };
    append(part_output.sequence, &output->sequence);
    append(part_output.pooled, &output->pooled);
    append(part_output.mean_pooled, &output->mean_pooled);
    append(part_output.cls, &output->cls);
    for (size_t i = 0; i < selection.layers.size(); ++i) {
      append(part_output.layers[i], &output->layers[i]);
    }
    first = last;
  }
  last_gpu_ms_ = total_ms;
  return absl::OkStatus();
}

template <typename T>
absl::Status CudaEngine<T>::EncodeFitting(const EncoderBatch& batch,
                                          const OutputSelection& selection, EncoderOutput* output) {
  *output = EncoderOutput();
  output->layers.resize(selection.layers.size());
  output_ = output;
  pending_.clear();
  pending_used_ = 0;
  const int rows = batch.total_rows();
  const int n = batch.num_sequences();
  // The previous Encode ended with a stream sync, so the pinned staging buffer is free.
  if (rows > 0 && n > 0) StageInputs(batch);
  RETURN_IF_ERROR(CudaCall(cudaEventRecord(start_.get(), stream_.get()), "cudaEventRecord"));
  absl::Status status =
      (rows > 0 && n > 0) ? RunDevice(rows, n, batch.max_rows(), selection) : absl::OkStatus();
  if (status.ok()) {
    status = CudaCall(cudaEventRecord(stop_.get(), stream_.get()), "cudaEventRecord");
  }
  // Flush also surfaces asynchronous faults when nothing was copied out.
  const absl::Status flushed = Flush();
  output_ = nullptr;
  if (!status.ok()) {
    *output = EncoderOutput();
    return status;
  }
  RETURN_IF_ERROR(flushed);
  return CudaCall(cudaEventElapsedTime(&last_gpu_ms_, start_.get(), stop_.get()),
                  "cudaEventElapsedTime");
}

template <typename T>
size_t CudaEngine<T>::OutputValues(int rows, int n, const OutputSelection& selection) const {
  const size_t h = static_cast<size_t>(model_->config.hidden_size);
  const size_t per_row = static_cast<size_t>(rows) * h;
  const size_t per_seq = static_cast<size_t>(n) * h;
  return per_row * (selection.layers.size() + (selection.sequence ? 1 : 0)) +
         per_seq * ((selection.pooled ? 1 : 0) + (selection.mean_pooled ? 1 : 0) +
                    (selection.cls ? 1 : 0));
}

template <typename T>
absl::Status CudaEngine<T>::RunDevice(int rows, int n, int max_rows,
                                      const OutputSelection& selection) {
  if (options_.testing.device_fault == DeviceFault::kTrap) {
    RETURN_IF_ERROR(CudaCall(cuda::LaunchTrapForTesting(stream_.get()), "injecting a fault"));
  }
  if (options_.testing.device_fault == DeviceFault::kRefusedLaunch && !refused_launch_done_) {
    refused_launch_done_ = true;
    RETURN_IF_ERROR(
        CudaCall(cuda::LaunchRefusedForTesting(stream_.get()), "injecting a refused launch"));
  }
  const bool graphable = options_.cuda_graphs && rows <= options_.max_graph_rows &&
                         observer_ == nullptr &&
                         OutputValues(rows, n, selection) <= host_out_.size();
  if (!graphable) {
    ++graph_stats_.eager_runs;
    return EnqueueForward(rows, n, max_rows, selection);
  }
  GraphKey key = {rows,
                  n,
                  max_rows,
                  selection.sequence ? 1 : 0,
                  selection.pooled ? 1 : 0,
                  selection.mean_pooled ? 1 : 0,
                  selection.normalize ? 1 : 0,
                  selection.cls ? 1 : 0};
  key.insert(key.end(), selection.layers.begin(), selection.layers.end());

  const auto cached =
      std::find_if(graphs_.begin(), graphs_.end(), [&key](const auto& g) { return g->key == key; });
  if (cached != graphs_.end()) {
    CachedGraph& g = **cached;
    g.last_use = ++use_clock_;
    pending_ = g.copies;
    pending_used_ = g.copied_values;
    const cudaError_t launched = options_.testing.graph_fault == GraphFault::kReplay
                                     ? cudaErrorLaunchFailure
                                     : cudaGraphLaunch(g.exec.get(), stream_.get());
    if (launched == cudaSuccess) {
      ++graph_stats_.replays;
      return absl::OkStatus();
    }
    // Drops the graph (and with it `g`).
    return RunEagerInstead(std::move(key),
                           absl::StrCat("cudaGraphLaunch: ", cudaGetErrorName(launched)), rows, n,
                           max_rows, selection);
  }
  const bool failed_before =
      std::find(ungraphable_.begin(), ungraphable_.end(), key) != ungraphable_.end();
  auto seen = std::find(seen_once_.begin(), seen_once_.end(), key);
  if (failed_before || seen == seen_once_.end()) {
    // First sight (or a shape that cannot be captured): eager. Remember it, bounded.
    if (!failed_before) {
      if (seen_once_.size() >= 4 * static_cast<size_t>(kMaxCudaGraphs)) {
        seen_once_.erase(seen_once_.begin());
      }
      seen_once_.push_back(key);
    }
    ++graph_stats_.eager_runs;
    return EnqueueForward(rows, n, max_rows, selection);
  }
  seen_once_.erase(seen);
  return CaptureAndLaunch(std::move(key), rows, n, max_rows, selection);
}

template <typename T>
absl::Status CudaEngine<T>::CaptureAndLaunch(GraphKey key, int rows, int n, int max_rows,
                                             const OutputSelection& selection) {
  cudaStream_t stream = stream_.get();
  const cudaError_t began = options_.testing.graph_fault == GraphFault::kBeginCapture
                                ? cudaErrorNotPermitted
                                : cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed);
  if (began != cudaSuccess) {
    return RunEagerInstead(std::move(key),
                           absl::StrCat("cudaStreamBeginCapture: ", cudaGetErrorName(began)), rows,
                           n, max_rows, selection);
  }
  capturing_ = true;
  const absl::Status enqueued = EnqueueForward(rows, n, max_rows, selection);
  capturing_ = false;
  if (options_.testing.graph_fault == GraphFault::kInvalidate) {
    cudaStreamSynchronize(stream);  // not allowed while capturing: invalidates the capture
  }
  // A forward that failed part-way may have left the copy stream forked: join it so that the
  // capture ends cleanly (the events were recorded in this capture).
  if (!enqueued.ok()) JoinCopies().IgnoreError();
  cudaGraph_t graph = nullptr;
  const cudaError_t ended = cudaStreamEndCapture(stream, &graph);
  cudaGraphExec_t exec = nullptr;
  cudaError_t instantiated = cudaErrorUnknown;
  if (enqueued.ok() && ended == cudaSuccess && graph != nullptr) {
    instantiated = cudaGraphInstantiate(&exec, graph, 0);
  }
  if (graph != nullptr) cudaGraphDestroy(graph);
  if (!enqueued.ok() || ended != cudaSuccess || instantiated != cudaSuccess) {
    // Capture failures are not sticky.
    ForgetCopies();
    if (exec != nullptr) cudaGraphExecDestroy(exec);
    return RunEagerInstead(
        std::move(key),
        !enqueued.ok() ? std::string(enqueued.message())
        : ended != cudaSuccess
            ? absl::StrCat("cudaStreamEndCapture: ", cudaGetErrorName(ended))
            : absl::StrCat("cudaGraphInstantiate: ", cudaGetErrorName(instantiated)),
        rows, n, max_rows, selection);
  }
  if (graphs_.size() >= static_cast<size_t>(kMaxCudaGraphs)) {
    auto oldest =
        std::min_element(graphs_.begin(), graphs_.end(),
                         [](const auto& a, const auto& b) { return a->last_use < b->last_use; });
    graphs_.erase(oldest);  // Safe: the previous Encode synchronised the stream.
    ++graph_stats_.evictions;
  }
  auto cached = std::make_unique<CachedGraph>();
  cached->key = std::move(key);
  cached->exec.Adopt(exec);
  cached->copies = pending_;
  cached->copied_values = pending_used_;
  cached->last_use = ++use_clock_;
  const cudaGraphExec_t to_launch = cached->exec.get();
  graphs_.push_back(std::move(cached));
  ++graph_stats_.captures;
  const cudaError_t launched = options_.testing.graph_fault == GraphFault::kFirstLaunch
                                   ? cudaErrorLaunchFailure
                                   : cudaGraphLaunch(to_launch, stream);
  if (launched != cudaSuccess) {
    GraphKey failed = graphs_.back()->key;  // a copy: the graph is dropped by its key
    return RunEagerInstead(std::move(failed),
                           absl::StrCat("cudaGraphLaunch: ", cudaGetErrorName(launched)), rows, n,
                           max_rows, selection);
  }
  return absl::OkStatus();
}

template <typename T>
std::vector<EngineFallback> CudaEngine<T>::Fallbacks() const {
  const cuda::GemmStats gemm = gemm_stats();
  std::vector<EngineFallback> fallbacks = {
      // Batch shapes that run eagerly for good (their graph failed).
      {"cuda_graph", "--cuda_graphs=false", graph_stats_.capture_failures,
       graph_stats_.last_capture_error},
      // Tunings that timed no candidate (the shape keeps cuBLASLt's first choice).
      {"gemm_autotune", "--gemm_autotune=false", gemm.tuning_fallbacks},
      // 1 once cuBLASLt refused the GELU epilogue (the separate pass runs from then on).
      {"gelu_epilogue", "--fused_gelu=false", path_stats_.gelu_epilogue_refused},
  };
  if (options_.custom_gemm) {
    // Our split-K kernel's candidates dropped for disagreeing with cuBLASLt.
    fallbacks.push_back({"custom_gemm", "--custom_gemm=false", gemm.custom_mismatches});
  }
  return fallbacks;
}

template <typename T>
absl::Status CudaEngine<T>::RunEagerInstead(GraphKey key, std::string why, int rows, int n,
                                            int max_rows, const OutputSelection& selection) {
  cudaGetLastError();
  // A copy stream still capturing (a failed capture whose fork was never joined back: CUDA
  // does not say what becomes of it) would fail every later copy.
  cudaStreamCaptureStatus copy_capture = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(copy_stream_.get(), &copy_capture) != cudaSuccess ||
      copy_capture != cudaStreamCaptureStatusNone) {
    cudaGetLastError();
    broken_ = absl::UnavailableError(
        absl::StrCat("CUDA engine: the output copy stream was left in a failed graph capture (",
                     why, "); only a new process recovers (--cuda_graphs=false avoids graphs)"));
    return broken_;
  }
  ++graph_stats_.capture_failures;
  graph_stats_.last_capture_error = std::move(why);
  graphs_.erase(std::remove_if(graphs_.begin(), graphs_.end(),
                               [&key](const auto& g) { return g->key == key; }),
                graphs_.end());
  if (ungraphable_.size() >= 4 * static_cast<size_t>(kMaxCudaGraphs)) {
    ungraphable_.erase(ungraphable_.begin());
  }
  ungraphable_.push_back(std::move(key));
  pending_.clear();
  pending_used_ = 0;
  ++graph_stats_.eager_runs;
  return EnqueueForward(rows, n, max_rows, selection);
}

template <typename T>
void CudaEngine<T>::StageInputs(const EncoderBatch& batch) {
  // One packed buffer: word ids | type ids | cu_rows | num_valid.
  const int rows = batch.total_rows();
  const int n = batch.num_sequences();
  int32_t* host = host_ints_.get();
  std::copy(batch.word_ids.begin(), batch.word_ids.end(), host);
  std::copy(batch.type_ids.begin(), batch.type_ids.end(), host + rows);
  std::copy(batch.cu_rows.begin(), batch.cu_rows.end(), host + 2 * rows);
  std::copy(batch.num_valid.begin(), batch.num_valid.end(), host + 2 * rows + n + 1);
}

template <typename T>
absl::Status CudaEngine<T>::EnqueueForward(int rows, int n, int max_rows,
                                           const OutputSelection& selection) {
  const ModelConfig& c = model_->config;
  const int h = c.hidden_size;
  const int inter = c.intermediate_size;
  const size_t hidden_values = static_cast<size_t>(rows) * h;
  cudaStream_t stream = stream_.get();

  Mark("upload");
  const size_t num_ints = 2 * static_cast<size_t>(rows) + 2 * static_cast<size_t>(n) + 1;
  RETURN_IF_ERROR(
      CudaCall(cudaMemcpyAsync(ints_.get(), host_ints_.get(), num_ints * sizeof(int32_t),
                               cudaMemcpyHostToDevice, stream),
               "uploading the batch"));
  const int32_t* d_word = ints_.get();
  const int32_t* d_type = d_word + rows;
  const int32_t* d_cu = d_word + 2 * rows;
  const int32_t* d_valid = d_cu + n + 1;

  Mark("embedding");
  RETURN_IF_ERROR(CudaCall(
      cuda::LaunchEmbeddingLayerNorm<T>(d_word, d_type, d_cu, n, rows, word_embeddings_.get(),
                                        position_embeddings_.get(), type_embeddings_.get(),
                                        embedding_gamma_.get(), embedding_beta_.get(), h,
                                        c.layer_norm_eps, hidden_.get(), stream),
      "embeddings"));

  size_t next_layer_output = 0;
  for (int l = 0; l < c.num_layers; ++l) {
    const DeviceLayer<T>& L = layers_[l];
    Mark("qkv_gemm");
    RETURN_IF_ERROR(
        ToStatus(gemm_->Run<T>(hidden_.get(), rows, h, L.qkv_weight.get(), L.qkv_bias.get(), 3 * h,
                               cuda::GemmEpilogue::kBias, qkv_.get(), stream),
                 "QKV GEMM"));
    Mark("attention");
    cuda::AttentionOptions attention;
    attention.tile = static_cast<cuda::AttentionTile>(options_.attention_tile);  // validated
    attention.double_buffer_kv = options_.attention_double_buffer;
    attention.programmatic = programmatic_;
    const cuda::AttentionLaunch launched =
        cuda::LaunchVarlenAttention<T>(qkv_.get(), d_cu, d_valid, n, max_rows, c.num_heads,
                                       c.head_dim(), context_.get(), stream, attention);
    RETURN_IF_ERROR(CudaCall(cudaGetLastError(), "attention"));
    if (launched.double_buffered_kv) ++path_stats_.double_buffered_attention;
    // 16, 32 or 64 rows: counters 0, 1, 2 (0 rows: fp32, no tile).
    if (launched.tile_rows > 0) ++path_stats_.attention_tiles[launched.tile_rows / 32];
    // The QKV buffer is free after attention: it takes the projections' outputs.
    T* projected = qkv_.get();
    Mark("attn_out_gemm");
    RETURN_IF_ERROR(ProjectAddNorm(context_.get(), h, L.attention_output_weight.get(),
                                   L.attention_output_bias.get(), rows, projected, "attn_layernorm",
                                   L.attention_norm_gamma.get(), L.attention_norm_beta.get(),
                                   "attention output"));
    Mark("ffn_up_gemm");
    if (GeluInEpilogue()) {
      const cuda::CudaStatus fused = gemm_->Run<T>(
          hidden_.get(), rows, h, L.intermediate_weight.get(), L.intermediate_bias.get(), inter,
          cuda::GemmEpilogue::kBiasGeluTanh, ffn_.get(), stream);
      if (fused.unsupported()) {
        // A refusal enqueues nothing: do this GEMM, and every later one, the other way.
        path_stats_.gelu_epilogue_refused = 1;
      } else {
        RETURN_IF_ERROR(ToStatus(fused, "FFN-up GEMM"));
      }
    }
    if (!GeluInEpilogue()) {
      // Exact GELU: a bias-free GEMM, then bias + GELU as one pass.
      RETURN_IF_ERROR(
          ToStatus(gemm_->Run<T>(hidden_.get(), rows, h, L.intermediate_weight.get(), nullptr,
                                 inter, cuda::GemmEpilogue::kNone, ffn_.get(), stream),
                   "FFN-up GEMM"));
      const cuda::GeluKind kind =
          c.activation == Activation::kGeluTanh ? cuda::GeluKind::kTanh : cuda::GeluKind::kErf;
      Mark("gelu");
      RETURN_IF_ERROR(CudaCall(
          cuda::LaunchBiasGelu<T>(ffn_.get(), L.intermediate_bias.get(), rows, inter, kind, stream),
          "GELU"));
    }
    Mark("ffn_down_gemm");
    RETURN_IF_ERROR(ProjectAddNorm(ffn_.get(), inter, L.output_weight.get(), L.output_bias.get(),
                                   rows, projected, "ffn_layernorm", L.output_norm_gamma.get(),
                                   L.output_norm_beta.get(), "FFN output"));
    if (next_layer_output < selection.layers.size() && selection.layers[next_layer_output] == l) {
      RETURN_IF_ERROR(CopyOut(hidden_.get(), hidden_values, static_cast<int>(next_layer_output)));
      ++next_layer_output;
    }
  }

  if (selection.sequence) RETURN_IF_ERROR(CopyOut(hidden_.get(), hidden_values, kSlotSequence));
  // A [n, hidden] fp32 head: `fill` writes it into a stage, then the optional L2
  // normalisation and the copy out.
  auto head_to_host = [&](auto fill, const char* what, int slot) -> absl::Status {
    int index = 0;
    float* stage = nullptr;
    RETURN_IF_ERROR(AcquireStage(&index, &stage));
    RETURN_IF_ERROR(CudaCall(fill(stage), what));
    if (selection.normalize) {
      RETURN_IF_ERROR(CudaCall(cuda::LaunchL2Normalize(stage, n, h, stream), "normalising"));
    }
    Mark("copy_out");
    return CopyToHost(stage, index, static_cast<size_t>(n) * h, slot);
  };
  if (selection.pooled) {
    Mark("pooler");
    RETURN_IF_ERROR(
        CudaCall(cuda::LaunchGatherFirstRows<T>(hidden_.get(), d_cu, n, h, pool_in_.get(), stream),
                 "pooler gather"));
    RETURN_IF_ERROR(ToStatus(gemm_->Run<T>(pool_in_.get(), n, h, pooler_weight_.get(), nullptr, h,
                                           cuda::GemmEpilogue::kNone, pool_dense_.get(), stream),
                             "pooler GEMM"));
    RETURN_IF_ERROR(head_to_host(
        [&](float* stage) {
          return cuda::LaunchBiasTanhToFloat<T>(pool_dense_.get(), pooler_bias_.get(), n, h, stage,
                                                stream);
        },
        "pooler tanh", kSlotPooled));
  }
  if (selection.mean_pooled) {
    Mark("mean_pool");
    RETURN_IF_ERROR(head_to_host(
        [&](float* stage) {
          return cuda::LaunchMeanPool<T>(hidden_.get(), d_cu, d_valid, n, h, stage, stream);
        },
        "mean pooling", kSlotMeanPooled));
  }
  if (selection.cls) {
    Mark("cls");
    // The pooler's gather left the [CLS] rows in pool_in_ (its GEMM only reads them).
    if (!selection.pooled) {
      RETURN_IF_ERROR(CudaCall(
          cuda::LaunchGatherFirstRows<T>(hidden_.get(), d_cu, n, h, pool_in_.get(), stream),
          "cls gather"));
    }
    RETURN_IF_ERROR(head_to_host(
        [&](float* stage) {
          return cuda::LaunchConvert<T, float>(pool_in_.get(), static_cast<size_t>(n) * h, stage,
                                               stream);
        },
        "cls conversion", kSlotCls));
  }
  // The copy stream joins back here: the batch's stop event, and a captured graph, end after
  // the last copy.
  RETURN_IF_ERROR(JoinCopies());
  Mark("end");
  return absl::OkStatus();
}

}  // namespace

int CudaDeviceCount() {
  int count = 0;
  if (!cuda::CountDevices(&count).ok()) return 0;
  return count;
}

absl::StatusOr<std::unique_ptr<Engine>> CreateCudaEngine(std::shared_ptr<const Model> model,
                                                         const CudaEngineOptions& options) {
  if (model == nullptr) return absl::InvalidArgumentError("CUDA engine: no model");
  RETURN_IF_ERROR(ValidateCudaEngineOptions(options));
  int count = 0;
  const CudaStatus devices = cuda::CountDevices(&count);
  if (!devices.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "CUDA backend unavailable: ", devices.message(), "; use the CPU backend (--backend=cpu)"));
  }
  switch (options.dtype) {
    case DType::kFloat32:
      return CudaEngine<float>::Create(std::move(model), options);
    case DType::kFloat16:
      return CudaEngine<__half>::Create(std::move(model), options);
    case DType::kBFloat16:
      return CudaEngine<__nv_bfloat16>::Create(std::move(model), options);
  }
  return absl::InvalidArgumentError("CUDA engine: unknown dtype");
}

}  // namespace bert
