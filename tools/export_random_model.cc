// export_random_model: writes a seeded random-weights BERT (RandomModel) as a model directory
// (config.json, model.safetensors), e.g. to run the same BERT-base weights in another runtime.
//
//   export_random_model --out=DIR [--layers=12 --hidden=768 --heads=12 --intermediate=3072
//       --vocab=30522 --max_positions=512 --seed=1]
#include <cstdio>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "server/engine/model.h"
#include "server/engine/model_writer.h"

ABSL_FLAG(std::string, out, "", "directory to write");
ABSL_FLAG(int, layers, 12, "encoder layers");
ABSL_FLAG(int, hidden, 768, "hidden size");
ABSL_FLAG(int, heads, 12, "attention heads");
ABSL_FLAG(int, intermediate, 3072, "intermediate size");
ABSL_FLAG(int, vocab, 30522, "vocabulary size");
ABSL_FLAG(int, max_positions, 512, "max_position_embeddings");
ABSL_FLAG(uint64_t, seed, 1, "weights seed (same seed, same weights)");

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const std::string out = absl::GetFlag(FLAGS_out);
  bert::ModelConfig c = bert::BertBaseConfig();
  c.num_layers = absl::GetFlag(FLAGS_layers);
  c.hidden_size = absl::GetFlag(FLAGS_hidden);
  c.num_heads = absl::GetFlag(FLAGS_heads);
  c.intermediate_size = absl::GetFlag(FLAGS_intermediate);
  c.vocab_size = absl::GetFlag(FLAGS_vocab);
  c.max_position_embeddings = absl::GetFlag(FLAGS_max_positions);
  if (out.empty() || c.num_layers < 1 || c.hidden_size < 1 || c.num_heads < 1 ||
      c.hidden_size % c.num_heads != 0 || c.intermediate_size < 1 || c.vocab_size < 1 ||
      c.max_position_embeddings < 1) {
    std::fprintf(stderr, "export_random_model: need --out and a valid shape "
                         "(hidden a multiple of heads)\n");
    return 2;
  }
  const bert::Model model = bert::RandomModel(c, absl::GetFlag(FLAGS_seed));
  absl::Status status = bert::SaveModel(model, out);
  if (!status.ok()) {
    std::fprintf(stderr, "export_random_model: %s\n", status.ToString().c_str());
    return 1;
  }
  std::fprintf(stderr, "export_random_model: %s written to %s\n", model.name.c_str(), out.c_str());
  return 0;
}
