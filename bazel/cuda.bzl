"""cuda_library: compiles .cu files with nvcc into a cc_library (CUDA builds only)."""

# Hopper (sm_90a, with its Hopper-only instructions), Ampere (sm_80), and PTX for newer chips.
CUDA_GENCODE = [
    "-gencode=arch=compute_90a,code=sm_90a",
    "-gencode=arch=compute_80,code=sm_80",
    "-gencode=arch=compute_90,code=compute_90",
]

def cuda_library(name, srcs, hdrs = [], deps = [], copts = [], **kwargs):
    """One nvcc action per .cu file; the objects go into a cc_library.

    Args:
      name: the cc_library's name.
      srcs: .cu files.
      hdrs: headers the .cu files and users include.
      deps: cc_library deps whose headers the .cu files include (headers are passed to nvcc
        through their package paths; include paths are workspace-relative).
      copts: extra nvcc flags.
      **kwargs: passed to cc_library.
    """
    objs = []
    for src in srcs:
        obj = src[:-len(".cu")] + ".pic.o"
        native.genrule(
            name = name + "_" + src.replace("/", "_").replace(".", "_"),
            srcs = [src] + hdrs + native.glob(["**/*.h", "**/*.cuh"], exclude = hdrs) + select({
                "//bazel:cuda_off": [],
                "//conditions:default": ["@cuda//:cuda_headers"],
            }),
            outs = [obj],
            # With --config=nocuda nothing is compiled (the object is an empty placeholder
            # that no target links): CPU-only machines may lack nvcc and /usr/local/cuda.
            cmd = select({
                "//bazel:cuda_off": "touch $@",
                "//conditions:default": " ".join([
                    "/usr/local/cuda/bin/nvcc -c -O3 -std=c++17 -Xcompiler -fPIC",
                    "--expt-relaxed-constexpr -lineinfo",
                    "-I. -I$(GENDIR)",
                ] + CUDA_GENCODE + copts + [
                    "$(location %s) -o $@" % src,
                ]),
            }),
        )
        objs.append(obj)
    native.cc_library(
        name = name,
        srcs = select({"//bazel:cuda_off": [], "//conditions:default": objs}),
        hdrs = hdrs,
        deps = deps + select({"//bazel:cuda_off": [], "//conditions:default": ["@cuda//:cudart"]}),
        **kwargs
    )
