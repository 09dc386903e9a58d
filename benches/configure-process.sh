#!/usr/bin/env bash
# Whole-process time of `spilo configure` (all sections, files written) on
# the basic operator fixture: exec, read the environment, render, write.
# Prints mean and best of N runs. Usage: benches/configure-process.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-300}
cargo build --release --quiet
bin=$PWD/target/release/spilo
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/majors/17/bin"

# The fixture's variables, exactly as the operator sets them.
mapfile -t fixture < <(grep -v '^#' tests/fixtures/operator/basic.env | grep '=')
run() {
  env -i PATH="$PATH" "${fixture[@]}" RW_DIR="$work/rw" PGHOME="$work/home" \
    SPILO_POSTGRES_ROOT="$work/majors" "$bin" configure 2>/dev/null
}
run # first run generates the certificate; later runs are the steady state

best=999999999 total=0
for ((i = 0; i < runs; i++)); do
  start=$(date +%s%N)
  run
  took=$(($(date +%s%N) - start))
  total=$((total + took))
  ((took < best)) && best=$took
done
printf 'spilo configure (basic operator fixture, whole process, %d runs): mean %d.%02d ms, best %d.%02d ms\n' \
  "$runs" $((total / runs / 1000000)) $((total / runs / 10000 % 100)) $((best / 1000000)) $((best / 10000 % 100))
