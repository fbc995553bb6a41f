//! The daemon behind the gRPC services: [`Worker`] as a [`BuildBackend`] and
//! a [`LogBackend`] of its current log.

use std::sync::Arc;

use provenix_verifier::Hash;
use tonic::Status;

use super::backend::{AttestedCheckpoint, BuildBackend, Head, LogBackend};
use crate::daemon::{BundleFor, DaemonError, Worker};

/// The running daemon, served over gRPC.
#[derive(Clone)]
pub struct DaemonBackend(pub Arc<Worker>);

/// What a client may learn of a daemon error: its own mistakes in full,
/// the daemon's state coarsely.
fn status(e: DaemonError) -> Status {
    match e {
        DaemonError::NoOutputs
        | DaemonError::TooManyOutputs { .. }
        | DaemonError::DuplicateOutput(_)
        | DaemonError::BadStorePath { .. } => Status::invalid_argument(e.to_string()),
        DaemonError::NotFound(_) | DaemonError::Lost { .. } => Status::not_found(e.to_string()),
        DaemonError::NotBuilt { .. } => Status::failed_precondition(e.to_string()),
        DaemonError::StoreCorruption { .. } => Status::data_loss(e.to_string()),
        DaemonError::ShuttingDown => Status::unavailable(e.to_string()),
        DaemonError::NotCovered { .. } | DaemonError::Timeout(_) => {
            Status::unavailable(e.to_string())
        }
        other => Status::internal(other.to_string()),
    }
}

#[tonic::async_trait]
impl BuildBackend for DaemonBackend {
    async fn submit(
        &self,
        derivation: Option<String>,
        out_paths: Vec<String>,
    ) -> Result<Vec<u64>, Status> {
        let done = self.0.submit(derivation, out_paths).await.map_err(status)?;
        Ok(done.into_iter().map(|s| s.log_index).collect())
    }

    async fn bundle(&self, index: u64) -> Result<Option<Vec<u8>>, Status> {
        match self.0.bundle(BundleFor::Index(index)).await {
            Ok(b) => Ok(Some(b.to_cbor())),
            Err(DaemonError::NotCovered { .. } | DaemonError::Timeout(_)) => Ok(None),
            Err(e) => Err(status(e)),
        }
    }
}

#[tonic::async_trait]
impl LogBackend for DaemonBackend {
    async fn head(&self) -> Result<Head, Status> {
        Ok(self.0.head())
    }

    async fn entries(&self, start: u64, end: u64) -> Result<Vec<Vec<u8>>, Status> {
        let worker = self.0.clone();
        tokio::task::spawn_blocking(move || worker.entries(start..end))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(status)
    }

    async fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, Status> {
        self.0.inclusion_proof(index, size).map_err(status)
    }

    async fn consistency_proof(&self, size1: u64, size2: u64) -> Result<Vec<Hash>, Status> {
        self.0.consistency_proof(size1, size2).map_err(status)
    }

    async fn checkpoint(&self, size: Option<u64>) -> Result<Option<AttestedCheckpoint>, Status> {
        match size {
            None => Ok(self.0.latest_checkpoint().map(|c| (*c).clone())),
            Some(n) => {
                let all = self.0.current_log().checkpoints().map_err(status)?;
                Ok(all.into_iter().find(|c| c.size == n))
            }
        }
    }

    async fn bundle(&self, index: u64) -> Result<Option<Vec<u8>>, Status> {
        match self.0.current_log().bundle(index) {
            Ok(b) => Ok(Some(b.to_cbor())),
            Err(DaemonError::NotCovered { .. }) => Ok(None),
            Err(e) => Err(status(e)),
        }
    }
}
