// What a classification head's raw logits (EmbedResult.logits) mean as scores
// (ModelInfo.classifier): the activation a sentence-transformers CrossEncoder names
// (activation_function: Identity, Sigmoid or Softmax; another: none), as CrossEncoder.predict
// applies it; otherwise by problem_type, as Hugging Face's text-classification pipeline
// chooses its function_to_apply: "regression": none; "multi_label_classification" or a single
// label (a cross-encoder's relevance): a sigmoid each; "single_label_classification" or several
// labels: softmax.
#ifndef BERT_SERVER_CORE_CLASSIFIER_SCORES_H_
#define BERT_SERVER_CORE_CLASSIFIER_SCORES_H_

#include <string>
#include <vector>

namespace bert {

enum class ScoreFunction { kNone, kSigmoid, kSoftmax };

ScoreFunction ScoreFunctionFor(const std::string& problem_type, int num_labels,
                               const std::string& activation_function = "");
const char* ScoreFunctionName(ScoreFunction function);  // "none", "sigmoid", "softmax"

// The scores of one input's logits (empty for kNone). Softmax is computed stably (shifted by
// the largest logit).
std::vector<double> Scores(ScoreFunction function, const std::vector<float>& logits);

}  // namespace bert

#endif  // BERT_SERVER_CORE_CLASSIFIER_SCORES_H_
