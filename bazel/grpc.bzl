"""cc_grpc_library: C++ gRPC stubs from a .proto with Debian's protoc + grpc_cpp_plugin."""

def cc_grpc_library(name, src, proto_dep, deps = [], **kwargs):
    """Generates <src>.grpc.pb.{h,cc} and wraps them in a cc_library.

    Args:
      name: the cc_library's name.
      src: the .proto file (a label in this package).
      proto_dep: the cc_proto_library holding the messages of `src`.
      deps: extra deps.
      **kwargs: passed to cc_library.
    """
    base = src[:-len(".proto")]
    outs = [base + ".grpc.pb.h", base + ".grpc.pb.cc"]
    native.genrule(
        name = name + "_gen",
        srcs = [src],
        outs = outs,
        cmd = ("protoc --plugin=protoc-gen-grpc=$$(command -v grpc_cpp_plugin) " +
               "-I. --grpc_out=$(GENDIR) $(location %s)") % src,
    )
    native.cc_library(
        name = name,
        srcs = [base + ".grpc.pb.cc"],
        hdrs = [base + ".grpc.pb.h"],
        deps = [proto_dep, "@system//:grpc"] + deps,
        **kwargs
    )
