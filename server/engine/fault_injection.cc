#include "server/engine/fault_injection.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace bert {

FaultInjectingEngine::FaultInjectingEngine(std::unique_ptr<Engine> engine, int32_t trigger_word_id,
                                           Fault fault)
    : engine_(std::move(engine)), trigger_(trigger_word_id), fault_(fault) {}

absl::Status FaultInjectingEngine::Encode(const EncoderBatch& batch,
                                          const OutputSelection& selection, EncoderOutput* output) {
  if (!broken_.ok()) {
    *output = EncoderOutput();
    return broken_;
  }
  if (armed_ &&
      std::find(batch.word_ids.begin(), batch.word_ids.end(), trigger_) != batch.word_ids.end()) {
    if (fault_ == Fault::kHang) {
      for (;;) absl::SleepFor(absl::Hours(1));
    }
    if (fault_ == Fault::kFallback) {
      ++fallbacks_;
      return engine_->Encode(batch, selection, output);
    }
    *output = EncoderOutput();
    broken_ = absl::UnavailableError(
        absl::StrCat("injected engine fault (word id ", trigger_, "): the engine is unusable"));
    return absl::InternalError(absl::StrCat("injected engine fault (word id ", trigger_, ")"));
  }
  return engine_->Encode(batch, selection, output);
}

std::vector<EngineFallback> FaultInjectingEngine::Fallbacks() const {
  std::vector<EngineFallback> fallbacks = engine_->Fallbacks();
  if (fault_ == Fault::kFallback) {
    fallbacks.push_back({"debug_fault", "--debug_engine_fault_word_id=-1", fallbacks_});
  }
  return fallbacks;
}

}  // namespace bert
