#!/bin/sh
# Pull size and pull time, measured through a real registry: the image
# (and its COMPRESS=true build) is pushed to Debian's docker-registry on
# 127.0.0.1 with gzip layers and with zstd layers, then pulled into a fresh,
# empty podman store; per variant it prints the bytes pulled (manifest,
# config and layer blobs as the manifest declares them, and as the
# registry's access log counts them), the CPU time of the decompression
# alone, and the wall and user CPU time of podman's pull + unpack.
#
# Usage: scripts/pull-size.sh [IMAGE [COMPRESSED_IMAGE]]
#   (docker images, default localhost/spilo-rs:dev and
#   localhost/spilo-rs:compressed; missing ones are built with docker)
# Tools: docker pushes its own gzip variant (Docker 20.10 pushes gzip only);
# `docker save | podman load` hands the images to podman 4.3, which pushes
# gzip (v2s2) and zstd (OCI) layers at its default levels and does the
# fresh pulls. gzip and zstd go to two registries: podman 4.3 would
# otherwise reuse the gzip blobs it already pushed for the zstd push.
# Needs root. docker-registry is installed when missing; its system service
# is left stopped and disabled. PORT (default 5079, and PORT + 1), RUNS
# (pulls per variant, default 4).
set -eu
cd "$(dirname "$0")/.."
image=${1:-localhost/spilo-rs:dev}
compressed=${2:-localhost/spilo-rs:compressed}
port=${PORT:-5079}
runs=${RUNS:-4}
CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/tests/podman/containers.conf}
export CONTAINERS_CONF

if ! command -v docker-registry >/dev/null 2>&1; then
    echo "installing docker-registry" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-registry >/dev/null
    # Only this script's own instances run, and only while it runs.
    service docker-registry stop >/dev/null 2>&1 || true
    systemctl disable docker-registry >/dev/null 2>&1 || true
fi

tmp=$(mktemp -d /var/tmp/pull-size.XXXXXX)
pids=
cleanup() {
    for p in $pids; do kill "$p" 2>/dev/null || true; done
    for d in "$tmp"/store-*; do
        [ ! -d "$d" ] || podman --root "$d/root" --runroot "$d/run" rmi -a -f >/dev/null 2>&1 || true
    done
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

build() {
    docker image inspect "$1" >/dev/null 2>&1 && return 0
    tag=$1; shift
    echo "building $tag with docker" >&2
    # The Dockerfile's base, made with debootstrap when docker lacks it.
    CONTAINER_ENGINE=docker scripts/base-image.sh >&2
    [ -f /etc/ssl/certs/ca-certificates.crt ] &&
        set -- --secret id=cacert,src=/etc/ssl/certs/ca-certificates.crt "$@"
    docker buildx build --load "$@" -t "$tag" . >&2
}
build "$image"
build "$compressed" --build-arg COMPRESS=true

# registry NAME PORT: a registry on 127.0.0.1:PORT, storage and access
# log ($tmp/NAME.log) in $tmp.
registry() {
    cat >"$tmp/$1.yml" <<EOF
version: 0.1
log: {level: warn, accesslog: {disabled: false}}
storage: {filesystem: {rootdirectory: $tmp/$1}}
http: {addr: 127.0.0.1:$2}
EOF
    docker-registry serve "$tmp/$1.yml" >"$tmp/$1.log" 2>&1 &
    pids="$pids $!"
    i=0
    until python3 -c "import urllib.request as r; r.urlopen('http://127.0.0.1:$2/v2/', timeout=2)" 2>/dev/null; do
        i=$((i + 1))
        if [ "$i" -ge 30 ]; then
            cat "$tmp/$1.log" >&2
            echo "pull-size: no registry on 127.0.0.1:$2 after 30 s" >&2
            exit 1
        fi
        sleep 1
    done
}
registry gzip "$port"
registry zstd "$((port + 1))"
gz=127.0.0.1:$port zs=127.0.0.1:$((port + 1))

# A podman store of its own; $1 names it.
pm() { name=$1; shift; podman --root "$tmp/store-$name/root" --runroot "$tmp/store-$name/run" --storage-driver overlay "$@"; }

# The docker images, in a podman store (by image ID: the same in both).
docker save "$image" | pm src load -q >/dev/null
docker save "$compressed" | pm src load -q >/dev/null
imgid() { docker image inspect --format '{{.Id}}' "$1" | sed 's/^sha256://'; }

echo "pushing" >&2
push() { pm src push -q --tls-verify=false --format "$1" --compression-format "$2" "$(imgid "$3")" "$4"; }
push v2s2 gzip "$image" "$gz/default-gzip:1"
push v2s2 gzip "$compressed" "$gz/compress-gzip:1"
push oci zstd "$image" "$zs/default-zstd:1"
push oci zstd "$compressed" "$zs/compress-zstd:1"
docker tag "$image" "$gz/default-docker:1"
docker push -q "$gz/default-docker:1" >/dev/null
docker rmi "$gz/default-docker:1" >/dev/null

# declared REGISTRY REPO COMPRESSION: the bytes of manifest, config and
# layers, the number of layers and their digests; fails unless every layer
# is COMPRESSION.
declared() {
    python3 - "$@" <<'EOF'
import json, sys, urllib.request as r
reg, repo, want = sys.argv[1:]
req = r.Request("http://%s/v2/%s/manifests/1" % (reg, repo), headers={"Accept":
    "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"})
raw = r.urlopen(req).read()
m = json.loads(raw)
kinds = {l["mediaType"].split(".")[-1].split("+")[-1] for l in m["layers"]}
if kinds != {want}:
    sys.exit("%s: layers are %s, not %s" % (repo, kinds, want))
print(len(raw) + m["config"]["size"] + sum(l["size"] for l in m["layers"]), len(m["layers"]),
      *(l["digest"].split(":")[1] for l in m["layers"]))
EOF
}

# served LOG LINE: bytes of manifests and blobs served (GET, 2xx) after LINE.
served() {
    tail -n +"$(($2 + 1))" "$1" |
        awk '$6 == "\"GET" && $9 ~ /^2/ && $7 ~ /\/(blobs|manifests)\// { s += $10 } END { print s + 0 }'
}

mb() { awk -v b="$1" 'BEGIN { printf "%.1f MB", b / 1000000 }'; }

variants="default-gzip default-docker default-zstd compress-gzip compress-zstd"
where() { case $1 in *zstd) c=zstd reg=$zs ;; *) c=gzip reg=$gz ;; esac; }

# What the manifest declares, and the decompression alone (the gzip / zstd
# tools, one core: CPU seconds).
for v in $variants; do
    where "$v"
    out=$(declared "$reg" "$v" "$c")
    set -- $out
    echo "$1 $2" >"$tmp/$v.declared"
    shift 2
    /usr/bin/time -o "$tmp/$v.decomp" -f '%U %S' sh -c '
        c=$1 dir=$2; shift 2
        for d; do $c -dc <"$dir/$(echo "$d" | cut -c1-2)/$d/data"; done >/dev/null' \
        - "$c" "$tmp/$c/docker/registry/v2/blobs/sha256" "$@"
done

# RUNS rounds of one `podman pull` per variant (alternated, so that the
# machine's drift spreads over all) into an empty overlay store.
for _ in $(seq "$runs"); do
    for v in $variants; do
        where "$v"
        rm -rf "$tmp/store-fresh"
        mark=$(wc -l <"$tmp/$c.log")
        /usr/bin/time -a -o "$tmp/$v.times" -f '%e %U %S' \
            podman --root "$tmp/store-fresh/root" --runroot "$tmp/store-fresh/run" \
            --storage-driver overlay pull -q --tls-verify=false "$reg/$v:1" >/dev/null
        served "$tmp/$c.log" "$mark" >"$tmp/$v.served"
        pm fresh image inspect --format '{{.Size}}' "$reg/$v:1" >"$tmp/$v.size"
        pm fresh rmi -a -f >/dev/null
    done
done

median() { sort -n | awk '{ a[NR] = $1 } END { printf "%.1f s", NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
printf '%-15s %6s %10s %10s %7s %7s %7s %10s\n' variant layers declared served decomp wall user unpacked
for v in $variants; do
    read -r bytes layers <"$tmp/$v.declared"
    printf '%-15s %6s %10s %10s %7s %7s %7s %10s\n' "$v" "$layers" "$(mb "$bytes")" \
        "$(mb "$(cat "$tmp/$v.served")")" "$(awk '{ printf "%.1f s", $1 + $2 }' "$tmp/$v.decomp")" \
        "$(awk '{ print $1 }' "$tmp/$v.times" | median)" "$(awk '{ print $2 }' "$tmp/$v.times" | median)" \
        "$(mb "$(cat "$tmp/$v.size")")"
done
cat <<EOF
declared: manifest + config + layers; served: what the registry's access log counted for a pull
decomp: CPU time of gzip -dc / zstd -dc over the layers alone
wall, user: medians of $runs podman pulls into an empty overlay store (pull + unpack; user CPU)
EOF
