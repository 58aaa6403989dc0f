// BERT text tokenization: basic tokenization (cleaning, CJK splitting, lowercasing and
// accent stripping, punctuation splitting) followed by greedy longest-match-first WordPiece.
//
// The rules follow Hugging Face `tokenizers` (BertNormalizer + BertPreTokenizer + WordPiece),
// which in turn follows Google's original BERT `tokenization.py`; server/text/README.md lists
// where TF Hub's preprocessing model differs and which rule we follow. Unicode properties,
// case mapping and NFD come from utf8proc.
//
// Thread-safety: a loaded BertTokenizer is immutable; every const method may be called
// concurrently from any number of threads. Tokenize() keeps its scratch space in
// thread-local buffers, so steady-state tokenization does not allocate beyond growing `ids`.
// That scratch stays small whatever the text (a word past max_chars_per_word is only counted),
// and a call that grew it past 64 KB (a large max_chars_per_word) hands the memory back.
#ifndef BERT_SERVER_TEXT_TOKENIZER_H_
#define BERT_SERVER_TEXT_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "server/text/piece_table.h"

namespace bert {

// Where a token came from: bytes [begin, end) of the UTF-8 text it was tokenized from, as
// Hugging Face tokenizers' offsets (which Python reports in characters): from the source of
// the first character of the token's normalised text to that of the last, so characters that
// normalisation dropped (combining accents, control characters) count inside a token but not
// at its edges (except where canonical reordering of combining marks moves a mark's place, as
// it does in Hugging Face's: "x\u0301\U0001D165" is one token over bytes [0, 3)). Pieces of a
// word split as the word's characters do; when one character gives two pieces (a Hangul
// syllable's jamo), both have its span. A [UNK] word spans the whole word.
struct TokenSpan {
  uint32_t begin = 0;
  uint32_t end = 0;
  friend bool operator==(TokenSpan a, TokenSpan b) { return a.begin == b.begin && a.end == b.end; }
};

class BertTokenizer {
 public:
  struct Options {
    // Uncased vocabularies: lowercase and strip accents (NFD, drop Mn). Cased: neither.
    bool lowercase = true;
    // Words with more characters (code points, after normalisation) become [UNK].
    int max_chars_per_word = 100;
  };

  // Reads a vocabulary file, one token per line, id = line number (0-based). Trailing
  // whitespace (Unicode White_Space, "\r" of CRLF files included) is stripped from each line,
  // as Hugging Face's vocabulary reader strips it. The vocabulary must contain
  // [CLS], [SEP], [PAD] and [UNK].
  static absl::StatusOr<std::unique_ptr<BertTokenizer>> Load(const std::string& vocab_path,
                                                             Options options);
  // Same as Load() over tokens already in memory (id = index).
  static absl::StatusOr<std::unique_ptr<BertTokenizer>> FromTokens(
      const std::vector<std::string>& tokens, Options options);

  BertTokenizer(const BertTokenizer&) = delete;
  BertTokenizer& operator=(const BertTokenizer&) = delete;

  // Appends the WordPiece ids of `text` to `ids`. Thread-safe (const). Returns
  // INVALID_ARGUMENT, leaving `ids` as it was, when `text` is not valid UTF-8.
  // Special tokens are never produced from text: "[CLS]" in text is "[", "cl", "##s", "]".
  absl::Status Tokenize(absl::string_view text, std::vector<int32_t>* ids) const;

  // Appends the first `max_tokens` ids of Tokenize(text) (all of them when there are fewer),
  // exactly what Tokenize() followed by a cut would leave, but stops tokenizing once
  // `max_tokens` ids are known: a long text then costs only a UTF-8 check of the rest, which
  // still fails the call as Tokenize() would. To learn whether anything was cut, ask for one
  // id more than will be kept.
  absl::Status Tokenize(absl::string_view text, size_t max_tokens, std::vector<int32_t>* ids) const;

  // Tokenize(text, max_tokens, ids), also appending to `spans` one TokenSpan per id appended
  // (both are left as they were on an error). INVALID_ARGUMENT also for a text of 4 GiB or more,
  // whose offsets a TokenSpan cannot hold.
  absl::Status Tokenize(absl::string_view text, size_t max_tokens, std::vector<int32_t>* ids,
                        std::vector<TokenSpan>* spans) const;

  // How many ids Tokenize(text) gives, at most `max_count`: counting stops there and the rest
  // is only checked for valid UTF-8, as Tokenize(text, max_tokens, ids) does. No ids are kept,
  // so memory does not grow with the text. INVALID_ARGUMENT as Tokenize.
  absl::StatusOr<size_t> CountTokens(absl::string_view text, size_t max_count) const;

  int32_t cls_id() const { return cls_id_; }
  int32_t sep_id() const { return sep_id_; }
  int32_t pad_id() const { return pad_id_; }
  int32_t unk_id() const { return unk_id_; }
  int32_t mask_id() const { return mask_id_; }  // -1: the vocabulary has none.
  // Whether `id` is [CLS], [SEP], [PAD], [UNK] or [MASK]: the tokens Hugging Face's
  // BertWordPieceTokenizer registers as special (those of them the vocabulary has).
  bool IsSpecial(int32_t id) const;
  int vocab_size() const { return static_cast<int>(offsets_.size()) - 1; }
  // The token string of `id`; "" for out-of-range ids.
  absl::string_view Token(int32_t id) const;
  bool lowercase() const { return options_.lowercase; }

  // The text of `ids`, as Hugging Face tokenizers' decode gives it for a BERT vocabulary (its
  // WordPiece decoder: prefix "##", clean-up on): a "##" piece joins the token before it, any
  // other token after the first is preceded by a space, and each token with that space then
  // goes through the clean-up's replacements in turn (" ." to ".", and likewise " ?", " !",
  // " ,", " ' " to "'", " n't", " 'm", " do not" to " don't", " 's", " 've", " 're"). The first
  // token is taken as it is, even a "##" piece. With `skip_special_tokens` (Hugging Face's
  // default), special tokens are left out before that, so the first token kept counts as the
  // first. Ids outside [0, vocab_size()) are skipped, as Hugging Face skips unknown ids
  // (callers that must refuse them check first), and so is an id whose token the vocabulary
  // repeats on a later line: Hugging Face keeps only the later id for the token (so does
  // Tokenize) and has no token for this one. Lowercasing, stripped accents and the spaces the
  // tokenizer dropped are not restored.
  std::string Decode(absl::Span<const int32_t> ids, bool skip_special_tokens) const;
  // At least the size of Decode(ids, skip_special_tokens): each token it keeps, plus one.
  // O(ids), without building the text.
  size_t DecodedSizeBound(absl::Span<const int32_t> ids, bool skip_special_tokens) const;

  // Test-only view of the calling thread's Tokenize() calls, for bounds that outputs do not
  // show.
  struct ThreadStatsForTesting {
    int64_t ids_produced = 0;       // Ids all calls produced, before the cut to max_tokens.
    size_t last_scratch_bytes = 0;  // Scratch capacity at the end of the latest call (its peak).
    size_t scratch_bytes = 0;       // Scratch capacity kept between calls.
    // CountTokens: the most ids the latest call held at once (counted ones are dropped).
    size_t last_count_ids_held = 0;
  };
  static ThreadStatsForTesting GetThreadStatsForTesting();

 private:
  template <bool kSpans>
  class Run;  // The per-call tokenization state machine (tokenizer.cc).

  BertTokenizer() = default;
  absl::Status Init(const std::vector<absl::string_view>& tokens, Options options);
  // Whether Decode gives `id` a piece of the text.
  bool Decodes(int32_t id, bool skip_special_tokens) const;

  // Appends the WordPiece ids of one pre-tokenized word (valid UTF-8, non-empty). With
  // `byte_spans` (the source span of each byte of `word`), appends each id's span to `spans`.
  void WordPiece(absl::string_view word, std::vector<int32_t>* ids, const TokenSpan* byte_spans,
                 std::vector<TokenSpan>* spans) const;

  Options options_;
  std::string arena_;                        // All token strings, concatenated.
  std::vector<uint32_t> offsets_;            // Token i is arena_[offsets_[i], offsets_[i + 1]).
  text_internal::PieceTable words_;          // Word-initial pieces: "foo".
  text_internal::PieceTable continuations_;  // Continuation pieces without "##": "##ing" -> "ing".
  int max_word_piece_bytes_ = 0;
  int max_continuation_bytes_ = 0;
  int32_t ascii_ids_[128];  // Id of each single ASCII character as a word, or -1.
  int32_t cls_id_ = -1;
  int32_t sep_id_ = -1;
  int32_t pad_id_ = -1;
  int32_t unk_id_ = -1;
  int32_t mask_id_ = -1;
  // shadowed_[id]: a later line repeats id's token (empty when no line repeats another).
  std::vector<bool> shadowed_;
};

}  // namespace bert

#endif  // BERT_SERVER_TEXT_TOKENIZER_H_
