#!/usr/bin/env bash
# Makes debian:bookworm-slim locally with debootstrap (no container registry needed).
set -euo pipefail
image=${1:-debian:bookworm-slim}
if docker image inspect "$image" >/dev/null 2>&1; then
  echo "make_base_image: $image exists"; exit 0
fi
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase bookworm "$root" >/dev/null
tar -C "$root" -c . | docker import - "$image"
echo "make_base_image: $image ready"
