//! A negative matrix for `provenix verify` (issue 5): one known-good setup
//! (a direct-mode bundle for a file from the simulated platform, a policy
//! pinning the simulator's root), then one mutation per case, each rejected
//! with the right exit code and reason.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;

use coset::{CborSerializable, CoseSign1Builder, HeaderBuilder, iana};
use provenix_firmware::sim::{ChainParams, ReportParams, SimPlatform, VekKind, ark_fingerprint};
use provenix_firmware::snp::Product;
use provenix_verifier::{
    Bundle, Evidence, MAX_BUNDLE_SIZE, STATEMENT_CONTENT_TYPE, SnpEvidence, Statement, Subject,
    statement_report_data,
};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
/// The simulator's launch measurement: it launches no image, so all zeros.
const SIM_MEASUREMENT: &str = "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000";
const OTHER_COMMIT: &str = "fedcba9876543210fedcba9876543210fedcba98";
const CONTENT: &[u8] = b"honest output\n";
const DAY: i64 = 86_400;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .try_into()
        .unwrap()
}

fn platform(product: Product, id: u8) -> SimPlatform {
    SimPlatform::new(&ChainParams {
        product,
        kind: VekKind::Vcek,
        tcb: ReportParams::default().tcb,
        hw_id: [id; 64],
        not_before: now() - DAY,
        not_after: now() + DAY,
    })
    .unwrap()
}

fn key() -> (Ed25519KeyPair, [u8; 32]) {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
    let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let public = key.public_key().as_ref().try_into().unwrap();
    (key, public)
}

fn sha256(b: &[u8]) -> [u8; 32] {
    ring::digest::digest(&ring::digest::SHA256, b)
        .as_ref()
        .try_into()
        .unwrap()
}

/// Everything the cases are built from, made once.
struct Fixture {
    milan: SimPlatform,
    other_chip: SimPlatform,
    genoa: SimPlatform,
    key: Ed25519KeyPair,
    public: [u8; 32],
    other_key: Ed25519KeyPair,
    other_public: [u8; 32],
    statement: Statement,
    good: Vec<u8>,
}

impl Fixture {
    fn new() -> Fixture {
        let (key, public) = key();
        let (other_key, other_public) = key_pair();
        let statement = Statement {
            subject: Subject::File("app.bin".into()),
            sha256: sha256(CONTENT),
            size: CONTENT.len().try_into().unwrap(),
            references: Vec::new(),
            deriver: None,
            worker_key: public,
            source_commit: COMMIT.into(),
            log_index: None,
            time: now(),
            nix_signature: None,
            trace: None,
        };
        let mut f = Fixture {
            milan: platform(Product::Milan, 1),
            other_chip: platform(Product::Milan, 2),
            genoa: platform(Product::Genoa, 3),
            key,
            public,
            other_key,
            other_public,
            statement,
            good: Vec::new(),
        };
        f.good = f.direct(&f.statement.clone());
        f
    }

    /// A report from `p` binding `report_data`, with `edit` applied to its
    /// parameters.
    fn report(
        &self,
        p: &SimPlatform,
        report_data: [u8; 64],
        edit: impl Fn(&mut ReportParams),
    ) -> Vec<u8> {
        let c = p.chain().params();
        let mut params = ReportParams {
            product: c.product,
            tcb: c.tcb,
            chip_id: c.hw_id,
            report_data,
            ..ReportParams::default()
        };
        edit(&mut params);
        p.report_bytes(&params).unwrap().to_vec()
    }

    /// An honest bundle: `s` signed by whichever fixture key it names,
    /// attested by the Milan platform.
    fn direct(&self, s: &Statement) -> Vec<u8> {
        let signer = if s.worker_key == self.public {
            &self.key
        } else {
            &self.other_key
        };
        let cose = s.sign(signer).unwrap();
        let report = self.report(&self.milan, statement_report_data(&s.to_cbor()), |_| {});
        assemble(cose, report, Some(self.milan.cert_table().unwrap()))
    }

    /// The good statement with `edit` applied, signed (by the key it names),
    /// under the good statement's report: the binding must break.
    fn rebound(&self, edit: impl Fn(&mut Statement)) -> Vec<u8> {
        let mut s = self.statement.clone();
        edit(&mut s);
        let signer = if s.worker_key == self.public {
            &self.key
        } else {
            &self.other_key
        };
        self.with_statement(s.sign(signer).unwrap())
    }

    fn parts(&self) -> (Vec<u8>, SnpEvidence) {
        match Bundle::from_cbor(&self.good).unwrap() {
            Bundle::Direct {
                statement,
                evidence: Evidence::Snp(evidence),
            } => (statement, evidence),
            _ => unreachable!(),
        }
    }

    /// The good bundle with another COSE statement.
    fn with_statement(&self, cose: Vec<u8>) -> Vec<u8> {
        let (_, evidence) = self.parts();
        Bundle::Direct {
            statement: cose,
            evidence: evidence.into(),
        }
        .to_cbor()
    }

    /// The good bundle with its evidence edited.
    fn with_evidence(&self, edit: impl Fn(&mut SnpEvidence)) -> Vec<u8> {
        let (statement, mut evidence) = self.parts();
        edit(&mut evidence);
        Bundle::Direct {
            statement,
            evidence: evidence.into(),
        }
        .to_cbor()
    }

    /// The good statement's COSE bytes with `edit` applied.
    fn cose_edit(&self, edit: impl Fn(&mut Vec<u8>)) -> Vec<u8> {
        let (mut cose, _) = self.parts();
        edit(&mut cose);
        self.with_statement(cose)
    }

    /// The good statement as COSE_Sign1 built by hand: `alg`, content type,
    /// payload and the signing key chosen by the case.
    fn cose_custom(
        &self,
        alg: iana::Algorithm,
        content_type: &str,
        detached: bool,
        signer: &Ed25519KeyPair,
    ) -> Vec<u8> {
        let payload = self.statement.to_cbor();
        let protected = HeaderBuilder::new()
            .algorithm(alg)
            .content_type(content_type.to_owned())
            .build();
        let mut sign1 = CoseSign1Builder::new()
            .protected(protected)
            .payload(payload)
            .create_signature(b"", |data| signer.sign(data).as_ref().to_vec())
            .build();
        if detached {
            sign1.payload = None;
        }
        self.with_statement(sign1.to_vec().unwrap())
    }

    fn report_data(&self) -> [u8; 64] {
        statement_report_data(&self.statement.to_cbor())
    }

    /// The good statement, attested by `p`'s report (edited) with
    /// `cert_table`.
    fn attested(
        &self,
        p: &SimPlatform,
        edit: impl Fn(&mut ReportParams),
        cert_table: Option<Vec<u8>>,
    ) -> Vec<u8> {
        let (cose, _) = self.parts();
        assemble(cose, self.report(p, self.report_data(), edit), cert_table)
    }
}

fn key_pair() -> (Ed25519KeyPair, [u8; 32]) {
    key()
}

fn assemble(cose: Vec<u8>, report: Vec<u8>, cert_table: Option<Vec<u8>>) -> Vec<u8> {
    Bundle::Direct {
        statement: cose,
        evidence: SnpEvidence {
            report,
            cert_table,
            vek: None,
        }
        .into(),
    }
    .to_cbor()
}

/// A policy trusting `root`, pinning the simulator's measurement unless
/// `snp` names `measurements` itself.
fn policy(root: &[u8; 32], snp: &str, threshold: &str) -> String {
    let pin = if snp.contains("measurements") {
        String::new()
    } else {
        format!("measurements = [\"{SIM_MEASUREMENT}\"]\n")
    };
    format!(
        "trust_amd_roots = false\n\
         [[roots]]\nname = \"sim\"\nproduct = \"Milan\"\nsha256 = \"{}\"\n\
         [snp]\naccepted_commits = [\"{COMMIT}\"]\n{pin}{snp}\n\
         [threshold]\n{threshold}\n",
        hex::encode(root)
    )
}

fn good_policy() -> String {
    policy(&ark_fingerprint(Product::Milan), "", "m = 1")
}

/// What one run of `provenix verify` is made of; each case mutates one
/// thing of the good input.
#[derive(Clone)]
struct Input {
    bundle: Option<Vec<u8>>,
    policy: Option<String>,
    artifact: Option<Vec<u8>>,
    args: Vec<String>,
    json: bool,
}

type Mutation = Box<dyn Fn(&Fixture, &mut Input)>;

struct Case {
    name: &'static str,
    mutate: Mutation,
    exit: i32,
    needle: &'static str,
}

fn case(
    name: &'static str,
    exit: i32,
    needle: &'static str,
    mutate: impl Fn(&Fixture, &mut Input) + 'static,
) -> Case {
    Case {
        name,
        mutate: Box::new(mutate),
        exit,
        needle,
    }
}

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("provenix-vneg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Run the input in `dir`; exit code and stdout + stderr.
fn run(dir: &std::path::Path, input: &Input) -> (i32, String) {
    std::fs::create_dir_all(dir).unwrap();
    let bundle = dir.join("bundle.provenix");
    let policy = dir.join("policy.toml");
    let artifact = dir.join("app.bin");
    if let Some(b) = &input.bundle {
        std::fs::write(&bundle, b).unwrap();
    }
    if let Some(p) = &input.policy {
        std::fs::write(&policy, p).unwrap();
    }
    if let Some(a) = &input.artifact {
        std::fs::write(&artifact, a).unwrap();
    }
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_provenix"));
    cmd.arg("verify");
    if input.json {
        cmd.arg("--json");
    }
    cmd.arg("--policy")
        .arg(&policy)
        .arg("--artifact")
        .arg(&artifact)
        .arg("--bundle")
        .arg(&bundle)
        .args(&input.args);
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn flip(at: usize) -> impl Fn(&mut Vec<u8>) {
    move |b: &mut Vec<u8>| {
        let i = at.min(b.len() - 1);
        b[i] ^= 0x01;
    }
}

fn report_flip(at: usize) -> impl Fn(&Fixture, &mut Input) {
    move |f: &Fixture, i: &mut Input| {
        i.bundle = Some(f.with_evidence(|e| flip(at)(&mut e.report)));
    }
}

fn snp_policy(snp: &'static str) -> impl Fn(&Fixture, &mut Input) {
    move |_: &Fixture, i: &mut Input| {
        i.policy = Some(policy(&ark_fingerprint(Product::Milan), snp, "m = 1"));
    }
}

fn threshold(t: &'static str) -> impl Fn(&Fixture, &mut Input) {
    move |_: &Fixture, i: &mut Input| {
        i.policy = Some(policy(&ark_fingerprint(Product::Milan), "", t));
    }
}

fn policy_text(text: &'static str) -> impl Fn(&Fixture, &mut Input) {
    move |_: &Fixture, i: &mut Input| i.policy = Some(text.to_owned())
}

fn bundle_bytes(edit: impl Fn(&mut Vec<u8>) + 'static) -> impl Fn(&Fixture, &mut Input) {
    move |f: &Fixture, i: &mut Input| {
        let mut b = f.good.clone();
        edit(&mut b);
        i.bundle = Some(b);
    }
}

fn args(a: &'static [&'static str]) -> impl Fn(&Fixture, &mut Input) {
    move |_: &Fixture, i: &mut Input| i.args = a.iter().map(|s| (*s).to_owned()).collect()
}

fn date(t: i64) -> String {
    format!("@{t}")
}

#[allow(clippy::too_many_lines)]
fn cases() -> Vec<Case> {
    let binding = "REPORT_DATA is not the statement's binding";
    vec![
        // --- Statement fields, re-signed, under the good report: the
        // binding breaks.
        case("statement subject name", 1, binding, |f, i| {
            i.bundle = Some(f.rebound(|s| s.subject = Subject::File("app2.bin".into())));
        }),
        case("statement subject kind", 1, binding, |f, i| {
            i.bundle = Some(f.rebound(|s| s.subject = Subject::StorePath("app.bin".into())));
        }),
        case("statement sha256", 1, binding, |f, i| {
            i.bundle = Some(f.rebound(|s| s.sha256[0] ^= 1));
        }),
        case("statement size", 1, binding, |f, i| {
            i.bundle = Some(f.rebound(|s| s.size += 1));
        }),
        case("statement references", 1, binding, |f, i| {
            i.bundle = Some(f.rebound(|s| s.references = vec!["lib.so".into()]));
        }),
        case("statement deriver", 1, binding, |f, i| {
            i.bundle = Some(f.rebound(|s| s.deriver = Some("/nix/store/x.drv".into())));
        }),
        case("statement worker key (signed by it)", 1, binding, |f, i| {
            i.bundle = Some(f.rebound(|s| s.worker_key = f.other_public));
        }),
        case("statement source commit", 1, binding, |f, i| {
            i.bundle = Some(f.rebound(|s| s.source_commit = OTHER_COMMIT.into()));
        }),
        case("statement time", 1, binding, |f, i| {
            i.bundle = Some(f.rebound(|s| s.time += 1));
        }),
        case(
            "statement log index in direct mode",
            1,
            "log index",
            |f, i| {
                i.bundle = Some(f.rebound(|s| s.log_index = Some(0)));
            },
        ),
        case(
            "statement nix signature on a file",
            1,
            "Nix signature",
            |f, i| {
                i.bundle = Some(f.rebound(|s| s.nix_signature = Some("x:y".into())));
            },
        ),
        // --- Statement fields honestly attested: decide refuses.
        case("attested other digest", 1, "digest_mismatch", |f, i| {
            let mut s = f.statement.clone();
            s.sha256 = sha256(b"evil");
            i.bundle = Some(f.direct(&s));
            i.json = true;
        }),
        case("attested other size", 1, "the actual digest is", |f, i| {
            let mut s = f.statement.clone();
            s.size += 1;
            i.bundle = Some(f.direct(&s));
        }),
        case("attested other commit", 1, "is not accepted", |f, i| {
            let mut s = f.statement.clone();
            s.source_commit = OTHER_COMMIT.into();
            i.bundle = Some(f.direct(&s));
        }),
        case("subject replay: other file", 1, "other_subject", |f, i| {
            let mut s = f.statement.clone();
            s.subject = Subject::File("other.bin".into());
            i.bundle = Some(f.direct(&s));
            i.json = true;
        }),
        case(
            "subject replay: store path",
            1,
            "the statement is about /nix/store",
            |f, i| {
                let mut s = f.statement.clone();
                s.subject = Subject::StorePath(
                    "/nix/store/00000000000000000000000000000000-app.bin".into(),
                );
                i.bundle = Some(f.direct(&s));
            },
        ),
        // --- COSE bytes.
        case("cose array header", 1, "not a COSE_Sign1", |f, i| {
            i.bundle = Some(f.cose_edit(|c| c[0] = 0x83));
        }),
        case(
            "cose protected header byte",
            1,
            "not a COSE_Sign1",
            |f, i| {
                i.bundle = Some(f.cose_edit(flip(3)));
            },
        ),
        case(
            "cose payload byte",
            1,
            "statement signature does not verify",
            |f, i| {
                i.bundle = Some(f.cose_edit(|c| {
                    let n = c.len();
                    flip(n - 64 - 10)(c);
                }));
            },
        ),
        case("cose signature first byte", 1, "signature", |f, i| {
            i.bundle = Some(f.cose_edit(|c| {
                let n = c.len();
                flip(n - 64)(c);
            }));
        }),
        case("cose signature last byte", 1, "signature", |f, i| {
            i.bundle = Some(f.cose_edit(|c| {
                let n = c.len();
                flip(n - 1)(c);
            }));
        }),
        case("cose truncated", 1, "not a COSE_Sign1", |f, i| {
            i.bundle = Some(f.cose_edit(|c| c.truncate(c.len() - 1)));
        }),
        case("cose empty", 1, "not a COSE_Sign1", |f, i| {
            i.bundle = Some(f.cose_edit(Vec::clear));
        }),
        case("cose signed by another key", 1, "signature", |f, i| {
            i.bundle = Some(f.cose_custom(
                iana::Algorithm::EdDSA,
                STATEMENT_CONTENT_TYPE,
                false,
                &f.other_key,
            ));
        }),
        case("cose algorithm ES256", 1, "algorithm", |f, i| {
            i.bundle = Some(f.cose_custom(
                iana::Algorithm::ES256,
                STATEMENT_CONTENT_TYPE,
                false,
                &f.key,
            ));
        }),
        case("cose content type", 1, "content type", |f, i| {
            i.bundle =
                Some(f.cose_custom(iana::Algorithm::EdDSA, "application/json", false, &f.key));
        }),
        case("cose detached payload", 1, "detached", |f, i| {
            i.bundle =
                Some(f.cose_custom(iana::Algorithm::EdDSA, STATEMENT_CONTENT_TYPE, true, &f.key));
        }),
        // --- Bundle CBOR.
        case(
            "bundle truncated to 0",
            1,
            "bundle: not CBOR",
            bundle_bytes(Vec::clear),
        ),
        case(
            "bundle truncated to 1",
            1,
            "bundle: not CBOR",
            bundle_bytes(|b| b.truncate(1)),
        ),
        case(
            "bundle truncated to 10",
            1,
            "bundle: not CBOR",
            bundle_bytes(|b| b.truncate(10)),
        ),
        case("bundle truncated to half", 1, "bundle: not CBOR", |f, i| {
            i.bundle = Some(f.good[..f.good.len() / 2].to_vec());
        }),
        case("bundle truncated by 1", 1, "bundle: not CBOR", |f, i| {
            i.bundle = Some(f.good[..f.good.len() - 1].to_vec());
        }),
        case(
            "bundle trailing byte",
            1,
            "bundle: 1 trailing bytes after the CBOR item",
            bundle_bytes(|b| b.push(0)),
        ),
        case(
            "two bundles concatenated",
            1,
            "trailing bytes after the CBOR item",
            bundle_bytes(|b| b.extend(b.clone())),
        ),
        case(
            "bundle non-deterministic version",
            1,
            "deterministic",
            bundle_bytes(|b| {
                assert_eq!(b[1..3], [0x01, 0x01]);
                b.splice(2..3, [0x18, 0x01]);
            }),
        ),
        case(
            "bundle unknown key",
            1,
            "key 9",
            bundle_bytes(|b| {
                b[0] += 1;
                b.extend([0x09, 0x00]);
            }),
        ),
        case(
            "bundle version 2",
            1,
            "version 2",
            bundle_bytes(|b| {
                assert_eq!(b[1..3], [0x01, 0x01]);
                b[2] = 0x02;
            }),
        ),
        case(
            "bundle version 0",
            1,
            "version 0",
            bundle_bytes(|b| b[2] = 0x00),
        ),
        case(
            "bundle kind 5",
            1,
            "unknown bundle kind 5",
            bundle_bytes(|b| {
                assert_eq!(b[3..5], [0x02, 0x01]);
                b[4] = 0x05;
            }),
        ),
        case(
            "bundle kind logged",
            1,
            "missing identity (key 4)",
            bundle_bytes(|b| b[4] = 0x00),
        ),
        case(
            "bundle not a map",
            1,
            "bundle: not a CBOR map but an array",
            bundle_bytes(|b| b[0] = 0x84),
        ),
        case(
            "bundle oversized",
            2,
            "larger than the limit of 2097152 bytes",
            |f, i| {
                let mut b = f.good.clone();
                b.resize(MAX_BUNDLE_SIZE + 1, 0);
                i.bundle = Some(b);
            },
        ),
        case("bundle file missing", 2, "cannot read", |_, i| {
            i.bundle = None
        }),
        // --- Evidence.
        case(
            "report byte 0 (version)",
            1,
            "report signature does not verify",
            report_flip(0),
        ),
        case(
            "report byte 0x08 (policy)",
            1,
            "report signature does not verify",
            report_flip(0x08),
        ),
        case(
            "report byte 0x50 (report data)",
            1,
            "report signature does not verify",
            report_flip(0x50),
        ),
        case(
            "report byte 0x90 (measurement)",
            1,
            "report signature does not verify",
            report_flip(0x90),
        ),
        case(
            "report byte 0x1a0 (chip id)",
            1,
            "does not match the report's CHIP_ID",
            report_flip(0x1A0),
        ),
        case(
            "report byte 0x2a0 (signature r)",
            1,
            "report signature does not verify",
            report_flip(0x2A0),
        ),
        case(
            "report byte 0x2f0 (signature s)",
            1,
            "report signature does not verify",
            report_flip(0x2F0),
        ),
        case(
            "report last byte",
            1,
            "signature.reserved at offset 0x49f is not zero",
            report_flip(usize::MAX),
        ),
        case(
            "report truncated",
            1,
            "attestation report is 1000 bytes, expected 1184",
            |f, i| {
                i.bundle = Some(f.with_evidence(|e| e.report.truncate(1000)));
            },
        ),
        case(
            "report extended",
            1,
            "attestation report is 1185 bytes, expected 1184",
            |f, i| {
                i.bundle = Some(f.with_evidence(|e| e.report.push(0)));
            },
        ),
        case("report zero REPORT_DATA", 1, binding, |f, i| {
            let (cose, _) = f.parts();
            let report = f.report(&f.milan, [0; 64], |_| {});
            i.bundle = Some(assemble(cose, report, Some(f.milan.cert_table().unwrap())));
        }),
        case(
            "report with debug allowed",
            1,
            "policy.debug: found 1",
            |f, i| {
                i.bundle = Some(f.attested(
                    &f.milan,
                    |p| p.policy |= 1 << 19,
                    Some(f.milan.cert_table().unwrap()),
                ));
            },
        ),
        case(
            "another platform's report and chain",
            1,
            "no trusted ARK for Genoa",
            |f, i| {
                i.bundle = Some(f.attested(&f.genoa, |_| {}, Some(f.genoa.cert_table().unwrap())));
            },
        ),
        case(
            "another platform's report, our chain",
            1,
            "report is from a Genoa but the VCEK is for Milan",
            |f, i| {
                i.bundle = Some(f.attested(&f.genoa, |_| {}, Some(f.milan.cert_table().unwrap())));
            },
        ),
        case("cert table missing", 1, "no VCEK or VLEK given", |f, i| {
            i.bundle = Some(f.with_evidence(|e| e.cert_table = None));
        }),
        case(
            "cert table of another platform",
            1,
            "no trusted ARK for Genoa",
            |f, i| {
                let t = f.genoa.cert_table().unwrap();
                i.bundle = Some(f.with_evidence(|e| e.cert_table = Some(t.clone())));
            },
        ),
        case("cert table truncated", 1, "runs past the end", |f, i| {
            i.bundle = Some(f.with_evidence(|e| {
                if let Some(t) = &mut e.cert_table {
                    t.truncate(t.len() / 2);
                }
            }));
        }),
        case("VCEK from another chip", 1, "VCEK hwID 0202", |f, i| {
            let t = f.other_chip.cert_table().unwrap();
            i.bundle = Some(f.with_evidence(|e| e.cert_table = Some(t.clone())));
        }),
        case(
            "another chip signs our CHIP_ID",
            1,
            "VCEK hwID 0202",
            |f, i| {
                i.bundle = Some(f.attested(
                    &f.other_chip,
                    |p| p.chip_id = [1; 64],
                    Some(f.other_chip.cert_table().unwrap()),
                ));
            },
        ),
        case("garbage VEK", 1, "VCEK: not canonical DER", |f, i| {
            i.bundle = Some(f.with_evidence(|e| {
                e.cert_table = None;
                e.vek = Some(vec![0x30, 0x03, 0x02, 0x01, 0x00]);
            }));
        }),
        // --- Policy.
        case(
            "policy: wrong root pin",
            1,
            "no trusted ARK for Milan",
            |_, i| {
                i.policy = Some(policy(&ark_fingerprint(Product::Genoa), "", "m = 1"));
            },
        ),
        case(
            "policy: AMD roots only",
            1,
            "no trusted ARK for Milan",
            policy_text("[snp]\n[threshold]\nm = 1\n"),
        ),
        case(
            "policy: min_guest_svn too high",
            1,
            "guest_svn: found 0, expected at least 99",
            snp_policy("min_guest_svn = 99"),
        ),
        case(
            "policy: measurement not allowed",
            1,
            "measurement: found 0000",
            snp_policy(
                "measurements = [\"111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111\"]",
            ),
        ),
        case(
            "policy: pins no measurement (fail closed)",
            1,
            "a measurement the policy pins",
            |_, i| {
                i.policy = Some(
                    policy(&ark_fingerprint(Product::Milan), "", "m = 1")
                        .replace(&format!("measurements = [\"{SIM_MEASUREMENT}\"]\n"), ""),
                );
            },
        ),
        case(
            "policy: report_data mismatch",
            1,
            "report_data: found",
            |_, i| {
                let rd = hex::encode([7u8; 64]);
                let snp: &'static str =
                    Box::leak(format!("report_data = \"{rd}\"").into_boxed_str());
                i.policy = Some(policy(&ark_fingerprint(Product::Milan), snp, "m = 1"));
            },
        ),
        case(
            "policy: products Genoa only",
            1,
            "Milan",
            snp_policy("products = [\"Genoa\"]"),
        ),
        case(
            "policy: signers VLEK only",
            1,
            "VLEK",
            snp_policy("signers = [\"VLEK\"]"),
        ),
        case(
            "policy: max_vmpl below",
            1,
            "vmpl: found 2, expected at most 0",
            |f, i| {
                i.bundle = Some(f.attested(
                    &f.milan,
                    |p| p.vmpl = 2,
                    Some(f.milan.cert_table().unwrap()),
                ));
                i.policy = Some(policy(
                    &ark_fingerprint(Product::Milan),
                    "max_vmpl = 0",
                    "m = 1",
                ));
            },
        ),
        case(
            "policy: chip id not listed",
            1,
            "chip_id: found 0101",
            snp_policy(
                "chip_ids = [\"22222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222\"]",
            ),
        ),
        case(
            "policy: commit not accepted",
            1,
            "is not accepted",
            |_, i| {
                i.policy = Some(good_policy().replace(COMMIT, OTHER_COMMIT));
            },
        ),
        case(
            "policy: unknown key",
            2,
            "unknown field",
            policy_text("trust_amd_roots = false\nfrobnicate = 1\n"),
        ),
        case(
            "policy: unknown snp key",
            2,
            "unknown field",
            snp_policy("allow_everything = true"),
        ),
        case(
            "policy: malformed TOML",
            2,
            "policy",
            policy_text("[snp\naccepted_commits = ["),
        ),
        case("policy: missing file", 2, "No such file", |_, i| {
            i.policy = None
        }),
        case(
            "policy: m = 2, one builder",
            1,
            "the policy requires 2",
            threshold("m = 2"),
        ),
        case("policy: m = 2, one builder (json)", 1, "too_few", |_, i| {
            i.policy = Some(policy(&ark_fingerprint(Product::Milan), "", "m = 2"));
            i.json = true;
        }),
        case("policy: m = 0", 2, "m = 0", threshold("m = 0")),
        case(
            "policy: distinct unknown",
            2,
            "distinct",
            threshold("distinct = \"galaxy\""),
        ),
        case(
            "policy: named builder not matching",
            1,
            "key_not_named",
            |f, i| {
                let t: &'static str = Box::leak(
                    format!(
                        "m = 1\nbuilders = [{{ name = \"alice\", key = \"{}\" }}]",
                        hex::encode(f.other_public)
                    )
                    .into_boxed_str(),
                );
                i.policy = Some(policy(&ark_fingerprint(Product::Milan), "", t));
                i.json = true;
            },
        ),
        case("policy: m exceeds named builders", 2, "exceeds", |f, i| {
            let t: &'static str = Box::leak(
                format!(
                    "m = 2\nbuilders = [{{ name = \"alice\", key = \"{}\" }}]",
                    hex::encode(f.public)
                )
                .into_boxed_str(),
            );
            i.policy = Some(policy(&ark_fingerprint(Product::Milan), "", t));
        }),
        // --- Artifact.
        case(
            "artifact one byte changed",
            1,
            "the actual digest is",
            |_, i| {
                let mut a = CONTENT.to_vec();
                a[0] ^= 1;
                i.artifact = Some(a);
            },
        ),
        case("artifact truncated", 1, "digest_mismatch", |_, i| {
            i.artifact = Some(CONTENT[..CONTENT.len() - 1].to_vec());
            i.json = true;
        }),
        case("artifact extended", 1, "the actual digest is", |_, i| {
            let mut a = CONTENT.to_vec();
            a.push(b'\n');
            i.artifact = Some(a);
        }),
        case("artifact empty", 1, "(0 bytes)", |_, i| {
            i.artifact = Some(Vec::new())
        }),
        case("artifact missing", 2, "cannot read", |_, i| {
            i.artifact = None
        }),
        // --- Time.
        case(
            "at before the VEK validity",
            1,
            "VCEK is not valid at",
            |_, i| {
                i.args = vec!["--at".into(), date(now() - 3 * DAY)];
            },
        ),
        case(
            "at after the VEK validity",
            1,
            "VCEK is not valid at",
            |_, i| {
                i.args = vec!["--at".into(), date(now() + 3 * DAY)];
            },
        ),
        case(
            "VCEK of another chip as the VEK",
            1,
            "VCEK hwID 0202",
            |f, i| {
                let vek = f.other_chip.chain().vek_der().to_vec();
                i.bundle = Some(f.with_evidence(|e| {
                    e.vek = Some(vek.clone());
                }));
            },
        ),
        case(
            "at unix epoch",
            1,
            "ARK is not valid at 1970-01-01",
            args(&["--at", "@0"]),
        ),
        case(
            "at far future",
            1,
            "ARK is not valid at 2100-01-01",
            args(&["--at", "2100-01-01"]),
        ),
        case(
            "at unparseable",
            2,
            "yesterday",
            args(&["--at", "yesterday"]),
        ),
    ]
}

#[test]
fn every_bad_input_is_rejected_with_its_reason() {
    let f = Fixture::new();
    let dir = scratch();
    let good = Input {
        bundle: Some(f.good.clone()),
        policy: Some(good_policy()),
        artifact: Some(CONTENT.to_vec()),
        args: Vec::new(),
        json: false,
    };
    let (code, out) = run(&dir.join("good"), &good);
    assert_eq!(code, 0, "the good case: {out}");
    assert!(out.starts_with("ACCEPTED app.bin"), "{out}");

    let cases = cases();
    assert!(cases.len() >= 60, "{} cases", cases.len());
    let mut names = std::collections::HashSet::new();
    let mut failures = Vec::new();
    for (n, c) in cases.iter().enumerate() {
        assert!(names.insert(c.name), "duplicate case {}", c.name);
        let mut input = good.clone();
        (c.mutate)(&f, &mut input);
        let (code, out) = run(&dir.join(n.to_string()), &input);
        if code != c.exit || !out.contains(c.needle) {
            failures.push(format!(
                "{}: exit {code} (want {}), want {:?} in:\n{out}",
                c.name, c.exit, c.needle
            ));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n---\n")
    );
}
