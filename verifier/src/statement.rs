//! Statements: what a worker says it built, in deterministic CBOR
//! (RFC 8949 section 4.2.1), signed as COSE_Sign1 (RFC 9052 section 4.2)
//! with EdDSA (Ed25519, RFC 8032).
//!
//! A statement is a CBOR map with small unsigned integer keys, in ascending
//! order, every value in its shortest form and of definite length. Decoding
//! is strict: an unknown key, a missing required key, a wrong type or any
//! encoding that is not the deterministic one is refused, so the bytes that
//! were signed are the only bytes that describe a statement.

use ciborium::Value;
use coset::{CborSerializable, CoseSign1, CoseSign1Builder, HeaderBuilder, iana};
use ring::signature::{ED25519, Ed25519KeyPair, UnparsedPublicKey};

use crate::cbor::{decode_map, encode};
use crate::error::Error;
use crate::nixsig::{self, Fingerprint, worker_key_line, worker_key_name};
use crate::trace::Trace;

/// The statement format version this code writes for a statement with a
/// build trace ([`Statement::trace`]); one without is written as version
/// 1, which is what workers before traces wrote, so their statements still
/// verify (and say they carry no trace) and every statement has one
/// encoding.
pub const STATEMENT_VERSION: u64 = 2;
/// The version of statements without a build trace.
const VERSION_WITHOUT_TRACE: u64 = 1;
/// The COSE content type of a statement payload.
pub const STATEMENT_CONTENT_TYPE: &str = "application/vnd.provenix.statement+cbor";
/// Largest encoded statement accepted: a store path with thousands of
/// references stays far below it.
pub const MAX_STATEMENT_SIZE: usize = 1 << 20;
/// Most references accepted in one statement.
pub const MAX_REFERENCES: usize = 65_536;

/// What a statement is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subject {
    /// A Nix store path; the digest is the SHA-256 of its NAR serialisation.
    StorePath(String),
    /// A file a CI job produced, by name; the digest is the SHA-256 of its
    /// bytes.
    File(String),
}

/// A worker's claim about one output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statement {
    /// The output.
    pub subject: Subject,
    /// SHA-256 of the NAR (store path) or of the bytes (file).
    pub sha256: [u8; 32],
    /// NAR size or file size, in bytes.
    pub size: u64,
    /// Store paths the output refers to, sorted, without duplicates.
    pub references: Vec<String>,
    /// The derivation that produced it, if known.
    pub deriver: Option<String>,
    /// The worker's Ed25519 public key.
    pub worker_key: [u8; 32],
    /// The worker's source commit (hex).
    pub source_commit: String,
    /// Position in the worker's log; absent in direct mode.
    pub log_index: Option<u64>,
    /// When the statement was made, unix seconds.
    pub time: i64,
    /// The worker's Nix signature (a narinfo `Sig:` value,
    /// `<name>:<base64>`) over the Nix fingerprint of the store path, NAR
    /// hash, size and references above, under the key name
    /// [`worker_key_name`] of `worker_key` (DESIGN.md, "The binding",
    /// step 4). Only on store-path statements; [`Statement::verify`]
    /// checks it when present.
    pub nix_signature: Option<String>,
    /// The build's resolved inputs (version 2): only on store-path
    /// statements whose derivation the worker read.
    pub trace: Option<Trace>,
}

// Map keys, in the ascending order the encoding requires.
const K_VERSION: u64 = 1;
const K_SUBJECT_KIND: u64 = 2;
const K_SUBJECT: u64 = 3;
const K_SHA256: u64 = 4;
const K_SIZE: u64 = 5;
const K_REFERENCES: u64 = 6;
const K_DERIVER: u64 = 7;
const K_WORKER_KEY: u64 = 8;
const K_SOURCE_COMMIT: u64 = 9;
const K_LOG_INDEX: u64 = 10;
const K_TIME: u64 = 11;
const K_NIX_SIGNATURE: u64 = 12;
const K_TRACE: u64 = 13;

const KIND_STORE_PATH: u64 = 0;
const KIND_FILE: u64 = 1;

impl Statement {
    /// The deterministic CBOR encoding.
    pub fn to_cbor(&self) -> Vec<u8> {
        let (kind, name) = match &self.subject {
            Subject::StorePath(p) => (KIND_STORE_PATH, p),
            Subject::File(f) => (KIND_FILE, f),
        };
        let mut refs = self.references.clone();
        refs.sort();
        refs.dedup();
        let mut map = vec![
            (K_VERSION, Value::from(self.version())),
            (K_SUBJECT_KIND, Value::from(kind)),
            (K_SUBJECT, Value::from(name.as_str())),
            (K_SHA256, Value::Bytes(self.sha256.to_vec())),
            (K_SIZE, Value::from(self.size)),
            (
                K_REFERENCES,
                Value::Array(refs.into_iter().map(Value::Text).collect()),
            ),
        ];
        if let Some(d) = &self.deriver {
            map.push((K_DERIVER, Value::from(d.as_str())));
        }
        map.push((K_WORKER_KEY, Value::Bytes(self.worker_key.to_vec())));
        map.push((K_SOURCE_COMMIT, Value::from(self.source_commit.as_str())));
        if let Some(i) = self.log_index {
            map.push((K_LOG_INDEX, Value::from(i)));
        }
        map.push((K_TIME, Value::from(self.time)));
        if let Some(sig) = &self.nix_signature {
            map.push((K_NIX_SIGNATURE, Value::from(sig.as_str())));
        }
        if let Some(trace) = &self.trace {
            map.push((K_TRACE, trace.to_value()));
        }
        encode(&Value::Map(
            map.into_iter().map(|(k, v)| (Value::from(k), v)).collect(),
        ))
    }

    /// Decode, refusing anything but the deterministic encoding of a
    /// well-formed statement.
    pub fn from_cbor(bytes: &[u8]) -> Result<Statement, Error> {
        let bad = |reason: String| Error::Statement(reason);
        let mut fields = decode_map(bytes, MAX_STATEMENT_SIZE, Error::Statement)?;
        let version = fields.uint(K_VERSION, "version")?;
        if version != STATEMENT_VERSION && version != VERSION_WITHOUT_TRACE {
            return Err(bad(format!(
                "version {version}, expected {VERSION_WITHOUT_TRACE} or {STATEMENT_VERSION}"
            )));
        }
        let kind = fields.uint(K_SUBJECT_KIND, "subject kind")?;
        let name = fields.text(K_SUBJECT, "subject")?;
        let subject = match kind {
            KIND_STORE_PATH => Subject::StorePath(name),
            KIND_FILE => Subject::File(name),
            other => return Err(bad(format!("unknown subject kind {other}"))),
        };
        let sha256 = fields.bytes::<32>(K_SHA256, "sha256")?;
        let size = fields.uint(K_SIZE, "size")?;
        let references = fields.text_array(K_REFERENCES, "references", MAX_REFERENCES)?;
        if references.windows(2).any(|w| matches!(w, [a, b] if a >= b)) {
            return Err(bad("references are not sorted and unique".into()));
        }
        let deriver = fields.optional(K_DERIVER, |f| f.text(K_DERIVER, "deriver"))?;
        let worker_key = fields.bytes::<32>(K_WORKER_KEY, "worker key")?;
        let source_commit = fields.text(K_SOURCE_COMMIT, "source commit")?;
        let log_index = fields.optional(K_LOG_INDEX, |f| f.uint(K_LOG_INDEX, "log index"))?;
        let time = fields.int(K_TIME, "time")?;
        let nix_signature = fields.optional(K_NIX_SIGNATURE, |f| {
            f.text(K_NIX_SIGNATURE, "nix signature")
        })?;
        let trace = fields.optional(K_TRACE, |f| {
            Trace::from_value(f.take(K_TRACE, "trace")?).map_err(Error::Statement)
        })?;
        fields.finish()?;
        if nix_signature.is_some() && !matches!(subject, Subject::StorePath(_)) {
            return Err(bad("a Nix signature on a statement about a file".into()));
        }
        if trace.is_some() && !matches!(subject, Subject::StorePath(_)) {
            return Err(bad("a build trace on a statement about a file".into()));
        }
        match (version, &trace) {
            (VERSION_WITHOUT_TRACE, Some(_)) => {
                return Err(bad("a build trace in a version 1 statement".into()));
            }
            (STATEMENT_VERSION, None) => {
                return Err(bad(format!(
                    "a version {STATEMENT_VERSION} statement without a build trace"
                )));
            }
            _ => {}
        }
        Ok(Statement {
            subject,
            sha256,
            size,
            references,
            deriver,
            worker_key,
            source_commit,
            log_index,
            time,
            nix_signature,
            trace,
        })
    }

    /// The format version this statement is written in: 2 with a build
    /// trace, 1 without.
    pub fn version(&self) -> u64 {
        if self.trace.is_some() {
            STATEMENT_VERSION
        } else {
            VERSION_WITHOUT_TRACE
        }
    }

    /// The Nix fingerprint of a store-path statement:
    /// `1;<path>;sha256:<nix32>;<size>;<references>`.
    pub fn nix_fingerprint(&self) -> Result<Fingerprint, Error> {
        match &self.subject {
            Subject::StorePath(path) => {
                nixsig::fingerprint(path, &self.sha256, self.size, &self.references)
            }
            Subject::File(_) => Err(Error::Statement(
                "a statement about a file has no Nix fingerprint".into(),
            )),
        }
    }

    /// Sign the statement's Nix fingerprint with `key`, whose public half
    /// must be `worker_key`, under [`worker_key_name`], and set
    /// [`Statement::nix_signature`]. Call before [`Statement::sign`]: the
    /// Nix signature is part of the signed statement.
    pub fn add_nix_signature(&mut self, key: &Ed25519KeyPair) -> Result<(), Error> {
        use ring::signature::KeyPair as _;
        if key.public_key().as_ref() != self.worker_key {
            return Err(Error::Statement(
                "signing key is not the statement's worker key".into(),
            ));
        }
        let fingerprint = self.nix_fingerprint()?;
        self.nix_signature = Some(nixsig::sign(
            &worker_key_name(&self.worker_key),
            key,
            &fingerprint,
        )?);
        Ok(())
    }

    /// Check the Nix signature, if there is one: over the fingerprint
    /// recomputed from this statement's own fields, by its worker key under
    /// [`worker_key_name`]. A statement without one passes.
    pub fn check_nix_signature(&self) -> Result<(), Error> {
        let Some(sig) = &self.nix_signature else {
            return Ok(());
        };
        let failure = |e: Error| match e {
            Error::Nix(failure) => Error::StatementNixSignature(failure),
            other => other,
        };
        let fingerprint = self.nix_fingerprint().map_err(failure)?;
        nixsig::verify(sig, &worker_key_line(&self.worker_key), &fingerprint).map_err(failure)
    }

    /// Sign as COSE_Sign1 with `key`, whose public half must be
    /// `worker_key`.
    pub fn sign(&self, key: &Ed25519KeyPair) -> Result<Vec<u8>, Error> {
        use ring::signature::KeyPair as _;
        if key.public_key().as_ref() != self.worker_key {
            return Err(Error::Statement(
                "signing key is not the statement's worker key".into(),
            ));
        }
        let protected = HeaderBuilder::new()
            .algorithm(iana::Algorithm::EdDSA)
            .content_type(STATEMENT_CONTENT_TYPE.to_owned())
            .build();
        CoseSign1Builder::new()
            .protected(protected)
            .payload(self.to_cbor())
            .create_signature(b"", |data| key.sign(data).as_ref().to_vec())
            .build()
            .to_vec()
            .map_err(|e| Error::Statement(format!("COSE encoding: {e}")))
    }

    /// Verify a COSE_Sign1 statement: EdDSA, our content type, signed by
    /// the worker key the statement itself names. The signature is checked
    /// over the protected header as received. A Nix signature in it must
    /// verify too ([`Statement::check_nix_signature`]).
    pub fn verify(signed: &[u8]) -> Result<Statement, Error> {
        let bad = |reason: String| Error::Statement(reason);
        if signed.len() > MAX_STATEMENT_SIZE {
            return Err(bad(format!(
                "{} bytes exceeds the limit of {MAX_STATEMENT_SIZE}",
                signed.len()
            )));
        }
        let sign1 =
            CoseSign1::from_slice(signed).map_err(|e| bad(format!("not a COSE_Sign1: {e}")))?;
        // The signature covers the protected header and the payload only
        // (RFC 9052 4.4): anything else could vary under one signature, so
        // there must be nothing else, and the bytes must be the one
        // encoding the worker writes.
        if !sign1.unprotected.is_empty() {
            return Err(bad(
                "the COSE_Sign1 unprotected header is not empty (nothing outside the signature is read)"
                    .into(),
            ));
        }
        if sign1.clone().to_vec().ok().as_deref() != Some(signed) {
            return Err(bad(
                "the COSE_Sign1 is not in its deterministic encoding (RFC 8949 4.2.1)".into(),
            ));
        }
        let header = &sign1.protected.header;
        if header.alg
            != Some(coset::RegisteredLabelWithPrivate::Assigned(
                iana::Algorithm::EdDSA,
            ))
        {
            return Err(bad(format!("algorithm {:?}, expected EdDSA", header.alg)));
        }
        if header.content_type != Some(coset::ContentType::Text(STATEMENT_CONTENT_TYPE.to_owned()))
        {
            return Err(bad(format!(
                "content type {:?}, expected {STATEMENT_CONTENT_TYPE}",
                header.content_type
            )));
        }
        let payload = sign1
            .payload
            .as_deref()
            .ok_or_else(|| bad("detached payload".into()))?;
        let statement = Statement::from_cbor(payload)?;
        sign1
            .verify_signature(b"", |sig, data| {
                UnparsedPublicKey::new(&ED25519, statement.worker_key).verify(data, sig)
            })
            .map_err(|_| Error::StatementSignature)?;
        statement.check_nix_signature()?;
        Ok(statement)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nixsig::NixFailure;
    use ring::rand::SystemRandom;
    use ring::signature::KeyPair as _;

    fn key() -> Ed25519KeyPair {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
    }

    fn sample(key: &Ed25519KeyPair) -> Statement {
        Statement {
            subject: Subject::StorePath("/nix/store/00000000000000000000000000000000-hello".into()),
            sha256: [7; 32],
            size: 1234,
            references: vec!["/nix/store/b-b".into(), "/nix/store/a-a".into()],
            deriver: Some("/nix/store/0-hello.drv".into()),
            worker_key: key.public_key().as_ref().try_into().unwrap(),
            source_commit: "0123456789abcdef0123456789abcdef01234567".into(),
            log_index: Some(42),
            time: 1_780_272_000,
            nix_signature: None,
            trace: None,
        }
    }

    /// `sample` with its Nix signature; the references are real store paths.
    fn nix_signed(key: &Ed25519KeyPair) -> Statement {
        let mut s = Statement {
            references: vec![
                "/nix/store/11111111111111111111111111111111-b".into(),
                "/nix/store/00000000000000000000000000000000-hello".into(),
            ],
            ..sample(key)
        };
        s.add_nix_signature(key).unwrap();
        s
    }

    #[test]
    fn round_trip_is_deterministic_and_sorted() {
        let k = key();
        let s = sample(&k);
        let cbor = s.to_cbor();
        let back = Statement::from_cbor(&cbor).unwrap();
        assert_eq!(back.references, ["/nix/store/a-a", "/nix/store/b-b"]);
        assert_eq!(back.to_cbor(), cbor);
        // Encoding sorts the references; everything else survives as is.
        let mut direct = Statement {
            log_index: None,
            deriver: None,
            ..s
        };
        direct.references.sort();
        assert_eq!(Statement::from_cbor(&direct.to_cbor()).unwrap(), direct);
    }

    #[test]
    fn signed_statements_verify_and_tampering_is_caught() {
        let k = key();
        let signed = sample(&k).sign(&k).unwrap();
        let s = Statement::verify(&signed).unwrap();
        assert_eq!(s.size, 1234);
        // Any single flipped byte is refused, one way or another.
        for at in 0..signed.len() {
            let mut b = signed.clone();
            b[at] ^= 1;
            assert!(Statement::verify(&b).is_err(), "byte {at}");
        }
        // A statement naming another worker key cannot be signed by this one.
        let other = key();
        assert!(sample(&other).sign(&k).is_err());
    }

    #[test]
    fn bytes_outside_the_signature_are_refused() {
        let k = key();
        let signed = sample(&k).sign(&k).unwrap();
        let mut sign1 = CoseSign1::from_slice(&signed).unwrap();
        // A kid in the unprotected header: the signature still verifies.
        sign1.unprotected = HeaderBuilder::new().key_id(b"another".to_vec()).build();
        let with_kid = sign1.clone().to_vec().unwrap();
        assert!(
            matches!(Statement::verify(&with_kid), Err(Error::Statement(m)) if m.contains("unprotected")),
        );
        // The same COSE_Sign1, tagged (RFC 9052 tag 18): another encoding.
        let mut tagged = vec![0xd2];
        tagged.extend_from_slice(&signed);
        assert!(Statement::verify(&tagged).is_err());
        // The array header with a one-byte length (0x98 0x04, not 0x84).
        let mut long = vec![0x98, 0x04];
        long.extend_from_slice(&signed[1..]);
        assert!(Statement::verify(&long).is_err());
    }

    #[test]
    fn non_deterministic_encodings_are_refused() {
        let k = key();
        let cbor = sample(&k).to_cbor();
        // The version as a two-byte integer (0x18 0x01) instead of 0x01.
        let mut long = cbor.clone();
        let at = long.iter().position(|&b| b == 0x01).unwrap() + 1; // key 1, then value
        assert_eq!(long[at], 0x01);
        long.splice(at..=at, [0x18, 0x01]);
        assert!(
            matches!(Statement::from_cbor(&long), Err(Error::Statement(m)) if m.contains("deterministic"))
        );
        // Unknown key 14 appended (map header bumped).
        let mut extra = cbor.clone();
        extra[0] += 1;
        extra.extend([0x0E, 0x00]);
        assert!(
            matches!(Statement::from_cbor(&extra), Err(Error::Statement(m)) if m.contains("key 14"))
        );
        assert!(Statement::from_cbor(b"\xff").is_err());
        assert!(Statement::from_cbor(&[]).is_err());
    }

    fn traced(key: &Ed25519KeyPair) -> Statement {
        Statement {
            trace: Some(Trace {
                derivation_sha256: [5; 32],
                inputs: vec![crate::trace::TraceInput {
                    path: "/nix/store/11111111111111111111111111111111-b".into(),
                    nar_sha256: [6; 32],
                    content: None,
                }],
            }),
            ..sample(key)
        }
    }

    #[test]
    fn a_trace_makes_a_version_2_statement_and_round_trips() {
        let k = key();
        let s = traced(&k);
        assert_eq!(s.version(), 2);
        assert_eq!(sample(&k).version(), 1);
        let back = Statement::verify(&s.sign(&k).unwrap()).unwrap();
        assert_eq!(back.trace, s.trace);
        // Version 1 statements (no trace) still verify, and carry none.
        let old = Statement::verify(&sample(&k).sign(&k).unwrap()).unwrap();
        assert_eq!(old.trace, None);
    }

    #[test]
    fn versions_and_traces_must_agree() {
        let k = key();
        // A trace under version 1: the version byte follows key 1.
        let cbor = traced(&k).to_cbor();
        let at = cbor.iter().position(|&b| b == 0x01).unwrap() + 1;
        assert_eq!(cbor[at], 0x02);
        let mut v1 = cbor.clone();
        v1[at] = 0x01;
        assert!(
            matches!(Statement::from_cbor(&v1), Err(Error::Statement(m)) if m.contains("version 1 statement"))
        );
        // Version 2 without a trace.
        let mut v2 = sample(&k).to_cbor();
        v2[at] = 0x02;
        assert!(
            matches!(Statement::from_cbor(&v2), Err(Error::Statement(m)) if m.contains("without a build trace"))
        );
        // Version 3.
        let mut v3 = cbor;
        v3[at] = 0x03;
        assert!(
            matches!(Statement::from_cbor(&v3), Err(Error::Statement(m)) if m.contains("version 3"))
        );
        // A trace on a statement about a file.
        let file = Statement {
            subject: Subject::File("app.tar.gz".into()),
            ..traced(&k)
        };
        assert!(
            matches!(Statement::from_cbor(&file.to_cbor()), Err(Error::Statement(m)) if m.contains("file"))
        );
    }

    #[test]
    fn nix_signature_round_trips_and_verifies_as_nix_would() {
        let k = key();
        let s = nix_signed(&k);
        let sig = s.nix_signature.clone().unwrap();
        assert!(sig.starts_with(&format!("{}:", worker_key_name(&s.worker_key))));
        // The same check Nix makes: the fingerprint under the worker's key
        // line.
        nixsig::verify(
            &sig,
            &worker_key_line(&s.worker_key),
            &nixsig::fingerprint(
                "/nix/store/00000000000000000000000000000000-hello",
                &s.sha256,
                s.size,
                &s.references,
            )
            .unwrap(),
        )
        .unwrap();
        let cbor = s.to_cbor();
        assert_eq!(Statement::from_cbor(&cbor).unwrap().to_cbor(), cbor);
        let back = Statement::verify(&s.sign(&k).unwrap()).unwrap();
        assert_eq!(back.nix_signature.as_deref(), Some(sig.as_str()));
    }

    #[test]
    fn nix_signature_over_another_size_is_refused() {
        let k = key();
        let mut s = nix_signed(&k);
        s.size += 1;
        let signed = s.sign(&k).unwrap();
        assert!(matches!(
            Statement::verify(&signed),
            Err(Error::StatementNixSignature(
                NixFailure::BadSignature { .. }
            ))
        ));
    }

    #[test]
    fn nix_signature_by_another_key_is_refused() {
        let k = key();
        let other = key();
        let mut s = nix_signed(&k);
        // Another key's signature of the same fingerprint, under K's name.
        let theirs = nixsig::sign(
            &worker_key_name(&s.worker_key),
            &other,
            &s.nix_fingerprint().unwrap(),
        )
        .unwrap();
        s.nix_signature = Some(theirs);
        assert!(matches!(
            Statement::verify(&s.sign(&k).unwrap()),
            Err(Error::StatementNixSignature(
                NixFailure::BadSignature { .. }
            ))
        ));
        // Under another name: refused before any signature check.
        let mut s = nix_signed(&k);
        s.nix_signature = s
            .nix_signature
            .map(|sig| sig.replacen("provenix-", "provenix-0", 1));
        assert!(matches!(
            Statement::verify(&s.sign(&k).unwrap()),
            Err(Error::StatementNixSignature(
                NixFailure::NameMismatch { .. }
            ))
        ));
        // And another key cannot add one.
        assert!(matches!(
            sample(&k).add_nix_signature(&other),
            Err(Error::Statement(_))
        ));
    }

    #[test]
    fn nix_signature_on_a_bad_store_path_is_refused() {
        let k = key();
        let mut s = nix_signed(&k);
        s.subject = Subject::StorePath("/nix/store/not-a-store-path".into());
        assert!(matches!(
            Statement::verify(&s.sign(&k).unwrap()),
            Err(Error::StatementNixSignature(NixFailure::StorePath { .. }))
        ));
    }

    #[test]
    fn nix_signature_on_a_file_statement_is_refused() {
        let k = key();
        let s = Statement {
            subject: Subject::File("app.tar.gz".into()),
            ..nix_signed(&k)
        };
        assert!(
            matches!(Statement::from_cbor(&s.to_cbor()), Err(Error::Statement(m)) if m.contains("file"))
        );
        let mut file = Statement {
            nix_signature: None,
            ..s
        };
        assert!(matches!(
            file.add_nix_signature(&k),
            Err(Error::Statement(_))
        ));
    }
}
