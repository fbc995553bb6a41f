//! Hardware evidence as bundles carry it (the wire types): an SEV-SNP
//! report with its certificates, a TPM quote with its AK, PCR values and
//! event log, or an Azure CVM's HCL report and vTPM quote; and their
//! deterministic CBOR maps (see `cbor`).

use ciborium::Value;

use crate::cbor::{Fields, decode_map, encode};
use crate::error::Error;

/// Hardware evidence: an SEV-SNP report or a TPM quote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Evidence {
    /// An SEV-SNP attestation report.
    Snp(SnpEvidence),
    /// A TPM quote by an attestation key.
    Tpm(TpmEvidence),
    /// An Azure confidential VM's HCL report and its vTPM's quote.
    Azure(AzureEvidence),
}

impl From<SnpEvidence> for Evidence {
    fn from(e: SnpEvidence) -> Self {
        Evidence::Snp(e)
    }
}

impl From<TpmEvidence> for Evidence {
    fn from(e: TpmEvidence) -> Self {
        Evidence::Tpm(e)
    }
}

/// A TPM quote with what makes it checkable offline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TpmEvidence {
    /// The TPMS_ATTEST the TPM signed.
    pub attest: Vec<u8>,
    /// Its TPMT_SIGNATURE.
    pub signature: Vec<u8>,
    /// The attestation key's TPMT_PUBLIC.
    pub ak_public: Vec<u8>,
    /// The AK's certificate then its intermediates (DER), when the AK is
    /// vouched for by a CA (`provenix ak enroll`, or a cloud's).
    pub ak_chain: Vec<Vec<u8>>,
    /// The quoted PCR values, in the quote's selection order.
    pub pcrs: Vec<PcrValue>,
    /// The TCG event log of the boot (binary_bios_measurements).
    pub event_log: Vec<u8>,
}

impl From<AzureEvidence> for Evidence {
    fn from(e: AzureEvidence) -> Self {
        Evidence::Azure(e)
    }
}

/// An Azure confidential VM's evidence: the guest cannot ask for an SNP
/// report itself, so the paravisor's HCL report (vTPM NV 0x01400001)
/// vouches for the vTPM's attestation key, and that key quotes the boot
/// PCRs with the binding as qualifying data (docs/tpm.md, "Azure CVMs").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AzureEvidence {
    /// The HCL report as read from NV: header, SNP report, runtime data.
    pub hcl_report: Vec<u8>,
    /// The VCEK (DER) that signed the SNP report: Azure's IMDS/THIM
    /// serves it; the guest cannot get it from the report request.
    pub vek: Option<Vec<u8>>,
    /// The VCEK's issuers (ASK, ARK; DER), when not AMD's embedded ones.
    pub vek_chain: Vec<Vec<u8>>,
    /// The vTPM AK's TPMT_PUBLIC (persistent handle 0x81000003): the key
    /// the runtime data's `HCLAkPub` names, with its attributes.
    pub ak_public: Vec<u8>,
    /// The TPMS_ATTEST the AK signed.
    pub attest: Vec<u8>,
    /// Its TPMT_SIGNATURE.
    pub signature: Vec<u8>,
    /// The quoted PCR values, in the quote's selection order.
    pub pcrs: Vec<PcrValue>,
    /// The TCG event log of the boot.
    pub event_log: Vec<u8>,
}

/// One PCR value of a quote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PcrValue {
    /// The bank (TPM2_ALG_ID of its hash).
    pub bank: u16,
    /// The PCR index.
    pub index: u8,
    /// The value.
    pub value: Vec<u8>,
}

/// SEV-SNP evidence as a platform returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnpEvidence {
    /// The attestation report.
    pub report: Vec<u8>,
    /// The extended report's certificate table (VCEK/VLEK, ASK, ARK).
    pub cert_table: Option<Vec<u8>>,
    /// The VCEK/VLEK, when not in the table (e.g. fetched from AMD's KDS).
    pub vek: Option<Vec<u8>>,
}

/// Largest piece of evidence decoded on its own: as large as a whole
/// bundle may be (`MAX_BUNDLE_SIZE`).
const MAX_EVIDENCE_SIZE: usize = 2 << 20;
/// Largest part of one piece of evidence (a report, an event log, a
/// certificate table).
pub(crate) const MAX_EVIDENCE_PART: usize = 1 << 20;

/// Evidence map key 0: the platform; absent for SEV-SNP, so bundles made
/// before TPM support read unchanged.
const PLATFORM_TPM: u64 = 1;
/// Evidence map key 0 of an Azure CVM's evidence.
const PLATFORM_AZURE: u64 = 2;
const MAX_CHAIN: usize = 8;
const MAX_PCRS: usize = 3 * 24;

/// The CBOR map of `e`, as a bundle holds it.
pub(crate) fn evidence_value(e: &Evidence) -> Value {
    let k = |n: u64| Value::from(n);
    let b = |v: &[u8]| Value::Bytes(v.to_vec());
    Value::Map(match e {
        Evidence::Snp(e) => {
            let mut m = vec![(k(1), b(&e.report))];
            if let Some(t) = &e.cert_table {
                m.push((k(2), b(t)));
            }
            if let Some(v) = &e.vek {
                m.push((k(3), b(v)));
            }
            m
        }
        Evidence::Tpm(e) => vec![
            (k(0), k(PLATFORM_TPM)),
            (k(10), b(&e.attest)),
            (k(11), b(&e.signature)),
            (k(12), b(&e.ak_public)),
            (
                k(13),
                Value::Array(e.ak_chain.iter().map(|c| b(c)).collect()),
            ),
            (k(14), pcrs_value(&e.pcrs)),
            (k(15), b(&e.event_log)),
        ],
        Evidence::Azure(e) => {
            let mut m = vec![
                (k(0), k(PLATFORM_AZURE)),
                (k(10), b(&e.attest)),
                (k(11), b(&e.signature)),
                (k(12), b(&e.ak_public)),
                (k(14), pcrs_value(&e.pcrs)),
                (k(15), b(&e.event_log)),
                (k(20), b(&e.hcl_report)),
            ];
            if let Some(v) = &e.vek {
                m.push((k(21), b(v)));
            }
            m.push((
                k(22),
                Value::Array(e.vek_chain.iter().map(|c| b(c)).collect()),
            ));
            m
        }
    })
}

fn pcrs_value(pcrs: &[PcrValue]) -> Value {
    Value::Array(
        pcrs.iter()
            .map(|p| {
                Value::Array(vec![
                    Value::from(p.bank),
                    Value::from(p.index),
                    Value::Bytes(p.value.clone()),
                ])
            })
            .collect(),
    )
}

/// An array of certificates (DER) at `key`.
fn certificates(f: &mut Fields, key: u64, what: &'static str) -> Result<Vec<Vec<u8>>, Error> {
    f.array(key, what, MAX_CHAIN)?
        .into_iter()
        .map(|v| match v {
            Value::Bytes(c) if c.len() <= MAX_EVIDENCE_PART => Ok(c),
            _ => Err(Error::Bundle(format!(
                "a {what} entry is not a certificate's bytes"
            ))),
        })
        .collect()
}

/// Decode evidence from its CBOR map's fields.
pub(crate) fn evidence_from(mut f: Fields) -> Result<Evidence, Error> {
    let bad = Error::Bundle;
    let platform = f.optional(0, |f| f.uint(0, "evidence platform"))?;
    let evidence = match platform {
        None => {
            let report = f.byte_string(1, "evidence report", MAX_EVIDENCE_PART)?;
            let cert_table = f.optional(2, |f| {
                f.byte_string(2, "evidence cert table", MAX_EVIDENCE_PART)
            })?;
            let vek = f.optional(3, |f| f.byte_string(3, "evidence VEK", MAX_EVIDENCE_PART))?;
            Evidence::Snp(SnpEvidence {
                report,
                cert_table,
                vek,
            })
        }
        Some(PLATFORM_TPM) => {
            let attest = f.byte_string(10, "TPM attest", MAX_EVIDENCE_PART)?;
            let signature = f.byte_string(11, "TPM signature", MAX_EVIDENCE_PART)?;
            let ak_public = f.byte_string(12, "TPM AK public", MAX_EVIDENCE_PART)?;
            let ak_chain = certificates(&mut f, 13, "TPM AK chain")?;
            let pcrs = f
                .array(14, "TPM PCR values", MAX_PCRS)?
                .into_iter()
                .map(pcr_value)
                .collect::<Result<_, _>>()?;
            let event_log = f.byte_string(15, "TPM event log", MAX_EVIDENCE_PART)?;
            Evidence::Tpm(TpmEvidence {
                attest,
                signature,
                ak_public,
                ak_chain,
                pcrs,
                event_log,
            })
        }
        Some(PLATFORM_AZURE) => {
            let attest = f.byte_string(10, "Azure TPM attest", MAX_EVIDENCE_PART)?;
            let signature = f.byte_string(11, "Azure TPM signature", MAX_EVIDENCE_PART)?;
            let ak_public = f.byte_string(12, "Azure TPM AK public", MAX_EVIDENCE_PART)?;
            let pcrs = f
                .array(14, "Azure TPM PCR values", MAX_PCRS)?
                .into_iter()
                .map(pcr_value)
                .collect::<Result<_, _>>()?;
            let event_log = f.byte_string(15, "Azure TPM event log", MAX_EVIDENCE_PART)?;
            let hcl_report = f.byte_string(20, "Azure HCL report", MAX_EVIDENCE_PART)?;
            let vek = f.optional(21, |f| f.byte_string(21, "Azure VCEK", MAX_EVIDENCE_PART))?;
            let vek_chain = certificates(&mut f, 22, "Azure VCEK chain")?;
            Evidence::Azure(AzureEvidence {
                hcl_report,
                vek,
                vek_chain,
                ak_public,
                attest,
                signature,
                pcrs,
                event_log,
            })
        }
        Some(other) => return Err(bad(format!("unknown evidence platform {other}"))),
    };
    f.finish()?;
    Ok(evidence)
}

fn pcr_value(v: Value) -> Result<PcrValue, Error> {
    let bad = || Error::Bundle("a PCR value is not [bank, index, digest]".into());
    let Value::Array(parts) = v else {
        return Err(bad());
    };
    match <[Value; 3]>::try_from(parts) {
        Ok(
            [
                Value::Integer(bank),
                Value::Integer(index),
                Value::Bytes(value),
            ],
        ) => {
            let bank = u16::try_from(bank).map_err(|_| bad())?;
            let index = u8::try_from(index)
                .ok()
                .filter(|&i| i < 24)
                .ok_or_else(bad)?;
            if value.len() > 64 {
                return Err(bad());
            }
            Ok(PcrValue { bank, index, value })
        }
        _ => Err(bad()),
    }
}

impl Evidence {
    /// The deterministic CBOR encoding, as in a bundle.
    pub fn to_cbor(&self) -> Vec<u8> {
        encode(&evidence_value(self))
    }

    /// Decode strictly: the deterministic encoding only, known keys only,
    /// every size bounded.
    pub fn from_cbor(bytes: &[u8]) -> Result<Evidence, Error> {
        evidence_from(decode_map(bytes, MAX_EVIDENCE_SIZE, Error::Bundle)?)
    }
}
