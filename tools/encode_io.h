// Input and output of the offline encoder (bert_encode): TF-Hub-style padded tensors.
//
// Inputs are `input_word_ids`, `input_mask`, `input_type_ids` (int32 [B, S]); each mask row
// must be ones then zeros (at least one 1). A row becomes one sequence of S rows whose first
// sum(mask) rows are real tokens; the rest are padding rows, computed as queries only, as TF
// Hub's BERT encoder returns them. Text input (ReadTextInputs) produces the same PaddedInputs.
#ifndef BERT_TOOLS_ENCODE_IO_H_
#define BERT_TOOLS_ENCODE_IO_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/engine/engine.h"
#include "server/text/packer.h"
#include "server/text/tokenizer.h"

namespace bert {

struct PaddedInputs {
  int batch = 0;
  int seq_length = 0;
  std::vector<int32_t> word_ids;  // [batch, seq_length]
  std::vector<int32_t> mask;      // [batch, seq_length]
  std::vector<int32_t> type_ids;  // [batch, seq_length]
};

absl::StatusOr<PaddedInputs> ReadPaddedInputs(const std::string& path);

// Reads JSON lines, one object per line: {"text_a": "...", "text_b": "..."} (text_b optional
// or null). Each line is tokenized and packed as the server does it (server/text/packer.h:
// TF-Hub packing, truncation to seq_length by `policy`: round robin (kTruncate) or Hugging
// Face's longest_first) and padded to seq_length. Blank lines
// are skipped. A bad line (bad JSON, missing or non-string text_a, non-string text_b, invalid
// UTF-8) is an INVALID_ARGUMENT error naming the 1-based line number. `num_truncated`, if not
// null, receives how many lines lost tokens to truncation.
absl::StatusOr<PaddedInputs> ReadTextInputs(const std::string& path, const BertTokenizer& tokenizer,
                                            int seq_length, int* num_truncated,
                                            TruncationPolicy policy = TruncationPolicy::kTruncate);

// Rows [first, first + count) of `inputs` as an engine batch (padding rows keep the ids given).
absl::StatusOr<EncoderBatch> ToEncoderBatch(const PaddedInputs& inputs, int first, int count);

}  // namespace bert

#endif  // BERT_TOOLS_ENCODE_IO_H_
