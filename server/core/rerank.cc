#include "server/core/rerank.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace bert {

ScoreFunction RerankScoreFunction(const std::string& activation_function, bool raw_scores) {
  if (raw_scores) return ScoreFunction::kNone;
  // CrossEncoder ignores problem_type: with no activation named, one label gets a sigmoid.
  return ScoreFunctionFor(/*problem_type=*/"", /*num_labels=*/1, activation_function);
}

float RerankScore(ScoreFunction function, float logit) {
  if (function == ScoreFunction::kNone) return logit;
  return static_cast<float>(Scores(function, {logit}).front());
}

std::vector<int> RankByScore(absl::Span<const float> scores, int top_n) {
  std::vector<int> order(scores.size());
  std::iota(order.begin(), order.end(), 0);
  const auto before = [&scores](int a, int b) {
    const bool a_nan = std::isnan(scores[a]), b_nan = std::isnan(scores[b]);
    if (a_nan != b_nan) return b_nan;
    if (!a_nan && scores[a] != scores[b]) return scores[a] > scores[b];
    return a < b;
  };
  const size_t keep = top_n > 0 ? std::min(order.size(), static_cast<size_t>(top_n)) : order.size();
  std::partial_sort(order.begin(), order.begin() + keep, order.end(), before);
  order.resize(keep);
  return order;
}

}  // namespace bert
