//! The certificate table of an extended report (GHCB spec section 4.1.8.1,
//! "SNP Extended Guest Request"; Linux returns the same bytes as the
//! configfs-tsm `auxblob`).
//!
//! The table is a list of 24-byte entries `{ GUID (16), offset: u32,
//! length: u32 }` ended by an all-zero entry; each offset and length locate a
//! DER certificate in the same buffer, after the table.

#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions
)]

use core::fmt;

use crate::Error;

const ENTRY_SIZE: usize = 24;

/// Largest table accepted. Linux caps a guest's certificate buffer at
/// SEV_FW_BLOB_MAX_SIZE pages per request; real tables are under 8 KiB
/// (VCEK ~1.4 KiB, ASK and ARK ~1.6 and ~2.3 KiB).
pub const MAX_TABLE_SIZE: usize = 1 << 20;
/// Most entries accepted: the GHCB spec defines five kinds.
pub const MAX_ENTRIES: usize = 64;

/// What a certificate-table entry holds, by its GUID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CertKind {
    /// ARK, AMD Root Key: c0b406a4-a803-4952-9743-3fb6014cd0ae.
    Ark,
    /// ASK, AMD SEV Key (signs VCEKs), or the ASVK (signs VLEKs):
    /// 4ab7b379-bbac-4fe4-a02f-05aef327c782.
    Ask,
    /// VCEK: 63da758d-e664-4564-adc5-f4b93be8accd.
    Vcek,
    /// VLEK: a8074bc2-a25a-483e-aae6-39c045a0b8a1.
    Vlek,
    /// A CRL: 92f81bc3-5811-4d3d-97ff-d19f88dc67ea.
    Crl,
    /// A GUID this crate does not know; kept, not interpreted.
    Other([u8; 16]),
}

impl CertKind {
    const KNOWN: [(CertKind, [u8; 16]); 5] = [
        (
            CertKind::Ark,
            guid(0xc0b406a4, 0xa803, 0x4952, 0x9743_3fb6014cd0ae),
        ),
        (
            CertKind::Ask,
            guid(0x4ab7b379, 0xbbac, 0x4fe4, 0xa02f_05aef327c782),
        ),
        (
            CertKind::Vcek,
            guid(0x63da758d, 0xe664, 0x4564, 0xadc5_f4b93be8accd),
        ),
        (
            CertKind::Vlek,
            guid(0xa8074bc2, 0xa25a, 0x483e, 0xaae6_39c045a0b8a1),
        ),
        (
            CertKind::Crl,
            guid(0x92f81bc3, 0x5811, 0x4d3d, 0x97ff_d19f88dc67ea),
        ),
    ];

    /// The kind for a GUID in table byte order.
    pub fn from_guid(bytes: [u8; 16]) -> Self {
        Self::KNOWN
            .iter()
            .find(|(_, g)| *g == bytes)
            .map_or(CertKind::Other(bytes), |(k, _)| *k)
    }

    /// The GUID in table byte order: the canonical string's bytes in order,
    /// as the kernel, QEMU and AMD's tools write it.
    pub fn guid(self) -> [u8; 16] {
        match self {
            CertKind::Other(g) => g,
            known => Self::KNOWN
                .iter()
                .find(|(k, _)| *k == known)
                .map_or([0; 16], |(_, g)| *g),
        }
    }
}

impl fmt::Display for CertKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertKind::Ark => f.write_str("ARK"),
            CertKind::Ask => f.write_str("ASK"),
            CertKind::Vcek => f.write_str("VCEK"),
            CertKind::Vlek => f.write_str("VLEK"),
            CertKind::Crl => f.write_str("CRL"),
            CertKind::Other(g) => g.iter().try_for_each(|b| write!(f, "{b:02x}")),
        }
    }
}

const fn guid(a: u32, b: u16, c: u16, d: u64) -> [u8; 16] {
    let a = a.to_be_bytes();
    let b = b.to_be_bytes();
    let c = c.to_be_bytes();
    let d = d.to_be_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5], d[6],
        d[7],
    ]
}

/// One entry of a certificate table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertTableEntry {
    /// What the entry holds.
    pub kind: CertKind,
    /// The entry's bytes (DER for certificates).
    pub data: Vec<u8>,
}

/// A parsed certificate table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CertTable {
    entries: Vec<CertTableEntry>,
}

impl CertTable {
    /// A table of the given entries.
    pub fn new(entries: Vec<CertTableEntry>) -> Self {
        CertTable { entries }
    }

    /// Parse a table. Refused: a buffer over [`MAX_TABLE_SIZE`], more than
    /// [`MAX_ENTRIES`] entries, a missing terminator, an entry that points
    /// outside the buffer or into the table itself, an empty entry, and a
    /// GUID that appears twice (which certificate would count?). Trailing
    /// zero padding after the table (the kernel returns whole pages) is fine.
    pub fn from_bytes(buf: &[u8]) -> Result<Self, Error> {
        let err = |msg: String| Error::CertTable(msg);
        if buf.len() > MAX_TABLE_SIZE {
            return Err(err(format!(
                "{} bytes exceeds the limit of {MAX_TABLE_SIZE}",
                buf.len()
            )));
        }
        let mut headers = Vec::new();
        let mut chunks = buf.chunks_exact(ENTRY_SIZE);
        loop {
            let Some(chunk) = chunks.next() else {
                return Err(err(format!(
                    "no all-zero terminator after {} entries",
                    headers.len()
                )));
            };
            let (guid, rest) = chunk
                .split_first_chunk::<16>()
                .ok_or_else(|| err("short entry".into()))?;
            let (offset, rest) = rest
                .split_first_chunk::<4>()
                .ok_or_else(|| err("short entry".into()))?;
            let length = rest
                .first_chunk::<4>()
                .ok_or_else(|| err("short entry".into()))?;
            let (offset, length) = (u32::from_le_bytes(*offset), u32::from_le_bytes(*length));
            if *guid == [0; 16] && offset == 0 && length == 0 {
                break;
            }
            if headers.len() == MAX_ENTRIES {
                return Err(err(format!("more than {MAX_ENTRIES} entries")));
            }
            headers.push((*guid, offset, length));
        }
        let table_end = headers
            .len()
            .checked_add(1)
            .and_then(|n| n.checked_mul(ENTRY_SIZE))
            .ok_or_else(|| err("table size overflows".into()))?;

        let mut entries: Vec<CertTableEntry> = Vec::with_capacity(headers.len());
        let mut spans: Vec<(usize, usize)> = Vec::with_capacity(headers.len());
        for (index, (guid, offset, length)) in headers.into_iter().enumerate() {
            let kind = CertKind::from_guid(guid);
            let start = usize::try_from(offset)
                .map_err(|_| err(format!("entry {index} ({kind}): offset {offset} too large")))?;
            let len = usize::try_from(length)
                .map_err(|_| err(format!("entry {index} ({kind}): length {length} too large")))?;
            if len == 0 {
                return Err(err(format!("entry {index} ({kind}) is empty")));
            }
            if start < table_end {
                return Err(err(format!(
                    "entry {index} ({kind}) at offset {start} overlaps the table, which ends at {table_end}"
                )));
            }
            let data = start
                .checked_add(len)
                .and_then(|end| buf.get(start..end))
                .ok_or_else(|| {
                    err(format!(
                        "entry {index} ({kind}) at offset {start} length {len} runs past the end of the {}-byte buffer",
                        buf.len()
                    ))
                })?;
            if entries.iter().any(|e| e.kind.guid() == guid) {
                return Err(err(format!("entry {index}: {kind} appears twice")));
            }
            // Entries must not share bytes: each certificate is its own blob,
            // and a table re-encoded from what was accepted must stay within
            // the size limit (one blob claimed twice would be written twice).
            let end = start.saturating_add(len);
            if let Some(other) = spans.iter().position(|&(s, e)| start < e && s < end) {
                return Err(err(format!(
                    "entry {index} ({kind}) overlaps entry {other}"
                )));
            }
            spans.push((start, end));
            entries.push(CertTableEntry {
                kind,
                data: data.to_vec(),
            });
        }
        Ok(CertTable { entries })
    }

    /// Serialise: the table, its terminator, then each entry's bytes in order.
    pub fn to_bytes(&self) -> Result<Vec<u8>, Error> {
        let too_big = || Error::CertTable("table too large to encode".into());
        let header = self
            .entries
            .len()
            .checked_add(1)
            .and_then(|n| n.checked_mul(ENTRY_SIZE))
            .ok_or_else(too_big)?;
        let mut table = Vec::with_capacity(header);
        let mut data = Vec::new();
        let mut offset = header;
        for entry in &self.entries {
            table.extend_from_slice(&entry.kind.guid());
            table.extend_from_slice(&u32::try_from(offset).map_err(|_| too_big())?.to_le_bytes());
            table.extend_from_slice(
                &u32::try_from(entry.data.len())
                    .map_err(|_| too_big())?
                    .to_le_bytes(),
            );
            data.extend_from_slice(&entry.data);
            offset = offset.checked_add(entry.data.len()).ok_or_else(too_big)?;
        }
        table.resize(header, 0);
        table.extend_from_slice(&data);
        Ok(table)
    }

    /// The entries, in table order.
    pub fn entries(&self) -> &[CertTableEntry] {
        &self.entries
    }

    /// The bytes of the entry of `kind`, if present.
    pub fn get(&self, kind: CertKind) -> Option<&[u8]> {
        self.entries
            .iter()
            .find(|e| e.kind == kind)
            .map(|e| e.data.as_slice())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::indexing_slicing, clippy::unwrap_used)]
    use super::*;

    fn sample() -> CertTable {
        CertTable::new(vec![
            CertTableEntry {
                kind: CertKind::Vcek,
                data: vec![1; 10],
            },
            CertTableEntry {
                kind: CertKind::Ask,
                data: vec![2; 5],
            },
            CertTableEntry {
                kind: CertKind::Ark,
                data: vec![3; 7],
            },
        ])
    }

    #[test]
    fn guid_byte_order_is_canonical() {
        assert_eq!(
            CertKind::Vcek.guid(),
            [
                0x63, 0xda, 0x75, 0x8d, 0xe6, 0x64, 0x45, 0x64, 0xad, 0xc5, 0xf4, 0xb9, 0x3b, 0xe8,
                0xac, 0xcd
            ]
        );
        assert_eq!(CertKind::from_guid(CertKind::Vlek.guid()), CertKind::Vlek);
    }

    #[test]
    fn round_trip_with_page_padding() {
        let table = sample();
        let mut bytes = table.to_bytes().unwrap();
        bytes.resize(4096, 0);
        let parsed = CertTable::from_bytes(&bytes).unwrap();
        assert_eq!(parsed, table);
        assert_eq!(parsed.get(CertKind::Ask), Some(&[2u8; 5][..]));
        assert_eq!(parsed.get(CertKind::Vlek), None);
    }

    #[test]
    fn malformed_tables_are_refused() {
        let good = sample().to_bytes().unwrap();
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty buffer", vec![]),
            ("no terminator", good[..24 * 3].to_vec()),
            ("truncated data", good[..good.len() - 1].to_vec()),
            ("offset into table", {
                let mut b = good.clone();
                b[16..20].copy_from_slice(&8u32.to_le_bytes());
                b
            }),
            ("huge length", {
                let mut b = good.clone();
                b[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
                b
            }),
            ("zero length", {
                let mut b = good.clone();
                b[20..24].copy_from_slice(&0u32.to_le_bytes());
                b
            }),
            ("duplicate guid", {
                let mut b = good.clone();
                let vcek = CertKind::Vcek.guid();
                b[24..40].copy_from_slice(&vcek);
                b
            }),
            ("oversized", vec![0; MAX_TABLE_SIZE + 1]),
            ("overlapping entries", {
                // Found by the cert_table fuzz target's round trip: two GUIDs
                // naming one blob would re-encode to twice its size.
                let mut b = good.clone();
                let first_offset = b[16..20].to_vec();
                b[24 + 16..24 + 20].copy_from_slice(&first_offset);
                b
            }),
        ];
        for (name, bytes) in cases {
            assert!(
                matches!(CertTable::from_bytes(&bytes), Err(Error::CertTable(_))),
                "{name}"
            );
        }
    }

    #[test]
    fn too_many_entries() {
        let entries = (0..=MAX_ENTRIES)
            .map(|i| CertTableEntry {
                kind: CertKind::Other([
                    u8::try_from(i % 256).unwrap(),
                    1,
                    2,
                    3,
                    4,
                    5,
                    6,
                    7,
                    8,
                    9,
                    10,
                    11,
                    12,
                    13,
                    14,
                    15,
                ]),
                data: vec![0xAA],
            })
            .collect();
        let bytes = CertTable::new(entries).to_bytes().unwrap();
        let err = CertTable::from_bytes(&bytes).unwrap_err();
        assert!(err.to_string().contains("more than"), "{err}");
    }
}
