"""cuda_library: compiles .cu files with nvcc into a cc_library (CUDA builds only)."""

# Hopper (sm_90a, with its Hopper-only instructions), Ampere (sm_80), and PTX for newer chips.
CUDA_GENCODE = [
    "-gencode=arch=compute_90a,code=sm_90a",
    "-gencode=arch=compute_80,code=sm_80",
    "-gencode=arch=compute_90,code=compute_90",
]

def cuda_library(name, srcs, hdrs = [], deps = [], copts = [], cu_hdrs = [], **kwargs):
    """One nvcc action per .cu file; the objects go into a cc_library.

    With --config=nocuda (//bazel:cuda_off) nvcc never runs: the nvcc genrules are tagged
    manual (so //... does not build them) and the cc_library selects no objects and no CUDA
    deps, keeping only its headers.

    Args:
      name: the cc_library's name.
      srcs: .cu files.
      hdrs: headers the .cu files and users include.
      deps: cc_library deps of the library (linked; their headers are NOT inputs of nvcc's
        sandboxed action: list any the .cu files include in cu_hdrs).
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
            # nvcc names its temporary files after its process id, and in the sandbox every
            # action's nvcc can have the same one while /tmp is shared: give each action
            # its own temporary directory.
            cmd = " ".join([
                "tmp=$$(mktemp -d) && trap 'rm -rf \"$$tmp\"' EXIT && TMPDIR=$$tmp",
                "/usr/local/cuda/bin/nvcc -c -O3 -std=c++17 -Xcompiler -fPIC",
                "--expt-relaxed-constexpr -lineinfo",
                "-I. -I$(GENDIR)",
            ] + CUDA_GENCODE + copts + [
                "$(location %s) -o $@" % src,
            ]),
            tags = ["manual"],
        )
        objs.append(obj)
    native.cc_library(
        name = name,
        srcs = select({
            "//bazel:cuda_off": [],
            "//conditions:default": objs,
        }),
        hdrs = hdrs,
        deps = select({
            "//bazel:cuda_off": [],
            "//conditions:default": deps + ["@cuda//:cudart"],
        }),
        **kwargs
    )
