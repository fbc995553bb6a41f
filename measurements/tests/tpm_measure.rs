//! Expected TPM measurements against their peers and real logs:
//!
//! - Authenticode digests equal `osslsigncode`'s (sha1, sha256, sha384) on
//!   Debian's signed cloud kernel, on EFI binaries from Debian's shim, GRUB
//!   and systemd-boot packages (signed and unsigned), and on crafted PE32
//!   and PE32+ images (section order, trailing data, certificate table);
//! - malformed images are refused with the error their mutation implies;
//! - the events of a QEMU direct boot equal those OVMF and the kernel's EFI
//!   stub logged in the golden boot (target/vm/golden), and substituting
//!   them into the golden log gives the golden log back;
//! - GRUB's load options and systemd-stub's section names equal those in
//!   the real GCE and Azure logs of ../shared/vectors/tpm.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use provenix_firmware::tpm::{EventLog, EventType, HashAlg};
use provenix_measurements::tpm::{
    self, Boot, Error, Machine, PeFormat, PeImage, QemuVm, Source, stub,
};

const BANKS: [HashAlg; 3] = [HashAlg::Sha1, HashAlg::Sha256, HashAlg::Sha384];

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// `None` after printing SKIP, or a failure with CI=true.
fn skip<T>(why: &str) -> Option<T> {
    assert!(!ci(), "CI=true: {why}");
    eprintln!("SKIP: {why}");
    None
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn target() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo().join("target"), PathBuf::from)
}

fn shared() -> Option<PathBuf> {
    let dir =
        std::env::var_os("PROVENIX_SHARED").map_or_else(|| repo().join("../shared"), PathBuf::from);
    if dir.join("vectors/tpm/vectors.json").is_file() {
        Some(dir)
    } else {
        skip(&format!(
            "shared vectors not found at {} (set PROVENIX_SHARED)",
            dir.display()
        ))
    }
}

/// The Debian cloud kernel the VM harness boots (tests/vm/fetch-kernel.sh).
fn cloud_kernel() -> Option<PathBuf> {
    let out = Command::new("sh")
        .arg(repo().join("tests/vm/fetch-kernel.sh"))
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let dir = String::from_utf8(o.stdout).unwrap();
            Some(PathBuf::from(dir.trim()).join("vmlinuz"))
        }
        Ok(o) => skip(&format!(
            "fetch-kernel.sh failed: {}",
            String::from_utf8_lossy(&o.stderr)
        )),
        Err(e) => skip(&format!("cannot run fetch-kernel.sh: {e}")),
    }
}

/// Debian's EFI binaries: signed shim and GRUB, unsigned shim, MokManager,
/// systemd-boot and the systemd stub, fetched with apt-get download into
/// target/tpm-efi on first use.
fn efi_binaries() -> Option<Vec<PathBuf>> {
    let dir = target().join("tpm-efi");
    let files = [
        "usr/lib/shim/shimx64.efi.signed",
        "usr/lib/shim/shimx64.efi",
        "usr/lib/shim/mmx64.efi",
        "usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed",
        "usr/lib/systemd/boot/efi/systemd-bootx64.efi",
        "usr/lib/systemd/boot/efi/linuxx64.efi.stub",
    ]
    .map(|f| dir.join("x").join(f));
    if files.iter().all(|f| f.is_file()) {
        return Some(files.to_vec());
    }
    std::fs::create_dir_all(&dir).unwrap();
    let packages = [
        "shim-signed",
        "shim-unsigned",
        "grub-efi-amd64-signed",
        "systemd-boot-efi",
    ];
    let got = Command::new("apt-get")
        .args(["-q", "-o", "APT::Sandbox::User=root", "download"])
        .args(packages)
        .current_dir(&dir)
        .status();
    if !got.is_ok_and(|s| s.success()) {
        return skip("apt-get download of Debian's EFI binaries failed");
    }
    for deb in std::fs::read_dir(&dir).unwrap() {
        let deb = deb.unwrap().path();
        if deb.extension().is_some_and(|e| e == "deb") {
            let ok = Command::new("dpkg-deb")
                .arg("-x")
                .arg(&deb)
                .arg(dir.join("x"))
                .status()
                .unwrap();
            assert!(ok.success(), "dpkg-deb -x {}", deb.display());
        }
    }
    Some(files.to_vec())
}

/// The Authenticode digest osslsigncode computes (`extract-data` writes the
/// SpcIndirectDataContent it would sign, whose DigestInfo holds it), or
/// `None` after SKIP when it is not installed.
fn osslsigncode(file: &Path, alg: HashAlg) -> Option<Vec<u8>> {
    let out = tempfile(&format!("osslsigncode-{alg}.der"));
    let _ = std::fs::remove_file(&out);
    let run = Command::new("osslsigncode")
        .args(["extract-data", "-h", alg.name(), "-in"])
        .arg(file)
        .arg("-out")
        .arg(&out)
        .output();
    let run = match run {
        Ok(r) => r,
        Err(e) => return skip(&format!("osslsigncode: {e}")),
    };
    assert!(
        run.status.success(),
        "osslsigncode extract-data {}: {}",
        file.display(),
        String::from_utf8_lossy(&run.stderr)
    );
    let der = std::fs::read(&out).unwrap();
    let _ = std::fs::remove_file(&out);
    // DigestInfo: AlgorithmIdentifier { OID, NULL } then OCTET STRING.
    let oid: &[u8] = match alg {
        HashAlg::Sha1 => &[0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a],
        HashAlg::Sha256 => &[
            0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
        ],
        HashAlg::Sha384 => &[
            0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02,
        ],
        HashAlg::Sha512 => &[
            0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03,
        ],
    };
    let mut pattern = oid.to_vec();
    pattern.extend_from_slice(&[0x05, 0x00, 0x04, u8::try_from(alg.size()).unwrap()]);
    let at = der
        .windows(pattern.len())
        .rposition(|w| w == pattern)
        .expect("no DigestInfo in osslsigncode's output")
        + pattern.len();
    Some(der[at..at + alg.size()].to_vec())
}

/// A path under target/tmp unique to this process and call: the tests run
/// in parallel threads of one process.
fn tempfile(name: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = target().join("tmp");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("tpm-measure-{}-{n}-{name}", std::process::id()))
}

fn assert_same_as_osslsigncode(path: &Path) -> Option<()> {
    let mut bytes = std::fs::read(path).unwrap();
    let image = PeImage::parse(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if !image.is_signed() && bytes.len() % 8 != 0 {
        // osslsigncode hashes an unsigned file as if zero-padded to 8
        // bytes (where a signature would go); firmware hashes it as it is.
        let unpadded = image.authenticode(HashAlg::Sha256);
        bytes.resize(bytes.len().next_multiple_of(8), 0);
        assert_ne!(
            PeImage::parse(&bytes)
                .unwrap()
                .authenticode(HashAlg::Sha256),
            unpadded
        );
    }
    let image = PeImage::parse(&bytes).unwrap();
    for alg in BANKS {
        let theirs = osslsigncode(path, alg)?;
        assert_eq!(
            hex::encode(image.authenticode(alg)),
            hex::encode(theirs),
            "{alg} Authenticode of {}",
            path.display()
        );
    }
    Some(())
}

#[test]
fn cloud_kernel_authenticode_equals_osslsigncode() {
    let Some(kernel) = cloud_kernel() else { return };
    let bytes = std::fs::read(&kernel).unwrap();
    let image = PeImage::parse(&bytes).unwrap();
    assert!(image.is_signed(), "Debian's cloud kernel is signed");
    assert_eq!(image.format(), PeFormat::Pe32Plus);
    assert_same_as_osslsigncode(&kernel);
}

#[test]
fn debian_efi_binaries_equal_osslsigncode() {
    let Some(files) = efi_binaries() else { return };
    let mut signed = 0;
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        if PeImage::parse(&bytes).unwrap().is_signed() {
            signed += 1;
        }
        if assert_same_as_osslsigncode(f).is_none() {
            return;
        }
    }
    assert_eq!(signed, 2, "the signed shim and GRUB");
}

// ---- crafted images ----

/// A section of a crafted image: name, file data.
struct Craft {
    pe32_plus: bool,
    sections: Vec<(&'static str, Vec<u8>)>,
    /// Section table order: indices into `sections`.
    table_order: Vec<usize>,
    trailing: Vec<u8>,
    certificate: Option<Vec<u8>>,
}

impl Craft {
    fn new(pe32_plus: bool) -> Craft {
        Craft {
            pe32_plus,
            sections: vec![
                (".text", (0..0x400u32).map(|i| (i * 7) as u8).collect()),
                (".data", vec![0x5a; 0x200]),
                (".reloc", vec![0xc3; 0x200]),
            ],
            table_order: vec![0, 1, 2],
            trailing: Vec::new(),
            certificate: None,
        }
    }

    /// Offsets of fields, for mutations: (optional header, section table).
    fn layout(&self) -> (usize, usize) {
        let optional = 0x80 + 24;
        let optional_size = if self.pe32_plus { 240 } else { 224 };
        (optional, optional + optional_size)
    }

    fn build(&self) -> Vec<u8> {
        let (optional, table) = self.layout();
        let headers = 0x400usize;
        let mut f = vec![0u8; headers];
        f[..2].copy_from_slice(b"MZ");
        f[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
        f[0x80..0x84].copy_from_slice(b"PE\0\0");
        let machine: u16 = if self.pe32_plus { 0x8664 } else { 0x14c };
        f[0x84..0x86].copy_from_slice(&machine.to_le_bytes());
        f[0x86..0x88].copy_from_slice(&(self.sections.len() as u16).to_le_bytes());
        f[0x94..0x96].copy_from_slice(&((table - optional) as u16).to_le_bytes());
        let magic: u16 = if self.pe32_plus { 0x20b } else { 0x10b };
        f[optional..optional + 2].copy_from_slice(&magic.to_le_bytes());
        f[optional + 60..optional + 64].copy_from_slice(&(headers as u32).to_le_bytes());
        // A CheckSum, which Authenticode leaves out.
        f[optional + 64..optional + 68].copy_from_slice(&0xdead_beefu32.to_le_bytes());
        let rva_count = if self.pe32_plus {
            optional + 108
        } else {
            optional + 92
        };
        f[rva_count..rva_count + 4].copy_from_slice(&16u32.to_le_bytes());
        // Section data in file order, after the headers.
        let mut data_at = Vec::new();
        let mut at = headers;
        for (_, d) in &self.sections {
            data_at.push(at);
            at += d.len();
        }
        for (slot, &i) in self.table_order.iter().enumerate() {
            let (name, d) = &self.sections[i];
            let h = table + slot * 40;
            f[h..h + name.len()].copy_from_slice(name.as_bytes());
            f[h + 8..h + 12].copy_from_slice(&(d.len() as u32).to_le_bytes());
            f[h + 12..h + 16].copy_from_slice(&(0x1000 * (i as u32 + 1)).to_le_bytes());
            f[h + 16..h + 20].copy_from_slice(&(d.len() as u32).to_le_bytes());
            f[h + 20..h + 24].copy_from_slice(&(data_at[i] as u32).to_le_bytes());
        }
        for (_, d) in &self.sections {
            f.extend_from_slice(d);
        }
        f.extend_from_slice(&self.trailing);
        if let Some(cert) = &self.certificate {
            let directories = if self.pe32_plus {
                optional + 112
            } else {
                optional + 96
            };
            let dir = directories + 4 * 8;
            let at = f.len() as u32;
            f[dir..dir + 4].copy_from_slice(&at.to_le_bytes());
            f[dir + 4..dir + 8].copy_from_slice(&(cert.len() as u32).to_le_bytes());
            f.extend_from_slice(cert);
        }
        f
    }
}

/// A WIN_CERTIFICATE that osslsigncode accepts: its own signature of a
/// throw-away image would do, but any length-prefixed blob works for
/// hashing, since the table is left out.
fn fake_certificate(len: usize) -> Vec<u8> {
    let mut c = (len as u32).to_le_bytes().to_vec();
    c.extend_from_slice(&0x0200u16.to_le_bytes()); // WIN_CERT_REVISION_2_0
    c.extend_from_slice(&0x0002u16.to_le_bytes()); // WIN_CERT_TYPE_PKCS_SIGNED_DATA
    c.resize(len, 0x30);
    c
}

fn crafted_cases() -> Vec<(&'static str, Craft)> {
    let mut cases = Vec::new();
    for plus in [false, true] {
        let name = |n: &'static str, p: bool| -> &'static str {
            Box::leak(format!("{}-{n}", if p { "pe32plus" } else { "pe32" }).into_boxed_str())
        };
        cases.push((name("plain", plus), Craft::new(plus)));
        let mut c = Craft::new(plus);
        c.table_order = vec![2, 0, 1];
        cases.push((name("table-out-of-file-order", plus), c));
        let mut c = Craft::new(plus);
        c.trailing = vec![0xee; 0x48];
        cases.push((name("trailing-data", plus), c));
        let mut c = Craft::new(plus);
        c.trailing = vec![0xee; 0x18];
        c.certificate = Some(fake_certificate(0x40));
        cases.push((name("trailing-data-and-certificate-table", plus), c));
    }
    cases
}

#[test]
fn crafted_images_equal_osslsigncode() {
    for (name, craft) in crafted_cases() {
        let bytes = craft.build();
        let path = tempfile(&format!("crafted-{name}.efi"));
        std::fs::write(&path, &bytes).unwrap();
        let image = PeImage::parse(&bytes).unwrap();
        assert_eq!(
            image.format(),
            if craft.pe32_plus {
                PeFormat::Pe32Plus
            } else {
                PeFormat::Pe32
            }
        );
        for alg in BANKS {
            let Some(theirs) = osslsigncode(&path, alg) else {
                return;
            };
            assert_eq!(image.authenticode(alg), theirs, "{name} {alg}");
        }
        std::fs::remove_file(&path).unwrap();
    }
}

#[test]
fn hashed_bytes_follow_the_rules() {
    // Each rule, checked by a change that must or must not alter the digest.
    let base = Craft::new(true).build();
    let digest = |b: &[u8]| PeImage::parse(b).unwrap().authenticode(HashAlg::Sha256);
    let d0 = digest(&base);
    let (optional, _) = Craft::new(true).layout();
    // CheckSum is not hashed.
    let mut m = base.clone();
    m[optional + 64] ^= 1;
    assert_eq!(digest(&m), d0);
    // Any other header byte is.
    let mut m = base.clone();
    m[optional + 68] ^= 1;
    assert_ne!(digest(&m), d0);
    // The certificate table's contents and its directory entry are not.
    let mut signed = Craft::new(true);
    signed.certificate = Some(fake_certificate(0x40));
    let s = signed.build();
    assert_eq!(digest(&s), d0);
    let mut m = s.clone();
    let last = m.len() - 1;
    m[last] ^= 1;
    assert_eq!(digest(&m), d0);
    // Sections are hashed in file order whatever the table's order: the
    // digest is that of the headers (without CheckSum and the certificate
    // entry) and then the file from the end of the headers.
    let mut c = Craft::new(true);
    c.table_order = vec![1, 2, 0];
    let b = c.build();
    let certificate_entry = optional + 112 + 32;
    let mut manual = ring::digest::Context::new(&ring::digest::SHA256);
    manual.update(&b[..optional + 64]);
    manual.update(&b[optional + 68..certificate_entry]);
    manual.update(&b[certificate_entry + 8..0x400]);
    manual.update(&b[0x400..]);
    assert_eq!(digest(&b), manual.finish().as_ref());
    // An unsigned file is hashed as it is, not padded (osslsigncode pads
    // to 8 bytes; firmware does not).
    let mut c = Craft::new(true);
    c.trailing = vec![1, 2, 3];
    let odd = c.build();
    let mut padded = odd.clone();
    padded.resize(odd.len().next_multiple_of(8), 0);
    assert_ne!(digest(&odd), digest(&padded));
}

#[test]
fn malformed_images_are_refused_by_name() {
    let craft = Craft::new(true);
    let good = craft.build();
    let (optional, table) = craft.layout();
    let put32 =
        |b: &mut Vec<u8>, at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_le_bytes());
    type Mutation = Box<dyn Fn(&mut Vec<u8>)>;
    type Expected = fn(&Error) -> bool;
    let cases: Vec<(&str, Mutation, Expected)> = vec![
        ("empty", Box::new(|b| b.clear()), |e| {
            matches!(
                e,
                Error::PeTruncated {
                    field: "PE signature",
                    ..
                }
            )
        }),
        (
            "truncated-dos-header",
            Box::new(|b| b.truncate(0x30)),
            |e| {
                matches!(
                    e,
                    Error::PeTruncated {
                        field: "MS-DOS header e_lfanew",
                        ..
                    }
                )
            },
        ),
        (
            "e_lfanew-past-end",
            Box::new(move |b| put32(b, 0x3c, 0xffff_fff0)),
            |e| {
                matches!(
                    e,
                    Error::PeTruncated {
                        field: "PE signature",
                        ..
                    }
                )
            },
        ),
        ("no-pe-signature", Box::new(|b| b[0x81] = b'X'), |e| {
            matches!(e, Error::PeSignature { offset: 0x80, .. })
        }),
        (
            "bad-magic",
            Box::new(move |b| b[optional + 1] = 0x03),
            |e| matches!(e, Error::PeMagic { found: 0x30b, .. }),
        ),
        (
            "too-many-data-directories",
            Box::new(move |b| put32(b, optional + 108, 17)),
            |e| matches!(e, Error::PeDataDirectories { count: 17 }),
        ),
        (
            "optional-header-too-small",
            Box::new(|b| b[0x94] = 100),
            |e| matches!(e, Error::PeOptionalHeaderSize { size: 100, .. }),
        ),
        (
            "section-table-past-end",
            Box::new(|b| b[0x86] = 0xff),
            |e| {
                matches!(
                    e,
                    Error::PeTruncated {
                        field: "section table",
                        ..
                    }
                )
            },
        ),
        (
            "size-of-headers-past-end",
            Box::new(move |b| put32(b, optional + 60, 0x10_0000)),
            |e| {
                matches!(
                    e,
                    Error::PeSizeOfHeaders {
                        size_of_headers: 0x10_0000,
                        ..
                    }
                )
            },
        ),
        (
            "size-of-headers-inside-header",
            Box::new(move |b| put32(b, optional + 60, 0x100)),
            |e| {
                matches!(
                    e,
                    Error::PeSizeOfHeaders {
                        size_of_headers: 0x100,
                        ..
                    }
                )
            },
        ),
        (
            "section-past-end",
            Box::new(move |b| put32(b, table + 40 + 16, 0x10_0000)),
            |e| matches!(e, Error::PeSectionBounds { index: 1, .. }),
        ),
        (
            "section-offset-overflow",
            Box::new(move |b| put32(b, table + 20, u32::MAX)),
            |e| matches!(e, Error::PeSectionBounds { index: 0, .. }),
        ),
        (
            "sections-overlap",
            Box::new(move |b| {
                // Every section claims the whole file after the headers.
                for i in 0..3 {
                    put32(b, table + i * 40 + 20, 0x400);
                    put32(b, table + i * 40 + 16, 0x800);
                }
            }),
            |e| matches!(e, Error::PeSectionsOverlap { .. }),
        ),
        (
            "certificate-table-too-large",
            Box::new(move |b| {
                // Only checked when something follows the sections.
                b.extend_from_slice(&[0; 8]);
                put32(b, optional + 112 + 32 + 4, 0x10_0000);
            }),
            |e| {
                matches!(
                    e,
                    Error::PeCertificateTable {
                        size: 0x10_0000,
                        ..
                    }
                )
            },
        ),
    ];
    assert!(PeImage::parse(&good).is_ok());
    for (name, mutate, expected) in cases {
        let mut bad = good.clone();
        mutate(&mut bad);
        match PeImage::parse(&bad) {
            Err(e) => assert!(expected(&e), "{name}: wrong error {e:?}"),
            Ok(_) => panic!("{name}: accepted"),
        }
    }
}

// ---- QEMU direct boot, against the golden boot ----

/// The golden boot's files (worker/tests/measured_boot.rs writes them).
struct Golden {
    log: Vec<u8>,
    kernel: Vec<u8>,
    initrd: Vec<u8>,
    cmdline: Vec<u8>,
}

fn golden() -> Option<Golden> {
    // tests/support/vm.rs writes it under $PROVENIX_VM_DIR when set.
    let dir = std::env::var_os("PROVENIX_VM_DIR")
        .map_or_else(|| target().join("vm"), PathBuf::from)
        .join("golden");
    let read = |n: &str| std::fs::read(dir.join(n));
    match (
        read("eventlog.bin"),
        read("vmlinuz"),
        read("initrd.img"),
        read("cmdline"),
    ) {
        (Ok(log), Ok(kernel), Ok(initrd), Ok(cmdline)) => Some(Golden {
            log,
            kernel,
            initrd,
            cmdline: cmdline
                .strip_suffix(b"\n")
                .map(<[u8]>::to_vec)
                .unwrap_or(cmdline),
        }),
        // The golden boot comes from another test, which `./run test`
        // runs first (tests/README.md): in CI its absence is a failure.
        _ => skip(&format!(
            "no golden boot in {}: run `cargo test -p provenix-worker --test measured_boot` first",
            dir.display()
        )),
    }
}

/// The golden boot's VM: tests/support/vm.rs boots q35 with 1024 MiB.
const GOLDEN_VM: QemuVm = QemuVm {
    machine: Machine::Q35,
    memory_mib: 1024,
};

#[test]
fn qemu_direct_events_equal_the_golden_boot() {
    let Some(g) = golden() else { return };
    let log = EventLog::parse(&g.log).unwrap();
    let boot = Boot::QemuDirect {
        vm: GOLDEN_VM,
        kernel: &g.kernel,
        initrd: Some(&g.initrd),
        cmdline: &g.cmdline,
    };
    let expected = tpm::expected_events(&boot, log.banks()).unwrap();
    let sources: Vec<String> = expected.iter().map(|e| e.source.to_string()).collect();
    assert_eq!(sources, ["kernel", "load-options", "initrd"]);
    let logged: Vec<_> = log
        .events()
        .iter()
        .filter(|e| {
            (e.pcr == 4 && e.event_type == EventType::EFI_BOOT_SERVICES_APPLICATION)
                || (e.pcr == 9 && e.event_type == EventType::EVENT_TAG)
        })
        .collect();
    assert_eq!(logged.len(), 3);
    for (x, e) in expected.iter().zip(&logged) {
        for &alg in log.banks() {
            assert_eq!(
                x.digest(alg).map(hex::encode),
                e.digest(alg).map(hex::encode),
                "{} {alg}",
                x.source
            );
        }
        if let Some(data) = &x.data {
            assert_eq!(data, &e.data, "{} event data", x.source);
        }
    }
    // The unpatched file's digest is not what OVMF measured: QEMU's header
    // patching is what makes the difference.
    let plain = PeImage::parse(&g.kernel)
        .unwrap()
        .authenticode(HashAlg::Sha256);
    assert_ne!(Some(&plain[..]), logged[0].digest(HashAlg::Sha256));

    // Substituting the same artifacts gives back the golden log; another
    // initrd changes exactly the initrd event.
    assert_eq!(tpm::substitute(&log, &expected).unwrap(), g.log);
    let mut other = g.initrd.clone();
    other.push(0);
    let changed = Boot::QemuDirect {
        vm: GOLDEN_VM,
        kernel: &g.kernel,
        initrd: Some(&other),
        cmdline: &g.cmdline,
    };
    let x2 = tpm::expected_events(&changed, log.banks()).unwrap();
    let log2 = EventLog::parse(&tpm::substitute(&log, &x2).unwrap()).unwrap();
    let differing: Vec<_> = log
        .events()
        .iter()
        .zip(log2.events())
        .filter(|(a, b)| a != b)
        .map(|(a, _)| (a.pcr, a.event_type))
        .collect();
    // The kernel (QEMU writes the initrd size into its header) and the
    // initrd event.
    assert_eq!(
        differing,
        [
            (4, EventType::EFI_BOOT_SERVICES_APPLICATION),
            (9, EventType::EVENT_TAG)
        ]
    );
}

#[test]
fn qemu_load_options_are_utf16_with_initrd_and_nul() {
    let got = stub::qemu_load_options(b"console=ttyS0", true)
        .unwrap()
        .unwrap();
    let want: Vec<u8> = "console=ttyS0 initrd=initrd\0"
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    assert_eq!(got, want);
    assert_eq!(stub::qemu_load_options(b"", false).unwrap(), None);
    assert!(matches!(
        stub::qemu_load_options(b"a\0b", false),
        Err(Error::CmdlineNul { at: 1 })
    ));
}

// ---- real logs of other boot paths ----

#[test]
fn grub_load_options_equal_the_gce_log() {
    let Some(shared) = shared() else { return };
    let log = EventLog::parse(
        &std::fs::read(shared.join("vectors/tpm/gce-ubuntu2404-amd-sevsnp/eventlog.bin")).unwrap(),
    )
    .unwrap();
    // GRUB logs the command line it boots in PCR 8.
    let prefix = b"kernel_cmdline: ";
    let cmdline = log
        .events()
        .iter()
        .find_map(|e| e.data.strip_prefix(&prefix[..]))
        .and_then(|c| c.strip_suffix(b"\0"))
        .expect("GRUB's kernel_cmdline event");
    let boot = Boot::Disk {
        applications: Vec::new(),
        cmdline: Some(cmdline),
        initrd: None,
    };
    let expected = tpm::expected_events(&boot, log.banks()).unwrap();
    let options = expected
        .iter()
        .find(|e| e.source == Source::LoadOptions)
        .unwrap();
    let logged = log
        .events()
        .iter()
        .find(|e| e.pcr == 9 && e.data == stub::load_options_event_data())
        .expect("the stub's load-options event");
    for &alg in log.banks() {
        assert_eq!(options.digest(alg), logged.digest(alg), "{alg}");
    }
}

#[test]
fn uki_section_names_equal_the_azure_log() {
    let Some(shared) = shared() else { return };
    let log = EventLog::parse(
        &std::fs::read(shared.join("vectors/tpm/azure-snp-ncc40ads-h100-v5/eventlog.bin")).unwrap(),
    )
    .unwrap();
    let events: Vec<_> = log
        .events()
        .iter()
        .filter(|e| e.pcr == 11 && e.event_type == EventType::IPL)
        .collect();
    // Pairs of (name, contents) in systemd's order.
    assert_eq!(events.len() % 2, 0);
    let mut order = Vec::new();
    for pair in events.chunks(2) {
        let name: Vec<u16> = pair[0]
            .data
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&c| c != 0)
            .collect();
        let name = String::from_utf16(&name).unwrap();
        let pos = tpm::uki::MEASURED_SECTIONS
            .iter()
            .position(|s| *s == name)
            .unwrap_or_else(|| panic!("{name} is not a measured section"));
        order.push(pos);
        let mut ascii = name.into_bytes();
        ascii.push(0);
        let want = ring::digest::digest(&ring::digest::SHA256, &ascii);
        assert_eq!(pair[0].digest(HashAlg::Sha256), Some(want.as_ref()));
    }
    assert!(order.windows(2).all(|w| w[0] < w[1]), "systemd's order");
}
