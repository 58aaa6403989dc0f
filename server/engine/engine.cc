#include "server/engine/engine.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace bert {

const char* DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return "float32";
    case DType::kFloat16:
      return "float16";
    case DType::kBFloat16:
      return "bfloat16";
  }
  return "unknown";
}

int EncoderBatch::max_rows() const {
  int result = 0;
  for (int i = 0; i < num_sequences(); ++i) result = std::max(result, rows(i));
  return result;
}

void EncoderBatch::Add(absl::Span<const int32_t> words, absl::Span<const int32_t> types,
                       int padded_rows) {
  if (cu_rows.empty()) cu_rows.push_back(0);
  const int n = static_cast<int>(words.size());
  word_ids.insert(word_ids.end(), words.begin(), words.end());
  if (types.empty()) {
    type_ids.insert(type_ids.end(), n, 0);
  } else {
    // A short `types` is padded with 0 so that the row arrays stay parallel; ValidateBatch
    // has nothing to catch here because the caller's intent (type 0) is the default.
    for (int i = 0; i < n; ++i) type_ids.push_back(i < static_cast<int>(types.size()) ? types[i] : 0);
  }
  const int rows = std::max(n, padded_rows);
  word_ids.insert(word_ids.end(), rows - n, 0);
  type_ids.insert(type_ids.end(), rows - n, 0);
  cu_rows.push_back(cu_rows.back() + rows);
  num_valid.push_back(n);
}

void EncoderBatch::Clear() {
  word_ids.clear();
  type_ids.clear();
  cu_rows.clear();
  num_valid.clear();
}

absl::Status ValidateBatch(const ModelConfig& config, const EncoderBatch& batch) {
  const int n = batch.num_sequences();
  if (n == 0) {
    if (batch.cu_rows.size() > 1 || (!batch.cu_rows.empty() && batch.cu_rows[0] != 0) ||
        !batch.word_ids.empty() || !batch.type_ids.empty()) {
      return absl::InvalidArgumentError("batch: rows given without sequences");
    }
    return absl::OkStatus();
  }
  if (batch.cu_rows.size() != static_cast<size_t>(n) + 1) {
    return absl::InvalidArgumentError(absl::StrCat("batch: cu_rows has ", batch.cu_rows.size(),
                                                   " entries, expected ", n + 1));
  }
  if (batch.cu_rows[0] != 0) {
    return absl::InvalidArgumentError("batch: cu_rows[0] must be 0");
  }
  for (int i = 0; i < n; ++i) {
    const int rows = batch.cu_rows[i + 1] - batch.cu_rows[i];
    if (rows < 1) {
      return absl::InvalidArgumentError(absl::StrCat("batch: sequence ", i, " has ", rows,
                                                     " rows (cu_rows must increase)"));
    }
    if (rows > config.max_position_embeddings) {
      return absl::InvalidArgumentError(
          absl::StrCat("batch: sequence ", i, " has ", rows,
                       " rows, more than max_position_embeddings = ",
                       config.max_position_embeddings));
    }
    if (batch.num_valid[i] < 1 || batch.num_valid[i] > rows) {
      return absl::InvalidArgumentError(absl::StrCat("batch: sequence ", i, " has num_valid ",
                                                     batch.num_valid[i], " outside [1, ", rows,
                                                     "]"));
    }
  }
  const size_t total = static_cast<size_t>(batch.cu_rows.back());
  if (batch.word_ids.size() != total || batch.type_ids.size() != total) {
    return absl::InvalidArgumentError(absl::StrCat(
        "batch: ", batch.word_ids.size(), " word ids and ", batch.type_ids.size(),
        " type ids for ", total, " rows"));
  }
  for (size_t r = 0; r < total; ++r) {
    if (batch.word_ids[r] < 0 || batch.word_ids[r] >= config.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("batch: word id ", batch.word_ids[r],
                                                     " at row ", r, " outside [0, ",
                                                     config.vocab_size, ")"));
    }
    if (batch.type_ids[r] < 0 || batch.type_ids[r] >= config.type_vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("batch: type id ", batch.type_ids[r],
                                                     " at row ", r, " outside [0, ",
                                                     config.type_vocab_size, ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateSelection(const ModelConfig& config, bool has_pooler,
                               const OutputSelection& selection) {
  if (selection.pooled && !has_pooler) {
    return absl::InvalidArgumentError(
        "selection: pooled output requested but the model has no pooler weights");
  }
  for (size_t i = 0; i < selection.layers.size(); ++i) {
    const int layer = selection.layers[i];
    if (layer < 0 || layer >= config.num_layers) {
      return absl::InvalidArgumentError(absl::StrCat("selection: layer ", layer,
                                                     " outside [0, ", config.num_layers, ")"));
    }
    if (i > 0 && layer <= selection.layers[i - 1]) {
      return absl::InvalidArgumentError("selection: layers must be sorted and unique");
    }
  }
  return absl::OkStatus();
}

}  // namespace bert
