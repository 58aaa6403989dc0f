#include "server/engine/model_writer.h"

#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "nlohmann/json.hpp"
#include "server/engine/safetensors.h"

namespace bert {
namespace {

void Add(SafetensorsWriter& w, const std::string& name, const HostTensor& t) {
  w.AddFloat32(name, t.shape, t.data);
}

// Rows [begin, begin + count) of a 1-D or 2-D tensor.
void AddRows(SafetensorsWriter& w, const std::string& name, const HostTensor& t, int64_t begin,
             int64_t count) {
  const int64_t width = t.shape.size() == 2 ? t.shape[1] : 1;
  std::vector<int64_t> shape = t.shape;
  shape[0] = count;
  w.AddFloat32(name, shape, absl::MakeConstSpan(t.data.data() + begin * width, count * width));
}

}  // namespace

absl::Status SaveModel(const Model& model, const std::string& directory) {
  std::error_code ec;
  std::filesystem::create_directories(directory, ec);
  if (ec) return absl::InvalidArgumentError(absl::StrCat(directory, ": ", ec.message()));
  const ModelConfig& c = model.config;
  nlohmann::json config = {
      {"architectures", {"BertModel"}},
      {"model_type", "bert"},
      {"hidden_size", c.hidden_size},
      {"num_hidden_layers", c.num_layers},
      {"num_attention_heads", c.num_heads},
      {"intermediate_size", c.intermediate_size},
      {"vocab_size", c.vocab_size},
      {"max_position_embeddings", c.max_position_embeddings},
      {"type_vocab_size", c.type_vocab_size},
      {"layer_norm_eps", c.layer_norm_eps},
      {"hidden_act", c.activation == Activation::kGeluErf ? "gelu" : "gelu_pytorch_tanh"},
      {"position_embedding_type", "absolute"},
      {"pad_token_id", 0},
  };
  const Classifier& classifier = model.classifier;
  if (classifier.present()) {
    config["architectures"] = {classifier.per_token ? "BertForTokenClassification"
                                                    : "BertForSequenceClassification"};
    nlohmann::json id2label = nlohmann::json::object();
    nlohmann::json label2id = nlohmann::json::object();
    for (size_t i = 0; i < classifier.labels.size(); ++i) {
      id2label[std::to_string(i)] = classifier.labels[i];
      label2id[classifier.labels[i]] = i;
    }
    config["id2label"] = id2label;
    config["label2id"] = label2id;
    if (!classifier.problem_type.empty()) config["problem_type"] = classifier.problem_type;
    if (!classifier.activation_function.empty()) {
      config["sentence_transformers"] = {{"activation_fn", classifier.activation_function}};
    }
  }
  const std::string config_path = directory + "/config.json";
  std::ofstream out(config_path, std::ios::trunc);
  out << config.dump(2) << "\n";
  out.close();
  if (!out) return absl::DataLossError(absl::StrCat(config_path, ": write failed"));
  if (classifier.present() && classifier.max_seq_length > 0 &&
      classifier.max_seq_length < c.max_position_embeddings) {
    const std::string tokenizer_path = directory + "/tokenizer_config.json";
    std::ofstream tokenizer_config(tokenizer_path, std::ios::trunc);
    tokenizer_config << nlohmann::json{{"model_max_length", classifier.max_seq_length}}.dump(2)
                     << "\n";
    tokenizer_config.close();
    if (!tokenizer_config) {
      return absl::DataLossError(absl::StrCat(tokenizer_path, ": write failed"));
    }
  }

  const ModelWeights& w = model.weights;
  SafetensorsWriter st;
  st.SetMetadata("format", "pt");
  // BertForSequenceClassification keeps its encoder under "bert.", beside "classifier.*".
  const std::string b = classifier.present() ? "bert." : "";
  Add(st, b + "embeddings.word_embeddings.weight", w.word_embeddings);
  Add(st, b + "embeddings.position_embeddings.weight", w.position_embeddings);
  Add(st, b + "embeddings.token_type_embeddings.weight", w.token_type_embeddings);
  Add(st, b + "embeddings.LayerNorm.weight", w.embedding_norm_gamma);
  Add(st, b + "embeddings.LayerNorm.bias", w.embedding_norm_beta);
  const int64_t h = c.hidden_size;
  for (size_t i = 0; i < w.layers.size(); ++i) {
    const LayerWeights& l = w.layers[i];
    const std::string p = absl::StrCat(b, "encoder.layer.", i, ".");
    const char* parts[3] = {"query", "key", "value"};
    for (int j = 0; j < 3; ++j) {
      AddRows(st, absl::StrCat(p, "attention.self.", parts[j], ".weight"), l.qkv_weight, j * h, h);
      AddRows(st, absl::StrCat(p, "attention.self.", parts[j], ".bias"), l.qkv_bias, j * h, h);
    }
    Add(st, p + "attention.output.dense.weight", l.attention_output_weight);
    Add(st, p + "attention.output.dense.bias", l.attention_output_bias);
    Add(st, p + "attention.output.LayerNorm.weight", l.attention_norm_gamma);
    Add(st, p + "attention.output.LayerNorm.bias", l.attention_norm_beta);
    Add(st, p + "intermediate.dense.weight", l.intermediate_weight);
    Add(st, p + "intermediate.dense.bias", l.intermediate_bias);
    Add(st, p + "output.dense.weight", l.output_weight);
    Add(st, p + "output.dense.bias", l.output_bias);
    Add(st, p + "output.LayerNorm.weight", l.output_norm_gamma);
    Add(st, p + "output.LayerNorm.bias", l.output_norm_beta);
  }
  if (w.has_pooler) {
    Add(st, b + "pooler.dense.weight", w.pooler_weight);
    Add(st, b + "pooler.dense.bias", w.pooler_bias);
  }
  if (classifier.present()) {
    Add(st, "classifier.weight", classifier.weight);
    Add(st, "classifier.bias", classifier.bias);
  }
  return st.Write(directory + "/model.safetensors");
}

}  // namespace bert
