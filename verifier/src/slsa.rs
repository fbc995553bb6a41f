//! Export to supply-chain formats: an in-toto Statement v1
//! (<https://github.com/in-toto/attestation/blob/main/spec/v1/statement.md>)
//! with a SLSA Provenance v1 predicate (<https://slsa.dev/provenance/v1>),
//! in a DSSE envelope
//! (<https://github.com/secure-systems-lab/dsse/blob/master/envelope.md>).
//!
//! The predicate is made only from a bundle that verifies
//! ([`provenance`] calls [`verify_bundle`]); the hardware evidence and the
//! bundle itself ride along as byproducts, so a consumer that knows Provenix
//! can re-verify everything from the envelope alone.
//!
//! JSON is written by serde_json from structs: field order is the
//! declaration order below, no whitespace, so the same bundle always gives
//! the same bytes.

use base64::Engine as _;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

use crate::authenticate::Verifier;
use crate::bundle::Bundle;
use crate::error::Refusal;
use crate::evidence::Evidence;
use crate::policy::Policy;
use crate::statement::{STATEMENT_VERSION, Subject};
use crate::verify_bundle::verify_bundle;

/// `_type` of an in-toto Statement v1.
pub const IN_TOTO_STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// `predicateType` of SLSA Provenance v1.
pub const SLSA_PROVENANCE_TYPE: &str = "https://slsa.dev/provenance/v1";
/// The DSSE `payloadType` of an in-toto statement.
pub const DSSE_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// `buildType` of a store path a worker built with Nix.
pub const BUILD_TYPE_NIX: &str = "https://provenix.dev/nix-build/v1";
/// `buildType` of a file a CI job produced (`provenix-worker attest`).
pub const BUILD_TYPE_CI: &str = "https://provenix.dev/ci-artifact/v1";
/// Prefix of `builder.id`: `<prefix><source commit>#<measurement hex>`.
pub const BUILDER_ID_PREFIX: &str = "https://provenix.dev/worker/";
/// Media type of an SEV-SNP attestation report byproduct.
pub const MEDIA_TYPE_SNP_REPORT: &str = "application/vnd.amd.sev-snp.report";
/// Media type of an extended report's certificate table byproduct.
pub const MEDIA_TYPE_SNP_CERT_TABLE: &str = "application/vnd.amd.sev-snp.cert-table";
/// Media type of a marshalled TPMS_ATTEST byproduct.
pub const MEDIA_TYPE_TPM_ATTEST: &str = "application/vnd.tcg.tpm2.tpms-attest";
/// Media type of a marshalled TPMT_SIGNATURE byproduct.
pub const MEDIA_TYPE_TPM_SIGNATURE: &str = "application/vnd.tcg.tpm2.tpmt-signature";
/// Media type of a marshalled TPMT_PUBLIC byproduct (the attestation key).
pub const MEDIA_TYPE_TPM_PUBLIC: &str = "application/vnd.tcg.tpm2.tpmt-public";
/// Media type of a TCG PC Client event log byproduct.
pub const MEDIA_TYPE_TCG_EVENT_LOG: &str = "application/vnd.tcg.pc-client.event-log";
/// Media type of a DER certificate byproduct (a VCEK, VLEK or AK cert).
pub const MEDIA_TYPE_DER_CERT: &str = "application/pkix-cert";
/// An Azure CVM's HCL report, as read from vTPM NV 0x01400001.
pub const MEDIA_TYPE_AZURE_HCL_REPORT: &str = "application/vnd.microsoft.azure.hcl-report";
/// Media type of the bundle byproduct.
pub const MEDIA_TYPE_BUNDLE: &str = "application/vnd.provenix.bundle+cbor";
/// Media type of the attested log checkpoint byproduct (a C2SP signed note).
pub const MEDIA_TYPE_CHECKPOINT: &str = "text/plain; charset=utf-8";

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// The bundle does not verify: nothing is exported from it.
    #[error("the bundle does not verify: {0}")]
    Refused(Refusal),
    /// JSON encoding failed.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A DSSE envelope is malformed or its signature does not verify.
    #[error("DSSE envelope: {0}")]
    Envelope(String),
}

/// An in-toto Statement v1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InTotoStatement {
    /// [`IN_TOTO_STATEMENT_TYPE`].
    #[serde(rename = "_type")]
    pub type_: String,
    /// The outputs.
    pub subject: Vec<ResourceDescriptor>,
    /// [`SLSA_PROVENANCE_TYPE`].
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    /// The provenance.
    pub predicate: Provenance,
}

/// An in-toto ResourceDescriptor (the fields used here).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceDescriptor {
    /// A name (a store path or a file name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A URI (a store path, for dependencies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Digests by algorithm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
    /// Base64 of the content (standard alphabet, padded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// The content's media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
}

/// The digests Provenix gives: SHA-256 only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    /// Lower-case hex.
    pub sha256: String,
}

/// SLSA Provenance v1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Provenance {
    /// What was built, and from what.
    pub build_definition: BuildDefinition,
    /// Who built it, when, and the evidence.
    pub run_details: RunDetails,
}

/// SLSA `buildDefinition`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildDefinition {
    /// [`BUILD_TYPE_NIX`] or [`BUILD_TYPE_CI`].
    pub build_type: String,
    /// The derivation, when the statement names one.
    pub external_parameters: ExternalParameters,
    /// Empty: a worker takes no other parameters.
    pub internal_parameters: serde_json::Map<String, serde_json::Value>,
    /// The output's references, as `{uri: store path}`.
    pub resolved_dependencies: Vec<ResourceDescriptor>,
}

/// SLSA `externalParameters`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalParameters {
    /// The derivation path (the statement's deriver).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub derivation: Option<String>,
}

/// SLSA `runDetails`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunDetails {
    /// The worker.
    pub builder: Builder,
    /// Invocation id and times.
    pub metadata: BuildMetadata,
    /// The hardware evidence and the bundle.
    pub byproducts: Vec<ResourceDescriptor>,
}

/// SLSA `builder`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Builder {
    /// `https://provenix.dev/worker/<source commit>#<measurement hex>`.
    pub id: String,
    /// Versions of the worker and of the formats it wrote.
    pub version: BuilderVersion,
}

/// SLSA `builder.version` (a map of strings).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuilderVersion {
    /// The worker's source commit.
    #[serde(rename = "sourceCommit")]
    pub source_commit: String,
    /// The SEV-SNP launch measurement, or for a TPM the SHA-256 of the
    /// quoted PCR values, hex.
    pub measurement: String,
    /// The Provenix statement format version.
    pub statement: String,
}

/// SLSA `metadata`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildMetadata {
    /// `<worker key hex>/<log index>` (logged) or
    /// `<worker key hex>/direct/<subject sha256>` (direct).
    pub invocation_id: String,
    /// The statement's time, RFC 3339.
    pub started_on: String,
    /// The statement's time, RFC 3339 (a statement has one time).
    pub finished_on: String,
}

/// Verify `bundle` (as [`verify_bundle`] does) and make its in-toto
/// statement with SLSA Provenance v1. Nothing is made from a bundle that
/// does not verify.
pub fn provenance(
    bundle: &[u8],
    verifier: &Verifier,
    policy: &Policy,
    at: i64,
) -> Result<InTotoStatement, ExportError> {
    let verified = verify_bundle(bundle, verifier, policy, at).map_err(ExportError::Refused)?;
    // It verified, so it decodes.
    let decoded =
        Bundle::from_cbor(bundle).map_err(|e| ExportError::Refused(Refusal::Invalid(e)))?;
    let s = verified.statement();
    let sha = hex::encode(s.sha256);
    let (name, build_type) = match &s.subject {
        Subject::StorePath(p) => (p.clone(), BUILD_TYPE_NIX),
        Subject::File(f) => (f.clone(), BUILD_TYPE_CI),
    };
    let measurement = hex::encode(verified.evidence().measurement());
    let key = hex::encode(s.worker_key);
    let invocation_id = match verified.log_index() {
        Some(i) => format!("{key}/{i}"),
        None => format!("{key}/direct/{sha}"),
    };
    let when = rfc3339(s.time);
    let mut byproducts = Vec::new();
    match &decoded {
        Bundle::Direct { evidence, .. } => evidence_byproducts(&mut byproducts, "", evidence),
        Bundle::Logged {
            identity,
            checkpoint,
            checkpoint_evidence,
            ..
        } => {
            evidence_byproducts(&mut byproducts, "", &identity.evidence);
            byproducts.push(blob(
                "checkpoint",
                checkpoint.as_bytes(),
                MEDIA_TYPE_CHECKPOINT,
            ));
            evidence_byproducts(&mut byproducts, "-checkpoint", checkpoint_evidence);
        }
    }
    byproducts.push(blob("provenix-bundle", bundle, MEDIA_TYPE_BUNDLE));
    Ok(InTotoStatement {
        type_: IN_TOTO_STATEMENT_TYPE.into(),
        subject: vec![ResourceDescriptor {
            name: Some(name),
            uri: None,
            digest: Some(Digest { sha256: sha }),
            content: None,
            media_type: None,
        }],
        predicate_type: SLSA_PROVENANCE_TYPE.into(),
        predicate: Provenance {
            build_definition: BuildDefinition {
                build_type: build_type.into(),
                external_parameters: ExternalParameters {
                    derivation: s.deriver.clone(),
                },
                internal_parameters: serde_json::Map::new(),
                resolved_dependencies: s
                    .references
                    .iter()
                    .map(|r| ResourceDescriptor {
                        name: None,
                        uri: Some(r.clone()),
                        digest: None,
                        content: None,
                        media_type: None,
                    })
                    .collect(),
            },
            run_details: RunDetails {
                builder: Builder {
                    id: format!("{BUILDER_ID_PREFIX}{}#{measurement}", s.source_commit),
                    version: BuilderVersion {
                        source_commit: s.source_commit.clone(),
                        measurement,
                        statement: STATEMENT_VERSION.to_string(),
                    },
                },
                metadata: BuildMetadata {
                    invocation_id,
                    started_on: when.clone(),
                    finished_on: when,
                },
                byproducts,
            },
        },
    })
}

/// Byproducts named `<platform><suffix>-<part>`: `snp-report`,
/// `tpm-checkpoint-attest`, ...
fn evidence_byproducts(out: &mut Vec<ResourceDescriptor>, suffix: &str, e: &Evidence) {
    match e {
        Evidence::Snp(e) => {
            let name = |part: &str| format!("snp{suffix}-{part}");
            out.push(blob(&name("report"), &e.report, MEDIA_TYPE_SNP_REPORT));
            if let Some(t) = &e.cert_table {
                out.push(blob(&name("cert-table"), t, MEDIA_TYPE_SNP_CERT_TABLE));
            }
            if let Some(v) = &e.vek {
                out.push(blob(&name("vek"), v, MEDIA_TYPE_DER_CERT));
            }
        }
        Evidence::Tpm(e) => {
            let name = |part: &str| format!("tpm{suffix}-{part}");
            out.push(blob(&name("attest"), &e.attest, MEDIA_TYPE_TPM_ATTEST));
            out.push(blob(
                &name("signature"),
                &e.signature,
                MEDIA_TYPE_TPM_SIGNATURE,
            ));
            out.push(blob(
                &name("ak-public"),
                &e.ak_public,
                MEDIA_TYPE_TPM_PUBLIC,
            ));
            for (i, c) in e.ak_chain.iter().enumerate() {
                out.push(blob(
                    &name(&format!("ak-chain-{i}")),
                    c,
                    MEDIA_TYPE_DER_CERT,
                ));
            }
            out.push(blob(
                &name("event-log"),
                &e.event_log,
                MEDIA_TYPE_TCG_EVENT_LOG,
            ));
        }
        Evidence::Azure(e) => {
            let name = |part: &str| format!("azure{suffix}-{part}");
            out.push(blob(
                &name("hcl-report"),
                &e.hcl_report,
                MEDIA_TYPE_AZURE_HCL_REPORT,
            ));
            if let Some(v) = &e.vek {
                out.push(blob(&name("vek"), v, MEDIA_TYPE_DER_CERT));
            }
            for (i, c) in e.vek_chain.iter().enumerate() {
                out.push(blob(
                    &name(&format!("vek-chain-{i}")),
                    c,
                    MEDIA_TYPE_DER_CERT,
                ));
            }
            out.push(blob(
                &name("ak-public"),
                &e.ak_public,
                MEDIA_TYPE_TPM_PUBLIC,
            ));
            out.push(blob(&name("attest"), &e.attest, MEDIA_TYPE_TPM_ATTEST));
            out.push(blob(
                &name("signature"),
                &e.signature,
                MEDIA_TYPE_TPM_SIGNATURE,
            ));
            out.push(blob(
                &name("event-log"),
                &e.event_log,
                MEDIA_TYPE_TCG_EVENT_LOG,
            ));
        }
    }
}

fn blob(name: &str, content: &[u8], media_type: &str) -> ResourceDescriptor {
    ResourceDescriptor {
        name: Some(name.into()),
        uri: None,
        digest: Some(Digest {
            sha256: hex::encode(ring::digest::digest(&ring::digest::SHA256, content)),
        }),
        content: Some(b64(content)),
        media_type: Some(media_type.into()),
    }
}

/// Unix seconds as RFC 3339 UTC (`1970-01-01T00:00:00Z`); out-of-range
/// times (not from a verified statement) clamp to the epoch.
fn rfc3339(t: i64) -> String {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".into())
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A DSSE envelope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    /// Base64 of the payload.
    pub payload: String,
    /// The payload's type ([`DSSE_PAYLOAD_TYPE`] here).
    pub payload_type: String,
    /// At least one signature.
    pub signatures: Vec<EnvelopeSignature>,
}

/// One DSSE signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeSignature {
    /// Which key (a hint, not trusted).
    pub keyid: String,
    /// Base64 of the signature over [`pae`].
    pub sig: String,
}

/// DSSE pre-authentication encoding:
/// `"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`, lengths in ASCII
/// decimal.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// The DSSE key id Provenix uses for an Ed25519 key: its raw public key,
/// hex.
pub fn dsse_keyid(public_key: &[u8; 32]) -> String {
    hex::encode(public_key)
}

/// Wrap `statement_json` in a DSSE envelope of type [`DSSE_PAYLOAD_TYPE`],
/// signed with Ed25519 by `signer` under `keyid`. Returns the envelope's
/// JSON.
pub fn dsse_envelope(
    statement_json: &[u8],
    signer: &Ed25519KeyPair,
    keyid: &str,
) -> Result<Vec<u8>, ExportError> {
    let sig = signer.sign(&pae(DSSE_PAYLOAD_TYPE, statement_json));
    Ok(serde_json::to_vec(&Envelope {
        payload: b64(statement_json),
        payload_type: DSSE_PAYLOAD_TYPE.into(),
        signatures: vec![EnvelopeSignature {
            keyid: keyid.into(),
            sig: b64(sig.as_ref()),
        }],
    })?)
}

/// Verify a DSSE envelope: its type must be [`DSSE_PAYLOAD_TYPE`] and some
/// signature must verify under `public_key` (key ids are hints and are not
/// trusted). Returns the payload.
pub fn dsse_verify(envelope: &[u8], public_key: &[u8; 32]) -> Result<Vec<u8>, ExportError> {
    let bad = |s: &str| ExportError::Envelope(s.into());
    let env: Envelope =
        serde_json::from_slice(envelope).map_err(|e| ExportError::Envelope(e.to_string()))?;
    if env.payload_type != DSSE_PAYLOAD_TYPE {
        return Err(bad("payloadType is not application/vnd.in-toto+json"));
    }
    let engine = base64::engine::general_purpose::STANDARD;
    let payload = engine
        .decode(&env.payload)
        .map_err(|_| bad("payload is not base64"))?;
    let message = pae(&env.payload_type, &payload);
    let key = UnparsedPublicKey::new(&ED25519, public_key);
    let ok = env.signatures.iter().any(|s| {
        engine
            .decode(&s.sig)
            .is_ok_and(|sig| key.verify(&message, &sig).is_ok())
    });
    if !ok {
        return Err(bad("no signature verifies under the key"));
    }
    Ok(payload)
}

/// Export `bundle` as a DSSE-enveloped in-toto statement with SLSA
/// Provenance v1, signed by `signer`. The worker, which holds the worker key,
/// calls this with that key; anyone else signs with their own key and the
/// worker's signature and evidence ride along as byproducts.
pub fn export_slsa(
    bundle: &[u8],
    verifier: &Verifier,
    policy: &Policy,
    at: i64,
    signer: &Ed25519KeyPair,
) -> Result<Vec<u8>, ExportError> {
    let statement = serde_json::to_vec(&provenance(bundle, verifier, policy, at)?)?;
    let mut public = [0u8; 32];
    public.copy_from_slice(signer.public_key().as_ref());
    dsse_envelope(&statement, signer, &dsse_keyid(&public))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn pae_matches_the_spec_example() {
        // From the DSSE protocol document's test vector.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }

    #[test]
    fn envelopes_round_trip_and_refuse_tampering() {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let mut public = [0u8; 32];
        public.copy_from_slice(key.public_key().as_ref());
        let env = dsse_envelope(b"{\"a\":1}", &key, &dsse_keyid(&public)).unwrap();
        assert_eq!(dsse_verify(&env, &public).unwrap(), b"{\"a\":1}");
        let mut e: Envelope = serde_json::from_slice(&env).unwrap();
        e.payload = b64(b"{\"a\":2}");
        assert!(dsse_verify(&serde_json::to_vec(&e).unwrap(), &public).is_err());
        assert!(dsse_verify(&env, &[0u8; 32]).is_err());
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }
}
