//! Requesting attestation reports from inside an SEV-SNP guest.
//!
//! Linux offers two interfaces, and [`detect`] picks one:
//!
//! - configfs-tsm (Linux 6.7+), `/sys/kernel/config/tsm/report`: one
//!   directory per request (Documentation/ABI/testing/configfs-tsm-report);
//!   see [`ConfigfsTsm`].
//! - the `/dev/sev-guest` ioctls `SNP_GET_REPORT` and `SNP_GET_EXT_REPORT`
//!   (include/uapi/linux/sev-guest.h); see [`SevGuest`].
//!
//! Both return [`RawEvidence`]: the report and the certificate table as the
//! bytes the kernel returned. Parsing them is [`AttestationReport`]'s and
//! [`CertTable`]'s business.
//!
//! [`AttestationReport`]: super::AttestationReport
//! [`CertTable`]: super::CertTable

#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions
)]

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::REPORT_SIZE;
use super::certs::MAX_TABLE_SIZE;
use crate::Error;
use crate::sys;

/// Highest VMPL: SNP has VMPLs 0 to 3 (ABI spec section 2.3), which is also
/// configfs-tsm's `TSM_PRIVLEVEL_MAX` (include/linux/tsm.h).
const MAX_VMPL: u32 = 3;

/// Evidence as the guest interface returned it, not parsed or checked beyond
/// its size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawEvidence {
    /// The ATTESTATION_REPORT, exactly [`REPORT_SIZE`] bytes.
    pub report: Vec<u8>,
    /// The hypervisor's certificate table (GHCB spec section 4.1.8.1), when
    /// certificates were requested and the host supplied any.
    pub cert_table: Option<Vec<u8>>,
}

/// A guest interface that can produce reports.
#[derive(Debug)]
pub enum Interface {
    /// configfs-tsm report entries.
    ConfigfsTsm(ConfigfsTsm),
    /// The `/dev/sev-guest` ioctls.
    SevGuest(SevGuest),
}

impl fmt::Display for Interface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ConfigfsTsm(tsm) => write!(f, "configfs-tsm at {}", tsm.root.display()),
            Self::SevGuest(dev) => write!(f, "ioctls on {}", dev.path.display()),
        }
    }
}

impl Interface {
    /// Requests a report whose REPORT_DATA is `report_data`, for `vmpl`
    /// (0 to 3), with the host's certificate table if `with_certs`.
    pub fn request(
        &self,
        report_data: &[u8; 64],
        vmpl: u32,
        with_certs: bool,
    ) -> Result<RawEvidence, Error> {
        match self {
            Self::ConfigfsTsm(tsm) => tsm.request(report_data, vmpl, with_certs),
            Self::SevGuest(dev) => dev.request(report_data, vmpl, with_certs),
        }
    }
}

/// Finds the guest interface to use.
///
/// configfs-tsm comes first: it is the interface Linux develops further, and
/// it serialises requests itself. It is used when a report entry can be
/// created under [`ConfigfsTsm::DEFAULT_ROOT`] and its provider is
/// `sev_guest` (the probe entry is removed again). Otherwise
/// `/dev/sev-guest` is opened. If neither works the error says why, for each.
pub fn detect() -> Result<Interface, Error> {
    let tsm = ConfigfsTsm::new();
    let tsm_error = match tsm.probe() {
        Ok(()) => return Ok(Interface::ConfigfsTsm(tsm)),
        Err(e) => e,
    };
    match SevGuest::open() {
        Ok(dev) => Ok(Interface::SevGuest(dev)),
        Err(dev_error) => Err(Error::NoGuestDevice(format!(
            "configfs-tsm at {}: {tsm_error}; {}: {dev_error}",
            tsm.root.display(),
            SevGuest::DEFAULT_PATH,
        ))),
    }
}

fn check_vmpl(vmpl: u32) -> Result<(), Error> {
    if vmpl > MAX_VMPL {
        return Err(Error::Vmpl(vmpl));
    }
    Ok(())
}

fn check_report_size(found: usize, source: &str) -> Result<(), Error> {
    if found != REPORT_SIZE {
        return Err(Error::GuestResponse(format!(
            "{source} holds {found} bytes, expected a {REPORT_SIZE}-byte ATTESTATION_REPORT"
        )));
    }
    Ok(())
}

/// An all-zero or empty certificate buffer means the host supplied none
/// (the driver zeroes the buffer first "to indicate that certificate data
/// was not provided", drivers/virt/coco/sev-guest).
fn non_empty(table: Vec<u8>) -> Option<Vec<u8>> {
    table.iter().any(|&b| b != 0).then_some(table)
}

// ---------------------------------------------------------------------------
// configfs-tsm

/// The provider name of the SEV-SNP guest driver in configfs-tsm.
const SEV_PROVIDER: &str = "sev_guest";

/// Writes one request makes to its entry: `privlevel` and `inblob`. Each
/// advances `generation` by one (drivers/virt/coco/tsm.c,
/// `try_advance_write_generation`).
const WRITES_PER_ATTEMPT: u64 = 2;

/// Attempts before a request whose entry keeps changing under it gives up.
const ATTEMPTS: usize = 3;

/// Largest `outblob` or `auxblob`: `TSM_OUTBLOB_MAX` (include/linux/tsm.h).
const BLOB_MAX: usize = 32 * 1024;

/// Largest text attribute: configfs shows attributes through one page.
const TEXT_MAX: usize = 4096;

/// Names tried before giving up on finding an unused entry name.
const NAME_ATTEMPTS: usize = 8;

/// How long to wait for a new entry's `provider` attribute to appear.
///
/// Configfs creates an entry's attributes before mkdir(2) returns, so on a
/// kernel the first look finds it and nothing waits. A user-space stand-in
/// for configfs (the integration tests, or a sandbox that mirrors the
/// interface) can only fill the entry in after it sees the directory; the
/// wait lets it do so without a second code path here.
const ATTRIBUTE_WAIT: Duration = Duration::from_secs(2);
const ATTRIBUTE_POLL: Duration = Duration::from_millis(1);

/// Makes entry names unique within this process; the process id and the
/// clock make them unique across processes sharing the configfs mount.
static ENTRY_SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// Reports through configfs-tsm (Linux 6.7+).
///
/// Each request creates its own entry under the root, so concurrent
/// requesters do not disturb each other, and removes it when done, also on
/// error. The entry's `generation` is checked before the writes and after
/// the reads; if anything else wrote to the entry meanwhile, the request is
/// repeated, at most 3 times in all, and then fails with
/// [`Error::GenerationChanged`].
#[derive(Clone, Debug)]
pub struct ConfigfsTsm {
    root: PathBuf,
}

impl Default for ConfigfsTsm {
    fn default() -> Self {
        Self::new()
    }
}

impl ConfigfsTsm {
    /// Where Linux mounts the report group.
    pub const DEFAULT_ROOT: &'static str = "/sys/kernel/config/tsm/report";

    /// configfs-tsm at [`Self::DEFAULT_ROOT`].
    pub fn new() -> Self {
        Self::with_root(Self::DEFAULT_ROOT)
    }

    /// configfs-tsm whose report group is at `root` (configfs mounted
    /// elsewhere, or a stand-in for tests; see the crate's
    /// `tests/guest_configfs.rs`).
    pub fn with_root(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The report group directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Requests a report; see [`Interface::request`].
    pub fn request(
        &self,
        report_data: &[u8; 64],
        vmpl: u32,
        with_certs: bool,
    ) -> Result<RawEvidence, Error> {
        check_vmpl(vmpl)?;
        let entry = Entry::create(&self.root)?;
        entry.check_provider()?;
        let mut changed = None;
        for _ in 0..ATTEMPTS {
            match entry.attempt(report_data, vmpl, with_certs)? {
                Attempt::Done(evidence) => return Ok(evidence),
                Attempt::Changed { before, after } => changed = Some((before, after)),
            }
        }
        let (before, after) = changed.unwrap_or_default();
        Err(Error::GenerationChanged {
            path: entry.path.display().to_string(),
            before,
            after,
        })
    }

    /// Creates and removes an entry, checking that configfs-tsm is usable
    /// by this process and that its provider is the SEV-SNP driver.
    fn probe(&self) -> Result<(), Error> {
        Entry::create(&self.root)?.check_provider()
    }
}

enum Attempt {
    Done(RawEvidence),
    Changed { before: u64, after: u64 },
}

/// A report entry this process created; removed on drop.
struct Entry {
    path: PathBuf,
}

impl Entry {
    fn create(root: &Path) -> Result<Self, Error> {
        for _ in 0..NAME_ATTEMPTS {
            let path = root.join(unique_name());
            match fs::create_dir(&path) {
                Ok(()) => return Ok(Self { path }),
                // Another process picked the same name; take the next one.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(source) => return Err(io_error("mkdir", &path, source)),
            }
        }
        Err(io_error(
            "mkdir an unused entry in",
            root,
            io::Error::from(io::ErrorKind::AlreadyExists),
        ))
    }

    fn attribute(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    fn check_provider(&self) -> Result<(), Error> {
        let path = self.attribute("provider");
        wait_for(&path);
        let provider = read_text(&path)?;
        if provider != SEV_PROVIDER {
            return Err(Error::NoGuestDevice(format!(
                "configfs-tsm provider is {provider:?} ({}), expected {SEV_PROVIDER:?}",
                path.display()
            )));
        }
        Ok(())
    }

    fn attempt(
        &self,
        report_data: &[u8; 64],
        vmpl: u32,
        with_certs: bool,
    ) -> Result<Attempt, Error> {
        let start = self.generation()?;
        write_attribute(&self.attribute("privlevel"), vmpl.to_string().as_bytes())?;
        // configfs hands a binary attribute to the driver when the file is
        // closed, and an error there never reaches close(2); the generation
        // check below is what catches a write the driver refused.
        write_attribute(&self.attribute("inblob"), report_data)?;
        let report = read_blob(&self.attribute("outblob"))?;
        let cert_table = if with_certs {
            // Visible only if the provider offers auxiliary data.
            match read_blob(&self.attribute("auxblob")) {
                Ok(table) => non_empty(table),
                Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(e),
            }
        } else {
            None
        };
        let end = self.generation()?;
        let expected = start.checked_add(WRITES_PER_ATTEMPT).ok_or_else(|| {
            Error::GuestResponse(format!("configfs-tsm generation {start} cannot advance"))
        })?;
        if end != expected {
            return Ok(Attempt::Changed {
                before: expected,
                after: end,
            });
        }
        check_report_size(report.len(), "configfs-tsm outblob")?;
        Ok(Attempt::Done(RawEvidence { report, cert_table }))
    }

    fn generation(&self) -> Result<u64, Error> {
        let path = self.attribute("generation");
        let text = read_text(&path)?;
        text.parse().map_err(|_| {
            Error::GuestResponse(format!(
                "{} holds {text:?}, not a generation number",
                path.display()
            ))
        })
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        // rmdir(2) is how configfs releases the entry and its report. A
        // failure cannot be reported from drop; what is left is one idle
        // entry, gone at the next boot.
        let _ = fs::remove_dir(&self.path);
    }
}

fn unique_name() -> String {
    let sequence = ENTRY_SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("provenix-{}-{sequence}-{nanos}", std::process::id())
}

/// Waits until `path` exists or [`ATTRIBUTE_WAIT`] has passed. Not finding
/// it is left to the read that follows, whose error names the path.
fn wait_for(path: &Path) {
    let start = Instant::now();
    while !matches!(path.try_exists(), Ok(true)) && start.elapsed() < ATTRIBUTE_WAIT {
        std::thread::sleep(ATTRIBUTE_POLL);
    }
}

fn io_error(op: &'static str, path: &Path, source: io::Error) -> Error {
    Error::Io {
        op,
        path: path.display().to_string(),
        source,
    }
}

/// Reads a whole attribute, refusing more than `limit` bytes.
fn read_limited(path: &Path, limit: usize) -> Result<Vec<u8>, Error> {
    let file = File::open(path).map_err(|e| io_error("open", path, e))?;
    let mut bytes = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    file.take(cap)
        .read_to_end(&mut bytes)
        .map_err(|e| io_error("read", path, e))?;
    if bytes.len() > limit {
        return Err(Error::GuestResponse(format!(
            "{} is larger than {limit} bytes",
            path.display()
        )));
    }
    Ok(bytes)
}

fn read_blob(path: &Path) -> Result<Vec<u8>, Error> {
    read_limited(path, BLOB_MAX)
}

/// Reads a text attribute without its trailing newline (configfs shows
/// them with `sysfs_emit(buf, "...\n")`).
fn read_text(path: &Path) -> Result<String, Error> {
    let bytes = read_limited(path, TEXT_MAX)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| Error::GuestResponse(format!("{} is not UTF-8 text", path.display())))?;
    Ok(text.trim_end_matches('\n').to_owned())
}

/// Writes an attribute in one write(2): a text attribute is stored per
/// write, and the attribute files exist already, so nothing is created.
fn write_attribute(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let mut file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| io_error("open", path, e))?;
    file.write_all(bytes)
        .map_err(|e| io_error("write", path, e))
}

// ---------------------------------------------------------------------------
// /dev/sev-guest

/// Certificate buffer of the first extended request: 4 pages, Linux's
/// `SEV_FW_BLOB_MAX_SIZE` (16 KiB, include/linux/psp-sev.h), the most an
/// upstream driver accepts, so one request is enough there.
const INITIAL_CERT_PAGES: usize = 4;

/// MSG_REPORT_RSP (ABI spec Table 25): STATUS at 0x00, REPORT_SIZE at 0x04,
/// reserved to 0x20, then the report.
const RSP_STATUS: usize = 0x00;
const RSP_REPORT_SIZE: usize = 0x04;
const RSP_REPORT: usize = 0x20;

/// Reports through the `/dev/sev-guest` ioctls (Linux 5.19+).
#[derive(Debug)]
pub struct SevGuest {
    device: File,
    path: PathBuf,
}

impl SevGuest {
    /// The SEV guest driver's device node.
    pub const DEFAULT_PATH: &'static str = "/dev/sev-guest";

    /// Opens [`Self::DEFAULT_PATH`] for reading and writing (the driver
    /// needs both for its ioctls).
    pub fn open() -> Result<Self, Error> {
        let path = PathBuf::from(Self::DEFAULT_PATH);
        let device = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| io_error("open", &path, e))?;
        Ok(Self { device, path })
    }

    /// Requests a report; see [`Interface::request`].
    ///
    /// With certificates this is `SNP_GET_EXT_REPORT`. If the host's table
    /// does not fit the first buffer, the driver answers with the size it
    /// needs (`SNP_GUEST_VMM_ERR_INVALID_LEN`) and the request is repeated
    /// once with a buffer of that size.
    pub fn request(
        &self,
        report_data: &[u8; 64],
        vmpl: u32,
        with_certs: bool,
    ) -> Result<RawEvidence, Error> {
        check_vmpl(vmpl)?;
        let mut req = sys::ReportReq::new(*report_data, vmpl);
        let mut resp = Box::new(sys::ReportResp::ZERO);
        let cert_table = if with_certs {
            self.ext_report(&req, &mut resp)?
        } else {
            sys::get_report(&self.device, &mut req, &mut resp)
                .map_err(|e| self.ioctl_error("SNP_GET_REPORT ioctl on", e))?;
            None
        };
        let report = report_from_rsp(&resp.data)?;
        Ok(RawEvidence { report, cert_table })
    }

    fn ext_report(
        &self,
        req: &sys::ReportReq,
        resp: &mut sys::ReportResp,
    ) -> Result<Option<Vec<u8>>, Error> {
        const OP: &str = "SNP_GET_EXT_REPORT ioctl on";
        let mut pages = vec![sys::Page::ZERO; INITIAL_CERT_PAGES];
        match sys::get_ext_report(&self.device, req, &mut pages, resp) {
            Ok(()) => {}
            Err(e) if e.vmm_error == sys::VMM_ERR_INVALID_LEN => {
                pages = vec![sys::Page::ZERO; pages_for(e.certs_len, pages.len())?];
                sys::get_ext_report(&self.device, req, &mut pages, resp)
                    .map_err(|e| self.ioctl_error(OP, e))?;
            }
            Err(e) => return Err(self.ioctl_error(OP, e)),
        }
        let table: Vec<u8> = pages.iter().flat_map(|page| page.0).collect();
        Ok(non_empty(table))
    }

    fn ioctl_error(&self, op: &'static str, e: sys::IoctlError) -> Error {
        if e.fw_error != 0 || e.vmm_error != 0 {
            Error::GuestRequest {
                fw_error: e.fw_error,
                vmm_error: e.vmm_error,
            }
        } else {
            io_error(op, &self.path, e.source)
        }
    }
}

/// Pages for the `needed` bytes the hypervisor asked for after `had` pages
/// were too few. The hypervisor is not trusted: it must ask for more than it
/// got, and no more than [`MAX_TABLE_SIZE`], the most the table parser
/// accepts.
fn pages_for(needed: u32, had: usize) -> Result<usize, Error> {
    let needed = usize::try_from(needed).unwrap_or(usize::MAX);
    let had_bytes = had.saturating_mul(sys::PAGE_SIZE);
    if needed <= had_bytes {
        return Err(Error::GuestResponse(format!(
            "the hypervisor called a {had_bytes}-byte certificate buffer too small \
             but asked for {needed} bytes"
        )));
    }
    if needed > MAX_TABLE_SIZE {
        return Err(Error::GuestResponse(format!(
            "the hypervisor asked for a {needed}-byte certificate buffer, \
             more than the {MAX_TABLE_SIZE} bytes accepted"
        )));
    }
    Ok(needed.div_ceil(sys::PAGE_SIZE))
}

/// The report inside a MSG_REPORT_RSP, after checking STATUS and REPORT_SIZE.
fn report_from_rsp(rsp: &[u8]) -> Result<Vec<u8>, Error> {
    let status = le_u32(rsp, RSP_STATUS)?;
    if status != 0 {
        return Err(Error::GuestResponse(format!(
            "MSG_REPORT_RSP status is {status:#x}, expected 0 (success)"
        )));
    }
    let size = le_u32(rsp, RSP_REPORT_SIZE)?;
    let size = usize::try_from(size).unwrap_or(usize::MAX);
    check_report_size(size, "MSG_REPORT_RSP REPORT_SIZE")?;
    RSP_REPORT
        .checked_add(size)
        .and_then(|end| rsp.get(RSP_REPORT..end))
        .map(<[u8]>::to_vec)
        .ok_or_else(|| {
            Error::GuestResponse(format!(
                "MSG_REPORT_RSP of {} bytes cannot hold a {size}-byte report",
                rsp.len()
            ))
        })
}

fn le_u32(bytes: &[u8], offset: usize) -> Result<u32, Error> {
    offset
        .checked_add(4)
        .and_then(|end| bytes.get(offset..end))
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_le_bytes)
        .ok_or_else(|| Error::GuestResponse(format!("response too short for a u32 at {offset:#x}")))
}

#[cfg(test)]
mod tests {
    // Fixtures of known sizes; a panic here is a failed test.
    #![allow(
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects,
        clippy::as_conversions,
        clippy::unwrap_used
    )]

    use super::*;

    fn rsp(status: u32, size: u32) -> Vec<u8> {
        let mut rsp = vec![0u8; 4000];
        rsp[..4].copy_from_slice(&status.to_le_bytes());
        rsp[4..8].copy_from_slice(&size.to_le_bytes());
        for (i, b) in rsp[0x20..0x20 + REPORT_SIZE].iter_mut().enumerate() {
            *b = (i % 251) as u8 + 1;
        }
        rsp
    }

    #[test]
    fn report_is_taken_from_offset_0x20() {
        let rsp = rsp(0, 1184);
        let report = report_from_rsp(&rsp).unwrap();
        assert_eq!(report, rsp[0x20..0x20 + 1184]);
    }

    #[test]
    fn nonzero_status_is_refused() {
        let err = report_from_rsp(&rsp(0x16, 1184)).unwrap_err();
        assert!(
            matches!(&err, Error::GuestResponse(m) if m.contains("0x16")),
            "{err}"
        );
    }

    #[test]
    fn wrong_report_size_is_refused() {
        let err = report_from_rsp(&rsp(0, 1000)).unwrap_err();
        assert!(
            matches!(&err, Error::GuestResponse(m) if m.contains("1000")),
            "{err}"
        );
    }

    #[test]
    fn short_response_is_refused() {
        let err = report_from_rsp(&rsp(0, 1184)[..0x100]).unwrap_err();
        assert!(matches!(err, Error::GuestResponse(_)), "{err}");
        assert!(matches!(
            report_from_rsp(&[0; 3]),
            Err(Error::GuestResponse(_))
        ));
    }

    #[test]
    fn hypervisor_demands_are_bounded() {
        assert_eq!(pages_for(5 * 4096, 4).unwrap(), 5);
        assert_eq!(pages_for(5 * 4096 + 1, 4).unwrap(), 6);
        assert!(matches!(
            pages_for(4 * 4096, 4),
            Err(Error::GuestResponse(_))
        ));
        assert!(matches!(
            pages_for(u32::MAX, 4),
            Err(Error::GuestResponse(_))
        ));
    }

    #[test]
    fn all_zero_cert_table_means_none() {
        assert_eq!(non_empty(vec![0; 4096]), None);
        assert_eq!(non_empty(Vec::new()), None);
        assert_eq!(non_empty(vec![0, 1]), Some(vec![0, 1]));
    }

    #[test]
    fn vmpl_above_3_is_refused_before_any_io() {
        let tsm = ConfigfsTsm::with_root("/nonexistent/provenix-test");
        assert!(matches!(
            tsm.request(&[0; 64], 4, false),
            Err(Error::Vmpl(4))
        ));
        assert!(tsm.request(&[0; 64], 3, false).is_err());
    }
}
