# spilo-rs: PostgreSQL HA (Patroni) with several PostgreSQL majors, from
# Debian packages. Build:
#   docker build -t spilo .                     (podman: add --format docker)
#   docker build --build-arg COMPRESS=true ...  (non-default majors packed)
#   docker build --build-arg MAJORS=17,15 ...   (only these majors)
#   docker build --build-arg SOURCE=pgdg --build-arg MAJORS=14,15,16,17,18 ...
#                                               (every major from PGDG)
# Behind a TLS-intercepting proxy, pass its CA bundle for cargo's fetches:
#   --secret id=cacert,src=/etc/ssl/certs/ca-certificates.crt
# What goes in is image/spec.toml; see `spilo manifest` in the image.

ARG BASE=debian:trixie-slim

# Debian's own Rust toolchain (rust-version 1.85 is trixie's rustc), and
# `with-cacert`, which runs a command trusting the optional cacert secret
# (mounted by the RUN: --mount=type=secret,id=cacert) for every HTTPS
# fetch: crates.io behind a TLS-intercepting proxy.
FROM ${BASE} AS rust
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      cargo rustc gcc libc6-dev libpam0g-dev ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && printf '%s\n' '#!/bin/sh' 'if [ -s /run/secrets/cacert ]; then' \
      '  export CARGO_HTTP_CAINFO=/run/secrets/cacert SSL_CERT_FILE=/run/secrets/cacert' \
      'fi' 'exec "$@"' >/usr/local/bin/with-cacert \
 && chmod +x /usr/local/bin/with-cacert

# The workspace's manifests, each target's file an empty stub: to build one
# member cargo loads them all and wants a file for every target a manifest
# names ([lib], [[bin]], [[test]], [[bench]], [[example]]) or infers
# (src/lib.rs). Enough to compile the dependencies alone; the stubs the
# real sources don't replace stand for the tests, benches and examples,
# which the build context leaves out.
FROM rust AS manifests
WORKDIR /src
ENV CARGO_TARGET_DIR=/target
COPY Cargo.toml Cargo.lock ./
COPY src/build/Cargo.toml src/build/
COPY src/layout/Cargo.toml src/layout/
COPY extensions/pam_oauth2/Cargo.toml extensions/pam_oauth2/
COPY extensions/pam_oauth2/args/Cargo.toml extensions/pam_oauth2/args/
COPY fuzz/Cargo.toml fuzz/
RUN set -e; for manifest in $(find . -name Cargo.toml); do \
      dir=${manifest%Cargo.toml}; \
      for target in $(awk 'BEGIN { FS = " *= *"; d["[lib]"] = "lib"; d["[[bin]]"] = "src/bin"; \
          d["[[test]]"] = "tests"; d["[[bench]]"] = "benches"; d["[[example]]"] = "examples" } \
        function flush() { if (kind) print (path ? path : kind == "lib" ? "src/lib.rs" : kind "/" name ".rs"); kind = path = "" } \
        substr($0, 1, 1) == "[" { flush(); kind = d[$1]; lib += kind == "lib" } \
        kind && $1 == "name" { name = $2; gsub(/"/, "", name) } \
        kind && $1 == "path" { path = $2; gsub(/"/, "", path) } \
        END { flush(); if (!lib) print "src/lib.rs" }' "$manifest"); do \
        mkdir -p "$(dirname "$dir$target")" && echo 'pub fn main() {}' > "$dir$target"; \
      done; \
    done

# The build tool, from src/build and src/layout alone: a change to runtime
# code leaves it, and the package layers below, to the cache. First its
# dependencies, compiled from the stubs into a layer of their own (crates
# and artefacts inside it, no cache mount), which only a change to a
# manifest or Cargo.lock rebuilds; the stubs' own artefacts are removed
# (real sources can carry older times than they). Then the tool, in the
# same target directory.
FROM manifests AS tool
RUN --mount=type=secret,id=cacert \
    with-cacert cargo build --release --locked -p spilo-build \
 && cargo clean --release --locked -p spilo-build -p spilo-layout
COPY src/layout src/layout
COPY src/build src/build
RUN --mount=type=secret,id=cacert \
    with-cacert cargo build --release --locked -p spilo-build \
 && cp /target/release/spilo-build /usr/local/bin/spilo-build

# The runtime's sources: src without the tool's (its stubs stand in), so
# that a change to the tool leaves the runtime's build to the cache.
FROM ${BASE} AS runtime-sources
COPY src /src
RUN rm -r /src/build

# The runtime binary and the PAM module, in cache mounts: a rebuild
# compiles the workspace's crates alone, the dependencies stay compiled.
# The target mount is locked, so that a concurrent build can't replace the
# binaries between build and copy; the workspace's crates are cleaned
# first, so that sources older than the cached artefacts (another
# checkout) are compiled all the same.
FROM manifests AS builder
COPY extensions extensions
COPY image/templates image/templates
COPY image/sql image/sql
COPY --from=runtime-sources /src src
RUN --mount=type=cache,id=spilo-cargo-registry,target=/root/.cargo/registry \
    --mount=type=cache,id=spilo-target,target=/target,sharing=locked \
    --mount=type=secret,id=cacert \
    set -e; \
    with-cacert cargo clean --release --locked \
      -p spilo -p pam_oauth2 -p pam_oauth2_args -p spilo-layout; \
    with-cacert cargo build --release --locked -p spilo -p pam_oauth2 --lib --bins; \
    multiarch=$(gcc -print-multiarch); \
    mkdir -p /out/bin "/out/lib/$multiarch/security"; \
    cp /target/release/spilo /out/bin/; \
    ln -s spilo /out/bin/envdir; \
    cp /target/release/libpam_oauth2.so "/out/lib/$multiarch/security/pam_oauth2.so"

# What the sources stage compiles (majors with source = "build"), planned
# from the spec as plain lines.
FROM tool AS source-plan
COPY image/spec.toml /usr/share/spilo/spec.toml
ARG MAJORS=
ARG SOURCE=
RUN SPILO_MAJORS="$MAJORS" SPILO_SOURCE="$SOURCE" spilo-build source-plan /plan

# Those majors compiled into a flat apt repository (/built): the servers,
# then their extensions. The plan and the script alone key this stage's
# cache: a change to the build tool or the runtime that leaves the plan as
# it is rebuilds nothing here.
FROM ${BASE} AS sources
COPY image/build-sources.sh /usr/local/bin/build-sources
COPY --from=source-plan /plan /plan
RUN build-sources /plan /built server
RUN build-sources /plan /built extension

# The root filesystem: packages per image/spec.toml, slimmed, optionally
# compressed, by the build tool alone (these layers depend on it and the
# spec, never on runtime code).
FROM ${BASE} AS rootfs
COPY image/spec.toml /usr/share/spilo/spec.toml
COPY --from=tool /usr/local/bin/spilo-build /usr/local/bin/spilo-build
COPY --from=sources /built /var/lib/spilo/built
ARG MAJORS=
ARG SOURCE=
ENV SPILO_MAJORS=${MAJORS} SPILO_SOURCE=${SOURCE}
RUN spilo-build install
RUN spilo-build slim
ARG COMPRESS=false
ARG COMPRESS_FORMAT=zstd
RUN if [ "$COMPRESS" = true ]; then spilo-build compress --format "$COMPRESS_FORMAT"; fi
RUN spilo-build manifest && rm /usr/local/bin/spilo-build

FROM scratch
COPY --from=rootfs / /
COPY --from=builder /out/lib/ /usr/lib/
COPY --from=builder /out/bin/ /usr/local/bin/
COPY image/scripts/ /scripts/
ARG BASE
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="spilo-rs" \
      org.opencontainers.image.description="PostgreSQL high availability (Patroni) with several PostgreSQL majors; a drop-in replacement for Zalando's Spilo" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${BASE}" \
      io.spilo.manifest="/usr/share/spilo/manifest.json"
# PATRONICTL_CONFIG_FILE: patronictl without -c under any UID and HOME
# (root's and postgres's homes also have the default path linked).
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=en_US.UTF-8 \
    PGHOME=/home/postgres \
    PATRONICTL_CONFIG_FILE=/home/postgres/postgres.yml
WORKDIR /home/postgres
EXPOSE 5432 8008 8080
# Patroni's liveness: its REST API answers while its loop runs. Plain HTTP
# first; when the API speaks TLS (SSL_RESTAPI_*, or restapi.certfile in
# SPILO_CONFIGURATION) that attempt fails without an answer and HTTPS
# follows, the certificate unchecked (it is our own, on localhost). An
# answer other than 200 (HTTPError) is unhealthy as it is. 2 x 4 s fit in
# the 10 s timeout.
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
  CMD ["python3", "-c", "import os, ssl, urllib.error, urllib.request as r\n\
url = '://127.0.0.1:%s/liveness' % os.environ.get('APIPORT', '8008')\n\
try: r.urlopen('http' + url, timeout=4)\n\
except urllib.error.HTTPError: raise\n\
except Exception: r.urlopen('https' + url, timeout=4, context=ssl._create_unverified_context())"]
ENTRYPOINT ["/usr/local/bin/spilo", "init"]
