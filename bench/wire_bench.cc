// What reading a request costs the server before validation: ParseEmbedRequest (the wire
// check, then protobuf's parse) on requests of a few shapes, single-threaded.
//
//   wire_bench [--min_seconds=1] [--repeats=5]
//
// Method: each request is serialized once into a one-slice ByteBuffer; one untimed warm-up
// call, then calls into a fresh EmbedRequest are timed in passes of at least --min_seconds of
// process CPU time (CLOCK_PROCESS_CPUTIME_ID: the machine is shared), --repeats passes per
// shape, in turn. Prints per shape the median and the range of the passes' CPU ns per call.
// Limits as the server sets them for BERT-base (256 inputs, 8 heads, 24 layer entries; the
// token-id limit is left unset, so that builds from before it existed compare alike).
// This is a benchmark, not a test.
#include <algorithm>
#include <cstdio>
#include <ctime>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "server/grpc/wire.h"

ABSL_FLAG(double, min_seconds, 1.0, "minimum CPU seconds per timed pass");
ABSL_FLAG(int, repeats, 5, "timed passes per request shape");

namespace {

double CpuSeconds() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return t.tv_sec + 1e-9 * t.tv_nsec;
}

struct Shape {
  const char* name;
  bert::v1::EmbedRequest request;
};

std::vector<Shape> Shapes() {
  const std::string text =
      "The quick brown fox jumps over the lazy dog, and then it runs into the forest to find "
      "its friends.";
  std::vector<Shape> shapes;
  for (int n : {1, 16, 256}) {
    Shape s{n == 1 ? "1 text input" : n == 16 ? "16 text inputs" : "256 text inputs", {}};
    for (int i = 0; i < n; ++i) s.request.add_inputs()->mutable_text()->set_text_a(text);
    s.request.add_heads(bert::v1::HEAD_POOLED);
    s.request.set_request_id("request-12345");
    shapes.push_back(std::move(s));
  }
  Shape tokens{"32 token inputs of 128 ids", {}};
  for (int i = 0; i < 32; ++i) {
    auto* t = tokens.request.add_inputs()->mutable_tokens();
    for (int j = 0; j < 128; ++j) t->add_input_word_ids(1000 + 37 * j);
  }
  tokens.request.add_heads(bert::v1::HEAD_SEQUENCE);
  shapes.push_back(std::move(tokens));
  return shapes;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  bert::WireLimits limits;
  limits.max_inputs = 256;
  limits.max_heads = 8;
  limits.max_layers = 24;
  std::printf("| request | wire bytes | median ns/call | range |\n|---|---:|---:|---|\n");
  for (const Shape& shape : Shapes()) {
    const std::string bytes = shape.request.SerializeAsString();
    grpc::Slice slice(bytes);
    const grpc::ByteBuffer buffer(&slice, 1);
    bert::v1::EmbedRequest warm;
    if (!bert::ParseEmbedRequest(buffer, limits, &warm).ok()) {
      std::fprintf(stderr, "%s: refused\n", shape.name);
      return 1;
    }
    std::vector<double> passes;
    for (int r = 0; r < absl::GetFlag(FLAGS_repeats); ++r) {
      long calls = 0;
      const double start = CpuSeconds();
      double now = start;
      while (now - start < absl::GetFlag(FLAGS_min_seconds)) {
        for (int i = 0; i < 100; ++i) {
          bert::v1::EmbedRequest request;
          if (!bert::ParseEmbedRequest(buffer, limits, &request).ok()) return 1;
        }
        calls += 100;
        now = CpuSeconds();
      }
      passes.push_back(1e9 * (now - start) / calls);
    }
    std::sort(passes.begin(), passes.end());
    std::printf("| %s | %zu | %.0f | %.0f-%.0f |\n", shape.name, bytes.size(),
                passes[passes.size() / 2], passes.front(), passes.back());
  }
  return 0;
}
