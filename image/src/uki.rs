//! A unified kernel image: systemd-stub with the kernel, initrd, command
//! line and os-release added as PE sections (UAPI.5, the UKI
//! specification), laid out as ukify does: each section after the stub's
//! own, `.linux` last, virtual addresses aligned to the stub's section
//! alignment, file data to its file alignment.

use anyhow::{Context, Result, bail};

/// Offsets in the PE32+ headers (PE/COFF specification, 3.3 and 3.4).
const COFF_SECTIONS: usize = 2;
const COFF_SYMBOL_TABLE: usize = 8;
const COFF_SYMBOL_COUNT: usize = 12;
const COFF_OPTIONAL_SIZE: usize = 16;
const OPT_MAGIC_PE32_PLUS: u16 = 0x20b;
const OPT_SIZE_OF_INITIALIZED_DATA: usize = 8;
const OPT_SECTION_ALIGNMENT: usize = 32;
const OPT_FILE_ALIGNMENT: usize = 36;
const OPT_SIZE_OF_IMAGE: usize = 56;
const OPT_SIZE_OF_HEADERS: usize = 60;
const OPT_CHECKSUM: usize = 64;
const OPT_DATA_DIRECTORIES: usize = 112;
const SECTION_HEADER: usize = 40;
/// IMAGE_SCN_CNT_INITIALIZED_DATA | IMAGE_SCN_MEM_READ.
const DATA_READ_ONLY: u32 = 0x4000_0040;

/// Append `sections` (name, bytes), in order, to the PE image `stub`.
pub(crate) fn build(stub: &[u8], sections: &[(&str, &[u8])]) -> Result<Vec<u8>> {
    let mut out = stub.to_vec();
    let pe = usize::try_from(read_u32(&out, 0x3c)?)?;
    if out.get(pe..pe + 4) != Some(b"PE\0\0") {
        bail!("the stub is not a PE image");
    }
    let coff = pe + 4;
    let count = usize::from(read_u16(&out, coff + COFF_SECTIONS)?);
    let opt = coff + 20;
    let opt_size = usize::from(read_u16(&out, coff + COFF_OPTIONAL_SIZE)?);
    if read_u16(&out, opt)? != OPT_MAGIC_PE32_PLUS {
        bail!("the stub is not PE32+");
    }
    let section_align = u64::from(read_u32(&out, opt + OPT_SECTION_ALIGNMENT)?);
    let file_align = u64::from(read_u32(&out, opt + OPT_FILE_ALIGNMENT)?);
    let headers_size = usize::try_from(read_u32(&out, opt + OPT_SIZE_OF_HEADERS)?)?;
    if section_align == 0 || file_align == 0 {
        bail!("the stub has a zero alignment");
    }
    let table = opt + opt_size;
    let table_end = table + (count + sections.len()) * SECTION_HEADER;
    let mut first_data = usize::MAX;
    let mut image_end = 0u64;
    let mut file_end = 0u64;
    for i in 0..count {
        let h = table + i * SECTION_HEADER;
        let vsize = u64::from(read_u32(&out, h + 8)?);
        let va = u64::from(read_u32(&out, h + 12)?);
        let raw_size = u64::from(read_u32(&out, h + 16)?);
        let raw = u64::from(read_u32(&out, h + 20)?);
        let name = out.get(h..h + 8).unwrap_or_default();
        for (new, _) in sections {
            if name.split(|&b| b == 0).next() == Some(new.as_bytes()) {
                bail!("the stub already has a {new} section");
            }
        }
        if raw_size > 0 {
            first_data = first_data.min(usize::try_from(raw)?);
        }
        image_end = image_end.max(va + vsize.max(raw_size));
        file_end = file_end.max(raw + raw_size);
    }
    if table_end > headers_size.min(first_data) {
        bail!(
            "the stub's headers have no room for {} more section headers",
            sections.len()
        );
    }
    // A signed stub's certificate table (data directory 4) would no longer
    // cover the image; a UKI is signed as a whole, if at all.
    let security = opt + OPT_DATA_DIRECTORIES + 4 * 8;
    if opt_size >= OPT_DATA_DIRECTORIES + 5 * 8 && read_u32(&out, security + 4)? != 0 {
        bail!("the stub is signed: use an unsigned stub, and sign the UKI");
    }
    // What follows the last section is the COFF symbol table gnu-efi
    // leaves in (deprecated for images, PE/COFF 3.3): dropped, so the new
    // sections follow the stub's own.
    out.truncate(usize::try_from(file_end)?);
    write_u32(&mut out, coff + COFF_SYMBOL_TABLE, 0);
    write_u32(&mut out, coff + COFF_SYMBOL_COUNT, 0);

    let mut va = align(image_end, section_align);
    let mut raw = align(file_end, file_align);
    let mut initialized = u64::from(read_u32(&out, opt + OPT_SIZE_OF_INITIALIZED_DATA)?);
    for (i, (name, data)) in sections.iter().enumerate() {
        if name.len() > 8 {
            bail!("section name {name} is longer than 8 bytes");
        }
        let size = u64::try_from(data.len())?;
        let raw_size = align(size, file_align);
        let h = table + (count + i) * SECTION_HEADER;
        let mut header = [0u8; SECTION_HEADER];
        header[..name.len()].copy_from_slice(name.as_bytes());
        header[8..12].copy_from_slice(&u32_of(size, name)?.to_le_bytes());
        header[12..16].copy_from_slice(&u32_of(va, name)?.to_le_bytes());
        header[16..20].copy_from_slice(&u32_of(raw_size, name)?.to_le_bytes());
        header[20..24].copy_from_slice(&u32_of(raw, name)?.to_le_bytes());
        header[36..40].copy_from_slice(&DATA_READ_ONLY.to_le_bytes());
        out.get_mut(h..h + SECTION_HEADER)
            .context("section table")?
            .copy_from_slice(&header);
        out.resize(usize::try_from(raw)?, 0);
        out.extend_from_slice(data);
        out.resize(usize::try_from(raw + raw_size)?, 0);
        initialized += raw_size;
        va = align(va + size, section_align);
        raw += raw_size;
    }
    let new_count = u16::try_from(count + sections.len()).context("too many sections")?;
    out[coff + COFF_SECTIONS..coff + COFF_SECTIONS + 2].copy_from_slice(&new_count.to_le_bytes());
    write_u32(
        &mut out,
        opt + OPT_SIZE_OF_IMAGE,
        u32_of(va, "SizeOfImage")?,
    );
    write_u32(
        &mut out,
        opt + OPT_SIZE_OF_INITIALIZED_DATA,
        u32_of(initialized, "SizeOfInitializedData")?,
    );
    // Firmware does not check it; zero says so rather than a stale value.
    write_u32(&mut out, opt + OPT_CHECKSUM, 0);
    Ok(out)
}

fn align(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

fn u32_of(v: u64, what: &str) -> Result<u32> {
    u32::try_from(v).with_context(|| format!("{what}: {v} does not fit a PE32+ field"))
}

fn read_u16(b: &[u8], at: usize) -> Result<u16> {
    let bytes = b.get(at..at + 2).context("the stub is truncated")?;
    Ok(u16::from_le_bytes([bytes[0], bytes[1]]))
}

fn read_u32(b: &[u8], at: usize) -> Result<u32> {
    let bytes = b.get(at..at + 4).context("the stub is truncated")?;
    Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

fn write_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
