// Whether a model's WordPiece tokenizer lowercases (and strips accents): the server's and
// bert_encode's --lowercase setting, resolved the same way for both.
#ifndef BERT_SERVER_TEXT_LOWERCASE_H_
#define BERT_SERVER_TEXT_LOWERCASE_H_

#include <string>

#include "absl/status/statusor.h"

namespace bert {

// `setting` is "true", "false" or "auto". "auto": tokenizer_config.json's do_lower_case in
// `model_dir` when present, else uncased unless the vocabulary at `vocab_path` holds
// upper-case word pieces (a cased vocab such as bert-base-cased). INVALID_ARGUMENT for any
// other setting; NOT_FOUND when "auto" needs the vocabulary and cannot read it.
absl::StatusOr<bool> ResolveLowercase(const std::string& setting, const std::string& model_dir,
                                      const std::string& vocab_path);

}  // namespace bert

#endif  // BERT_SERVER_TEXT_LOWERCASE_H_
