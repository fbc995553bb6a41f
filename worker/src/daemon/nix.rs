//! What the daemon asks of Nix: which store paths are well formed, and
//! what Nix's database says about them (`nix path-info --json`, one
//! subprocess for all the outputs of a submission, whose output is checked
//! like any other input).

// Parses what clients, files or Nix hand it: no panics from input.
#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions
)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::sync::Semaphore;

use provenix_verifier::TraceInput;

use super::DaemonError;
use super::derivation::Derivation;

/// Longest store path name: Nix 2.8's `checkName` (`src/libstore/path.cc`)
/// refuses names over 211 characters.
pub const MAX_NAME_LEN: usize = 211;
/// Length of the hash part of a store path: 160 bits in Nix's base 32
/// (`StorePath::HashLen` in `src/libstore/path.hh`).
const HASH_LEN: usize = 32;
/// Longest store directory accepted in the configuration; with the hash and
/// the name this bounds every path the daemon handles.
pub(crate) const MAX_STORE_DIR_LEN: usize = 256;
/// Longest store path: the directory, `/`, the hash, `-` and the name.
const MAX_PATH_LEN: usize = MAX_STORE_DIR_LEN + 1 + HASH_LEN + 1 + MAX_NAME_LEN;
/// Most bytes of `nix path-info --json` read per path: its references (at
/// most the verifier's limit, each a quoted store path and a comma), its
/// deriver and a few hundred bytes of other fields.
const MAX_INFO_PER_PATH: usize =
    provenix_verifier::MAX_REFERENCES * (MAX_PATH_LEN + 3) + MAX_PATH_LEN + 4096;
/// Most bytes of `nix path-info --json --recursive` read: a trace's
/// limit of paths at about 4 KiB each (a path with 30 references takes 2).
const MAX_CLOSURE_INFO: usize = provenix_verifier::MAX_TRACE_INPUTS * 4096;
/// How long one Nix query may take before it is killed.
const QUERY_TIMEOUT: Duration = Duration::from_secs(60);
/// Nix processes run at once: each costs ~10 ms of CPU to start.
const QUERY_CONCURRENCY: usize = 4;

/// What Nix's database records about a valid store path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Registered {
    /// The NAR hash as Nix prints it (`sha256-<base64>` in Nix 2.8).
    pub(crate) nar_hash: String,
    /// The NAR size.
    pub(crate) nar_size: u64,
    /// References, sorted and unique, each a checked store path.
    pub(crate) references: Vec<String>,
    /// The derivation Nix records as having produced it.
    pub(crate) deriver: Option<String>,
    /// When Nix registered it (Unix seconds).
    pub(crate) registration_time: i64,
    /// Whether Nix built it on this machine (`ultimate`): false for paths
    /// substituted, copied or imported, absent for paths added.
    pub(crate) ultimate: bool,
    /// Its content address, for paths added (`nix-store --add`), fixed
    /// outputs and derivations.
    pub(crate) ca: Option<String>,
}

/// Entries each cache holds. Cleared whole when full: a miss costs one
/// Nix query, nothing else.
const CACHE_ENTRIES: usize = 16_384;

/// The Nix store the daemon reports on.
#[derive(Debug)]
pub(crate) struct Store {
    dir: String,
    nix: PathBuf,
    queries: Semaphore,
    /// What Nix registered for outputs that passed every check once. What
    /// Nix records about a valid path changes only if the path is deleted
    /// and registered again; the daemon hashes the path at every
    /// submission and compares with this, so what it signs is always the
    /// content this machine's Nix built in this boot, even from the cache.
    known: Mutex<HashMap<String, Registered>>,
    /// Store derivations that passed their checks: a derivation's path is
    /// the hash of its text, so what it names never changes.
    drvs: Mutex<HashMap<String, Arc<Derivation>>>,
    /// Inputs of builds, as hashed for a trace, with what Nix registered
    /// for them then (see `trace`).
    inputs: Mutex<HashMap<String, (Registered, TraceInput)>>,
}

impl Store {
    pub(crate) fn new(dir: &Path, nix: PathBuf) -> Result<Store, DaemonError> {
        let dir = dir
            .to_str()
            .filter(|d| d.starts_with('/') && !d.ends_with('/') && d.len() <= MAX_STORE_DIR_LEN)
            .ok_or_else(|| DaemonError::Config(format!("store directory {}", dir.display())))?;
        Ok(Store {
            dir: dir.to_owned(),
            nix,
            queries: Semaphore::new(QUERY_CONCURRENCY),
            known: Mutex::new(HashMap::new()),
            drvs: Mutex::new(HashMap::new()),
            inputs: Mutex::new(HashMap::new()),
        })
    }

    /// What [`Store::remember`] kept for `path`.
    pub(crate) fn known(&self, path: &str) -> Option<Registered> {
        lock(&self.known).get(path).cloned()
    }

    /// Keep what Nix registered for an output that passed every check.
    pub(crate) fn remember(&self, path: &str, info: &Registered) {
        insert(&self.known, path, info.clone());
    }

    /// A derivation that passed its checks, if known.
    pub(crate) fn known_drv(&self, drv: &str) -> Option<Arc<Derivation>> {
        lock(&self.drvs).get(drv).cloned()
    }

    /// Keep a derivation that passed its checks.
    pub(crate) fn remember_drv(&self, drv: &str, parsed: &Arc<Derivation>) {
        insert(&self.drvs, drv, Arc::clone(parsed));
    }

    /// A build input hashed before, if Nix still registers it as it did
    /// then (a path deleted and registered again gets a new registration
    /// time, and is hashed again).
    pub(crate) fn known_input(&self, path: &str, now: &Registered) -> Option<TraceInput> {
        lock(&self.inputs)
            .get(path)
            .filter(|(then, _)| then == now)
            .map(|(_, input)| input.clone())
    }

    /// Keep a build input as hashed.
    pub(crate) fn remember_input(&self, info: &Registered, input: &TraceInput) {
        insert(&self.inputs, &input.path, (info.clone(), input.clone()));
    }

    /// The store directory.
    pub(crate) fn dir(&self) -> &str {
        &self.dir
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

    /// What Nix's database records about each of `paths` (`None`: not
    /// valid), in one `nix path-info --json` run. With `derivations`, the
    /// paths are store derivations, described themselves rather than
    /// their outputs (`--derivation`).
    pub(crate) async fn path_info(
        &self,
        paths: &[String],
        derivations: bool,
    ) -> Result<Vec<Option<Registered>>, DaemonError> {
        let flags: &[&str] = if derivations { &["--derivation"] } else { &[] };
        let mut found = self.query(paths, flags).await?;
        Ok(paths.iter().map(|p| found.remove(p).flatten()).collect())
    }

    /// What Nix's database records about every path of the closure of
    /// `paths` (`nix path-info --json --recursive`): the paths and
    /// everything they refer to, directly or not. A path that is not valid
    /// is an error naming it.
    pub(crate) async fn closure_info(
        &self,
        paths: &[String],
    ) -> Result<HashMap<String, Registered>, DaemonError> {
        // Nix 2.8 reads a `.drv` given to `nix path-info` as its outputs;
        // an input source that is a derivation (string context from
        // `drvPath`) is itself in the sandbox, with its own closure.
        let (drvs, others): (Vec<String>, Vec<String>) =
            paths.iter().cloned().partition(|p| p.ends_with(".drv"));
        let mut found = HashMap::new();
        if !others.is_empty() {
            found.extend(self.query(&others, &["--recursive"]).await?);
        }
        if !drvs.is_empty() {
            found.extend(self.query(&drvs, &["--recursive", "--derivation"]).await?);
        }
        let mut closure = HashMap::with_capacity(found.len());
        for (path, info) in found {
            let info = info.ok_or_else(|| DaemonError::NotBuilt {
                path: path.clone(),
                reason: "a build input is not valid in the Nix store".into(),
            })?;
            closure.insert(path, info);
        }
        Ok(closure)
    }

    /// One `nix path-info --json [flags] -- paths` run.
    async fn query(
        &self,
        paths: &[String],
        flags: &[&str],
    ) -> Result<HashMap<String, Option<Registered>>, DaemonError> {
        let first = paths.first().cloned().unwrap_or_default();
        let nix = |reason: String| DaemonError::Nix {
            path: first.clone(),
            reason,
        };
        let _permit = self
            .queries
            .acquire()
            .await
            .map_err(|_| DaemonError::ShuttingDown)?;
        let mut cmd = tokio::process::Command::new(&self.nix);
        // Nix 2.8 needs the feature for `nix path-info`; no substituter
        // may be asked about a path that is not valid here.
        cmd.args(["--extra-experimental-features", "nix-command"])
            .args(["--option", "substituters", ""])
            .args(["path-info", "--json"]);
        cmd.args(flags);
        let mut child = cmd
            .arg("--")
            .args(paths)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| nix(format!("cannot run {}: {e}", self.nix.display())))?;
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(nix("no pipes to nix".into()));
        };
        // A closure has more paths than were asked about.
        let max = if flags.contains(&"--recursive") {
            MAX_CLOSURE_INFO
        } else {
            MAX_INFO_PER_PATH.saturating_mul(paths.len().max(1))
        };
        let limit = u64::try_from(max).unwrap_or(u64::MAX);
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
            .map_err(|_| nix(format!("nix path-info did not answer in {QUERY_TIMEOUT:?}")))?
            .map_err(|e| nix(format!("reading nix path-info: {e}")))?;
        if !status.success() {
            return Err(nix(format!(
                "nix path-info failed ({status}): {}",
                String::from_utf8_lossy(&err).trim()
            )));
        }
        if out.len() > max {
            return Err(nix("nix path-info printed more than the limit".into()));
        }
        self.parse_path_info(&out).map_err(nix)
    }

    /// `nix path-info --json` output: an array of objects, one per path,
    /// `{"path": .., "valid": false}` for a path that is not valid.
    fn parse_path_info(&self, json: &[u8]) -> Result<HashMap<String, Option<Registered>>, String> {
        use serde_json::Value;
        let items: Vec<Value> = serde_json::from_slice(json)
            .map_err(|e| format!("nix path-info printed no JSON array: {e}"))?;
        let mut out = HashMap::with_capacity(items.len());
        for item in items {
            let text = |key: &str| item.get(key).and_then(Value::as_str).map(str::to_owned);
            let path = text("path").ok_or("nix path-info: an item has no path")?;
            self.check_path(&path)
                .map_err(|e| format!("nix path-info: {e}"))?;
            if item.get("valid").and_then(Value::as_bool) == Some(false) {
                out.insert(path, None);
                continue;
            }
            let nar_hash = text("narHash").ok_or("nix path-info: no narHash")?;
            let nar_size = item
                .get("narSize")
                .and_then(Value::as_u64)
                .ok_or("nix path-info: no narSize")?;
            let registration_time = item
                .get("registrationTime")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let deriver = text("deriver");
            if let Some(d) = &deriver {
                self.check_drv(d)
                    .map_err(|e| format!("nix path-info: deriver: {e}"))?;
            }
            let mut references = Vec::new();
            for r in item
                .get("references")
                .and_then(Value::as_array)
                .ok_or("nix path-info: no references")?
            {
                let r = r.as_str().ok_or("nix path-info: a reference is not text")?;
                self.check_path(r)
                    .map_err(|e| format!("nix path-info printed a bad reference: {e}"))?;
                references.push(r.to_owned());
            }
            references.sort();
            references.dedup();
            if references.len() > provenix_verifier::MAX_REFERENCES {
                return Err(format!(
                    "{path}: {} references, over the limit of {}",
                    references.len(),
                    provenix_verifier::MAX_REFERENCES
                ));
            }
            out.insert(
                path,
                Some(Registered {
                    nar_hash,
                    nar_size,
                    references,
                    deriver,
                    registration_time,
                    ultimate: item.get("ultimate").and_then(Value::as_bool) == Some(true),
                    ca: text("ca"),
                }),
            );
        }
        Ok(out)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The caches hold no invariant a panicking holder could break.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn insert<T>(m: &Mutex<HashMap<String, T>>, key: &str, value: T) {
    let mut map = lock(m);
    if map.len() >= CACHE_ENTRIES {
        map.clear();
    }
    map.insert(key.to_owned(), value);
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
