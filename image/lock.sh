#!/bin/sh
# Pin the packages of image/packages in image/packages.lock: for each, the
# version its suite has now, the .deb's sha256 and its path in the pool, read
# from the suite's Packages index, authenticated by the archive's signed
# InRelease (debian-archive-keyring). The image build reads only the lock.
#
#   image/lock.sh     (re)write image/packages.lock
#
# PROVENIX_DEBIAN_MIRROR: the archive (default http://deb.debian.org/debian).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
mirror=${PROVENIX_DEBIAN_MIRROR:-http://deb.debian.org/debian}
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
die() { echo "lock.sh: $*" >&2; exit 1; }
[ -f "$keyring" ] && command -v gpgv >/dev/null || die "needs gpgv and $keyring (debian-archive-keyring)"

# The suite's package index, checked against its signed InRelease.
index() {
    suite=$1
    [ -f "$tmp/$suite" ] && return 0
    curl -fsS -o "$tmp/InRelease" "$mirror/dists/$suite/InRelease" || die "cannot fetch $suite's InRelease"
    gpgv --keyring "$keyring" --output "$tmp/Release" "$tmp/InRelease" 2>/dev/null ||
        die "$suite's InRelease does not verify with $keyring"
    curl -fsS -o "$tmp/Packages.xz" "$mirror/dists/$suite/main/binary-amd64/Packages.xz" ||
        die "cannot fetch $suite's Packages.xz"
    want=$(awk '/^SHA256:/{s=1; next} /^[A-Za-z]/{s=0} s && $3=="main/binary-amd64/Packages.xz"{print $1}' "$tmp/Release")
    [ "$(sha256sum "$tmp/Packages.xz" | cut -d' ' -f1)" = "$want" ] || die "$suite's Packages.xz does not match its InRelease"
    xz -dc "$tmp/Packages.xz" >"$tmp/$suite"
}

{
    echo "# Written by image/lock.sh from image/packages: name version sha256 pool-path."
    echo "# The image build fetches each .deb from the archive (or takes it from"
    echo "# \$PROVENIX_IMAGE_DEBS) and refuses one whose sha256 differs."
    grep -v '^#' "$here/packages" | while read -r name suite; do
        [ -n "$name" ] || continue
        index "$suite"
        line=$(awk -v p="$name" '
            /^Package: /{ok=($2==p)} ok&&/^Version: /{v=$2} ok&&/^Filename: /{f=$2} ok&&/^SHA256: /{s=$2}
            /^$/{if (ok && v!="") {print v, s, f}; ok=0; v=""}' "$tmp/$suite" | sort -V | tail -n1)
        [ -n "$line" ] || die "$name is not in $suite"
        echo "$name $line"
    done
} >"$tmp/lock"
mv "$tmp/lock" "$here/packages.lock"
echo "wrote $here/packages.lock" >&2
