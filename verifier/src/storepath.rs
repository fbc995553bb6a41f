//! Content-addressed store paths, computed as Nix computes them, so that a
//! source or a fixed-output path in a build trace checks itself: its path
//! is a hash of its content (and, for sources and text, its references),
//! and nothing but that content reproduces it.
//!
//! Nix 2.8 `src/libstore/store-api.cc`:
//!
//! ```text
//! makeStorePath(type, hash, name) =
//!     storeDir "/" nix32(compress20(sha256(type ":" algo ":" hex(hash) ":" storeDir ":" name))) "-" name
//! makeType(type, refs, self) = type (":" ref)* [":self"]
//! text path      (builtins.toFile, .drv): makeStorePath(makeType("text", refs), sha256(contents), name)
//! source path    (recursive SHA-256, builtins.path, nix-store --add):
//!                                makeStorePath(makeType("source", refs, self), sha256(NAR), name)
//! any other fixed output:        makeStorePath("output:out",
//!                                    sha256("fixed:out:" ["r:"] algo ":" hex(hash) ":"), name)
//! ```
//!
//! `compress20` folds a hash into 20 bytes by XOR (`compressHash` in
//! `src/libutil/hash.cc`). References are full store paths in byte order
//! (`StorePathSet` is a `std::set`).

#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions
)]

use core::fmt;

use ring::digest;

use crate::nixsig::{STORE_DIR, nix32};

/// How the content was hashed (`FileIngestionMethod` and text hashing in
/// Nix's `src/libstore/content-address.hh`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// The file's bytes, as a text path (`text:` in Nix's `ca` field).
    Text,
    /// The file's bytes, as a fixed output (`fixed:`).
    Flat,
    /// The path's NAR serialisation (`fixed:r:`).
    Recursive,
}

/// A hash algorithm Nix fixed outputs use and this crate can compute. MD5
/// (still accepted by Nix) is not among them: such a path cannot check
/// itself here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HashAlgo {
    /// SHA-1, for old fetchers.
    Sha1,
    /// SHA-256.
    Sha256,
    /// SHA-512.
    Sha512,
}

impl HashAlgo {
    /// Its name in Nix (`printHashType`).
    pub fn name(self) -> &'static str {
        match self {
            HashAlgo::Sha1 => "sha1",
            HashAlgo::Sha256 => "sha256",
            HashAlgo::Sha512 => "sha512",
        }
    }

    /// The algorithm named `name`, if supported.
    pub fn from_name(name: &str) -> Option<HashAlgo> {
        match name {
            "sha1" => Some(HashAlgo::Sha1),
            "sha256" => Some(HashAlgo::Sha256),
            "sha512" => Some(HashAlgo::Sha512),
            _ => None,
        }
    }

    /// Digest length in bytes.
    pub fn digest_len(self) -> usize {
        self.ring().output_len()
    }

    /// The ring algorithm that computes it.
    pub fn ring(self) -> &'static digest::Algorithm {
        match self {
            HashAlgo::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
            HashAlgo::Sha256 => &digest::SHA256,
            HashAlgo::Sha512 => &digest::SHA512,
        }
    }
}

/// How a content-addressed path was made, and the hash of its content.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ContentAddress {
    /// Text, flat or recursive.
    pub method: Method,
    /// The hash algorithm; text paths are always SHA-256.
    pub algo: HashAlgo,
    /// The content's hash, `algo.digest_len()` bytes.
    pub digest: Vec<u8>,
}

/// Why a content address does not give a store path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorePathError {
    /// The digest is not as long as its algorithm's.
    DigestLength {
        /// The algorithm.
        algo: HashAlgo,
        /// The digest's length.
        len: usize,
    },
    /// A text path hashed with something other than SHA-256.
    TextNotSha256,
    /// A fixed output other than a recursive SHA-256 one cannot have
    /// references (Nix asserts it).
    FixedWithReferences,
    /// A text path that refers to itself (Nix cannot make one).
    SelfReference,
    /// A name or reference Nix would refuse.
    BadPath(String),
}

impl fmt::Display for StorePathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorePathError::DigestLength { algo, len } => write!(
                f,
                "a {} digest of {len} bytes (expected {})",
                algo.name(),
                algo.digest_len()
            ),
            StorePathError::TextNotSha256 => f.write_str("a text path not hashed with SHA-256"),
            StorePathError::FixedWithReferences => {
                f.write_str("a fixed output other than recursive SHA-256 with references")
            }
            StorePathError::SelfReference => f.write_str("a text path that refers to itself"),
            StorePathError::BadPath(p) => write!(f, "{p:?} is not a store path Nix would make"),
        }
    }
}

impl ContentAddress {
    /// The store path Nix gives content with this address, name and
    /// references (full store paths; `self_path` marks a reference to
    /// itself, which only source paths may have).
    pub fn store_path(
        &self,
        name: &str,
        references: &[String],
        self_reference: bool,
    ) -> Result<String, StorePathError> {
        if self.digest.len() != self.algo.digest_len() {
            return Err(StorePathError::DigestLength {
                algo: self.algo,
                len: self.digest.len(),
            });
        }
        check_name(name)?;
        for r in references {
            check_path(r)?;
        }
        let mut refs: Vec<&str> = references.iter().map(String::as_str).collect();
        refs.sort_unstable();
        refs.dedup();
        let typed = |kind: &str, self_ok: bool| {
            let mut t = kind.to_owned();
            for r in &refs {
                t.push(':');
                t.push_str(r);
            }
            if self_ok && self_reference {
                t.push_str(":self");
            }
            t
        };
        match (self.method, self.algo) {
            (Method::Text, _) if self_reference => Err(StorePathError::SelfReference),
            (Method::Text, HashAlgo::Sha256) => {
                Ok(make(&typed("text", false), "sha256", &self.digest, name))
            }
            (Method::Text, _) => Err(StorePathError::TextNotSha256),
            (Method::Recursive, HashAlgo::Sha256) => {
                Ok(make(&typed("source", true), "sha256", &self.digest, name))
            }
            _ if !refs.is_empty() || self_reference => Err(StorePathError::FixedWithReferences),
            (method, algo) => {
                let inner = format!(
                    "fixed:out:{}{}:{}:",
                    if method == Method::Recursive {
                        "r:"
                    } else {
                        ""
                    },
                    algo.name(),
                    hex::encode(&self.digest)
                );
                let h = digest::digest(&digest::SHA256, inner.as_bytes());
                Ok(make("output:out", "sha256", h.as_ref(), name))
            }
        }
    }

    /// As Nix's `ca` field writes it (`renderContentAddress`):
    /// `text:sha256:<nix32>`, `fixed:r:sha256:<nix32>`, `fixed:sha1:<nix32>`.
    pub fn render(&self) -> String {
        let prefix = match self.method {
            Method::Text => "text:",
            Method::Flat => "fixed:",
            Method::Recursive => "fixed:r:",
        };
        format!("{prefix}{}:{}", self.algo.name(), nix32(&self.digest))
    }

    /// The method and algorithm of a `ca` field as Nix writes it; the hash
    /// in it is not read (the worker computes its own from the content).
    pub fn parse_kind(ca: &str) -> Option<(Method, HashAlgo)> {
        let (method, rest) = if let Some(r) = ca.strip_prefix("text:") {
            (Method::Text, r)
        } else if let Some(r) = ca.strip_prefix("fixed:r:") {
            (Method::Recursive, r)
        } else if let Some(r) = ca.strip_prefix("fixed:") {
            (Method::Flat, r)
        } else {
            return None;
        };
        let (algo, _hash) = rest.split_once(':')?;
        Some((method, HashAlgo::from_name(algo)?))
    }
}

/// `makeStorePath`.
fn make(kind: &str, algo: &str, digest: &[u8], name: &str) -> String {
    let s = format!("{kind}:{algo}:{}:{STORE_DIR}:{name}", hex::encode(digest));
    let h = digest::digest(&digest::SHA256, s.as_bytes());
    let mut compressed = [0u8; 20];
    for (i, b) in h.as_ref().iter().enumerate() {
        if let Some(slot) = compressed.get_mut(i.checked_rem(20).unwrap_or(0)) {
            *slot ^= b;
        }
    }
    format!("{STORE_DIR}/{}-{name}", nix32(&compressed))
}

/// The name of a store path (after the hash part), checked.
pub fn name_of(path: &str) -> Result<&str, StorePathError> {
    check_path(path)?;
    path.get(STORE_DIR.len().saturating_add(34)..)
        .ok_or_else(|| StorePathError::BadPath(path.to_owned()))
}

/// Nix 2.8's `checkName` (`src/libstore/path.cc`): 1 to 211 characters of
/// letters, digits and `+-._?=`, not starting with a period.
fn check_name(name: &str) -> Result<(), StorePathError> {
    let ok = !name.is_empty()
        && name.len() <= 211
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-._?=".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(StorePathError::BadPath(name.to_owned()))
    }
}

/// `/nix/store/<32 characters of Nix's base 32>-<name>`.
pub fn check_path(path: &str) -> Result<(), StorePathError> {
    const NIX32: &[u8] = b"0123456789abcdfghijklmnpqrsvwxyz";
    let bad = || StorePathError::BadPath(path.to_owned());
    let rest = path
        .strip_prefix(STORE_DIR)
        .and_then(|r| r.strip_prefix('/'))
        .ok_or_else(bad)?;
    let (hash, name) = rest.split_once('-').ok_or_else(bad)?;
    if hash.len() != 32 || !hash.bytes().all(|b| NIX32.contains(&b)) {
        return Err(bad());
    }
    check_name(name).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha256(data: &[u8]) -> Vec<u8> {
        digest::digest(&digest::SHA256, data).as_ref().to_vec()
    }

    // Paths Debian's Nix 2.8 made: `builtins.toFile`, `nix-store --add`
    // and `nix-store --add-fixed [--recursive] ALGO` of a file `x.txt`
    // holding "x" and a directory `srcdir` holding it as `x`.
    #[test]
    #[cfg(unix)]
    fn paths_are_those_nix_2_8_makes() {
        let text = ContentAddress {
            method: Method::Text,
            algo: HashAlgo::Sha256,
            digest: sha256(b"hello\n"),
        };
        let hello = text.store_path("provenix-text", &[], false).unwrap();
        assert_eq!(
            hello,
            "/nix/store/w2y8rxzw09n8qyb4i9a84q2c4b84dy9q-provenix-text"
        );
        let with_ref = ContentAddress {
            digest: sha256(format!("see {hello}\n").as_bytes()),
            ..text.clone()
        };
        assert_eq!(
            with_ref
                .store_path("provenix-ref", &[hello], false)
                .unwrap(),
            "/nix/store/6a1sdaqzzvibal9chfn6glcgykwrmj2a-provenix-ref"
        );
        let flat = |algo: HashAlgo| ContentAddress {
            method: Method::Flat,
            algo,
            digest: digest::digest(algo.ring(), b"x").as_ref().to_vec(),
        };
        assert_eq!(
            flat(HashAlgo::Sha256)
                .store_path("x.txt", &[], false)
                .unwrap(),
            "/nix/store/8pw86v2f4ysx85jx1y3cg9jw6kihar1h-x.txt"
        );
        assert_eq!(
            flat(HashAlgo::Sha512)
                .store_path("x.txt", &[], false)
                .unwrap(),
            "/nix/store/s3zsnn37v10rgvhi3zrs9h7kqnmgagwr-x.txt"
        );
        let dir = std::env::temp_dir().join(format!("provenix-storepath-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("srcdir")).unwrap();
        std::fs::write(dir.join("srcdir/x"), b"x").unwrap();
        let mut nar = Vec::new();
        crate::nar::dump(&dir.join("srcdir"), &mut nar).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let recursive = |algo: HashAlgo| ContentAddress {
            method: Method::Recursive,
            algo,
            digest: digest::digest(algo.ring(), &nar).as_ref().to_vec(),
        };
        assert_eq!(
            nix32(&recursive(HashAlgo::Sha256).digest),
            "0gs2nbl9q0rmf99xcw55b7mhf1p4vly12704pyh4lzpg3lb0xbvv"
        );
        assert_eq!(
            recursive(HashAlgo::Sha256)
                .store_path("srcdir", &[], false)
                .unwrap(),
            "/nix/store/p4gd0ib5gw3aq3inqsnjw3k2y05q5381-srcdir"
        );
        assert_eq!(
            recursive(HashAlgo::Sha1)
                .store_path("srcdir", &[], false)
                .unwrap(),
            "/nix/store/6x2raf1ma32wvnfz72ay2md1ly2sxhca-srcdir"
        );
        assert_eq!(
            recursive(HashAlgo::Sha1).render(),
            "fixed:r:sha1:rp1x88y4ja63r8drdzb8fhf0pwciik0v"
        );
        // A text path cannot refer to itself.
        assert_eq!(
            text.store_path("provenix-text", &[], true),
            Err(StorePathError::SelfReference)
        );
    }

    #[test]
    fn fixed_outputs_refuse_references_and_short_digests() {
        let flat = ContentAddress {
            method: Method::Flat,
            algo: HashAlgo::Sha256,
            digest: sha256(b"x"),
        };
        let p = flat.store_path("x", &[], false).unwrap();
        assert_eq!(
            flat.store_path("x", std::slice::from_ref(&p), false),
            Err(StorePathError::FixedWithReferences)
        );
        let short = ContentAddress {
            digest: vec![0; 20],
            ..flat.clone()
        };
        assert!(matches!(
            short.store_path("x", &[], false),
            Err(StorePathError::DigestLength { .. })
        ));
        assert!(flat.store_path(".x", &[], false).is_err());
        assert!(flat.store_path("a/b", &[], false).is_err());
        let sha1 = ContentAddress {
            method: Method::Recursive,
            algo: HashAlgo::Sha1,
            digest: vec![1; 20],
        };
        assert_ne!(sha1.store_path("x", &[], false).unwrap(), p);
    }

    #[test]
    fn ca_fields_are_read_as_nix_writes_them() {
        let ca = ContentAddress {
            method: Method::Recursive,
            algo: HashAlgo::Sha256,
            digest: vec![7; 32],
        };
        let text = ca.render();
        assert!(text.starts_with("fixed:r:sha256:"));
        assert_eq!(
            ContentAddress::parse_kind(&text),
            Some((Method::Recursive, HashAlgo::Sha256))
        );
        assert_eq!(
            ContentAddress::parse_kind("fixed:sha1:abc"),
            Some((Method::Flat, HashAlgo::Sha1))
        );
        assert_eq!(
            ContentAddress::parse_kind("text:sha256:abc"),
            Some((Method::Text, HashAlgo::Sha256))
        );
        for bad in ["fixed:md5:abc", "fixed:r:sha256", "", "other:sha256:x"] {
            assert_eq!(ContentAddress::parse_kind(bad), None, "{bad}");
        }
    }
}
