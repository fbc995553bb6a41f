//! The appender: one thread owns the current log's writes. It takes every
//! submission queued while the previous batch was being written, signs each
//! output's statement with the index it will get, appends them all with one
//! `append_batch` (one `fdatasync`), and only then acknowledges each
//! submitter (group commit).
//!
//! Indices are assigned here and nowhere else: the index is inside the
//! signed statement, so signing happens after the position is known.
//!
//! Each store-path statement also carries K's Nix signature over the
//! output's narinfo fingerprint (DESIGN.md, "The binding", step 4), made
//! here from the same hash, size and references, so that a binary cache
//! exported from the statement is accepted by plain Nix.

use std::sync::Arc;

use provenix_verifier::{Statement, Subject, Trace};
use ring::signature::Ed25519KeyPair;
use tokio::sync::{mpsc, oneshot, watch};

use super::logdir::{Head, LogDir};
use super::{DaemonError, PathIndex, Submitted, unix_now};
use crate::log::{Log, MAX_ENTRY_LEN};
use crate::nar::NarDigest;

/// One output, hashed by the daemon, with its references from Nix.
pub(crate) struct Output {
    pub(crate) path: String,
    pub(crate) nar: NarDigest,
    pub(crate) references: Vec<String>,
}

/// One submission: its outputs get consecutive indices in one batch, and
/// one reply.
pub(crate) struct Job {
    pub(crate) deriver: Option<String>,
    /// The build's trace, the same in every output's statement.
    pub(crate) trace: Option<Trace>,
    pub(crate) outputs: Vec<Output>,
    pub(crate) reply: oneshot::Sender<Result<Vec<Submitted>, DaemonError>>,
}

pub(crate) struct Appender {
    pub(crate) log: Arc<LogDir>,
    pub(crate) key: Arc<Ed25519KeyPair>,
    pub(crate) public: [u8; 32],
    pub(crate) commit: String,
    pub(crate) head: watch::Sender<Head>,
    pub(crate) paths: Arc<PathIndex>,
    /// Most statements in one batch.
    pub(crate) max_batch: usize,
    /// Whether statements carry a Nix signature: only for the default
    /// store directory, the one Nix fingerprints (`nixsig::STORE_DIR`) name.
    pub(crate) nix_signatures: bool,
    /// Held until this is done writing.
    pub(crate) _lock: Arc<super::StateLock>,
}

impl Appender {
    /// Run until every sender of `queue` is gone and the queue is empty,
    /// then make the log's derived files durable.
    pub(crate) fn run(self, mut queue: mpsc::Receiver<Job>) {
        while let Some(first) = queue.blocking_recv() {
            let mut count = first.outputs.len();
            let mut jobs = vec![first];
            while count < self.max_batch {
                match queue.try_recv() {
                    Ok(job) => {
                        count = count.saturating_add(job.outputs.len());
                        jobs.push(job);
                    }
                    Err(_) => break,
                }
            }
            self.commit(jobs);
        }
        if let Err(e) = self.log.write_log().sync() {
            eprintln!("provenix-worker: syncing the log on exit: {e}");
        }
    }

    /// Sign, append and acknowledge one batch.
    fn commit(&self, jobs: Vec<Job>) {
        let time = unix_now();
        let mut log = self.log.write_log();
        let first = log.size();
        let mut next = first;
        let mut entries: Vec<Vec<u8>> = Vec::new();
        let mut accepted: Vec<(Job, Vec<Submitted>)> = Vec::with_capacity(jobs.len());
        for job in jobs {
            match self.sign(&job, next, time) {
                Ok((signed, submitted)) => {
                    next = next.saturating_add(u64::try_from(signed.len()).unwrap_or(u64::MAX));
                    entries.extend(signed);
                    accepted.push((job, submitted));
                }
                // One bad submission does not hold up the others.
                Err(e) => {
                    let _ = job.reply.send(Err(e));
                }
            }
        }
        if entries.is_empty() {
            return;
        }
        match log.append_batch(&entries) {
            Ok(range) if range.start == first => {
                let head = Head {
                    size: log.size(),
                    root: log.root(),
                };
                drop(log);
                self.head.send_replace(head);
                self.paths
                    .record(&self.log, accepted.iter().flat_map(|(_, s)| s));
                for (job, submitted) in accepted {
                    // A submitter that has gone away is not an error: its
                    // statements are logged all the same.
                    let _ = job.reply.send(Ok(submitted));
                }
            }
            Ok(range) => {
                // Cannot happen: this thread is the log's only writer.
                let why = format!(
                    "the log appended at {} while statements were signed for {first}",
                    range.start
                );
                eprintln!("provenix-worker: {why}");
                for (job, _) in accepted {
                    let _ = job.reply.send(Err(DaemonError::Internal(why.clone())));
                }
            }
            Err(e) => {
                let why = e.to_string();
                eprintln!("provenix-worker: append failed: {why}; reopening the log");
                for (job, _) in accepted {
                    let _ = job.reply.send(Err(DaemonError::Append(why.clone())));
                }
                // Whether the batch (or part of it) reached the disk is known
                // only after recovery; entries that did are valid statements
                // at their indices, just never acknowledged.
                let dir = log.dir().to_owned();
                match Log::open(&dir) {
                    Ok(reopened) => {
                        *log = reopened;
                        let head = Head {
                            size: log.size(),
                            root: log.root(),
                        };
                        drop(log);
                        self.head.send_replace(head);
                    }
                    Err(e) => eprintln!("provenix-worker: reopening the log failed: {e}"),
                }
            }
        }
    }

    /// The signed statements of `job`'s outputs at indices from `first`.
    fn sign(
        &self,
        job: &Job,
        first: u64,
        time: i64,
    ) -> Result<(Vec<Vec<u8>>, Vec<Submitted>), DaemonError> {
        let mut signed = Vec::with_capacity(job.outputs.len());
        let mut submitted = Vec::with_capacity(job.outputs.len());
        let mut index = first;
        for out in &job.outputs {
            let mut statement = Statement {
                subject: Subject::StorePath(out.path.clone()),
                sha256: out.nar.sha256,
                size: out.nar.size,
                references: out.references.clone(),
                deriver: job.deriver.clone(),
                worker_key: self.public,
                source_commit: self.commit.clone(),
                log_index: Some(index),
                time,
                nix_signature: None,
                trace: job.trace.clone(),
            };
            if self.nix_signatures {
                statement.add_nix_signature(&self.key)?;
            }
            let bytes = statement.sign(&self.key)?;
            if bytes.len() > MAX_ENTRY_LEN {
                return Err(DaemonError::StatementTooLarge {
                    path: out.path.clone(),
                    len: bytes.len(),
                });
            }
            signed.push(bytes);
            submitted.push(Submitted {
                store_path: out.path.clone(),
                log_index: index,
                nar: out.nar,
                worker_key: self.public,
            });
            index = index
                .checked_add(1)
                .ok_or(DaemonError::Log(crate::log::Error::Full))?;
        }
        Ok((signed, submitted))
    }
}
