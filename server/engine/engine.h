// The encoder engine interface that every backend (CPU, CUDA) implements.
//
// Input is a ragged batch: the rows of many sequences packed back to back without
// padding, with prefix sums of rows per sequence. Each sequence has `num_valid` real
// tokens (the attention keys); rows past them are TF-Hub padding rows (word id 0, type 0,
// positions continuing) that are computed as queries only, so that PAD_TO_SEQ_LENGTH
// outputs equal TF Hub's. A sequence without padding rows costs no padding work.
//
// Output is float32 on the host, laid out along the batch's rows.
#ifndef BERT_SERVER_ENGINE_ENGINE_H_
#define BERT_SERVER_ENGINE_ENGINE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "server/engine/model.h"

namespace bert {

enum class DType { kFloat32, kFloat16, kBFloat16 };

const char* DTypeName(DType dtype);

struct EncoderBatch {
  std::vector<int32_t> word_ids;   // [total_rows]
  std::vector<int32_t> type_ids;   // [total_rows]
  std::vector<int32_t> cu_rows;    // [num_sequences + 1], cu_rows[0] = 0
  std::vector<int32_t> num_valid;  // [num_sequences], 1 <= num_valid[i] <= rows of i

  int num_sequences() const { return static_cast<int>(num_valid.size()); }
  int total_rows() const { return cu_rows.empty() ? 0 : cu_rows.back(); }
  int rows(int i) const { return cu_rows[i + 1] - cu_rows[i]; }
  int max_rows() const;

  // Appends one sequence: `word_ids` and `type_ids` (same length; empty `type_ids` means
  // all 0) followed by padding rows up to `padded_rows` (0 or <= size: none).
  void Add(absl::Span<const int32_t> word_ids, absl::Span<const int32_t> type_ids,
           int padded_rows = 0);
  void Clear();
};

// What a batch must produce. The engine computes only what is selected.
struct OutputSelection {
  bool pooled = false;       // tanh(dense(last layer's first row)); needs a pooler.
  bool mean_pooled = false;  // Mean of the last layer over each sequence's valid rows.
  bool cls = false;          // The last layer's first row of each sequence, as it is.
  bool sequence = false;     // The last layer, every row.
  std::vector<int> layers;   // Encoder layers (0-based, sorted, unique) to return.
  bool normalize = false;    // L2-normalise pooled, mean_pooled and cls.
};

struct EncoderOutput {
  std::vector<float> sequence;             // [total_rows, hidden] if selected
  std::vector<std::vector<float>> layers;  // parallel to OutputSelection::layers
  std::vector<float> pooled;               // [num_sequences, hidden] if selected
  std::vector<float> mean_pooled;          // [num_sequences, hidden] if selected
  std::vector<float> cls;                  // [num_sequences, hidden] if selected
};

// A path an engine takes (by default, or because a flag asked for it) and leaves for an
// equivalent one where the device refuses it or it fails a check (on the CUDA engine: a CUDA
// graph, an autotuned GEMM, the fused GELU epilogue, our split-K GEMM). The answers stay right;
// usually the other path is slower. What one count means is the engine's to say (a batch
// shape, a tuning, a switch made once); `avoid` names the server flag that turns the path off.
struct EngineFallback {
  std::string path;    // a metric label, e.g. "cuda_graph"
  std::string avoid;   // e.g. "--cuda_graphs=false"
  int64_t count = 0;   // since the engine was made; never decreases
  std::string detail;  // what the engine knows of the last one (e.g. CUDA's error); may be empty
};

struct EngineInfo {
  std::string backend;  // "cpu" or "cuda"
  std::string device;   // CPU model name or GPU name
  DType dtype = DType::kFloat32;
};

// Not thread-safe: one Encode at a time (the server's engine thread owns it).
class Engine {
 public:
  virtual ~Engine() = default;

  virtual const ModelConfig& config() const = 0;
  virtual bool has_pooler() const = 0;
  virtual EngineInfo info() const = 0;

  // Checks the batch (ids within the vocab and type vocab, positions within
  // max_position_embeddings, consistent lengths) and the selection (layers in range,
  // pooled only with a pooler), then runs it. INVALID_ARGUMENT for a bad batch or
  // selection; INTERNAL / RESOURCE_EXHAUSTED for device faults; once Health() is not OK,
  // that error (UNAVAILABLE) at once, without checking.
  virtual absl::Status Encode(const EncoderBatch& batch, const OutputSelection& selection,
                              EncoderOutput* output) = 0;

  // OK while the engine can run batches. After a device fault that leaves it unusable for
  // good (a GPU context lost to an illegal address or an uncorrectable ECC error: every
  // later CUDA call fails), the error, from then on; Encode then fails at once with
  // UNAVAILABLE. Only a new process recovers, so a server should stop serving and exit.
  // Called like Encode (the thread that runs Encode, between Encodes).
  virtual absl::Status Health() const { return absl::OkStatus(); }

  // Every path the engine can fall back from, with its count so far (zero counts included, in
  // the same order each time); empty for an engine without such paths. Called like Encode.
  virtual std::vector<EngineFallback> Fallbacks() const { return {}; }

  // Whether the engine reads the model's Linear weight matrices after its creation. An engine
  // that keeps its own copies (the CPU engine's packed weights) says no, and the model's owner
  // may then free them (ReleaseLinearWeights).
  virtual bool ReadsLinearWeights() const { return true; }
};

// Validation shared by all backends.
absl::Status ValidateBatch(const ModelConfig& config, const EncoderBatch& batch);
absl::Status ValidateSelection(const ModelConfig& config, bool has_pooler,
                               const OutputSelection& selection);

}  // namespace bert

#endif  // BERT_SERVER_ENGINE_ENGINE_H_
