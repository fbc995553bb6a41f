#!/usr/bin/env bash
# NAR hashing of a ~1 GiB tree: provenix-worker's `nar::hash_path` (through
# the `nar_hash` example) against Nix 2.8 (Debian nix-bin), same tree, same
# machine, same run. The ratios are the result; absolute times move with the
# (shared, noisy) machine.
#
# What each side does, per run:
# - provenix: `target/release/examples/nar_hash TREE`: one process walks the
#   tree and reads the files into 256 KiB chunks while a second thread runs
#   ring's SHA-256 over the filled ones.
# - nix-store --dump TREE | sha256sum: Nix serialises to a pipe, coreutils
#   hashes it.
# - nix hash path TREE: Nix serialises and hashes in one process (what
#   `nix-store --add` and `nix path-info` rely on).
#
# The tree is deterministic (a seeded generator): 20,000 files of 1-16 KiB
# in 200 directories (every tenth executable), 200 symlinks, and five large
# files of 100, 150, 200, 200 and 200 MiB: 1,065,467,089 bytes of content,
# a NAR of 1,068,443,328 bytes.
#
# Usage: benches/nar.sh                     (RUNS=5, COLD_RUNS=5 by default)
#        RUNS=10 COLD_RUNS=0 benches/nar.sh
#        NAR_BENCH_TREE=target/nar-tree benches/nar.sh   (keep the tree)
# Needs: python3, cargo, ~1.1 GiB free in TMPDIR; installs hyperfine and
# nix-bin (apt) when missing.

set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
runs=${RUNS:-5}
cold_runs=${COLD_RUNS:-5}

# Tools.
missing=()
command -v hyperfine >/dev/null || missing+=(hyperfine)
command -v nix-store >/dev/null || missing+=(nix-bin)
if ((${#missing[@]})); then
    apt-get install -y "${missing[@]}"
fi
(cd "$root" && cargo build --release --quiet -p provenix-worker --example nar_hash)
ours_bin=$root/target/release/examples/nar_hash
# `nix hash` is an experimental command in Nix 2.8.
nix=(nix --extra-experimental-features nix-command)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# A kept tree (NAR_BENCH_TREE) is reused when its marker, beside it and so
# not hashed, says it was generated whole.
tree=${NAR_BENCH_TREE:-$work/tree}
marker=$tree.complete

# The generator. Changing it changes the expected hash below.
generate() {
    python3 - "$1" <<'EOF'
import os, random, sys
root = sys.argv[1]
rng = random.Random(20240604)
os.makedirs(root)
for a in range(20):
    for b in range(10):
        d = os.path.join(root, "src", f"d{a:02}", f"e{b:02}")
        os.makedirs(d)
        for c in range(100):
            p = os.path.join(d, f"f{c:03}.dat")
            with open(p, "wb") as f:
                f.write(rng.randbytes(rng.randint(1024, 16384)))
            if c % 10 == 0:
                os.chmod(p, 0o755)
        os.symlink(f"e{b:02}/f000.dat", os.path.join(root, "src", f"d{a:02}", f"link{b:02}"))
os.makedirs(os.path.join(root, "lib"))
for i, mib in enumerate([100, 150, 200, 200, 200]):
    with open(os.path.join(root, "lib", f"big{i}.bin"), "wb") as f:
        for _ in range(mib):
            f.write(rng.randbytes(1 << 20))
EOF
}
expected="sha256:10ai2pagch7ilyax1875smn01650c2cf1jkfhvhpf86zn3h65vm8 1068443328"

if [[ ! -f $marker ]]; then
    parent=$(dirname "$tree")
    mkdir -p "$parent"
    df -h "$parent"
    avail=$(df --output=avail -B1 "$parent" | tail -1)
    if ((avail < 2 * 1024 * 1024 * 1024)); then
        echo "nar.sh: less than 2 GiB free in $parent; set TMPDIR or NAR_BENCH_TREE" >&2
        exit 2
    fi
    rm -rf "$tree"
    echo "Generating the tree in $tree ..."
    generate "$tree"
    touch "$marker"
fi

# All three must agree before anything is timed.
ours_out=$("$ours_bin" "$tree")
dump_hex=$(nix-store --dump "$tree" | sha256sum | cut -d' ' -f1)
dump_size=$(nix-store --dump "$tree" | wc -c)
dump_out="sha256:$("${nix[@]}" hash to-base32 --type sha256 "$dump_hex") $dump_size"
hash_out="sha256:$("${nix[@]}" hash path --type sha256 --base32 "$tree")"
echo "provenix:                      $ours_out"
echo "nix-store --dump | sha256sum:  $dump_out"
echo "nix hash path:                 $hash_out"
if [[ $ours_out != "$dump_out" || ${ours_out% *} != "$hash_out" ]]; then
    echo "nar.sh: the hashes disagree" >&2
    exit 1
fi
if [[ $ours_out != "$expected" ]]; then
    echo "nar.sh: note: not the expected tree ($expected); the figures are still comparable" >&2
fi
echo

q() { printf '%q ' "$@"; }
ours_cmd=$(q "$ours_bin" "$tree")
dump_cmd="sh -c $(q "nix-store --dump $(q "$tree")| sha256sum")"
hash_cmd=$(q "${nix[@]}" hash path --type sha256 --base32 "$tree")

# hyperfine's CSV: command,mean,stddev,median,user,system,min,max (seconds).
ratios() {
    awk -F, 'NR > 1 { median[NR - 1] = $4; min[NR - 1] = $7 }
        END {
            printf "medians: provenix %.3f s, nix-store --dump | sha256sum %.3f s, nix hash path %.3f s\n", median[1], median[2], median[3]
            printf "ratios (median): dump|sha256sum / provenix = %.2fx, nix hash path / provenix = %.2fx\n", median[2] / median[1], median[3] / median[1]
            printf "ratios (min):    dump|sha256sum / provenix = %.2fx, nix hash path / provenix = %.2fx\n", min[2] / min[1], min[3] / min[1]
        }' "$1"
}

# 1. Warm page cache: after the warm-up run the whole tree is in memory
# (it is ~1 GiB and the machines have far more), so this times
# serialisation and hashing, not the disk.
echo "== warm page cache"
hyperfine -N --warmup 1 --runs "$runs" --export-csv "$work/warm.csv" \
    -n provenix "$ours_cmd" \
    -n "nix-store --dump | sha256sum" "$dump_cmd" \
    -n "nix hash path" "$hash_cmd"
ratios "$work/warm.csv"

# 2. Cold-ish: before every run, drop this tree's pages from the page cache
# (posix_fadvise DONTNEED on each file: no root, nothing else evicted). The
# reads then go to the virtual disk, which the host may still cache, so this
# is "cold-ish", not a cold disk.
if ((cold_runs > 0)); then
    evict=$work/evict.py
    cat >"$evict" <<'EOF'
import os, sys
for dirpath, _, files in os.walk(sys.argv[1]):
    for name in files:
        path = os.path.join(dirpath, name)
        if os.path.islink(path):
            continue
        fd = os.open(path, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
EOF
    echo
    echo "== cold-ish: the tree's pages dropped before each run"
    hyperfine -N --runs "$cold_runs" --prepare "python3 $evict $tree" \
        --export-csv "$work/cold.csv" \
        -n provenix "$ours_cmd" \
        -n "nix-store --dump | sha256sum" "$dump_cmd" \
        -n "nix hash path" "$hash_cmd"
    ratios "$work/cold.csv"
fi
