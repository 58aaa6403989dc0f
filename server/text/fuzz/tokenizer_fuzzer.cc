// libFuzzer target: arbitrary bytes through BertTokenizer::Tokenize (uncased and cased),
// PackInputs and TokenizeAndPack. Checks that invalid UTF-8 is reported rather than crashing,
// that every id is in the vocabulary, that a failed call leaves `ids` untouched, that packing
// respects seq_length, and that the early-stopping paths (Tokenize with max_tokens,
// TokenizeAndPack) give what the whole tokenization gives, and that asking for spans changes
// no id and gives one span inside the text per id. Built with clang's
// -fsanitize=fuzzer,address,undefined by tests/python/test_tokenizer_fuzz.py (Bazel's toolchain
// here is gcc, without libFuzzer).
//
// The vocabulary path comes from the BERT_FUZZ_VOCAB environment variable.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <vector>

#include "server/text/packer.h"
#include "server/text/tokenizer.h"

namespace {

struct Tokenizers {
  std::unique_ptr<bert::BertTokenizer> uncased;
  std::unique_ptr<bert::BertTokenizer> cased;
};

const Tokenizers& Get() {
  static const Tokenizers* tokenizers = [] {
    const char* path = std::getenv("BERT_FUZZ_VOCAB");
    if (path == nullptr) {
      std::fprintf(stderr, "set BERT_FUZZ_VOCAB to a vocab.txt\n");
      std::abort();
    }
    auto* t = new Tokenizers;
    bert::BertTokenizer::Options options;
    auto uncased = bert::BertTokenizer::Load(path, options);
    options.lowercase = false;
    auto cased = bert::BertTokenizer::Load(path, options);
    if (!uncased.ok() || !cased.ok()) {
      std::fprintf(stderr, "cannot load %s\n", path);
      std::abort();
    }
    t->uncased = std::move(*uncased);
    t->cased = std::move(*cased);
    return t;
  }();
  return *tokenizers;
}

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "check failed: %s\n", what);
    std::abort();
  }
}

bool SamePacking(const absl::StatusOr<bert::PackedInput>& x,
                 const absl::StatusOr<bert::PackedInput>& y) {
  if (x.ok() != y.ok()) return false;
  if (!x.ok()) return x.status().code() == y.status().code();
  return x->word_ids == y->word_ids && x->type_ids == y->type_ids && x->truncated == y->truncated;
}

// One PackScratch kept across every call of the fuzzer: the first text's tokens it keeps
// (reused where the next call has the same text, budget and spans) change no result.
bert::PackScratch& KeptScratch() {
  static bert::PackScratch* scratch = new bert::PackScratch();
  return *scratch;
}

// TokenizeAndPack of text[0, split) and text[split, size) equals PackInputs over their whole
// tokenizations, for the smallest seq_lengths, `seq_length`, and those around the longest
// packing, with both policies.
void CheckTokenizeAndPack(const bert::BertTokenizer& tok, absl::string_view text, size_t split,
                          int seq_length_in) {
  const absl::string_view text_a = text.substr(0, split);
  const absl::string_view text_b = text.substr(split);
  std::vector<int32_t> a, b;
  const absl::Status status_a = tok.Tokenize(text_a, &a);
  const absl::Status status_b = tok.Tokenize(text_b, &b);
  const absl::Span<const int32_t> b_span(b);
  const int longest = static_cast<int>(a.size() + b.size()) + 3;
  for (const int seq_length :
       {2, 3, 4, seq_length_in, longest - 2, longest - 1, longest, longest + 1}) {
    if (seq_length < 2) continue;
    for (const bool pair : {false, true}) {
      for (const auto policy :
           {bert::TruncationPolicy::kTruncate, bert::TruncationPolicy::kLongestFirst,
            bert::TruncationPolicy::kReject}) {
        const absl::StatusOr<bert::PackedInput> packed =
            bert::TokenizeAndPack(tok, text_a, pair ? &text_b : nullptr, seq_length, policy, "");
        Check(SamePacking(packed, bert::TokenizeAndPack(tok, text_a, pair ? &text_b : nullptr,
                                                        seq_length, policy, "", &KeptScratch())),
              "a kept scratch changes no packing");
        if (!status_a.ok() || (pair && !status_b.ok())) {
          Check(!packed.ok() && packed.status().code() == absl::StatusCode::kInvalidArgument,
                "TokenizeAndPack reports invalid UTF-8");
          continue;
        }
        Check(SamePacking(packed, bert::PackInputs(a, pair ? &b_span : nullptr, seq_length,
                                                   tok.cls_id(), tok.sep_id(), policy)),
              "TokenizeAndPack packs what the whole tokenization packs");
        const absl::StatusOr<bert::PackedInput> spanned = bert::TokenizeAndPack(
            tok, text_a, pair ? &text_b : nullptr, seq_length, policy, "", nullptr, true);
        Check(SamePacking(packed, spanned), "spans change no packed id");
        if (!spanned.ok()) continue;
        const absl::StatusOr<bert::PackedInput> spanned_kept = bert::TokenizeAndPack(
            tok, text_a, pair ? &text_b : nullptr, seq_length, policy, "", &KeptScratch(), true);
        Check(SamePacking(spanned, spanned_kept) && spanned_kept->spans == spanned->spans,
              "a kept scratch changes no span");
        Check(spanned->spans.size() == spanned->word_ids.size(), "one span per packed token");
        for (size_t k = 0; k < spanned->spans.size(); ++k) {
          const bool special =
              spanned->word_ids[k] == tok.cls_id() || spanned->word_ids[k] == tok.sep_id();
          const bert::TokenSpan span = spanned->spans[k];
          const size_t text_size = spanned->type_ids[k] == 0 ? text_a.size() : text_b.size();
          Check(special ? span.begin == 0 && span.end == 0
                        : span.begin < span.end && span.end <= text_size,
                "packed spans: special tokens empty, others inside their own text");
        }
      }
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const Tokenizers& t = Get();
  const int seq_length = 2 + (size > 0 ? data[0] % 64 : 0);
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  std::vector<int32_t> a = {7};
  const absl::Status s1 = t.uncased->Tokenize(text, &a);
  std::vector<int32_t> b;
  const absl::Status s2 = t.cased->Tokenize(text, &b);
  Check(s1.ok() == s2.ok(), "uncased and cased agree on UTF-8 validity");
  if (!s1.ok()) {
    Check(s1.code() == absl::StatusCode::kInvalidArgument, "invalid UTF-8 is INVALID_ARGUMENT");
    Check(a.size() == 1 && a[0] == 7 && b.empty(), "failed calls leave ids untouched");
    std::vector<int32_t> limited = {7};
    Check(t.uncased->Tokenize(text, size > 1 ? data[1] % 40 : 0, &limited) == s1 &&
              limited.size() == 1,
          "a limited call reports the same invalid UTF-8");
    CheckTokenizeAndPack(*t.uncased, text, size > 2 ? data[2] % (size + 1) : size, seq_length);
    return 0;
  }
  Check(a[0] == 7, "Tokenize appends");
  for (int32_t id : a) Check(id >= 0 && id < t.uncased->vocab_size(), "uncased id in range");
  for (int32_t id : b) Check(id >= 0 && id < t.cased->vocab_size(), "cased id in range");
  // Tokens never exceed characters: each word yields at most one token per character.
  Check(a.size() - 1 <= size, "at most one token per byte");
  // A limited call gives the first ids of the whole tokenization.
  const size_t max_tokens = size > 1 ? data[1] % 40 : 0;
  std::vector<int32_t> limited = {7};
  Check(t.uncased->Tokenize(text, max_tokens, &limited).ok(), "limited Tokenize succeeds");
  Check(limited.size() == 1 + std::min(max_tokens, a.size() - 1) &&
            std::equal(limited.begin(), limited.end(), a.begin()),
        "limited Tokenize gives the first ids");
  CheckTokenizeAndPack(*t.uncased, text, size > 2 ? data[2] % (size + 1) : size, seq_length);
  for (const bert::BertTokenizer* tok : {t.uncased.get(), t.cased.get()}) {
    std::vector<int32_t> ids = {7};
    std::vector<bert::TokenSpan> spans = {{0, 0}};
    Check(tok->Tokenize(text, max_tokens, &ids, &spans).ok(), "Tokenize with spans succeeds");
    const std::vector<int32_t>& whole = tok == t.uncased.get() ? a : b;  // a starts with 7
    const size_t first = tok == t.uncased.get() ? 1 : 0;
    Check(ids.size() == 1 + std::min(max_tokens, whole.size() - first) &&
              std::equal(ids.begin() + 1, ids.end(), whole.begin() + first),
          "spans change no id");
    Check(spans.size() == ids.size(), "one span per id");
    for (size_t k = 1; k < spans.size(); ++k) {
      Check(spans[k].begin <= spans[k].end && spans[k].end <= size, "spans inside the text");
      Check(spans[k].begin < spans[k].end, "no empty span");
    }
  }
  const absl::Span<const int32_t> b_span(b);
  const absl::Span<const int32_t>* seconds[] = {nullptr, &b_span};
  for (const absl::Span<const int32_t>* second : seconds) {
    auto packed = bert::PackInputs(a, second, seq_length, t.uncased->cls_id(), t.uncased->sep_id(),
                                   bert::TruncationPolicy::kTruncate);
    Check(packed.ok(), "truncating pack succeeds");
    Check(packed->num_tokens() <= seq_length, "packed fits seq_length");
    std::vector<int32_t> word_ids, mask, type_ids;
    bert::PadToLength(*packed, seq_length, t.uncased->pad_id(), &word_ids, &mask, &type_ids);
    Check(static_cast<int>(word_ids.size()) == seq_length, "padded length");
  }
  return 0;
}
