// Packing of one or two token-id segments into BERT model inputs, as TF Hub's BERT
// preprocessing models do it (tensorflow/models official/nlp/modeling/layers/text_layers.py
// BertPackInputs.bert_pack_inputs with truncator="round_robin"):
//   single: [CLS] a [SEP]            type ids 0 ... 0
//   pair:   [CLS] a [SEP] b [SEP]    type ids 0 for [CLS] a [SEP], 1 for b [SEP]
// Segments are trimmed to a budget of seq_length - 2 (single) or seq_length - 3 (pair) tokens
// before the special tokens are added. Pairs share the budget with TF Text's RoundRobinTrimmer
// (tensorflow/text tensorflow_text/core/kernels/round_robin_trimmer.h and
// python/ops/trimmer_ops.py): a and b take one token in turn, a first; a segment that runs out
// leaves the rest of the budget to the other; each keeps its first tokens. kLongestFirst shares
// it as Hugging Face (fast) tokenizers' "longest_first" truncation does instead (what
// sentence-transformers' CrossEncoder uses): LongestFirstKeep.
//
// Tiny seq_length (TF Hub behaviour, kept): the budget cannot go below zero, and TF Hub's
// final pad_model_inputs cuts the packed row to seq_length, so a pair at seq_length 2 packs
// to [CLS] [SEP] (both type 0) and drops b and its [SEP]. seq_length < 2 is rejected.
//
// All functions are pure and thread-safe.
#ifndef BERT_SERVER_TEXT_PACKER_H_
#define BERT_SERVER_TEXT_PACKER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "server/text/tokenizer.h"

namespace bert {

enum class TruncationPolicy {
  kTruncate,      // Drop tokens as TF Hub does and set PackedInput::truncated.
  kLongestFirst,  // Drop tokens as Hugging Face's longest_first does (pairs; singles as kTruncate).
  kReject,        // INVALID_ARGUMENT if any token would be dropped.
};

// Real tokens only, no padding.
struct PackedInput {
  std::vector<int32_t> word_ids;  // [CLS] a [SEP] (b [SEP])
  std::vector<int32_t> type_ids;  // 0 for [CLS] a [SEP], 1 for b [SEP]
  bool truncated = false;         // Some token of a or b (or b's [SEP]) was dropped.
  // Only from TokenizeAndPack with `with_spans`: where each token of word_ids came from, in
  // its own text (a's tokens in text_a, b's in text_b); [CLS] and [SEP] are {0, 0}.
  std::vector<TokenSpan> spans;
  int num_tokens() const { return static_cast<int>(word_ids.size()); }
};

// How many tokens of each segment TF Text's RoundRobinTrimmer keeps for budget `budget`
// (<= 0 keeps nothing). Exposed for tests and for callers that size work before packing.
void RoundRobinKeep(int len_a, int len_b, int budget, int* keep_a, int* keep_b);

// How many tokens of each segment Hugging Face tokenizers' "longest_first" truncation keeps for
// budget `budget` (<= 0 keeps nothing): the shorter segment (a on a tie) keeps its tokens while
// they are at most half the budget, the longer takes the rest; past that the shorter keeps half
// the budget rounded down and the longer the other half rounded up.
void LongestFirstKeep(int len_a, int len_b, int budget, int* keep_a, int* keep_b);

// Packs `a` and, if `b` is not null, `*b`. seq_length must be >= 2.
absl::StatusOr<PackedInput> PackInputs(absl::Span<const int32_t> a,
                                       const absl::Span<const int32_t>* b, int seq_length,
                                       int32_t cls_id, int32_t sep_id, TruncationPolicy policy);

// Tokenizes `text_a` (and `*text_b` when not null) and packs them with PackInputs, with the
// same result, but tokenizes each text only as far as seq_length can use (one id past the
// budget), so the work and the token buffers are bounded by seq_length, not by the texts'
// lengths. (Under kLongestFirst a pair of texts both longer than an odd budget is also counted
// to the end of the shorter one, since which is longer decides who keeps the odd token: more
// work, as Hugging Face tokenizes whole texts, but no more memory.) Errors
// name what failed after `context` (e.g. "inputs[2].text"; may be empty):
// "<context>.text_a: <tokenizer's message>" (invalid UTF-8), and "<context>: <packing
// message>"; a kReject message gives the tokens needed as "at least N" when a text was not
// tokenized to its end. `scratch` (may be null; one caller and one tokenizer at a time) keeps
// the token buffers' storage across calls, and text_a's tokens: a call whose text_a is the
// last call's (the same bytes, seq_length budget and `with_spans`) takes them instead of
// tokenizing it again, as for a Rerank's query, paired with each of its texts. (The count of
// two cut texts under kLongestFirst, above, still reads text_a each time.) `with_spans` fills
// PackedInput::spans.
struct PackScratch {
  // Texts up to this size are kept as the key of text_a's tokens (comparing costs less than
  // tokenizing); longer ones are tokenized on each call, as without a scratch.
  static constexpr size_t kMaxKeptText = 64 << 10;
  std::vector<int32_t> a, b;
  std::vector<TokenSpan> a_spans, b_spans;
  // What `a` and `a_spans` hold the tokens of, when `a_valid`.
  std::string a_text;
  size_t a_max_tokens = 0;
  bool a_with_spans = false;
  bool a_valid = false;
};
absl::StatusOr<PackedInput> TokenizeAndPack(const BertTokenizer& tokenizer,
                                            absl::string_view text_a,
                                            const absl::string_view* text_b, int seq_length,
                                            TruncationPolicy policy, absl::string_view context,
                                            PackScratch* scratch = nullptr,
                                            bool with_spans = false);

// Fills TF-Hub padded tensors of length seq_length: word ids (pad_id after the real tokens),
// input mask (1 for real tokens) and type ids (0 after the real tokens). Real tokens beyond
// seq_length, which PackInputs never produces for the same seq_length, are cut.
void PadToLength(const PackedInput& packed, int seq_length, int32_t pad_id,
                 std::vector<int32_t>* word_ids, std::vector<int32_t>* mask,
                 std::vector<int32_t>* type_ids);

}  // namespace bert

#endif  // BERT_SERVER_TEXT_PACKER_H_
