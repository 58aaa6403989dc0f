#include "client/load_workload.h"

#include <algorithm>
#include <cmath>
#include <fstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "client/request_options.h"

namespace bert {
namespace {

// Common English words that are whole tokens of bert-base-uncased's vocabulary and of
// tests/data/tiny_vocab_1024.txt (load_test checks both).
constexpr const char* kWords[] = {
    "the",         "of",         "and",        "to",         "in",           "is",
    "you",         "that",       "it",         "he",         "was",          "for",
    "on",          "are",        "as",         "with",       "his",          "they",
    "at",          "be",         "this",       "have",       "from",         "or",
    "one",         "had",        "by",         "word",       "but",          "not",
    "what",        "all",        "were",       "we",         "when",         "your",
    "can",         "said",       "there",      "use",        "an",           "each",
    "which",       "she",        "do",         "how",        "their",        "if",
    "will",        "up",         "other",      "about",      "out",          "many",
    "then",        "them",       "these",      "so",         "some",         "her",
    "would",       "make",       "like",       "him",        "being",        "offered",
    "job",         "role",       "hello",      "world",      "good",         "morning",
    "evening",     "night",      "thank",      "thanks",     "yes",          "sorry",
    "new",         "old",        "big",        "small",      "great",        "little",
    "own",         "right",      "left",       "high",       "low",          "last",
    "next",        "early",      "late",       "young",      "important",    "few",
    "public",      "bad",        "same",       "able",       "work",         "life",
    "hand",        "place",      "case",       "week",       "company",      "system",
    "program",     "question",   "government", "point",      "home",         "school",
    "state",       "family",     "student",    "group",      "country",      "problem",
    "fact",        "money",      "story",      "month",      "lot",          "study",
    "book",        "eye",        "business",   "issue",      "side",         "kind",
    "head",        "house",      "service",    "friend",     "father",       "power",
    "hour",        "game",       "line",       "end",        "member",       "law",
    "car",         "city",       "community",  "name",       "president",    "team",
    "minute",      "idea",       "kid",        "body",       "information",  "back",
    "parent",      "face",       "others",     "level",      "office",       "door",
    "health",      "person",     "art",        "war",        "history",      "party",
    "result",      "change",     "reason",     "research",   "girl",         "guy",
    "moment",      "air",        "teacher",    "force",      "education",    "foot",
    "boy",         "age",        "policy",     "music",      "process",      "market",
    "sense",       "nation",     "plan",       "college",    "interest",     "death",
    "experience",  "effect",     "class",      "control",    "care",         "field",
    "development", "effort",     "rate",       "heart",      "drug",         "show",
    "leader",      "light",      "voice",      "wife",       "police",       "mind",
    "price",       "report",     "decision",   "son",        "view",         "relationship",
    "town",        "road",       "arm",        "difference", "value",        "building",
    "action",      "model",      "season",     "society",    "tax",          "director",
    "position",    "player",     "record",     "paper",      "space",        "ground",
    "form",        "event",      "official",   "matter",     "center",       "couple",
    "site",        "project",    "activity",   "star",       "table",        "need",
    "court",       "american",   "situation",  "cost",       "industry",     "figure",
    "street",      "image",      "phone",      "data",       "picture",      "practice",
    "piece",       "land",       "product",    "doctor",     "wall",         "patient",
    "worker",      "news",       "test",       "movie",      "north",        "love",
    "support",     "technology", "step",       "baby",       "computer",     "type",
    "attention",   "film",       "tree",       "source",     "organization", "hair",
    "window",      "evidence",   "population", "sentence",   "search",       "query",
    "document",    "text",       "language",   "server",     "client",       "request",
    "response",    "batch",      "token",      "vector",     "neural",       "network",
    "learning",    "machine",    "deep",       "train",      "input",        "output",
};
constexpr int kNumWords = sizeof(kWords) / sizeof(kWords[0]);

constexpr int kMinLength = 3;  // [CLS] word [SEP]

}  // namespace

absl::StatusOr<LengthDistribution> ParseLengthDistribution(absl::string_view spec) {
  const std::vector<std::string> parts = absl::StrSplit(spec, ':');
  const auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("lengths \"", spec, "\": ", why, " (fixed:N or lognormal:MEAN:MAX[:SIGMA])"));
  };
  LengthDistribution dist;
  if (parts[0] == "fixed") {
    if (parts.size() != 2) return bad("fixed takes one length");
    dist.kind = LengthDistribution::Kind::kFixed;
    if (!absl::SimpleAtoi(parts[1], &dist.mean)) return bad("not an integer length");
    dist.max = dist.mean;
  } else if (parts[0] == "lognormal") {
    if (parts.size() != 3 && parts.size() != 4) return bad("lognormal takes MEAN:MAX[:SIGMA]");
    dist.kind = LengthDistribution::Kind::kLogNormal;
    if (!absl::SimpleAtoi(parts[1], &dist.mean) || !absl::SimpleAtoi(parts[2], &dist.max)) {
      return bad("MEAN and MAX must be integers");
    }
    if (parts.size() == 4 &&
        (!absl::SimpleAtod(parts[3], &dist.sigma) || !(dist.sigma > 0 && dist.sigma <= 3))) {
      return bad("SIGMA must be in (0, 3]");
    }
    if (dist.max < dist.mean) return bad("MAX below MEAN");
  } else {
    return bad("unknown distribution");
  }
  if (dist.mean < kMinLength || dist.max > 100000) {
    return bad(absl::StrCat("lengths must be in [", kMinLength, ", 100000]"));
  }
  return dist;
}

std::vector<int> SampleLengths(const LengthDistribution& dist, int n, std::mt19937_64* rng) {
  std::vector<int> lengths(n, dist.mean);
  if (dist.kind == LengthDistribution::Kind::kFixed) return lengths;
  // E[exp(N(mu, sigma^2))] = exp(mu + sigma^2 / 2) = mean.
  const double mu = std::log(static_cast<double>(dist.mean)) - dist.sigma * dist.sigma / 2;
  std::lognormal_distribution<double> draw(mu, dist.sigma);
  for (int& length : lengths) {
    const double x =
        std::clamp(draw(*rng), static_cast<double>(kMinLength), static_cast<double>(dist.max));
    length = static_cast<int>(std::lround(x));
  }
  return lengths;
}

std::string SyntheticText(int words, std::mt19937_64* rng) {
  std::uniform_int_distribution<int> pick(0, kNumWords - 1);
  std::string text;
  for (int i = 0; i < words; ++i) {
    if (i > 0) text.push_back(' ');
    text.append(kWords[pick(*rng)]);
  }
  return text;
}

absl::Span<const char* const> SyntheticWords() { return kWords; }

std::vector<v1::Input> SyntheticInputs(const LengthDistribution& dist, int n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<v1::Input> inputs(n);
  const std::vector<int> lengths = SampleLengths(dist, n, &rng);
  for (int i = 0; i < n; ++i) {
    inputs[i].mutable_text()->set_text_a(SyntheticText(lengths[i] - 2, &rng));
  }
  return inputs;
}

absl::StatusOr<std::vector<v1::Input>> ReadInputFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  absl::StatusOr<std::vector<v1::Input>> inputs = ParseInputLines(in, path);
  if (inputs.ok() && inputs->empty()) {
    return absl::InvalidArgumentError(absl::StrCat(path, " has no inputs"));
  }
  return inputs;
}

std::vector<v1::EmbedRequest> MakeRequests(const std::vector<v1::Input>& pool,
                                           int inputs_per_request, int count,
                                           const v1::EmbedRequest& options) {
  std::vector<v1::EmbedRequest> requests(count, options);
  size_t next = 0;
  for (int r = 0; r < count; ++r) {
    v1::EmbedRequest& request = requests[r];
    request.clear_inputs();
    request.set_request_id(absl::StrCat("load-", r));
    for (int i = 0; i < inputs_per_request; ++i) {
      *request.add_inputs() = pool[next];
      next = (next + 1) % pool.size();
    }
  }
  return requests;
}

std::vector<v1::RerankRequest> MakeRerankRequests(const std::vector<v1::Input>& pool,
                                                  int texts_per_request, int count,
                                                  const v1::RerankRequest& options) {
  std::vector<v1::RerankRequest> requests(count, options);
  size_t next = 0;
  const auto take = [&pool, &next]() -> const std::string& {
    const std::string& text = pool[next].text().text_a();
    next = (next + 1) % pool.size();
    return text;
  };
  for (int r = 0; r < count; ++r) {
    v1::RerankRequest& request = requests[r];
    request.clear_texts();
    request.set_request_id(absl::StrCat("load-", r));
    request.set_query(take());
    for (int i = 0; i < texts_per_request; ++i) request.add_texts(take());
  }
  return requests;
}

}  // namespace bert
