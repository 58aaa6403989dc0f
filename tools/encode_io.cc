#include "tools/encode_io.h"

#include <fstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "server/engine/safetensors.h"
#include "server/text/packer.h"
#include "server/util/status_macros.h"
#include "tools/text_pair_line.h"

namespace bert {

absl::StatusOr<PaddedInputs> ReadPaddedInputs(const std::string& path) {
  ASSIGN_OR_RETURN(SafetensorsFile file, SafetensorsFile::Open(path));
  PaddedInputs in;
  std::vector<int64_t> shape, mask_shape, type_shape;
  ASSIGN_OR_RETURN(in.word_ids, file.ReadInt32("input_word_ids", &shape));
  ASSIGN_OR_RETURN(in.mask, file.ReadInt32("input_mask", &mask_shape));
  ASSIGN_OR_RETURN(in.type_ids, file.ReadInt32("input_type_ids", &type_shape));
  if (shape.size() != 2 || shape[0] < 1 || shape[1] < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": input_word_ids must be [batch, seq_length] with both >= 1"));
  }
  if (mask_shape != shape || type_shape != shape) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": input_mask and input_type_ids must have the shape of input_word_ids"));
  }
  in.batch = static_cast<int>(shape[0]);
  in.seq_length = static_cast<int>(shape[1]);
  for (int b = 0; b < in.batch; ++b) {
    const int32_t* m = in.mask.data() + static_cast<int64_t>(b) * in.seq_length;
    int valid = 0;
    while (valid < in.seq_length && m[valid] == 1) ++valid;
    for (int j = valid; j < in.seq_length; ++j) {
      if (m[j] != 0) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": input_mask row ", b,
                                                       " is not ones followed by zeros (value ",
                                                       m[j], " at ", j, ")"));
      }
    }
    if (valid == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": input_mask row ", b, " has no real token"));
    }
  }
  return in;
}

absl::StatusOr<PaddedInputs> ReadTextInputs(const std::string& path, const BertTokenizer& tokenizer,
                                            int seq_length, int* num_truncated,
                                            TruncationPolicy policy) {
  if (seq_length < 2) return absl::InvalidArgumentError("seq_length must be at least 2");
  std::ifstream file(path, std::ios::binary);
  if (!file) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  PaddedInputs in;
  in.seq_length = seq_length;
  int truncated = 0;
  PackScratch scratch;
  std::vector<int32_t> word_ids, mask, type_ids;
  std::string line;
  for (int line_number = 1; std::getline(file, line); ++line_number) {
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    auto bad = [&](absl::string_view why) {
      return absl::InvalidArgumentError(absl::StrCat(path, ":", line_number, ": ", why));
    };
    absl::StatusOr<TextPair> pair = ParseTextPairLine(line);
    if (!pair.ok()) return bad(pair.status().message());
    const absl::string_view b_text =
        pair->text_b ? absl::string_view(*pair->text_b) : absl::string_view();
    absl::StatusOr<PackedInput> packed =
        TokenizeAndPack(tokenizer, pair->text_a, pair->text_b ? &b_text : nullptr, seq_length,
                        policy, /*context=*/"", &scratch);
    if (!packed.ok()) return bad(packed.status().message());
    if (packed->truncated) ++truncated;
    PadToLength(*packed, seq_length, tokenizer.pad_id(), &word_ids, &mask, &type_ids);
    in.word_ids.insert(in.word_ids.end(), word_ids.begin(), word_ids.end());
    in.mask.insert(in.mask.end(), mask.begin(), mask.end());
    in.type_ids.insert(in.type_ids.end(), type_ids.begin(), type_ids.end());
    ++in.batch;
  }
  if (file.bad()) return absl::DataLossError(absl::StrCat(path, ": read error"));
  if (in.batch == 0) return absl::InvalidArgumentError(absl::StrCat(path, ": no input lines"));
  if (num_truncated != nullptr) *num_truncated = truncated;
  return in;
}

absl::StatusOr<EncoderBatch> ToEncoderBatch(const PaddedInputs& in, int first, int count) {
  if (first < 0 || count < 0 || first + count > in.batch) {
    return absl::InvalidArgumentError("ToEncoderBatch: row range out of bounds");
  }
  EncoderBatch batch;
  batch.cu_rows.push_back(0);
  const int s = in.seq_length;
  for (int b = first; b < first + count; ++b) {
    const int64_t offset = static_cast<int64_t>(b) * s;
    int valid = 0;
    while (valid < s && in.mask[offset + valid] == 1) ++valid;
    batch.word_ids.insert(batch.word_ids.end(), in.word_ids.begin() + offset,
                          in.word_ids.begin() + offset + s);
    batch.type_ids.insert(batch.type_ids.end(), in.type_ids.begin() + offset,
                          in.type_ids.begin() + offset + s);
    batch.cu_rows.push_back(batch.cu_rows.back() + s);
    batch.num_valid.push_back(valid);
  }
  return batch;
}

}  // namespace bert
