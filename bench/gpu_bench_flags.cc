#include "bench/gpu_bench_flags.h"

#include <cstdio>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "server/engine/engine_factory.h"

namespace bert {
namespace {

// A comma-separated list of positive integers (a typo such as "128+varlem" is an error, not
// 128).
bool ParsePositiveInts(const char* flag, const std::string& text, std::vector<int>* out) {
  out->clear();
  for (absl::string_view item : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    int n = 0;
    if (!absl::SimpleAtoi(item, &n) || n < 1) {
      std::fprintf(stderr, "--%s: '%s' is not a positive integer\n", flag,
                   std::string(item).c_str());
      return false;
    }
    out->push_back(n);
  }
  if (out->empty()) std::fprintf(stderr, "--%s: empty\n", flag);
  return !out->empty();
}

// Exactly one positive integer.
bool ParsePositiveInt(const char* flag, const std::string& text, int* out) {
  std::vector<int> values;
  if (!ParsePositiveInts(flag, text, &values)) return false;
  if (values.size() != 1) {
    std::fprintf(stderr, "--%s: one value, not %zu\n", flag, values.size());
    return false;
  }
  *out = values[0];
  return true;
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
      o->dtypes = absl::StrSplit(v, ',', absl::SkipEmpty());
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
      if (!ParsePositiveInt("seq", v, &o->seq)) return false;
    } else if (const char* v = value("varlen_file")) {
      o->varlen_file = v;
    } else if (const char* v = value("iters")) {
      if (!ParsePositiveInt("iters", v, &o->iters)) return false;
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
  // Out-of-range tuning values, as the engine would refuse them (before any CUDA call, so
  // that --check_flags sees them too).
  if (const absl::Status valid = ValidateCudaEngineOptions(o->engine); !valid.ok()) {
    std::fprintf(stderr, "%s\n", std::string(valid.message()).c_str());
    return false;
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
