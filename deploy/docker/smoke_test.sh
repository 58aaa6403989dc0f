#!/usr/bin/env bash
# Builds the server's image and runs it as a user would, on loopback ports:
#   1. tools/package.sh (dist/), the base image (make_base_image.sh) and the image itself;
#   2. the container with its default command, ports published on 127.0.0.1 only, under the
#      Kubernetes manifests' security context (read-only root, no capabilities);
#   3. checks: health turns SERVING; the bundled client (outside the container) embeds the
#      seed sentences with every head; the image's HEALTHCHECK says healthy; /metrics and
#      /readyz answer; the server runs as uid 10001;
#      `stop` (SIGTERM) drains it and it exits 0; a second container stopped while it warms
#      up exits 0 at once; the sidecar example's layout (a server on a Unix socket in a
#      volume, reached by bert_client in another container of the same uid, refused to
#      another uid).
# Prints "docker smoke test: N passed, N failed" last and exits 1 on any failure.
#
#   deploy/docker/smoke_test.sh          # as root; installs from Debian's archive what it
#                                        # lacks: podman and runc when no docker daemon
#                                        # answers, debootstrap for an offline base image
# Environment: IMAGE (default bert-server:smoke), GRPC_PORT (50151), METRICS_PORT (19090),
# CONTAINER_CLI (docker|podman).
set -euo pipefail
cd "$(dirname "$0")/../.."
. deploy/docker/container_cli.sh

image=${IMAGE:-bert-server:smoke}
grpc_port=${GRPC_PORT:-50151}
metrics_port=${METRICS_PORT:-19090}
name=bert-smoke-$$

if [ "$(id -u)" != 0 ]; then
  echo "smoke_test: run as root (it installs packages and runs a rootful container tool)" >&2
  exit 1
fi
# podman and runc only where no docker daemon answers; debootstrap in case the base image
# has to be built offline (make_base_image.sh uses it only when the registry fails).
missing=()
if ! pick_container_cli 2>/dev/null; then
  for tool in podman runc; do command -v $tool >/dev/null || missing+=($tool); done
fi
command -v debootstrap >/dev/null || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
  echo "smoke_test: installing ${missing[*]}"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
fi
pick_container_cli
run_opts=()
if [ "$container_name" = podman ]; then
  # Rootful podman raises the container's open-file and process limits to values that hosts
  # without CAP_SYS_RESOURCE (some VMs) refuse; the server needs far fewer.
  run_opts+=(--ulimit nofile=4096:4096 --ulimit nproc=4096:4096)
fi

build_opts=()
# podman's default (OCI) image format has no HEALTHCHECK.
[ "$container_name" = podman ] && build_opts+=(--format docker)
tools/package.sh
deploy/docker/make_base_image.sh
"${container[@]}" build -q "${build_opts[@]}" -f deploy/docker/Dockerfile -t "$image" . >/dev/null
echo "smoke_test: built $image with $container_name"

passed=0
failed=0
check() {  # check NAME COMMAND...: runs the command, counts and prints the outcome
  local what=$1
  shift
  if "$@"; then
    passed=$((passed + 1)); echo "  ok    $what"
  else
    failed=$((failed + 1)); echo "  FAIL  $what"
  fi
}

trap '"${container[@]}" rm -f "$name" >/dev/null 2>&1 || true' EXIT
# The Kubernetes Deployment's container securityContext: read-only root filesystem, every
# capability dropped, no privilege escalation.
"${container[@]}" run -d --name "$name" "${run_opts[@]}" \
  --read-only --cap-drop=ALL --security-opt=no-new-privileges \
  -p "127.0.0.1:$grpc_port:50051" -p "127.0.0.1:$metrics_port:9090" "$image" >/dev/null
address=127.0.0.1:$grpc_port
client=dist/bin/bert_client

serving() {
  for _ in $(seq 1 120); do
    [ "$("$client" --server="$address" --timeout_ms=1000 health 2>/dev/null)" = SERVING ] &&
      return 0
    [ "$("${container[@]}" inspect -f '{{.State.Running}}' "$name")" = true ] || return 1
    sleep 1
  done
  return 1
}
embeds_seed() {
  local out
  out=$("$client" --server="$address" embed --heads=default,pooled,sequence,encoder_outputs \
    "Please subscribe to this newsletter" "You are being offered this job role") || return 1
  echo "$out" | grep -q "Pooled Outputs Shape:(2, 384)" &&
    echo "$out" | grep -q "Sequence Outputs Shape:(2, 128, 384)"
}
# The image's HEALTHCHECK, run as the runtime runs it: docker on its own schedule (its
# status read back), podman on demand (without systemd it cannot schedule it, and logs
# "unable to get systemd connection to add healthchecks" for each container it starts).
healthcheck_healthy() {
  if [ "$container_name" = podman ]; then
    "${container[@]}" healthcheck run "$name" >/dev/null
    return
  fi
  for _ in $(seq 1 30); do
    [ "$("${container[@]}" inspect -f '{{.State.Health.Status}}' "$name")" = healthy ] &&
      return 0
    sleep 1
  done
  return 1
}
metrics_answer() {
  python3 - "$metrics_port" <<'PY'
import sys, urllib.request
base = f"http://127.0.0.1:{sys.argv[1]}"
body = urllib.request.urlopen(f"{base}/metrics", timeout=5).read()
ready = urllib.request.urlopen(f"{base}/readyz", timeout=5).read()
sys.exit(0 if b"bert_requests_total" in body and ready == b"SERVING\n" else 1)
PY
}
runs_unprivileged() {  # the server itself (PID 1), not the exec'd command
  [ "$("${container[@]}" exec "$name" awk '/^Uid:/ {print $2}' /proc/1/status)" = 10001 ]
}
stops_cleanly() {
  "${container[@]}" stop -t 40 "$name" >/dev/null &&
    [ "$("${container[@]}" inspect -f '{{.State.ExitCode}}' "$name")" = 0 ] &&
    "${container[@]}" logs "$name" 2>&1 | grep -q 'msg=stopped'
}

# As PID 1, a server must see SIGTERM even before it serves (a pod deleted while it warms
# up): a second container is stopped one second after it starts.
stops_during_startup() {
  local early=$name-early
  "${container[@]}" run -d --name "$early" "${run_opts[@]}" "$image" \
    --model_dir=/opt/bert/models/all-MiniLM-L6-v2 --address=127.0.0.1:0 >/dev/null || return 1
  sleep 1
  local begin=$SECONDS
  "${container[@]}" stop -t 20 "$early" >/dev/null
  local code took=$((SECONDS - begin))
  code=$("${container[@]}" inspect -f '{{.State.ExitCode}}' "$early")
  "${container[@]}" rm -f "$early" >/dev/null
  [ "$code" = 0 ] && [ "$took" -lt 15 ]
}

# deploy/k8s/examples/unix-socket-sidecar's layout: the server on a Unix socket in a volume
# shared with a second container (the application's place) of the same uid, both read-only;
# that container's bert_client reaches it (health, then an embedding), one of another uid is
# refused, and the drained server removes its socket.
sidecar_on_unix_socket() {
  local srv=$name-sidecar vol=$name-socket ok=1 out
  local shared=("${run_opts[@]}" --read-only --cap-drop=ALL --security-opt=no-new-privileges
                -v "$vol:/run/bert")
  local client_cmd=("${container[@]}" run --rm "${shared[@]}" --entrypoint bert_client "$image"
                    --server=unix:/run/bert/bert.sock --timeout_ms=2000)
  "${container[@]}" volume create "$vol" >/dev/null || return 1
  "${container[@]}" run -d --name "$srv" "${shared[@]}" "$image" \
    --model_dir=/opt/bert/models/all-MiniLM-L6-v2 --address=unix:/run/bert/bert.sock \
    --backend=cpu >/dev/null || ok=0
  for _ in $(seq 1 120); do
    [ "$ok" = 1 ] || break
    [ "$("${client_cmd[@]}" health 2>/dev/null)" = SERVING ] && break
    sleep 1
  done
  out=$("${client_cmd[@]}" --heads=pooled embed "The sidecar answers over a Unix socket.") &&
    echo "$out" | grep -q "Pooled Outputs Shape:(1, 384)" || ok=0
  # Another uid is refused: the socket has the server's umask (022) permissions.
  "${container[@]}" run --rm "${shared[@]}" --user 10002 --entrypoint bert_client "$image" \
    --server=unix:/run/bert/bert.sock --timeout_ms=2000 health >/dev/null 2>&1 && ok=0
  "${container[@]}" stop -t 40 "$srv" >/dev/null || ok=0
  [ "$("${container[@]}" inspect -f '{{.State.ExitCode}}' "$srv")" = 0 ] || ok=0
  "${container[@]}" run --rm "${shared[@]}" --entrypoint /bin/sh "$image" \
    -c '! test -e /run/bert/bert.sock' || ok=0
  "${container[@]}" rm -f "$srv" >/dev/null 2>&1
  "${container[@]}" volume rm -f "$vol" >/dev/null 2>&1
  [ "$ok" = 1 ]
}

check "health SERVING at $address" serving
check "seed sentences embedded, every head" embeds_seed
check "the image's HEALTHCHECK says healthy" healthcheck_healthy
check "/metrics and /readyz on 127.0.0.1:$metrics_port" metrics_answer
check "server runs as uid 10001" runs_unprivileged
check "SIGTERM drains, exit status 0" stops_cleanly
check "SIGTERM during startup stops it at once, exit status 0" stops_during_startup
check "sidecar on a Unix socket: a container of uid 10001 reaches it, uid 10002 is refused" \
  sidecar_on_unix_socket
if [ "$failed" -gt 0 ]; then
  echo "smoke_test: the container's log:"
  "${container[@]}" logs "$name" 2>&1 | tail -20
fi
echo "docker smoke test: $passed passed, $failed failed"
[ "$failed" = 0 ]
