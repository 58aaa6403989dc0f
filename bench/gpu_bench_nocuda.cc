// gpu_bench in a --config=nocuda build: there is no CUDA engine to measure.
#include <cstdio>

int main() {
  std::fprintf(stderr, "gpu_bench: built with --config=nocuda; rebuild with CUDA\n");
  return 2;
}
