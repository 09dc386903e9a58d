#!/bin/sh
# Size and speed report: image size (uncompressed, gzip) against a naive
# image of the same packages on the same base, pull size with and without
# COMPRESS, and the time to unpack one packed major.
#
# Usage: scripts/size-report.sh [IMAGE [COMPRESSED_IMAGE [NAIVE_IMAGE]]]
# Missing images are built (the naive one from scripts/naive.Dockerfile).
# CONTAINER_ENGINE picks the engine (default podman); CACERT a CA bundle
# for builds behind a TLS-intercepting proxy.
set -eu
cd "$(dirname "$0")/.."
engine=${CONTAINER_ENGINE:-podman}
# The project's podman settings (runc, cgroupfs, ulimits) unless the caller has their own.
if [ "$engine" = podman ] && [ -z "${CONTAINERS_CONF:-}" ]; then
    CONTAINERS_CONF=$PWD/tests/podman/containers.conf
    export CONTAINERS_CONF
fi
image=${1:-localhost/spilo-rs:dev}
compressed=${2:-localhost/spilo-rs:compressed}
naive=${3:-localhost/spilo-rs:naive}

build() {
    tag=$1; shift
    if ! "$engine" image inspect "$tag" >/dev/null 2>&1; then
        echo "building $tag" >&2
        set -- "$@"
        [ "$engine" = podman ] && set -- --format docker "$@"
        [ -n "${CACERT:-}" ] && set -- --secret "id=cacert,src=$CACERT" "$@"
        "$engine" build "$@" -t "$tag" . >&2
    fi
}
build "$image"
build "$compressed" --build-arg COMPRESS=true
build localhost/spilo-rs:sources --target sources
build "$naive" -f scripts/naive.Dockerfile

mb() { awk -v b="$1" 'BEGIN { printf "%.0f MB", b / 1000000 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
size() { "$engine" image inspect --format '{{.Size}}' "$1"; }
# What a registry would store and a node pull: the saved image, gzipped.
pull() { "$engine" save "$1" | gzip -6 | wc -c; }

s_img=$(size "$image"); s_cmp=$(size "$compressed"); s_nv=$(size "$naive")
p_img=$(pull "$image"); p_cmp=$(pull "$compressed"); p_nv=$(pull "$naive")

# Each packed major in a fresh container, as `spilo init` unpacks it for
# PGVERSION (its log says how long that took).
majors=$("$engine" run --rm --entrypoint /usr/local/bin/spilo "$compressed" manifest |
    python3 -c 'import json,sys; m=json.load(sys.stdin); print(" ".join(str(x["major"]) for x in m["majors"] if x["archive"]))')
unpack=""
for major in $majors; do
    name=spilo-size-report-unpack-$major
    "$engine" rm -f "$name" >/dev/null 2>&1 || true
    "$engine" run -d --name "$name" -e PGVERSION="$major" "$compressed" >/dev/null
    line="PostgreSQL $major: no unpack line within 30 s"
    for _ in $(seq 30); do
        found=$("$engine" logs "$name" 2>&1 | grep -o "PostgreSQL $major: unpacked in [0-9.]*s" || true)
        if [ -n "$found" ]; then line=$found; break; fi
        sleep 1
    done
    "$engine" rm -f "$name" >/dev/null
    unpack="$unpack
  $line"
done

cat <<REPORT
spilo-rs image report ($engine)
                     uncompressed   gzip (pull)
  naive              $(mb "$s_nv")        $(mb "$p_nv")
  spilo-rs           $(mb "$s_img")        $(mb "$p_img")   ratio $(ratio "$s_img" "$s_nv") / $(ratio "$p_img" "$p_nv") (target <= 0.6)
  spilo-rs COMPRESS  $(mb "$s_cmp")        $(mb "$p_cmp")   ratio $(ratio "$s_cmp" "$s_nv") / $(ratio "$p_cmp" "$p_nv")
unpack of one packed major (target < 1 s):$unpack
REPORT
