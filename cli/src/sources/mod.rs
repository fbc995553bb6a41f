//! Where `provenix verify` finds bundles: files and directories, workers'
//! gRPC log APIs ([`grpc`]) and binary caches ([`cache`]).
//!
//! Nothing a source returns is trusted: every bundle goes through
//! `verify_bundle` afterwards. A source only has to find the bundles about
//! the subjects asked for, and say where each came from so a verdict can
//! name it. This is the CLI's side of "the library never touches the
//! network on its own" (STYLE.md): the network is used here, when a flag
//! asks for it.

pub(crate) mod cache;
pub(crate) mod grpc;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use coset::{CborSerializable, CoseSign1};
use provenix_verifier::{Bundle, Statement, Subject};

pub(crate) use cache::Narinfo;

/// One bundle as a source returned it.
#[derive(Clone)]
pub(crate) struct Fetched {
    /// Where it came from, for messages: a file, `<url>#<index>` for a
    /// worker's log entry, or the bundle's URL in a cache.
    pub(crate) source: String,
    /// The bundle, CBOR.
    pub(crate) bytes: Vec<u8>,
    /// The narinfo files served beside it (by caches), each of which must
    /// agree with its statement.
    pub(crate) narinfos: Vec<Narinfo>,
}

/// The subject a bundle's statement names, used only to pick bundles: the
/// statement is decoded but not verified here, since `verify_bundle` checks
/// it afterwards (and a bundle picked for the wrong subject is refused or
/// reported as a replay there).
pub(crate) fn claimed_subject(bundle: &[u8]) -> Option<Subject> {
    let statement = match Bundle::from_cbor(bundle).ok()? {
        Bundle::Logged { statement, .. } | Bundle::Direct { statement, .. } => statement,
    };
    statement_subject(&statement)
}

/// The subject a COSE_Sign1 statement (a log entry) names, unverified.
pub(crate) fn statement_subject(signed: &[u8]) -> Option<Subject> {
    if signed.len() > provenix_verifier::MAX_STATEMENT_SIZE {
        return None;
    }
    let sign1 = CoseSign1::from_slice(signed).ok()?;
    Statement::from_cbor(sign1.payload.as_deref()?)
        .ok()
        .map(|s| s.subject)
}

/// Every `*.provenix` file in `dir`, sorted so output is stable.
pub(crate) fn bundle_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry
            .with_context(|| format!("cannot read {}", dir.display()))?
            .path();
        if path.extension().is_some_and(|e| e == "provenix") && path.is_file() {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// Read one bundle file.
pub(crate) fn read_file(path: &Path) -> Result<Fetched> {
    Ok(Fetched {
        source: path.display().to_string(),
        bytes: crate::input::read(path, crate::input::BUNDLE)?,
        narinfos: Vec::new(),
    })
}

/// The hash part and base name of a store path
/// (`/nix/store/<32 nix32 characters>-<name>`), or an error naming it:
/// caches are asked by hash part, and the name becomes part of a URL.
pub(crate) fn store_path_parts(path: &str) -> Result<(&str, &str)> {
    const NIX32: &[u8] = b"0123456789abcdfghijklmnpqrsvwxyz";
    let base = path
        .strip_prefix(provenix_verifier::nixsig::STORE_DIR)
        .and_then(|rest| rest.strip_prefix('/'))
        .with_context(|| {
            format!(
                "{path:?} is not in {}",
                provenix_verifier::nixsig::STORE_DIR
            )
        })?;
    let (hash, name) = base
        .split_once('-')
        .with_context(|| format!("{path:?} is not a store path (no name after the hash)"))?;
    // Nix's rules for store path names (`checkName` in Nix's
    // `src/libstore/path.cc`): 1 to 211 characters of these.
    let name_ok = !name.is_empty()
        && name.len() <= 211
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-._?=".contains(&b));
    if hash.len() != 32 || !hash.bytes().all(|b| NIX32.contains(&b)) || !name_ok {
        bail!("{path:?} is not a store path (/nix/store/<32 nix32 characters>-<name>)");
    }
    Ok((hash, base))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_paths_are_split_and_bad_ones_named() {
        let p = "/nix/store/0c7bl5ai2dpxhd6sxfs0dbbnbgd8x4lc-hello-2.12";
        assert_eq!(
            store_path_parts(p).unwrap(),
            (
                "0c7bl5ai2dpxhd6sxfs0dbbnbgd8x4lc",
                "0c7bl5ai2dpxhd6sxfs0dbbnbgd8x4lc-hello-2.12"
            )
        );
        for bad in [
            "/nix/store/0c7bl5ai2dpxhd6sxfs0dbbnbgd8x4lc",
            "/nix/store/0c7bl5ai2dpxhd6sxfs0dbbnbgd8x4l-x",
            "/nix/store/0c7bl5ai2dpxhd6sxfs0dbbnbgd8x4le-x",
            "/nix/store/0c7bl5ai2dpxhd6sxfs0dbbnbgd8x4lc-a/b",
            "/nix/store/0c7bl5ai2dpxhd6sxfs0dbbnbgd8x4lc-.x",
            "/tmp/0c7bl5ai2dpxhd6sxfs0dbbnbgd8x4lc-x",
            "",
        ] {
            let e = store_path_parts(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
    }
}
