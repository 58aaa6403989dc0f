#include "bench/gpu_bench_flags.h"

#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "server/engine/engine_factory.h"

namespace bert {
namespace {

std::vector<std::string> Split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

// A comma-separated list of positive integers (a typo such as "128+varlem" is an error, not
// 128).
bool ParsePositiveInts(const char* flag, const std::string& text, std::vector<int>* out) {
  out->clear();
  for (const std::string& item : Split(text)) {
    int n = 0;
    if (!absl::SimpleAtoi(item, &n) || n < 1) {
      std::fprintf(stderr, "--%s: '%s' is not a positive integer\n", flag, item.c_str());
      return false;
    }
    out->push_back(n);
  }
  if (out->empty()) std::fprintf(stderr, "--%s: empty\n", flag);
  return !out->empty();
}

}  // namespace

bool ParseGpuBenchFlags(int argc, char** argv, GpuBenchOptions* o) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&](const char* name) -> const char* {
      const std::string prefix = std::string("--") + name + "=";
      return a.rfind(prefix, 0) == 0 ? argv[i] + prefix.size() : nullptr;
    };
    if (const char* v = value("model_dir")) {
      o->model_dir = v;
    } else if (const char* v = value("dtypes")) {
      o->dtypes = Split(v);
      for (const std::string& name : o->dtypes) {
        if (!ParseDType(name).ok()) {
          std::fprintf(stderr, "--dtypes: unknown dtype '%s'\n", name.c_str());
          return false;
        }
      }
      if (o->dtypes.empty()) return false;
    } else if (const char* v = value("batches")) {
      if (!ParsePositiveInts("batches", v, &o->batches)) return false;
    } else if (const char* v = value("seq")) {
      std::vector<int> seq;
      if (!ParsePositiveInts("seq", v, &seq) || seq.size() != 1) return false;
      o->seq = seq[0];
    } else if (const char* v = value("varlen_file")) {
      o->varlen_file = v;
    } else if (const char* v = value("iters")) {
      std::vector<int> iters;
      if (!ParsePositiveInts("iters", v, &iters) || iters.size() != 1) return false;
      o->iters = iters[0];
    } else if (const char* v = value("json")) {
      o->json = v;
    } else if (const char* v = value("outputs")) {
      if (std::string(v) != "pooled" && std::string(v) != "layers") {
        std::fprintf(stderr, "--outputs: pooled or layers\n");
        return false;
      }
      o->all_layers = std::string(v) == "layers";
    } else if (a == "--profile" || a == "--profile=true" || a == "--profile=false") {
      o->profile = a != "--profile=false";
    } else if (a == "--memory" || a == "--memory=true" || a == "--memory=false") {
      o->memory = a != "--memory=false";
    } else if (a == "--check_flags") {
      o->check_flags = true;
    } else if (const char* v = value("profile_batches")) {
      if (!ParsePositiveInts("profile_batches", v, &o->profile_batches)) return false;
    } else if (a.rfind("--", 0) == 0) {
      // The engine's tuning switches, by the server's flag names (CudaTuningSwitches); a
      // bare --<switch> is =true, as for bert_server's boolean flags.
      const size_t eq = a.find('=');
      const std::string name = a.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
      const std::string v = eq == std::string::npos ? "true" : a.substr(eq + 1);
      const absl::Status status = SetCudaTuning(name, v, &o->engine);
      if (!status.ok()) {
        if (absl::IsNotFound(status)) {
          std::fprintf(stderr, "unknown flag %s\n", argv[i]);
        } else {
          std::fprintf(stderr, "%s\n", std::string(status.message()).c_str());
        }
        return false;
      }
    } else {
      std::fprintf(stderr, "unknown flag %s\n", argv[i]);
      return false;
    }
  }
  return true;
}

std::string DescribeGpuBenchOptions(const GpuBenchOptions& o) {
  std::string text;
  for (const auto& [flag, value] : CudaTuningValues(o.engine, /*only_changed=*/true)) {
    text += (text.empty() ? "--" : " --") + flag + "=" + value;
  }
  if (text.empty()) text = "defaults";
  return o.all_layers ? text + " --outputs=layers" : text;
}

std::string CheckedFlagsLine(const GpuBenchOptions& o) {
  return absl::StrFormat(
      "flags: model_dir=%s dtypes=%s batches=%s seq=%d varlen_file=%s iters=%d json=%s "
      "profile=%d memory=%d options: %s",
      o.model_dir, absl::StrJoin(o.dtypes, ","), absl::StrJoin(o.batches, ","), o.seq,
      o.varlen_file, o.iters, o.json, o.profile, o.memory, DescribeGpuBenchOptions(o));
}

int HandleGpuBenchCommandLine(int argc, char** argv, GpuBenchOptions* o) {
  if (!ParseGpuBenchFlags(argc, argv, o)) return 2;
  if (!o->check_flags) return -1;
  std::printf("%s\n", CheckedFlagsLine(*o).c_str());
  return 0;
}

}  // namespace bert
