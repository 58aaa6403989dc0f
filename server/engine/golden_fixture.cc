#include "server/engine/golden_fixture.h"

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/util/status_macros.h"

namespace bert {

absl::StatusOr<GoldenFixture> LoadGoldenFixture(const std::string& name) {
  const std::string dir = "tests/golden/" + name;
  ASSIGN_OR_RETURN(Model model, LoadModel(dir));
  ASSIGN_OR_RETURN(SafetensorsFile expected, SafetensorsFile::Open(dir + "/expected.safetensors"));
  std::vector<int64_t> shape;
  ASSIGN_OR_RETURN(std::vector<int32_t> words, expected.ReadInt32("input_word_ids", &shape));
  ASSIGN_OR_RETURN(std::vector<int32_t> mask, expected.ReadInt32("input_mask", nullptr));
  ASSIGN_OR_RETURN(std::vector<int32_t> types, expected.ReadInt32("input_type_ids", nullptr));
  if (shape.size() != 2 || mask.size() != words.size() || types.size() != words.size()) {
    return absl::InvalidArgumentError(absl::StrCat(dir, ": inputs are not three [B, S] tensors"));
  }
  const int b = static_cast<int>(shape[0]), s = static_cast<int>(shape[1]);

  GoldenFixture fixture{
      std::make_shared<const Model>(std::move(model)), {}, {}, std::move(expected)};
  for (int i = 0; i < b; ++i) {
    const int32_t* row = words.data() + i * s;
    int valid = 0;
    while (valid < s && mask[i * s + valid] == 1) ++valid;
    for (int j = valid; j < s; ++j) {
      if (row[j] != 0 || types[i * s + j] != 0) {
        return absl::InvalidArgumentError(
            absl::StrCat(dir, ": row ", i, " has a non-zero id at padding position ", j));
      }
    }
    fixture.batch.Add(absl::MakeConstSpan(row, valid),
                      absl::MakeConstSpan(types.data() + i * s, valid), s);
  }
  fixture.selection.pooled = true;
  fixture.selection.sequence = true;
  fixture.selection.cls = true;
  for (int l = 0; l < fixture.model->config.num_layers; ++l) fixture.selection.layers.push_back(l);
  return fixture;
}

}  // namespace bert
