"""Compiler flags for the project's hot CPU code."""

# The instruction set of the CPU kernels, the CPU engine and the tokenizer. On x86-64 the
# baseline is x86-64-v2 (SSE4.2, POPCNT: every x86 server CPU since 2009); it made the CPU
# engine 9-15 % faster at batch 8 than plain x86-64 (bench/RESULTS_cpu.md). On other
# architectures (aarch64: Grace, Graviton) the compiler's default applies; the kernels pick
# their x86-only paths with #if.
CPU_ARCH_COPTS = select({
    "//bazel:x86_64": ["-march=x86-64-v2"],
    "//conditions:default": [],
})

# The packed Linear kernel's per-instruction-set files (kernels/cpu/linear_*.cc), which the
# kernels call only on CPUs that run them: AVX2 with FMA, and AVX-512F. Nothing elsewhere.
AVX2_COPTS = CPU_ARCH_COPTS + select({
    "//bazel:x86_64": ["-mavx2", "-mfma"],
    "//conditions:default": [],
})

AVX512_COPTS = CPU_ARCH_COPTS + select({
    "//bazel:x86_64": ["-mavx2", "-mfma", "-mavx512f"],
    "//conditions:default": [],
})

# The AMX bfloat16 Linear kernel (kernels/cpu/linear_amx.cc): AVX-512 with BF16 conversions and
# the tile instructions, which the kernels call only where HasAmxBf16() (Sapphire Rapids and
# later, with the OS's permission).
AMX_COPTS = AVX512_COPTS + select({
    "//bazel:x86_64": ["-mavx512bf16", "-mamx-tile", "-mamx-bf16"],
    "//conditions:default": [],
})
