#include "server/text/piece_table.h"

namespace bert {
namespace text_internal {

void PieceTable::Build(const std::vector<std::pair<absl::string_view, int32_t>>& entries) {
  size_t capacity = 16;
  while (capacity < entries.size() * 2) capacity *= 2;  // Load factor <= 0.5.
  slots_.assign(capacity, Slot());
  mask_ = capacity - 1;
  for (const auto& [key, id] : entries) {
    const uint64_t h = Hash(key.data(), key.size());
    for (uint64_t i = h & mask_;; i = (i + 1) & mask_) {
      Slot& s = slots_[i];
      if (s.id < 0) {
        s = Slot{h, key.data(), static_cast<uint32_t>(key.size()), id};
        break;
      }
      if (s.hash == h && s.size == key.size() && std::memcmp(s.data, key.data(), s.size) == 0) {
        s.id = id;
        break;
      }
    }
  }
}

}  // namespace text_internal
}  // namespace bert
