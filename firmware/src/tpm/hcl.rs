//! Azure's HCL report: what the paravisor (HCL, OpenHCL) of an Azure
//! confidential VM writes into vTPM NV index 0x01400001.
//!
//! An Azure CVM guest cannot ask the PSP for an SNP report itself. The
//! paravisor does, at boot and whenever the guest writes NV 0x01400002,
//! with REPORT_DATA = H(runtime data), and the runtime data is JSON that
//! names the vTPM's attestation key (`HCLAkPub`, a JWK). So: hardware report
//! -> runtime data -> AK -> TPM quote.
//!
//! Layout (little-endian; Microsoft's `IGVM_ATTEST` request, OpenHCL
//! `openhcl_attestation_protocol` `igvm_attest/get.rs`, and the kinvolk
//! `az-cvm-vtpm` crate; checked against real reports):
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 32 | header: signature `HCLA`, version, report_size, request_type, status, reserved\[3\] |
//! | 32 | 1184 | hardware report: an SNP ATTESTATION_REPORT, or a TDX TDREPORT (1024) and zeros |
//! | 1216 | 20 | IGVM request data: data_size, version, report_type, report_data_hash_type, variable_data_size |
//! | 1236 | variable_data_size | runtime data (UTF-8 JSON) |
//!
//! `report_size` counts the bytes up to the end of the runtime data; the NV
//! index is larger and zero beyond it. The runtime data's JSON is decoded by
//! the verifier, after it checked that the hardware report binds it.

use crate::Error;
use crate::snp::AttestationReport;

use super::{HashAlg, Reader};

/// The vTPM NV index that holds the HCL report.
pub const HCL_REPORT_NV_INDEX: u32 = 0x0140_0001;
/// The vTPM NV index the guest writes 64 bytes of user data to, to have the
/// paravisor refresh the report (the data appears in the runtime data as
/// `user-data`).
pub const HCL_USER_DATA_NV_INDEX: u32 = 0x0140_0002;

/// `HCLA` read as a little-endian u32 (IGVM_ATTEST signature).
const SIGNATURE: u32 = 0x414C_4348;
/// Header versions seen: 1 (SNP CVMs, 2023) and 2 (TDX CVMs, OpenHCL's
/// ATTESTATION_VERSION).
const VERSIONS: [u32; 2] = [1, 2];
/// IGVM_REQUEST_TYPE_AK_CERT: the request the paravisor makes for the vTPM's
/// AK, the only one whose report lands in the NV index.
const REQUEST_TYPE_AK_CERT: u32 = 2;
/// IGVM_ATTEST_REQUEST_VERSION_1.
const REQUEST_DATA_VERSION: u32 = 1;
/// Report types of the IGVM request data (OpenHCL IgvmAttestReportType).
const REPORT_TYPE_SNP: u32 = 2;
const REPORT_TYPE_TDX: u32 = 4;

const HEADER_SIZE: usize = 32;
/// ATTESTATION_REPORT_SIZE_MAX: the hardware report area, sized for the
/// largest report (SNP's 1184 bytes).
const HW_REPORT_AREA: usize = 1184;
/// A TDX TDREPORT_STRUCT (Intel TDX Module ABI).
pub const TD_REPORT_SIZE: usize = 1024;
/// REPORTDATA inside a TDREPORT: REPORTMACSTRUCT bytes 128..192.
const TD_REPORT_DATA_OFFSET: usize = 128;
const REQUEST_DATA_SIZE: usize = 20;
/// Where the runtime data starts.
pub const RUNTIME_DATA_OFFSET: usize = HEADER_SIZE + HW_REPORT_AREA + REQUEST_DATA_SIZE;
/// NV indices are at most a few KiB; the runtime data of real reports is
/// 0.5-1.2 KiB. A bound on what is parsed and hashed.
pub const MAX_HCL_REPORT: usize = 16 * 1024;

/// A TDX TDREPORT_STRUCT, as bytes. It is MACed for the local platform only:
/// a remote verifier needs a TD quote made from it, which the NV index does
/// not hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TdReport {
    bytes: Box<[u8; TD_REPORT_SIZE]>,
}

impl TdReport {
    /// The 1024 bytes.
    pub fn as_bytes(&self) -> &[u8; TD_REPORT_SIZE] {
        &self.bytes
    }
    /// REPORTDATA (REPORTMACSTRUCT offset 128).
    pub fn report_data(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        if let Some(src) = self
            .bytes
            .get(TD_REPORT_DATA_OFFSET..TD_REPORT_DATA_OFFSET.saturating_add(64))
        {
            out.copy_from_slice(src);
        }
        out
    }
}

/// The hardware report inside an HCL report.
#[derive(Clone, Debug)]
pub enum HwReport {
    /// An AMD SEV-SNP ATTESTATION_REPORT.
    Snp(AttestationReport),
    /// An Intel TDX TDREPORT.
    Tdx(TdReport),
}

impl HwReport {
    /// The 64 bytes of report data, which bind the runtime data.
    pub fn report_data(&self) -> [u8; 64] {
        match self {
            HwReport::Snp(r) => *r.report_data(),
            HwReport::Tdx(r) => r.report_data(),
        }
    }
}

/// An HCL report, parsed. The bytes are kept as read from the NV index.
#[derive(Clone, Debug)]
pub struct HclReport {
    bytes: Vec<u8>,
    version: u32,
    hw_report: HwReport,
    hash: HashAlg,
    runtime_data_len: usize,
}

impl HclReport {
    const S: &'static str = "HCL report";

    /// Parse the contents of NV index 0x01400001: a header, a hardware
    /// report, the request data and the runtime data, then zeros to the end.
    pub fn from_bytes(bytes: &[u8]) -> Result<HclReport, Error> {
        let s = Self::S;
        let err = |offset: usize, reason: String| Error::Tpm {
            structure: s,
            offset,
            reason,
        };
        if bytes.len() > MAX_HCL_REPORT {
            return Err(err(
                0,
                format!("{} bytes exceed {MAX_HCL_REPORT}", bytes.len()),
            ));
        }
        let mut r = Reader::new(s, bytes);
        let signature = r.u32_le("signature")?;
        if signature != SIGNATURE {
            return Err(err(
                0,
                format!("signature {:02x?} is not \"HCLA\"", signature.to_le_bytes()),
            ));
        }
        let version = r.u32_le("version")?;
        if !VERSIONS.contains(&version) {
            return Err(err(
                4,
                format!("header version {version} is not supported (1 or 2)"),
            ));
        }
        let report_size = r.u32_le("report_size")?;
        let request_type = r.u32_le("request_type")?;
        if request_type != REQUEST_TYPE_AK_CERT {
            return Err(err(
                12,
                format!("request_type {request_type} is not 2 (AK certificate request)"),
            ));
        }
        let status = r.u32_le("status")?;
        if status != 0 {
            return Err(err(
                16,
                format!("status {status:#x}: the paravisor reports a failed request"),
            ));
        }
        let reserved = r.take(12, "reserved")?;
        if reserved.iter().any(|&b| b != 0) {
            return Err(err(20, "reserved header bytes are not zero".to_owned()));
        }
        let hw = r.take(HW_REPORT_AREA, "hardware report")?;

        let request_at = r.position();
        let data_size = r.u32_le("request data: data_size")?;
        let request_version = r.u32_le("request data: version")?;
        if request_version != REQUEST_DATA_VERSION {
            return Err(err(
                request_at.saturating_add(4),
                format!("request data version {request_version} is not 1"),
            ));
        }
        let report_type = r.u32_le("request data: report_type")?;
        let hash_type = r.u32_le("request data: report_data_hash_type")?;
        let hash = match hash_type {
            1 => HashAlg::Sha256,
            2 => HashAlg::Sha384,
            3 => HashAlg::Sha512,
            _ => {
                return Err(err(
                    request_at.saturating_add(12),
                    format!("report_data_hash_type {hash_type} is not 1, 2 or 3 (SHA-256/384/512)"),
                ));
            }
        };
        let variable_size = r.u32_le("request data: variable_data_size")?;
        let runtime_data_len = usize::try_from(variable_size).unwrap_or(usize::MAX);
        if u64::from(data_size) != u64::from(variable_size).saturating_add(20) {
            return Err(err(
                request_at,
                format!(
                    "data_size {data_size} is not the request data's 20 bytes plus variable_data_size {variable_size}"
                ),
            ));
        }
        r.take(runtime_data_len, "runtime data")?;
        let end = r.position();
        if usize::try_from(report_size).ok() != Some(end) {
            return Err(err(
                8,
                format!("report_size {report_size} does not end at the runtime data's end ({end})"),
            ));
        }
        let padding = r.take(r.remaining(), "padding")?;
        if let Some(i) = padding.iter().position(|&b| b != 0) {
            return Err(err(
                end.saturating_add(i),
                "non-zero byte after the report".to_owned(),
            ));
        }

        let hw_report = match report_type {
            REPORT_TYPE_SNP => HwReport::Snp(AttestationReport::from_bytes(hw)?),
            REPORT_TYPE_TDX => {
                let (td, rest) = hw
                    .split_at_checked(TD_REPORT_SIZE)
                    .ok_or_else(|| err(HEADER_SIZE, "hardware report area too short".to_owned()))?;
                if let Some(i) = rest.iter().position(|&b| b != 0) {
                    return Err(err(
                        HEADER_SIZE.saturating_add(TD_REPORT_SIZE).saturating_add(i),
                        "non-zero byte after the TDREPORT".to_owned(),
                    ));
                }
                let mut bytes = Box::new([0u8; TD_REPORT_SIZE]);
                bytes.copy_from_slice(td);
                HwReport::Tdx(TdReport { bytes })
            }
            other => {
                return Err(err(
                    request_at.saturating_add(8),
                    format!("report_type {other} is not 2 (SNP) or 4 (TDX)"),
                ));
            }
        };
        Ok(HclReport {
            bytes: bytes.to_vec(),
            version,
            hw_report,
            hash,
            runtime_data_len,
        })
    }

    /// The bytes as read.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
    /// The header version.
    pub fn version(&self) -> u32 {
        self.version
    }
    /// The hardware report.
    pub fn hw_report(&self) -> &HwReport {
        &self.hw_report
    }
    /// The SNP report, if this is an SNP CVM's report.
    pub fn snp_report(&self) -> Option<&AttestationReport> {
        match &self.hw_report {
            HwReport::Snp(r) => Some(r),
            HwReport::Tdx(_) => None,
        }
    }
    /// The hash that binds the runtime data into the report data
    /// (report_data_hash_type).
    pub fn report_data_hash(&self) -> HashAlg {
        self.hash
    }
    /// The runtime data (JSON), as received: what the report data's hash
    /// covers.
    pub fn runtime_data(&self) -> &[u8] {
        let end = RUNTIME_DATA_OFFSET.saturating_add(self.runtime_data_len);
        // `from_bytes` checked this range exists.
        self.bytes.get(RUNTIME_DATA_OFFSET..end).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects
    )]

    use super::*;

    /// A TDX-shaped report (the TDREPORT need not be real to parse).
    fn tdx_report(json: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        for v in [SIGNATURE, 2, 0, 2, 0, 0, 0, 0] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&[0x77; TD_REPORT_SIZE]);
        b.resize(HEADER_SIZE + HW_REPORT_AREA, 0);
        let n = u32::try_from(json.len()).unwrap();
        for v in [n + 20, 1, REPORT_TYPE_TDX, 1, n] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(json);
        let size = u32::try_from(b.len()).unwrap();
        b[8..12].copy_from_slice(&size.to_le_bytes());
        b.resize(b.len() + 100, 0);
        b
    }

    #[test]
    fn parses_and_refuses_each_field() {
        let good = tdx_report(b"{\"keys\":[]}");
        let r = HclReport::from_bytes(&good).unwrap();
        assert_eq!(r.runtime_data(), b"{\"keys\":[]}");
        assert_eq!(r.report_data_hash(), HashAlg::Sha256);
        assert_eq!(r.hw_report().report_data(), [0x77; 64]);
        assert!(r.snp_report().is_none());

        type Mutation = fn(&mut Vec<u8>);
        let cases: [(&str, Mutation, &str); 9] = [
            ("signature", |b| b[0] = b'X', "not \"HCLA\""),
            ("version", |b| b[4] = 3, "header version 3"),
            ("request type", |b| b[12] = 1, "request_type 1"),
            ("status", |b| b[16] = 1, "status 0x1"),
            ("tdx padding", |b| b[32 + 1024] = 1, "after the TDREPORT"),
            ("report type", |b| b[1216 + 8] = 3, "report_type 3"),
            ("hash type", |b| b[1216 + 12] = 9, "report_data_hash_type 9"),
            ("data size", |b| b[1216] ^= 1, "data_size"),
            (
                "padding",
                |b| *b.last_mut().unwrap() = 1,
                "non-zero byte after the report",
            ),
        ];
        for (name, mutate, want) in cases {
            let mut b = good.clone();
            mutate(&mut b);
            let e = HclReport::from_bytes(&b).unwrap_err().to_string();
            assert!(e.contains(want), "{name}: {e}");
        }
        let e = HclReport::from_bytes(&good[..1240])
            .unwrap_err()
            .to_string();
        assert!(e.contains("runtime data: needs"), "{e}");
    }
}
