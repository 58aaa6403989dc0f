#include "server/core/classifier_scores.h"

#include <algorithm>
#include <cmath>

namespace bert {

ScoreFunction ScoreFunctionFor(const std::string& problem_type, int num_labels,
                               const std::string& activation_function) {
  if (!activation_function.empty()) {
    // "torch.nn.modules.activation.Sigmoid" and the like: the class name decides.
    const size_t dot = activation_function.rfind('.');
    const std::string name =
        dot == std::string::npos ? activation_function : activation_function.substr(dot + 1);
    if (name == "Sigmoid") return ScoreFunction::kSigmoid;
    if (name == "Softmax") return ScoreFunction::kSoftmax;
    return ScoreFunction::kNone;  // Identity, or one this client does not know
  }
  if (problem_type == "regression") return ScoreFunction::kNone;
  if (problem_type == "multi_label_classification" || num_labels == 1) {
    return ScoreFunction::kSigmoid;
  }
  if (problem_type == "single_label_classification" || num_labels > 1) {
    return ScoreFunction::kSoftmax;
  }
  return ScoreFunction::kNone;
}

const char* ScoreFunctionName(ScoreFunction function) {
  switch (function) {
    case ScoreFunction::kSigmoid:
      return "sigmoid";
    case ScoreFunction::kSoftmax:
      return "softmax";
    case ScoreFunction::kNone:
      break;
  }
  return "none";
}

std::vector<double> Scores(ScoreFunction function, const std::vector<float>& logits) {
  std::vector<double> scores;
  switch (function) {
    case ScoreFunction::kNone:
      break;
    case ScoreFunction::kSigmoid:
      for (float x : logits) scores.push_back(1.0 / (1.0 + std::exp(-static_cast<double>(x))));
      break;
    case ScoreFunction::kSoftmax: {
      if (logits.empty()) break;
      const double top = *std::max_element(logits.begin(), logits.end());
      double sum = 0;
      for (float x : logits) {
        scores.push_back(std::exp(x - top));
        sum += scores.back();
      }
      for (double& s : scores) s /= sum;
      break;
    }
  }
  return scores;
}

}  // namespace bert
