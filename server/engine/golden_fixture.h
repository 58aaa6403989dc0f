// Test support: the golden fixtures in tests/golden (Hugging Face reference outputs) as an
// engine batch, so every backend's golden test feeds the engine the same way.
#ifndef BERT_SERVER_ENGINE_GOLDEN_FIXTURE_H_
#define BERT_SERVER_ENGINE_GOLDEN_FIXTURE_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/engine/engine.h"
#include "server/engine/model.h"
#include "server/engine/safetensors.h"

namespace bert {

struct GoldenFixture {
  std::shared_ptr<const Model> model;
  // The fixture's rows in TF-Hub layout: each sequence's real tokens then padding rows up
  // to seq_length (the fixture's padding ids are checked to be 0, as EncoderBatch::Add fills).
  EncoderBatch batch;
  // Every tensor the fixture has reference values for: pooled, sequence, every layer.
  OutputSelection selection;
  // expected.safetensors: `pooled_output`, `sequence_output`, `encoder_outputs.<l>`.
  SafetensorsFile expected;
};

// Loads tests/golden/<name> (relative to the test's working directory).
absl::StatusOr<GoldenFixture> LoadGoldenFixture(const std::string& name);

}  // namespace bert

#endif  // BERT_SERVER_ENGINE_GOLDEN_FIXTURE_H_
