// Input and output of the offline encoder (bert_encode): TF-Hub-style padded tensors.
//
// Inputs are `input_word_ids`, `input_mask`, `input_type_ids` (int32 [B, S]); each mask row
// must be ones then zeros (at least one 1). A row becomes one sequence of S rows whose first
// sum(mask) rows are real tokens; the rest are padding rows, computed as queries only, as TF
// Hub's BERT encoder returns them. Other input sources (text, once the tokenizer lands)
// produce the same PaddedInputs.
#ifndef BERT_TOOLS_ENCODE_IO_H_
#define BERT_TOOLS_ENCODE_IO_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/engine/engine.h"

namespace bert {

struct PaddedInputs {
  int batch = 0;
  int seq_length = 0;
  std::vector<int32_t> word_ids;  // [batch, seq_length]
  std::vector<int32_t> mask;      // [batch, seq_length]
  std::vector<int32_t> type_ids;  // [batch, seq_length]
};

absl::StatusOr<PaddedInputs> ReadPaddedInputs(const std::string& path);

// Rows [first, first + count) of `inputs` as an engine batch (padding rows keep the ids given).
absl::StatusOr<EncoderBatch> ToEncoderBatch(const PaddedInputs& inputs, int first, int count);

}  // namespace bert

#endif  // BERT_TOOLS_ENCODE_IO_H_
