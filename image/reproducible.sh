#!/usr/bin/env bash
# Rebuild the image of the checked-out commit from a second clone, in
# another directory, under another umask, time zone, locale, host name (as
# root) and parallelism, and compare every file with the image in DIR.
# On a difference, name the file and show where it differs (diffoscope).
#
#   image/reproducible.sh DIR     DIR: what `./run image` wrote (target/image)
#
# The second build shares the Cargo target directory of the first
# (PROVENIX_IMAGE_TARGET, CARGO_TARGET_DIR), so dependencies built from the
# registry are reused and the workspace's own crates are rebuilt from the
# other clone. benches/reprotest.sh varies everything, from scratch.
set -euo pipefail
first=$(cd "${1:?usage: image/reproducible.sh DIR}" && pwd)
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
    echo "image/reproducible.sh: the tree has uncommitted changes; a clone would not have them" >&2
    exit 2
fi
commit=$(git rev-parse HEAD)
[ "$(jq -r .commit "$first/inputs.json" 2>/dev/null || sed -n 's/^  "commit": "\(.*\)",$/\1/p' "$first/inputs.json")" = "$commit" ] || {
    echo "image/reproducible.sh: $first is not the image of $commit; run ./run image first" >&2
    exit 2
}
work=$(mktemp -d "${TMPDIR:-/tmp}/provenix-reproducible.XXXXXX")
trap 'rm -rf "$work"' EXIT
clone="$work/a/much/longer/path/to/another/checkout"
mkdir -p "$(dirname "$clone")"
git clone --quiet --no-hardlinks "$repo" "$clone"
git -C "$clone" checkout --quiet "$commit"

vary=(env TZ=Pacific/Kiritimati LANG=C LC_ALL=C CARGO_BUILD_JOBS=1 HOME="$HOME"
    PROVENIX_IMAGE_TARGET="${PROVENIX_IMAGE_TARGET:-$repo/target/image-build}"
    CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}"
    PROVENIX_IMAGE_DEBS="${PROVENIX_IMAGE_DEBS:-$repo/target/image-debs}")
build() { (umask 077 && cd "$clone" && "${vary[@]}" ./run image --out "$work/second"); }
started=$SECONDS
if [ "$(id -u)" -eq 0 ] && command -v unshare >/dev/null; then
    # Another host name, in a UTS namespace of its own.
    export -f build
    export clone work
    unshare --uts bash -c "hostname provenix-elsewhere && $(declare -p vary); build"
else
    echo "image/reproducible.sh: not root: the host name is not varied" >&2
    build
fi
echo "==> second build from $clone: $((SECONDS - started)) s"

status=0
for f in "$first"/*; do
    name=$(basename "$f")
    if ! cmp -s "$f" "$work/second/$name"; then
        status=1
        echo "DIFFERS: $name ($(cmp "$f" "$work/second/$name" 2>&1 | head -n1))" >&2
        if command -v diffoscope >/dev/null; then
            diffoscope --text - "$f" "$work/second/$name" | head -n 200 >&2 || true
        fi
    fi
done
for f in "$work/second"/*; do
    [ -e "$first/$(basename "$f")" ] || { status=1; echo "ONLY IN THE SECOND BUILD: $(basename "$f")" >&2; }
done
if [ "$status" -eq 0 ]; then
    echo "==> reproducible: $(ls "$first" | wc -l) files identical, sha256 of manifest.json $(sha256sum "$first/manifest.json" | cut -d' ' -f1)"
fi
exit "$status"
