//! configfs-tsm report requests, run against a stand-in for the kernel.
//!
//! A real kernel creates an entry's attribute files itself when the entry is
//! made with mkdir(2), computes `outblob` when it is read, counts writes in
//! `generation`, and takes the attributes away on rmdir(2). None of that
//! exists in a temporary directory, so a thread here plays the kernel, and
//! only the kernel: the code under test is the same that runs in a guest.
//!
//! The stand-in makes the attributes named pipes, which lets it see what a
//! kernel sees:
//! - `privlevel` and `inblob` are pipes it keeps open for reading, so every
//!   write lands with it and advances `generation`, as in
//!   drivers/virt/coco/tsm.c;
//! - `provider`, `generation`, `outblob` and `auxblob` are pipes it answers
//!   when someone opens them, so `outblob` is computed at read time from the
//!   `inblob` written before, and the stand-in knows when a request is over;
//! - when the last read of a request starts, it removes the attribute files
//!   before answering, so the entry is empty again by the time the library's
//!   rmdir(2) runs, as configfs would have it.
//!
//! It creates the files a moment after the mkdir, where configfs has them
//! at once; the library waits briefly for `provider` for that reason (see
//! `ATTRIBUTE_WAIT` in src/snp/guest.rs), and creates `provider` last.

#![cfg(all(feature = "guest", unix))]
// A test that cannot set up its fixture should fail loudly, here and now.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use provenix_firmware::Error;
use provenix_firmware::snp::guest::{ConfigfsTsm, Interface, RawEvidence};

/// Attempts the library makes before reporting GenerationChanged (documented
/// on `ConfigfsTsm`).
const LIBRARY_ATTEMPTS: u32 = 3;
const REPORT_SIZE: usize = 1184;
/// Offsets in ATTESTATION_REPORT (ABI spec Table 23).
const VMPL_AT: usize = 0x30;
const REPORT_DATA_AT: usize = 0x50;

/// How the stand-in kernel behaves.
#[derive(Clone)]
struct Kernel {
    provider: &'static str,
    /// `auxblob` content; `None`: the attribute is not there.
    auxblob: Option<Vec<u8>>,
    /// At the end of this many requests-within-the-entry, another writer
    /// touches the entry, so `generation` is one more than the library's
    /// own writes explain.
    foreign_writes: u32,
}

impl Kernel {
    fn sev() -> Self {
        Self {
            provider: "sev_guest",
            auxblob: Some(cert_table()),
            foreign_writes: 0,
        }
    }
}

/// A made-up certificate table: one entry and the terminator. Content does
/// not matter here, only that it arrives unchanged.
fn cert_table() -> Vec<u8> {
    let mut table = vec![0xA5; 24];
    table.extend_from_slice(&[0; 24]);
    table.extend_from_slice(b"not really a certificate");
    table
}

fn report_data() -> [u8; 64] {
    std::array::from_fn(|i| u8::try_from(i).unwrap().wrapping_mul(7).wrapping_add(1))
}

/// A fake report group in a fresh temporary directory, with the stand-in
/// kernel running on it.
struct Harness {
    root: PathBuf,
    stop: Arc<AtomicBool>,
    kernel: Option<JoinHandle<()>>,
}

impl Harness {
    fn start(kernel: Kernel) -> Self {
        static SEQUENCE: AtomicU64 = AtomicU64::new(0);
        let root = std::env::temp_dir().join(format!(
            "provenix-configfs-test-{}-{}",
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir(&root).expect("create fake report group");
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (root, stop) = (root.clone(), Arc::clone(&stop));
            thread::spawn(move || run_kernel(&root, &kernel, &stop))
        };
        Self {
            root,
            stop,
            kernel: Some(thread),
        }
    }

    fn tsm(&self) -> ConfigfsTsm {
        ConfigfsTsm::with_root(&self.root)
    }

    /// Runs a request on its own thread, so that a library and stand-in
    /// that disagree fail the test instead of hanging it.
    fn request(&self, vmpl: u32, with_certs: bool) -> Result<RawEvidence, Error> {
        let tsm = self.tsm();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let _ = tx.send(tsm.request(&report_data(), vmpl, with_certs));
        });
        let result = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("request did not finish: library and stand-in kernel disagree");
        if self.kernel.as_ref().is_some_and(JoinHandle::is_finished) {
            panic!("the stand-in kernel stopped early");
        }
        result
    }

    /// Entries left in the report group.
    fn entries(&self) -> Vec<PathBuf> {
        fs::read_dir(&self.root)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(kernel) = self.kernel.take() {
            let stopped_cleanly = kernel.join().is_ok();
            if !thread::panicking() {
                assert!(stopped_cleanly, "the stand-in kernel panicked");
            }
        }
        let _ = fs::remove_dir_all(&self.root);
    }
}

// ---------------------------------------------------------------------------
// The stand-in kernel

fn run_kernel(root: &Path, kernel: &Kernel, stop: &AtomicBool) {
    let mut entries: Vec<EntryState> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        for dir in fs::read_dir(root).unwrap() {
            let dir = dir.unwrap().path();
            if !entries.iter().any(|e| e.dir == dir) {
                entries.push(EntryState::populate(dir, kernel));
            }
        }
        for entry in &mut entries {
            entry.step(kernel);
        }
        thread::sleep(Duration::from_millis(1));
    }
}

fn mkfifo(paths: &[PathBuf]) {
    let status = Command::new("mkfifo")
        .args(paths)
        .status()
        .expect("run mkfifo");
    assert!(status.success(), "mkfifo {paths:?}: {status}");
}

/// One report entry, as the kernel tracks it.
struct EntryState {
    dir: PathBuf,
    /// Read ends of the written attributes; `None` once torn down.
    privlevel: Option<File>,
    inblob: Option<File>,
    privlevel_value: u32,
    inblob_value: Vec<u8>,
    generation: u64,
    /// `outblob` was read since the last `generation` read: the next
    /// `generation` read ends one attempt of the library.
    outblob_read: bool,
    attempts: u32,
}

impl EntryState {
    fn populate(dir: PathBuf, kernel: &Kernel) -> Self {
        let mut pipes: Vec<PathBuf> = ["privlevel", "inblob", "generation", "outblob"]
            .iter()
            .map(|name| dir.join(name))
            .collect();
        if kernel.auxblob.is_some() {
            pipes.push(dir.join("auxblob"));
        }
        mkfifo(&pipes);
        let reader = |name: &str| {
            OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(dir.join(name))
                .unwrap()
        };
        let state = Self {
            privlevel: Some(reader("privlevel")),
            inblob: Some(reader("inblob")),
            dir,
            privlevel_value: 0,
            inblob_value: Vec::new(),
            generation: 0,
            outblob_read: false,
            attempts: 0,
        };
        // Last, so that once the library sees `provider` everything is there.
        mkfifo(&[state.dir.join("provider")]);
        state
    }

    fn step(&mut self, kernel: &Kernel) {
        for name in ["provider", "generation", "outblob", "auxblob"] {
            let path = self.dir.join(name);
            let opened = OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&path);
            match opened {
                Ok(pipe) => self.answer(name, pipe, kernel),
                // No reader yet (ENXIO), or not there (torn down, no auxblob).
                Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => panic!("open {}: {e}", path.display()),
            }
        }
    }

    /// Someone opened `name` for reading: what the kernel would show.
    fn answer(&mut self, name: &str, mut pipe: File, kernel: &Kernel) {
        self.take_writes();
        let mut last_read = false;
        let content = match name {
            "provider" => {
                // The library gives up on any other provider.
                last_read = kernel.provider != "sev_guest";
                format!("{}\n", kernel.provider).into_bytes()
            }
            "generation" => {
                if std::mem::take(&mut self.outblob_read) {
                    self.attempts += 1;
                    let foreign = self.attempts <= kernel.foreign_writes;
                    if foreign {
                        self.generation += 1;
                    }
                    last_read = !foreign || self.attempts == LIBRARY_ATTEMPTS;
                }
                format!("{}\n", self.generation).into_bytes()
            }
            "outblob" => {
                self.outblob_read = true;
                self.report()
            }
            "auxblob" => kernel.auxblob.clone().unwrap_or_default(),
            _ => unreachable!(),
        };
        if last_read {
            self.tear_down();
        } else {
            // A fresh pipe for the next reader, so that this one, still
            // connected to the library, is never answered twice.
            let next = self.dir.join(format!(".{name}.next"));
            mkfifo(std::slice::from_ref(&next));
            fs::rename(&next, self.dir.join(name)).unwrap();
        }
        pipe.write_all(&content).unwrap();
    }

    /// Reads what the library wrote since the last look; each write
    /// advances `generation`.
    fn take_writes(&mut self) {
        if let Some(bytes) = drain(self.privlevel.as_mut()) {
            let text = String::from_utf8(bytes).unwrap();
            self.privlevel_value = text.trim().parse().unwrap();
            self.generation += 1;
        }
        if let Some(bytes) = drain(self.inblob.as_mut()) {
            self.inblob_value = bytes;
            self.generation += 1;
        }
    }

    /// An ATTESTATION_REPORT-sized blob with VMPL and REPORT_DATA in place,
    /// enough to show that the request reached the "kernel".
    fn report(&self) -> Vec<u8> {
        let mut report = vec![0; REPORT_SIZE];
        report[..4].copy_from_slice(&2u32.to_le_bytes());
        report[VMPL_AT..VMPL_AT + 4].copy_from_slice(&self.privlevel_value.to_le_bytes());
        let data = REPORT_DATA_AT..REPORT_DATA_AT + self.inblob_value.len();
        report[data].copy_from_slice(&self.inblob_value);
        report
    }

    /// What rmdir(2) would leave behind in configfs: nothing.
    fn tear_down(&mut self) {
        self.privlevel = None;
        self.inblob = None;
        for file in fs::read_dir(&self.dir).unwrap() {
            fs::remove_file(file.unwrap().path()).unwrap();
        }
    }
}

/// Everything currently in a non-blocking pipe, or `None` if empty.
fn drain(pipe: Option<&mut File>) -> Option<Vec<u8>> {
    let pipe = pipe?;
    let mut bytes = Vec::new();
    let mut buf = [0; 256];
    loop {
        match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => panic!("read written attribute: {e}"),
        }
    }
    (!bytes.is_empty()).then_some(bytes)
}

// ---------------------------------------------------------------------------
// Tests

#[test]
fn report_carries_report_data_vmpl_and_certs() {
    let fake = Harness::start(Kernel::sev());
    let interface = Interface::ConfigfsTsm(fake.tsm());
    assert!(interface.to_string().starts_with("configfs-tsm at "));

    let evidence = {
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let _ = tx.send(interface.request(&report_data(), 2, true));
        });
        rx.recv_timeout(Duration::from_secs(30)).unwrap().unwrap()
    };

    assert_eq!(evidence.report.len(), REPORT_SIZE);
    assert_eq!(
        evidence.report[REPORT_DATA_AT..REPORT_DATA_AT + 64],
        report_data()
    );
    assert_eq!(evidence.report[VMPL_AT..VMPL_AT + 4], 2u32.to_le_bytes());
    assert_eq!(evidence.cert_table, Some(cert_table()));
    assert_eq!(fake.entries(), Vec::<PathBuf>::new(), "entry not removed");
}

#[test]
fn without_certs_auxblob_is_left_alone() {
    let fake = Harness::start(Kernel::sev());
    let evidence = fake.request(0, false).unwrap();
    assert_eq!(
        evidence.report[REPORT_DATA_AT..REPORT_DATA_AT + 64],
        report_data()
    );
    assert_eq!(evidence.cert_table, None);
    assert_eq!(fake.entries(), Vec::<PathBuf>::new(), "entry not removed");
}

#[test]
fn missing_auxblob_means_no_certs() {
    let fake = Harness::start(Kernel {
        auxblob: None,
        ..Kernel::sev()
    });
    let evidence = fake.request(1, true).unwrap();
    assert_eq!(evidence.cert_table, None);
    assert_eq!(fake.entries(), Vec::<PathBuf>::new(), "entry not removed");
}

#[test]
fn all_zero_auxblob_means_no_certs() {
    let fake = Harness::start(Kernel {
        auxblob: Some(vec![0; 4096]),
        ..Kernel::sev()
    });
    let evidence = fake.request(0, true).unwrap();
    assert_eq!(evidence.cert_table, None);
    assert_eq!(fake.entries(), Vec::<PathBuf>::new(), "entry not removed");
}

#[test]
fn wrong_provider_is_named_and_entry_removed() {
    let fake = Harness::start(Kernel {
        provider: "tdx_guest",
        ..Kernel::sev()
    });
    let err = fake.request(0, true).unwrap_err();
    assert!(
        matches!(&err, Error::NoGuestDevice(m) if m.contains("\"tdx_guest\"")),
        "{err}"
    );
    assert_eq!(fake.entries(), Vec::<PathBuf>::new(), "entry not removed");
}

#[test]
fn generation_bumped_once_is_retried() {
    let fake = Harness::start(Kernel {
        foreign_writes: 1,
        ..Kernel::sev()
    });
    let evidence = fake.request(0, true).unwrap();
    assert_eq!(
        evidence.report[REPORT_DATA_AT..REPORT_DATA_AT + 64],
        report_data()
    );
    assert_eq!(fake.entries(), Vec::<PathBuf>::new(), "entry not removed");
}

#[test]
fn generation_bumped_every_time_is_generation_changed() {
    let fake = Harness::start(Kernel {
        foreign_writes: u32::MAX,
        ..Kernel::sev()
    });
    let err = fake.request(0, true).unwrap_err();
    match err {
        Error::GenerationChanged {
            path,
            before,
            after,
        } => {
            assert!(path.starts_with(fake.root.to_str().unwrap()), "{path}");
            assert_eq!(after, before + 1);
        }
        other => panic!("expected GenerationChanged, got {other}"),
    }
    assert_eq!(fake.entries(), Vec::<PathBuf>::new(), "entry not removed");
}

#[test]
fn vmpl_above_3_is_refused_without_an_entry() {
    let fake = Harness::start(Kernel::sev());
    assert!(matches!(fake.request(4, false), Err(Error::Vmpl(4))));
    assert_eq!(fake.entries(), Vec::<PathBuf>::new());
}
