#!/usr/bin/env bash
# Per-process wall time of an SEV-SNP launch digest: `provenix measure snp`
# against the reference `sev-snp-measure` 0.0.13, same inputs, same machine,
# same run. The ratios are the result; the absolute times move with the
# (shared, noisy) machine.
#
# (a) small inputs: the sid AmdSev firmware (4 MiB, 7 metadata sections),
#     4 vCPUs, a 64 KiB "kernel", a 256 KiB "initrd" and a command line.
#     Target: provenix at least 10x faster than the reference.
# (b) a 256 MiB initrd and a 12 MiB kernel with the same firmware, against
#     the reference and against the hashing limit: the same bytes hashed
#     with the same algorithms by standalone tools, one after the other:
#       SHA-256 of the initrd and of the kernel, SHA-384 of the firmware.
#     The launch digest hashes each 4 KiB firmware page separately and then
#     folds one 112-byte PAGE_INFO per page (35 SHA-512 blocks per page
#     instead of 32, about 2% more work in this case); the command line's
#     SHA-256 and the VMSAs are a few blocks more. The limit is measured
#     twice: with coreutils (sha256sum, sha384sum) as the task states it,
#     and with `openssl dgst`, which uses the CPU's SHA extensions where
#     coreutils may not (Debian's coreutils 9.1 is not built with OpenSSL).
#     Target: provenix within 1.3x of the limit.
#
# Usage: benches/measure.sh          (RUNS=50, BIG_RUNS=10 by default)
#        RUNS=20 BIG_RUNS=5 benches/measure.sh
# Needs: the shared firmware (PROVENIX_SHARED, default ../shared beside the
# repository), cargo, xz, hyperfine, sev-snp-measure 0.0.13 (pip), openssl.

set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
shared=${PROVENIX_SHARED:-$root/../shared}
runs=${RUNS:-50}
big_runs=${BIG_RUNS:-10}

firmware_xz=$shared/firmware/sid-OVMF.amdsev.fd.xz
if [[ ! -f $firmware_xz ]]; then
    echo "measure.sh: $firmware_xz not found (set PROVENIX_SHARED)" >&2
    exit 2
fi
for tool in xz hyperfine openssl sha256sum sha384sum; do
    if ! command -v "$tool" >/dev/null; then
        echo "measure.sh: $tool is missing" >&2
        exit 2
    fi
done
reference=${PROVENIX_SNP_MEASURE:-$(command -v sev-snp-measure || true)}
if [[ -z $reference ]]; then
    echo "measure.sh: sev-snp-measure is missing (pip install sev-snp-measure==0.0.13)" >&2
    exit 2
fi
if [[ $("$reference" --version) != "sev-snp-measure 0.0.13" ]]; then
    echo "measure.sh: note: $("$reference" --version), not 0.0.13" >&2
fi
(cd "$root" && cargo build --release --quiet -p provenix-cli)
provenix=$root/target/release/provenix
unset RUST_BACKTRACE RUST_LIB_BACKTRACE

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ovmf=$work/OVMF.amdsev.fd
xz -dc "$firmware_xz" >"$ovmf"

# Deterministic bytes: AES-128-CTR keystream of a fixed key (content does
# not change hashing speed, but every run hashes the same files).
bytes() { # SIZE FILE SEED
    # head stops the endless stream: openssl's SIGPIPE is expected.
    { openssl enc -aes-128-ctr -nosalt -K "$(printf '%032x' "$3")" -iv "$(printf '%032x' 0)" \
        -in /dev/zero 2>/dev/null || true; } | head -c "$1" >"$2"
}
bytes $((64 << 10)) "$work/kernel" 1
bytes $((256 << 10)) "$work/initrd" 2
bytes $((12 << 20)) "$work/kernel-12M" 3
bytes $((256 << 20)) "$work/initrd-256M" 4
cmdline="console=ttyS0 root=/dev/vda1 ro quiet"

common=(--mode snp --vcpus 4 --vcpu-type EPYC-Milan --ovmf "$ovmf" --append "$cmdline")
small=("${common[@]}" --kernel "$work/kernel" --initrd "$work/initrd")
big=("${common[@]}" --kernel "$work/kernel-12M" --initrd "$work/initrd-256M")

# Both must print the same digest before anything is timed.
for inputs in small big; do
    declare -n args=$inputs
    ours_out=$("$provenix" measure snp "${args[@]}")
    theirs_out=$("$reference" "${args[@]}")
    if [[ $ours_out != "$theirs_out" ]]; then
        echo "measure.sh: $inputs inputs: provenix $ours_out, reference $theirs_out" >&2
        exit 1
    fi
    echo "$inputs inputs: both print $ours_out"
done
echo

q() { printf '%q ' "$@"; }
medians() { # CSV -> the median column, in ms, one per line
    awk -F, 'NR > 1 { printf "%.2f\n", $4 * 1000 }' "$1"
}

echo "== (a) small inputs: sid AmdSev firmware, 4 vCPUs, 64 KiB kernel, 256 KiB initrd, cmdline"
hyperfine -N --warmup 3 --runs "$runs" --export-csv "$work/small.csv" \
    -n provenix "$(q "$provenix" measure snp "${small[@]}")" \
    -n sev-snp-measure "$(q "$reference" "${small[@]}")"
mapfile -t m < <(medians "$work/small.csv")
awk -v o="${m[0]}" -v t="${m[1]}" 'BEGIN {
    printf "\n(a) medians: provenix %.2f ms, sev-snp-measure %.2f ms\n", o, t
    printf "(a) sev-snp-measure/provenix = %.1fx (target >= 10x)\n\n", t / o
}'

echo "== (b) 256 MiB initrd, 12 MiB kernel, same firmware"
limit_coreutils="sha256sum $(q "$work/initrd-256M" "$work/kernel-12M") >/dev/null; sha384sum $(q "$ovmf") >/dev/null"
limit_openssl="openssl dgst -sha256 $(q "$work/initrd-256M" "$work/kernel-12M") >/dev/null; openssl dgst -sha384 $(q "$ovmf") >/dev/null"
hyperfine -N --warmup 2 --runs "$big_runs" --export-csv "$work/big.csv" \
    -n provenix "$(q "$provenix" measure snp "${big[@]}")" \
    -n sev-snp-measure "$(q "$reference" "${big[@]}")" \
    -n "limit (coreutils)" "$(q sh -c "$limit_coreutils")" \
    -n "limit (openssl)" "$(q sh -c "$limit_openssl")"
mapfile -t m < <(medians "$work/big.csv")
awk -v o="${m[0]}" -v t="${m[1]}" -v c="${m[2]}" -v s="${m[3]}" 'BEGIN {
    printf "\n(b) medians: provenix %.1f ms, sev-snp-measure %.1f ms, limit: coreutils %.1f ms, openssl %.1f ms\n", o, t, c, s
    printf "(b) sev-snp-measure/provenix = %.2fx\n", t / o
    printf "(b) provenix/limit = %.2fx against coreutils, %.2fx against openssl (target <= 1.3x)\n", o / c, o / s
}'
