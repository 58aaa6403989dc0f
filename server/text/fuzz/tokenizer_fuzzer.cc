// libFuzzer target: arbitrary bytes through BertTokenizer::Tokenize (uncased and cased) and
// PackInputs. Checks that invalid UTF-8 is reported rather than crashing, that every id is in
// the vocabulary, that a failed call leaves `ids` untouched, and that packing respects
// seq_length. Built with clang's -fsanitize=fuzzer,address,undefined by
// tests/python/test_tokenizer_fuzz.py (Bazel's toolchain here is gcc, without libFuzzer).
//
// The vocabulary path comes from the BERT_FUZZ_VOCAB environment variable.
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

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const Tokenizers& t = Get();
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  std::vector<int32_t> a = {7};
  const absl::Status s1 = t.uncased->Tokenize(text, &a);
  std::vector<int32_t> b;
  const absl::Status s2 = t.cased->Tokenize(text, &b);
  Check(s1.ok() == s2.ok(), "uncased and cased agree on UTF-8 validity");
  if (!s1.ok()) {
    Check(s1.code() == absl::StatusCode::kInvalidArgument, "invalid UTF-8 is INVALID_ARGUMENT");
    Check(a.size() == 1 && a[0] == 7 && b.empty(), "failed calls leave ids untouched");
    return 0;
  }
  Check(a[0] == 7, "Tokenize appends");
  for (int32_t id : a) Check(id >= 0 && id < t.uncased->vocab_size(), "uncased id in range");
  for (int32_t id : b) Check(id >= 0 && id < t.cased->vocab_size(), "cased id in range");
  // Tokens never exceed characters: each word yields at most one token per character.
  Check(a.size() - 1 <= size, "at most one token per byte");
  const int seq_length = 2 + (size > 0 ? data[0] % 64 : 0);
  const absl::Span<const int32_t> b_span(b);
  const absl::Span<const int32_t>* seconds[] = {nullptr, &b_span};
  for (const absl::Span<const int32_t>* second : seconds) {
    auto packed = bert::PackInputs(a, second, seq_length, t.uncased->cls_id(),
                                   t.uncased->sep_id(), bert::TruncationPolicy::kTruncate);
    Check(packed.ok(), "truncating pack succeeds");
    Check(packed->num_tokens() <= seq_length, "packed fits seq_length");
    std::vector<int32_t> word_ids, mask, type_ids;
    bert::PadToLength(*packed, seq_length, t.uncased->pad_id(), &word_ids, &mask, &type_ids);
    Check(static_cast<int>(word_ids.size()) == seq_length, "padded length");
  }
  return 0;
}
