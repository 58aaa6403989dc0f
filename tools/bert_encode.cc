// bert_encode: runs a model directory over TF-Hub-style inputs and writes TF-Hub-style outputs.
//
//   bert_encode --model_dir=DIR --inputs=IN.safetensors --output=OUT.safetensors \
//       [--backend=auto|cpu|cuda] [--dtype=float32|float16|bfloat16] [--threads=N]
//
// IN holds input_word_ids, input_mask, input_type_ids (int32 [B, S]); OUT gets
// sequence_output [B, S, H], pooled_output [B, H] (when the model has a pooler) and
// encoder_outputs.0 .. encoder_outputs.{L-1} [B, S, H], all float32, padding rows included.
// Sequences run in chunks of --batch_size.
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "server/engine/engine_factory.h"
#include "server/engine/model.h"
#include "server/engine/safetensors.h"
#include "server/util/status_macros.h"
#include "tools/encode_io.h"

ABSL_FLAG(std::string, model_dir, "", "model directory (config.json, model.safetensors)");
ABSL_FLAG(std::string, inputs, "", "input safetensors (input_word_ids, input_mask, input_type_ids)");
ABSL_FLAG(std::string, output, "", "output safetensors to write");
ABSL_FLAG(std::string, backend, "auto", "auto, cpu or cuda");
ABSL_FLAG(std::string, dtype, "float32", "float32, float16 or bfloat16 (cuda only)");
ABSL_FLAG(int, threads, 0, "CPU threads (0: all available cores)");
ABSL_FLAG(int, batch_size, 32, "sequences per engine call");

namespace bert {
namespace {

absl::Status Run() {
  const std::string model_dir = absl::GetFlag(FLAGS_model_dir);
  const std::string inputs_path = absl::GetFlag(FLAGS_inputs);
  const std::string output_path = absl::GetFlag(FLAGS_output);
  if (model_dir.empty() || inputs_path.empty() || output_path.empty()) {
    return absl::InvalidArgumentError("--model_dir, --inputs and --output are required");
  }
  const int batch_size = absl::GetFlag(FLAGS_batch_size);
  if (batch_size < 1) return absl::InvalidArgumentError("--batch_size must be >= 1");

  ASSIGN_OR_RETURN(Model loaded, LoadModel(model_dir));
  auto model = std::make_shared<const Model>(std::move(loaded));
  EngineOptions options;
  options.backend = absl::GetFlag(FLAGS_backend);
  ASSIGN_OR_RETURN(options.dtype, ParseDType(absl::GetFlag(FLAGS_dtype)));
  options.cpu_threads = absl::GetFlag(FLAGS_threads);
  ASSIGN_OR_RETURN(std::unique_ptr<Engine> engine, CreateEngine(model, options));
  const EngineInfo info = engine->info();
  std::fprintf(stderr, "bert_encode: model %s on %s (%s, %s)\n", model->name.c_str(),
               info.backend.c_str(), info.device.c_str(), DTypeName(info.dtype));

  // Text input (JSON lines of text_a / text_b through the tokenizer) will produce the same
  // PaddedInputs here.
  ASSIGN_OR_RETURN(PaddedInputs inputs, ReadPaddedInputs(inputs_path));

  const ModelConfig& c = engine->config();
  const int64_t b = inputs.batch, s = inputs.seq_length, h = c.hidden_size;
  OutputSelection selection;
  selection.sequence = true;
  selection.pooled = engine->has_pooler();
  for (int l = 0; l < c.num_layers; ++l) selection.layers.push_back(l);

  std::vector<float> sequence(b * s * h);
  std::vector<float> pooled(selection.pooled ? b * h : 0);
  std::vector<std::vector<float>> layers(c.num_layers, std::vector<float>(b * s * h));
  EncoderOutput out;
  for (int first = 0; first < b; first += batch_size) {
    const int count = static_cast<int>(std::min<int64_t>(batch_size, b - first));
    ASSIGN_OR_RETURN(EncoderBatch batch, ToEncoderBatch(inputs, first, count));
    absl::Status status = engine->Encode(batch, selection, &out);
    if (!status.ok()) {
      return absl::Status(status.code(), absl::StrCat("sequences ", first, "..",
                                                      first + count - 1, ": ",
                                                      status.message()));
    }
    std::copy(out.sequence.begin(), out.sequence.end(), sequence.begin() + first * s * h);
    std::copy(out.pooled.begin(), out.pooled.end(), pooled.begin() + first * h);
    for (int l = 0; l < c.num_layers; ++l) {
      std::copy(out.layers[l].begin(), out.layers[l].end(), layers[l].begin() + first * s * h);
    }
  }

  SafetensorsWriter writer;
  writer.SetMetadata("model", model->name);
  writer.SetMetadata("backend", info.backend);
  writer.SetMetadata("dtype", DTypeName(info.dtype));
  writer.AddFloat32("sequence_output", {b, s, h}, sequence);
  if (selection.pooled) writer.AddFloat32("pooled_output", {b, h}, pooled);
  for (int l = 0; l < c.num_layers; ++l) {
    writer.AddFloat32(absl::StrCat("encoder_outputs.", l), {b, s, h}, layers[l]);
  }
  if (!selection.pooled) {
    std::fprintf(stderr, "bert_encode: the model has no pooler; pooled_output not written\n");
  }
  return writer.Write(output_path);
}

}  // namespace
}  // namespace bert

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "bert_encode --model_dir=DIR --inputs=IN.safetensors --output=OUT.safetensors "
      "[--backend=auto|cpu|cuda] [--dtype=float32|float16|bfloat16] [--threads=N]");
  absl::ParseCommandLine(argc, argv);
  absl::Status status = bert::Run();
  if (!status.ok()) {
    std::fprintf(stderr, "bert_encode: %s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}
