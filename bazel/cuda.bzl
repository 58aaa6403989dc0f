"""cuda_library: compiles .cu files with nvcc into a cc_library (CUDA builds only)."""

# Hopper (sm_90a, with its Hopper-only instructions), Ampere (sm_80), and PTX for newer chips.
CUDA_GENCODE = [
    "-gencode=arch=compute_90a,code=sm_90a",
    "-gencode=arch=compute_80,code=sm_80",
    "-gencode=arch=compute_90,code=compute_90",
]

def cuda_library(name, srcs, hdrs = [], deps = [], copts = [], cu_hdrs = [], **kwargs):
    """One nvcc action per .cu file; the objects go into a cc_library.

    Args:
      name: the cc_library's name.
      srcs: .cu files.
      hdrs: headers the .cu files and users include.
      deps: cc_library deps whose headers the .cu files include (headers are passed to nvcc
        through their package paths; include paths are workspace-relative).
      copts: extra nvcc flags.
      cu_hdrs: headers from other packages that the .cu files include (labels).
      **kwargs: passed to cc_library.
    """
    # Every header nvcc may read must be an input of the (sandboxed) action.
    headers = {h: True for h in hdrs + native.glob(["*.h", "*.cuh"]) + cu_hdrs}.keys()
    objs = []
    for src in srcs:
        obj = src[:-len(".cu")] + ".pic.o"
        native.genrule(
            name = name + "_" + src.replace("/", "_").replace(".", "_"),
            srcs = [src] + headers,
            outs = [obj],
            cmd = " ".join([
                "/usr/local/cuda/bin/nvcc -c -O3 -std=c++17 -Xcompiler -fPIC",
                "--expt-relaxed-constexpr -lineinfo",
                "-I. -I$(GENDIR)",
            ] + CUDA_GENCODE + copts + [
                "$(location %s) -o $@" % src,
            ]),
        )
        objs.append(obj)
    native.cc_library(
        name = name,
        srcs = objs,
        hdrs = hdrs,
        deps = deps + ["@cuda//:cudart"],
        **kwargs
    )
