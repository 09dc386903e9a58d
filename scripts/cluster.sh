#!/bin/sh
# A three-node spilo-rs cluster with one etcd (the image's own) on a
# private network of the container engine.
#   scripts/cluster.sh build         build localhost/spilo-rs:dev from this checkout
#   scripts/cluster.sh up [IMAGE]    start (default image localhost/spilo-rs:dev,
#                                    built first when missing)
#   scripts/cluster.sh status        members as Patroni sees them
#   scripts/cluster.sh down          remove containers and network
# CONTAINER_ENGINE picks the engine (default podman). PostgreSQL answers on
# 10.89.78.11-13:5432 (postgres / zalando), Patroni on :8008.
set -eu
engine=${CONTAINER_ENGINE:-podman}
if [ "$engine" = podman ] && [ -z "${CONTAINERS_CONF:-}" ] && [ -f "$(dirname "$0")/../tests/podman/containers.conf" ]; then
    CONTAINERS_CONF=$(cd "$(dirname "$0")/.." && pwd)/tests/podman/containers.conf
    export CONTAINERS_CONF
fi
net=spilo-demo
subnet=10.89.78
scope=${SCOPE:-demo}

build_image() {
    root=$(cd "$(dirname "$0")/.." && pwd)
    # Without a registry (as in CI), the base image is made locally.
    if [ "$engine" = podman ]; then
        "$root/scripts/base-image.sh"
        format="--format docker"
    else
        format=
    fi
    # Behind a TLS-intercepting proxy, cargo trusts the host's CA bundle.
    secret=
    if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
        secret="--secret id=cacert,src=/etc/ssl/certs/ca-certificates.crt"
    fi
    # shellcheck disable=SC2086
    "$engine" build $format $secret -t localhost/spilo-rs:dev "$root"
}

case "${1:-}" in
build)
    build_image
    ;;
up)
    image=${2:-localhost/spilo-rs:dev}
    if [ "$image" = localhost/spilo-rs:dev ] && ! "$engine" image inspect "$image" >/dev/null 2>&1; then
        build_image
    fi
    "$engine" network create --subnet "$subnet.0/24" "$net" >/dev/null
    "$engine" run -d --name spilo-demo-etcd --network "$net" --ip "$subnet.10" \
        --entrypoint /usr/bin/etcd "$image" --name etcd --data-dir /run/etcd \
        --listen-client-urls http://0.0.0.0:2379 --advertise-client-urls "http://$subnet.10:2379" >/dev/null
    for i in 1 2 3; do
        "$engine" run -d --name "spilo-demo-$i" --hostname "spilo-demo-$i" \
            --network "$net" --ip "$subnet.1$i" \
            -e SCOPE="$scope" -e ETCD3_HOSTS="$subnet.10:2379" "$image" >/dev/null
    done
    echo "started etcd and spilo-demo-1..3; watch with: $0 status"
    ;;
status)
    "$engine" exec spilo-demo-1 python3 -c "import json, urllib.request
c = json.load(urllib.request.urlopen('http://127.0.0.1:8008/cluster', timeout=5))
for m in c['members']:
    print(m['name'], m['role'], m['state'], m.get('lag', ''))"
    ;;
down)
    for c in spilo-demo-1 spilo-demo-2 spilo-demo-3 spilo-demo-etcd; do
        "$engine" rm -f -t 5 "$c" >/dev/null 2>&1 || true
    done
    "$engine" network rm -f "$net" >/dev/null 2>&1 || true
    ;;
*)
    sed -n '2,11p' "$0"
    exit 2
    ;;
esac
