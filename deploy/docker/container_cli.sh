# Sourced by the deploy/docker scripts: picks the container tool.
#   docker, when its daemon answers; else podman (rootful) with runc as its runtime: crun,
#   podman's default on Debian 12, refuses hosts with hybrid cgroup v1 hierarchies, and
#   runc runs on cgroup v1 and v2 alike.
# Sets the array `container` (the command) and `container_name` (docker or podman).
# CONTAINER_CLI=docker|podman forces one.
pick_container_cli() {
  local want=${CONTAINER_CLI:-}
  if [ "$want" != podman ] && command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    container=(docker)
    container_name=docker
  elif [ "$want" != docker ] && command -v podman >/dev/null 2>&1; then
    if command -v runc >/dev/null 2>&1; then
      container=(podman --runtime runc)
    else
      container=(podman)
    fi
    container_name=podman
  else
    echo "no usable container tool: start a docker daemon, or install podman and runc" \
      "(deploy/docker/smoke_test.sh installs them)" >&2
    return 1
  fi
}
