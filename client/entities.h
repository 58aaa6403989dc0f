// Named entities from a token classifier's logits, grouped as Hugging Face's
// token-classification pipeline groups them (its aggregation_strategy):
// - kSimple: each token takes its likeliest label (softmax score);
// - kFirst, kAverage, kMax: the tokens of one word (a token and the pieces that continue it)
//   first agree on one label: the first token's likeliest, the likeliest of the tokens' mean
//   scores, or that of the token with the highest score;
// then neighbouring tokens (words) of the same entity type join one entity unless the later
// one begins a new one ("B-"); an entity's score is its tokens' (words') mean, its span from
// its first token's start to its last one's end; entities labelled "O" are left out. The
// spans are the server's byte offsets, where the pipeline's are characters.
#ifndef BERT_CLIENT_ENTITIES_H_
#define BERT_CLIENT_ENTITIES_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace bert {

enum class Aggregation { kSimple, kFirst, kAverage, kMax };

// "simple", "first", "average" or "max"; nullopt for any other name.
std::optional<Aggregation> ParseAggregation(absl::string_view name);

// One real token of a text ([CLS] and [SEP] left out): its bytes in the text, its logits (one
// per label), and whether it continues the word of the token before it (ContinuesWord; only
// the word strategies read it).
struct TaggedToken {
  uint32_t start = 0;
  uint32_t end = 0;
  absl::Span<const float> logits;
  bool continues_word = false;
};

// Whether a token continues the word before it, as the pipeline decides for a tokenizer with
// a continuing-subword prefix (WordPiece's "##"): its vocabulary string and the text it came
// from differ in length, counted in code points ("##ing" for "ing"); the unknown token never
// does. Like the pipeline, a first piece whose normalisation changed its length (a decomposed
// accent stripped) counts as a continuation.
bool ContinuesWord(absl::string_view token, absl::string_view text, bool unknown);

struct Entity {
  std::string group;  // The label without its "B-"/"I-" prefix, e.g. "PER".
  double score = 0;   // The mean of its tokens' (words') scores for their labels.
  uint32_t start = 0;
  uint32_t end = 0;
};

// `labels` names each logit (ModelInfo.classifier.labels); tokens with another number of
// logits are skipped.
std::vector<Entity> GroupEntities(absl::Span<const TaggedToken> tokens,
                                  const std::vector<std::string>& labels,
                                  Aggregation aggregation = Aggregation::kSimple);

}  // namespace bert

#endif  // BERT_CLIENT_ENTITIES_H_
