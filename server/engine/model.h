// A BERT-architecture model: its configuration and float32 host weights.
//
// Models come from a Hugging Face-style directory (config.json, model.safetensors,
// vocab.txt) or are made with seeded random weights at any BERT shape (benchmarks).
// A Model is immutable once built; engines read it (the CPU engine keeps a reference,
// the CUDA engine copies and converts it to the device once).
#ifndef BERT_SERVER_ENGINE_MODEL_H_
#define BERT_SERVER_ENGINE_MODEL_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace bert {

enum class Activation {
  kGeluErf,   // "gelu": x * Phi(x), the exact form.
  kGeluTanh,  // "gelu_new" / "gelu_pytorch_tanh": the tanh approximation.
};

const char* ActivationName(Activation activation);

struct ModelConfig {
  int num_layers = 12;
  int hidden_size = 768;
  int num_heads = 12;
  int intermediate_size = 3072;
  int vocab_size = 30522;
  int max_position_embeddings = 512;
  int type_vocab_size = 2;
  float layer_norm_eps = 1e-12f;
  Activation activation = Activation::kGeluErf;

  int head_dim() const { return hidden_size / num_heads; }
};

// BERT-base: 12 layers, hidden 768, 12 heads, intermediate 3072, vocab 30522.
ModelConfig BertBaseConfig();

// A row-major float32 tensor on the host.
struct HostTensor {
  std::vector<int64_t> shape;
  std::vector<float> data;

  int64_t size() const { return static_cast<int64_t>(data.size()); }
};

// One encoder block. Linear weights keep the Hugging Face layout [out_features, in_features].
struct LayerWeights {
  HostTensor qkv_weight;  // [3 * hidden, hidden]: query rows, then key rows, then value rows.
  HostTensor qkv_bias;    // [3 * hidden]
  HostTensor attention_output_weight;  // [hidden, hidden]
  HostTensor attention_output_bias;    // [hidden]
  HostTensor attention_norm_gamma;     // [hidden]
  HostTensor attention_norm_beta;      // [hidden]
  HostTensor intermediate_weight;      // [intermediate, hidden]
  HostTensor intermediate_bias;        // [intermediate]
  HostTensor output_weight;            // [hidden, intermediate]
  HostTensor output_bias;              // [hidden]
  HostTensor output_norm_gamma;        // [hidden]
  HostTensor output_norm_beta;         // [hidden]
};

struct ModelWeights {
  HostTensor word_embeddings;        // [vocab, hidden]
  HostTensor position_embeddings;    // [max_positions, hidden]
  HostTensor token_type_embeddings;  // [type_vocab, hidden]
  HostTensor embedding_norm_gamma;   // [hidden]
  HostTensor embedding_norm_beta;    // [hidden]
  std::vector<LayerWeights> layers;
  // Checkpoints without a pooler (some sentence-embedding exports) cannot serve the
  // pooled/default heads.
  bool has_pooler = false;
  HostTensor pooler_weight;  // [hidden, hidden]
  HostTensor pooler_bias;    // [hidden]
};

// How a model's outputs become one sentence embedding, as its files say: the
// sentence-transformers modules (modules.json: Transformer, Pooling, optionally Normalize)
// and the Pooling module's config.json. Mean and CLS pooling are heads of their own
// (mean_pooled, cls); a model whose modules end otherwise (max pooling, a Dense layer after
// the pooling, ...) has a sentence embedding that no head computes: kUnknown.
struct SentenceEmbedding {
  enum class Pooling { kUnknown, kMean, kCls };
  Pooling pooling = Pooling::kUnknown;
  bool has_modules = false;  // The directory has a modules.json.
  bool normalize = false;    // A Normalize module follows the pooling.
  // sentence_bert_config.json's max_seq_length: the tokens ([CLS] and [SEP] included)
  // sentence-transformers truncates inputs to; LoadModel caps it at the model's positions,
  // which is also its value where modules.json is there and this is not. 0: no modules.json.
  int max_seq_length = 0;
  // config_sentence_transformers.json's prompts (name -> text put in front of a text, e.g.
  // "query" -> "query: ") and the name sentence-transformers uses when given none ("": none).
  std::map<std::string, std::string> prompts;
  std::string default_prompt_name;
  // config_sentence_transformers.json's similarity_fn_name: how the model's embeddings are
  // compared ("cosine", "dot", "euclidean" or "manhattan"); "" when it names none
  // (sentence-transformers then takes cosine).
  std::string similarity_fn_name;
  std::string note;  // Where it was read, or why it is unknown.
  // The note is a defect in those files (they are optional: the model serves without them).
  bool defective = false;
};

// A classification head: BertForSequenceClassification's `classifier` on the pooled output,
// logits = weight · pooled_output + bias (cross-encoder rerankers are such models with one
// label), or BertForTokenClassification's on each token's last-layer state (`per_token`:
// named-entity recognition and other tagging).
struct Classifier {
  HostTensor weight;  // [num_labels, hidden]; empty: the model has no classifier
  HostTensor bias;    // [num_labels]
  // config.json's id2label in id order, or "LABEL_<i>" (Hugging Face's default) without it.
  std::vector<std::string> labels;
  // config.json's problem_type: "regression", "single_label_classification" or
  // "multi_label_classification"; "" when it gives none.
  std::string problem_type;
  // The activation sentence-transformers' CrossEncoder applies to the logits, as config.json
  // names it (e.g. "torch.nn.modules.linear.Identity"); "" when it names none.
  std::string activation_function;
  // The length Hugging Face's tokenizer truncates inputs to: tokenizer_config.json's
  // model_max_length, at most max_position_embeddings (that without one).
  int max_seq_length = 0;
  // True for a token classifier (HEAD_TOKEN_LOGITS), false for a sequence one (HEAD_LOGITS).
  bool per_token = false;
  // Why a checkpoint's classifier.* is not served (e.g. a multiple-choice one); "" otherwise.
  std::string note;

  bool present() const { return !bias.data.empty(); }
  int num_labels() const { return static_cast<int>(bias.data.size()); }

  // logits[0 .. num_labels) = weight · x + bias for one input's pooled output, or one token's
  // state for a token classifier (as the engine gives it, before any normalisation; `hidden`
  // values), summed in double.
  void Apply(const float* x, int hidden, float* logits) const;
  // Apply() on each of `rows` consecutive rows of `x` (a token classifier's use):
  // logits[r * num_labels + label], summed in float32 (as Hugging Face's Linear layer) with
  // eight partial sums, which a padded request's 10^8 and more products need to stay cheap.
  void ApplyToRows(const float* x, int rows, int hidden, float* logits) const;
};

struct Model {
  std::string name;       // The directory's base name, or "random-<shape>".
  std::string directory;  // Empty for random models.
  ModelConfig config;
  ModelWeights weights;
  SentenceEmbedding sentence_embedding;
  Classifier classifier;
};

// Reads <dir>/config.json and <dir>/model.safetensors (with the classifier where the
// checkpoint has one: `classifier.weight` and `classifier.bias` of a sequence- or
// token-classification model, by config.json's architectures, labelled by its id2label; a
// multiple-choice one is left out), and the sentence-transformers files where
// present (ReadSentenceEmbedding; a defect there leaves the sentence embedding unknown and
// `defective`, with the error as its note). Every defect in the first two (missing file, bad JSON,
// missing or misshapen tensor, unsupported dtype, truncated file, corrupt header) is an error
// naming the file and tensor.
absl::StatusOr<Model> LoadModel(const std::string& directory);

// <dir>/modules.json and the Pooling module's config.json (as sentence-transformers reads it:
// its "pooling_mode" string, else the pooling_mode_* flags, mean by default), and
// sentence_bert_config.json's max_seq_length and config_sentence_transformers.json's prompts
// where given. Without modules.json: kUnknown ("no modules.json"). A file that is not valid
// JSON of the expected shape, or a Pooling module outside the directory or without its
// config.json: INVALID_ARGUMENT or NOT_FOUND naming the file.
absl::StatusOr<SentenceEmbedding> ReadSentenceEmbedding(const std::string& directory);

// A model with weights drawn from a seeded normal(0, 0.02) (LayerNorm gamma 1, beta 0),
// the initialisation BERT uses; same seed, same weights.
Model RandomModel(const ModelConfig& config, uint64_t seed);

// Frees the Linear layers' weight matrices (each layer's four and the pooler's; not biases,
// norms or embeddings), for an owner whose engine no longer reads them
// (Engine::ReadsLinearWeights); the classifier stays. Returns the bytes freed. The model can
// build no engine afterwards.
size_t ReleaseLinearWeights(Model* model);

}  // namespace bert

#endif  // BERT_SERVER_ENGINE_MODEL_H_
