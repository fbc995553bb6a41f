#!/usr/bin/env bash
# The Reproducible Builds project's own check of the worker image: Debian's
# reprotest builds `./run image` twice from a fresh clone of HEAD, the second
# time varying what it can here (build path, environment,
# time zone, locale, umask, home directory, number of CPUs, ASLR, executable
# path), and compares the images with diffoscope.
#
#   benches/reprotest.sh            prints reprotest's verdict
#
# Not varied: time (under faketime, rustc -vV hangs: cargo never starts; the
# image takes its time from SOURCE_DATE_EPOCH and writes no other),
# user_group and domain_host (need extra users or sudo configuration),
# fileordering (needs FUSE), kernel (personality(2) is not a difference that
# reaches the outputs). Both builds are from scratch (their
# own Cargo target directories); they share the .deb cache, which is pinned
# by sha256, and the Cargo and rustup homes, named outside HOME so that the
# home variation cannot hide the toolchain. Expect about twice a cold
# `./run image`.
set -euo pipefail
# The artifacts are not written to image/: reprotest removes whatever the
# artifact pattern matches from the source before it builds.
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
command -v reprotest >/dev/null || {
    echo "==> installing reprotest and diffoscope (Debian)"
    sudo_=""; [ "$(id -u)" -eq 0 ] || sudo_=sudo
    $sudo_ apt-get install -y -qq reprotest diffoscope-minimal faketime
}
[ -z "$(git status --porcelain --untracked-files=no)" ] ||
    echo "benches/reprotest.sh: uncommitted changes are not in the clone it builds" >&2
work=$(mktemp -d "${TMPDIR:-/tmp}/provenix-reprotest.XXXXXX")
trap 'rm -rf "$work"' EXIT
git clone --quiet --no-hardlinks "$repo" "$work/src"
debs=${PROVENIX_IMAGE_DEBS:-$repo/target/image-debs}
cargo_home=${CARGO_HOME:-$HOME/.cargo}
rustup_home=${RUSTUP_HOME:-$HOME/.rustup}
started=$SECONDS
reprotest --min-cpus=2 \
    --variations=+all,-time,-user_group,-domain_host,-fileordering,-kernel \
    --store-dir="$work/store" \
    -c "env PATH=$cargo_home/bin:/usr/sbin:/usr/bin:/sbin:/bin CARGO_HOME=$cargo_home RUSTUP_HOME=$rustup_home PROVENIX_IMAGE_DEBS=$debs ./run image --out built" \
    "$work/src" 'built/*' -- null
echo "==> reprotest passed in $((SECONDS - started)) s"
