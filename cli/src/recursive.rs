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

use provenix_verifier::{BundleLookup, Refusal, VerifiedBundle, nixsig};

use crate::sources::{Fetched, cache::Cache, grpc};

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
    pub(crate) workers: Vec<(grpc::LogApi, HashMap<String, Vec<u64>>)>,
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
        for (api, index) in &self.workers {
            for &i in index.get(path).map(Vec::as_slice).unwrap_or_default() {
                match grpc::bundle(api, i) {
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
