// bert_encode: runs a model directory over TF-Hub-style inputs or text and writes TF-Hub-style
// outputs.
//
//   bert_encode --model_dir=DIR (--inputs=IN.safetensors | --text=IN.jsonl [--vocab=FILE]
//       [--seq_length=128] [--lowercase=auto|true|false] [--truncation=truncate|longest_first])
//       --output=OUT.safetensors
//       [--backend=auto|cpu|cuda] [--dtype=float32|float16|bfloat16] [--threads=N]
//
// IN.safetensors holds input_word_ids, input_mask, input_type_ids (int32 [B, S]). IN.jsonl
// holds one JSON object per line, {"text_a": "...", "text_b": "..."} (text_b optional), which
// is tokenized (--vocab, default DIR/vocab.txt; --lowercase resolved as the server does) and
// packed to
// --seq_length as the server does (pairs truncated round robin, TF Hub's, or longest_first,
// Hugging Face's); the packed int32 [B, S] inputs are written to OUT too.
// OUT gets sequence_output [B, S, H], pooled_output [B, H] (when the model has a pooler),
// encoder_outputs.0 .. encoder_outputs.{L-1} [B, S, H] and, for a model with a
// sequence-classification head, logits [B, num_labels] (as the server's HEAD_LOGITS), or with
// a token-classification head, token_logits [B, S, num_labels] (as HEAD_TOKEN_LOGITS), all
// float32, padding rows included.
// Sequences run in chunks of --batch_size.
#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "kernels/cpu/blas_core.h"
#include "server/engine/engine_factory.h"
#include "server/engine/model.h"
#include "server/engine/safetensors.h"
#include "server/text/lowercase.h"
#include "server/text/tokenizer.h"
#include "server/util/status_macros.h"
#include "tools/encode_io.h"

ABSL_FLAG(std::string, model_dir, "", "model directory (config.json, model.safetensors)");
ABSL_FLAG(std::string, inputs, "",
          "input safetensors (input_word_ids, input_mask, input_type_ids)");
ABSL_FLAG(std::string, text, "",
          "input JSON lines ({\"text_a\": ..., \"text_b\": ...}); instead of --inputs");
ABSL_FLAG(std::string, vocab, "", "WordPiece vocabulary for --text; default <model_dir>/vocab.txt");
ABSL_FLAG(int, seq_length, 128, "packed sequence length for --text (>= 2)");
ABSL_FLAG(std::string, lowercase, "auto",
          "--text: lowercase and strip accents: auto (as bert_server: tokenizer_config.json, else "
          "the vocabulary), true, false");
ABSL_FLAG(std::string, truncation, "truncate",
          "--text: how a pair is cut to --seq_length: truncate (TF Hub's round robin) or "
          "longest_first (Hugging Face's)");
ABSL_FLAG(std::string, output, "", "output safetensors to write");
ABSL_FLAG(std::string, backend, "auto", "auto, cpu or cuda");
ABSL_FLAG(std::string, dtype, "float32",
          "float32, float16 (cuda only) or bfloat16 (cuda, or cpu with Intel AMX)");
ABSL_FLAG(int, threads, 0, "CPU threads (0: all available cores)");
ABSL_FLAG(int, batch_size, 32, "sequences per engine call");

namespace bert {
namespace {

absl::Status Run() {
  const std::string model_dir = absl::GetFlag(FLAGS_model_dir);
  const std::string inputs_path = absl::GetFlag(FLAGS_inputs);
  const std::string text_path = absl::GetFlag(FLAGS_text);
  const std::string output_path = absl::GetFlag(FLAGS_output);
  if (model_dir.empty() || output_path.empty() || inputs_path.empty() == text_path.empty()) {
    return absl::InvalidArgumentError(
        "--model_dir, --output and exactly one of --inputs and --text are required");
  }
  const int batch_size = absl::GetFlag(FLAGS_batch_size);
  if (batch_size < 1) return absl::InvalidArgumentError("--batch_size must be >= 1");

  ASSIGN_OR_RETURN(Model loaded, LoadModel(model_dir));
  auto model = std::make_shared<const Model>(std::move(loaded));
  PaddedInputs inputs;
  if (text_path.empty()) {
    ASSIGN_OR_RETURN(inputs, ReadPaddedInputs(inputs_path));
  } else {
    std::string vocab = absl::GetFlag(FLAGS_vocab);
    if (vocab.empty()) vocab = model_dir + "/vocab.txt";
    BertTokenizer::Options tokenizer_options;
    ASSIGN_OR_RETURN(tokenizer_options.lowercase,
                     ResolveLowercase(absl::GetFlag(FLAGS_lowercase), model_dir, vocab));
    ASSIGN_OR_RETURN(std::unique_ptr<BertTokenizer> tokenizer,
                     BertTokenizer::Load(vocab, tokenizer_options));
    const std::string truncation = absl::GetFlag(FLAGS_truncation);
    if (truncation != "truncate" && truncation != "longest_first") {
      return absl::InvalidArgumentError("--truncation: truncate or longest_first");
    }
    int truncated = 0;
    ASSIGN_OR_RETURN(
        inputs, ReadTextInputs(text_path, *tokenizer, absl::GetFlag(FLAGS_seq_length), &truncated,
                               truncation == "longest_first" ? TruncationPolicy::kLongestFirst
                                                             : TruncationPolicy::kTruncate));
    std::fprintf(stderr, "bert_encode: %d text inputs packed to length %d (%d truncated)\n",
                 inputs.batch, inputs.seq_length, truncated);
  }

  EngineOptions options;
  options.backend = absl::GetFlag(FLAGS_backend);
  ASSIGN_OR_RETURN(options.dtype, ParseDType(absl::GetFlag(FLAGS_dtype)));
  options.cpu_threads = absl::GetFlag(FLAGS_threads);
  ASSIGN_OR_RETURN(std::unique_ptr<Engine> engine, CreateEngine(model, options));
  const EngineInfo info = engine->info();
  std::fprintf(stderr, "bert_encode: model %s on %s (%s, %s)\n", model->name.c_str(),
               info.backend.c_str(), info.device.c_str(), DTypeName(info.dtype));

  const ModelConfig& c = engine->config();
  const int64_t b = inputs.batch, s = inputs.seq_length, h = c.hidden_size;
  OutputSelection selection;
  selection.sequence = true;
  selection.pooled = engine->has_pooler();
  for (int l = 0; l < c.num_layers; ++l) selection.layers.push_back(l);

  // One chunk: the engine's buffers become the output as they are. Several: gathered.
  const bool one_chunk = b <= batch_size;
  std::vector<float> sequence, pooled;
  std::vector<std::vector<float>> layers(c.num_layers);
  if (!one_chunk) {
    sequence.resize(b * s * h);
    pooled.resize(selection.pooled ? b * h : 0);
    for (auto& layer : layers) layer.resize(b * s * h);
  }
  EncoderOutput out;
  for (int first = 0; first < b; first += batch_size) {
    const int count = static_cast<int>(std::min<int64_t>(batch_size, b - first));
    ASSIGN_OR_RETURN(EncoderBatch batch, ToEncoderBatch(inputs, first, count));
    absl::Status status = engine->Encode(batch, selection, &out);
    if (!status.ok()) {
      return absl::Status(status.code(), absl::StrCat("sequences ", first, "..", first + count - 1,
                                                      ": ", status.message()));
    }
    if (one_chunk) {
      sequence = std::move(out.sequence);
      pooled = std::move(out.pooled);
      layers = std::move(out.layers);
      break;
    }
    std::copy(out.sequence.begin(), out.sequence.end(), sequence.begin() + first * s * h);
    std::copy(out.pooled.begin(), out.pooled.end(), pooled.begin() + first * h);
    for (int l = 0; l < c.num_layers; ++l) {
      std::copy(out.layers[l].begin(), out.layers[l].end(), layers[l].begin() + first * s * h);
    }
  }
  out = EncoderOutput();

  SafetensorsWriter writer;
  writer.SetMetadata("model", model->name);
  writer.SetMetadata("backend", info.backend);
  writer.SetMetadata("dtype", DTypeName(info.dtype));
  if (!text_path.empty()) {  // Show what was encoded.
    writer.AddInt32("input_word_ids", {b, s}, inputs.word_ids);
    writer.AddInt32("input_mask", {b, s}, inputs.mask);
    writer.AddInt32("input_type_ids", {b, s}, inputs.type_ids);
  }
  const Classifier& classifier = model->classifier;
  if (classifier.present() && classifier.per_token) {
    const int64_t labels = classifier.num_labels();
    std::vector<float> logits(b * s * labels);
    classifier.ApplyToRows(sequence.data(), static_cast<int>(b * s), static_cast<int>(h),
                           logits.data());
    writer.AddFloat32("token_logits", {b, s, labels}, std::move(logits));
  }
  writer.AddFloat32("sequence_output", {b, s, h}, std::move(sequence));
  if (classifier.present() && !classifier.per_token && selection.pooled) {
    const int64_t labels = classifier.num_labels();
    std::vector<float> logits(b * labels);
    for (int64_t i = 0; i < b; ++i) {
      classifier.Apply(pooled.data() + i * h, static_cast<int>(h), logits.data() + i * labels);
    }
    writer.AddFloat32("logits", {b, labels}, std::move(logits));
  }
  if (selection.pooled) writer.AddFloat32("pooled_output", {b, h}, std::move(pooled));
  for (int l = 0; l < c.num_layers; ++l) {
    writer.AddFloat32(absl::StrCat("encoder_outputs.", l), {b, s, h}, std::move(layers[l]));
  }
  if (!selection.pooled) {
    std::fprintf(stderr, "bert_encode: the model has no pooler; pooled_output not written\n");
  }
  return writer.Write(output_path);
}

}  // namespace
}  // namespace bert

int main(int argc, char** argv) {
  bert::cpu::ReexecForBetterBlasCore(argv);  // first: may execute the program again
  absl::SetProgramUsageMessage(
      "bert_encode --model_dir=DIR (--inputs=IN.safetensors | --text=IN.jsonl [--vocab=FILE] "
      "[--seq_length=128] [--lowercase=auto|true|false] [--truncation=truncate|longest_first]) "
      "--output=OUT.safetensors "
      "[--backend=auto|cpu|cuda] "
      "[--dtype=float32|float16|bfloat16] [--threads=N] [--batch_size=32]");
  absl::ParseCommandLine(argc, argv);
  absl::Status status = bert::Run();
  if (!status.ok()) {
    std::fprintf(stderr, "bert_encode: %s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}
