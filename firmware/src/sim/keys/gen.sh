#!/bin/sh
# Regenerate the simulated AMD CA keys and certificates (see README.md).
#
#   gen.sh               new RSA-4096 keys and new certificates
#   gen.sh --certs-only  keep the keys, re-sign the certificates (after a
#                        change to the certificate profile in ../chain.rs)
#
# Either way every fingerprint changes (RSASSA-PSS signatures are randomised),
# so the pinned fingerprints in README.md and in ../chain.rs's tests must be
# updated with the values printed at the end.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
workspace=$(cd "$here/../../../.." && pwd)
products="milan genoa turin"
# ARK signs ASK (VCEK signer) and ASVK (VLEK signer); one key per certificate,
# like AMD, so that a chain mixing products or ASK/ASVK does not verify.
roles="ark ask asvk"

case "${1:-}" in
    --certs-only) new_keys=false ;;
    "") new_keys=true ;;
    *) echo "usage: $0 [--certs-only]" >&2; exit 2 ;;
esac

for p in $products; do
    mkdir -p "$here/$p"
    for r in $roles; do
        if $new_keys; then
            # genpkey writes PKCS#1 (RSAPrivateKey) for -outform DER in
            # OpenSSL 3.0, and ring wants PKCS#8: convert explicitly.
            openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:4096 -quiet -outform PEM |
                openssl pkcs8 -topk8 -nocrypt -outform DER -out "$here/$p/$r.pk8"
        fi
        # ../chain.rs includes the certificates with include_bytes!, so they
        # must exist before the generator below can be compiled.
        [ -f "$here/$p/$r.der" ] || : >"$here/$p/$r.der"
    done
done

# The certificates are built by our own DER writer (so that they carry AMD's
# exact encodings, which `openssl x509` cannot produce: an explicit default
# PSS trailerField and a non-minimal KeyUsage BIT STRING) and signed by ring.
cd "$workspace"
PROVENIX_SIM_REGEN=1 cargo test -p provenix-firmware --features sim --lib -- \
    --ignored --exact sim::chain::tests::regenerate_ca_certificates

echo "SHA-256 fingerprints (DER):"
for p in $products; do
    for r in $roles; do
        printf '%s/%s.der  ' "$p" "$r"
        openssl dgst -sha256 -r "$here/$p/$r.der" | cut -d' ' -f1
    done
done
