#!/usr/bin/env bash
# Makes debian:bookworm-slim available locally: pulled from Docker Hub where it is reachable,
# else built with debootstrap from Debian's archive (the same Debian release, minbase).
# Uses docker, else podman (deploy/docker/container_cli.sh).
#   deploy/docker/make_base_image.sh [IMAGE]      # default debian:bookworm-slim
set -euo pipefail
cd "$(dirname "$0")"
. ./container_cli.sh
pick_container_cli
image=${1:-debian:bookworm-slim}
if "${container[@]}" image inspect "$image" >/dev/null 2>&1; then
  echo "make_base_image: $image exists"; exit 0
fi
if "${container[@]}" pull -q "docker.io/library/$image" >/dev/null 2>&1; then
  "${container[@]}" tag "docker.io/library/$image" "$image"
  echo "make_base_image: $image pulled"; exit 0
fi
command -v debootstrap >/dev/null || { echo "make_base_image: needs debootstrap" >&2; exit 1; }
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian >/dev/null
tar -C "$root" -c . | "${container[@]}" import - "$image"
echo "make_base_image: $image ready ($container_name)"
