#include "server/engine/fault_injection.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace bert {
namespace {

class FaultInjectingEngine final : public Engine {
 public:
  FaultInjectingEngine(std::unique_ptr<Engine> engine, int32_t trigger_word_id)
      : engine_(std::move(engine)), trigger_(trigger_word_id) {}

  const ModelConfig& config() const override { return engine_->config(); }
  bool has_pooler() const override { return engine_->has_pooler(); }
  EngineInfo info() const override { return engine_->info(); }

  absl::Status Encode(const EncoderBatch& batch, const OutputSelection& selection,
                      EncoderOutput* output) override {
    if (!broken_.ok()) {
      *output = EncoderOutput();
      return broken_;
    }
    if (std::find(batch.word_ids.begin(), batch.word_ids.end(), trigger_) != batch.word_ids.end()) {
      *output = EncoderOutput();
      broken_ = absl::UnavailableError(
          absl::StrCat("injected engine fault (word id ", trigger_, "): the engine is unusable"));
      return absl::InternalError(absl::StrCat("injected engine fault (word id ", trigger_, ")"));
    }
    return engine_->Encode(batch, selection, output);
  }

  absl::Status Health() const override { return broken_; }

 private:
  const std::unique_ptr<Engine> engine_;
  const int32_t trigger_;
  absl::Status broken_;
};

}  // namespace

std::unique_ptr<Engine> InjectEngineFault(std::unique_ptr<Engine> engine, int32_t trigger_word_id) {
  return std::make_unique<FaultInjectingEngine>(std::move(engine), trigger_word_id);
}

}  // namespace bert
