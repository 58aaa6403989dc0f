// Writes a Model as a Hugging Face-style directory (config.json + model.safetensors with
// BertModel tensor names, float32; a classifier as BertForSequenceClassification's
// `classifier.*`, the encoder under "bert.", with config.json's id2label, problem_type and
// CrossEncoder activation, and tokenizer_config.json's model_max_length where it is below the
// positions), the inverse of LoadModel. Used to
// export seeded random models for benchmarks against other runtimes.
#ifndef BERT_SERVER_ENGINE_MODEL_WRITER_H_
#define BERT_SERVER_ENGINE_MODEL_WRITER_H_

#include <string>

#include "absl/status/status.h"
#include "server/engine/model.h"

namespace bert {

// Creates `directory` if needed and writes config.json and model.safetensors into it.
absl::Status SaveModel(const Model& model, const std::string& directory);

}  // namespace bert

#endif  // BERT_SERVER_ENGINE_MODEL_WRITER_H_
