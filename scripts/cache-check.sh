#!/bin/sh
# What a change rebuilds, measured with docker (BuildKit). Builds a copy of
# this checkout three times: as it is, after a runtime-only change (a
# comment appended to src/init/mod.rs), then after a change to the build
# tool (its help text in src/build/main.rs). For each build it prints the
# time, every Dockerfile step that ran (with its time) or was CACHED, and
# whether the package layers (`spilo-build install`, `slim`, `manifest`)
# came from the cache: after the runtime change they must, after the tool
# change they must not; the source layers (`build-sources`, PostgreSQL
# compiled from source) must after both. Else it exits with status 1
# (after all three builds). The checkout itself is never modified.
#
# Usage: scripts/cache-check.sh [TAG]   (default spilo-cache-check)
# Where others build too, hold the machine's build lock:
#   flock /tmp/spilo-docker-build.lock scripts/cache-check.sh
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
tag=${1:-spilo-cache-check}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The CA bundle cargo's fetches trust (the Dockerfile's cacert secret).
secret=
if [ -s /etc/ssl/certs/ca-certificates.crt ]; then
    secret=--secret=id=cacert,src=/etc/ssl/certs/ca-certificates.crt
fi

# A copy that keeps the files' times: cargo, in the build's cache mounts,
# decides by them what to recompile, as it would after an edit here.
mkdir "$work/repo"
tar -C "$repo" --exclude=./.git --exclude=target -cf - . | tar -C "$work/repo" -xf -

# build LABEL: one docker build of the copy, then its steps and the verdict.
build() {
    log=$work/build.log
    start=$(date +%s)
    # shellcheck disable=SC2086 # $secret is one word or none
    if ! docker build --progress=plain $secret -t "$tag" "$work/repo" >"$log" 2>&1; then
        tail -n 40 "$log"
        echo "cache-check: the build ($1) failed" >&2
        exit 1
    fi
    echo "== $1: $(($(date +%s) - start)) s"
    # "#N [stage i/n] STEP" names a step, "#N CACHED" or "#N DONE 1.2s"
    # ends it; listed in the Dockerfile's order of stages.
    awk '
        BEGIN { stages = 0 }
        FNR == NR && toupper($1) == "FROM" {
            stage[toupper($3) == "AS" ? $4 : "stage-" stages] = stages
            stages++
        }
        FNR == NR { next }
        /^#[0-9]+ \[[^]]+ [0-9]+\/[0-9]+\] / {
            id = $1; name = substr($0, length(id) + 2)
            gsub(/  +/, " ", name)
            gsub(/--mount=[^ ]+ |set -e; |with-cacert /, "", name)
            split(substr($2, 2) " " $3, at, "[ /]")
            key[id] = stage[at[1]] * 1000 + at[2]
            names[id] = substr(name, 1, 90)
        }
        $2 == "CACHED" && ($1 in names) { state[$1] = "CACHED" }
        $2 == "DONE" && ($1 in names) { state[$1] = "ran " $3 }
        function verdict(n, c) { return !n ? "not found" : c == n ? "all CACHED" : c ? "partly rebuilt" : "all rebuilt" }
        END {
            for (id in names) {
                printf "%d\t   %-10s %s\n", key[id], state[id], names[id]
                if (names[id] ~ /RUN spilo-build (install|slim|manifest)/) {
                    steps++
                    cached += state[id] == "CACHED"
                }
                if (names[id] ~ /RUN build-sources /) {
                    sources++
                    sources_cached += state[id] == "CACHED"
                }
            }
            printf "999998\t   source layers (build-sources): %s\n", verdict(sources, sources_cached)
            printf "999999\t   package layers (spilo-build install, slim, manifest): %s\n", verdict(steps, cached)
        }' "$work/repo/Dockerfile" "$log" | sort -n | cut -f2- | tee "$work/steps"
    verdict=$(sed -n 's/^ *package layers ([^)]*): //p' "$work/steps")
    sources=$(sed -n 's/^ *source layers ([^)]*): //p' "$work/steps")
}

# expect PACKAGES SOURCES: the last build's package and source layers must
# be so; if not, it says so, and the script's status becomes 1.
status=0
expect() {
    if [ "$verdict" != "$1" ]; then
        echo "cache-check: FAILED: the package layers should be $1, they were $verdict" >&2
        status=1
    fi
    if [ "$sources" != "$2" ]; then
        echo "cache-check: FAILED: the source layers should be $2, they were $sources" >&2
        status=1
    fi
}

# Changes never built before: else the layer cache has their results.
stamp=$(date +%s)
build "build 1, the checkout as it is"
echo "// cache-check $stamp: a runtime-only change" >>"$work/repo/src/init/mod.rs"
build "build 2, after a runtime-only change (src/init/mod.rs)"
expect "all CACHED" "all CACHED"
sed -i "s|^/// Assemble the image|/// (cache-check $stamp) Assemble the image|" "$work/repo/src/build/main.rs"
grep -q "(cache-check $stamp)" "$work/repo/src/build/main.rs" || {
    echo "cache-check: src/build/main.rs has no help text to change" >&2
    exit 1
}
build "build 3, after a change to the build tool (src/build/main.rs)"
expect "all rebuilt" "all CACHED"
exit "$status"
