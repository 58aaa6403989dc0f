#include "server/text/packer.h"

#include <algorithm>
#include <cstdint>
#include <limits>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace bert {

void RoundRobinKeep(int len_a, int len_b, int budget, int* keep_a, int* keep_b) {
  if (budget <= 0) {
    *keep_a = 0;
    *keep_b = 0;
    return;
  }
  // Closed form of taking turns a, b, a, b, ... (a segment that runs out skips its turns):
  // each gets half the budget, a the odd token, and whatever the other cannot use.
  const int half_b = budget / 2;
  const int half_a = budget - half_b;
  *keep_a = std::min(len_a, std::max(half_a, budget - len_b));
  *keep_b = std::min(len_b, std::max(half_b, budget - len_a));
}

void LongestFirstKeep(int len_a, int len_b, int budget, int* keep_a, int* keep_b) {
  if (budget <= 0) {
    *keep_a = 0;
    *keep_b = 0;
    return;
  }
  if (int64_t{len_a} + len_b <= budget) {
    *keep_a = len_a;
    *keep_b = len_b;
    return;
  }
  const bool a_longer = len_a > len_b;
  const int shorter = a_longer ? len_b : len_a;
  int keep_shorter, keep_longer;
  if (2 * int64_t{shorter} <= budget) {
    keep_shorter = shorter;
    keep_longer = budget - shorter;
  } else {
    keep_shorter = budget / 2;
    keep_longer = budget - keep_shorter;
  }
  *keep_a = std::min(len_a, a_longer ? keep_longer : keep_shorter);
  *keep_b = std::min(len_b, a_longer ? keep_shorter : keep_longer);
}

namespace {

// PackInputs for segments that may be only the first ids of their text's tokenization:
// `cut_short` says one may be, so a rejection's token count is only a lower bound. `len_a` and
// `len_b` are the lengths the packing goes by: the spans' sizes, except where TokenizeAndPack
// knows more (which of two cut texts is longer); the spans hold every id kept.
absl::StatusOr<PackedInput> Pack(absl::Span<const int32_t> a, const absl::Span<const int32_t>* b,
                                 int len_a, int len_b, int seq_length, int32_t cls_id,
                                 int32_t sep_id, TruncationPolicy policy, bool cut_short) {
  if (seq_length < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("seq_length must be at least 2, got ", seq_length));
  }
  int keep_a;
  int keep_b = 0;
  bool truncated;
  if (b == nullptr) {
    keep_a = std::min(len_a, seq_length - 2);
    truncated = keep_a < len_a;
  } else {
    if (policy == TruncationPolicy::kLongestFirst) {
      LongestFirstKeep(len_a, len_b, seq_length - 3, &keep_a, &keep_b);
    } else {
      RoundRobinKeep(len_a, len_b, seq_length - 3, &keep_a, &keep_b);
    }
    // At seq_length 2 b's [SEP] does not fit either.
    truncated = keep_a < len_a || keep_b < len_b || seq_length < 3;
  }
  if (truncated && policy == TruncationPolicy::kReject) {
    return absl::InvalidArgumentError(absl::StrCat(
        "input needs ", cut_short ? "at least " : "", len_a + len_b + (b != nullptr ? 3 : 2),
        " tokens with [CLS]/[SEP], more than seq_length ", seq_length));
  }
  PackedInput out;
  const int total = std::min(seq_length, keep_a + keep_b + (b != nullptr ? 3 : 2));
  out.word_ids.reserve(total);
  out.type_ids.reserve(total);
  out.word_ids.push_back(cls_id);
  out.word_ids.insert(out.word_ids.end(), a.begin(), a.begin() + keep_a);
  out.word_ids.push_back(sep_id);
  out.type_ids.assign(out.word_ids.size(), 0);
  if (b != nullptr && seq_length >= 3) {
    out.word_ids.insert(out.word_ids.end(), b->begin(), b->begin() + keep_b);
    out.word_ids.push_back(sep_id);
    out.type_ids.resize(out.word_ids.size(), 1);
  }
  out.truncated = truncated;
  return out;
}

// The spans of `packed`'s tokens, when its segments' tokens had `a_spans` and `b_spans`.
void PackSpans(absl::Span<const TokenSpan> a_spans, absl::Span<const TokenSpan> b_spans,
               PackedInput* packed) {
  const std::vector<int32_t>& types = packed->type_ids;
  const int n = packed->num_tokens();
  const int a_end = static_cast<int>(std::find(types.begin(), types.end(), 1) - types.begin());
  packed->spans.assign(n, TokenSpan());
  // [CLS] a... [SEP] (b... [SEP]): real tokens sit between the special ones.
  for (int i = 1; i + 1 < a_end; ++i) packed->spans[i] = a_spans[i - 1];
  for (int i = a_end; i + 1 < n; ++i) packed->spans[i] = b_spans[i - a_end];
}

}  // namespace

absl::StatusOr<PackedInput> PackInputs(absl::Span<const int32_t> a,
                                       const absl::Span<const int32_t>* b, int seq_length,
                                       int32_t cls_id, int32_t sep_id, TruncationPolicy policy) {
  return Pack(a, b, static_cast<int>(a.size()), b != nullptr ? static_cast<int>(b->size()) : 0,
              seq_length, cls_id, sep_id, policy, /*cut_short=*/false);
}

void PadToLength(const PackedInput& packed, int seq_length, int32_t pad_id,
                 std::vector<int32_t>* word_ids, std::vector<int32_t>* mask,
                 std::vector<int32_t>* type_ids) {
  const int n = std::min(packed.num_tokens(), std::max(seq_length, 0));
  word_ids->assign(packed.word_ids.begin(), packed.word_ids.begin() + n);
  word_ids->resize(std::max(seq_length, 0), pad_id);
  mask->assign(n, 1);
  mask->resize(std::max(seq_length, 0), 0);
  type_ids->assign(packed.type_ids.begin(), packed.type_ids.begin() + n);
  type_ids->resize(std::max(seq_length, 0), 0);
}

absl::StatusOr<PackedInput> TokenizeAndPack(const BertTokenizer& tokenizer,
                                            absl::string_view text_a,
                                            const absl::string_view* text_b, int seq_length,
                                            TruncationPolicy policy, absl::string_view context,
                                            PackScratch* scratch, bool with_spans) {
  PackScratch local;
  PackScratch& buffers = scratch != nullptr ? *scratch : local;
  buffers.b.clear();
  buffers.b_spans.clear();
  const auto named = [&](absl::string_view field, const absl::Status& status) {
    return absl::Status(status.code(), absl::StrCat(context, context.empty() ? "" : ".", field,
                                                    ": ", status.message()));
  };
  // At most `budget` tokens of either segment are kept (either rule gives one segment at most
  // the whole budget), and one more shows that it was cut, for kReject and `truncated`. With
  // each segment cut to budget + 1 ids, RoundRobinKeep keeps the same tokens as with the whole
  // tokenization, and so does LongestFirstKeep unless both are cut (below), so tokenizing
  // stops there: a huge text costs little more than a UTF-8 check.
  const int budget = seq_length - (text_b != nullptr ? 3 : 2);
  const size_t max_tokens = static_cast<size_t>(std::max(budget, 0)) + 1;
  const bool a_kept = buffers.a_valid && buffers.a_max_tokens == max_tokens &&
                      (buffers.a_with_spans || !with_spans) && buffers.a_text == text_a;
  if (!a_kept) {
    buffers.a_valid = false;
    buffers.a.clear();
    buffers.a_spans.clear();
    if (absl::Status status = tokenizer.Tokenize(text_a, max_tokens, &buffers.a,
                                                 with_spans ? &buffers.a_spans : nullptr);
        !status.ok()) {
      return named("text_a", status);
    }
    if (scratch != nullptr && text_a.size() <= PackScratch::kMaxKeptText) {
      buffers.a_text.assign(text_a.data(), text_a.size());
      buffers.a_max_tokens = max_tokens;
      buffers.a_with_spans = with_spans;
      buffers.a_valid = true;
    }
  }
  if (text_b != nullptr) {
    if (absl::Status status = tokenizer.Tokenize(*text_b, max_tokens, &buffers.b,
                                                 with_spans ? &buffers.b_spans : nullptr);
        !status.ok()) {
      return named("text_b", status);
    }
  }
  const bool cut_short = buffers.a.size() == max_tokens || buffers.b.size() == max_tokens;
  int len_a = static_cast<int>(buffers.a.size());
  int len_b = static_cast<int>(buffers.b.size());
  if (policy == TruncationPolicy::kLongestFirst && text_b != nullptr && budget % 2 == 1 &&
      buffers.a.size() == max_tokens && buffers.b.size() == max_tokens) {
    // Both texts are longer than the budget: each keeps half of it, and the one longer at the
    // start (b on a tie) the odd token, so which is longer still matters. Counted without
    // keeping ids: the text of fewer bytes to its end, the other one token past that.
    const bool a_first = text_a.size() <= text_b->size();
    const absl::string_view first = a_first ? text_a : *text_b;
    const absl::string_view second = a_first ? *text_b : text_a;
    absl::StatusOr<size_t> first_count =
        tokenizer.CountTokens(first, std::numeric_limits<size_t>::max());
    if (!first_count.ok()) return named(a_first ? "text_a" : "text_b", first_count.status());
    absl::StatusOr<size_t> second_count = tokenizer.CountTokens(second, *first_count + 1);
    if (!second_count.ok()) return named(a_first ? "text_b" : "text_a", second_count.status());
    const bool a_longer = a_first ? *first_count > *second_count : *second_count > *first_count;
    // Lengths that say only that: past the budget, the longer one more.
    len_a = static_cast<int>(max_tokens) + (a_longer ? 1 : 0);
    len_b = static_cast<int>(max_tokens) + (a_longer ? 0 : 1);
  }
  const absl::Span<const int32_t> b_span(buffers.b);
  absl::StatusOr<PackedInput> packed =
      Pack(buffers.a, text_b != nullptr ? &b_span : nullptr, len_a, len_b, seq_length,
           tokenizer.cls_id(), tokenizer.sep_id(), policy, cut_short);
  if (!packed.ok() && !context.empty()) {
    return absl::Status(packed.status().code(),
                        absl::StrCat(context, ": ", packed.status().message()));
  }
  if (packed.ok() && with_spans) PackSpans(buffers.a_spans, buffers.b_spans, &*packed);
  return packed;
}

}  // namespace bert
