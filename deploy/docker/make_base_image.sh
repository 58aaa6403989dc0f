#!/usr/bin/env bash
# Makes debian:bookworm-slim locally with debootstrap from Debian's archive, for hosts that
# reach no container registry. Uses docker, else podman (deploy/docker/container_cli.sh).
#   deploy/docker/make_base_image.sh [IMAGE]      # default debian:bookworm-slim
set -euo pipefail
cd "$(dirname "$0")"
. ./container_cli.sh
pick_container_cli
image=${1:-debian:bookworm-slim}
if "${container[@]}" image inspect "$image" >/dev/null 2>&1; then
  echo "make_base_image: $image exists"; exit 0
fi
command -v debootstrap >/dev/null || { echo "make_base_image: needs debootstrap" >&2; exit 1; }
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian >/dev/null
tar -C "$root" -c . | "${container[@]}" import - "$image"
echo "make_base_image: $image ready ($container_name)"
