// A test double of Engine: deterministic outputs computable from the inputs, optional
// per-batch latency, and a record of every batch it ran. Thread-safe accessors; Encode
// follows Engine's one-caller rule.
//
// Value of row r (position p within its sequence, word w, type t) at layer l, column h:
//   w + 1000 * t + 0.01 * p + 100000 * (l + 1) + 0.0001 * h
// sequence = last layer; pooled[s][h] = first row of s at the last layer + 0.5;
// mean_pooled = mean of the last layer over the valid rows; cls = first row of s at the last
// layer.
#ifndef BERT_SERVER_CORE_FAKE_ENGINE_H_
#define BERT_SERVER_CORE_FAKE_ENGINE_H_

#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/engine/engine.h"

namespace bert {

class FakeEngine : public Engine {
 public:
  struct Options {
    ModelConfig config;
    bool has_pooler = true;
    absl::Duration latency = absl::ZeroDuration();
  };
  explicit FakeEngine(Options options);

  static ModelConfig SmallConfig();  // 2 layers, hidden 4, vocab 100, 64 positions.
  static float Value(int word, int type, int position, int layer, int column);

  const ModelConfig& config() const override { return options_.config; }
  bool has_pooler() const override { return options_.has_pooler; }
  EngineInfo info() const override;
  absl::Status Encode(const EncoderBatch& batch, const OutputSelection& selection,
                      EncoderOutput* output) override;

  struct Record {
    int num_sequences;
    int total_rows;
  };
  std::vector<Record> batches() const;
  void SetFailure(absl::Status status);

  // Test control of timing: while held, each Encode waits, after recording its batch,
  // until ReleaseBatches().
  void HoldBatches();
  void ReleaseBatches();
  // Waits until `n` batches have started; false if `timeout` passes first.
  bool WaitForBatches(int n, absl::Duration timeout) const;

 private:
  const Options options_;
  mutable absl::Mutex mu_;
  std::vector<Record> batches_ ABSL_GUARDED_BY(mu_);
  absl::Status failure_ ABSL_GUARDED_BY(mu_);
  bool held_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace bert

#endif  // BERT_SERVER_CORE_FAKE_ENGINE_H_
