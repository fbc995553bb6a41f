//! What the gRPC services need from the daemon, as traits.
//!
//! The services validate every request before calling a backend: sizes and
//! indices are within the head, ranges are non-empty and bounded, store
//! paths are well formed. A backend's errors are returned to the client as
//! they are, so they should say what went wrong without leaking more than
//! the client may know.

use provenix_verifier::Hash;
use tonic::Status;

// The daemon's own types: what a log backend returns is what the daemon
// keeps.
pub use crate::daemon::{AttestedCheckpoint, Head};

/// Reads of the worker's log. The log is append-only: a size the service
/// checked against [`LogBackend::head`] stays valid.
#[tonic::async_trait]
pub trait LogBackend: Send + Sync + 'static {
    /// The current tree head: entries acknowledged so far.
    async fn head(&self) -> Result<Head, Status>;

    /// Entries `start..end`, in order; `start < end <= head().size` and
    /// `end - start <= MAX_ENTRIES`. May return fewer (a prefix), never
    /// more.
    async fn entries(&self, start: u64, end: u64) -> Result<Vec<Vec<u8>>, Status>;

    /// The inclusion proof of entry `index` in the tree of `size` entries;
    /// `index < size <= head().size`.
    async fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, Status>;

    /// The consistency proof from the tree of `size1` entries to that of
    /// `size2`; `0 < size1 <= size2 <= head().size`.
    async fn consistency_proof(&self, size1: u64, size2: u64) -> Result<Vec<Hash>, Status>;

    /// The attested checkpoint of tree size `size`, or the latest one when
    /// `size` is `None`; `None` when there is no such checkpoint.
    async fn checkpoint(&self, size: Option<u64>) -> Result<Option<AttestedCheckpoint>, Status>;

    /// The CBOR bundle of entry `index` (`index < head().size`) under the
    /// latest attested checkpoint, or `None` when no attested checkpoint
    /// covers the entry yet. Answers at once.
    async fn bundle(&self, index: u64) -> Result<Option<Vec<u8>>, Status>;
}

/// What the build API does with what Nix built.
#[tonic::async_trait]
pub trait BuildBackend: Send + Sync + 'static {
    /// Log the outputs `out_paths` of `derivation`, which Nix has just
    /// built (or found valid) in the worker's store: compute each output's
    /// NAR hash and size from the store, sign a statement, append it, and
    /// return once it is durable. One log index per output, in the order
    /// of `out_paths`.
    ///
    /// The paths are well-formed top-level store paths (see
    /// [`BuildConfig`](super::BuildConfig)); the backend still treats them
    /// as untrusted names, never as trusted content.
    async fn submit(
        &self,
        derivation: Option<String>,
        out_paths: Vec<String>,
    ) -> Result<Vec<u64>, Status>;

    /// The CBOR bundle of entry `index`, once an attested checkpoint covers
    /// it: the backend may wait for its next checkpoint, for a bounded
    /// time, and returns `None` if none comes.
    async fn bundle(&self, index: u64) -> Result<Option<Vec<u8>>, Status>;
}
