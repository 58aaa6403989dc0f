// bert_tokenize: tokenizes and packs JSON lines the way the server does.
//
//   bert_tokenize --vocab=FILE [--seq_length=128] [--cased] [--ids_only] [--reject] [--offsets]
//
// Reads one JSON object per line on stdin, {"text_a": "...", "text_b": "..."} (text_b
// optional), and writes one JSON line per input line, in order:
//   {"input_word_ids": [...], "input_mask": [...], "input_type_ids": [...], "tokens": [...]}
// (padded to seq_length, tokens = the real tokens' strings), or with --ids_only the unpadded
// {"ids": [...], "type_ids": [...], "truncated": bool}; with --offsets also
// "offsets": [[begin, end], ...], each real token's UTF-8 byte range in its own text (text_a or
// text_b; [0, 0] for [CLS] and [SEP]); or {"error": "..."} for a bad line
// (bad JSON, missing/non-string text_a, invalid UTF-8, or with --reject a truncation).
// Lines are processed independently; the exit status is 0 unless the vocabulary fails to load.
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "server/text/packer.h"
#include "server/text/tokenizer.h"
#include "tools/text_pair_line.h"

ABSL_FLAG(std::string, vocab, "", "WordPiece vocabulary file (vocab.txt), one token per line");
ABSL_FLAG(int, seq_length, 128, "Packed sequence length (>= 2)");
ABSL_FLAG(bool, cased, false, "Cased vocabulary: no lowercasing or accent stripping");
ABSL_FLAG(bool, ids_only, false, "Write only the unpadded ids and type ids");
ABSL_FLAG(bool, reject, false, "Report an error instead of truncating inputs that do not fit");
ABSL_FLAG(bool, longest_first, false,
          "Truncate pairs as Hugging Face tokenizers' longest_first does (the longer text gives "
          "up tokens first) instead of TF Hub's round robin");
ABSL_FLAG(bool, offsets, false,
          "Also write each real token's byte offsets [begin, end] in its text (text_a or text_b)");

namespace {

using json = nlohmann::json;

// Input strings come from JSON text; nlohmann's parser already rejects invalid UTF-8 there,
// and the tokenizer checks again. Output is dumped with error_handler_t::replace so that no
// line can abort the tool (e.g. an error message quoting a bad byte).
std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

std::string ErrorLine(const std::string& message) { return Dump(json{{"error", message}}); }

std::string ProcessLine(const bert::BertTokenizer& tokenizer, const std::string& line,
                        int seq_length, bool ids_only, bool offsets, bert::TruncationPolicy policy,
                        bert::PackScratch* scratch) {
  absl::StatusOr<bert::TextPair> pair = bert::ParseTextPairLine(line);
  if (!pair.ok()) return ErrorLine(std::string(pair.status().message()));
  const absl::string_view b_text =
      pair->text_b ? absl::string_view(*pair->text_b) : absl::string_view();
  absl::StatusOr<bert::PackedInput> packed =
      bert::TokenizeAndPack(tokenizer, pair->text_a, pair->text_b ? &b_text : nullptr, seq_length,
                            policy, /*context=*/"", scratch, /*with_spans=*/offsets);
  if (!packed.ok()) return ErrorLine(std::string(packed.status().message()));

  json out;
  if (offsets) {
    json spans = json::array();
    for (const bert::TokenSpan& span : packed->spans) spans.push_back({span.begin, span.end});
    out["offsets"] = std::move(spans);
  }
  if (ids_only) {
    out["ids"] = packed->word_ids;
    out["type_ids"] = packed->type_ids;
    out["truncated"] = packed->truncated;
    return Dump(out);
  }
  std::vector<int32_t> word_ids, mask, type_ids;
  bert::PadToLength(*packed, seq_length, tokenizer.pad_id(), &word_ids, &mask, &type_ids);
  std::vector<std::string> tokens;
  tokens.reserve(packed->word_ids.size());
  for (int32_t id : packed->word_ids) tokens.emplace_back(tokenizer.Token(id));
  out["input_word_ids"] = word_ids;
  out["input_mask"] = mask;
  out["input_type_ids"] = type_ids;
  out["tokens"] = tokens;
  return Dump(out);
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const std::string vocab = absl::GetFlag(FLAGS_vocab);
  const int seq_length = absl::GetFlag(FLAGS_seq_length);
  if (vocab.empty()) {
    std::cerr << "bert_tokenize: --vocab=FILE is required\n";
    return 2;
  }
  if (seq_length < 2) {
    std::cerr << "bert_tokenize: --seq_length must be at least 2\n";
    return 2;
  }
  bert::BertTokenizer::Options options;
  options.lowercase = !absl::GetFlag(FLAGS_cased);
  auto tokenizer = bert::BertTokenizer::Load(vocab, options);
  if (!tokenizer.ok()) {
    std::cerr << "bert_tokenize: " << tokenizer.status() << "\n";
    return 1;
  }
  const bool ids_only = absl::GetFlag(FLAGS_ids_only);
  if (absl::GetFlag(FLAGS_reject) && absl::GetFlag(FLAGS_longest_first)) {
    std::cerr << "bert_tokenize: --reject and --longest_first exclude each other\n";
    return 2;
  }
  bert::TruncationPolicy policy = bert::TruncationPolicy::kTruncate;
  if (absl::GetFlag(FLAGS_reject)) policy = bert::TruncationPolicy::kReject;
  if (absl::GetFlag(FLAGS_longest_first)) policy = bert::TruncationPolicy::kLongestFirst;
  std::ios::sync_with_stdio(false);
  bert::PackScratch scratch;
  std::string line;
  std::string out;
  while (std::getline(std::cin, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    out = ProcessLine(**tokenizer, line, seq_length, ids_only, absl::GetFlag(FLAGS_offsets), policy,
                      &scratch);
    out.push_back('\n');
    std::cout.write(out.data(), out.size());
  }
  std::cout.flush();
  return 0;
}
