#include "server/text/tokenizer.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "server/text/utf8.h"
#include "utf8proc.h"

namespace bert {
namespace {

// What the basic tokenizer does with each ASCII byte.
enum AsciiClass : uint8_t {
  kDrop = 0,   // NUL and control characters other than \t \n \r (removed by text cleaning).
  kSpace = 1,  // \t \n \r and space: end the current word.
  kPunct = 2,  // 33-47, 58-64, 91-96, 123-126: BERT's ASCII punctuation, a word by itself.
  kWord = 3,   // Letters and digits.
};

struct AsciiTables {
  uint8_t cls[128];
  char lower[128];
  AsciiTables() {
    for (int c = 0; c < 128; ++c) {
      lower[c] = static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c);
      if (c == '\t' || c == '\n' || c == '\r' || c == ' ') {
        cls[c] = kSpace;
      } else if (c < 32 || c == 127) {
        cls[c] = kDrop;
      } else if ((c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
                 (c >= 123 && c <= 126)) {
        cls[c] = kPunct;
      } else {
        cls[c] = kWord;
      }
    }
  }
};
const AsciiTables kAscii;

bool IsControlCategory(int category) {
  // Cc, Cf, Cs and Co, as HF's BertNormalizer (char::is_other) removes them. BERT's Python
  // _is_control also removes unassigned code points (Cn); HF keeps them, and so do we: which
  // code points are unassigned depends on the Unicode version, a kept one is at worst [UNK].
  return category == UTF8PROC_CATEGORY_CC || category == UTF8PROC_CATEGORY_CF ||
         category == UTF8PROC_CATEGORY_CS || category == UTF8PROC_CATEGORY_CO;
}

// Non-ASCII White_Space: exactly the Z* categories (U+0085 is Cc and is removed as control).
bool IsSpaceCategory(int category) {
  return category == UTF8PROC_CATEGORY_ZS || category == UTF8PROC_CATEGORY_ZL ||
         category == UTF8PROC_CATEGORY_ZP;
}

bool IsPunctCategory(int category) {
  return category >= UTF8PROC_CATEGORY_PC && category <= UTF8PROC_CATEGORY_PO;
}

// The CJK Unified Ideograph blocks BERT surrounds with spaces (tokenization.py
// _is_chinese_char). These are block bounds, not a property table.
bool IsCjkIdeograph(int32_t cp) {
  return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) ||
         (cp >= 0x20000 && cp <= 0x2A6DF) || (cp >= 0x2A700 && cp <= 0x2B73F) ||
         (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B820 && cp <= 0x2CEAF) ||
         (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

// Returns how many bytes it appended.
int AppendUtf8(int32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
    return 1;
  }
  if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    return 2;
  }
  if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    return 3;
  }
  out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
  out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
  out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
  out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  return 4;
}

// With spans: one combining mark (combining class > 0) of the run awaiting NFD's canonical
// reordering, in text order, dropped (Mn) or kept.
struct RunMark {
  enum State : uint8_t { kDropped, kQueued, kCounted };  // kCounted: past the word limit
  uint8_t combining_class;
  State state;
  bool inserted;   // Not the first character of its code point's decomposition.
  TokenSpan span;  // Of the code point it came from.
};
// The marks of one run that spans are tracked for; past this (a hostile text) the rest of the
// run's kept marks take the last tracked mark's span.
constexpr size_t kMaxTrackedRun = 1024;

// Per-thread scratch space, reused across calls so steady-state tokenization does not allocate.
// The buffers are bounded by max_chars_per_word (the word's first characters, the marks of a
// word that can still fit) and kMaxTrackedRun; a call that grew them past kKeptScratchBytes in
// all gives the memory back.
struct Scratch {
  static constexpr size_t kKeptScratchBytes = 64 << 10;

  size_t Bytes() const {
    return word.capacity() + marks.capacity() * sizeof(marks[0]) +
           word_spans.capacity() * sizeof(TokenSpan) + run.capacity() * sizeof(RunMark) +
           slots.capacity() * sizeof(TokenSpan);
  }

  void ReleaseIfLarge() {
    last_call_bytes = Bytes();
    if (last_call_bytes <= kKeptScratchBytes) return;
    std::string().swap(word);
    std::vector<std::pair<int, int32_t>>().swap(marks);
    std::vector<TokenSpan>().swap(word_spans);
    std::vector<RunMark>().swap(run);
    std::vector<TokenSpan>().swap(slots);
  }

  std::string word;
  // Non-Mn code points with a non-zero canonical combining class waiting for NFD's
  // canonical reordering: (combining class, code point).
  std::vector<std::pair<int, int32_t>> marks;
  // Only when spans are asked for: the source span of each byte of `word`; the current run of
  // combining marks, Mn included (at most kMaxTrackedRun); `slots`, FlushMarks' buffer.
  std::vector<TokenSpan> word_spans;
  std::vector<RunMark> run;
  std::vector<TokenSpan> slots;
  // For GetThreadStatsForTesting().
  int64_t ids_produced = 0;
  size_t last_call_bytes = 0;
  size_t last_count_ids_held = 0;  // CountTokens' ids buffer capacity (its peak)
};

Scratch& ThreadScratch() {
  thread_local Scratch scratch;
  return scratch;
}

absl::Status InvalidUtf8Error(absl::string_view text, size_t offset) {
  return absl::InvalidArgumentError(
      absl::StrFormat("text is not valid UTF-8: bad byte 0x%02X at offset %d",
                      static_cast<unsigned char>(text[offset]), static_cast<int>(offset)));
}

}  // namespace

// One Tokenize() call: feeds normalised code points into words and words into WordPiece,
// until the text ends or `max_tokens` ids have been appended. Ids, once appended, are never
// taken back (WordPiece settles a whole word at once), so those first ids are final. With
// `count_only` (CountTokens) settled ids are counted and dropped instead: `ids` then holds at
// most the few words between two checks. With `spans`, each id's TokenSpan is appended too;
// `src_` is then the span of the code point being handled. Spans are a template parameter so
// that the path without them carries no trace of them.
template <bool kSpans>
class BertTokenizer::Run {
 public:
  Run(const BertTokenizer& tok, Scratch* scratch, size_t max_tokens, std::vector<int32_t>* ids,
      std::vector<TokenSpan>* spans, bool count_only = false)
      : tok_(tok),
        word_(scratch->word),
        marks_(scratch->marks),
        word_spans_(scratch->word_spans),
        run_(scratch->run),
        slots_(scratch->slots),
        ids_(ids),
        spans_(spans),
        first_id_(ids->size()),
        max_tokens_(max_tokens),
        count_only_(count_only) {
    word_.clear();
    marks_.clear();
    word_spans_.clear();
    run_.clear();
  }

  absl::Status Feed(absl::string_view text) {
    const auto* s = reinterpret_cast<const unsigned char*>(text.data());
    const size_t n = text.size();
    const bool lowercase = tok_.options_.lowercase;
    size_t i = 0;
    while (i < n) {
      const unsigned char b = s[i];
      if (b < 0x80) {
        // ASCII fast path. Control characters are removed before NFD, so they do not end a
        // mark run; anything else has combining class 0 and does.
        const uint8_t cls = kAscii.cls[b];
        if (cls == kDrop) {
          ++i;
          continue;
        }
        EndMarkRun();
        if constexpr (kSpans) src_ = {static_cast<uint32_t>(i), static_cast<uint32_t>(i + 1)};
        switch (cls) {
          case kWord:
            AddAsciiToWord(lowercase ? kAscii.lower[b] : static_cast<char>(b));
            break;
          case kSpace:
            EndWord();
            if (Full()) return CheckRest(text, i + 1);
            break;
          case kPunct:
            EndWord();
            EmitAsciiPunct(b);
            if (Full()) return CheckRest(text, i + 1);
            break;
          default:
            break;
        }
        ++i;
        continue;
      }
      int32_t cp;
      const int len = DecodeUtf8(text, i, &cp);
      if (len == 0) return InvalidUtf8Error(text, i);
      if constexpr (kSpans) src_ = {static_cast<uint32_t>(i), static_cast<uint32_t>(i + len)};
      i += len;
      FeedNonAscii(cp);
      if (Full()) return CheckRest(text, i);
    }
    EndMarkRun();
    EndWord();
    return absl::OkStatus();
  }

  // Ids this call has produced (appended, or counted and dropped).
  size_t produced() const { return counted_ + (ids_->size() - first_id_); }

 private:
  // Text cleaning, CJK splitting and (for uncased vocabularies) NFD with Mn removal.
  void FeedNonAscii(int32_t cp) {
    if (cp == 0xFFFD) return;
    const utf8proc_property_t* prop = utf8proc_get_property(cp);
    if (IsControlCategory(prop->category)) return;  // Removed; does not break mark runs.
    if (IsSpaceCategory(prop->category)) {
      EndMarkRun();
      EndWord();
      return;
    }
    const bool cjk = IsCjkIdeograph(cp);
    if (cjk) {
      EndMarkRun();
      EndWord();
    }
    if (!tok_.options_.lowercase) {
      Normalized(cp, prop);
    } else {
      utf8proc_int32_t buf[16];
      utf8proc_int32_t boundclass = 0;
      utf8proc_ssize_t count =
          utf8proc_decompose_char(cp, buf, 16, UTF8PROC_DECOMPOSE, &boundclass);
      if (count < 0 || count > 16) {  // Cannot happen for canonical decompositions.
        buf[0] = cp;
        count = 1;
      }
      for (utf8proc_ssize_t k = 0; k < count; ++k) {
        const utf8proc_property_t* p = buf[k] == cp ? prop : utf8proc_get_property(buf[k]);
        const bool mn = p->category == UTF8PROC_CATEGORY_MN;
        if (p->combining_class == 0) {
          // A starter: NFD reorders no mark across it, whether accent stripping keeps it or not.
          EndMarkRun();
          if (!mn) Normalized(utf8proc_tolower(buf[k]), nullptr);
          continue;
        }
        // Accent stripping drops Mn. Dropping before NFD's (stable) canonical reordering
        // leaves the remaining characters in the order reordering would give them; only the
        // spans need the dropped marks' places.
        RunMark::State state = RunMark::kDropped;
        if (!mn) {
          // Such marks (all Mc, see tokenizer_test) only extend the word. Once the word cannot
          // fit max_chars_ it is [UNK] whatever their order, so a mark is then counted instead
          // of queued, which bounds marks_.
          if (word_chars_ + static_cast<int>(marks_.size()) < max_chars_) {
            marks_.emplace_back(p->combining_class, buf[k]);
            state = RunMark::kQueued;
          } else {
            ++word_chars_;
            state = RunMark::kCounted;
          }
        }
        if (kSpans && run_.size() < kMaxTrackedRun) {
          run_.push_back({static_cast<uint8_t>(p->combining_class), state, k > 0, src_});
        }
      }
    }
    if (cjk) {
      EndMarkRun();
      EndWord();
    }
  }

  void EndMarkRun() {
    if (!marks_.empty() || (kSpans && !run_.empty())) FlushMarks();
  }

  // Canonical reordering of a run of non-Mn marks, then hands them on.
  void FlushMarks() {
    const auto by_class = [](const auto& a, const auto& b) { return a.first < b.first; };
    std::stable_sort(marks_.begin(), marks_.end(), by_class);
    if constexpr (!kSpans) {
      for (const auto& [ccc, mark] : marks_) Normalized(utf8proc_tolower(mark), nullptr);
      marks_.clear();
      return;
    }
    // Spans as Hugging Face's alignments give them: reordering moves characters, not the
    // code points they are aligned to. Walking the run, Mn included, in its reordered order,
    // each mark that begins its code point's decomposition takes the next of the run's code
    // points in text order; an inserted one (a decomposition's second mark) takes the span
    // the last one took (at the start of the run: its own code point's, whose first character
    // was the starter before the run). The queued marks come up in marks_' order.
    const TokenSpan current = src_;
    slots_.clear();
    for (const RunMark& m : run_) {
      if (!m.inserted) slots_.push_back(m.span);
    }
    TokenSpan last = run_.empty() ? src_ : run_.front().span;
    std::stable_sort(run_.begin(), run_.end(), [](const RunMark& a, const RunMark& b) {
      return a.combining_class < b.combining_class;
    });
    size_t next_slot = 0;
    size_t next = 0;  // in marks_
    for (const RunMark& m : run_) {
      if (!m.inserted && next_slot < slots_.size()) last = slots_[next_slot++];
      if (m.state == RunMark::kQueued && next < marks_.size()) {
        src_ = last;
        Normalized(utf8proc_tolower(marks_[next++].second), nullptr);
      } else if (m.state == RunMark::kCounted) {
        ExtendWordSpan(last);
      }
    }
    // Marks past kMaxTrackedRun.
    src_ = last;
    for (; next < marks_.size(); ++next) Normalized(utf8proc_tolower(marks_[next].second), nullptr);
    src_ = current;
    marks_.clear();
    run_.clear();
  }

  // Pre-tokenization of one normalised code point: whitespace ends a word, punctuation is a
  // word by itself, anything else extends the current word.
  void Normalized(int32_t cp, const utf8proc_property_t* prop) {
    if (cp < 0x80) {
      // NFD/lowercasing can map non-ASCII to ASCII (U+037E GREEK QUESTION MARK -> ';').
      switch (kAscii.cls[cp]) {
        case kWord:
          AddAsciiToWord(static_cast<char>(cp));
          return;
        case kSpace:
          EndWord();
          return;
        case kPunct:
          EndWord();
          EmitAsciiPunct(cp);
          return;
        default:
          return;
      }
    }
    if (prop == nullptr) prop = utf8proc_get_property(cp);
    if (IsSpaceCategory(prop->category)) {
      EndWord();
      return;
    }
    if (IsPunctCategory(prop->category)) {
      EndWord();
      AddToWord(cp);
      EndWord();
      return;
    }
    AddToWord(cp);
  }

  // A word character. Past the word limit only the count matters (the word will be [UNK]),
  // which also bounds the thread-local buffers.
  void AddAsciiToWord(char c) {
    if (++word_chars_ <= max_chars_) {
      word_.push_back(c);
      if constexpr (kSpans) word_spans_.push_back(src_);
    }
    if constexpr (kSpans) ExtendWordSpan(src_);
  }

  void AddToWord(int32_t cp) {
    if (++word_chars_ <= max_chars_) {
      const int bytes = AppendUtf8(cp, &word_);
      if constexpr (kSpans) word_spans_.insert(word_spans_.end(), bytes, src_);
    }
    if constexpr (kSpans) ExtendWordSpan(src_);
  }

  // The span of a [UNK] for a word past the limit: from its first character's start to the
  // furthest end of any (a counted mark's place may come before queued ones').
  void ExtendWordSpan(TokenSpan span) {
    if (!word_spanned_) {
      word_span_ = span;
      word_spanned_ = true;
    }
    word_span_.end = std::max(word_span_.end, span.end);
  }

  void EmitAsciiPunct(int c) {
    const int32_t id = tok_.ascii_ids_[c];
    ids_->push_back(id >= 0 ? id : tok_.unk_id_);
    if constexpr (kSpans) spans_->push_back(src_);
  }

  // True once the ids this call has produced are all that were asked for.
  bool Full() {
    if (count_only_) {  // never with spans
      counted_ += ids_->size() - first_id_;
      ids_->resize(first_id_);
      return counted_ >= max_tokens_;
    }
    return ids_->size() - first_id_ >= max_tokens_;
  }

  // Tokenization stops at `pos`; the rest of the text must still be valid UTF-8.
  static absl::Status CheckRest(absl::string_view text, size_t pos) {
    const size_t bad = FindInvalidUtf8(text, pos);
    return bad == absl::string_view::npos ? absl::OkStatus() : InvalidUtf8Error(text, bad);
  }

  void EndWord() {
    // word_chars_, not word_: counted marks of an overlong word may leave word_ empty.
    if (word_chars_ == 0) return;
    if (word_chars_ > max_chars_) {
      ids_->push_back(tok_.unk_id_);
      if constexpr (kSpans) spans_->push_back(word_span_);
    } else {
      tok_.WordPiece(word_, ids_, kSpans ? word_spans_.data() : nullptr, spans_);
    }
    word_.clear();
    word_spans_.clear();
    word_chars_ = 0;
    word_spanned_ = false;
  }

  const BertTokenizer& tok_;
  std::string& word_;
  std::vector<std::pair<int, int32_t>>& marks_;
  std::vector<TokenSpan>& word_spans_;
  std::vector<RunMark>& run_;
  std::vector<TokenSpan>& slots_;
  std::vector<int32_t>* ids_;
  std::vector<TokenSpan>* const spans_;  // null: no spans
  const size_t first_id_;
  const size_t max_tokens_;
  const bool count_only_;
  size_t counted_ = 0;  // count_only_: ids produced and dropped
  const int max_chars_ = tok_.options_.max_chars_per_word;
  int word_chars_ = 0;
  TokenSpan src_;        // spans_: the code point being handled
  TokenSpan word_span_;  // spans_: the current word's, once word_spanned_
  bool word_spanned_ = false;
};

absl::Status BertTokenizer::Tokenize(absl::string_view text, std::vector<int32_t>* ids) const {
  return Tokenize(text, std::numeric_limits<size_t>::max(), ids);
}

absl::Status BertTokenizer::Tokenize(absl::string_view text, size_t max_tokens,
                                     std::vector<int32_t>* ids) const {
  return Tokenize(text, max_tokens, ids, nullptr);
}

absl::Status BertTokenizer::Tokenize(absl::string_view text, size_t max_tokens,
                                     std::vector<int32_t>* ids,
                                     std::vector<TokenSpan>* spans) const {
  if (spans != nullptr && text.size() > std::numeric_limits<uint32_t>::max()) {
    return absl::InvalidArgumentError("text of 4 GiB or more: its offsets do not fit");
  }
  Scratch& scratch = ThreadScratch();
  const size_t old_size = ids->size();
  const size_t old_spans = spans != nullptr ? spans->size() : 0;
  const absl::Status status =
      spans != nullptr ? Run<true>(*this, &scratch, max_tokens, ids, spans).Feed(text)
                       : Run<false>(*this, &scratch, max_tokens, ids, nullptr).Feed(text);
  scratch.ids_produced += static_cast<int64_t>(ids->size() - old_size);
  scratch.ReleaseIfLarge();
  size_t keep = ids->size() - old_size;
  if (!status.ok()) {
    keep = 0;
  } else if (keep > max_tokens) {
    keep = max_tokens;  // The last word's pieces may go past max_tokens.
  }
  ids->resize(old_size + keep);
  if (spans != nullptr) spans->resize(old_spans + keep);
  return status;
}

absl::StatusOr<size_t> BertTokenizer::CountTokens(absl::string_view text, size_t max_count) const {
  Scratch& scratch = ThreadScratch();
  std::vector<int32_t> settling;  // a few words' ids at a time
  Run<false> run(*this, &scratch, max_count, &settling, /*spans=*/nullptr, /*count_only=*/true);
  const absl::Status status = run.Feed(text);
  const size_t count = run.produced();
  scratch.last_count_ids_held = settling.capacity();
  scratch.ReleaseIfLarge();
  if (!status.ok()) return status;
  return std::min(count, max_count);  // the last word's pieces may go past max_count
}

BertTokenizer::ThreadStatsForTesting BertTokenizer::GetThreadStatsForTesting() {
  const Scratch& scratch = ThreadScratch();
  ThreadStatsForTesting stats;
  stats.ids_produced = scratch.ids_produced;
  stats.last_scratch_bytes = scratch.last_call_bytes;
  stats.last_count_ids_held = scratch.last_count_ids_held;
  stats.scratch_bytes = scratch.Bytes();
  return stats;
}

void BertTokenizer::WordPiece(absl::string_view word, std::vector<int32_t>* ids,
                              const TokenSpan* byte_spans, std::vector<TokenSpan>* spans) const {
  const size_t first = ids->size();
  const size_t first_span = spans != nullptr ? spans->size() : 0;
  const char* data = word.data();
  const size_t n = word.size();
  size_t start = 0;
  while (start < n) {
    const text_internal::PieceTable& table = start == 0 ? words_ : continuations_;
    const size_t max_bytes = start == 0 ? max_word_piece_bytes_ : max_continuation_bytes_;
    size_t end = std::min(n, start + max_bytes);
    int32_t id = -1;
    while (end > start) {
      // Only cut at character boundaries.
      if (end < n && (static_cast<unsigned char>(data[end]) & 0xC0) == 0x80) {
        --end;
        continue;
      }
      id = table.Find(absl::string_view(data + start, end - start));
      if (id >= 0) break;
      --end;
    }
    if (id < 0) {
      // Some part of the word matches no piece: the whole word is [UNK].
      ids->resize(first);
      ids->push_back(unk_id_);
      if (byte_spans != nullptr) {
        spans->resize(first_span);
        spans->push_back({byte_spans[0].begin, byte_spans[n - 1].end});
      }
      return;
    }
    ids->push_back(id);
    if (byte_spans != nullptr) spans->push_back({byte_spans[start].begin, byte_spans[end - 1].end});
    start = end;
  }
}

absl::string_view BertTokenizer::Token(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return absl::string_view();
  return absl::string_view(arena_.data() + offsets_[id], offsets_[id + 1] - offsets_[id]);
}

namespace {

// Unicode's White_Space code points (PropList.txt; the set Rust's char::is_whitespace, and so
// Hugging Face's vocabulary reader, strips).
bool IsWhiteSpace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

// Strips the Unicode whitespace at the end of `token` (a vocabulary line), as Rust's
// str::trim_end does in Hugging Face's reader.
void StripTrailingWhiteSpace(absl::string_view* token) {
  while (!token->empty()) {
    // The last character's first byte: back over continuation bytes (at most three).
    size_t start = token->size() - 1;
    while (start > 0 && token->size() - start < 4 &&
           (static_cast<unsigned char>((*token)[start]) & 0xC0) == 0x80) {
      --start;
    }
    int32_t c = 0;
    const int used = DecodeUtf8(*token, start, &c);
    if (used == 0 || start + used != token->size() || !IsWhiteSpace(static_cast<char32_t>(c))) {
      return;
    }
    token->remove_suffix(used);
  }
}

}  // namespace

bool BertTokenizer::IsSpecial(int32_t id) const {
  return id >= 0 &&
         (id == cls_id_ || id == sep_id_ || id == pad_id_ || id == unk_id_ || id == mask_id_);
}

namespace {

// Hugging Face's WordPiece decoder clean-up of one token (with its leading space): each
// replacement over the whole token, in this order.
constexpr std::pair<absl::string_view, absl::string_view> kCleanUps[] = {
    {" .", "."},   {" ?", "?"},     {" !", "!"},    {" ,", ","},
    {" ' ", "'"},  {" n't", "n't"}, {" 'm", "'m"},  {" do not", " don't"},
    {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};

// Replaces each occurrence of `from` in `text`, left to right, as Rust's str::replace does;
// no allocation where there is none.
void ReplaceAll(absl::string_view from, absl::string_view to, std::string* text) {
  for (size_t pos = text->find(from.data(), 0, from.size()); pos != std::string::npos;
       pos = text->find(from.data(), pos + to.size(), from.size())) {
    text->replace(pos, from.size(), to.data(), to.size());
  }
}

// Whether any clean-up can apply: every pattern is a space followed by one of these.
bool MayNeedCleanUp(absl::string_view piece) {
  for (size_t i = piece.find(' '); i != absl::string_view::npos && i + 1 < piece.size();
       i = piece.find(' ', i + 1)) {
    if (absl::string_view(".?!,'nd").find(piece[i + 1]) != absl::string_view::npos) return true;
  }
  return false;
}

}  // namespace

bool BertTokenizer::Decodes(int32_t id, bool skip_special_tokens) const {
  return id >= 0 && id < vocab_size() && (shadowed_.empty() || !shadowed_[id]) &&
         !(skip_special_tokens && IsSpecial(id));
}

std::string BertTokenizer::Decode(absl::Span<const int32_t> ids, bool skip_special_tokens) const {
  std::string text;
  std::string piece;
  bool first = true;
  for (const int32_t id : ids) {
    if (!Decodes(id, skip_special_tokens)) continue;
    absl::string_view token = Token(id);
    piece.clear();
    if (!first) {
      if (!absl::ConsumePrefix(&token, "##")) piece.push_back(' ');
    }
    first = false;
    piece.append(token.data(), token.size());
    if (MayNeedCleanUp(piece)) {
      for (const auto& [from, to] : kCleanUps) ReplaceAll(from, to, &piece);
    }
    text += piece;
  }
  return text;
}

size_t BertTokenizer::DecodedSizeBound(absl::Span<const int32_t> ids,
                                       bool skip_special_tokens) const {
  size_t bound = 0;
  for (const int32_t id : ids) {
    if (Decodes(id, skip_special_tokens)) bound += Token(id).size() + 1;
  }
  return bound;
}

absl::StatusOr<std::unique_ptr<BertTokenizer>> BertTokenizer::Load(const std::string& vocab_path,
                                                                   Options options) {
  std::ifstream in(vocab_path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open vocab file ", vocab_path));
  std::stringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat("cannot read vocab file ", vocab_path));
  const std::string contents = buffer.str();
  std::vector<absl::string_view> tokens;
  absl::string_view rest(contents);
  while (!rest.empty()) {
    size_t eol = rest.find('\n');
    absl::string_view line = rest.substr(0, eol);
    rest = eol == absl::string_view::npos ? absl::string_view() : rest.substr(eol + 1);
    tokens.push_back(line);
  }
  auto tokenizer = std::unique_ptr<BertTokenizer>(new BertTokenizer());
  absl::Status status = tokenizer->Init(tokens, options);
  if (!status.ok()) {
    return absl::Status(status.code(), absl::StrCat(vocab_path, ": ", status.message()));
  }
  return tokenizer;
}

absl::StatusOr<std::unique_ptr<BertTokenizer>> BertTokenizer::FromTokens(
    const std::vector<std::string>& tokens, Options options) {
  std::vector<absl::string_view> views(tokens.begin(), tokens.end());
  auto tokenizer = std::unique_ptr<BertTokenizer>(new BertTokenizer());
  absl::Status status = tokenizer->Init(views, options);
  if (!status.ok()) return status;
  return tokenizer;
}

absl::Status BertTokenizer::Init(const std::vector<absl::string_view>& tokens, Options options) {
  if (options.max_chars_per_word < 1) {
    return absl::InvalidArgumentError("max_chars_per_word must be positive");
  }
  if (tokens.empty()) return absl::InvalidArgumentError("vocabulary is empty");
  options_ = options;
  offsets_.clear();
  arena_.clear();
  offsets_.push_back(0);
  for (absl::string_view token : tokens) {
    // Strip trailing whitespace ("\r" of CRLF files), as HF's vocab reader does.
    StripTrailingWhiteSpace(&token);
    arena_.append(token.data(), token.size());
    offsets_.push_back(static_cast<uint32_t>(arena_.size()));
  }
  std::vector<std::pair<absl::string_view, int32_t>> words;
  std::vector<std::pair<absl::string_view, int32_t>> continuations;
  for (int32_t id = 0; id < vocab_size(); ++id) {
    absl::string_view token = Token(id);
    words.emplace_back(token, id);
    max_word_piece_bytes_ = std::max<int>(max_word_piece_bytes_, token.size());
    if (token.size() > 2 && token[0] == '#' && token[1] == '#') {
      continuations.emplace_back(token.substr(2), id);
      max_continuation_bytes_ = std::max<int>(max_continuation_bytes_, token.size() - 2);
    }
  }
  words_.Build(words);
  continuations_.Build(continuations);
  shadowed_.clear();
  for (int32_t id = 0; id < vocab_size(); ++id) {
    if (words_.Find(Token(id)) <= id) continue;  // the later id of a repeated token wins
    shadowed_.resize(vocab_size(), false);
    shadowed_[id] = true;
  }
  for (int c = 0; c < 128; ++c) {
    const char ch = static_cast<char>(c);
    ascii_ids_[c] = words_.Find(absl::string_view(&ch, 1));
  }
  cls_id_ = words_.Find("[CLS]");
  sep_id_ = words_.Find("[SEP]");
  pad_id_ = words_.Find("[PAD]");
  unk_id_ = words_.Find("[UNK]");
  mask_id_ = words_.Find("[MASK]");
  for (const auto& [name, id] : {std::pair<const char*, int32_t>{"[CLS]", cls_id_},
                                 {"[SEP]", sep_id_},
                                 {"[PAD]", pad_id_},
                                 {"[UNK]", unk_id_}}) {
    if (id < 0) {
      return absl::InvalidArgumentError(absl::StrCat("vocabulary has no ", name, " token"));
    }
  }
  return absl::OkStatus();
}

}  // namespace bert
