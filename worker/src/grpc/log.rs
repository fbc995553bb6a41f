//! The log API: every position in a request is checked against the log's
//! head before the backend sees it.
//!
//! Codes: a position past the head is `OUT_OF_RANGE` (it may become valid
//! as the log grows); a request that can never be valid (an empty range, a
//! proof for tree size 0, an index not below its tree size) is
//! `INVALID_ARGUMENT`.

use std::sync::Arc;

use provenix_verifier::Evidence;
use tonic::{Request, Response, Status};

use super::backend::{AttestedCheckpoint, LogBackend};
use super::proto;
use super::proto::log_server::{Log, LogServer};

/// Most entries one `Entries` call returns, like the log directory's own
/// read limit and CT's `get-entries` batches.
pub const MAX_ENTRIES: u64 = 1000;
/// Most bytes of entries in one `Entries` answer: under tonic's default
/// 4 MiB limit on a message a client decodes, with room for framing. One
/// entry is always returned, and the log bounds an entry at 1 MiB
/// (`crate::log::MAX_ENTRY_LEN`).
pub const MAX_ENTRIES_BYTES: usize = 3 << 20;
/// Largest log request decoded: every log request is a few integers.
pub const MAX_LOG_REQUEST: usize = 1 << 10;

/// The `Log` gRPC service over a [`LogBackend`].
pub struct LogService {
    backend: Arc<dyn LogBackend>,
}

impl LogService {
    /// The service over `backend`.
    pub fn new(backend: Arc<dyn LogBackend>) -> Self {
        LogService { backend }
    }

    /// The tonic server of this service, with its request size limit.
    pub fn into_server(self) -> LogServer<LogService> {
        LogServer::new(self).max_decoding_message_size(MAX_LOG_REQUEST)
    }

    async fn head_size(&self) -> Result<u64, Status> {
        Ok(self.backend.head().await?.size)
    }
}

/// `OUT_OF_RANGE` for a position past the head.
fn past_head(what: &str, value: u64, size: u64) -> Status {
    Status::out_of_range(format!("{what} {value} is beyond the log's size {size}"))
}

fn hashes(proof: Vec<provenix_verifier::Hash>) -> proto::ProofResponse {
    proto::ProofResponse {
        hashes: proof.into_iter().map(|h| h.to_vec()).collect(),
    }
}

fn checkpoint_response(cp: AttestedCheckpoint) -> proto::CheckpointResponse {
    proto::CheckpointResponse {
        note: cp.note,
        size: cp.size,
        root: cp.root.to_vec(),
        evidence_cbor: cp.evidence.to_cbor(),
        evidence: match cp.evidence {
            Evidence::Snp(e) => Some(proto::SnpEvidence {
                report: e.report,
                cert_table: e.cert_table,
                vek: e.vek,
            }),
            // The proto's typed field is SNP's; TPM and Azure evidence
            // travel in `evidence_cbor` only.
            Evidence::Tpm(_) | Evidence::Azure(_) => None,
        },
    }
}

#[tonic::async_trait]
impl Log for LogService {
    async fn head(
        &self,
        _request: Request<proto::HeadRequest>,
    ) -> Result<Response<proto::HeadResponse>, Status> {
        let head = self.backend.head().await?;
        Ok(Response::new(proto::HeadResponse {
            size: head.size,
            root: head.root.to_vec(),
        }))
    }

    async fn entries(
        &self,
        request: Request<proto::EntriesRequest>,
    ) -> Result<Response<proto::EntriesResponse>, Status> {
        let proto::EntriesRequest { start, end } = request.into_inner();
        if start >= end {
            return Err(Status::invalid_argument(format!(
                "empty range: start {start} is not below end {end}"
            )));
        }
        let size = self.head_size().await?;
        if end > size {
            return Err(past_head("end", end, size));
        }
        // `start < end`, so the difference is at least 1.
        let end = end.min(start.saturating_add(MAX_ENTRIES));
        let mut entries = self.backend.entries(start, end).await?;
        if entries.len() > usize::try_from(end.saturating_sub(start)).unwrap_or(usize::MAX) {
            return Err(Status::internal("the log returned more entries than asked"));
        }
        // Keep a prefix under the byte budget, and at least one entry.
        let mut total = 0usize;
        let keep = entries
            .iter()
            .position(|e| {
                total = total.saturating_add(e.len());
                total > MAX_ENTRIES_BYTES
            })
            .unwrap_or(entries.len())
            .max(1);
        entries.truncate(keep);
        Ok(Response::new(proto::EntriesResponse { entries }))
    }

    async fn inclusion_proof(
        &self,
        request: Request<proto::InclusionProofRequest>,
    ) -> Result<Response<proto::ProofResponse>, Status> {
        let proto::InclusionProofRequest { index, size } = request.into_inner();
        if index >= size {
            return Err(Status::invalid_argument(format!(
                "index {index} is not below the tree size {size}"
            )));
        }
        let head = self.head_size().await?;
        if size > head {
            return Err(past_head("tree size", size, head));
        }
        let proof = self.backend.inclusion_proof(index, size).await?;
        Ok(Response::new(hashes(proof)))
    }

    async fn consistency_proof(
        &self,
        request: Request<proto::ConsistencyProofRequest>,
    ) -> Result<Response<proto::ProofResponse>, Status> {
        let proto::ConsistencyProofRequest { size1, size2 } = request.into_inner();
        // RFC 9162 section 2.1.4: a consistency proof needs
        // 0 < size1 <= size2.
        if size1 == 0 || size1 > size2 {
            return Err(Status::invalid_argument(format!(
                "no consistency proof from tree size {size1} to {size2}: \
                 0 < size1 <= size2 is required"
            )));
        }
        let head = self.head_size().await?;
        if size2 > head {
            return Err(past_head("tree size", size2, head));
        }
        let proof = self.backend.consistency_proof(size1, size2).await?;
        Ok(Response::new(hashes(proof)))
    }

    async fn checkpoint(
        &self,
        request: Request<proto::CheckpointRequest>,
    ) -> Result<Response<proto::CheckpointResponse>, Status> {
        let size = request.into_inner().size;
        if let Some(size) = size {
            let head = self.head_size().await?;
            if size > head {
                return Err(past_head("tree size", size, head));
            }
        }
        match self.backend.checkpoint(size).await? {
            Some(cp) => Ok(Response::new(checkpoint_response(cp))),
            None => Err(Status::not_found(match size {
                Some(size) => format!("no attested checkpoint of tree size {size}"),
                None => "no attested checkpoint yet".to_owned(),
            })),
        }
    }

    async fn bundle(
        &self,
        request: Request<proto::BundleRequest>,
    ) -> Result<Response<proto::BundleResponse>, Status> {
        let index = request.into_inner().index;
        let head = self.head_size().await?;
        if index >= head {
            return Err(Status::out_of_range(format!(
                "index {index} is not below the log's size {head}"
            )));
        }
        match self.backend.bundle(index).await? {
            Some(bundle) => Ok(Response::new(proto::BundleResponse { bundle })),
            // Transient: the checkpointer attests a new checkpoint every N
            // entries or T milliseconds.
            None => Err(Status::unavailable(format!(
                "entry {index} is not covered by an attested checkpoint yet; retry"
            ))),
        }
    }
}
