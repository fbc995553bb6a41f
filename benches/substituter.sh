#!/usr/bin/env bash
# `provenix substituter`, side by side in one run:
#
# - narinfo decisions per second and their latency (median, p99), cold (the
#   first request for each path: its bundle read from the upstream cache,
#   verified, decided, the narinfo signed) and cached (the same requests
#   again), over PATHS store paths a simulated worker built and exported;
# - a NAR of NAR_MIB MiB: Nix (`nix-store --realise` into an empty store)
#   substituting it through the substituter against the same Nix fetching
#   the worker's cache directly, and the raw HTTP transfer alone.
#
# The substituter reads one file:// cache (the worker's export), so the
# figures are its own cost, not a network's. One HTTP/1.1 connection, one
# request at a time (what Nix's narinfo queries look like to a cache).
#
# Usage: benches/substituter.sh            (PATHS=500 NAR_MIB=256 by default)
# Needs root (a writable /nix/store), python3 and curl; installs nix-bin.

set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
npaths=${PATHS:-500}
nar_mib=${NAR_MIB:-256}
[[ $(id -u) -eq 0 ]] || { echo "benches/substituter.sh: needs root (a writable /nix/store)" >&2; exit 2; }
command -v nix-store >/dev/null || apt-get install -y nix-bin
(cd "$root" && cargo build --release --quiet -p provenix-worker --bin provenix-worker -p provenix-cli --bin provenix)
worker=$root/target/release/provenix-worker
provenix=$root/target/release/provenix

work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

# Fresh outputs each run (a nonce in the names), registered now.
nonce=$(date +%s%N)
small="builtins.genList (i: derivation { name = \"provenix-subst-bench-$nonce-\${toString i}\"; system = builtins.currentSystem; builder = \"/bin/sh\"; args = [ \"-c\" \"echo provenix substituter bench \${toString i} > \$out\" ]; }) $npaths"
big="[ (derivation { name = \"provenix-subst-bench-$nonce-big\"; system = builtins.currentSystem; builder = \"/bin/sh\"; args = [ \"-c\" \"PATH=/usr/bin:/bin; head -c $((nar_mib << 20)) /dev/urandom > \$out\" ]; }) ]"
mapfile -t drvs < <(nix-instantiate --expr "$small"; nix-instantiate --expr "$big")
mapfile -t paths < <(nix-store --option sandbox false --option substituters "" \
    --option post-build-hook "" --realise "${drvs[@]}" 2>/dev/null)
big_path=${paths[-1]}
echo "built: ${#paths[@]} store paths ($npaths small, one of $nar_mib MiB)"

"$worker" serve --state "$work/state" --socket "$work/hook.sock" --platform sim \
    --checkpoint-ms 200 2> "$work/worker.log" &
pids+=($!)
for _ in $(seq 1 200); do [[ -S $work/hook.sock ]] && break; sleep 0.05; done
for i in "${!drvs[@]}"; do
    DRV_PATH=${drvs[$i]} OUT_PATHS=${paths[$i]} "$worker" hook --socket "$work/hook.sock" > /dev/null
done
"$worker" export --socket "$work/hook.sock" --out "$work/cache" --cache "$work/cache" \
    "${paths[@]}" > "$work/export.txt"
worker_key=$(sed -n 's/^trusted-public-keys = //p' "$work/export.txt" | head -n1)

# The simulator's test roots, and its launch measurement (all zeros: it
# launches no image), as `./run demo` writes them; one builder suffices.
{
    echo "trust_amd_roots = false"
    "$worker" sim-roots | while read -r product fp; do
        printf '[[roots]]\nname = "sim"\nproduct = "%s"\nsha256 = "%s"\n' "$product" "$fp"
    done
    printf '[snp]\nmeasurements = ["%s"]\n' "$(printf '0%.0s' $(seq 96))"
} > "$work/policy.toml"

"$provenix" substituter --listen 127.0.0.1:0 --policy "$work/policy.toml" \
    --secret-key "$work/substituter.key" --upstream "file://$work/cache" \
    --checkpoint-cache "$work/memory" > "$work/substituter.out" 2> "$work/substituter.log" &
pids+=($!)
for _ in $(seq 1 200); do grep -q '^trusted-public-keys' "$work/substituter.out" 2>/dev/null && break; sleep 0.05; done
url=$(sed -n 's/^substituter: //p' "$work/substituter.out")
sub_key=$(sed -n 's/^trusted-public-keys = //p' "$work/substituter.out")
echo "substituter: $url"

python3 - "$url" "$big_path" "${paths[@]:0:$npaths}" <<'EOF'
import http.client, statistics, sys, time, urllib.parse
url, big, paths = sys.argv[1], sys.argv[2], sys.argv[3:]
u = urllib.parse.urlparse(url)
conn = http.client.HTTPConnection(u.hostname, u.port)
def get(path):
    conn.request("GET", path)
    r = conn.getresponse()
    body = r.read()
    return r.status, body
def narinfos():
    lat = []
    for p in paths:
        h = p[len("/nix/store/"):][:32]
        t = time.perf_counter()
        status, _ = get(f"/{h}.narinfo")
        lat.append(time.perf_counter() - t)
        assert status == 200, (p, status)
    return lat
for name in ("cold", "cached"):
    lat = narinfos()
    lat_sorted = sorted(lat)
    p99 = lat_sorted[min(len(lat) - 1, int(len(lat) * 0.99))]
    print(f"narinfo {name:6}: {len(lat)} decisions, {len(lat) / sum(lat):8.1f}/s, "
          f"median {statistics.median(lat) * 1e3:7.3f} ms, p99 {p99 * 1e3:7.3f} ms")
h = big[len("/nix/store/"):][:32]
status, narinfo = get(f"/{h}.narinfo")
assert status == 200
nar_url = next(l.split(": ", 1)[1] for l in narinfo.decode().splitlines() if l.startswith("URL: "))
t = time.perf_counter()
status, body = get("/" + nar_url)
dt = time.perf_counter() - t
assert status == 200
print(f"NAR over HTTP alone: {len(body) / dt / 2**20:8.1f} MiB/s ({len(body)} bytes in {dt:.2f} s)")
EOF

# Nix fetching the NAR: through the substituter, and from the cache itself.
realise() {
    local store=$1 substituter=$2 key=$3 t0
    t0=$(date +%s.%N)
    nix-store --store "$store" --option substituters "$substituter" \
        --option trusted-public-keys "$key" --option require-sigs true \
        --realise "$big_path" > /dev/null 2>&1
    python3 -c "import sys; print(f'{float(sys.argv[1]) - float(sys.argv[2]):.2f}')" "$(date +%s.%N)" "$t0"
}
via=$(realise "$work/store-via" "$url" "$sub_key")
direct=$(realise "$work/store-direct" "file://$work/cache" "$worker_key")
python3 - "$nar_mib" "$via" "$direct" <<'EOF'
import sys
mib, via, direct = (float(a) for a in sys.argv[1:])
print(f"nix-store --realise of the {mib:.0f} MiB path: through the substituter {via:.2f} s "
      f"({mib / via:.0f} MiB/s), from the cache directly {direct:.2f} s ({mib / direct:.0f} MiB/s); "
      f"time ratio {via / direct:.2f}")
EOF
