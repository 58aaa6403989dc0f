"""A repository of system libraries resolved by pkg-config at fetch time (local, offline)."""

def _pkg_config_repo_impl(ctx):
    lines = ['package(default_visibility = ["//visibility:public"])', ""]
    for name, modules in ctx.attr.libraries.items():
        result = ctx.execute(["pkg-config", "--libs"] + modules.split(" "))
        if result.return_code != 0:
            fail("pkg-config failed for %s (%s): %s" % (name, modules, result.stderr))
        flags = [f for f in result.stdout.strip().split(" ") if f]
        lines.append("cc_library(")
        lines.append('    name = "%s",' % name)
        lines.append("    linkopts = %s," % repr(flags))
        lines.append(")")
        lines.append("")
    ctx.file("WORKSPACE", 'workspace(name = "%s")\n' % ctx.name)
    ctx.file("BUILD", "\n".join(lines))

pkg_config_repository = repository_rule(
    implementation = _pkg_config_repo_impl,
    attrs = {
        # target name -> space-separated pkg-config modules
        "libraries": attr.string_dict(mandatory = True),
    },
    local = True,
)
