//! Nix binary-cache signatures: the worker key K signs each output's
//! narinfo fingerprint (DESIGN.md, "The binding", step 4), so plain Nix
//! (`nix store verify --trusted-public-keys`, substitution with
//! `require-sigs`) accepts the path under the worker's key, with no Provenix
//! code on the user's side.
//!
//! It lives in the verifier, which checks the Nix signature a statement
//! carries ([`crate::Statement::check_nix_signature`]) and, later, narinfo
//! against statements; the worker signs and writes binary caches with it.
//!
//! The formats are Nix 2.8's, checked against that release in
//! `worker/tests/nixsig.rs`:
//!
//! - Fingerprint (`ValidPathInfo::fingerprint`, `src/libstore/path-info.cc`):
//!   `1;<store path>;sha256:<nix32 NAR hash>;<NAR size>;<references>`, the
//!   references as full store paths, sorted as bytes (a `std::set` of
//!   strings), comma-separated. Nix refuses a NAR size of 0 ("size is not
//!   known"). A self-reference is listed like any other.
//! - Keys (`src/libstore/crypto.cc`): `<name>:<base64 key>`, split at the
//!   first `:`. A public key is the 32-byte Ed25519 key; a secret key is
//!   libsodium's 64-byte layout, seed then public key. The worker's key is a
//!   ring [`Ed25519KeyPair`] that never leaves memory, so only the public
//!   line is written here.
//! - Signature (`SecretKey::signDetached`): `<key name>:<base64 signature>`,
//!   a detached Ed25519 signature (RFC 8032) over the fingerprint's bytes.
//!   Nix looks the verifying key up by the name before the `:`.
//! - base64 (`base64Encode`, `src/libutil/util.cc`): RFC 4648 section 4,
//!   standard alphabet, with `=` padding. Nix's decoder is lax: Nix 2.8's
//!   `nix store verify` accepts a signature without its padding, or with
//!   anything after the first `=` (`...Cg==` as `...Cg` or `...Cg=A`), so
//!   one signature has many texts. [`verify`] accepts only the canonical
//!   text Nix writes.
//! - narinfo (`NarInfo::to_string`, `src/libstore/nar-info.cc`): see
//!   [`narinfo`].
//!
//! Key names must not contain `:` (Nix splits there) nor whitespace (the
//! `trusted-public-keys` setting is a whitespace-separated list, and a
//! narinfo ends a field at a newline); [`worker_key_name`] gives the name the
//! worker uses.
//!
//! K also signs statements (COSE_Sign1) and log checkpoints (signed notes).
//! A fingerprint cannot be mistaken for either: COSE signs a CBOR array
//! (first byte 0x84) and a note is newline-terminated lines, while a
//! fingerprint starts with `1;/` and holds no newline. [`sign`] therefore
//! only takes a [`Fingerprint`], which only [`fingerprint`] makes, from
//! inputs it has checked.

#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions
)]

use std::fmt;

use ring::signature::{ED25519, Ed25519KeyPair, UnparsedPublicKey};

use crate::error::Error;

/// The store directory. The fingerprint names full paths, so a path in
/// another store directory is another path; the worker builds for the
/// default store only.
pub const STORE_DIR: &str = "/nix/store";

/// Length of a store path's hash part: 160 bits in Nix's base 32
/// (`StorePath::HashLen`, `src/libstore/path.hh`).
const HASH_LEN: usize = 32;

/// Longest store path name (`StorePath::MaxPathLen`, `src/libstore/path.hh`).
const MAX_NAME_LEN: usize = 211;

/// Longest key name accepted. Nix sets no limit; 128 bytes is far above any
/// name in use (`cache.nixos.org-1`, `provenix-` and 16 hex digits) and
/// bounds a line read from an untrusted narinfo.
pub const MAX_KEY_NAME_LEN: usize = 128;

/// Ed25519 public key length (RFC 8032 section 5.1.5;
/// `crypto_sign_PUBLICKEYBYTES`).
const PUBLIC_KEY_LEN: usize = 32;

/// Ed25519 signature length (RFC 8032 section 5.1.6; `crypto_sign_BYTES`).
const SIGNATURE_LEN: usize = 64;

pub use crate::error::NixFailure;

impl fmt::Display for NixFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NixFailure::StorePath {
                field,
                reason,
                value,
                ..
            } => write!(
                f,
                "{field} {value:?} is not a store path in {STORE_DIR}: {reason}"
            ),
            NixFailure::EmptyNar => write!(
                f,
                "NAR size 0 is not the size of any NAR (Nix reads it as unknown)"
            ),
            NixFailure::KeyName { name, reason, .. } => write!(f, "key name {name:?}: {reason}"),
            NixFailure::Malformed { reason, what, .. } => {
                write!(f, "{what} is not \"<name>:<base64>\": {reason}")
            }
            NixFailure::Length {
                expected,
                found,
                what,
                ..
            } => write!(f, "{what} holds {found} bytes, expected {expected}"),
            NixFailure::NameMismatch { key, signature, .. } => {
                write!(f, "the signature is by key {signature:?}, not by {key:?}")
            }
            NixFailure::BadSignature { name, .. } => write!(
                f,
                "the signature by {name:?} does not verify over the fingerprint"
            ),
        }
    }
}

impl std::error::Error for NixFailure {}

/// A narinfo fingerprint made by [`fingerprint`] from checked inputs: the
/// only text [`sign`] signs.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Fingerprint(String);

impl Fingerprint {
    /// The fingerprint text, the bytes that are signed.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<Fingerprint> for String {
    fn from(fingerprint: Fingerprint) -> String {
        fingerprint.0
    }
}

/// The fingerprint Nix signs for `store_path` whose NAR has SHA-256
/// `sha256` and `size` bytes: `1;<store path>;<NarHash>;<NarSize>;
/// <references>`. `references` are full store paths (the self
/// reference included, if the path has one), in any order and possibly
/// repeated: Nix holds them in a set, so they are sorted and deduplicated.
pub fn fingerprint(
    store_path: &str,
    sha256: &[u8; 32],
    size: u64,
    references: &[String],
) -> Result<Fingerprint, Error> {
    check_store_path("store path", store_path)?;
    if size == 0 {
        return Err(NixFailure::EmptyNar.into());
    }
    let references = sorted_references(references)?;
    Ok(Fingerprint(format!(
        "1;{store_path};{};{size};{}",
        nar_hash(sha256),
        references.join(",")
    )))
}

/// The name the worker signs under: `provenix-` and the first 16 hex
/// digits (64 bits) of its public key K. A fresh K each boot gives a fresh
/// name, so a verifier configured with several workers' keys finds each by
/// name; the full key is what it trusts.
pub fn worker_key_name(public_key: &[u8; 32]) -> String {
    let hex = hex::encode(public_key.get(..8).unwrap_or_default());
    format!("provenix-{hex}")
}

/// The worker key's public line, `<worker_key_name>:<base64 key>`: what a
/// user puts in `trusted-public-keys` to accept the worker's `Sig:` lines.
/// The name is always valid, so this cannot fail.
pub fn worker_key_line(public_key: &[u8; 32]) -> String {
    format!(
        "{}:{}",
        worker_key_name(public_key),
        base64_encode(public_key)
    )
}

/// The public key as Nix's `trusted-public-keys` setting and
/// `nix key convert-secret-to-public` write it: `<name>:<base64 key>`.
pub fn public_key_line(name: &str, public_key: &[u8; 32]) -> Result<String, Error> {
    check_key_name(name)?;
    Ok(format!("{name}:{}", base64_encode(public_key)))
}

/// The narinfo `Sig:` value of `key` over `fingerprint`:
/// `<name>:<base64 signature>`. Ed25519 is deterministic, so this equals
/// what `nix store sign` writes with the same key.
pub fn sign(name: &str, key: &Ed25519KeyPair, fingerprint: &Fingerprint) -> Result<String, Error> {
    check_key_name(name)?;
    let signature = key.sign(fingerprint.as_str().as_bytes());
    Ok(format!("{name}:{}", base64_encode(signature.as_ref())))
}

/// Check that `sig_line` (a narinfo `Sig:` value) is a valid signature over
/// `fingerprint` by the key `public_key_line`. Both must be canonical
/// `<name>:<base64>` as Nix writes them, and name the same key: Nix finds
/// the verifying key by the signature's name.
pub fn verify(
    sig_line: &str,
    public_key_line: &str,
    fingerprint: &Fingerprint,
) -> Result<(), Error> {
    let (key_name, public_key) = parse_line("public key", public_key_line, PUBLIC_KEY_LEN)?;
    let (sig_name, signature) = parse_line("signature", sig_line, SIGNATURE_LEN)?;
    if sig_name != key_name {
        return Err(NixFailure::NameMismatch {
            signature: sig_name.to_owned(),
            key: key_name.to_owned(),
        }
        .into());
    }
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(fingerprint.as_str().as_bytes(), &signature)
        .map_err(|_| {
            NixFailure::BadSignature {
                name: sig_name.to_owned(),
            }
            .into()
        })
}

/// Check that `line` is a public key as Nix writes one (`name:base64` of
/// 32 bytes).
pub fn check_public_key_line(line: &str) -> Result<(), Error> {
    parse_line("public key", line, PUBLIC_KEY_LEN)
        .map(|_| ())
        .map_err(Error::from)
}

/// The narinfo a Nix binary cache serves for `store_path`, whose NAR has
/// SHA-256 `sha256` and `size` bytes, with its NAR
/// stored uncompressed, byte for byte as Nix 2.8 writes it
/// (`nix copy --to 'file://...?compression=none'`, then `nix store sign`):
///
/// ```text
/// StorePath: /nix/store/<hash>-<name>
/// URL: nar/<nix32 NAR sha256>.nar
/// Compression: none
/// FileHash: sha256:<nix32>          -- uncompressed: the NAR hash
/// FileSize: <NAR size>
/// NarHash: sha256:<nix32>
/// NarSize: <NAR size>
/// References: <base names, sorted, space-separated>
/// Deriver: <base name of the .drv>  -- when known
/// Sig: <name>:<base64>              -- one line each, sorted
/// ```
///
/// `References:` is written even when empty (Nix writes `References: `
/// with its trailing space). A content-addressed path's `CA:` line is not
/// written: the worker publishes the outputs it built, which are input
/// addressed. Every signature must be a well-formed `<name>:<base64>` line;
/// whether it verifies is not checked here.
pub fn narinfo(
    store_path: &str,
    sha256: &[u8; 32],
    size: u64,
    references: &[String],
    deriver: Option<&str>,
    sigs: &[String],
) -> Result<String, Error> {
    check_store_path("store path", store_path)?;
    if size == 0 {
        return Err(NixFailure::EmptyNar.into());
    }
    let references = sorted_references(references)?;
    let deriver = deriver
        .map(|deriver| check_store_path("deriver", deriver))
        .transpose()?;
    let mut sigs: Vec<&str> = sigs.iter().map(String::as_str).collect();
    for sig in &sigs {
        parse_line("signature", sig, SIGNATURE_LEN)?;
    }
    sigs.sort_unstable();
    sigs.dedup();

    let hash = nix32(sha256);
    let short_refs: Vec<&str> = references
        .iter()
        .map(|reference| base_name(reference))
        .collect();
    let mut text = format!(
        "StorePath: {store_path}\n\
         URL: nar/{hash}.nar\n\
         Compression: none\n\
         FileHash: sha256:{hash}\n\
         FileSize: {size}\n\
         NarHash: sha256:{hash}\n\
         NarSize: {size}\n\
         References: {}\n",
        short_refs.join(" ")
    );
    if let Some(deriver) = deriver {
        text.push_str(&format!("Deriver: {deriver}\n"));
    }
    for sig in sigs {
        text.push_str(&format!("Sig: {sig}\n"));
    }
    Ok(text)
}

/// `bytes` in Nix's base 32, as `printHash32` in Nix's
/// `src/libutil/hash.cc` writes it: the alphabet omits e, o, u and t, and
/// the bytes are read as one little-endian number whose 5-bit digits are
/// written most significant first. A SHA-256 hash gives 52 characters.
pub fn nix32(bytes: &[u8]) -> String {
    // `base32Chars` in hash.cc.
    const ALPHABET: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";
    // Take 5-bit digits from the least significant end (the first byte's low
    // bits), then reverse: printHash32 starts from the most significant one.
    let mut digits = Vec::with_capacity(bytes.len().saturating_mul(8).div_ceil(5));
    let mut acc: u16 = 0;
    let mut bits: u32 = 0;
    for &byte in bytes {
        acc |= u16::from(byte).checked_shl(bits).unwrap_or(0);
        bits = bits.saturating_add(8);
        while bits >= 5 {
            digits.push(acc & 0x1f);
            acc >>= 5;
            bits = bits.saturating_sub(5);
        }
    }
    if bits > 0 {
        digits.push(acc & 0x1f);
    }
    digits
        .iter()
        .rev()
        .map(|&d| char::from(ALPHABET.get(usize::from(d)).copied().unwrap_or(b'?')))
        .collect()
}

/// A NAR hash as Nix writes it in narinfo (`NarHash:`) and in fingerprints:
/// `sha256:` and the hash in Nix's base 32.
pub fn nar_hash(sha256: &[u8; 32]) -> String {
    format!("sha256:{}", nix32(sha256))
}

/// Check every reference and return them sorted as bytes, without
/// duplicates (Nix's `std::set<std::string>` order).
fn sorted_references(references: &[String]) -> Result<Vec<&str>, NixFailure> {
    let mut sorted = Vec::with_capacity(references.len());
    for reference in references {
        check_store_path("reference", reference)?;
        sorted.push(reference.as_str());
    }
    sorted.sort_unstable();
    sorted.dedup();
    Ok(sorted)
}

/// `path` without the store directory. Only called on checked paths.
fn base_name(path: &str) -> &str {
    path.rsplit_once('/').map_or(path, |(_, base)| base)
}

/// Check that `path` is `<STORE_DIR>/<hash>-<name>` exactly as Nix prints a
/// store path (`Store::parseStorePath` and `StorePath::StorePath`,
/// `src/libstore/path.cc`), and return its base name. The name's
/// characters exclude `,`, `;`, whitespace and `/`, which is what keeps a
/// fingerprint and a narinfo unambiguous.
fn check_store_path<'a>(field: &'static str, path: &'a str) -> Result<&'a str, NixFailure> {
    let bad = |reason| NixFailure::StorePath {
        field,
        value: path.to_owned(),
        reason,
    };
    let base = path
        .strip_prefix(STORE_DIR)
        .and_then(|rest| rest.strip_prefix('/'))
        .ok_or_else(|| bad("it does not start with the store directory and '/'"))?;
    if base.contains('/') {
        return Err(bad("it is not directly in the store directory"));
    }
    let (hash, name) = match (base.get(..HASH_LEN), base.get(HASH_LEN..)) {
        (Some(hash), Some(rest)) => (hash, rest),
        _ => return Err(bad("its base name is shorter than the 32-character hash")),
    };
    // base32Chars in src/libutil/hash.cc: digits and lower-case letters but
    // e, o, u and t.
    if !hash
        .bytes()
        .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'z') && !matches!(c, b'e' | b'o' | b'u' | b't'))
    {
        return Err(bad("its hash part is not Nix base 32"));
    }
    let name = name
        .strip_prefix('-')
        .ok_or_else(|| bad("its hash part is not followed by '-'"))?;
    check_name(name).map_err(bad)?;
    Ok(base)
}

/// Nix's rule for store path names (`checkName`, `src/libstore/path.cc`).
/// Nix 2.8 allows any name of these characters; later releases also refuse
/// `.` and `..` as the first dash-separated component, and so does this.
fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("its name is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return Err("its name is longer than 211 characters");
    }
    let first = name.split('-').next().unwrap_or_default();
    if first == "." || first == ".." {
        return Err("its name starts with the component '.' or '..'");
    }
    if !name
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.' | b'_' | b'?' | b'='))
    {
        return Err("its name holds a character other than A-Z a-z 0-9 + - . _ ? =");
    }
    Ok(())
}

/// A key name Nix keeps whole: not empty, at most [`MAX_KEY_NAME_LEN`]
/// bytes, printable ASCII without `:` or space.
fn check_key_name(name: &str) -> Result<(), NixFailure> {
    let bad = |reason| NixFailure::KeyName {
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() {
        return Err(bad("it is empty (Nix refuses an empty key name)"));
    }
    if name.len() > MAX_KEY_NAME_LEN {
        return Err(bad("it is longer than 128 bytes"));
    }
    if name.contains(':') {
        return Err(bad("it contains ':', where Nix splits name from key"));
    }
    if !name.bytes().all(|c| c.is_ascii_graphic()) {
        return Err(bad(
            "it holds whitespace, a control character or non-ASCII, which \
             trusted-public-keys and narinfo lines would split",
        ));
    }
    Ok(())
}

/// Split `<name>:<base64>` and decode the key or signature, which must be
/// `len` bytes.
fn parse_line<'a>(
    what: &'static str,
    line: &'a str,
    len: usize,
) -> Result<(&'a str, Vec<u8>), NixFailure> {
    let malformed = |reason| NixFailure::Malformed { what, reason };
    let (name, encoded) = line.split_once(':').ok_or(malformed("no ':'"))?;
    check_key_name(name)?;
    let bytes = base64_decode(encoded).ok_or(malformed("not canonical padded base64"))?;
    if bytes.len() != len {
        return Err(NixFailure::Length {
            what,
            found: bytes.len(),
            expected: len,
        });
    }
    Ok((name, bytes))
}

/// RFC 4648 base64 with padding, as Nix's `base64Encode` writes it.
fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Decode canonical padded base64 only: the `STANDARD` engine refuses
/// missing padding and non-zero trailing bits, where Nix is lenient, so one
/// signature has exactly one accepted text.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use ring::signature::KeyPair;

    use super::*;

    // A path Nix 2.8 built (`worker/tests/nixsig.rs` builds the same derivation),
    // copied with `nix copy --to 'file://...?compression=none'` and signed
    // with `nix store sign --key-file` under a key from
    // `nix key generate-secret --key-name test`. A throwaway test key.
    const PATH: &str = "/nix/store/qkirp0adg14dj9zrl3w99c8c1dprz62f-provenix-nixsig-y";
    const REF_A: &str = "/nix/store/c5nnsglx5dah8j11w7hidzifnvnjwlr2-provenix-nixsig-a";
    const REF_B: &str = "/nix/store/y4f0l3qsj3i4rbdl36cfvik34k90gzxn-provenix-nixsig-b";
    const DERIVER: &str = "/nix/store/8dlm02c4vidk3xm59wk2l1wii69rm14y-provenix-nixsig-y.drv";
    const NAR_SHA256: &str = "6cf6324ad7eb9324d404ac374560a3aa322c24125db7c7cae845c2f6ca9b93dd";
    const NAR_SIZE: u64 = 304;
    const SECRET: &str = "ada85e7a5feebed239892c41515f1c6b38051abf2491f80dba498b6cfa531991\
                          c7608f0c741585a2973c23c3866070ce20a5fdff01f153006403154aea6d42f3";
    const PUBLIC_LINE: &str = "test:x2CPDHQVhaKXPCPDhmBwziCl/f8B8VMAZAMVSuptQvM=";
    const SIG_LINE: &str = "test:AYVcW9vCWlmfJLTfOmKTk68iQC2k2GY8OJAVvA65qnlH4Qp4za+3x7eZzCLvqJipxrFb4Bq85yelEOcaxUBPCg==";
    // `nix copy` and `nix store sign`, byte for byte.
    const NARINFO: &str = "\
StorePath: /nix/store/qkirp0adg14dj9zrl3w99c8c1dprz62f-provenix-nixsig-y
URL: nar/1pckkg5gdhj5x35cgdsx28j2qcmaldh4adxc0ka294zbsx535xkc.nar
Compression: none
FileHash: sha256:1pckkg5gdhj5x35cgdsx28j2qcmaldh4adxc0ka294zbsx535xkc
FileSize: 304
NarHash: sha256:1pckkg5gdhj5x35cgdsx28j2qcmaldh4adxc0ka294zbsx535xkc
NarSize: 304
References: c5nnsglx5dah8j11w7hidzifnvnjwlr2-provenix-nixsig-a qkirp0adg14dj9zrl3w99c8c1dprz62f-provenix-nixsig-y y4f0l3qsj3i4rbdl36cfvik34k90gzxn-provenix-nixsig-b
Deriver: 8dlm02c4vidk3xm59wk2l1wii69rm14y-provenix-nixsig-y.drv
Sig: test:AYVcW9vCWlmfJLTfOmKTk68iQC2k2GY8OJAVvA65qnlH4Qp4za+3x7eZzCLvqJipxrFb4Bq85yelEOcaxUBPCg==
";

    fn sha() -> [u8; 32] {
        hex::decode(NAR_SHA256).unwrap().try_into().unwrap()
    }

    /// The references in an order Nix would not use, with a duplicate.
    fn references() -> Vec<String> {
        [REF_B, PATH, REF_A, REF_B].map(str::to_owned).to_vec()
    }

    /// Nix's secret key: libsodium's seed || public key.
    fn nix_key() -> Ed25519KeyPair {
        let secret = hex::decode(SECRET).unwrap();
        Ed25519KeyPair::from_seed_and_public_key(&secret[..32], &secret[32..]).unwrap()
    }

    fn sample_fingerprint() -> Fingerprint {
        fingerprint(PATH, &sha(), NAR_SIZE, &references()).unwrap()
    }

    #[test]
    fn nix32_matches_nix() {
        // From Nix 2.8: `nix hash to-base32 --type T HEX`.
        let table: &[(&str, &str)] = &[
            // SHA-256 of the empty string.
            (
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73",
            ),
            // MD5, SHA-1 and SHA-512 of the empty string: 26, 32 and 103
            // characters, where the top digit has fewer than 5 bits.
            (
                "d41d8cd98f00b204e9800998ecf8427e",
                "3y8bwfr609h3lh9ch0izcqq7fl",
            ),
            (
                "da39a3ee5e6b4b0d3255bfef95601890afd80709",
                "143xibwh31h9bvxzalr0sjvbbvpa6ffs",
            ),
            (
                "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce\
                 47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e",
                "0zdl9zrg8r3i9c1g90lgg9ip5ijzv3yhz91i0zzn3r8ap9ws784gkp9dk9j3aglhgf1amqb0pj21mh7h1nxcl18akqvvf7ggqsy30yg",
            ),
            // The last byte is the most significant: it comes first.
            (
                "0000000000000000000000000000000000000000000000000000000000000001",
                "0080000000000000000000000000000000000000000000000000",
            ),
            (
                "8000000000000000000000000000000000000000000000000000000000000000",
                "0000000000000000000000000000000000000000000000000040",
            ),
            (
                "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
                "1zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz",
            ),
        ];
        for (hex, expected) in table {
            assert_eq!(nix32(&hex::decode(hex).unwrap()), *expected, "{hex}");
        }
        assert_eq!(nix32(&[]), "");
    }

    #[test]
    fn nar_hash_is_prefixed_nix32() {
        assert_eq!(
            nar_hash(&[0xff; 32]),
            "sha256:1zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz"
        );
    }

    #[test]
    fn fingerprint_is_nix_format() {
        assert_eq!(
            sample_fingerprint().as_str(),
            format!(
                "1;{PATH};sha256:1pckkg5gdhj5x35cgdsx28j2qcmaldh4adxc0ka294zbsx535xkc;304;\
                 {REF_A},{PATH},{REF_B}"
            )
        );
        // No references: the last field is empty, the ';' stays.
        assert_eq!(
            fingerprint(REF_A, &sha(), NAR_SIZE, &[])
                .unwrap()
                .to_string(),
            format!("1;{REF_A};sha256:1pckkg5gdhj5x35cgdsx28j2qcmaldh4adxc0ka294zbsx535xkc;304;")
        );
    }

    #[test]
    fn sign_equals_nix_store_sign() {
        let key = nix_key();
        let public: [u8; 32] = key.public_key().as_ref().try_into().unwrap();
        assert_eq!(public_key_line("test", &public).unwrap(), PUBLIC_LINE);
        assert_eq!(sign("test", &key, &sample_fingerprint()).unwrap(), SIG_LINE);
        verify(SIG_LINE, PUBLIC_LINE, &sample_fingerprint()).unwrap();
    }

    #[test]
    fn narinfo_equals_nix_copy_and_sign() {
        let text = narinfo(
            PATH,
            &sha(),
            NAR_SIZE,
            &references(),
            Some(DERIVER),
            &[SIG_LINE.to_owned(), SIG_LINE.to_owned()],
        )
        .unwrap();
        assert_eq!(text, NARINFO);
    }

    #[test]
    fn narinfo_without_references_deriver_or_sigs() {
        let text = narinfo(REF_A, &sha(), NAR_SIZE, &[], None, &[]).unwrap();
        assert!(text.ends_with("NarSize: 304\nReferences: \n"), "{text}");
        assert!(!text.contains("Deriver") && !text.contains("Sig"), "{text}");
    }

    #[test]
    fn narinfo_sorts_sigs() {
        let other = format!("a-key:{}", base64_encode(&[0; 64]));
        let text = narinfo(
            PATH,
            &sha(),
            NAR_SIZE,
            &[],
            None,
            &[SIG_LINE.to_owned(), other.clone()],
        )
        .unwrap();
        assert!(
            text.ends_with(&format!("Sig: {other}\nSig: {SIG_LINE}\n")),
            "{text}"
        );
    }

    #[test]
    fn narinfo_refuses_a_sig_that_would_add_a_field() {
        let injected = format!("{SIG_LINE}\nNarSize: 1");
        assert!(matches!(
            narinfo(PATH, &sha(), NAR_SIZE, &[], None, &[injected]),
            Err(Error::Nix(NixFailure::Malformed {
                what: "signature",
                ..
            }))
        ));
    }

    #[test]
    fn empty_nar_refused() {
        assert!(matches!(
            fingerprint(PATH, &[0; 32], 0, &[]),
            Err(Error::Nix(NixFailure::EmptyNar))
        ));
        assert!(matches!(
            narinfo(PATH, &[0; 32], 0, &[], None, &[]),
            Err(Error::Nix(NixFailure::EmptyNar))
        ));
    }

    #[test]
    fn store_paths_nix_refuses() {
        let hash = "qkirp0adg14dj9zrl3w99c8c1dprz62f";
        let long = format!("/nix/store/{hash}-{}", "a".repeat(212));
        let table: &[(&str, &str)] = &[
            ("", "does not start"),
            (
                "nix/store/qkirp0adg14dj9zrl3w99c8c1dprz62f-x",
                "does not start",
            ),
            (
                "/nix/storeqkirp0adg14dj9zrl3w99c8c1dprz62f-x",
                "does not start",
            ),
            (
                "/gnu/store/qkirp0adg14dj9zrl3w99c8c1dprz62f-x",
                "does not start",
            ),
            (
                "/nix//store/qkirp0adg14dj9zrl3w99c8c1dprz62f-x",
                "does not start",
            ),
            (
                "/nix/store//qkirp0adg14dj9zrl3w99c8c1dprz62f-x",
                "not directly",
            ),
            (
                "/nix/store/qkirp0adg14dj9zrl3w99c8c1dprz62f-x/bin",
                "not directly",
            ),
            (
                "/nix/store/qkirp0adg14dj9zrl3w99c8c1dprz62f-x/",
                "not directly",
            ),
            ("/nix/store/qkirp0adg14dj9zrl3w99c8c1dprz62", "shorter"),
            (
                "/nix/store/qkirp0adg14dj9zrl3w99c8c1dprz62f",
                "followed by '-'",
            ),
            (
                "/nix/store/qkirp0adg14dj9zrl3w99c8c1dprz62f_x",
                "followed by '-'",
            ),
            ("/nix/store/qkirp0adg14dj9zrl3w99c8c1dprz62e-x", "base 32"),
            ("/nix/store/Qkirp0adg14dj9zrl3w99c8c1dprz62f-x", "base 32"),
            (
                "/nix/store/qkirp0adg14dj9zrl3w99c8c1dprz6\u{e9}-x",
                "base 32",
            ),
            ("/nix/store/qkirp0adg14dj9zrl3w99c8c1dprz62f-", "empty"),
            (&long, "longer than 211"),
            (
                "/nix/store/qkirp0adg14dj9zrl3w99c8c1dprz62f-.",
                "'.' or '..'",
            ),
            (
                "/nix/store/qkirp0adg14dj9zrl3w99c8c1dprz62f-..-x",
                "'.' or '..'",
            ),
            (
                "/nix/store/qkirp0adg14dj9zrl3w99c8c1dprz62f-a,b",
                "character",
            ),
            (
                "/nix/store/qkirp0adg14dj9zrl3w99c8c1dprz62f-a;b",
                "character",
            ),
            (
                "/nix/store/qkirp0adg14dj9zrl3w99c8c1dprz62f-a b",
                "character",
            ),
            (
                "/nix/store/qkirp0adg14dj9zrl3w99c8c1dprz62f-a\nb",
                "character",
            ),
            (
                "/nix/store/qkirp0adg14dj9zrl3w99c8c1dprz62f-\u{e9}",
                "character",
            ),
        ];
        for (path, reason) in table {
            for (field, result) in [
                (
                    "store path",
                    fingerprint(path, &sha(), NAR_SIZE, &[]).map(String::from),
                ),
                (
                    "reference",
                    fingerprint(PATH, &sha(), NAR_SIZE, &[(*path).to_owned()]).map(String::from),
                ),
                (
                    "deriver",
                    narinfo(PATH, &sha(), NAR_SIZE, &[], Some(path), &[]),
                ),
            ] {
                match result {
                    Err(Error::Nix(NixFailure::StorePath {
                        field: f,
                        value,
                        reason: r,
                    })) => {
                        assert_eq!((f, value.as_str()), (field, *path));
                        assert!(r.contains(reason), "{path:?}: {r}");
                    }
                    other => panic!("{field} {path:?}: {other:?}"),
                }
            }
        }
        for good in [
            format!("/nix/store/{hash}-a"),
            format!("/nix/store/{hash}-{}", "a".repeat(211)),
            format!("/nix/store/{hash}-.a"),
            format!("/nix/store/{hash}-...-x"),
            format!("/nix/store/{hash}-A+Z-0.9_?="),
        ] {
            fingerprint(&good, &sha(), NAR_SIZE, std::slice::from_ref(&good)).unwrap();
        }
    }

    #[test]
    fn key_names_nix_would_misread() {
        let key = nix_key();
        let long = "n".repeat(MAX_KEY_NAME_LEN + 1);
        for name in ["", "a:b", "a b", "a\nb", "a\tb", "\u{e9}", &long] {
            assert!(
                matches!(
                    public_key_line(name, &[0; 32]),
                    Err(Error::Nix(NixFailure::KeyName { .. }))
                ),
                "{name:?}"
            );
            assert!(
                matches!(
                    sign(name, &key, &sample_fingerprint()),
                    Err(Error::Nix(NixFailure::KeyName { .. }))
                ),
                "{name:?}"
            );
        }
        public_key_line(&"n".repeat(MAX_KEY_NAME_LEN), &[0; 32]).unwrap();
    }

    #[test]
    fn worker_key_line_is_public_key_line_under_worker_key_name() {
        let public: [u8; 32] = nix_key().public_key().as_ref().try_into().unwrap();
        assert_eq!(
            worker_key_line(&public),
            public_key_line(&worker_key_name(&public), &public).unwrap()
        );
    }

    #[test]
    fn worker_key_name_is_first_16_hex_digits() {
        let mut k = [0u8; 32];
        k[..9].copy_from_slice(&[0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xff]);
        assert_eq!(worker_key_name(&k), "provenix-0123456789abcdef");
        check_key_name(&worker_key_name(&k)).unwrap();
    }

    #[test]
    fn verify_tampered_fingerprint() {
        let tampered = fingerprint(PATH, &sha(), NAR_SIZE + 1, &references()).unwrap();
        assert!(matches!(
            verify(SIG_LINE, PUBLIC_LINE, &tampered),
            Err(Error::Nix(NixFailure::BadSignature { name })) if name == "test"
        ));
        let dropped = fingerprint(PATH, &sha(), NAR_SIZE, &[REF_A.to_owned()]).unwrap();
        assert!(matches!(
            verify(SIG_LINE, PUBLIC_LINE, &dropped),
            Err(Error::Nix(NixFailure::BadSignature { .. }))
        ));
    }

    #[test]
    fn verify_another_key_with_the_same_name() {
        let other = Ed25519KeyPair::from_seed_unchecked(&[7; 32]).unwrap();
        let public: [u8; 32] = other.public_key().as_ref().try_into().unwrap();
        let line = public_key_line("test", &public).unwrap();
        assert!(matches!(
            verify(SIG_LINE, &line, &sample_fingerprint()),
            Err(Error::Nix(NixFailure::BadSignature { .. }))
        ));
    }

    #[test]
    fn verify_another_key_name() {
        let line = PUBLIC_LINE.replacen("test", "tess", 1);
        assert!(matches!(
            verify(SIG_LINE, &line, &sample_fingerprint()),
            Err(Error::Nix(NixFailure::NameMismatch { signature, key })) if signature == "test" && key == "tess"
        ));
    }

    #[test]
    fn verify_malformed_lines() {
        let fp = sample_fingerprint();
        let sig_b64 = SIG_LINE.strip_prefix("test:").unwrap();
        let table: &[(&str, &str, &str)] = &[
            // (signature, public key, what is wrong)
            (SIG_LINE, "test", "public key"),
            (sig_b64, PUBLIC_LINE, "signature"),
            // Unpadded, as Nix's lax decoder would still take.
            (SIG_LINE.trim_end_matches('='), PUBLIC_LINE, "signature"),
            (SIG_LINE, PUBLIC_LINE.trim_end_matches('='), "public key"),
            // Base64 broken by a line break.
            (&SIG_LINE.replacen('A', "\nA", 1), PUBLIC_LINE, "signature"),
            // The URL-safe alphabet.
            (&SIG_LINE.replace('+', "-"), PUBLIC_LINE, "signature"),
        ];
        for (sig, key, what) in table {
            match verify(sig, key, &fp) {
                Err(Error::Nix(NixFailure::Malformed { what: w, .. })) => {
                    assert_eq!(w, *what, "{sig} {key}")
                }
                other => panic!("{sig:?} {key:?}: {other:?}"),
            }
        }
        // Canonical base64 of the wrong length.
        let short_sig = format!("test:{}", base64_encode(&[1; 63]));
        assert!(matches!(
            verify(&short_sig, PUBLIC_LINE, &fp),
            Err(Error::Nix(NixFailure::Length {
                what: "signature",
                found: 63,
                expected: 64
            }))
        ));
        let long_key = format!("test:{}", base64_encode(&[1; 33]));
        assert!(matches!(
            verify(SIG_LINE, &long_key, &fp),
            Err(Error::Nix(NixFailure::Length {
                what: "public key",
                found: 33,
                expected: 32
            }))
        ));
        assert!(matches!(
            verify(&format!(":{sig_b64}"), PUBLIC_LINE, &fp),
            Err(Error::Nix(NixFailure::KeyName { .. }))
        ));
    }

    #[test]
    fn base64_rfc4648_vectors() {
        // RFC 4648 section 10.
        let table: &[(&str, &str)] = &[
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in table {
            assert_eq!(base64_encode(plain.as_bytes()), *encoded);
            assert_eq!(base64_decode(encoded).unwrap(), plain.as_bytes());
        }
        let all: Vec<u8> = (0..=255).collect();
        for len in 0..all.len() {
            let encoded = base64_encode(&all[..len]);
            assert_eq!(base64_decode(&encoded).unwrap(), &all[..len]);
        }
        assert_eq!(base64_encode(&[0xfb, 0xff]), "+/8=");
    }

    #[test]
    fn base64_refuses_what_nix_does_not_write() {
        for bad in [
            "Zg",
            "Zg=",
            "Zg===",
            "Z===",
            "====",
            "Zh==",
            "Zm9=",
            "Zg==Zm9v",
            "Zm8=Zm8=",
            "Zm 9v",
            "Zm9v\n",
            "Zm-v",
            "Zm_v",
            "Zm9\u{e9}",
        ] {
            assert_eq!(base64_decode(bad), None, "{bad:?}");
        }
    }
}
