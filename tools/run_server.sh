#!/usr/bin/env bash
# Installs what is needed (tools/setup.sh), builds the server and client, runs the server
# on the default model (models/all-MiniLM-L6-v2) at 127.0.0.1:50051 (its /metrics at
# 127.0.0.1:9090), waits until health says SERVING, sends the seed example through the
# bundled client, then keeps serving until Ctrl-C.
#
#   tools/run_server.sh                  # serve; extra arguments go to bert_server
#   tools/run_server.sh --address=127.0.0.1:50052 --metrics_address=127.0.0.1:9091
#   tools/run_server.sh --exit_after_demo   # stop after the demo (.ci/run does this)
set -euo pipefail
cd "$(dirname "$0")/.."
. tools/lib.sh

exit_after_demo=0
server_args=()
address=127.0.0.1:50051
metrics=127.0.0.1:9090
for arg in "$@"; do
  case "$arg" in
    --exit_after_demo) exit_after_demo=1 ;;
    # The addresses the script itself uses (health check, demo, hints) follow the server's.
    --address=*) address="${arg#--address=}" ;;
    --metrics_address=*) metrics="${arg#--metrics_address=}" ;;
    *) server_args+=("$arg") ;;
  esac
done

tools/setup.sh
flags=()
cuda_toolkit_present || flags+=(--config=nocuda)
bazel build "${flags[@]}" //server:bert_server //client:bert_client //client:bert_load
mkdir -p .run &&
  cp -f bazel-bin/server/bert_server bazel-bin/client/bert_client bazel-bin/client/bert_load .run/

.run/bert_server --model_dir=models/all-MiniLM-L6-v2 --address="$address" \
  --metrics_address="$metrics" "${server_args[@]}" &
server=$!
# Ctrl-C or SIGTERM reaches the server (it drains and stops); the script then exits with
# the server's status. On any other exit the server is stopped too.
trap 'kill -TERM $server 2>/dev/null || true' INT TERM
trap 'kill -TERM $server 2>/dev/null || true; wait $server 2>/dev/null || true' EXIT

echo "run_server: waiting for $address to report SERVING (model load + warm-up)"
serving=0
for _ in $(seq 1 300); do
  kill -0 $server 2>/dev/null || { echo "run_server: the server exited" >&2; exit 1; }
  if [ "$(.run/bert_client --server=$address --timeout_ms=1000 health 2>/dev/null)" = SERVING ]; then
    serving=1
    break
  fi
  sleep 1
done
if [ "$serving" != 1 ]; then
  echo "run_server: $address did not report SERVING within 300 s" >&2
  exit 1
fi

# The seed example: two sentences, all four heads, as TF Hub's notebook prints them.
.run/bert_client --server=$address embed --heads=default,pooled,sequence,encoder_outputs \
  "Please subscribe to this newsletter" "You are being offered this job role"

if [ "$exit_after_demo" = 1 ]; then exit 0; fi
echo "run_server: serving on $address (metrics: http://$metrics/metrics); Ctrl-C stops"
echo "run_server: load it with: .run/bert_load --server=$address --metrics=$metrics --concurrency=1,8,32"
set +e
wait "$server"
status=$?
if [ "$status" -gt 128 ]; then  # a signal's trap interrupted the wait: wait for the server
  wait "$server"
  again=$?
  [ "$again" != 127 ] && status=$again
fi
exit "$status"
