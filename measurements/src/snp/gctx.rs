//! The launch digest: how SEV-SNP firmware folds each SNP_LAUNCH_UPDATE page
//! into the guest context's measurement.
//!
//! AMD SEV-SNP ABI specification (pub. 56860) rev 1.58, section 8.17
//! SNP_LAUNCH_UPDATE, table "PAGE_INFO Structure": for every page the
//! firmware computes
//!
//! ```text
//! LD = SHA-384(PAGE_INFO) where PAGE_INFO = DIGEST_CUR (LD so far, 48) || CONTENTS (48)
//!      || LENGTH (u16, 0x70) || PAGE_TYPE (u8) || IMI_PAGE (u8) || VMPL3_PERMS (u8)
//!      || VMPL2_PERMS (u8) || VMPL1_PERMS (u8) || reserved (u8) || GPA (u64)
//! ```
//!
//! CONTENTS is the SHA-384 of the page for NORMAL and VMSA pages and zero for
//! every other type. The launch digest starts as 48 zero bytes.

#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions
)]

use std::io::Read;
use std::sync::mpsc;

use ring::digest::{SHA384, digest};
use serde::Serialize;
use zerocopy::little_endian::{U16, U64};
use zerocopy::{Immutable, IntoBytes, KnownLayout, Unaligned};

use super::ovmf::PAGE_SIZE;

/// Bytes of a SHA-384 digest, and so of the launch digest.
pub const DIGEST_SIZE: usize = 48;
/// A SHA-384 digest.
pub type Digest384 = [u8; DIGEST_SIZE];

/// The guest-physical address recorded for every VMSA page. KVM
/// (`arch/x86/kvm/svm/sev.c`, `snp_launch_update_vmsa`) assigns each VMSA
/// to the guest in the RMP at `INITIAL_VMSA_GPA`, the page-aligned top of
/// the 52-bit guest-physical space, and the PSP measures the GPA that the
/// RMP entry holds.
pub const VMSA_GPA: u64 = 0xFFFF_FFFF_F000;

/// PAGE_TYPE of SNP_LAUNCH_UPDATE (ABI spec rev 1.58, section 8.17, table
/// "Page Types").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[non_exhaustive]
pub enum PageType {
    /// 1: a page of data, measured by its SHA-384.
    Normal,
    /// 2: a vCPU's save area (VMSA), measured by its SHA-384.
    Vmsa,
    /// 3: a page the PSP zeroes; contents not measured.
    Zero,
    /// 4: a page encrypted without being measured.
    Unmeasured,
    /// 5: the secrets page the PSP fills.
    Secrets,
    /// 6: the CPUID page the PSP checks.
    Cpuid,
}

impl PageType {
    /// The PAGE_TYPE value.
    pub fn value(self) -> u8 {
        match self {
            PageType::Normal => 1,
            PageType::Vmsa => 2,
            PageType::Zero => 3,
            PageType::Unmeasured => 4,
            PageType::Secrets => 5,
            PageType::Cpuid => 6,
        }
    }
}

/// PAGE_INFO, 0x70 bytes, every field as the spec table lays it out.
#[derive(IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct PageInfo {
    digest_cur: Digest384, // 0x00
    contents: Digest384,   // 0x30
    length: U16,           // 0x60
    page_type: u8,         // 0x62
    imi_page: u8,          // 0x63: 0, no VMM-supplied IMI pages
    vmpl3_perms: u8,       // 0x64: 0, as QEMU and KVM launch
    vmpl2_perms: u8,       // 0x65
    vmpl1_perms: u8,       // 0x66
    reserved: u8,          // 0x67
    gpa: U64,              // 0x68
}

const PAGE_INFO_SIZE: u16 = 0x70;
const _: () = assert!(size_of::<PageInfo>() == 0x70);

/// A running launch digest (the guest context's LD).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Gctx {
    ld: Digest384,
}

impl Gctx {
    /// The digest before any page: 48 zero bytes.
    pub(crate) fn new() -> Self {
        Gctx {
            ld: [0; DIGEST_SIZE],
        }
    }

    /// Continue from a digest computed elsewhere (a precomputed firmware
    /// hash).
    pub(crate) fn resume(ld: Digest384) -> Self {
        Gctx { ld }
    }

    /// The digest so far.
    pub(crate) fn ld(&self) -> Digest384 {
        self.ld
    }

    /// Fold one page into the digest.
    pub(crate) fn update(&mut self, page_type: PageType, gpa: u64, contents: &Digest384) {
        let info = PageInfo {
            digest_cur: self.ld,
            contents: *contents,
            length: U16::new(PAGE_INFO_SIZE),
            page_type: page_type.value(),
            imi_page: 0,
            vmpl3_perms: 0,
            vmpl2_perms: 0,
            vmpl1_perms: 0,
            reserved: 0,
            gpa: U64::new(gpa),
        };
        self.ld = sha384(info.as_bytes());
    }

    /// Fold `count` consecutive pages whose contents are not measured
    /// (ZERO, UNMEASURED, SECRETS, CPUID), starting at `gpa`. The caller
    /// has checked that the range stays below 4 GiB.
    pub(crate) fn update_unmeasured(&mut self, page_type: PageType, gpa: u64, count: u64) {
        let mut at = gpa;
        for _ in 0..count {
            self.update(page_type, at, &[0; DIGEST_SIZE]);
            at = at.wrapping_add(4096);
        }
    }

    /// Fold NORMAL pages starting at `gpa`, given their digests in order.
    pub(crate) fn update_normal(&mut self, gpa: u64, digests: &[Digest384]) {
        let mut at = gpa;
        for d in digests {
            self.update(PageType::Normal, at, d);
            at = at.wrapping_add(4096);
        }
    }
}

/// SHA-384 of `data`.
pub(crate) fn sha384(data: &[u8]) -> Digest384 {
    let mut out = [0; DIGEST_SIZE];
    out.copy_from_slice(digest(&SHA384, data).as_ref());
    out
}

/// Below this many pages, one thread hashes them all: a thread costs tens
/// of microseconds, 64 pages about half a millisecond.
const PARALLEL_MIN_PAGES: usize = 64;

/// The SHA-384 of every 4 KiB page of `data` (whose length is a multiple of
/// the page size), on up to `threads` threads. The page digests are
/// independent; only their folding into the launch digest is sequential.
pub(crate) fn page_digests(data: &[u8], threads: usize) -> Vec<Digest384> {
    let pages = data.len().checked_div(PAGE_SIZE).unwrap_or(0);
    let mut out = vec![[0; DIGEST_SIZE]; pages];
    let threads = threads.clamp(1, 16);
    if threads == 1 || pages < PARALLEL_MIN_PAGES {
        hash_pages(data, &mut out);
        return out;
    }
    let per_thread = pages.div_ceil(threads);
    let bytes_per_thread = per_thread.saturating_mul(PAGE_SIZE);
    std::thread::scope(|s| {
        for (chunk, digests) in data
            .chunks(bytes_per_thread)
            .zip(out.chunks_mut(per_thread))
        {
            s.spawn(move || hash_pages(chunk, digests));
        }
    });
    out
}

/// Bytes read at a time while hashing pages: 64 pages, so hashing starts
/// early and the hashing threads share the work evenly.
const READ_CHUNK: usize = 64 * PAGE_SIZE;

/// Fill `buf` (a whole number of pages) from `reader`, hashing each chunk's
/// pages on up to `threads` threads while the next chunk is read. Copying
/// from the page cache and hashing then overlap instead of adding up.
pub(crate) fn read_hashing_pages(
    reader: &mut impl Read,
    buf: &mut [u8],
    threads: usize,
) -> std::io::Result<Vec<Digest384>> {
    let pages = buf.len().checked_div(PAGE_SIZE).unwrap_or(0);
    let mut out = vec![[0; DIGEST_SIZE]; pages];
    let hashers = threads.clamp(1, 16);
    std::thread::scope(|s| {
        let mut queues = Vec::with_capacity(hashers);
        for _ in 0..hashers {
            let (tx, rx) = mpsc::channel::<(&[u8], &mut [Digest384])>();
            queues.push(tx);
            s.spawn(move || {
                for (data, digests) in rx {
                    hash_pages(data, digests);
                }
            });
        }
        let chunks = buf
            .chunks_mut(READ_CHUNK)
            .zip(out.chunks_mut(READ_CHUNK / PAGE_SIZE));
        for (i, (chunk, digests)) in chunks.enumerate() {
            reader.read_exact(chunk)?;
            let queue = i.checked_rem(hashers).and_then(|q| queues.get(q));
            if let Some(queue) = queue {
                // A hasher only stops once its queue is dropped.
                let _ = queue.send((chunk, digests));
            }
        }
        // Dropping the queues (here, or on a read error) ends the hashers;
        // the scope waits for them.
        Ok::<(), std::io::Error>(())
    })?;
    Ok(out)
}

fn hash_pages(data: &[u8], out: &mut [Digest384]) {
    for (page, d) in data.chunks_exact(PAGE_SIZE).zip(out.iter_mut()) {
        *d = sha384(page);
    }
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

    /// One step by hand, from the spec's field list, against `update`.
    #[test]
    fn page_info_layout() {
        let mut g = Gctx::new();
        let contents = [0xAB; 48];
        g.update(PageType::Normal, 0xFFC0_0000, &contents);
        let mut info = Vec::new();
        info.extend_from_slice(&[0; 48]);
        info.extend_from_slice(&contents);
        info.extend_from_slice(&[0x70, 0x00, 1, 0, 0, 0, 0, 0]);
        info.extend_from_slice(&0xFFC0_0000u64.to_le_bytes());
        assert_eq!(info.len(), 0x70);
        assert_eq!(g.ld(), sha384(&info));
    }

    #[test]
    fn page_type_values() {
        let all = [
            PageType::Normal,
            PageType::Vmsa,
            PageType::Zero,
            PageType::Unmeasured,
            PageType::Secrets,
            PageType::Cpuid,
        ];
        let values: Vec<u8> = all.iter().map(|t| t.value()).collect();
        assert_eq!(values, [1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn parallel_page_digests_agree() {
        let data: Vec<u8> = (0..300 * 4096u32).map(|i| (i % 253) as u8).collect();
        let one = page_digests(&data, 1);
        for threads in [2, 3, 7, 16, 100] {
            assert_eq!(page_digests(&data, threads), one, "{threads} threads");
        }
        assert_eq!(one[5], sha384(&data[5 * 4096..6 * 4096]));
    }

    #[test]
    fn hashing_while_reading_agrees() {
        let data: Vec<u8> = (0..300 * 4096u32).map(|i| (i % 251) as u8).collect();
        for threads in [1, 2, 5] {
            let mut buf = vec![0; data.len()];
            let digests = read_hashing_pages(&mut &data[..], &mut buf, threads).unwrap();
            assert_eq!(buf, data);
            assert_eq!(digests, page_digests(&data, 1));
        }
        // A short file is an error, not a hang.
        let mut buf = vec![0; data.len() + 4096];
        assert!(read_hashing_pages(&mut &data[..], &mut buf, 2).is_err());
    }

    #[test]
    fn unmeasured_pages_step_by_page() {
        let mut a = Gctx::new();
        a.update_unmeasured(PageType::Zero, 0x80_0000, 3);
        let mut b = Gctx::new();
        for i in 0..3 {
            b.update(PageType::Zero, 0x80_0000 + i * 4096, &[0; 48]);
        }
        assert_eq!(a, b);
    }
}
