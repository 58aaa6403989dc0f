// An immutable open-addressing hash table from byte strings to token ids, used for the
// WordPiece vocabulary. Keys are string_views into storage the owner keeps alive (the
// tokenizer's arena). Lookups never allocate. Thread-safe for concurrent Find() once built.
#ifndef BERT_SERVER_TEXT_PIECE_TABLE_H_
#define BERT_SERVER_TEXT_PIECE_TABLE_H_

#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"

namespace bert {
namespace text_internal {

class PieceTable {
 public:
  // Builds the table. When a key repeats, the later id wins (as in HF and BERT's
  // Python vocab loaders, which fill a dict line by line).
  void Build(const std::vector<std::pair<absl::string_view, int32_t>>& entries);

  // The id of `key`, or -1.
  int32_t Find(absl::string_view key) const {
    if (slots_.empty()) return -1;
    const uint64_t h = Hash(key.data(), key.size());
    const uint32_t tag = static_cast<uint32_t>(h >> 32);
    for (uint64_t i = h & mask_;; i = (i + 1) & mask_) {
      const Slot s = slots_[i];
      if (s.entry == 0) return -1;
      if (s.tag == tag) {
        const Entry& e = entries_[s.entry - 1];
        if (e.key == key) return e.id;
      }
    }
  }

  static uint64_t Hash(const char* p, size_t n) {
    // A short-string multiply-xorshift hash: 8 bytes per step, a tail of 0-7 bytes.
    constexpr uint64_t kMul = 0x9E3779B97F4A7C15ull;
    uint64_t h = n * kMul;
    while (n >= 8) {
      uint64_t w;
      std::memcpy(&w, p, 8);
      h = (h ^ w) * kMul;
      h ^= h >> 29;
      p += 8;
      n -= 8;
    }
    if (n > 0) {
      uint64_t w = 0;
      std::memcpy(&w, p, n);
      h = (h ^ w) * kMul;
      h ^= h >> 29;
    }
    h *= 0xBF58476D1CE4E5B9ull;
    return h ^ (h >> 31);
  }

 private:
  // 8-byte slots keep the probe sequence cache-friendly (a failed lookup, the common case in
  // WordPiece's longest-match search, usually touches one slot and no key bytes).
  struct Slot {
    uint32_t tag = 0;    // High half of the hash.
    uint32_t entry = 0;  // 1 + index into entries_; 0 marks an empty slot.
  };
  struct Entry {
    absl::string_view key;
    int32_t id;
  };
  std::vector<Slot> slots_;
  std::vector<Entry> entries_;
  uint64_t mask_ = 0;
};

}  // namespace text_internal
}  // namespace bert

#endif  // BERT_SERVER_TEXT_PIECE_TABLE_H_
