#include "server/engine/model.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <optional>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"
#include "server/engine/safetensors.h"
#include "server/util/read_file.h"
#include "server/util/status_macros.h"

namespace bert {
namespace {

using Json = nlohmann::json;

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

std::string BaseName(const std::string& path) {
  std::string p = path;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  const size_t slash = p.rfind('/');
  return slash == std::string::npos ? p : p.substr(slash + 1);
}

// Reads a positive integer field; `fallback` < 0 means required.
absl::Status ReadInt(const Json& json, const std::string& path, const char* key, int fallback,
                     int* out) {
  auto it = json.find(key);
  if (it == json.end() || it->is_null()) {
    if (fallback < 0)
      return absl::InvalidArgumentError(absl::StrCat(path, ": missing \"", key, "\""));
    *out = fallback;
    return absl::OkStatus();
  }
  if (!it->is_number_integer() || it->get<int64_t>() <= 0 || it->get<int64_t>() > (1 << 30)) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": \"", key, "\" must be a positive integer, got ", it->dump()));
  }
  *out = it->get<int>();
  return absl::OkStatus();
}

// config.json, parsed once: the encoder's shape here, the classifier's labels in ReadClassifier.
absl::StatusOr<Json> ParseConfigJson(const std::string& path, const std::string& text) {
  Json json = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(path, ": invalid JSON"));
  if (!json.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a JSON object"));
  }
  return json;
}

absl::StatusOr<ModelConfig> ParseConfig(const std::string& path, const Json& json) {
  ModelConfig c;
  RETURN_IF_ERROR(ReadInt(json, path, "hidden_size", -1, &c.hidden_size));
  RETURN_IF_ERROR(ReadInt(json, path, "num_hidden_layers", -1, &c.num_layers));
  RETURN_IF_ERROR(ReadInt(json, path, "num_attention_heads", -1, &c.num_heads));
  RETURN_IF_ERROR(ReadInt(json, path, "intermediate_size", -1, &c.intermediate_size));
  RETURN_IF_ERROR(ReadInt(json, path, "vocab_size", -1, &c.vocab_size));
  RETURN_IF_ERROR(ReadInt(json, path, "max_position_embeddings", 512, &c.max_position_embeddings));
  RETURN_IF_ERROR(ReadInt(json, path, "type_vocab_size", 2, &c.type_vocab_size));
  if (c.hidden_size % c.num_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": hidden_size ", c.hidden_size,
                                                   " is not a multiple of num_attention_heads ",
                                                   c.num_heads));
  }
  auto eps = json.find("layer_norm_eps");
  if (eps != json.end() && !eps->is_null()) {
    if (!eps->is_number() || !(eps->get<double>() > 0) || !std::isfinite(eps->get<double>())) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": \"layer_norm_eps\" must be a positive number"));
    }
    c.layer_norm_eps = eps->get<float>();
  }
  std::string act = "gelu";
  auto act_it = json.find("hidden_act");
  if (act_it != json.end()) {
    if (!act_it->is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": \"hidden_act\" must be a string"));
    }
    act = act_it->get<std::string>();
  }
  if (act == "gelu") {
    c.activation = Activation::kGeluErf;
  } else if (act == "gelu_new" || act == "gelu_pytorch_tanh" || act == "gelu_fast") {
    c.activation = Activation::kGeluTanh;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": unsupported hidden_act \"", act,
                     "\" (supported: gelu, gelu_new, gelu_pytorch_tanh, gelu_fast)"));
  }
  auto pos_type = json.find("position_embedding_type");
  if (pos_type != json.end() && pos_type->is_string() &&
      pos_type->get<std::string>() != "absolute") {
    return absl::InvalidArgumentError(absl::StrCat(path, ": unsupported position_embedding_type \"",
                                                   pos_type->get<std::string>(),
                                                   "\" (only \"absolute\")"));
  }
  return c;
}

// Looks tensors up by their Hugging Face BertModel names, with or without the "bert." prefix
// that BertFor* checkpoints add, accepting the old LayerNorm gamma/beta spelling. Each
// tensor is looked up once: Find returns the view that Read then checks, converts and drops.
class WeightReader {
 public:
  // A tensor found under `name` or its old spelling; `view` is null when absent.
  struct Found {
    std::string name;  // As requested (with the prefix), for the "missing" error.
    std::string full;  // As stored in the file (set when found).
    const SafetensorsView* view = nullptr;
  };

  WeightReader(const SafetensorsFile& file, std::string prefix)
      : file_(file), prefix_(std::move(prefix)) {}

  Found Find(const std::string& name) const {
    Found found;
    found.name = prefix_ + name;
    std::vector<std::string> candidates = {found.name};
    if (absl::EndsWith(name, "LayerNorm.weight")) {
      candidates.push_back(prefix_ + name.substr(0, name.size() - 6) + "gamma");
    } else if (absl::EndsWith(name, "LayerNorm.bias")) {
      candidates.push_back(prefix_ + name.substr(0, name.size() - 4) + "beta");
    }
    for (std::string& c : candidates) {
      if (const SafetensorsView* v = file_.Find(c)) {
        found.full = std::move(c);
        found.view = v;
        break;
      }
    }
    return found;
  }

  absl::Status Read(const std::string& name, std::vector<int64_t> expected, HostTensor* out) {
    return Read(Find(name), std::move(expected), out);
  }

  absl::Status Read(const Found& found, std::vector<int64_t> expected, HostTensor* out) {
    if (found.view == nullptr) {
      return absl::NotFoundError(
          absl::StrCat(file_.path(), ": tensor '", found.name, "' is missing"));
    }
    const SafetensorsView& view = *found.view;
    if (view.shape != expected) {
      return absl::InvalidArgumentError(absl::StrCat(
          file_.path(), ": tensor '", found.full, "' has shape ", ShapeString(view.shape),
          ", expected ", ShapeString(expected), " from config.json"));
    }
    ASSIGN_OR_RETURN(out->data, file_.ReadFloat32(view, found.full));
    file_.DropPages(view);
    for (float v : out->data) {
      if (!std::isfinite(v)) {
        return absl::InvalidArgumentError(
            absl::StrCat(file_.path(), ": tensor '", found.full, "' contains NaN or infinity"));
      }
    }
    out->shape = std::move(expected);
    return absl::OkStatus();
  }

 private:
  const SafetensorsFile& file_;
  std::string prefix_;
};

void ConcatRows(const std::vector<HostTensor>& parts, HostTensor* out) {
  int64_t rows = 0;
  for (const HostTensor& p : parts) rows += p.shape[0];
  out->shape = parts[0].shape;
  out->shape[0] = rows;
  out->data.clear();
  for (const HostTensor& p : parts) out->data.insert(out->data.end(), p.data.begin(), p.data.end());
}

absl::Status ReadWeights(const SafetensorsFile& file, const ModelConfig& c, ModelWeights* w) {
  std::string prefix;
  if (file.Find("bert.embeddings.word_embeddings.weight") != nullptr) {
    prefix = "bert.";
  } else if (file.Find("embeddings.word_embeddings.weight") == nullptr) {
    return absl::NotFoundError(
        absl::StrCat(file.path(),
                     ": tensor 'embeddings.word_embeddings.weight' is missing (also without "
                     "and with the 'bert.' prefix); not a BERT checkpoint?"));
  }
  // A checkpoint with more layers than config.json says is a mismatch, not extra heads.
  const std::string layer_prefix = prefix + "encoder.layer.";
  for (const auto& [name, view] : file.tensors()) {
    if (!absl::StartsWith(name, layer_prefix)) continue;
    const std::string rest = name.substr(layer_prefix.size());
    const int index = std::atoi(rest.c_str());
    if (index >= c.num_layers) {
      return absl::InvalidArgumentError(
          absl::StrCat(file.path(), ": tensor '", name, "' belongs to layer ", index,
                       " but config.json has num_hidden_layers = ", c.num_layers));
    }
  }

  WeightReader r(file, prefix);
  const int64_t h = c.hidden_size;
  const int64_t inter = c.intermediate_size;
  RETURN_IF_ERROR(
      r.Read("embeddings.word_embeddings.weight", {c.vocab_size, h}, &w->word_embeddings));
  RETURN_IF_ERROR(r.Read("embeddings.position_embeddings.weight", {c.max_position_embeddings, h},
                         &w->position_embeddings));
  RETURN_IF_ERROR(r.Read("embeddings.token_type_embeddings.weight", {c.type_vocab_size, h},
                         &w->token_type_embeddings));
  RETURN_IF_ERROR(r.Read("embeddings.LayerNorm.weight", {h}, &w->embedding_norm_gamma));
  RETURN_IF_ERROR(r.Read("embeddings.LayerNorm.bias", {h}, &w->embedding_norm_beta));
  w->layers.resize(c.num_layers);
  for (int i = 0; i < c.num_layers; ++i) {
    const std::string p = absl::StrCat("encoder.layer.", i, ".");
    LayerWeights& l = w->layers[i];
    std::vector<HostTensor> qkv_w(3), qkv_b(3);
    const char* names[3] = {"query", "key", "value"};
    for (int j = 0; j < 3; ++j) {
      const std::string base = absl::StrCat(p, "attention.self.", names[j]);
      RETURN_IF_ERROR(r.Read(base + ".weight", {h, h}, &qkv_w[j]));
      RETURN_IF_ERROR(r.Read(base + ".bias", {h}, &qkv_b[j]));
    }
    ConcatRows(qkv_w, &l.qkv_weight);
    ConcatRows(qkv_b, &l.qkv_bias);
    RETURN_IF_ERROR(
        r.Read(p + "attention.output.dense.weight", {h, h}, &l.attention_output_weight));
    RETURN_IF_ERROR(r.Read(p + "attention.output.dense.bias", {h}, &l.attention_output_bias));
    RETURN_IF_ERROR(r.Read(p + "attention.output.LayerNorm.weight", {h}, &l.attention_norm_gamma));
    RETURN_IF_ERROR(r.Read(p + "attention.output.LayerNorm.bias", {h}, &l.attention_norm_beta));
    RETURN_IF_ERROR(r.Read(p + "intermediate.dense.weight", {inter, h}, &l.intermediate_weight));
    RETURN_IF_ERROR(r.Read(p + "intermediate.dense.bias", {inter}, &l.intermediate_bias));
    RETURN_IF_ERROR(r.Read(p + "output.dense.weight", {h, inter}, &l.output_weight));
    RETURN_IF_ERROR(r.Read(p + "output.dense.bias", {h}, &l.output_bias));
    RETURN_IF_ERROR(r.Read(p + "output.LayerNorm.weight", {h}, &l.output_norm_gamma));
    RETURN_IF_ERROR(r.Read(p + "output.LayerNorm.bias", {h}, &l.output_norm_beta));
  }
  const WeightReader::Found pooler_w = r.Find("pooler.dense.weight");
  const WeightReader::Found pooler_b = r.Find("pooler.dense.bias");
  const bool has_w = pooler_w.view != nullptr;
  const bool has_b = pooler_b.view != nullptr;
  if (has_w != has_b) {
    return absl::NotFoundError(absl::StrCat(file.path(), ": tensor '", prefix, "pooler.dense.",
                                            has_w ? "bias" : "weight",
                                            "' is missing while its twin is present"));
  }
  w->has_pooler = has_w;
  if (has_w) {
    RETURN_IF_ERROR(r.Read(pooler_w, {h, h}, &w->pooler_weight));
    RETURN_IF_ERROR(r.Read(pooler_b, {h}, &w->pooler_bias));
  }
  return absl::OkStatus();
}

// config.json's "architectures" as one string ("" when it names none).
std::string Architectures(const Json& config) {
  const auto names = config.find("architectures");
  if (names == config.end() || !names->is_array()) return "";
  std::vector<std::string> out;
  for (const Json& name : *names) {
    if (name.is_string()) out.push_back(name.get<std::string>());
  }
  return absl::StrJoin(out, ", ");
}

// tokenizer_config.json's model_max_length, at most `max_positions`, which is also the value
// without one (or without the file: Hugging Face's tokenizers then do not truncate, and the
// model cannot go past its positions). The file is optional and read leniently, as
// --lowercase=auto reads it.
int ModelMaxLength(const std::string& directory, int max_positions) {
  absl::StatusOr<std::string> text = ReadFile(directory + "/tokenizer_config.json");
  if (!text.ok()) return max_positions;
  const Json json = Json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (!json.is_object()) return max_positions;
  const auto length = json.find("model_max_length");
  if (length == json.end() || !length->is_number() || !(length->get<double>() >= 2)) {
    return max_positions;
  }
  return static_cast<int>(std::min<double>(length->get<double>(), max_positions));
}

// The classification head: `classifier.weight` [num_labels, hidden] and `classifier.bias`
// (outside the "bert." prefix), on the pooled output of a sequence classifier or on each
// token's state of a token classifier, as config.json's architectures says; labelled by its
// id2label, with its problem_type and the activation sentence-transformers' CrossEncoder
// names there.
absl::Status ReadClassifier(const SafetensorsFile& file, const ModelConfig& c, bool has_pooler,
                            const std::string& directory, const std::string& config_path,
                            const Json& json, Classifier* out) {
  WeightReader r(file, "");
  const WeightReader::Found weight = r.Find("classifier.weight");
  const WeightReader::Found bias = r.Find("classifier.bias");
  if (weight.view == nullptr && bias.view == nullptr) return absl::OkStatus();
  // A sequence classifier reads the pooled output, a token classifier every token's state;
  // others (a *ForMultipleChoice one scores each choice against the others) are not served.
  // Where config.json does not say, a classifier without the pooler it would read is not
  // taken for either. The encoder serves without it.
  const std::string architectures = Architectures(json);
  const bool sequence = absl::StrContains(architectures, "ForSequenceClassification");
  const bool per_token = !sequence && absl::StrContains(architectures, "ForTokenClassification");
  if (architectures.empty() ? !has_pooler : !(sequence || per_token)) {
    out->note = absl::StrCat("classifier.* not served: ",
                             architectures.empty()
                                 ? "config.json names no architecture and there is no pooler"
                                 : absl::StrCat("config.json's architectures is ", architectures,
                                                ", neither a sequence nor a token classifier"));
    return absl::OkStatus();
  }
  if ((weight.view == nullptr) != (bias.view == nullptr)) {
    return absl::NotFoundError(absl::StrCat(file.path(), ": tensor 'classifier.",
                                            weight.view == nullptr ? "weight" : "bias",
                                            "' is missing while its twin is present"));
  }
  if (!has_pooler && !per_token) {
    return absl::InvalidArgumentError(
        absl::StrCat(file.path(),
                     ": config.json names a sequence-classification model but the checkpoint "
                     "has no pooler ('pooler.dense.*'), whose output its classifier reads"));
  }
  const std::vector<int64_t>& shape = weight.view->shape;
  if (shape.size() != 2 || shape[0] < 1 || shape[1] != c.hidden_size) {
    return absl::InvalidArgumentError(
        absl::StrCat(file.path(), ": tensor 'classifier.weight' has shape ", ShapeString(shape),
                     ", expected [num_labels, ", c.hidden_size, "]"));
  }
  const int64_t num_labels = shape[0];
  RETURN_IF_ERROR(r.Read(weight, {num_labels, c.hidden_size}, &out->weight));
  RETURN_IF_ERROR(r.Read(bias, {num_labels}, &out->bias));
  out->per_token = per_token;

  for (int64_t i = 0; i < num_labels; ++i) out->labels.push_back(absl::StrCat("LABEL_", i));
  const auto id2label = json.find("id2label");
  if (id2label != json.end() && !id2label->is_null()) {
    const auto bad = [&](const std::string& why) {
      return absl::InvalidArgumentError(absl::StrCat(config_path, ": \"id2label\" ", why));
    };
    if (!id2label->is_object()) return bad("must be an object of label ids to names");
    if (static_cast<int64_t>(id2label->size()) != num_labels) {
      return bad(absl::StrCat("has ", id2label->size(), " labels but 'classifier.weight' has ",
                              num_labels, " rows"));
    }
    std::vector<bool> seen(num_labels, false);
    for (const auto& [key, name] : id2label->items()) {
      int64_t id = -1;
      if (!absl::SimpleAtoi(key, &id) || id < 0 || id >= num_labels || seen[id]) {
        return bad(absl::StrCat("has the key \"", key, "\"; expected each of 0 .. ", num_labels - 1,
                                " once"));
      }
      seen[id] = true;
      // Hugging Face takes any value as a label; a name that is not a string is shown as its
      // JSON text.
      out->labels[id] = name.is_string() ? name.get<std::string>() : name.dump();
    }
  }
  const auto problem = json.find("problem_type");
  if (problem != json.end() && !problem->is_null()) {
    const std::string type = problem->is_string() ? problem->get<std::string>() : problem->dump();
    if (type != "regression" && type != "single_label_classification" &&
        type != "multi_label_classification") {
      return absl::InvalidArgumentError(absl::StrCat(
          config_path, ": \"problem_type\" ", type,
          " is not regression, single_label_classification or multi_label_classification"));
    }
    out->problem_type = type;
  }
  // sentence-transformers' CrossEncoder: "sentence_transformers": {"activation_fn": ...} since
  // its version 4, "sbert_ce_default_activation_function" before.
  const auto st = json.find("sentence_transformers");
  if (st != json.end() && st->is_object()) {
    const auto fn = st->find("activation_fn");
    if (fn != st->end() && fn->is_string()) out->activation_function = fn->get<std::string>();
  }
  const auto old_fn = json.find("sbert_ce_default_activation_function");
  if (out->activation_function.empty() && old_fn != json.end() && old_fn->is_string()) {
    out->activation_function = old_fn->get<std::string>();
  }
  out->max_seq_length = ModelMaxLength(directory, c.max_position_embeddings);
  return absl::OkStatus();
}

// splitmix64: a small, portable generator, so that a seed gives the same weights on every
// platform and standard library.
class Random {
 public:
  explicit Random(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // Uniform in (0, 1].
  double Uniform() {
    return (static_cast<double>(Next() >> 11) + 1.0) * (1.0 / 9007199254740992.0);
  }
  // Box-Muller, both outputs used.
  float Normal(float stddev) {
    if (has_spare_) {
      has_spare_ = false;
      return static_cast<float>(spare_ * stddev);
    }
    const double u1 = Uniform(), u2 = Uniform();
    const double radius = std::sqrt(-2.0 * std::log(u1));
    const double angle = 6.283185307179586 * u2;
    spare_ = radius * std::sin(angle);
    has_spare_ = true;
    return static_cast<float>(radius * std::cos(angle) * stddev);
  }

 private:
  uint64_t state_;
  double spare_ = 0.0;
  bool has_spare_ = false;
};

HostTensor RandomTensor(Random& rng, std::vector<int64_t> shape) {
  HostTensor t;
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  t.shape = std::move(shape);
  t.data.resize(n);
  for (float& v : t.data) v = rng.Normal(0.02f);
  return t;
}

HostTensor Filled(std::vector<int64_t> shape, float value) {
  HostTensor t;
  t.shape = std::move(shape);
  t.data.assign(t.shape[0], value);
  return t;
}

}  // namespace

const char* ActivationName(Activation activation) {
  switch (activation) {
    case Activation::kGeluErf:
      return "gelu";
    case Activation::kGeluTanh:
      return "gelu_tanh";
  }
  return "unknown";
}

ModelConfig BertBaseConfig() { return ModelConfig(); }

absl::StatusOr<Model> LoadModel(const std::string& directory) {
  const std::string config_path = directory + "/config.json";
  const std::string weights_path = directory + "/model.safetensors";
  ASSIGN_OR_RETURN(const std::string text, ReadFile(config_path));
  ASSIGN_OR_RETURN(const Json config, ParseConfigJson(config_path, text));
  Model model;
  model.name = BaseName(directory);
  model.directory = directory;
  ASSIGN_OR_RETURN(model.config, ParseConfig(config_path, config));
  ASSIGN_OR_RETURN(SafetensorsFile file, SafetensorsFile::Open(weights_path));
  RETURN_IF_ERROR(ReadWeights(file, model.config, &model.weights));
  RETURN_IF_ERROR(ReadClassifier(file, model.config, model.weights.has_pooler, directory,
                                 config_path, config, &model.classifier));
  absl::StatusOr<SentenceEmbedding> embedding = ReadSentenceEmbedding(directory);
  if (embedding.ok()) {
    model.sentence_embedding = *std::move(embedding);
    // sentence-transformers cannot truncate past the positions the model has either, and
    // without a max_seq_length of its own it truncates there.
    int& max_seq = model.sentence_embedding.max_seq_length;
    if (max_seq == 0 && model.sentence_embedding.has_modules) {
      max_seq = model.config.max_position_embeddings;
    }
    max_seq = std::min(max_seq, model.config.max_position_embeddings);
  } else {
    // Optional files, which the encoder's heads do not need: the model serves, and says why
    // it names no sentence embedding (GetModelInfo shows it: paths within the directory).
    model.sentence_embedding.defective = true;
    model.sentence_embedding.note =
        absl::StrReplaceAll(embedding.status().message(), {{directory + "/", ""}});
  }
  return model;
}

namespace {

// The pooling modes a sentence-transformers Pooling config turns on, by the names of its
// "pooling_mode" ("cls", "mean", "max", ...; a string, or a list of them in the configs recent
// versions write). That key, where set, overrides the pooling_mode_* flags; a flag left out
// takes its argument's default (mean on, the others off), one set to null is off. Several
// modes are concatenated.
absl::StatusOr<std::vector<std::string>> PoolingModes(const Json& pooling,
                                                      const std::string& path) {
  const auto mode = pooling.find("pooling_mode");
  if (mode != pooling.end() && !mode->is_null()) {
    std::vector<std::string> modes;
    const bool list = mode->is_array();
    for (const Json& m : list ? *mode : Json::array({*mode})) {
      if (!m.is_string()) {
        return absl::InvalidArgumentError(absl::StrCat(
            path, ": \"pooling_mode\" must be a string or a list of strings, got ", mode->dump()));
      }
      modes.push_back(absl::AsciiStrToLower(m.get<std::string>()));
    }
    return modes;
  }
  struct Flag {
    const char* key;
    const char* mode;
    bool fallback;
  };
  static constexpr Flag kFlags[] = {
      {"pooling_mode_cls_token", "cls", false},
      {"pooling_mode_max_tokens", "max", false},
      {"pooling_mode_mean_tokens", "mean", true},
      {"pooling_mode_mean_sqrt_len_tokens", "mean_sqrt_len_tokens", false},
      {"pooling_mode_weightedmean_tokens", "weightedmean", false},
      {"pooling_mode_lasttoken", "lasttoken", false}};
  std::vector<std::string> modes;
  for (const Flag& flag : kFlags) {
    const auto it = pooling.find(flag.key);
    bool on = it == pooling.end() ? flag.fallback : false;
    if (it != pooling.end() && !it->is_null()) {
      if (!it->is_boolean()) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": \"", flag.key, "\" must be true or false, got ", it->dump()));
      }
      on = it->get<bool>();
    }
    if (on) modes.push_back(flag.mode);
  }
  return modes;
}

// The JSON array (or object) in `path`; INVALID_ARGUMENT naming the file for anything else.
absl::StatusOr<Json> ReadJson(const std::string& path, bool array) {
  ASSIGN_OR_RETURN(const std::string text, ReadFile(path));
  Json json = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (array ? !json.is_array() : !json.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not a JSON ", array ? "array" : "object"));
  }
  return json;
}

// ReadJson for a file that may be absent: nullopt then.
absl::StatusOr<std::optional<Json>> ReadJsonIfPresent(const std::string& path, bool array) {
  std::error_code error;
  if (!std::filesystem::exists(path, error)) return std::nullopt;
  ASSIGN_OR_RETURN(Json json, ReadJson(path, array));
  return std::optional<Json>(std::move(json));
}

// config_sentence_transformers.json's "prompts" (an object of strings), "default_prompt_name"
// (null or one of them) and "similarity_fn_name" (null or one of sentence-transformers' four).
absl::Status ReadSentenceTransformersConfig(const Json& config, const std::string& path,
                                            SentenceEmbedding* result) {
  const auto prompts = config.find("prompts");
  if (prompts != config.end() && !prompts->is_null()) {
    if (!prompts->is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": \"prompts\" must be an object"));
    }
    for (const auto& [name, prompt] : prompts->items()) {
      if (!prompt.is_string()) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": prompt \"", name, "\" must be a string"));
      }
      result->prompts[name] = prompt.get<std::string>();
    }
  }
  const auto default_name = config.find("default_prompt_name");
  if (default_name != config.end() && !default_name->is_null()) {
    if (!default_name->is_string() ||
        result->prompts.count(default_name->get<std::string>()) == 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": \"default_prompt_name\" ", default_name->dump(), " is not one of the prompts"));
    }
    result->default_prompt_name = default_name->get<std::string>();
  }
  const auto similarity = config.find("similarity_fn_name");
  if (similarity != config.end() && !similarity->is_null()) {
    const std::string name = similarity->is_string() ? similarity->get<std::string>() : "";
    if (name != "cosine" && name != "dot" && name != "euclidean" && name != "manhattan") {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": \"similarity_fn_name\" ", similarity->dump(),
                       " is not cosine, dot, euclidean or manhattan"));
    }
    result->similarity_fn_name = name;
  }
  return absl::OkStatus();
}

// A module path that stays inside the model directory.
bool InsideDirectory(const std::string& path) {
  if (path.empty() || path.front() == '/') return false;
  for (absl::string_view part : absl::StrSplit(path, '/')) {
    if (part == "..") return false;
  }
  return true;
}

}  // namespace

absl::StatusOr<SentenceEmbedding> ReadSentenceEmbedding(const std::string& directory) {
  SentenceEmbedding result;
  const std::string modules_path = directory + "/modules.json";
  ASSIGN_OR_RETURN(const std::optional<Json> modules_file, ReadJsonIfPresent(modules_path, true));
  if (!modules_file.has_value()) {
    result.note = "no modules.json";
    return result;
  }
  result.has_modules = true;
  const Json& modules = *modules_file;
  // The module kinds, in order: "Transformer", "Pooling", "Normalize", ... (the last part of
  // "sentence_transformers.models.Pooling").
  std::vector<std::string> kinds;
  std::string pooling_dir;
  for (size_t i = 0; i < modules.size(); ++i) {
    const Json& m = modules[i];
    const auto type = m.is_object() ? m.find("type") : m.end();
    if (!m.is_object() || type == m.end() || !type->is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat(modules_path, ": module ", i, " has no \"type\" string"));
    }
    const std::string name = type->get<std::string>();
    kinds.push_back(name.substr(name.rfind('.') + 1));
    if (kinds.back() == "Pooling") {
      const auto path = m.find("path");
      if (path == m.end() || !path->is_string() || !InsideDirectory(path->get<std::string>())) {
        return absl::InvalidArgumentError(absl::StrCat(
            modules_path, ": the Pooling module's \"path\" is not a directory inside the model's"));
      }
      pooling_dir = path->get<std::string>();
    }
  }
  // The prompts and the similarity function, whatever the pooling.
  const std::string st_settings_path = directory + "/config_sentence_transformers.json";
  ASSIGN_OR_RETURN(const std::optional<Json> st_settings,
                   ReadJsonIfPresent(st_settings_path, false));
  if (st_settings.has_value()) {
    RETURN_IF_ERROR(ReadSentenceTransformersConfig(*st_settings, st_settings_path, &result));
  }
  // The truncation sentence-transformers applies, whatever the pooling.
  const std::string st_config_path = directory + "/sentence_bert_config.json";
  ASSIGN_OR_RETURN(const std::optional<Json> st_config, ReadJsonIfPresent(st_config_path, false));
  if (st_config.has_value()) {
    const auto max_seq = st_config->find("max_seq_length");
    if (max_seq != st_config->end() && !max_seq->is_null()) {
      if (!max_seq->is_number_integer() || max_seq->get<int64_t>() < 2 ||
          max_seq->get<int64_t>() > (1 << 20)) {
        return absl::InvalidArgumentError(absl::StrCat(
            st_config_path, ": \"max_seq_length\" must be an integer >= 2, got ", max_seq->dump()));
      }
      result.max_seq_length = max_seq->get<int>();
    }
  }
  const bool transformer_then_pooling =
      kinds.size() >= 2 && kinds[0] == "Transformer" && kinds[1] == "Pooling";
  const bool rest_normalizes = kinds.size() == 3 && kinds[2] == "Normalize";
  if (!transformer_then_pooling || (kinds.size() > 2 && !rest_normalizes)) {
    result.note = absl::StrCat("modules.json: ", absl::StrJoin(kinds, ", "),
                               "; no head computes more than Transformer, Pooling, Normalize");
    return result;
  }
  const std::string pooling_path = absl::StrCat(directory, "/", pooling_dir, "/config.json");
  ASSIGN_OR_RETURN(const Json pooling, ReadJson(pooling_path, false));
  ASSIGN_OR_RETURN(const std::vector<std::string> modes, PoolingModes(pooling, pooling_path));
  // "include_prompt": false leaves the tokens of a prompt that sentence-transformers put in
  // front of the text out of the pooling, where it put one; the server pools every token it
  // is given. Without prompts the two agree.
  const auto include_prompt = pooling.find("include_prompt");
  const bool prompt_left_out = include_prompt != pooling.end() && include_prompt->is_boolean() &&
                               !include_prompt->get<bool>();
  const bool whole_input = !prompt_left_out || result.prompts.empty();
  const bool one_mode = modes.size() == 1 && whole_input;
  if (one_mode && modes[0] == "mean") {
    result.pooling = SentenceEmbedding::Pooling::kMean;
  } else if (one_mode && modes[0] == "cls") {
    result.pooling = SentenceEmbedding::Pooling::kCls;
  } else {
    result.note = absl::StrCat(
        pooling_dir, "/config.json: pooling ", modes.empty() ? "none" : absl::StrJoin(modes, " + "),
        whole_input ? "" : " without the prompts' tokens", ", which no head computes");
    return result;
  }
  result.normalize = rest_normalizes;
  result.note = absl::StrCat("modules.json, ", pooling_dir, "/config.json");
  return result;
}

void Classifier::Apply(const float* x, int hidden, float* logits) const {
  for (int label = 0; label < num_labels(); ++label) {
    const float* w = weight.data.data() + static_cast<size_t>(label) * hidden;
    double sum = bias.data[label];
    for (int k = 0; k < hidden; ++k) sum += static_cast<double>(w[k]) * x[k];
    logits[label] = static_cast<float>(sum);
  }
}

void Classifier::ApplyToRows(const float* x, int rows, int hidden, float* logits) const {
  const int labels = num_labels();
  for (int r = 0; r < rows; ++r) {
    const float* row = x + static_cast<size_t>(r) * hidden;
    for (int label = 0; label < labels; ++label) {
      const float* w = weight.data.data() + static_cast<size_t>(label) * hidden;
      float partial[8] = {};
      int k = 0;
      for (; k + 8 <= hidden; k += 8) {
        for (int j = 0; j < 8; ++j) partial[j] += w[k + j] * row[k + j];
      }
      float sum = 0;
      for (; k < hidden; ++k) sum += w[k] * row[k];
      for (float p : partial) sum += p;
      logits[static_cast<size_t>(r) * labels + label] = sum + bias.data[label];
    }
  }
}

Model RandomModel(const ModelConfig& c, uint64_t seed) {
  Model model;
  model.name = absl::StrCat("random-L", c.num_layers, "-H", c.hidden_size, "-A", c.num_heads, "-I",
                            c.intermediate_size);
  model.config = c;
  Random rng(seed);
  const int64_t h = c.hidden_size;
  const int64_t inter = c.intermediate_size;
  ModelWeights& w = model.weights;
  w.word_embeddings = RandomTensor(rng, {c.vocab_size, h});
  w.position_embeddings = RandomTensor(rng, {c.max_position_embeddings, h});
  w.token_type_embeddings = RandomTensor(rng, {c.type_vocab_size, h});
  w.embedding_norm_gamma = Filled({h}, 1.0f);
  w.embedding_norm_beta = Filled({h}, 0.0f);
  w.layers.resize(c.num_layers);
  // Biases are drawn too (BERT starts them at zero) so that tests exercise every bias add.
  for (LayerWeights& l : w.layers) {
    l.qkv_weight = RandomTensor(rng, {3 * h, h});
    l.qkv_bias = RandomTensor(rng, {3 * h});
    l.attention_output_weight = RandomTensor(rng, {h, h});
    l.attention_output_bias = RandomTensor(rng, {h});
    l.attention_norm_gamma = Filled({h}, 1.0f);
    l.attention_norm_beta = Filled({h}, 0.0f);
    l.intermediate_weight = RandomTensor(rng, {inter, h});
    l.intermediate_bias = RandomTensor(rng, {inter});
    l.output_weight = RandomTensor(rng, {h, inter});
    l.output_bias = RandomTensor(rng, {h});
    l.output_norm_gamma = Filled({h}, 1.0f);
    l.output_norm_beta = Filled({h}, 0.0f);
  }
  w.has_pooler = true;
  w.pooler_weight = RandomTensor(rng, {h, h});
  w.pooler_bias = RandomTensor(rng, {h});
  return model;
}

size_t ReleaseLinearWeights(Model* model) {
  size_t bytes = 0;
  const auto release = [&bytes](HostTensor& t) {
    bytes += t.data.size() * sizeof(float);
    std::vector<float>().swap(t.data);  // clear() would keep the allocation
    t.shape.clear();
  };
  for (LayerWeights& l : model->weights.layers) {
    release(l.qkv_weight);
    release(l.attention_output_weight);
    release(l.intermediate_weight);
    release(l.output_weight);
  }
  release(model->weights.pooler_weight);
  return bytes;
}

}  // namespace bert
