//! Test support: simulated workers that keep a log, sign checkpoints with
//! a `provenix-time` line and attest them, as the worker daemon does, built
//! from the firmware simulator and the verifier's own formats, plus an
//! RFC 9162 tree written out from the RFC's definitions (section 2.1) for
//! roots, inclusion and consistency proofs.

#![allow(dead_code, unreachable_pub)] // each test binary uses a part

use std::path::{Path, PathBuf};

use provenix_firmware::sim::{ChainParams, ReportParams, SimPlatform, VekKind, ark_fingerprint};
use provenix_firmware::snp::Product;
use provenix_verifier::{
    Bundle, Checkpoint, ConsistencyProof, EMPTY_ROOT, Evidence, Hash, Identity, InclusionProof,
    SnpEvidence, Statement, Subject, VerifierKey, checkpoint_report_data, identity_report_data,
    leaf_hash, log_origin, node_hash, signature_line, statement_report_data, time_extension,
};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{Ed25519KeyPair, KeyPair};

pub const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .try_into()
        .unwrap()
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .try_into()
        .unwrap()
}

/// A fresh directory, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let mut r = [0u8; 8];
        SystemRandom::new().fill(&mut r).unwrap();
        let path = std::env::temp_dir().join(format!(
            "provenix-{tag}-{}-{}",
            std::process::id(),
            hex::encode(r)
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A policy file trusting the simulator's Milan root, with `extra` TOML
/// appended.
pub fn policy_file(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("policy.toml");
    std::fs::write(
        &path,
        format!(
            "trust_amd_roots = false\n\
             [[roots]]\nname = \"sim\"\nproduct = \"Milan\"\nsha256 = \"{}\"\n\
             [snp]\nmeasurements = [\"{}\"]\n{extra}\n",
            hex::encode(ark_fingerprint(Product::Milan)),
            "00".repeat(48)
        ),
    )
    .unwrap();
    path
}

/// The largest power of two below `n` (n > 1), RFC 9162 section 2.1.1's k.
fn split(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// MTH over leaf hashes.
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => EMPTY_ROOT,
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// PATH(m, D[n]).
pub fn inclusion(m: usize, leaves: &[Hash]) -> Vec<Hash> {
    let n = leaves.len();
    if n <= 1 {
        return Vec::new();
    }
    let k = split(n);
    if m < k {
        let mut p = inclusion(m, &leaves[..k]);
        p.push(root(&leaves[k..]));
        p
    } else {
        let mut p = inclusion(m - k, &leaves[k..]);
        p.push(root(&leaves[..k]));
        p
    }
}

/// SUBPROOF(m, D[n], b).
fn subproof(m: usize, leaves: &[Hash], whole: bool) -> Vec<Hash> {
    let n = leaves.len();
    if m == n {
        return if whole {
            Vec::new()
        } else {
            vec![root(leaves)]
        };
    }
    let k = split(n);
    if m <= k {
        let mut p = subproof(m, &leaves[..k], whole);
        p.push(root(&leaves[k..]));
        p
    } else {
        let mut p = subproof(m - k, &leaves[k..], false);
        p.push(root(&leaves[..k]));
        p
    }
}

/// A statement about the file `artifact` with contents `content`, signed
/// by `key` (whose public half is `public`), at log `index` (None: direct
/// mode).
pub fn file_statement(
    key: &Ed25519KeyPair,
    public: [u8; 32],
    content: &[u8],
    index: Option<u64>,
) -> Vec<u8> {
    Statement {
        subject: Subject::File("artifact".into()),
        sha256: sha256(content),
        size: content.len().try_into().unwrap(),
        references: Vec::new(),
        deriver: None,
        worker_key: public,
        source_commit: COMMIT.into(),
        log_index: index,
        time: now(),
        nix_signature: None,
        trace: None,
    }
    .sign(key)
    .unwrap()
}

/// A simulated worker: one chip, one key, one identity.
pub struct Worker {
    pub platform: SimPlatform,
    pub key: Ed25519KeyPair,
    pub public: [u8; 32],
    pub nonce: [u8; 32],
    pub chip: u8,
}

impl Worker {
    pub fn new(chip: u8) -> Worker {
        let platform = SimPlatform::new(&ChainParams {
            product: Product::Milan,
            kind: VekKind::Vcek,
            tcb: ReportParams::default().tcb,
            hw_id: [chip; 64],
            not_before: now() - 86_400,
            not_after: now() + 86_400,
        })
        .unwrap();
        let rng = SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let public = key.public_key().as_ref().try_into().unwrap();
        let mut nonce = [0u8; 32];
        rng.fill(&mut nonce).unwrap();
        Worker {
            platform,
            key,
            public,
            nonce,
            chip,
        }
    }

    pub fn origin(&self) -> String {
        log_origin(&self.public)
    }

    fn evidence(&self, report_data: [u8; 64]) -> Evidence {
        let p = self.platform.chain().params();
        let report = self
            .platform
            .report_bytes(&ReportParams {
                product: p.product,
                tcb: p.tcb,
                chip_id: p.hw_id,
                report_data,
                ..ReportParams::default()
            })
            .unwrap();
        SnpEvidence {
            report: report.to_vec(),
            cert_table: Some(self.platform.cert_table().unwrap()),
            vek: None,
        }
        .into()
    }

    /// A signed statement that `subject` (built from `deriver`) has the
    /// NAR digest of `content`, at log index `index` (None: direct mode).
    pub fn statement(
        &self,
        subject: &str,
        deriver: Option<&str>,
        content: &[u8],
        index: Option<u64>,
    ) -> Vec<u8> {
        self.traced(subject, deriver, content, index, None)
    }

    /// [`Worker::statement`] with a build trace.
    pub fn traced(
        &self,
        subject: &str,
        deriver: Option<&str>,
        content: &[u8],
        index: Option<u64>,
        trace: Option<provenix_verifier::Trace>,
    ) -> Vec<u8> {
        Statement {
            subject: Subject::StorePath(subject.into()),
            sha256: sha256(content),
            size: content.len().try_into().unwrap(),
            references: Vec::new(),
            deriver: deriver.map(str::to_owned),
            worker_key: self.public,
            source_commit: COMMIT.into(),
            log_index: index,
            time: now(),
            nix_signature: None,
            trace,
        }
        .sign(&self.key)
        .unwrap()
    }

    /// A direct-mode bundle of the statement `signed`.
    pub fn direct(&self, signed: &[u8]) -> Vec<u8> {
        let s = Statement::verify(signed).unwrap();
        Bundle::Direct {
            statement: signed.to_vec(),
            evidence: self.evidence(statement_report_data(&s.to_cbor())),
        }
        .to_cbor()
    }

    /// The signed checkpoint note of the log `entries`, stamped `time`
    /// (None: no time line, as before the worker wrote one).
    pub fn note(&self, entries: &[Vec<u8>], time: Option<i64>) -> String {
        let leaves: Vec<Hash> = entries.iter().map(|e| leaf_hash(e)).collect();
        let origin = self.origin();
        let mut text = Checkpoint::new(&origin, leaves.len().try_into().unwrap(), root(&leaves))
            .unwrap()
            .text();
        if let Some(t) = time {
            text.push_str(&time_extension(t));
            text.push('\n');
        }
        let vkey = VerifierKey::ed25519(&origin, &self.public).unwrap();
        format!(
            "{text}\n{}",
            signature_line(&vkey, self.key.sign(text.as_bytes()).as_ref())
        )
    }

    /// The bundle of entry `pick` of the log `entries`, under its attested
    /// checkpoint stamped `time`.
    pub fn logged(&self, entries: &[Vec<u8>], pick: usize, time: Option<i64>) -> Vec<u8> {
        let leaves: Vec<Hash> = entries.iter().map(|e| leaf_hash(e)).collect();
        let note = self.note(entries, time);
        Bundle::Logged {
            statement: entries[pick].clone(),
            identity: Identity {
                worker_key: self.public,
                source_commit: COMMIT.into(),
                boot_nonce: self.nonce,
                evidence: self.evidence(identity_report_data(&self.public, COMMIT, &self.nonce)),
            },
            proof: InclusionProof {
                index: pick.try_into().unwrap(),
                size: leaves.len().try_into().unwrap(),
                hashes: inclusion(pick, &leaves),
            },
            checkpoint_evidence: self.evidence(checkpoint_report_data(&note)),
            checkpoint: note,
        }
        .to_cbor()
    }

    /// `n` logged statements about `/nix/store/...-out-<i>`.
    pub fn entries(&self, n: usize, tag: &str) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| {
                self.statement(
                    &format!("/nix/store/{:032}-{tag}-{i}", i),
                    Some(&format!("/nix/store/{:032}-{tag}-{i}.drv", i)),
                    format!("{tag} {i}").as_bytes(),
                    Some(i.try_into().unwrap()),
                )
            })
            .collect()
    }

    /// The consistency proof between the first `m` entries and all of them.
    pub fn consistency(&self, entries: &[Vec<u8>], m: usize) -> ConsistencyProof {
        let leaves: Vec<Hash> = entries.iter().map(|e| leaf_hash(e)).collect();
        ConsistencyProof {
            origin: self.origin(),
            size1: m.try_into().unwrap(),
            size2: leaves.len().try_into().unwrap(),
            hashes: subproof(m, &leaves, true),
        }
    }
}
