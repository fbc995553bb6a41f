#!/bin/sh
# Fetch the Debian cloud kernel that the measured-boot VM tests boot, pinned
# by tests/vm/kernel.lock, into $PROVENIX_VM_DIR/kernel (default
# target/vm/kernel). Prints the directory. Does nothing when the kernel there
# already has the pinned sha256.
#
#   fetch-kernel.sh            fetch the pinned kernel (or reuse the cache)
#   fetch-kernel.sh --update   pin the kernel that linux-image-cloud-amd64
#                              depends on now, then fetch it
#
# Needs apt-get and dpkg-deb (Debian) and the network on a cache miss.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
lock="$here/kernel.lock"
repo=$(cd "$here/../.." && pwd)
vm_dir=${PROVENIX_VM_DIR:-${CARGO_TARGET_DIR:-$repo/target}/vm}
out="$vm_dir/kernel"

die() {
    echo "fetch-kernel.sh: $*" >&2
    exit 1
}

sha256() { sha256sum "$1" | cut -d' ' -f1; }

# Download PACKAGE=VERSION into the current directory; print the .deb's name.
download() {
    # apt drops privileges to _apt, which cannot write to a root-owned temporary
    # directory; the package is authenticated by apt either way.
    apt-get -q -o APT::Sandbox::User=root download "$1=$2" >&2 ||
        die "apt-get download $1=$2 failed (is it still in the archive? see tests/vm/README.md)"
    ls ./*.deb
}

if [ "${1:-}" = "--update" ]; then
    package=$(apt-cache depends linux-image-cloud-amd64 |
        sed -n 's/^ *Depends: \(linux-image-[^ ]*-cloud-amd64\)$/\1/p' | head -n1)
    [ -n "$package" ] || die "linux-image-cloud-amd64 depends on no linux-image-*-cloud-amd64"
    version=$(apt-cache show --no-all-versions "$package" | sed -n 's/^Version: //p' | head -n1)
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    (cd "$tmp" && download "$package" "$version" >/dev/null)
    deb=$(ls "$tmp"/*.deb)
    dpkg-deb -x "$deb" "$tmp/x"
    cat >"$lock" <<EOF
# The Debian cloud kernel the measured-boot VM tests boot; written by
# fetch-kernel.sh --update (see README.md). The sha256s pin the package and
# the vmlinuz in it.
PACKAGE=$package
VERSION=$version
DEB_SHA256=$(sha256 "$deb")
VMLINUZ_SHA256=$(sha256 "$tmp/x/boot/vmlinuz-${package#linux-image-}")
EOF
    rm -rf "$tmp"
    trap - EXIT
    echo "pinned $package $version in $lock" >&2
fi

[ -f "$lock" ] || die "no $lock; run fetch-kernel.sh --update"
. "$lock"

if [ -f "$out/vmlinuz" ] && [ -f "$out/config" ] &&
    [ "$(sha256 "$out/vmlinuz")" = "$VMLINUZ_SHA256" ]; then
    echo "$out"
    exit 0
fi

command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null ||
    die "apt-get and dpkg-deb are needed to fetch $PACKAGE"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
deb=$(cd "$tmp" && download "$PACKAGE" "$VERSION")
[ "$(sha256 "$tmp/$deb")" = "$DEB_SHA256" ] ||
    die "$deb has sha256 $(sha256 "$tmp/$deb"), kernel.lock pins $DEB_SHA256"
dpkg-deb -x "$tmp/$deb" "$tmp/x"
release=${PACKAGE#linux-image-}
[ "$(sha256 "$tmp/x/boot/vmlinuz-$release")" = "$VMLINUZ_SHA256" ] ||
    die "vmlinuz-$release in $deb does not have the pinned sha256"

# The VM reaches swtpm through QEMU's tpm-tis (and tpm-crb) device. The
# initrd loads no modules, so the drivers must be built in; a kernel that has
# them as modules needs them added to the initrd (tests/support/vm.rs).
for option in CONFIG_TCG_TPM CONFIG_TCG_TIS CONFIG_TCG_CRB CONFIG_SECURITYFS CONFIG_EFI_STUB; do
    grep -qx "$option=y" "$tmp/x/boot/config-$release" ||
        die "$PACKAGE does not have $option=y; the initrd would need its modules"
done

mkdir -p "$out"
cp "$tmp/x/boot/vmlinuz-$release" "$out/vmlinuz.new"
cp "$tmp/x/boot/config-$release" "$out/config"
printf '%s %s\n' "$PACKAGE" "$VERSION" >"$out/VERSION"
# Last, so an interrupted fetch is never taken for a complete one.
mv "$out/vmlinuz.new" "$out/vmlinuz"
echo "$out"
