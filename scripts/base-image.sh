#!/bin/sh
# Makes the Dockerfile's base image locally when no registry is reachable:
# debootstrap minbase trixie, imported under the name FROM resolves to.
# Usage: scripts/base-image.sh [IMAGE]   (default docker.io/library/debian:trixie-slim)
# CONTAINER_ENGINE picks the engine (default podman).
set -eu
image=${1:-docker.io/library/debian:trixie-slim}
engine=${CONTAINER_ENGINE:-podman}
suite=${SUITE:-trixie}
if "$engine" image inspect "$image" >/dev/null 2>&1; then
    echo "base image $image present"
    exit 0
fi
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
echo "debootstrap --variant=minbase $suite (about 20 s)"
debootstrap --variant=minbase "$suite" "$dir/root" >"$dir/log" 2>&1 || { tail -20 "$dir/log"; exit 1; }
# Like the published slim image: no apt lists or caches inside.
rm -rf "$dir"/root/var/lib/apt/lists/* "$dir"/root/var/cache/apt/*.bin "$dir"/root/var/cache/apt/archives/*.deb
tar -C "$dir/root" -c . | "$engine" import --change 'CMD ["bash"]' - "$image"
echo "imported $image"
