#!/bin/sh
# The three-member spilo-rs demo of compose.yaml: one etcd (the image's own)
# and three members on the private network 10.89.79.0/24, through Docker
# Compose (docker-compose 1.29, or `docker compose` when present).
#   scripts/cluster.sh build    build the image with docker (buildx)
#   scripts/cluster.sh up       build it when missing, start, wait for a
#                               leader and two streaming replicas
#   scripts/cluster.sh status   patronictl list
#   scripts/cluster.sh down     remove containers, network and volumes
# SPILO_IMAGE names the image (default localhost/spilo-rs:dev), UP_TIMEOUT
# bounds the wait in seconds (default 300). PostgreSQL answers on
# 127.0.0.1:15431-15433 (postgres / zalando), Patroni on :18001-18003.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
SPILO_IMAGE=${SPILO_IMAGE:-localhost/spilo-rs:dev}
export SPILO_IMAGE
base=docker.io/library/debian:trixie-slim

need_docker() {
    if ! command -v docker >/dev/null 2>&1 || ! docker buildx version >/dev/null 2>&1; then
        cat >&2 <<'EOF'
cluster.sh: needs Docker with buildx, and Docker Compose. On Debian 12, as root:
  apt-get install -y docker.io docker-compose && tests/setup
(tests/setup then installs docker-buildx, which bookworm lacks, from trixie.)
EOF
        exit 1
    fi
    if ! docker info >/dev/null 2>&1; then
        echo "cluster.sh: the Docker daemon does not answer (systemctl start docker; root or the docker group)" >&2
        exit 1
    fi
}

compose() {
    if docker compose version >/dev/null 2>&1; then
        docker compose -f "$root/compose.yaml" "$@"
    elif command -v docker-compose >/dev/null 2>&1; then
        docker-compose -f "$root/compose.yaml" "$@"
    else
        echo "cluster.sh: needs docker-compose (apt-get install -y docker-compose) or the compose plugin" >&2
        exit 1
    fi
}

build_image() {
    # The Dockerfile's base: from a registry, else made with debootstrap.
    if ! docker image inspect "$base" >/dev/null 2>&1 &&
        ! timeout 60 docker pull "$base"; then
        CONTAINER_ENGINE=docker "$root/scripts/base-image.sh" "$base"
    fi
    # Behind a TLS-intercepting proxy, cargo trusts the host's CA bundle.
    set --
    if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
        set -- --secret id=cacert,src=/etc/ssl/certs/ca-certificates.crt
    fi
    docker buildx build --load "$@" -t "$SPILO_IMAGE" "$root"
}

# Members as Patroni sees them, through the first member that runs.
patronictl() {
    for s in spilo1 spilo2 spilo3; do
        compose exec -T "$s" patronictl "$@" 2>/dev/null && return 0
    done
    return 1
}

# True when one member leads and two replicas stream (Patroni's /cluster,
# asked inside a member: nothing needed on the host).
healthy() {
    for s in spilo1 spilo2 spilo3; do
        compose exec -T "$s" python3 -c '
import json, sys, urllib.request as r
m = json.load(r.urlopen("http://127.0.0.1:8008/cluster", timeout=5))["members"]
leaders = [x for x in m if x["role"] == "leader" and x["state"] == "running"]
streaming = [x for x in m if x["role"] == "replica" and x["state"] == "streaming"]
sys.exit(0 if len(leaders) == 1 and len(streaming) == 2 else 3)' 2>/dev/null && return 0
        [ $? = 3 ] && return 1
    done
    return 1
}

case "${1:-}" in
build)
    need_docker
    build_image
    ;;
up)
    need_docker
    if ! docker image inspect "$SPILO_IMAGE" >/dev/null 2>&1; then
        build_image
    fi
    compose up -d
    limit=${UP_TIMEOUT:-300}
    start=$(date +%s)
    echo "waiting (at most ${limit}s) for a leader and two streaming replicas"
    until healthy 2>/dev/null; do
        if [ $(($(date +%s) - start)) -ge "$limit" ]; then
            patronictl list || true
            compose logs --tail 20 >&2 || true
            echo "cluster.sh: no leader with two streaming replicas after ${limit}s" >&2
            exit 1
        fi
        sleep 2
    done
    echo "ready after $(($(date +%s) - start))s"
    patronictl list
    ;;
status)
    need_docker
    patronictl list || { compose ps; echo "cluster.sh: no member answers" >&2; exit 1; }
    ;;
down)
    need_docker
    compose down --volumes --remove-orphans
    ;;
*)
    sed -n '2,12p' "$0"
    exit 2
    ;;
esac
