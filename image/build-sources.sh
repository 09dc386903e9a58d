#!/bin/sh
# The Dockerfile's sources stage: compiles what `spilo-build source-plan`
# planned (PLAN_DIR/plan, PLAN_DIR/deb-src.sources) into OUT, a flat apt
# repository the rootfs stage installs from, with OUT/built.tsv saying
# where each package came from (package, version, source, source version,
# suite, packaging).
#
# Plan lines (space-separated; lists comma-joined, `-` when empty):
#   server MAJOR SUITE SOURCE
#   extension MAJOR SUITE SOURCE PACKAGES BUILD_DEPENDS
# A server is built with Debian's own packaging; an extension from the
# upstream tarball (.orig) of its source package, packaged here: the first
# package holds its libraries and programs, a second one /usr/share.
#
# Two phases, two layers, so that a failed extension leaves the server in
# the build cache: `server` fetches every source first (a missing one stops
# the build before anything is installed) and builds the servers;
# `extension` builds the extensions against them.
#
# Usage: build-sources.sh PLAN_DIR OUT server|extension
set -eu

plan=$1/plan
apt_sources=$1/deb-src.sources
out=$2
phase=$3
work=/var/tmp/spilo-sources
jobs=$(nproc)
started=$(date +%s)
export DEBIAN_FRONTEND=noninteractive

fail() {
    echo "build-sources: error: $*" >&2
    exit 1
}
say() {
    echo "==> build-sources $phase [$(($(date +%s) - started))s] $*"
}
apt_get() {
    apt-get -q -y -o Dpkg::Use-Pty=0 "$@"
}
first() {
    echo "${1%%,*}"
}

# The flat repository's indices, for apt here and in the rootfs stage.
index() {
    (cd "$out" && apt-ftparchive packages . >Packages && apt-ftparchive release . >Release)
}

record() {
    for deb in "$@"; do
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$(dpkg-deb -f "$deb" Package)" \
            "$(dpkg-deb -f "$deb" Version)" "$source" "$source_version" "$suite" "$packaging" \
            >>"$out/built.tsv"
    done
}

# Every file of every source, its hash checked, into $work/SOURCE.
fetch_all() {
    cp "$apt_sources" /etc/apt/sources.list.d/spilo-deb-src.sources
    apt_get update >/dev/null
    # The plan on fd 3, here and below: the commands read standard input.
    while read -r kind major suite source packages _ <&3; do
        package=$(first "$packages")
        wanted='\.orig\.tar\.'
        if [ "$kind" = server ]; then
            package=$source
            wanted='\.dsc$|\.orig\.tar\.|\.debian\.tar\.'
        fi
        uris=$(apt-get source --print-uris -qq "$source/$suite" 2>/dev/null | grep "^'") ||
            fail "PostgreSQL $major: $package: no source package $source in $suite"
        echo "$uris" | awk '{ print $2 }' | grep -Eq "$wanted" ||
            fail "PostgreSQL $major: $package: $source in $suite has no upstream tarball"
        mkdir -p "$work/$source"
        echo "$uris" | while read -r uri file _ hash; do
            echo "$file" | grep -Eq "$wanted" || continue
            uri=${uri#\'}
            /usr/lib/apt/apt-helper -q download-file "${uri%\'}" "$work/$source/$file" "$hash" \
                >/dev/null 2>&1 ||
                fail "PostgreSQL $major: $package: $file ($source in $suite) does not download"
        done
        say "PostgreSQL $major: fetched $source from $suite"
    done 3<"$plan"
}

# Debian's own packaging; then its development files are installed for
# the extensions, from the repository.
build_server() {
    packaging=debian
    dsc=$(ls ./*.dsc)
    source_version=$(sed -n 's/^Version: //p' "$dsc")
    dpkg-source -x "$dsc" tree >/dev/null
    say "PostgreSQL $major: build dependencies of $source $source_version"
    apt_get build-dep -P nocheck,nodoc ./tree >/dev/null
    say "PostgreSQL $major: building $source $source_version (Debian's packaging)"
    (cd tree && DEB_BUILD_OPTIONS="nocheck nodoc parallel=$jobs" DEB_BUILD_PROFILES="nocheck nodoc" \
        dpkg-buildpackage -b -uc -us >"$work/$source.log" 2>&1) ||
        {
            tail -40 "$work/$source.log"
            fail "PostgreSQL $major: $source: dpkg-buildpackage failed"
        }
    rm -rf tree ./*-dbgsym_*.deb ./*.ddeb
    record ./*.deb
    mv ./*.deb "$out/"
    index
    printf 'Types: deb\nURIs: file:%s\nSuites: ./\nTrusted: yes\n' "$out" \
        >/etc/apt/sources.list.d/spilo-built.sources
    apt_get update >/dev/null
    apt_get install --no-install-recommends "postgresql-server-dev-$major" >/dev/null
}

# configure (when there is one) and make with the major's pg_config
# first on PATH, installed into root/, packaged.
build_extension() {
    packaging=upstream
    tarball=$(ls ./*.orig.tar.*)
    source_version=${tarball#./"$source"_}
    source_version=${source_version%.orig.tar.*}
    version=$source_version-0spilo1
    main=$(first "$packages")
    scripts=${packages#"$main"}
    scripts=${scripts#,}
    if [ "$depends" != - ]; then
        say "PostgreSQL $major: build dependencies of $source: $depends"
        # shellcheck disable=SC2046 # a comma-joined list, split on purpose
        apt_get install --no-install-recommends $(echo "$depends" | tr , ' ') >/dev/null
    fi
    rm -rf tree root pkg
    mkdir tree && tar -xf "$tarball" -C tree --strip-components=1
    say "PostgreSQL $major: building $source $source_version (upstream tarball)"
    (
        cd tree
        PATH=/usr/lib/postgresql/$major/bin:$PATH
        if [ -x configure ]; then
            ./configure
            make -j"$jobs"
            make install DESTDIR="$work/$source/root"
        else
            make -j"$jobs" USE_PGXS=1
            make install USE_PGXS=1 DESTDIR="$work/$source/root"
        fi
    ) >"$work/$source.log" 2>&1 ||
        {
            tail -40 "$work/$source.log"
            fail "PostgreSQL $major: $main: building $source failed"
        }
    mkdir -p "pkg/$main/DEBIAN" pkg/debian
    cp -a root/. "pkg/$main/"
    if [ -n "$scripts" ]; then
        mkdir -p "pkg/$scripts/DEBIAN" "pkg/$scripts/usr"
        mv "pkg/$main/usr/share" "pkg/$scripts/usr/"
    fi
    # Run-time dependencies of its ELF files; dpkg-shlibdeps reads the
    # debian/control of its working directory.
    printf 'Source: %s\n\nPackage: %s\nArchitecture: any\n' "$source" "$main" >pkg/debian/control
    elves=$(cd pkg && find "$main" -type f -exec sh -c 'head -c4 "$1" | grep -q ELF && echo "$1"' _ {} \;)
    shlibs=
    if [ -n "$elves" ]; then
        # shellcheck disable=SC2086 # paths without blanks, from find
        shlibs=$(cd pkg && dpkg-shlibdeps -O --warnings=0 $elves | sed -n 's/^shlibs:Depends=//p')
    fi
    for name in $main $scripts; do
        depends_line=
        if [ "$name" = "$main" ]; then
            depends_line="postgresql-$major${shlibs:+, $shlibs}${scripts:+, $scripts (= $version)}"
        fi
        {
            echo "Package: $name"
            echo "Version: $version"
            echo "Architecture: $(dpkg --print-architecture)"
            echo "Maintainer: spilo-rs <spilo-rs@localhost>"
            [ -z "$depends_line" ] || echo "Depends: $depends_line"
            echo "Section: database"
            echo "Priority: optional"
            echo "Description: $source $source_version for PostgreSQL $major"
            echo " Built by the spilo-rs image build from the upstream tarball of"
            echo " Debian's $source source package ($suite)."
        } >"pkg/$name/DEBIAN/control"
        deb=$out/${name}_${version}_$(dpkg --print-architecture).deb
        dpkg-deb --root-owner-group --build "pkg/$name" "$deb" >/dev/null
        record "$deb"
    done
    rm -rf tree root pkg
    index
}

case $phase in
server | extension) ;;
*) fail "phase must be server or extension, not $phase" ;;
esac
mkdir -p "$out" "$work"
if [ ! -s "$plan" ]; then
    : >"$out/Packages"
    : >"$out/built.tsv"
    say "nothing to build"
    exit 0
fi
if [ "$phase" = server ]; then
    : >"$out/built.tsv"
    fetch_all
    say "build tools"
    apt_get install --no-install-recommends build-essential dpkg-dev fakeroot apt-utils >/dev/null
fi
while read -r kind major suite source packages depends <&3; do
    [ "$kind" = "$phase" ] || continue
    cd "$work/$source"
    "build_$kind"
    say "PostgreSQL $major: $source done"
done 3<"$plan"
say "built so far: $(cut -f1 "$out/built.tsv" | tr '\n' ' ')"
