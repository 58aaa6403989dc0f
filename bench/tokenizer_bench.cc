// Single-thread tokenizer throughput over a corpus file (one text per line).
//
//   tokenizer_bench --vocab=FILE --corpus=FILE [--min_seconds=3] [--seq_length=128]
//
// Method: load the corpus into memory, run one untimed warm-up pass, then time whole passes
// until --min_seconds of process CPU time have elapsed. Throughput is per CPU-second
// (CLOCK_PROCESS_CPUTIME_ID; the machine is shared, so wall time also counts other users'
// work); the wall-clock MB/s is printed alongside. Two modes are timed separately:
// "tokenize" (BertTokenizer::Tokenize into a reused vector) and "tokenize+pack" (Tokenize +
// PackInputs(seq_length, truncate) + PadToLength, what a request costs the server before the
// engine); "tokenize+spans" is Tokenize with each token's TokenSpan (what the Tokenize RPC
// computes, and what HF computes on every call). "rerank" and "rerank-rescan" pack
// (--query, text) pairs for each text at seq_length, longest_first, as a Rerank request's
// pairs are packed: with one PackScratch kept across the texts (the query tokenized once, as
// the server does) and without (the query tokenized for every text); their MB/s count the
// texts' bytes only. Prints one line per mode: name, MB/s (input bytes), texts/s, tokens/s.
// This is a benchmark, not a test.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "server/text/packer.h"
#include "server/text/tokenizer.h"

ABSL_FLAG(std::string, vocab, "", "vocab.txt");
ABSL_FLAG(std::string, corpus, "", "corpus file, one text per line");
ABSL_FLAG(double, min_seconds, 3.0, "minimum timed duration per mode");
ABSL_FLAG(int, seq_length, 128, "seq_length for the tokenize+pack and rerank modes");
ABSL_FLAG(bool, cased, false, "cased vocabulary");
ABSL_FLAG(std::string, query,
          "how do I read a file line by line and skip the lines that start with a comment?",
          "the query of the rerank modes");

namespace {

double CpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

template <typename Fn>
void Time(const char* name, const std::vector<std::string>& texts, size_t bytes, Fn pass) {
  pass();  // Warm-up.
  const double min_seconds = absl::GetFlag(FLAGS_min_seconds);
  const auto wall_start = std::chrono::steady_clock::now();
  const double cpu_start = CpuSeconds();
  double elapsed = 0;
  long passes = 0;
  long tokens = 0;
  do {
    tokens += pass();
    ++passes;
    elapsed = CpuSeconds() - cpu_start;
  } while (elapsed < min_seconds);
  const double wall =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_start).count();
  std::printf(
      "%-15s %10.2f MB/s %12.0f texts/s %14.0f tokens/s  (%ld passes, %.2f cpu-s, "
      "wall %.2f MB/s)\n",
      name, bytes * passes / elapsed / 1e6, texts.size() * passes / elapsed, tokens / elapsed,
      passes, elapsed, bytes * passes / wall / 1e6);
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  bert::BertTokenizer::Options options;
  options.lowercase = !absl::GetFlag(FLAGS_cased);
  auto tokenizer = bert::BertTokenizer::Load(absl::GetFlag(FLAGS_vocab), options);
  if (!tokenizer.ok()) {
    std::fprintf(stderr, "%s\n", tokenizer.status().ToString().c_str());
    return 1;
  }
  std::ifstream in(absl::GetFlag(FLAGS_corpus));
  if (!in) {
    std::fprintf(stderr, "cannot open corpus\n");
    return 1;
  }
  std::vector<std::string> texts;
  size_t bytes = 0;
  for (std::string line; std::getline(in, line);) {
    bytes += line.size();
    texts.push_back(std::move(line));
  }
  std::printf("corpus: %zu texts, %zu bytes\n", texts.size(), bytes);
  const bert::BertTokenizer& tok = **tokenizer;
  std::vector<int32_t> ids;
  Time("tokenize", texts, bytes, [&] {
    long n = 0;
    for (const std::string& text : texts) {
      ids.clear();
      if (!tok.Tokenize(text, &ids).ok()) std::abort();
      n += ids.size();
    }
    return n;
  });
  std::vector<bert::TokenSpan> spans;
  Time("tokenize+spans", texts, bytes, [&] {
    long n = 0;
    for (const std::string& text : texts) {
      ids.clear();
      spans.clear();
      if (!tok.Tokenize(text, SIZE_MAX, &ids, &spans).ok()) std::abort();
      n += ids.size();
    }
    return n;
  });
  const int seq_length = absl::GetFlag(FLAGS_seq_length);
  std::vector<int32_t> word_ids, mask, type_ids;
  Time("tokenize+pack", texts, bytes, [&] {
    long n = 0;
    for (const std::string& text : texts) {
      ids.clear();
      if (!tok.Tokenize(text, &ids).ok()) std::abort();
      auto packed = bert::PackInputs(ids, nullptr, seq_length, tok.cls_id(), tok.sep_id(),
                                     bert::TruncationPolicy::kTruncate);
      bert::PadToLength(*packed, seq_length, tok.pad_id(), &word_ids, &mask, &type_ids);
      n += packed->num_tokens();
    }
    return n;
  });
  const std::string query = absl::GetFlag(FLAGS_query);
  const auto rerank_pass = [&](bert::PackScratch* scratch) {
    long n = 0;
    for (const std::string& text : texts) {
      const absl::string_view b = text;
      auto packed = bert::TokenizeAndPack(tok, query, &b, seq_length,
                                          bert::TruncationPolicy::kLongestFirst, "", scratch);
      if (!packed.ok()) std::abort();
      n += packed->num_tokens();
    }
    return n;
  };
  bert::PackScratch scratch;
  Time("rerank", texts, bytes, [&] { return rerank_pass(&scratch); });
  Time("rerank-rescan", texts, bytes, [&] { return rerank_pass(nullptr); });
  return 0;
}
