//! What the daemon asks of Nix: which store paths are well formed, and an
//! output's references (`nix-store --query --references`, a subprocess whose
//! output is checked like any other input).

// Parses what clients, files or Nix hand it: no panics from input.
#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions
)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::sync::Semaphore;

use super::DaemonError;
use crate::nar::NarDigest;

/// Longest store path name: Nix 2.8's `checkName` (`src/libstore/path.cc`)
/// refuses names over 211 characters.
pub const MAX_NAME_LEN: usize = 211;
/// Length of the hash part of a store path: 160 bits in Nix's base 32
/// (`StorePath::HashLen` in `src/libstore/path.hh`).
const HASH_LEN: usize = 32;
/// Longest store directory accepted in the configuration; with the hash and
/// the name this bounds every path the daemon handles.
pub(crate) const MAX_STORE_DIR_LEN: usize = 256;
/// Most bytes of `nix-store --query --references` output read: the
/// verifier's limit on references times the longest store path.
const MAX_QUERY_OUTPUT: usize = provenix_verifier::MAX_REFERENCES * (MAX_STORE_DIR_LEN + 245);
/// How long one `nix-store` query may take before it is killed.
const QUERY_TIMEOUT: Duration = Duration::from_secs(60);
/// `nix-store` processes run at once: each costs ~10 ms of CPU to start.
const QUERY_CONCURRENCY: usize = 4;
/// Reference sets remembered. Cleared whole when full: a cache miss costs
/// one `nix-store` run, nothing else.
const CACHE_ENTRIES: usize = 16_384;

/// References by (store path, NAR SHA-256).
type RefCache = HashMap<(String, [u8; 32]), Vec<String>>;

/// The Nix store the daemon reports on.
#[derive(Debug)]
pub(crate) struct Store {
    dir: String,
    nix_store: PathBuf,
    queries: Semaphore,
    /// References by (store path, NAR SHA-256). Nix computes a path's
    /// references by scanning its contents for the hash parts of its
    /// inputs, so the same path with the same contents has the same
    /// references: the key includes the hash the daemon has just computed
    /// itself, so a path rebuilt with other contents is queried again.
    cache: Mutex<RefCache>,
}

impl Store {
    pub(crate) fn new(dir: &Path, nix_store: PathBuf) -> Result<Store, DaemonError> {
        let dir = dir
            .to_str()
            .filter(|d| d.starts_with('/') && !d.ends_with('/') && d.len() <= MAX_STORE_DIR_LEN)
            .ok_or_else(|| DaemonError::Config(format!("store directory {}", dir.display())))?;
        Ok(Store {
            dir: dir.to_owned(),
            nix_store,
            queries: Semaphore::new(QUERY_CONCURRENCY),
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Check that `path` is `<store>/<32 base-32 chars>-<name>` with a name
    /// Nix accepts: a top-level store path, nothing under it, no `..`.
    pub(crate) fn check_path(&self, path: &str) -> Result<(), DaemonError> {
        let bad = |reason: &str| DaemonError::BadStorePath {
            path: truncate(path),
            reason: reason.to_owned(),
        };
        let rest = path
            .strip_prefix(self.dir.as_str())
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(|| bad("not in the Nix store"))?;
        let (hash, name) = rest.split_once('-').ok_or_else(|| bad("no hash part"))?;
        if hash.len() != HASH_LEN || !hash.bytes().all(is_nix32) {
            return Err(bad("the hash part is not 32 characters of Nix's base 32"));
        }
        if name.is_empty() || name.len() > MAX_NAME_LEN {
            return Err(bad("the name is empty or over 211 characters"));
        }
        // Nix 2.8 `checkName`: letters, digits and `+-._?=`, not starting
        // with a period.
        if name.starts_with('.') {
            return Err(bad("the name starts with a period"));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-._?=".contains(&b))
        {
            return Err(bad("the name has a character Nix does not allow"));
        }
        Ok(())
    }

    /// Check a derivation path: a store path whose name ends in `.drv`.
    pub(crate) fn check_drv(&self, path: &str) -> Result<(), DaemonError> {
        self.check_path(path)?;
        if !path.ends_with(".drv") {
            return Err(DaemonError::BadStorePath {
                path: truncate(path),
                reason: "a derivation path ends in .drv".into(),
            });
        }
        Ok(())
    }

    /// The references of `path`, whose NAR the daemon has just hashed to
    /// `nar`, as Nix's database records them.
    pub(crate) async fn references(
        &self,
        path: &str,
        nar: &NarDigest,
    ) -> Result<Vec<String>, DaemonError> {
        let key = (path.to_owned(), nar.sha256);
        if let Some(hit) = self.lock_cache().get(&key) {
            return Ok(hit.clone());
        }
        let references = self.query_references(path).await?;
        let mut cache = self.lock_cache();
        if cache.len() >= CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(key, references.clone());
        Ok(references)
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, RefCache> {
        // The cache holds no invariant a panicking holder could break.
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Run `nix-store --query --references PATH` and check what it prints:
    /// one store path per line, sorted and unique after sorting, at most the
    /// verifier's limit. A path Nix does not know is refused by Nix.
    async fn query_references(&self, path: &str) -> Result<Vec<String>, DaemonError> {
        let nix = |reason: String| DaemonError::Nix {
            path: path.to_owned(),
            reason,
        };
        let _permit = self
            .queries
            .acquire()
            .await
            .map_err(|_| DaemonError::ShuttingDown)?;
        let mut child = tokio::process::Command::new(&self.nix_store)
            .args(["--query", "--references", "--"])
            .arg(path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| nix(format!("cannot run {}: {e}", self.nix_store.display())))?;
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(nix("no pipes to nix-store".into()));
        };
        let limit = u64::try_from(MAX_QUERY_OUTPUT).unwrap_or(u64::MAX);
        let run = async {
            let mut out = Vec::new();
            let mut err = Vec::new();
            let mut stdout = stdout.take(limit.saturating_add(1));
            let mut stderr = stderr.take(4096);
            let (o, e) = tokio::join!(stdout.read_to_end(&mut out), stderr.read_to_end(&mut err));
            o.and(e)?;
            let status = child.wait().await?;
            Ok::<_, std::io::Error>((status, out, err))
        };
        let (status, out, err) = tokio::time::timeout(QUERY_TIMEOUT, run)
            .await
            .map_err(|_| nix(format!("nix-store did not answer in {QUERY_TIMEOUT:?}")))?
            .map_err(|e| nix(format!("reading nix-store: {e}")))?;
        if !status.success() {
            return Err(nix(format!(
                "nix-store --query --references failed ({status}): {}",
                String::from_utf8_lossy(&err).trim()
            )));
        }
        if out.len() > MAX_QUERY_OUTPUT {
            return Err(nix("nix-store printed more than the limit".into()));
        }
        let text = String::from_utf8(out).map_err(|_| nix("nix-store printed non-UTF-8".into()))?;
        let mut references = Vec::new();
        for line in text.lines().filter(|l| !l.is_empty()) {
            self.check_path(line)
                .map_err(|e| nix(format!("nix-store printed a bad reference: {e}")))?;
            references.push(line.to_owned());
        }
        references.sort();
        references.dedup();
        if references.len() > provenix_verifier::MAX_REFERENCES {
            return Err(nix(format!(
                "{} references, over the limit of {}",
                references.len(),
                provenix_verifier::MAX_REFERENCES
            )));
        }
        Ok(references)
    }
}

/// Nix's base-32 alphabet (`base32Chars` in `src/libutil/hash.cc`): digits
/// and lower-case letters without e, o, u and t.
fn is_nix32(b: u8) -> bool {
    b.is_ascii_digit() || (b.is_ascii_lowercase() && !b"eout".contains(&b))
}

/// A client-supplied path, cut for an error message.
pub(crate) fn truncate(path: &str) -> String {
    const SHOWN: usize = 300;
    if path.len() <= SHOWN {
        return path.to_owned();
    }
    let mut end = SHOWN;
    while !path.is_char_boundary(end) {
        end = end.saturating_sub(1);
    }
    format!("{}...", path.get(..end).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_paths_are_checked_as_nix_does() {
        let store = Store::new(Path::new("/nix/store"), "nix-store".into()).unwrap();
        let h = "c5nnsglx5dah8j11w7hidzifnvnjwlr2";
        for good in [
            format!("/nix/store/{h}-hello-2.12"),
            format!("/nix/store/{h}-a+b_c?d=e.f"),
            format!("/nix/store/{h}-{}", "x".repeat(211)),
        ] {
            store.check_path(&good).unwrap();
        }
        for bad in [
            format!("/nix/store/{h}-"),
            format!("/nix/store/{h}-.hidden"),
            format!("/nix/store/{h}-a/b"),
            format!("/nix/store/{h}-a/../../etc/passwd"),
            format!("/nix/store/{h}-{}", "x".repeat(212)),
            format!("/nix/store/{h}-sp ace"),
            format!("/nix/store/{h}-nul\0"),
            format!("/nix/store//{h}-a"),
            format!("/nix/storex/{h}-a"),
            "/nix/store/c5nnsglx5dah8j11w7hidzifnvnjwlre-a".into(), // 'e'
            "/nix/store/short-a".into(),
            format!("/etc/{h}-a"),
            format!("nix/store/{h}-a"),
            String::new(),
        ] {
            assert!(store.check_path(&bad).is_err(), "{bad:?}");
        }
        store.check_drv(&format!("/nix/store/{h}-x.drv")).unwrap();
        assert!(store.check_drv(&format!("/nix/store/{h}-x")).is_err());
        assert!(Store::new(Path::new("relative"), "nix-store".into()).is_err());
        assert!(Store::new(Path::new("/nix/store/"), "nix-store".into()).is_err());
    }

    #[test]
    fn truncation_respects_characters() {
        let long = "é".repeat(400);
        let cut = truncate(&long);
        assert!(cut.len() <= 303 && cut.ends_with("..."));
        assert_eq!(truncate("short"), "short");
    }
}
