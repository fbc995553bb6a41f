#!/usr/bin/env bash
# Per-process wall time of one SEV-SNP report verification: `provenix
# verify-report` against virtee's `snpguest` 0.11.0, same report, same VCEK,
# same ASK/ARK, same machine, same run. The ratio is the result; the
# absolute times move with the (shared, noisy) machine.
#
# What each side does, per report:
# - provenix verify-report: parse the report, the VCEK and the chain, check
#   ARK self-signature, ASK <- ARK, VCEK <- ASK, validity at --at, product,
#   REPORTED_TCB against the VCEK's SPLs, CHIP_ID against hwID, the report
#   signature, then the default policy. One process.
# - snpguest: `verify certs` (ARK self-signature, ASK <- ARK, VCEK <- ASK) and
#   `verify attestation -p milan` (REPORTED_TCB against the VCEK's SPLs, the
#   report signature). It checks the chain and the report in separate
#   commands, so one report costs it two processes; both are timed and summed.
#
# Usage: benches/snpguest.sh            (RUNS=200 by default)
#        RUNS=50 benches/snpguest.sh
# Needs: the shared vectors (PROVENIX_SHARED, default ../shared beside the
# repository), cargo; installs hyperfine (apt) and snpguest 0.11.0 (cargo)
# when missing.

set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
shared=${PROVENIX_SHARED:-$root/../shared}
vectors=$shared/vectors/snp
runs=${RUNS:-200}
warmup=5

# The vector: project Oak's Milan v3 report (vectors.json id oak-milan-v3).
report=$vectors/project-oak/milan_report.bin
vcek=$vectors/project-oak/milan_vcek.der
chain=$vectors/amd-anchors/ask_ark_milan.pem
# When every VCEK in the vectors is valid (vectors README, "Clock").
# snpguest has no such flag and uses the real clock; the Oak Milan VCEK is
# valid 2025-01-15 to 2032-01-15.
at=2026-06-01

for f in "$report" "$vcek" "$chain"; do
    if [[ ! -f $f ]]; then
        echo "snpguest.sh: $f not found (set PROVENIX_SHARED)" >&2
        exit 2
    fi
done

# Tools.
if ! command -v hyperfine >/dev/null; then
    apt-get install -y hyperfine
fi
snpguest=${SNPGUEST:-$(command -v snpguest || echo "$HOME/.cargo/bin/snpguest")}
if [[ ! -x $snpguest ]]; then
    cargo install --locked snpguest --version 0.11.0
    snpguest=$HOME/.cargo/bin/snpguest
fi
if [[ $("$snpguest" --version) != "snpguest 0.11.0" ]]; then
    echo "snpguest.sh: note: $("$snpguest" --version), not 0.11.0" >&2
fi
(cd "$root" && cargo build --release --quiet -p provenix-cli)
provenix=$root/target/release/provenix

# Backtraces cost time on error paths only, but keep both sides equal.
unset RUST_BACKTRACE RUST_LIB_BACKTRACE

# snpguest reads a directory holding ark.pem, ask.pem and vcek.{pem,der}.
# AMD's cert_chain bundle is ASK then ARK (`snpguest verify certs` below
# fails if that is not so).
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
certs=$work/certs
mkdir "$certs"
awk -v dir="$certs" '
    /-----BEGIN CERTIFICATE-----/ { n++; file = dir "/" (n == 1 ? "ask" : n == 2 ? "ark" : "extra" n) ".pem" }
    file { print > file }
    /-----END CERTIFICATE-----/ { file = "" }
' "$chain"
cp "$vcek" "$certs/vcek.der"

ours=("$provenix" verify-report "$report" --vcek "$vcek" --chain "$chain" --at "$at")
theirs_certs=("$snpguest" verify certs "$certs")
theirs_report=("$snpguest" verify attestation "$certs" "$report" -p milan)

# Both must accept the report before anything is timed.
accepts() {
    local out
    if ! out=$("$@" 2>&1); then
        echo "snpguest.sh: $* failed:" >&2
        echo "$out" >&2
        exit 1
    fi
}
accepts "${ours[@]}"
accepts "${theirs_certs[@]}"
accepts "${theirs_report[@]}"
echo "Both accept $report."
echo

# 1. hyperfine, no shell (-N), all commands in one call.
q() { printf '%q ' "$@"; }
hyperfine -N --warmup "$warmup" --runs "$runs" --export-csv "$work/hyperfine.csv" \
    -n provenix "$(q "${ours[@]}")" \
    -n "snpguest verify certs" "$(q "${theirs_certs[@]}")" \
    -n "snpguest verify attestation" "$(q "${theirs_report[@]}")"

# CSV columns: command,mean,stddev,median,user,system,min,max (seconds).
awk -F, 'NR > 1 { median[NR - 1] = $4 }
    END {
        ours = median[1] * 1000; theirs = (median[2] + median[3]) * 1000
        printf "\nhyperfine medians, per report: provenix %.2f ms, snpguest %.2f ms (certs %.2f + attestation %.2f)\n", ours, theirs, median[2] * 1000, median[3] * 1000
        printf "hyperfine: snpguest/provenix = %.2fx\n", theirs / ours
    }' "$work/hyperfine.csv"

# 2. Interleaved (ours, theirs, theirs, ours, ...) so both see the same noise.
# Timed from bash with EPOCHREALTIME (microseconds once the separator is
# dropped; read without a subshell), so each figure includes bash's fork and
# exec, the same for every process.
run_ours() {
    local t0=${EPOCHREALTIME/[.,]/}
    "${ours[@]}" >/dev/null 2>&1
    local t1=${EPOCHREALTIME/[.,]/}
    echo $((t1 - t0)) >>"$work/ours"
}
run_theirs() {
    local t0=${EPOCHREALTIME/[.,]/}
    "${theirs_certs[@]}" >/dev/null 2>&1
    "${theirs_report[@]}" >/dev/null 2>&1
    local t1=${EPOCHREALTIME/[.,]/}
    echo $((t1 - t0)) >>"$work/theirs"
}
for ((i = 0; i < warmup; i++)); do run_ours; run_theirs; done
: >"$work/ours"
: >"$work/theirs"
for ((i = 0; i < runs; i++)); do
    if ((i % 2 == 0)); then run_ours; run_theirs; else run_theirs; run_ours; fi
done
median() { sort -n "$1" | awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
ours_us=$(median "$work/ours")
theirs_us=$(median "$work/theirs")
awk -v o="$ours_us" -v t="$theirs_us" -v n="$runs" 'BEGIN {
    printf "\ninterleaved, %d runs each, medians per report: provenix %.2f ms, snpguest %.2f ms (two processes)\n", n, o / 1000, t / 1000
    printf "interleaved: snpguest/provenix = %.2fx\n", t / o
}'
