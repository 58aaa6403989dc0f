// Named entities from a token classifier's logits, grouped as Hugging Face's
// token-classification pipeline groups them with aggregation_strategy="simple": each token
// takes its likeliest label (softmax score); neighbouring tokens of the same entity type join
// one entity unless the later one begins a new one ("B-"); an entity's score is its tokens'
// mean, its span from its first token's start to its last one's end; entities labelled "O"
// are left out. The spans are the server's byte offsets, where the pipeline's are characters.
#ifndef BERT_CLIENT_ENTITIES_H_
#define BERT_CLIENT_ENTITIES_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/types/span.h"

namespace bert {

// One real token of a text ([CLS] and [SEP] left out): its bytes in the text and its logits,
// one per label.
struct TaggedToken {
  uint32_t start = 0;
  uint32_t end = 0;
  absl::Span<const float> logits;
};

struct Entity {
  std::string group;  // The label without its "B-"/"I-" prefix, e.g. "PER".
  double score = 0;   // The mean of its tokens' softmax scores for their labels.
  uint32_t start = 0;
  uint32_t end = 0;
};

// `labels` names each logit (ModelInfo.classifier.labels); tokens with another number of
// logits are skipped.
std::vector<Entity> GroupEntities(absl::Span<const TaggedToken> tokens,
                                  const std::vector<std::string>& labels);

}  // namespace bert

#endif  // BERT_CLIENT_ENTITIES_H_
