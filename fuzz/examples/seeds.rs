//! Seeds for the `checkpoint`, `statement` and `merkle` targets, which need
//! signatures and hashes the library makes: `fuzz/seeds.sh` runs this
//! (`cargo run --manifest-path fuzz/Cargo.toml --example seeds -- <corpus>`).
//!
//! Each seed is written to `<corpus>/<target>/<SHA-1 of its bytes>`, the
//! way libFuzzer names corpus files, so running it again is harmless. The
//! keys, key names and origin are the targets' own.

use std::path::{Path, PathBuf};

use provenix_verifier::{
    Checkpoint, EMPTY_ROOT, Hash, Statement, Subject, VerifierKey, leaf_hash, node_hash,
    signature_line,
};
use ring::digest::{SHA1_FOR_LEGACY_USE_ONLY, digest};
use ring::signature::{Ed25519KeyPair, KeyPair as _};

/// `fuzz_targets/checkpoint.rs`: the log's origin, key name and seed, and
/// the witness's.
const ORIGIN: &str = "provenix.example/fuzz";
const LOG: (&str, u8) = ("provenix-fuzz", 7);
const WITNESS: (&str, u8) = ("witness.example", 8);

/// golang.org/x/mod/sumdb/note's documented verifier key.
const GO_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

struct Corpus {
    dir: PathBuf,
    written: usize,
}

impl Corpus {
    fn new(root: &Path, target: &str) -> Result<Self> {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        Ok(Corpus { dir, written: 0 })
    }

    fn seed(&mut self, data: &[u8]) -> Result<()> {
        let name = hex(digest(&SHA1_FOR_LEGACY_USE_ONLY, data).as_ref());
        std::fs::write(self.dir.join(name), data)?;
        self.written += 1;
        Ok(())
    }

    fn report(&self) {
        println!("{}: {} seeds written", self.dir.display(), self.written);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn pair(seed: u8) -> Result<Ed25519KeyPair> {
    Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).map_err(|e| e.to_string().into())
}

fn signer((name, seed): (&str, u8)) -> Result<(Ed25519KeyPair, VerifierKey)> {
    let pair = pair(seed)?;
    let key = VerifierKey::ed25519(name, pair.public_key().as_ref())?;
    Ok((pair, key))
}

fn sign((pair, key): &(Ed25519KeyPair, VerifierKey), text: &str) -> String {
    signature_line(key, pair.sign(text.as_bytes()).as_ref())
}

fn with_mode(mode: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![mode];
    out.extend_from_slice(body);
    out
}

fn checkpoint(corpus: &Path) -> Result<()> {
    let mut c = Corpus::new(corpus, "checkpoint")?;
    let log = signer(LOG)?;
    let witness = signer(WITNESS)?;
    let root: Hash = node_hash(&leaf_hash(b"a"), &leaf_hash(b"b"));

    // Mode 0: notes that verify, with a cosignature, an extension line.
    for (size, root) in [(0, EMPTY_ROOT), (2, root), (u64::MAX, [0xff; 32])] {
        let text = Checkpoint::new(ORIGIN, size, root)?.text();
        let ours = sign(&log, &text);
        let theirs = sign(&witness, &text);
        c.seed(&with_mode(0, format!("{text}\n{ours}").as_bytes()))?;
        c.seed(&with_mode(0, format!("{text}\n{theirs}{ours}").as_bytes()))?;
        let extended = format!("{text}extension line\n");
        let ours = sign(&log, &extended);
        c.seed(&with_mode(0, format!("{extended}\n{ours}").as_bytes()))?;
    }

    // Mode 1: verifier keys.
    for key in [log.1.to_string(), witness.1.to_string(), GO_VKEY.to_owned()] {
        c.seed(&with_mode(1, key.as_bytes()))?;
    }

    // Mode 2: flags, size, root, where and what to change, origin.
    let cases: [(u8, u64, Hash, u16, u8, &str); 5] = [
        (0, 0, EMPTY_ROOT, 0, 0, ORIGIN),
        (1, 2, root, 40, 1, ORIGIN),
        (3, 1 << 40, [7; 32], 150, 0x80, "example.com/log"),
        (0, 10, root, 3, 0x20, "\u{2014} not a signature"),
        (2, 99, root, 0xffff, 0xff, "ünïcödé origin"),
    ];
    for (flags, size, root, at, xor, origin) in cases {
        let mut body = vec![flags];
        body.extend_from_slice(&size.to_le_bytes());
        body.extend_from_slice(&root);
        body.extend_from_slice(&at.to_le_bytes());
        body.push(xor);
        body.extend_from_slice(origin.as_bytes());
        c.seed(&with_mode(2, &body))?;
    }
    c.report();
    Ok(())
}

fn statement(corpus: &Path) -> Result<()> {
    let mut c = Corpus::new(corpus, "statement")?;
    let worker = pair(7)?;
    let worker_key: [u8; 32] = worker.public_key().as_ref().try_into()?;
    let mut full = Statement {
        subject: Subject::StorePath("/nix/store/00000000000000000000000000000000-hello".into()),
        sha256: [7; 32],
        size: 1234,
        references: vec![
            "/nix/store/00000000000000000000000000000000-hello".into(),
            "/nix/store/11111111111111111111111111111111-glibc".into(),
        ],
        deriver: Some("/nix/store/22222222222222222222222222222222-hello.drv".into()),
        worker_key,
        source_commit: "0123456789abcdef0123456789abcdef01234567".into(),
        log_index: Some(42),
        time: 1_780_272_000,
        nix_signature: None,
        trace: None,
    };
    full.add_nix_signature(&worker)?;
    let direct = Statement {
        subject: Subject::File("dist/app.tar.gz".into()),
        references: Vec::new(),
        deriver: None,
        log_index: None,
        nix_signature: None,
        trace: None,
        size: u64::MAX,
        time: -1,
        ..full.clone()
    };
    let odd = Statement {
        subject: Subject::StorePath(String::new()),
        references: vec![String::new(), "ü".into()],
        log_index: Some(u64::MAX),
        time: i64::MIN,
        ..full.clone()
    };
    // A version 2 statement: a build trace with a plain and a
    // content-addressed input.
    let traced = Statement {
        trace: Some(provenix_verifier::Trace {
            derivation_sha256: [3; 32],
            inputs: vec![
                provenix_verifier::TraceInput {
                    path: "/nix/store/11111111111111111111111111111111-glibc".into(),
                    nar_sha256: [4; 32],
                    content: None,
                },
                provenix_verifier::TraceInput {
                    path: "/nix/store/33333333333333333333333333333333-source".into(),
                    nar_sha256: [5; 32],
                    content: Some(provenix_verifier::Content {
                        address: provenix_verifier::storepath::ContentAddress {
                            method: provenix_verifier::storepath::Method::Recursive,
                            algo: provenix_verifier::storepath::HashAlgo::Sha256,
                            digest: vec![5; 32],
                        },
                        references: Vec::new(),
                    }),
                },
            ],
        }),
        ..full.clone()
    };
    for s in [full, direct, odd, traced] {
        c.seed(&s.to_cbor())?;
        c.seed(&s.sign(&worker)?)?;
    }
    c.report();
    Ok(())
}

fn merkle(corpus: &Path) -> Result<()> {
    let mut c = Corpus::new(corpus, "merkle")?;
    // Mode 0: leaf 0 of a one-leaf tree, and the consistency of 1 with 2.
    let (a, b) = (leaf_hash(b"a"), leaf_hash(b"b"));
    let two = node_hash(&a, &b);
    let header = |index: u64, size1: u64, size2: u64, h1: &Hash, h2: &Hash| {
        let mut out = vec![0];
        for n in [index, size1, size2] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        out.extend_from_slice(h1);
        out.extend_from_slice(h2);
        out
    };
    c.seed(&header(0, 1, 1, &a, &a))?;
    let mut one_to_two = header(0, 1, 2, &a, &two);
    one_to_two.extend_from_slice(&b);
    c.seed(&one_to_two)?;
    // Mode 1: reference trees of 1, 7, 33 and 64 leaves.
    for params in [
        [0, 0, 0, 0, 0, 0, 0],
        [6, 2, 5, 1, 2, 1, 9],
        [32, 20, 17, 3, 5, 2, 200],
        [63, 40, 63, 255, 8, 7, 255],
    ] {
        let mut out = vec![1];
        out.extend_from_slice(&params);
        out.extend((0..=255u8).cycle().take(256));
        c.seed(&out)?;
    }
    c.report();
    Ok(())
}

fn main() -> Result<()> {
    let corpus = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .ok_or("usage: seeds <corpus directory>")?;
    checkpoint(&corpus)?;
    statement(&corpus)?;
    merkle(&corpus)?;
    Ok(())
}
