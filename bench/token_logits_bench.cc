// A token classifier's head on the host: Classifier::ApplyToRows (float32, eight partial sums:
// what the server runs for HEAD_TOKEN_LOGITS) against Classifier::Apply on each row (a double
// sum per product: what it ran before), one thread (bench/RESULTS_cpu.md).
//
//   bazel-bin/bench/token_logits_bench [--rows=128,4096,131072] [--labels=9] [--rounds=7]
//
// Method: per (hidden, rows), the two ways run in turn `--rounds` times (alternating which goes
// first); the median milliseconds of each are printed, and the largest difference between
// their logits. The rows are random floats in [-1, 1) and the weights in [-0.1, 0.1), so that
// the logits are of the order of one; 131,072 rows is the largest padded request of the
// default limits (1,024 inputs of 128 tokens).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "bench/int_list.h"
#include "server/engine/model.h"

ABSL_FLAG(std::string, rows, "128,4096,131072", "comma-separated row counts");
ABSL_FLAG(int, labels, 9, "the classifier's labels (CoNLL-2003 NER has 9)");
ABSL_FLAG(int, rounds, 7, "timed calls of each way per row count");

namespace {

std::vector<float> Random(size_t n, float scale, int seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-scale, scale);
  std::vector<float> v(n);
  for (float& f : v) f = u(rng);
  return v;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const std::optional<std::vector<int>> row_counts =
      bert::PositiveInts(absl::GetFlag(FLAGS_rows), "rows");
  if (!row_counts) return 2;
  const int labels = absl::GetFlag(FLAGS_labels);
  const int rounds = std::max(1, absl::GetFlag(FLAGS_rounds));
  if (labels < 1) {
    std::fprintf(stderr, "--labels must be >= 1\n");
    return 2;
  }
  float sink = 0;
  std::printf(
      "| hidden | rows | labels | per row, double ms | ApplyToRows ms | speed-up | "
      "max abs difference |\n|---|---|---|---|---|---|---|\n");
  for (const int hidden : {384, 768}) {
    bert::Classifier classifier;
    classifier.weight.shape = {labels, hidden};
    classifier.weight.data = Random(static_cast<size_t>(labels) * hidden, 0.1f, 1);
    classifier.bias.shape = {labels};
    classifier.bias.data = Random(labels, 0.1f, 2);
    for (const int rows : *row_counts) {
      const std::vector<float> x = Random(static_cast<size_t>(rows) * hidden, 1.0f, 3);
      std::vector<float> per_row(static_cast<size_t>(rows) * labels);
      std::vector<float> batched(per_row.size());
      std::vector<double> per_row_ms, batched_ms;
      for (int round = 0; round < rounds; ++round) {
        for (int turn = 0; turn < 2; ++turn) {
          const bool rows_turn = (turn == 0) == (round % 2 == 0);
          const auto start = std::chrono::steady_clock::now();
          if (rows_turn) {
            for (int r = 0; r < rows; ++r) {
              classifier.Apply(x.data() + static_cast<size_t>(r) * hidden, hidden,
                               per_row.data() + static_cast<size_t>(r) * labels);
            }
          } else {
            classifier.ApplyToRows(x.data(), rows, hidden, batched.data());
          }
          const auto stop = std::chrono::steady_clock::now();
          (rows_turn ? per_row_ms : batched_ms)
              .push_back(std::chrono::duration<double, std::milli>(stop - start).count());
          sink += rows_turn ? per_row[0] : batched[0];
        }
      }
      double max_difference = 0;
      for (size_t i = 0; i < batched.size(); ++i) {
        max_difference = std::max(max_difference, std::fabs(double{batched[i]} - per_row[i]));
      }
      const double a = Median(per_row_ms), b = Median(batched_ms);
      std::printf("| %d | %d | %d | %.3f | %.3f | %.2f | %.2e |\n", hidden, rows, labels, a, b,
                  a / b, max_difference);
      std::fflush(stdout);
    }
  }
  return sink == 12345.0f ? 1 : 0;  // keeps the work observable
}
