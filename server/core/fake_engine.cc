#include "server/core/fake_engine.h"

#include "absl/time/clock.h"

namespace bert {

FakeEngine::FakeEngine(Options options) : options_(std::move(options)) {}

ModelConfig FakeEngine::SmallConfig() {
  ModelConfig c;
  c.num_layers = 2;
  c.hidden_size = 4;
  c.num_heads = 1;
  c.intermediate_size = 8;
  c.vocab_size = 100;
  c.max_position_embeddings = 64;
  c.type_vocab_size = 2;
  return c;
}

float FakeEngine::Value(int word, int type, int position, int layer, int column) {
  return static_cast<float>(word + 1000 * type + 0.01 * position + 100000 * (layer + 1) +
                            0.0001 * column);
}

void FakeEngine::HoldBatches() {
  absl::MutexLock lock(&mu_);
  held_ = true;
}

void FakeEngine::ReleaseBatches() {
  absl::MutexLock lock(&mu_);
  held_ = false;
}

bool FakeEngine::WaitForBatches(int n, absl::Duration timeout) const {
  absl::MutexLock lock(&mu_);
  auto started = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return static_cast<int>(batches_.size()) >= n;
  };
  return mu_.AwaitWithTimeout(absl::Condition(&started), timeout);
}

EngineInfo FakeEngine::info() const {
  EngineInfo info;
  info.backend = "fake";
  info.device = "test double";
  return info;
}

absl::Status FakeEngine::Encode(const EncoderBatch& batch, const OutputSelection& selection,
                                EncoderOutput* output) {
  {
    absl::MutexLock lock(&mu_);
    batches_.push_back({batch.num_sequences(), batch.total_rows()});
    auto released = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !held_; };
    mu_.Await(absl::Condition(&released));
    if (!failure_.ok()) return failure_;
  }
  if (options_.latency > absl::ZeroDuration()) absl::SleepFor(options_.latency);
  const int hidden = options_.config.hidden_size;
  const int last = options_.config.num_layers - 1;
  auto fill = [&](int layer, std::vector<float>* out) {
    out->assign(static_cast<size_t>(batch.total_rows()) * hidden, 0.f);
    for (int s = 0; s < batch.num_sequences(); ++s) {
      for (int r = batch.cu_rows[s]; r < batch.cu_rows[s + 1]; ++r) {
        for (int h = 0; h < hidden; ++h) {
          (*out)[static_cast<size_t>(r) * hidden + h] =
              Value(batch.word_ids[r], batch.type_ids[r], r - batch.cu_rows[s], layer, h);
        }
      }
    }
  };
  *output = EncoderOutput();
  if (selection.sequence) fill(last, &output->sequence);
  for (int layer : selection.layers) {
    output->layers.emplace_back();
    fill(layer, &output->layers.back());
  }
  std::vector<float> last_layer;
  fill(last, &last_layer);
  if (selection.pooled) {
    for (int s = 0; s < batch.num_sequences(); ++s) {
      for (int h = 0; h < hidden; ++h) {
        output->pooled.push_back(last_layer[static_cast<size_t>(batch.cu_rows[s]) * hidden + h] +
                                 0.5f);
      }
    }
  }
  if (selection.mean_pooled) {
    for (int s = 0; s < batch.num_sequences(); ++s) {
      for (int h = 0; h < hidden; ++h) {
        double sum = 0;
        for (int r = 0; r < batch.num_valid[s]; ++r) {
          sum += last_layer[static_cast<size_t>(batch.cu_rows[s] + r) * hidden + h];
        }
        output->mean_pooled.push_back(static_cast<float>(sum / batch.num_valid[s]));
      }
    }
  }
  if (selection.cls) {
    for (int s = 0; s < batch.num_sequences(); ++s) {
      const auto first = last_layer.begin() + static_cast<size_t>(batch.cu_rows[s]) * hidden;
      output->cls.insert(output->cls.end(), first, first + hidden);
    }
  }
  return absl::OkStatus();
}

std::vector<FakeEngine::Record> FakeEngine::batches() const {
  absl::MutexLock lock(&mu_);
  return batches_;
}

void FakeEngine::SetFailure(absl::Status status) {
  absl::MutexLock lock(&mu_);
  failure_ = std::move(status);
}

}  // namespace bert
