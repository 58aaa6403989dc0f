#include "server/text/piece_table.h"

namespace bert {
namespace text_internal {

void PieceTable::Build(const std::vector<std::pair<absl::string_view, int32_t>>& entries) {
  size_t capacity = 16;
  while (capacity < entries.size() * 2) capacity *= 2;  // Load factor <= 0.5.
  slots_.assign(capacity, Slot());
  entries_.clear();
  entries_.reserve(entries.size());
  mask_ = capacity - 1;
  for (const auto& [key, id] : entries) {
    const uint64_t h = Hash(key.data(), key.size());
    const uint32_t tag = static_cast<uint32_t>(h >> 32);
    for (uint64_t i = h & mask_;; i = (i + 1) & mask_) {
      Slot& s = slots_[i];
      if (s.entry == 0) {
        entries_.push_back(Entry{key, id});
        s = Slot{tag, static_cast<uint32_t>(entries_.size())};
        break;
      }
      Entry& e = entries_[s.entry - 1];
      if (s.tag == tag && e.key == key) {
        e.id = id;
        break;
      }
    }
  }
}

}  // namespace text_internal
}  // namespace bert
