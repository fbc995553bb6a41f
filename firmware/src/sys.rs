//! The `/dev/sev-guest` ioctls: the only `unsafe` code in this crate.
//!
//! Layouts and request numbers follow Linux `include/uapi/linux/sev-guest.h`.
//! Every structure the kernel reads or writes has a compile-time size check,
//! and the one `unsafe` block is the `ioctl(2)` call itself. Callers in the
//! crate get safe functions that take borrowed buffers, so every address the
//! kernel sees is one of a live, correctly sized Rust object.

// The crate denies `unsafe_code` everywhere else (workspace lint, and
// `forbid` without the `guest` feature); an ioctl cannot be made without it.
#![allow(unsafe_code)]
#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions
)]

use std::fs::File;
use std::io;
use std::mem::offset_of;

/// `msg_version` of the request (sev-guest.h: "message version number (must
/// be non-zero)"); 1 is the MSG_REPORT_REQ version Linux's own users send.
const MSG_VERSION: u8 = 1;

/// `SNP_GUEST_VMM_ERR_INVALID_LEN` (sev-guest.h): the certificate buffer of
/// an extended request was too small; `certs_len` now holds the needed size.
pub(crate) const VMM_ERR_INVALID_LEN: u32 = 1;

/// Page size the driver counts the certificate buffer in (x86-64 base pages;
/// the driver requires `certs_len` to be a multiple of `PAGE_SIZE`, and the
/// GHCB spec section 4.1.8.1 passes the buffer as a number of 4 KiB pages).
pub(crate) const PAGE_SIZE: usize = 4096;

// `_IOC` encoding, include/uapi/asm-generic/ioctl.h: nr in bits 0..8, type in
// bits 8..16, size in bits 16..30, direction in bits 30..32.
const IOC_NRSHIFT: u32 = 0;
const IOC_TYPESHIFT: u32 = 8;
const IOC_SIZESHIFT: u32 = 16;
const IOC_DIRSHIFT: u32 = 30;
const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;

/// `_IOWR(ty, nr, size)`.
const fn iowr(ty: u8, nr: u8, size: u32) -> u32 {
    // `From` is not const; widening u8 to u32 is lossless.
    let ty = u32::from_le_bytes([ty, 0, 0, 0]);
    let nr = u32::from_le_bytes([nr, 0, 0, 0]);
    ((IOC_READ | IOC_WRITE) << IOC_DIRSHIFT)
        | (size << IOC_SIZESHIFT)
        | (ty << IOC_TYPESHIFT)
        | (nr << IOC_NRSHIFT)
}

/// The `size` field of `_IOC`: 14 bits (`_IOC_SIZEBITS`), taken from the
/// Rust layout as the C macro takes `sizeof`.
const fn ioc_size(size: usize) -> u32 {
    assert!(size < 1 << 14, "ioctl argument too large for _IOC_SIZEBITS");
    // `try_from` is not const; the assertion makes the low four bytes exact.
    let [a, b, c, d, ..] = size.to_le_bytes();
    u32::from_le_bytes([a, b, c, d])
}

/// `SNP_GUEST_REQ_IOC_TYPE` (sev-guest.h).
const SNP_GUEST_REQ_IOC_TYPE: u8 = b'S';
/// Size of `struct snp_guest_request_ioctl`, encoded in the request numbers.
const GUEST_REQUEST_IOCTL_SIZE: u32 = ioc_size(size_of::<GuestRequestIoctl>());

/// `SNP_GET_REPORT`: `_IOWR('S', 0x0, struct snp_guest_request_ioctl)`.
pub(crate) const SNP_GET_REPORT: u32 = iowr(SNP_GUEST_REQ_IOC_TYPE, 0x0, GUEST_REQUEST_IOCTL_SIZE);
/// `SNP_GET_EXT_REPORT`: `_IOWR('S', 0x2, struct snp_guest_request_ioctl)`.
pub(crate) const SNP_GET_EXT_REPORT: u32 =
    iowr(SNP_GUEST_REQ_IOC_TYPE, 0x2, GUEST_REQUEST_IOCTL_SIZE);

/// `struct snp_guest_request_ioctl`. The kernel header's anonymous union of
/// `exitinfo2` and `{ fw_error, vmm_error }` is kept as the `u64`; see
/// [`split_exitinfo2`].
#[repr(C)]
struct GuestRequestIoctl {
    msg_version: u8,
    /// The C struct's implicit padding, made explicit so that every byte
    /// handed to the kernel is initialised.
    _pad: [u8; 7],
    req_data: u64,
    resp_data: u64,
    exitinfo2: u64,
}
const _: () = assert!(size_of::<GuestRequestIoctl>() == 32);
const _: () = assert!(offset_of!(GuestRequestIoctl, req_data) == 8);
const _: () = assert!(offset_of!(GuestRequestIoctl, resp_data) == 16);
const _: () = assert!(offset_of!(GuestRequestIoctl, exitinfo2) == 24);

/// `struct snp_report_req`: the MSG_REPORT_REQ payload (ABI spec Table 24).
#[derive(Clone, Copy)]
#[repr(C)]
pub(crate) struct ReportReq {
    user_data: [u8; 64],
    vmpl: u32,
    rsvd: [u8; 28],
}
const _: () = assert!(size_of::<ReportReq>() == 96);
const _: () = assert!(offset_of!(ReportReq, vmpl) == 64);

impl ReportReq {
    /// A request for a report at `vmpl` whose REPORT_DATA is `user_data`.
    pub(crate) fn new(user_data: [u8; 64], vmpl: u32) -> Self {
        // rsvd: "Must be zero filled" (sev-guest.h).
        Self {
            user_data,
            vmpl,
            rsvd: [0; 28],
        }
    }
}

/// `struct snp_report_resp`: the decrypted response message; it holds a
/// MSG_REPORT_RSP (ABI spec Table 25) at offset 0.
#[repr(C)]
pub(crate) struct ReportResp {
    pub(crate) data: [u8; 4000],
}
const _: () = assert!(size_of::<ReportResp>() == 4000);

impl ReportResp {
    /// An all-zero response buffer.
    pub(crate) const ZERO: Self = Self { data: [0; 4000] };
}

/// `struct snp_ext_report_req`. Built only by [`get_ext_report`], so that
/// `certs_address` is always the address of a borrowed, `certs_len`-byte
/// buffer.
#[repr(C)]
struct ExtReportReq {
    data: ReportReq,
    certs_address: u64,
    certs_len: u32,
    /// The C struct's implicit tail padding, made explicit.
    _pad: [u8; 4],
}
const _: () = assert!(size_of::<ExtReportReq>() == 112);
const _: () = assert!(offset_of!(ExtReportReq, certs_address) == 96);
const _: () = assert!(offset_of!(ExtReportReq, certs_len) == 104);

/// One page of the certificate buffer; page-aligned because the GHCB hands
/// the hypervisor whole guest pages (GHCB spec section 4.1.8.1).
#[derive(Clone)]
#[repr(C, align(4096))]
pub(crate) struct Page(pub(crate) [u8; PAGE_SIZE]);
const _: () = assert!(size_of::<Page>() == PAGE_SIZE);
const _: () = assert!(align_of::<Page>() == PAGE_SIZE);

impl Page {
    /// An all-zero page.
    pub(crate) const ZERO: Self = Self([0; PAGE_SIZE]);
}

/// A failed guest request, with what the kernel reported besides errno.
#[derive(Debug)]
pub(crate) struct IoctlError {
    /// errno of the ioctl (or why it could not be issued).
    pub(crate) source: io::Error,
    /// SNP firmware status, `exitinfo2` bits 31:0.
    pub(crate) fw_error: u32,
    /// Hypervisor status, `exitinfo2` bits 63:32.
    pub(crate) vmm_error: u32,
    /// `certs_len` as the kernel left it: the needed size after
    /// [`VMM_ERR_INVALID_LEN`], the buffer size otherwise.
    pub(crate) certs_len: u32,
}

impl IoctlError {
    fn local(source: io::Error) -> Self {
        Self {
            source,
            fw_error: 0,
            vmm_error: 0,
            certs_len: 0,
        }
    }
}

/// `SNP_GET_REPORT`: a report without certificates. On success the
/// MSG_REPORT_RSP is in `resp`.
pub(crate) fn get_report(
    dev: &File,
    req: &mut ReportReq,
    resp: &mut ReportResp,
) -> Result<(), IoctlError> {
    let mut arg = GuestRequestIoctl {
        msg_version: MSG_VERSION,
        _pad: [0; 7],
        req_data: address_of(req)?,
        resp_data: address_of(resp)?,
        exitinfo2: 0,
    };
    guest_request(dev, SNP_GET_REPORT, &mut arg).map_err(|source| {
        let (fw_error, vmm_error) = split_exitinfo2(arg.exitinfo2);
        IoctlError {
            source,
            fw_error,
            vmm_error,
            certs_len: 0,
        }
    })
}

/// `SNP_GET_EXT_REPORT`: a report plus the hypervisor's certificate table,
/// written into `certs`. On success the MSG_REPORT_RSP is in `resp`.
pub(crate) fn get_ext_report(
    dev: &File,
    req: &ReportReq,
    certs: &mut [Page],
    resp: &mut ReportResp,
) -> Result<(), IoctlError> {
    let certs_len = certs
        .len()
        .checked_mul(PAGE_SIZE)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| {
            IoctlError::local(io::Error::new(
                io::ErrorKind::InvalidInput,
                "certificate buffer does not fit the 32-bit certs_len",
            ))
        })?;
    let mut ext = ExtReportReq {
        data: *req,
        certs_address: address_of_slice(certs)?,
        certs_len,
        _pad: [0; 4],
    };
    let mut arg = GuestRequestIoctl {
        msg_version: MSG_VERSION,
        _pad: [0; 7],
        req_data: address_of(&mut ext)?,
        resp_data: address_of(resp)?,
        exitinfo2: 0,
    };
    guest_request(dev, SNP_GET_EXT_REPORT, &mut arg).map_err(|source| {
        let (fw_error, vmm_error) = split_exitinfo2(arg.exitinfo2);
        IoctlError {
            source,
            fw_error,
            vmm_error,
            certs_len: ext.certs_len,
        }
    })
}

/// Splits `exitinfo2` as sev-guest.h does: "`bits[63:32]`: VMM error code,
/// `bits[31:0]` firmware error code".
fn split_exitinfo2(exitinfo2: u64) -> (u32, u32) {
    let [a, b, c, d, e, f, g, h] = exitinfo2.to_le_bytes();
    (
        u32::from_le_bytes([a, b, c, d]),
        u32::from_le_bytes([e, f, g, h]),
    )
}

/// The address the kernel is to use for `value`. Exposing the provenance
/// tells the compiler that the ioctl may read and write through it.
fn address_of<T>(value: &mut T) -> Result<u64, IoctlError> {
    to_u64(std::ptr::from_mut(value).expose_provenance())
}

fn address_of_slice<T>(values: &mut [T]) -> Result<u64, IoctlError> {
    to_u64(values.as_mut_ptr().expose_provenance())
}

fn to_u64(address: usize) -> Result<u64, IoctlError> {
    // Lossless on every 64-bit target, the only ones with SEV-SNP.
    u64::try_from(address).map_err(|_| {
        IoctlError::local(io::Error::new(
            io::ErrorKind::Unsupported,
            "addresses wider than 64 bits",
        ))
    })
}

/// Issues one guest-request ioctl.
///
/// `arg` is always built by [`get_report`] or [`get_ext_report`] from
/// borrows that outlive this call; that is what makes the call sound.
#[cfg(target_os = "linux")]
fn guest_request(dev: &File, request: u32, arg: &mut GuestRequestIoctl) -> io::Result<()> {
    use std::os::fd::AsRawFd;

    // `as` on purpose: glibc declares the request as `unsigned long`, musl
    // and bionic as `int`; the kernel reads the same 32 bits either way, and
    // the value is one of the two constants above, never input.
    #[allow(clippy::as_conversions)]
    let request = request as libc::Ioctl;
    // SAFETY: `dev` is an open file, so its descriptor is valid for the call.
    // `arg` is an exclusively borrowed `struct snp_guest_request_ioctl` whose
    // size (asserted above) is the one encoded in `request`. Its `req_data`
    // and `resp_data`, and for SNP_GET_EXT_REPORT the `certs_address` /
    // `certs_len` inside the request, are addresses and sizes of objects that
    // the callers above borrow mutably for the whole call, with the sizes
    // the driver copies (asserted above), so every kernel access through them
    // stays inside live memory that nothing else aliases.
    let rc = unsafe { libc::ioctl(dev.as_raw_fd(), request, std::ptr::from_mut(arg)) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(not(target_os = "linux"))]
fn guest_request(_dev: &File, _request: u32, _arg: &mut GuestRequestIoctl) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "/dev/sev-guest ioctls exist only on Linux",
    ))
}

#[cfg(test)]
mod tests {
    // A panic here is a failed test.
    #![allow(clippy::expect_used)]

    use super::*;

    #[test]
    fn request_numbers_match_the_kernel_header() {
        // Values of the C macros as compiled on x86-64 Linux.
        assert_eq!(SNP_GET_REPORT, 0xC020_5300);
        assert_eq!(SNP_GET_EXT_REPORT, 0xC020_5302);
    }

    #[test]
    fn struct_sizes_match_the_kernel_header() {
        assert_eq!(size_of::<GuestRequestIoctl>(), 32);
        assert_eq!(size_of::<ReportReq>(), 96);
        assert_eq!(size_of::<ReportResp>(), 4000);
        assert_eq!(size_of::<ExtReportReq>(), 112);
        assert_eq!(size_of::<Page>(), 4096);
        assert_eq!(GUEST_REQUEST_IOCTL_SIZE, 32);
    }

    /// Exercises the real ioctl(2) path on a device that is not
    /// /dev/sev-guest: the kernel must refuse with ENOTTY and leave the
    /// firmware and VMM codes and certs_len alone.
    #[cfg(target_os = "linux")]
    #[test]
    fn ioctl_on_another_device_is_enotty() {
        let dev = File::open("/dev/null").expect("open /dev/null");
        let mut req = ReportReq::new([0; 64], 0);
        let mut resp = ReportResp::ZERO;
        let err = get_report(&dev, &mut req, &mut resp).expect_err("/dev/null has no ioctls");
        assert_eq!(err.source.raw_os_error(), Some(libc::ENOTTY));
        assert_eq!((err.fw_error, err.vmm_error), (0, 0));

        let mut certs = vec![Page::ZERO; 2];
        let err =
            get_ext_report(&dev, &req, &mut certs, &mut resp).expect_err("/dev/null has no ioctls");
        assert_eq!(err.source.raw_os_error(), Some(libc::ENOTTY));
        assert_eq!(err.certs_len, 2 * 4096);
    }

    #[test]
    fn exitinfo2_splits_into_fw_and_vmm_errors() {
        assert_eq!(split_exitinfo2(0x0000_0001_0000_0000), (0, 1));
        assert_eq!(split_exitinfo2(0x0000_0002_0000_0016), (0x16, 2));
    }
}
