#!/usr/bin/env bash
# Backup figures (not a test): a PostgreSQL 15 cluster on the host filled
# by `pgbench -i -s SCALE`, an S3 store (moto over HTTPS, as tests/backup.rs
# runs it), then
#   1. a pgBackRest full backup to the store and a restore from it (MB/s);
#   2. the naive way: `tar -C PGDATA -cf - . | zstd -3 -T0` uploaded to
#      the store with curl, downloaded and extracted (MB/s);
#   3. the archive lag under `pgbench -T DURATION -c CLIENTS`: every second
#      pg_current_wal_lsn() against pg_stat_archiver.last_archived_wal;
#      max/mean lag in segments, and seconds from a segment's end to its
#      archiving.
# pgBackRest runs with what `spilo init` renders (compress-type=zst,
# archive-async, start-fast, delta, process-max = max(1, min(8, cpus/2))).
#
# As root, after tests/setup. Everything lives under one temporary
# directory, removed at the end with the server and the store, however the
# script ends.
#
#   scripts/backup-bench.sh                 # SCALE=150 (about 2.3 GB)
#   SCALE=20 DURATION=20 scripts/backup-bench.sh
#
# Settings (environment): SCALE (150), DURATION (60), CLIENTS (4),
# PROCESS_MAX (as spilo), IP (127.0.0.40), PGPORT (5497),
# BENCH_DIR (a new directory under /var/tmp), KEEP=1 keeps it.
set -euo pipefail

scale=${SCALE:-150}
duration=${DURATION:-60}
clients=${CLIENTS:-4}
ip=${IP:-127.0.0.40}
pgport=${PGPORT:-5497}
cpus=$(nproc)
process_max=${PROCESS_MAX:-$(( cpus / 2 < 1 ? 1 : (cpus / 2 > 8 ? 8 : cpus / 2) ))}
pgbin=/usr/lib/postgresql/15/bin
moto_venv=${SPILO_TEST_MOTO_VENV:-/opt/spilo-test/moto}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
proxy_py=$here/tests/backup_support/tls_proxy.py
bucket=bench
stanza=bench

die() { echo "backup-bench: $*" >&2; exit 1; }
[[ $(id -u) == 0 ]] || die "run as root"
for f in "$pgbin/postgres" "$pgbin/pgbench" /usr/bin/pgbackrest "$moto_venv/bin/moto_server" "$proxy_py"; do
  [[ -e $f ]] || die "$f missing: run tests/setup"
done
for c in zstd curl openssl tar runuser python3; do
  command -v "$c" >/dev/null || die "$c missing: run tests/setup"
done

work=${BENCH_DIR:-$(mktemp -d /var/tmp/spilo-backup-bench.XXXXXX)}
mkdir -p "$work"
chmod 755 "$work"
pids=()
pgdatas=()
cleanup() {
  local rc=$?
  set +e
  for d in "${pgdatas[@]}"; do
    [[ -f $d/postmaster.pid ]] && runuser -u postgres -- "$pgbin/pg_ctl" -D "$d" -m immediate stop >/dev/null 2>&1
  done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  if [[ ${KEEP:-0} == 1 ]]; then
    echo "backup-bench: kept $work"
  else
    rm -rf "$work"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

as_pg() { runuser -u postgres -- "$@"; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
rate() { awk -v bytes="$1" -v a="$2" -v b="$3" 'BEGIN { printf "%.1f", bytes / 1048576 / (b - a) }'; }
mb() { awk -v b="$1" 'BEGIN { printf "%.0f", b / 1048576 }'; }
free_port() { python3 -c 'import socket,sys; s=socket.socket(); s.bind((sys.argv[1],0)); print(s.getsockname()[1])' "$ip"; }
# Waits (bounded) for a command to succeed.
wait_until() {
  local what=$1 seconds=$2; shift 2
  local deadline=$(( $(date +%s) + seconds ))
  until "$@" >/dev/null 2>&1; do
    (( $(date +%s) < deadline )) || die "timed out after ${seconds}s waiting for $what"
    sleep 0.2
  done
}

echo "backup-bench: scale $scale, pgbench -T $duration -c $clients, process-max $process_max, $cpus cpus, in $work"

# --- the store: a CA, a certificate for $ip (IP and DNS names: pgBackRest
# checks only DNS names), moto over plain HTTP behind the TLS proxy.
tls=$work/tls
mkdir -p "$tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -keyout "$tls/ca.key" -out "$tls/ca.pem" -subj "/CN=backup-bench CA" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout "$tls/server.key" -out "$tls/server.csr" -subj "/CN=$ip" 2>/dev/null
printf 'subjectAltName=IP:%s,DNS:%s\n' "$ip" "$ip" >"$tls/ext"
openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" -CAcreateserial \
  -days 2 -extfile "$tls/ext" -out "$tls/server.crt" 2>/dev/null
chmod 644 "$tls/ca.pem"
http_port=$(free_port)
s3_port=$(free_port)
"$moto_venv/bin/moto_server" -H "$ip" -p "$http_port" >"$work/moto.log" 2>&1 &
pids+=($!)
"$moto_venv/bin/python" "$proxy_py" "$ip" "$s3_port" "$ip" "$http_port" "$tls/server.crt" "$tls/server.key" >"$work/proxy.log" 2>&1 &
pids+=($!)
endpoint=https://$ip:$s3_port
# Signed (moto refuses anonymous reads of objects).
s3() { curl -sS --fail --cacert "$tls/ca.pem" --aws-sigv4 aws:amz:us-east-1:s3 --user AKIABENCH:bench-secret "$@"; }
wait_until "moto on $endpoint" 30 s3 -o /dev/null "$endpoint/"
s3 -o /dev/null -X PUT "$endpoint/$bucket"

# --- the cluster
pgdata=$work/pgdata
restored=$work/restored
socket=$work/socket
spool=$work/spool
mkdir -p "$pgdata" "$restored" "$socket" "$spool" "$work/lock" "$work/pglog"
chown postgres: "$pgdata" "$restored" "$socket" "$spool" "$work/lock" "$work/pglog"
chmod 700 "$pgdata" "$restored"
conf=$work/pgbackrest.conf
cat >"$conf" <<EOF
[global]
repo1-type=s3
repo1-s3-bucket=$bucket
repo1-s3-endpoint=$ip
repo1-storage-port=$s3_port
repo1-s3-region=us-east-1
repo1-s3-key=AKIABENCH
repo1-s3-key-secret=bench-secret
repo1-s3-uri-style=path
repo1-storage-ca-file=$tls/ca.pem
repo1-path=/spilo/$stanza/pgbackrest
repo1-retention-full-type=count
repo1-retention-full=2
process-max=$process_max
compress-type=zst
archive-async=y
start-fast=y
delta=y
spool-path=$spool
lock-path=$work/lock
log-level-file=off

[$stanza]
pg1-path=$pgdata
pg1-port=$pgport
pg1-socket-path=$socket
EOF
chown postgres: "$conf"
chmod 600 "$conf"
pgbr() { as_pg pgbackrest --config="$conf" --stanza="$stanza" --log-level-console=warn "$@"; }

as_pg "$pgbin/initdb" -D "$pgdata" -A trust -U postgres --no-sync >/dev/null
cat >>"$pgdata/postgresql.conf" <<EOF
listen_addresses = ''
port = $pgport
unix_socket_directories = '$socket'
shared_buffers = 256MB
max_wal_size = 4GB
wal_level = replica
archive_mode = on
archive_command = 'pgbackrest --config=$conf --stanza=$stanza archive-push "%p"'
EOF
pgdatas+=("$pgdata")
as_pg "$pgbin/pg_ctl" -D "$pgdata" -l "$work/pglog/postgres.log" -w -t 60 start >/dev/null
psql() { as_pg "$pgbin/psql" -X -A -t -q -v ON_ERROR_STOP=1 -h "$socket" -p "$pgport" -U postgres -d postgres "$@"; }
pgbr stanza-create

t0=$(now)
as_pg "$pgbin/pgbench" -h "$socket" -p "$pgport" -U postgres -i -q -s "$scale" postgres 2>&1 | tail -n1
t1=$(now)
psql -c CHECKPOINT
size=$(du -sb "$pgdata" | cut -f1)
wal=$(du -sb "$pgdata/pg_wal" | cut -f1)
echo "pgbench -i -s $scale: $(elapsed "$t0" "$t1")s, PGDATA $(mb "$size") MB, $(mb "$wal") MB of it pg_wal (pgBackRest leaves it out, tar takes it)"

# --- 1. pgBackRest
t0=$(now)
pgbr backup --type=full
t1=$(now)
stored=$(pgbr info --output=json | python3 -c 'import json,sys; b=json.load(sys.stdin)[0]["backup"][-1]; print(b["info"]["repository"]["delta"])')
echo "pgbackrest full backup: $(elapsed "$t0" "$t1")s, $(rate "$size" "$t0" "$t1") MB/s of PGDATA, $(mb "$stored") MB stored"
t0=$(now)
as_pg pgbackrest --config="$conf" --stanza="$stanza" --log-level-console=warn --pg1-path="$restored" \
  --no-delta --type=immediate --target-action=promote restore
t1=$(now)
echo "pgbackrest restore: $(elapsed "$t0" "$t1")s, $(rate "$size" "$t0" "$t1") MB/s of PGDATA"
rm -rf "${restored:?}"/*

# --- 2. tar | zstd (the server runs: a figure of the transfer, not a
# consistent backup). Staged in a local file: moto mishandles chunked
# uploads (curl -T - gets 403s), so the PUT has a Content-Length.
staged=$work/base.tar.zst
t0=$(now)
{ tar -C "$pgdata" --exclude=./postmaster.pid --warning=no-file-changed -cf - . || [[ $? == 1 ]]; } |
  zstd -q -3 -T0 -o "$staged"
t1=$(now)
s3 -o /dev/null -T "$staged" "$endpoint/$bucket/tar/base.tar.zst"
t2=$(now)
tarred=$(stat -c %s "$staged")
rm -f "$staged"
echo "tar | zstd -3 -T0 > file: $(elapsed "$t0" "$t1")s, curl PUT: $(elapsed "$t1" "$t2")s; together $(elapsed "$t0" "$t2")s, $(rate "$size" "$t0" "$t2") MB/s of PGDATA, $(mb "$tarred") MB stored"
t0=$(now)
s3 "$endpoint/$bucket/tar/base.tar.zst" | zstd -q -d | tar -C "$restored" -xf -
t1=$(now)
echo "curl GET | zstd -d | tar -x: $(elapsed "$t0" "$t1")s, $(rate "$size" "$t0" "$t1") MB/s of PGDATA"
rm -rf "${restored:?}"/*

# --- 3. archive lag under load
samples=$work/lag.txt
sample_sql="SELECT extract(epoch FROM clock_timestamp())::numeric(20,3),
  ('x' || substr(w, 9, 8))::bit(32)::bigint * 256 + ('x' || substr(w, 17, 8))::bit(32)::bigint,
  coalesce(('x' || substr(a, 9, 8))::bit(32)::bigint * 256 + ('x' || substr(a, 17, 8))::bit(32)::bigint, -1),
  failed_count
  FROM (SELECT pg_walfile_name(pg_current_wal_lsn()) AS w,
    CASE WHEN last_archived_wal ~ '^[0-9A-F]{24}\$' THEN last_archived_wal END AS a, failed_count
    FROM pg_stat_archiver) s"
: >"$samples"
as_pg "$pgbin/pgbench" -h "$socket" -p "$pgport" -U postgres -n -T "$duration" -c "$clients" -j "$clients" postgres \
  >"$work/pgbench.log" 2>&1 &
bench=$!
pids+=("$bench")
while kill -0 "$bench" 2>/dev/null; do
  psql -F ' ' -c "$sample_sql" >>"$samples" || true
  sleep 1
done
wait "$bench" || die "pgbench failed: $(tail -n5 "$work/pgbench.log")"
tps=$(awk '/^tps/ {print $3; exit}' "$work/pgbench.log")
# Then until the archive has caught up (bounded), still sampling.
psql -c 'SELECT pg_switch_wal()' >/dev/null
deadline=$(( $(date +%s) + 300 ))
while :; do
  line=$(psql -F ' ' -c "$sample_sql")
  echo "$line" >>"$samples"
  read -r _ cur arch _ <<<"$line"
  (( arch >= cur - 1 )) && break
  (( $(date +%s) < deadline )) || { echo "backup-bench: the archive did not catch up within 300s" >&2; break; }
  sleep 1
done
awk -v tps="$tps" -v dur="$duration" '
  # last_archived_wal names no segment yet (a .backup or .history file):
  # no lag to tell.
  NF >= 3 && $3 >= 0 {
    t = $1; cur = $2; arch = $3; failed = $4
    lag = cur - 1 - arch; if (lag < 0) lag = 0
    if (n == 0) { first = cur; last_cur = cur }
    n++; sum += lag; if (lag > max) max = lag
    # a segment is complete once the current one is past it
    for (s = last_cur; s < cur; s++) if (!(s in closed)) closed[s] = t
    last_cur = cur
    for (s in closed) if (!(s in done) && arch >= s + 0) done[s] = t
  }
  END {
    for (s in done) { d = done[s] - closed[s]; ns++; ssum += d; if (d > smax) smax = d }
    printf "archive lag under pgbench -T %s (%s tps): %d segments written, lag max %d / mean %.2f segments, ", dur, tps, last_cur - first, max, (n ? sum / n : 0)
    printf "segment end to archived max %.1fs / mean %.1fs (%d segments, 1 s sampling), failed_count %d\n", smax, (ns ? ssum / ns : 0), ns, failed
  }' "$samples"
