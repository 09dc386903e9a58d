#!/usr/bin/env bash
# Upgrade figures (not a test): for each pgbench scale, a one-member
# cluster on PostgreSQL 15 in the image (embedded etcd), filled with
# `pgbench -i -s SCALE` and upgraded to 17 by the operator's command
# (`su postgres -c "python3 /scripts/inplace_upgrade.py 1"`), while a
# writer in the container commits one row every 50 ms. Prints the
# database size, the longest time the writer saw without a commit, and
# the upgrade's own summary (writes refused from the clean stop until
# the new primary takes writes).
#
#   scripts/upgrade-downtime.sh              # scales 10 and 150 (2.3 GB)
#   SCALES="1 50" IMAGE=localhost/spilo-rs:test scripts/upgrade-downtime.sh
#
# Needs the image (built by the image tests or README's main command).
# The container is removed however the script ends.
set -euo pipefail

image=${IMAGE:-localhost/spilo-rs:test}
engine=${CONTAINER_ENGINE:-docker}
name=spilo-upgrade-downtime-$$
trap '"$engine" rm -f "$name" >/dev/null 2>&1 || true' EXIT

writer='
import sys, time, psycopg2
end = time.time() + float(sys.argv[1])
last_ok = time.time()
longest = 0.0
conn = None
while time.time() < end:
    try:
        if conn is None:
            conn = psycopg2.connect(host="/run/postgresql", user="postgres", dbname="postgres", connect_timeout=2)
            conn.autocommit = True
        conn.cursor().execute("INSERT INTO writes DEFAULT VALUES")
        now = time.time()
        longest = max(longest, now - last_ok)
        last_ok = now
    except Exception:
        conn = None
    time.sleep(0.05)
print(f"{longest:.1f}")
'

psql() { "$engine" exec -u postgres "$name" psql -qAtX -h /run/postgresql -c "$1"; }

for scale in ${SCALES:-10 150}; do
    "$engine" rm -f "$name" >/dev/null 2>&1 || true
    "$engine" run -d --name "$name" -e PGVERSION=15 "$image" >/dev/null
    for _ in $(seq 90); do psql 'SELECT 1' >/dev/null 2>&1 && break; sleep 2; done
    "$engine" exec -u postgres "$name" /usr/lib/postgresql/15/bin/pgbench -i -q -I dtGvp \
        -s "$scale" -h /run/postgresql postgres >/dev/null 2>&1
    psql 'CREATE TABLE writes (at timestamptz DEFAULT now())'
    size=$(psql "SELECT pg_size_pretty(pg_database_size('postgres'))")
    "$engine" exec -d -u postgres "$name" sh -c 'python3 -c "$0" 120 > /tmp/longest 2>&1' "$writer"
    sleep 3
    summary=$("$engine" exec -e PGVERSION=17 -w /home/postgres "$name" \
        /bin/su postgres -c '/usr/bin/python3 /scripts/inplace_upgrade.py 1' | tail -1)
    longest=
    for _ in $(seq 90); do
        longest=$("$engine" exec "$name" cat /tmp/longest)
        [ -n "$longest" ] && break
        sleep 2
    done
    echo "scale $scale ($size): the writer saw no commit for ${longest}s; $summary"
done
