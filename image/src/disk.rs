//! disk.raw: a GPT disk whose one partition is an EFI System Partition
//! holding the UKI at the removable-media path `\EFI\BOOT\BOOTX64.EFI`,
//! which UEFI firmware boots with no boot entry (UEFI 2.10, 3.5.1). For
//! clouds that bring their own firmware. Every identifier is derived from
//! the UKI's hash, so the same UKI gives the same disk.

use std::fs::File;
use std::io::{Cursor, Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{Context, Result};

use crate::sha256;

const SECTOR: u64 = 512;
/// 1 GiB: what GCP requires of an imported disk (a multiple of 1 GiB), and
/// a multiple of the 1 MiB Azure requires. Written sparsely.
pub(crate) const DISK_SIZE: u64 = 1 << 30;
/// The ESP starts at 1 MiB, as partitioning tools align it.
const ESP_START: u64 = (1 << 20) / SECTOR;
const ENTRIES: u64 = 128;
const ENTRY_SIZE: u64 = 128;
const ENTRY_SECTORS: u64 = ENTRIES * ENTRY_SIZE / SECTOR;
/// C12A7328-F81F-11D2-BA4B-00A0C93EC93B, in its on-disk byte order.
const ESP_TYPE: [u8; 16] = [
    0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b,
];

/// Write the disk image for `uki` to `path`.
pub(crate) fn write(path: &Path, uki: &[u8]) -> Result<()> {
    let esp = esp(uki)?;
    let sectors = DISK_SIZE / SECTOR;
    let esp_sectors = u64::try_from(esp.len())? / SECTOR;
    let esp_end = ESP_START + esp_sectors - 1;
    let last_usable = sectors - 2 - ENTRY_SECTORS;
    anyhow::ensure!(
        esp_end <= last_usable,
        "the UKI does not fit a {DISK_SIZE}-byte disk"
    );

    let seed = sha256(uki);
    let mut entries = vec![0u8; usize::try_from(ENTRIES * ENTRY_SIZE)?];
    entries[0..16].copy_from_slice(&ESP_TYPE);
    entries[16..32].copy_from_slice(&guid(&seed, b"partition"));
    entries[32..40].copy_from_slice(&ESP_START.to_le_bytes());
    entries[40..48].copy_from_slice(&esp_end.to_le_bytes());
    for (i, unit) in "ESP".encode_utf16().enumerate() {
        entries[56 + 2 * i..58 + 2 * i].copy_from_slice(&unit.to_le_bytes());
    }
    let entries_crc = crc32fast::hash(&entries);
    let disk_guid = guid(&seed, b"disk");
    let header = |current: u64, backup: u64, entries_at: u64| {
        let mut h = vec![0u8; 92];
        h[0..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&current.to_le_bytes());
        h[32..40].copy_from_slice(&backup.to_le_bytes());
        h[40..48].copy_from_slice(&(2 + ENTRY_SECTORS).to_le_bytes());
        h[48..56].copy_from_slice(&last_usable.to_le_bytes());
        h[56..72].copy_from_slice(&disk_guid);
        h[72..80].copy_from_slice(&entries_at.to_le_bytes());
        h[80..84].copy_from_slice(&u32::try_from(ENTRIES).unwrap_or(0).to_le_bytes());
        h[84..88].copy_from_slice(&u32::try_from(ENTRY_SIZE).unwrap_or(0).to_le_bytes());
        h[88..92].copy_from_slice(&entries_crc.to_le_bytes());
        let crc = crc32fast::hash(&h);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h.resize(usize::try_from(SECTOR).unwrap_or(512), 0);
        h
    };

    // The protective MBR: one partition of type 0xEE over the whole disk.
    let mut mbr = vec![0u8; 512];
    let part = &mut mbr[446..462];
    part[1..4].copy_from_slice(&[0x00, 0x02, 0x00]);
    part[4] = 0xee;
    part[5..8].copy_from_slice(&[0xff, 0xff, 0xff]);
    part[8..12].copy_from_slice(&1u32.to_le_bytes());
    part[12..16].copy_from_slice(&u32::try_from(sectors - 1).unwrap_or(u32::MAX).to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xaa;

    let mut file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    file.set_len(DISK_SIZE)?;
    let mut at = |sector: u64, data: &[u8]| -> Result<()> {
        file.seek(SeekFrom::Start(sector * SECTOR))?;
        file.write_all(data)?;
        Ok(())
    };
    at(0, &mbr)?;
    at(1, &header(1, sectors - 1, 2))?;
    at(2, &entries)?;
    at(ESP_START, &esp)?;
    at(sectors - 1 - ENTRY_SECTORS, &entries)?;
    at(
        sectors - 1,
        &header(sectors - 1, 1, sectors - 1 - ENTRY_SECTORS),
    )?;
    file.sync_all()?;
    Ok(())
}

/// The ESP's FAT file system with the UKI as \EFI\BOOT\BOOTX64.EFI: its
/// size the UKI's plus room for the FAT, in whole MiB.
fn esp(uki: &[u8]) -> Result<Vec<u8>> {
    let size = (u64::try_from(uki.len())? * 21 / 20 + (8 << 20)).div_ceil(1 << 20) << 20;
    let mut volume = Cursor::new(vec![0u8; usize::try_from(size)?]);
    let id = sha256(uki);
    fatfs::format_volume(
        &mut volume,
        fatfs::FormatVolumeOptions::new()
            .volume_id(u32::from_le_bytes([id[0], id[1], id[2], id[3]]))
            .volume_label(*b"PROVENIX   "),
    )
    .context("formatting the ESP")?;
    {
        let fs = fatfs::FileSystem::new(&mut volume, fatfs::FsOptions::new())
            .context("opening the ESP")?;
        {
            let boot = fs.root_dir().create_dir("EFI")?.create_dir("BOOT")?;
            let mut file = boot.create_file("BOOTX64.EFI")?;
            file.write_all(uki)?;
            file.flush()?;
        }
        fs.unmount().context("writing the ESP")?;
    }
    Ok(volume.into_inner())
}

/// A version-4-shaped GUID from `seed` and a purpose, in on-disk order.
fn guid(seed: &[u8; 32], purpose: &[u8]) -> [u8; 16] {
    let mut input = seed.to_vec();
    input.extend_from_slice(purpose);
    let h = sha256(&input);
    let mut g = [0u8; 16];
    g.copy_from_slice(&h[..16]);
    g[7] = (g[7] & 0x0f) | 0x40;
    g[8] = (g[8] & 0x3f) | 0x80;
    g
}
