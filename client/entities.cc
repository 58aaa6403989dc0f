#include "client/entities.h"

#include <cmath>
#include <cstddef>

#include "absl/strings/match.h"

namespace bert {
namespace {

// A token's likeliest label (the first of equal ones) and its softmax score.
struct Tagged {
  size_t label;
  double score;
  uint32_t start;
  uint32_t end;
};

Tagged Tag(const TaggedToken& token) {
  const absl::Span<const float> logits = token.logits;
  size_t best = 0;
  for (size_t k = 1; k < logits.size(); ++k) {
    if (logits[k] > logits[best]) best = k;
  }
  double sum = 0;
  for (float x : logits) sum += std::exp(static_cast<double>(x) - logits[best]);
  return {best, 1.0 / sum, token.start, token.end};
}

// "B-PER" -> (true, "PER"), "I-PER" -> (false, "PER"); any other name continues itself.
std::pair<bool, std::string> BeginsAndType(const std::string& label) {
  if (absl::StartsWith(label, "B-")) return {true, label.substr(2)};
  if (absl::StartsWith(label, "I-")) return {false, label.substr(2)};
  return {false, label};
}

}  // namespace

std::vector<Entity> GroupEntities(absl::Span<const TaggedToken> tokens,
                                  const std::vector<std::string>& labels) {
  std::vector<Entity> entities;
  std::vector<Tagged> group;  // the tokens of the entity being built
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
  for (const TaggedToken& token : tokens) {
    if (token.logits.size() != labels.size() || labels.empty()) continue;
    const Tagged tagged = Tag(token);
    if (!group.empty()) {
      const auto [begins, type] = BeginsAndType(labels[tagged.label]);
      if (begins || type != BeginsAndType(labels[group.back().label]).second) close();
    }
    group.push_back(tagged);
  }
  close();
  return entities;
}

}  // namespace bert
