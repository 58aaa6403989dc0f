// Testing the server's reaction to a lost or hung device without a device: an Engine that
// forwards to another until it meets a batch holding a chosen word id. Then it breaks for
// good, as a CUDA engine does after a fault that leaves its GPU context unusable, or hangs,
// as a stuck kernel would (bert_server --debug_engine_fault_word_id, --debug_engine_fault).
#ifndef BERT_SERVER_ENGINE_FAULT_INJECTION_H_
#define BERT_SERVER_ENGINE_FAULT_INJECTION_H_

#include <cstdint>
#include <memory>

#include "server/engine/engine.h"

namespace bert {

// Wraps `engine`. Once armed, the first batch containing `trigger_word_id` meets the fault:
// - kBreak: that batch fails with INTERNAL; later batches fail with UNAVAILABLE, and Health()
//   returns that UNAVAILABLE error (before: the wrapped engine's health);
// - kHang: that batch never returns (a hung device), as a server's watchdog must notice;
// - kFallback: every batch containing it runs normally but counts one fallback on the path
//   "debug_fault" (Fallbacks(), after the wrapped engine's), as a CUDA engine counts a graph
//   or a tuning it could not use.
// Same threading contract as Engine.
class FaultInjectingEngine final : public Engine {
 public:
  enum class Fault { kBreak, kHang, kFallback };
  FaultInjectingEngine(std::unique_ptr<Engine> engine, int32_t trigger_word_id,
                       Fault fault = Fault::kBreak);

  // From now on the trigger breaks the engine (a server arms it after its warm-up, whose
  // batches may hold any word id). Call before handing the engine to another thread.
  void Arm() { armed_ = true; }

  const ModelConfig& config() const override { return engine_->config(); }
  bool has_pooler() const override { return engine_->has_pooler(); }
  EngineInfo info() const override { return engine_->info(); }
  absl::Status Encode(const EncoderBatch& batch, const OutputSelection& selection,
                      EncoderOutput* output) override;
  absl::Status Health() const override { return broken_.ok() ? engine_->Health() : broken_; }
  std::vector<EngineFallback> Fallbacks() const override;

 private:
  const std::unique_ptr<Engine> engine_;
  const int32_t trigger_;
  const Fault fault_;
  bool armed_ = false;
  absl::Status broken_;
  int64_t fallbacks_ = 0;  // kFallback
};

}  // namespace bert

#endif  // BERT_SERVER_ENGINE_FAULT_INJECTION_H_
