# The reference for the size report: the same packages as image/spec.toml
# on the same base, installed the plain way (one apt-get, lists removed,
# nothing else). PostgreSQL 18 comes from the main Dockerfile's sources
# stage, which scripts/size-report.sh builds as SOURCES and mounts here
# (no layer of its own). Built by scripts/size-report.sh.
ARG BASE=debian:trixie-slim
ARG SOURCES=localhost/spilo-rs:sources
FROM ${SOURCES} AS sources
FROM ${BASE}
RUN --mount=type=bind,from=sources,source=/built,target=/var/lib/spilo/built \
    echo 'deb [check-valid-until=no] http://deb.debian.org/debian bookworm main' > /etc/apt/sources.list.d/bookworm.list \
 && echo 'deb [trusted=yes] file:/var/lib/spilo/built ./' > /etc/apt/sources.list.d/built.list \
 && printf 'Package: *\nPin: release n=bookworm\nPin-Priority: 100\n' > /etc/apt/preferences.d/bookworm \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates postgresql-common locales \
      pgbouncer patroni python3-psycopg2 python3-etcd python3-kubernetes python3-consul python3-kazoo \
      etcd-server libnss-wrapper curl pgbackrest \
      postgresql-18 postgresql-18-postgis-3 postgresql-18-postgis-3-scripts postgresql-18-repack \
      postgresql-18-pgaudit postgresql-18-partman \
      postgresql-17 postgresql-17-postgis-3 postgresql-17-postgis-3-scripts postgresql-17-repack \
      postgresql-17-pgvector postgresql-17-cron postgresql-17-pgaudit postgresql-17-wal2json postgresql-17-hypopg \
      postgresql-17-partman postgresql-17-plpgsql-check postgresql-17-set-user postgresql-17-pg-stat-kcache \
      postgresql-15 postgresql-15-postgis-3 postgresql-15-postgis-3-scripts postgresql-15-repack \
      postgresql-15-cron postgresql-15-pgaudit postgresql-15-wal2json postgresql-15-hypopg \
      postgresql-15-partman postgresql-15-plpgsql-check postgresql-15-set-user postgresql-15-pg-stat-kcache \
 && rm -rf /var/lib/apt/lists/* /etc/apt/sources.list.d/built.list
