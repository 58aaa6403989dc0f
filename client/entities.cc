#include "client/entities.h"

#include <algorithm>
#include <cmath>
#include <cstddef>

#include "absl/strings/match.h"

namespace bert {
namespace {

// A token's (word's) label and its score for it.
struct Tagged {
  size_t label;
  double score;
  uint32_t start;
  uint32_t end;
};

// The first of the largest values.
size_t Argmax(absl::Span<const double> values) {
  return static_cast<size_t>(std::max_element(values.begin(), values.end()) - values.begin());
}

std::vector<double> Softmax(absl::Span<const float> logits) {
  const float top = *std::max_element(logits.begin(), logits.end());
  std::vector<double> p(logits.size());
  double sum = 0;
  for (size_t k = 0; k < logits.size(); ++k) {
    p[k] = std::exp(static_cast<double>(logits[k]) - top);
    sum += p[k];
  }
  for (double& x : p) x /= sum;
  return p;
}

// One label for a word's tokens (`word` non-empty), as `aggregation` picks it.
Tagged TagWord(absl::Span<const TaggedToken> word, Aggregation aggregation) {
  std::vector<double> scores;
  if (aggregation == Aggregation::kAverage) {
    scores.assign(word.front().logits.size(), 0.0);
    for (const TaggedToken& token : word) {
      const std::vector<double> p = Softmax(token.logits);
      for (size_t k = 0; k < p.size(); ++k) scores[k] += p[k];
    }
    for (double& x : scores) x /= static_cast<double>(word.size());
  } else if (aggregation == Aggregation::kMax) {
    // The token whose likeliest label is likeliest (the first of equal ones) decides.
    double best = -1;
    for (const TaggedToken& token : word) {
      std::vector<double> p = Softmax(token.logits);
      const double top = p[Argmax(p)];
      if (top > best) {
        best = top;
        scores = std::move(p);
      }
    }
  } else {  // kFirst, and kSimple's single tokens
    scores = Softmax(word.front().logits);
  }
  const size_t label = Argmax(scores);
  return {label, scores[label], word.front().start, word.back().end};
}

// "B-PER" -> (true, "PER"), "I-PER" -> (false, "PER"); any other name continues itself.
std::pair<bool, std::string> BeginsAndType(const std::string& label) {
  if (absl::StartsWith(label, "B-")) return {true, label.substr(2)};
  if (absl::StartsWith(label, "I-")) return {false, label.substr(2)};
  return {false, label};
}

size_t CodePoints(absl::string_view utf8) {
  return static_cast<size_t>(
      std::count_if(utf8.begin(), utf8.end(), [](char c) { return (c & 0xC0) != 0x80; }));
}

}  // namespace

std::optional<Aggregation> ParseAggregation(absl::string_view name) {
  if (name == "simple") return Aggregation::kSimple;
  if (name == "first") return Aggregation::kFirst;
  if (name == "average") return Aggregation::kAverage;
  if (name == "max") return Aggregation::kMax;
  return std::nullopt;
}

bool ContinuesWord(absl::string_view token, absl::string_view text, bool unknown) {
  return !unknown && CodePoints(token) != CodePoints(text);
}

std::vector<Entity> GroupEntities(absl::Span<const TaggedToken> tokens,
                                  const std::vector<std::string>& labels, Aggregation aggregation) {
  // Each token, or each word, with one label.
  std::vector<Tagged> tagged;
  std::vector<TaggedToken> usable;
  for (const TaggedToken& token : tokens) {
    if (!labels.empty() && token.logits.size() == labels.size()) usable.push_back(token);
  }
  for (size_t begin = 0; begin < usable.size();) {
    size_t end = begin + 1;
    if (aggregation != Aggregation::kSimple) {
      while (end < usable.size() && usable[end].continues_word) ++end;
    }
    tagged.push_back(TagWord(absl::MakeConstSpan(usable).subspan(begin, end - begin), aggregation));
    begin = end;
  }

  std::vector<Entity> entities;
  std::vector<Tagged> group;  // the tokens (words) of the entity being built
  const auto close = [&] {
    if (group.empty()) return;
    const std::string& first = labels[group.front().label];
    const size_t dash = first.find('-');
    Entity entity;
    entity.group = dash == std::string::npos ? first : first.substr(dash + 1);
    for (const Tagged& t : group) entity.score += t.score;
    entity.score /= static_cast<double>(group.size());
    entity.start = group.front().start;
    entity.end = group.back().end;
    if (entity.group != "O") entities.push_back(std::move(entity));
    group.clear();
  };
  for (const Tagged& t : tagged) {
    if (!group.empty()) {
      const auto [begins, type] = BeginsAndType(labels[t.label]);
      if (begins || type != BeginsAndType(labels[group.back().label]).second) close();
    }
    group.push_back(t);
  }
  close();
  return entities;
}

}  // namespace bert
