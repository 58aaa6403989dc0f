// A cross-encoder reranking (BertService.Rerank): which score each (query, text) pair's logit
// becomes, and the order of the texts. Thread-safe (pure functions).
#ifndef BERT_SERVER_CORE_RERANK_H_
#define BERT_SERVER_CORE_RERANK_H_

#include <string>
#include <vector>

#include "absl/types/span.h"
#include "server/core/classifier_scores.h"

namespace bert {

// The function a one-label classifier's logit goes through to become a relevance score, as
// sentence-transformers' CrossEncoder chooses it (the activation the model names, else a
// sigmoid; ScoreFunctionFor), or none with `raw_scores`.
ScoreFunction RerankScoreFunction(const std::string& activation_function, bool raw_scores);

// The score of one logit under `function` (kSoftmax over one label: 1).
float RerankScore(ScoreFunction function, float logit);

// The indices of `scores`, best first: higher scores first, equal ones in index order, NaN
// after every number; at most `top_n` of them (0: all).
std::vector<int> RankByScore(absl::Span<const float> scores, int top_n);

}  // namespace bert

#endif  // BERT_SERVER_CORE_RERANK_H_
