//! `provenix verify --store-path P --recursive`: P is accepted only if its
//! statement is, and every input in its build trace is trusted,
//! recursively ([`provenix_verifier::decide_graph`]).
//!
//! The graph is walked on demand: the bundles of each path are gathered
//! when its decision is first needed, from every source given (bundle
//! files, caches, workers' log APIs), so a cache is asked only about the
//! inputs of builders that could count. No local store is needed: without
//! one, the target is decided on what the builders state.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use anyhow::Result;

use provenix_verifier::{BundleLookup, Refusal, VerifiedBundle, nixsig};

use crate::sources::{Fetched, cache::Cache, grpc};

/// A worker's log API and which of its entries are about which store
/// path, read up to `scanned` entries.
pub(crate) struct WorkerLog {
    pub(crate) api: grpc::LogApi,
    index: HashMap<String, Vec<u64>>,
    scanned: u64,
}

impl WorkerLog {
    /// Connect and read the whole log once.
    pub(crate) fn open(api: grpc::LogApi) -> Result<WorkerLog> {
        let mut w = WorkerLog {
            api,
            index: HashMap::new(),
            scanned: 0,
        };
        w.catch_up()?;
        Ok(w)
    }

    /// Read the entries appended since the last scan, if any.
    pub(crate) fn catch_up(&mut self) -> Result<()> {
        let (index, size) = grpc::subjects(&self.api, self.scanned, |_| true, |_, _| {})?;
        for (path, entries) in index {
            self.index.entry(path).or_default().extend(entries);
        }
        self.scanned = size;
        Ok(())
    }

    /// The entries about `path`.
    pub(crate) fn entries(&self, path: &str) -> &[u64] {
        self.index.get(path).map(Vec::as_slice).unwrap_or_default()
    }

    /// A store path it has entries about whose name starts with `prefix`.
    pub(crate) fn find(&self, prefix: &str) -> Option<&str> {
        self.index
            .keys()
            .find(|p| p.starts_with(prefix))
            .map(String::as_str)
    }
}

/// Verifies the bundles found for one path (and screens their
/// checkpoints); given by `provenix verify`.
pub(crate) type Check<'a> =
    dyn FnMut(&str, Vec<Fetched>) -> Vec<(String, Result<VerifiedBundle, Refusal>)> + 'a;

/// Every source of bundles, asked path by path.
pub(crate) struct Sources<'a> {
    /// Bundle files, by the store path their statement claims.
    pub(crate) files: &'a HashMap<String, Vec<Fetched>>,
    /// Binary caches.
    pub(crate) caches: &'a [Cache],
    /// Workers' log APIs, each with which entries are about which path.
    pub(crate) workers: &'a Mutex<Vec<WorkerLog>>,
    /// Verifies what was found.
    pub(crate) check: Box<Check<'a>>,
    /// Sources that failed (not "not found"), for a warning each.
    pub(crate) failures: Vec<String>,
    /// Paths looked up.
    pub(crate) lookups: usize,
}

impl BundleLookup for Sources<'_> {
    fn bundles(&mut self, path: &str) -> provenix_verifier::Found {
        self.lookups = self.lookups.saturating_add(1);
        let mut found: Vec<Fetched> = self.files.get(path).cloned().unwrap_or_default();
        for cache in self.caches {
            match cache.fetch_if_present(path) {
                Ok(Some(f)) => found.push(f),
                Ok(None) => {}
                Err(e) => self.failures.push(format!("{e:#}")),
            }
        }
        for w in self
            .workers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            for &i in w.entries(path) {
                match grpc::bundle(&w.api, i) {
                    Ok(f) => found.push(f),
                    Err(e) => self.failures.push(format!("{e:#}")),
                }
            }
        }
        (self.check)(path, found)
    }

    fn signed_by(&mut self, path: &str, nar_sha256: &[u8; 32], keys: &[String]) -> Option<String> {
        // A narinfo from any cache, signed by one of the keys over the
        // fingerprint of the hash the trace recorded.
        for cache in self.caches {
            let Ok(Some(f)) = cache.fetch_narinfo_if_present(path) else {
                continue;
            };
            let references: Vec<String> = f
                .references
                .iter()
                .map(|r| format!("{}/{r}", nixsig::STORE_DIR))
                .collect();
            let Ok(fingerprint) = nixsig::fingerprint(path, nar_sha256, f.nar_size, &references)
            else {
                continue;
            };
            for sig in &f.sigs {
                for key in keys {
                    if nixsig::verify(sig, key, &fingerprint).is_ok() {
                        return Some(key.split(':').next().unwrap_or_default().to_owned());
                    }
                }
            }
        }
        None
    }
}
