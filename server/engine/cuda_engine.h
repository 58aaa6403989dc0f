// The CUDA backend of bert::Engine: the BERT encoder on one GPU with our kernels
// (kernels/cuda) and cuBLASLt GEMMs, in fp32, fp16 or bf16.
//
// At creation the weights are converted to the dtype and uploaded once (LayerNorm
// parameters stay fp32), and every device and pinned host buffer is sized once from
// `max_batch_tokens`: Encode allocates no device memory. A batch with more rows than the budget
// runs as consecutive groups of whole sequences (outputs concatenated); a single sequence
// longer than the budget is INVALID_ARGUMENT. One compute stream; per batch one packed copy of
// ids/types/cu_rows/num_valid, then embeddings + LayerNorm, the encoder blocks, and the
// requested outputs copied back as fp32 (on a second stream, overlapping later layers, with
// overlap_copies).
//
// CUDA graphs (CudaEngineOptions::cuda_graphs, default on): every device and pinned pointer
// a batch uses is fixed at creation, and the launches depend only on the shape key (total
// rows, sequences, longest sequence's rows, the OutputSelection). The first Encode of a key runs
// eagerly; the second captures the whole device side (the ids upload from the pinned staging
// buffer, embeddings, every block, heads, conversions and output copies into the pinned output
// buffer) into a graph and launches it; later ones replay it (LRU cache of kMaxCudaGraphs). Within
// one engine, outputs are bit-identical with and without graphs (same kernels, same arguments; two
// engines with gemm_autotune may time their way to different cuBLASLt algorithms). A batch with
// more than max_graph_rows rows, one whose outputs overflow the pinned output buffer, or an engine
// with an op observer set runs eagerly.
//
// fp32 is exact IEEE fp32 (no TF32) unless allow_tf32; fp16/bf16 accumulate in fp32 (see
// fused_gelu for their GELU).
//
// Failures: a graph that cannot be captured, instantiated or launched makes its batch run
// eagerly, and its key is never graphed again (CudaGraphStats::capture_failures). A GELU
// epilogue cuBLASLt refuses switches the engine to the separate GELU pass for good (graphs
// captured before keep the epilogue, so bit-identity with and without graphs then holds per
// key). After a failed batch the engine checks whether the fault left the CUDA context
// unusable (a sticky error: illegal address, trapped kernel, ECC); if so Health() reports it
// and every later Encode fails at once with UNAVAILABLE.
// Not thread-safe (Engine's contract: one Encode at a time). The engine uses the current
// CUDA device (device 0 unless the caller set another).
#ifndef BERT_SERVER_ENGINE_CUDA_ENGINE_H_
#define BERT_SERVER_ENGINE_CUDA_ENGINE_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kernels/cuda/gemm_stats.h"
#include "server/engine/engine.h"
#include "server/engine/model.h"

namespace bert {

// How a CUDA engine runs. Defaults are the serving defaults.
struct CudaEngineOptions {
  DType dtype = DType::kFloat16;
  // Rows (tokens, padding included) one device pass holds; sizes every buffer at creation.
  int max_batch_tokens = 16384;
  // float32 only: TF32 tensor-core GEMMs instead of exact IEEE fp32.
  bool allow_tf32 = false;
  // Capture and replay CUDA graphs for batch shapes seen before (see above) ...
  bool cuda_graphs = true;
  // ... for batches of at most this many rows. Larger batches keep the GPU busy without
  // graphs: on an H200 graphs gained nothing at 16,384 rows and were 4 % slower on a packed
  // 9,172-row batch, while they cut 0.1 ms at 128-4,096 rows (bench/NOTES.md, run 3).
  int max_graph_rows = 4096;
  // float16/bfloat16 models with erf GELU ("gelu"): run the FFN's bias + GELU inside the
  // FFN-up GEMM as cuBLASLt's GELU epilogue, which is the tanh form. Per value it differs from
  // erf GELU by at most 4.7e-4 (at x = 2.7, where an fp16 ulp is 2e-3: under a quarter ulp of
  // the fp16 activation it produces), and it saves a pass over [tokens, intermediate] per
  // layer. Models with tanh GELU ("gelu_new") use the epilogue too. false: a separate bias +
  // GELU pass in the model's own form (erf or tanh). float32 always runs the separate pass.
  // Should cuBLASLt have no algorithm for the epilogue at some shape, the engine runs the
  // separate pass from then on (CudaPathStats::gelu_epilogue_refused).
  bool fused_gelu = true;
  // Time cuBLASLt's candidate algorithms per GEMM shape on first use and keep the fastest
  // (kernels/cuda/gemm.h); false: cuBLASLt's heuristic choice.
  bool gemm_autotune = true;
  // With gemm_autotune, float16/bfloat16: also time our split-K GEMM kernel
  // (kernels/cuda/split_k_gemm.h) for batches of at most 256 rows, where cuBLASLt's tiles
  // leave most SMs idle; it is used only where it is faster and its output agreed with
  // cuBLASLt's. Off until the benchmark shows it pays (bench/NOTES.md).
  bool custom_gemm = false;
  // Tests and benchmarks only: our split-K GEMM for every GEMM it supports (float16/bfloat16,
  // at most 256 rows) with this many splits, without timing or comparison (GemmOptions::
  // force_custom_splits); 0: off.
  int force_custom_gemm_splits = 0;
  // Launch our kernels (attention, LayerNorm, our split-K GEMM) as programmatic dependent
  // launches (kernels/cuda/launch.cuh), so that each is scheduled while the kernel before it
  // finishes: aimed at batch 1, where ~90 small kernels run back to back. Ignored on GPUs
  // before compute capability 9.0 (Hopper). Same kernels and math: outputs are bit-identical.
  // Off until the benchmark shows it pays (bench/NOTES.md).
  bool programmatic_launch = false;
  // float16/bfloat16 attention with two K/V buffers, so that copying the next 64 keys
  // overlaps the math on the current ones (cuda::AttentionOptions::double_buffer_kv); same
  // results bit for bit. Off until the benchmark shows it pays (bench/NOTES.md).
  bool attention_double_buffer = false;
  // Add each block's bias and residual in the epilogue of the GEMM before its LayerNorm
  // (cuBLASLt C = residual, beta = 1), so that the LayerNorm reads one [tokens, hidden]
  // tensor instead of two. In fp16/bf16 the sum is then rounded once before the LayerNorm
  // (as PyTorch's fp16 BERT does) instead of being formed in fp32 inside it. Off until the
  // benchmark shows it pays (bench/NOTES.md).
  bool residual_in_gemm = false;
  // Copy outputs back on a second stream, so that copying one layer's output overlaps the
  // next layers' compute (encoder_outputs); false: every copy on the compute stream.
  bool overlap_copies = true;
  // float16/bfloat16 attention: the query-tile height, 16, 32 or 64 rows; 0: chosen per batch
  // from the grid size (cuda::AttentionTile::kAuto: a shorter tile where the 64-row grid would
  // leave SMs idle, i.e. small batches). Same results bit for bit. 64 is the tile every batch
  // had before the rule, in the GPU runs bench/NOTES.md records.
  int attention_tile = 0;
  // Batches of at most this many rows run the LayerNorm variant that loads gamma/beta before
  // the row's reductions (cuda::kDefaultLayerNormHoistMaxRows, kernels/cuda/layer_norm.h,
  // says why); 0: never. Same results bit for bit.
  int layer_norm_hoist_max_rows = 2048;
  // float16/bfloat16: batches of at most this many rows run each block's closing projection
  // (attention output, FFN down) as our split-K GEMM with bias, residual and the LayerNorm in
  // the same launch (cuda::SplitKEpilogue::kBiasResidualLayerNorm), with as many splits as fill
  // the GPU: one kernel instead of two per projection, 24 fewer launches per BERT-base forward,
  // aimed at batch 1. The sum before the LayerNorm stays in fp32. 0: off (the default, until
  // the benchmark shows it pays: bench/NOTES.md). Models whose shape the kernel does not take
  // (hidden not a multiple of 64 or over 1,024, intermediate not a multiple of 32) keep the two
  // kernels, and so does float32 (CudaPathStats::layer_norm_gemms counts the fused ones).
  int layer_norm_in_gemm_max_rows = 0;
  // Tests only (no flag sets these; all off in production): faults injected to exercise the
  // engine's fallbacks.
  struct Testing {
    // Make CUDA graphs fail at this step. kBeginCapture, kFirstLaunch (the launch right after
    // a capture) and kReplay (the launch of a cached graph) act as if CUDA refused the call
    // (it is not made); kAfterFork returns an error from the forward being captured right
    // after its first output copy has forked the copy stream (overlap_copies); kInvalidate
    // makes an illegal call (a stream synchronisation) inside the capture, so that CUDA
    // itself invalidates it.
    enum class GraphFault { kNone, kBeginCapture, kAfterFork, kInvalidate, kFirstLaunch, kReplay };
    GraphFault graph_fault = GraphFault::kNone;
    // kRefusedLaunch: the first Encode's first launch is refused (an empty grid: an error
    // that is not sticky), once. kTrap: every Encode first launches a kernel that traps,
    // which leaves the GPU context unusable for good (what Engine::Health reports); use it
    // in a process of its own.
    enum class DeviceFault { kNone, kRefusedLaunch, kTrap };
    DeviceFault device_fault = DeviceFault::kNone;
    // Act as if cuBLASLt had no algorithm for the GELU epilogue (GemmOptions::
    // refuse_gelu_epilogue_for_testing: the refusal goes through Gemm::Run as a real one does).
    bool refuse_gelu_epilogue = false;
    // Act as if cublasLtMatmul refused the GELU epilogue when run (GemmOptions::
    // refuse_gelu_epilogue_at_run_for_testing), after the heuristic offered algorithms for it.
    bool refuse_gelu_epilogue_at_run = false;
  };
  Testing testing;
};

// The options above that bert_server exposes as flags (all but dtype, max_batch_tokens,
// allow_tf32, force_custom_gemm_splits and testing): speed and memory tuning, though fused_gelu,
// residual_in_gemm and custom_gemm also change roundings. Each goes by the name of the
// bert_server flag that sets it; gpu_bench takes the same names, and the server reads its
// flags and logs the options through this table, so an entry without its flag stops the
// server at startup. (A new tuning flag in server/main.cc must be added here to be read.)
struct CudaTuningSwitch {
  const char* flag;                         // e.g. "cuda_pdl"
  bool CudaEngineOptions::*on = nullptr;    // a switch, or ...
  int CudaEngineOptions::*value = nullptr;  // ... a number (exactly one is set)
};
const std::vector<CudaTuningSwitch>& CudaTuningSwitches();

// Each switch of `options` as (flag, value), in the table's order; values as flags spell
// them ("true"/"false", decimal). `only_changed`: just those that differ from
// CudaEngineOptions()'s.
std::vector<std::pair<std::string, std::string>> CudaTuningValues(const CudaEngineOptions& options,
                                                                  bool only_changed = false);

// Sets the switch named `flag` from `value` ("true"/"false"/"1"/"0"; a number: decimal).
// INVALID_ARGUMENT naming the flag for a value that does not parse, NOT_FOUND for a name
// that is not a switch.
absl::Status SetCudaTuning(absl::string_view flag, absl::string_view value,
                           CudaEngineOptions* options);

// INVALID_ARGUMENT, naming the option, for a value out of its range: max_batch_tokens < 1,
// max_graph_rows < 0, attention_tile not 0/16/32/64, layer_norm_hoist_max_rows < 0,
// layer_norm_in_gemm_max_rows < 0. Needs
// no GPU (CreateCudaEngine checks it first).
absl::Status ValidateCudaEngineOptions(const CudaEngineOptions& options);

// Errors: INVALID_ARGUMENT for options ValidateCudaEngineOptions refuses; FAILED_PRECONDITION
// when no usable GPU is present (no driver/device) or the model shape is unsupported
// (head_dim not 32/64/128, hidden > 1024); RESOURCE_EXHAUSTED when the weights plus workspace
// do not fit in free device memory or an allocation fails; INTERNAL for other CUDA/cuBLAS
// faults.
absl::StatusOr<std::unique_ptr<Engine>> CreateCudaEngine(std::shared_ptr<const Model> model,
                                                         const CudaEngineOptions& options);

// The most graphs one engine keeps (least recently used is dropped first).
inline constexpr int kMaxCudaGraphs = 32;

// Profiling hook (benchmarks only): when set on an engine, OnOp(name, stream) is called on the
// Encode thread right BEFORE each op of the forward is enqueued, and once more with name "end"
// after the last one; `stream` is the engine's cudaStream_t (as void*, so this header stays
// CUDA-free). Recording a CUDA event there times each op. Names: "upload", "embedding",
// "qkv_gemm", "attention", "attn_out_gemm", "attn_layernorm", "ffn_up_gemm", "gelu",
// "ffn_down_gemm", "ffn_layernorm", "copy_out", "pooler", "mean_pool", "cls"; "copy_out" comes once
// per output copied back (before a layer's fp32 staging or conversion; after a head's); with
// layer_norm_in_gemm_max_rows, a projection's LayerNorm runs inside "attn_out_gemm" /
// "ffn_down_gemm" and has no op of its own. Null by
// default (the hot path pays one pointer test per op); CUDA graphs are bypassed while one is set.
class CudaOpObserver {
 public:
  virtual ~CudaOpObserver() = default;
  virtual void OnOp(const char* name, void* stream) = 0;
};

// Counters of the CUDA-graph cache (for tests and benchmarks).
struct CudaGraphStats {
  long long eager_runs = 0;  // Encodes (or split groups) launched kernel by kernel
  long long captures = 0;    // graphs captured and instantiated
  long long replays = 0;     // launches of an already cached graph
  long long evictions = 0;   // graphs dropped by the LRU
  int cached = 0;            // graphs held now
  // Graphs that could not be captured, instantiated or launched (or replayed): those keys
  // then run eagerly, that batch included.
  long long capture_failures = 0;
  std::string last_capture_error;  // why the last one failed (empty if none did)
};

// Counters of the paths options select (for tests and benchmarks: an option dropped on
// its way to the kernels leaves its counter at 0). Counted on the host when a forward is enqueued:
// an eager forward counts, and so does a graph capture (also one that then fails and runs
// eagerly), but replays of a captured graph do not, so these count enqueues, not GPU runs.
struct CudaPathStats {
  // residual_in_gemm: GEMMs enqueued with bias + residual in their epilogue.
  long long residual_gemms = 0;
  // attention_double_buffer: attention launches (one per layer) of the double-buffered K/V
  // kernel (the launcher's choice: fp16/bf16 batches whose longest sequence spans more than
  // one 64-key tile).
  long long double_buffered_attention = 0;
  // overlap_copies: output copies issued on the second (copy) stream.
  long long copy_stream_copies = 0;
  // attention_tile: fp16/bf16 attention launches by query-tile height, [0] 16 rows, [1] 32,
  // [2] 64 (fp32 counts none).
  long long attention_tiles[3] = {0, 0, 0};
  // fused_gelu: 1 once cuBLASLt refused the GELU epilogue and the engine switched to the
  // separate bias + GELU pass for good.
  int gelu_epilogue_refused = 0;
  // layer_norm_in_gemm_max_rows: projections enqueued as our GEMM with the LayerNorm inside.
  long long layer_norm_gemms = 0;
};

// Engines made by CreateCudaEngine also implement this (dynamic_cast from Engine): the GPU
// time of the last Encode, measured with CUDA events on the engine's stream from before the
// batch upload to after the last output copy is enqueued (it includes a host wait only when
// the outputs overflow the pinned buffer, e.g. many intermediate layers). For benchmarks.
class CudaEngineTiming {
 public:
  virtual ~CudaEngineTiming() = default;
  virtual float last_gpu_milliseconds() const = 0;
  // Not owned; must outlive its use; null (the default) turns profiling off.
  virtual void set_op_observer(CudaOpObserver* observer) = 0;
  virtual CudaGraphStats graph_stats() const = 0;
  // The engine's GEMM choices (see kernels/cuda/gemm.h); all zero before the first plan.
  virtual cuda::GemmStats gemm_stats() const = 0;
  virtual CudaPathStats path_stats() const = 0;
  // Whether kernels are launched programmatically: programmatic_launch where supported.
  virtual bool programmatic_launch() const = 0;
};

// The number of CUDA devices usable by this process (0 when there is no driver or GPU).
int CudaDeviceCount();

}  // namespace bert

#endif  // BERT_SERVER_ENGINE_CUDA_ENGINE_H_
