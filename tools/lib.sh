# Shell helpers shared by the repository's scripts. Source it from the repository root
# (`. tools/lib.sh`); it defines functions only and changes no shell options.

# True when the CUDA toolkit that the WORKSPACE's @cuda repository and bazel/cuda.bzl use
# (/usr/local/cuda, nvcc in particular) is installed; the scripts then build the CUDA
# backend, else they add --config=nocuda. Says nothing about whether a GPU is present.
cuda_toolkit_present() {
  [ -x /usr/local/cuda/bin/nvcc ]
}
