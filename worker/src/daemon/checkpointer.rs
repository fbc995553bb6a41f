//! The checkpointer: every N entries or T milliseconds (whichever comes
//! first, and only when the log has grown), it signs the current tree head
//! as a C2SP checkpoint, asks the platform for evidence binding it
//! (`REPORT_DATA = checkpoint_report_data(note)`, DESIGN.md step 5),
//! verifies a bundle under it with the verifier library, records it in the
//! log directory's history (fsynced) and only then serves it.
//!
//! It runs beside the appender, not inside it: a hardware report takes
//! milliseconds, and appends need not wait for one. It sees only heads the
//! appender has published, which are durable.

use std::sync::Arc;
use std::time::Duration;

use provenix_verifier::{Checkpoint, checkpoint_report_data};
use tokio::sync::{Notify, watch};
use tokio::time::MissedTickBehavior;

use super::logdir::{AttestedCheckpoint, Head, LogDir};
use super::selfcheck::SelfCheck;
use super::{DaemonError, unix_now};
use crate::log::CheckpointSigner;
use crate::platform::{Platform, with_vek};

pub(crate) struct Checkpointer {
    pub(crate) log: Arc<LogDir>,
    pub(crate) signer: CheckpointSigner,
    pub(crate) platform: Arc<Platform>,
    pub(crate) check: Arc<SelfCheck>,
    pub(crate) vek: Option<Vec<u8>>,
    pub(crate) head: watch::Receiver<Head>,
    pub(crate) nudge: Arc<Notify>,
    pub(crate) stop: watch::Receiver<bool>,
    pub(crate) every: u64,
    pub(crate) interval: Duration,
    /// Held until this is done writing.
    pub(crate) _lock: Arc<super::StateLock>,
}

impl Checkpointer {
    /// Run until `stop` turns true; then make a last checkpoint of whatever
    /// the log holds (the appender has stopped by then).
    pub(crate) async fn run(mut self) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut appending = true;
        loop {
            let force = tokio::select! {
                _ = tick.tick() => true,
                () = self.nudge.notified() => true,
                changed = self.head.changed(), if appending => {
                    appending = changed.is_ok();
                    false
                }
                _ = self.stop.changed() => break,
            };
            let head = *self.head.borrow_and_update();
            let last = self.last_size();
            if head.size > last && (force || head.size.saturating_sub(last) >= self.every) {
                self.checkpoint_logged(head).await;
            }
        }
        let head = *self.head.borrow();
        if head.size > self.last_size() {
            self.checkpoint_logged(head).await;
        }
    }

    fn last_size(&self) -> u64 {
        self.log.latest_checkpoint().map_or(0, |cp| cp.size)
    }

    async fn checkpoint_logged(&self, head: Head) {
        if let Err(e) = self.checkpoint(head).await {
            eprintln!(
                "provenix-worker: checkpoint of size {} failed: {e}",
                head.size
            );
        }
    }

    /// Sign, attest, self-check, record and publish a checkpoint of `head`.
    async fn checkpoint(&self, head: Head) -> Result<(), DaemonError> {
        let checkpoint = Checkpoint::new(self.log.origin(), head.size, head.root)?;
        // The worker's clock, signed and attested with the tree head.
        let note = self.signer.sign_at(&checkpoint, unix_now());
        let report_data = checkpoint_report_data(&note);
        let platform = self.platform.clone();
        let evidence = tokio::task::spawn_blocking(move || platform.evidence(&report_data, 0))
            .await
            .map_err(|e| DaemonError::Internal(format!("evidence task: {e}")))??;
        let cp = AttestedCheckpoint {
            note,
            size: head.size,
            root: head.root,
            evidence: with_vek(evidence, self.vek.as_deref()),
        };
        let log = self.log.clone();
        let check = self.check.clone();
        tokio::task::spawn_blocking(move || {
            // The newest entry's bundle under this checkpoint must verify
            // as a user's would: key, commit, both pieces of evidence, the
            // same VM, the inclusion proof.
            let last = head.size.saturating_sub(1);
            check.bundle(&log.bundle_under(last, &cp)?, unix_now())?;
            log.add_checkpoint(cp)
        })
        .await
        .map_err(|e| DaemonError::Internal(format!("checkpoint task: {e}")))?
    }
}
