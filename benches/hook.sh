#!/usr/bin/env bash
# Hook submissions through the daemon's socket with durable appends: 1 and
# 8 concurrent clients, statements per second and p50/p99 latency of one
# submission (send, hash, sign, group-commit append with fdatasync, ack).
#
# The daemon is `provenix-worker serve` (release build) on the simulated
# platform, with its state in a temporary directory on the same disk as
# TMPDIR. The load is the `hook_load` example: each client thread keeps one
# connection and sends one submission (one output) at a time, waiting for
# its acknowledgement, round-robin over small store paths (one file each,
# built by Nix from one expression of PATHS derivations: the daemon signs
# only what this machine's Nix built since boot, with its deriver), so NAR
# hashing does not dominate.
#
# Phases, in one run:
#   cold:  the first submission of each path (the daemon runs
#          `nix-store --query --references` once per path and remembers
#          the answer by path and NAR hash)
#   1, 8:  SECONDS seconds each with warm reference caches (8: the
#          daemon's limit of connections per client process; Nix runs
#          one hook process per build)
#
# Usage: benches/hook.sh                 (PATHS=256 SECONDS_PER_RUN=5 by default)
#        SECONDS_PER_RUN=10 benches/hook.sh
# Needs: cargo, nix-store (installs nix-bin with apt when missing).

set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
npaths=${PATHS:-256}
secs=${SECONDS_PER_RUN:-5}

command -v nix-store >/dev/null || apt-get install -y nix-bin
(cd "$root" && cargo build --release --quiet -p provenix-worker --bin provenix-worker --example hook_load)
worker=$root/target/release/provenix-worker
load=$root/target/release/examples/hook_load

work=$(mktemp -d)
pid=
cleanup() {
    if [[ -n $pid ]]; then kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

# A nonce in the names: each run builds fresh outputs, registered now.
nonce=$(date +%s%N)
expr="builtins.genList (i: derivation { name = \"provenix-hook-bench-$nonce-\${toString i}\"; system = builtins.currentSystem; builder = \"/bin/sh\"; args = [ \"-c\" \"echo provenix hook bench \${toString i} > \$out\" ]; }) $npaths"
mapfile -t drvs < <(nix-instantiate --expr "$expr")
mapfile -t paths < <(nix-store --option sandbox false --option substituters "" \
    --option post-build-hook "" --realise "${drvs[@]}" 2>/dev/null)
echo "store paths: ${#paths[@]} small files built by nix"

"$worker" serve --state "$work/state" --socket "$work/hook.sock" --platform sim \
    2> "$work/daemon.log" &
pid=$!
for _ in $(seq 1 200); do
    [[ -S $work/hook.sock ]] && break
    sleep 0.05
done
[[ -S $work/hook.sock ]] || { cat "$work/daemon.log"; exit 1; }

echo "cold (first submission of each path, 1 client):"
"$load" --socket "$work/hook.sock" --clients 1 --passes 1 "${paths[@]}"
for clients in 1 8; do
    "$load" --socket "$work/hook.sock" --clients "$clients" --seconds "$secs" "${paths[@]}"
done

kill -TERM "$pid"
wait "$pid"
pid=
echo "daemon stopped cleanly; log of $(ls "$work/state/logs" | head -1 | cut -c1-16): $(wc -c < "$work/state/logs"/*/log/entries) bytes"
