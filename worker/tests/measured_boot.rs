//! A real measured boot: QEMU (TCG) + Debian's OVMF + swtpm boot Debian's
//! cloud kernel directly, with an initrd holding this build's
//! `provenix-worker` (tests/support/vm.rs, tests/vm/README.md).
//!
//! Inside, the VM hands out its TCG event log and the PCRs the kernel reads
//! from the TPM. Outside, the test checks that replaying the log (the
//! project's parser and replay, and tpm2_eventlog) gives the PCRs the TPM
//! holds, that OVMF measured PCRs 0-7, and that the Linux EFI stub measured
//! the load options and the initrd into PCR 9 (their digests computed here
//! from the same bytes). `provenix measure tpm` must predict the kernel's
//! and PCR 9's events and the PCRs from the same kernel, initrd and command
//! line, and predict a different PCR 9 (only) when either differs by a byte.
//!
//! With the `tpm` feature (the default), the TPM's attestation key is first
//! enrolled on the host, through both CLIs (`provenix-worker ak`, `provenix
//! ak enroll`), against the same swtpm state the VM then boots with; its
//! certificate chain goes into the initrd. In the VM the worker attests an
//! artifact with a quote. Outside, `provenix verify` accepts the bundle
//! against reference values `provenix measure manifest` computed from the
//! same kernel, initrd and command line, and rejects it, naming PCR 9, when
//! they are computed for an initrd or a command line one byte off; and
//! `tpm2_checkquote` accepts the same quote. One boot serves all of it:
//! only the reference values change.
//!
//! Without QEMU, OVMF, swtpm, busybox-static or tpm2-tools the test prints
//! `SKIP: ...` and passes, unless CI=true, where it fails. The kernel is
//! fetched once into target/vm by tests/vm/fetch-kernel.sh.

// A failed expectation is what a test reports (clippy.toml allows these in
// #[test] functions only, not in the helpers here).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "../../tests/support/vm.rs"]
mod vm;

use common::provenix_bin;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use provenix_firmware::tpm::events::{LINUX_INITRD_TAG, LINUX_LOAD_OPTIONS_TAG};
use provenix_firmware::tpm::{Decoded, EventLog, HashAlg};
#[cfg(feature = "tpm")]
use provenix_verifier::PcrValue;
use provenix_verifier::tpm::replay;
use ring::digest::{SHA256, digest};

/// What the VM runs: the event log and every PCR of every active bank, as
/// the kernel reads them, then the worker (proving that it and its
/// libraries run in there).
const RUN: &str = r#"
set -e
cp /sys/kernel/security/tpm0/binary_bios_measurements /out/eventlog
for bank in /sys/class/tpm/tpm0/pcr-*; do
    for pcr in $(seq 0 23); do echo "$pcr $(cat $bank/$pcr)"; done >/out/${bank##*/}
done
provenix-worker --version >/out/worker-version
"#;

/// Then, with the `tpm` feature: attest an artifact made in the VM with a
/// quote by the enrolled AK (its chain at /ak.pem), through the kernel's
/// resource manager. The worker verifies the bundle before writing it
/// (`/out/artifact.provenix`).
#[cfg(feature = "tpm")]
const ATTEST: &str = r#"
printf 'built in a measured VM\n' >/out/artifact
provenix-worker attest --platform tpm --tpm-tcti device:/dev/tpmrm0 --ak-kind ecc \
    --ak-cert /ak.pem --artifact /out/artifact >/out/attest
"#;

#[test]
fn measured_boot() {
    let test = "measured_boot";
    // `./run test` runs this test on its own first (the golden boot the
    // measurement tests read), then the whole suite with this variable set:
    // one boot per suite is enough, and the first run's verdict stands.
    if std::env::var_os("PROVENIX_MEASURED_BOOT_DONE").is_some() {
        eprintln!("{test}: already run by ./run test before this suite; not booting twice");
        return;
    }
    let Some(tools) = vm::tools(test) else { return };
    let Some(tpm2_eventlog) = tool(test, "tpm2_eventlog", "tpm2-tools") else {
        return;
    };
    #[cfg(feature = "tpm")]
    let Some(tpm2_checkquote) = tool(test, "tpm2_checkquote", "tpm2-tools") else {
        return;
    };
    let begun = Instant::now();
    let kernel = vm::kernel().unwrap_or_else(|why| panic!("the VM's kernel: {why}"));
    let files = Scratch::new();
    let provenix = provenix_bin();
    let enrolling = Instant::now();
    let tpm = vm::TpmState::manufactured().unwrap_or_else(|why| panic!("the TPM: {why}"));

    // The AK is a primary key from the TPM's endorsement seed, so the one
    // enrolled here against this state is the one the worker re-creates
    // in the VM.
    #[cfg(feature = "tpm")]
    let enrolled = vm::enroll(
        &tpm,
        Path::new(env!("CARGO_BIN_EXE_provenix-worker")),
        &provenix,
        &files.0,
    )
    .unwrap_or_else(|why| panic!("enrolling the AK: {why}"));
    #[cfg(feature = "tpm")]
    let (run, extra) = (
        format!("{RUN}{ATTEST}"),
        vec![(
            "ak.pem",
            std::fs::read(&enrolled.ak_chain).expect("reading the AK chain"),
        )],
    );
    #[cfg(not(feature = "tpm"))]
    let (run, extra) = (RUN.to_owned(), Vec::new());
    let enrolled_in = enrolling.elapsed();

    let initrd = initrd(&tools, &run, &extra);
    let initrd_path = files.0.join("initrd.img");
    std::fs::write(&initrd_path, &initrd).expect("writing the initrd");

    let vm = vm::Vm {
        kernel: kernel.vmlinuz.clone(),
        initrd: initrd_path.clone(),
        append: vm::APPEND.to_owned(),
        timeout: Duration::from_secs(150),
    };
    let boot = vm
        .boot(&tools, &tpm)
        .unwrap_or_else(|why| panic!("booting {}: {why}", kernel.version));
    eprintln!("{test}: booted {} in {:.1?}", kernel.version, boot.elapsed);
    assert_eq!(
        boot.status(),
        Some(0),
        "the script in the VM failed; its stderr:\n{}",
        String::from_utf8_lossy(boot.output("stderr"))
    );
    assert!(
        String::from_utf8_lossy(boot.output("worker-version")).contains("provenix-worker"),
        "provenix-worker --version in the VM printed {:?}",
        String::from_utf8_lossy(boot.output("worker-version"))
    );

    // The log, parsed and replayed by the project's code, must give the
    // PCRs the kernel read from the TPM, in every bank the TPM has.
    let log = EventLog::parse(boot.output("eventlog"))
        .unwrap_or_else(|e| panic!("parsing the VM's event log: {e}"));
    let replayed = replay(&log);
    let mut banks = 0;
    for alg in HashAlg::ALL {
        let Some(sysfs) = boot.outputs.get(&format!("pcr-{}", alg.name())) else {
            continue;
        };
        banks += 1;
        let sysfs = pcrs(sysfs);
        let extended: Vec<(u32, &[u8])> = replayed
            .extended()
            .map(|pcr| (pcr, sysfs.get(&pcr).map_or(&[][..], Vec::as_slice)))
            .collect();
        let wrong = replayed.compare(alg, extended);
        assert!(
            wrong.is_empty(),
            "the replayed log disagrees with the TPM: {wrong:?}"
        );
    }
    assert!(banks >= 1, "the VM found no PCR bank in sysfs");

    // OVMF measured PCRs 0-7 (firmware, its configuration, the boot
    // option, the kernel, Secure Boot state) and the EFI stub PCR 9.
    let extended: Vec<u32> = replayed.extended().collect();
    for pcr in (0..=7).chain([9]) {
        assert!(
            extended.contains(&pcr),
            "no event extended PCR {pcr}: {extended:?}"
        );
    }

    // tpm2-tools' replay agrees (sha256).
    let log_path = files.0.join("eventlog");
    std::fs::write(&log_path, boot.output("eventlog")).expect("writing the event log");
    for (pcr, theirs) in tpm2_eventlog_pcrs(&tpm2_eventlog, &log_path) {
        assert_eq!(
            replayed.get(HashAlg::Sha256, pcr),
            Some(theirs.as_slice()),
            "PCR {pcr}: tpm2_eventlog replays to {}",
            hex::encode(&theirs)
        );
    }

    // PCR 9 holds exactly the EFI stub's two tagged events: the load
    // options, which OVMF's direct kernel boot makes from -append plus
    // " initrd=initrd" as NUL-terminated UCS-2, then the initrd itself.
    let load_options: Vec<u8> = format!("{} initrd=initrd\0", vm.append)
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    let pcr9: Vec<(u32, String)> = log
        .events()
        .iter()
        .filter(|e| e.pcr == 9)
        .map(|e| match e.decode() {
            Ok(Decoded::Tagged(tag)) => (
                tag.id,
                hex::encode(e.digest(HashAlg::Sha256).unwrap_or_default()),
            ),
            other => panic!("PCR 9 has an event that is not tagged: {other:?}"),
        })
        .collect();
    assert_eq!(
        pcr9,
        [
            (
                LINUX_LOAD_OPTIONS_TAG,
                hex::encode(digest(&SHA256, &load_options))
            ),
            (LINUX_INITRD_TAG, hex::encode(digest(&SHA256, &initrd))),
        ],
        "PCR 9's events are not the load options and the initrd, as the EFI stub measures them"
    );

    // `provenix measure tpm` computes the same events from the kernel, the
    // initrd and the command line, and put into this boot's log they give
    // the TPM's PCRs. One byte changed in the initrd or the command line
    // changes PCR 9 and nothing else.
    let sysfs = pcrs(boot.output("pcr-sha256"));
    let measured = measure_tpm(
        &provenix,
        &kernel.vmlinuz,
        &initrd,
        &vm.append,
        &log_path,
        &files,
    );
    for event in &measured.events {
        assert!(
            log.events()
                .iter()
                .any(|e| e.pcr == event.0 && e.digest(HashAlg::Sha256) == Some(event.1.as_slice())),
            "provenix measure tpm expects {} in PCR {}, which the log does not have",
            hex::encode(&event.1),
            event.0
        );
    }
    let differing = |expected: &BTreeMap<u32, Vec<u8>>| -> Vec<u32> {
        expected
            .iter()
            .filter(|(pcr, value)| sysfs.get(pcr) != Some(value))
            .map(|(pcr, _)| *pcr)
            .collect()
    };
    assert_eq!(
        differing(&measured.pcrs),
        Vec::<u32>::new(),
        "provenix measure tpm"
    );
    // Same lengths: QEMU writes the initrd's size into the kernel's setup
    // header, so a longer initrd changes the kernel's digest (PCR 4) too.
    let mut flipped = initrd.clone();
    if let Some(last) = flipped.last_mut() {
        *last ^= 1;
    }
    let other_initrd = measure_tpm(
        &provenix,
        &kernel.vmlinuz,
        &flipped,
        &vm.append,
        &log_path,
        &files,
    );
    assert_eq!(
        differing(&other_initrd.pcrs),
        [9],
        "an initrd with one byte changed"
    );
    let other_append = vm.append.replace("panic=-1", "panic=-2");
    assert_eq!(other_append.len(), vm.append.len());
    let other_cmdline = measure_tpm(
        &provenix,
        &kernel.vmlinuz,
        &initrd,
        &other_append,
        &log_path,
        &files,
    );
    assert_eq!(
        differing(&other_cmdline.pcrs),
        [9],
        "a command line with one byte changed"
    );

    #[cfg(feature = "tpm")]
    {
        let image = Image {
            ovmf: &tools.ovmf_code,
            kernel: &kernel.vmlinuz,
            golden_log: &log_path,
        };
        let checked = Instant::now();
        verify_attested(
            &boot, &provenix, &enrolled, &image, &initrd, &vm.append, &files,
        );
        tpm2_checkquote_accepts(&tpm2_checkquote, boot.output("artifact.provenix"), &files);
        eprintln!(
            "{test}: TPM made and its AK enrolled in {enrolled_in:.1?}; the bundle \
             verified, rejected twice and its quote checked in {:.1?}",
            checked.elapsed()
        );
    }
    #[cfg(not(feature = "tpm"))]
    let _ = enrolled_in;

    save_golden(&kernel, &vm, &initrd, &boot);
    eprintln!("{test}: done in {:.1?}", begun.elapsed());
}

/// What reference values are computed from, besides the initrd and the
/// command line.
#[cfg(feature = "tpm")]
struct Image<'a> {
    ovmf: &'a Path,
    kernel: &'a Path,
    /// The firmware's own events, which no artifact gives: this boot's log.
    golden_log: &'a Path,
}

/// The bundle the worker made in the VM verifies against reference values
/// for the boot's own kernel, initrd and command line, and the verdict
/// names the worker's commit; reference values for an initrd, or a
/// command line, one byte off reject it, naming PCR 9 and nothing else.
#[cfg(feature = "tpm")]
fn verify_attested(
    boot: &vm::Boot,
    provenix: &Path,
    enrolled: &vm::Enrolled,
    image: &Image<'_>,
    initrd: &[u8],
    append: &str,
    files: &Scratch,
) {
    assert_eq!(
        boot.output("artifact"),
        b"built in a measured VM\n",
        "the artifact the VM attested"
    );
    let artifact = files.0.join("artifact");
    let bundle = files.0.join("artifact.provenix");
    std::fs::write(&artifact, boot.output("artifact")).expect("writing the artifact");
    std::fs::write(&bundle, boot.output("artifact.provenix")).expect("writing the bundle");
    // `provenix-worker 0.1.0 (source commit C)`: the commit the worker
    // states, and the one the reference values are published for.
    let version = String::from_utf8_lossy(boot.output("worker-version")).into_owned();
    let commit = version
        .split_once("(source commit ")
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(commit, _)| commit.to_owned())
        .unwrap_or_else(|| panic!("no source commit in {version:?}"));

    let verify = |name: &str, initrd: &[u8], append: &str| {
        let policy = policy(
            provenix, name, image, initrd, append, &commit, enrolled, files,
        );
        let out = Command::new(provenix)
            .arg("verify-bundle")
            .arg(&bundle)
            .arg("--artifact")
            .arg(&artifact)
            .arg("--policy")
            .arg(&policy)
            .arg("--json")
            .output()
            .expect("running provenix verify-bundle");
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "provenix verify-bundle ({name}) printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.code(), json, policy)
    };

    let (code, json, policy) = verify("same", initrd, append);
    assert_eq!(
        code,
        Some(0),
        "verify-bundle, the boot's own artifacts: {json:#}"
    );
    // verify-bundle is `verify --bundle`: one subject, one counted builder.
    let counted = &json["subjects"][0]["counted"][0];
    assert_eq!(counted["platform"], "tpm", "{json:#}");
    assert_eq!(counted["source_commit"], commit.as_str(), "{json:#}");
    assert_eq!(counted["reference_commit"], commit.as_str(), "{json:#}");
    // The decision (`provenix verify`) also holds the commit to the
    // accepted ones and to the reference values it matched.
    let out = Command::new(provenix)
        .arg("verify")
        .arg("--bundle")
        .arg(&bundle)
        .arg("--artifact")
        .arg(&artifact)
        .arg("--policy")
        .arg(&policy)
        .output()
        .expect("running provenix verify");
    assert!(
        out.status.success(),
        "provenix verify: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Same lengths, as for `measure tpm` above: the kernel's digest stays.
    let mut flipped = initrd.to_vec();
    if let Some(last) = flipped.last_mut() {
        *last ^= 1;
    }
    let other_append = append.replace("panic=-1", "panic=-2");
    for (name, initrd, append, event) in [
        ("initrd", &flipped[..], append, "PCR 9 event initrd: "),
        (
            "cmdline",
            initrd,
            &other_append[..],
            "PCR 9 event load-options: ",
        ),
    ] {
        let (code, json, _) = verify(name, initrd, append);
        assert_eq!(code, Some(1), "verify-bundle, another {name}: {json:#}");
        assert_eq!(json["verdict"], "rejected", "{json:#}");
        let reasons = json["subjects"][0]["excluded"].to_string();
        eprintln!("another {name}: rejected: {reasons}");
        assert!(
            reasons.contains(event),
            "another {name}: no {event:?} in {reasons}"
        );
        assert_eq!(
            pcrs_named(&reasons),
            [9],
            "another {name}: the reasons name other PCRs than 9: {reasons}"
        );
    }
}

/// A policy trusting the operator CA and the reference values `provenix
/// measure manifest` computes for `commit` from the image with `initrd`
/// and `append` (files named after `name`).
#[cfg(feature = "tpm")]
#[allow(clippy::too_many_arguments)] // one call site, each argument named there
fn policy(
    provenix: &Path,
    name: &str,
    image: &Image<'_>,
    initrd: &[u8],
    append: &str,
    commit: &str,
    enrolled: &vm::Enrolled,
    files: &Scratch,
) -> PathBuf {
    let f = |suffix: &str| files.0.join(format!("{name}{suffix}"));
    std::fs::write(f(".initrd"), initrd).expect("writing the initrd");
    // docs/reference-values.md: the `[tpm]` part of a description. Debug
    // quoting of these ASCII paths and strings is a TOML basic string.
    let description = format!(
        "commit = {commit:?}\n\
         [firmware]\novmf = {:?}\n\
         [boot]\nkernel = {:?}\ninitrd = {:?}\nappend = {append:?}\n\
         [tpm]\nboot = \"qemu-direct\"\nmachine = \"q35\"\nmemory_mib = 1024\n\
         banks = [\"sha256\", \"sha384\"]\ngolden_log = {:?}\n",
        image.ovmf,
        image.kernel,
        f(".initrd"),
        image.golden_log,
    );
    std::fs::write(f(".toml"), description).expect("writing the image description");
    succeeds(
        Command::new(provenix)
            .args(["measure", "manifest", "--description"])
            .arg(f(".toml"))
            .arg("--out")
            .arg(f(".json")),
        "provenix measure manifest",
    );
    let policy = format!(
        "trust_amd_roots = false\n\
         [tpm]\nak_roots = [{:?}]\nreference_values = [{:?}]\naccepted_commits = [{commit:?}]\n",
        enrolled.operator_ca,
        f(".json"),
    );
    std::fs::write(f("-policy.toml"), policy).expect("writing the policy");
    f("-policy.toml")
}

/// The PCR numbers a text names (`PCR 9 ...`), sorted, each once.
#[cfg(feature = "tpm")]
fn pcrs_named(text: &str) -> Vec<u32> {
    let mut pcrs: Vec<u32> = text
        .split("PCR ")
        .skip(1)
        .filter_map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect();
    pcrs.sort_unstable();
    pcrs.dedup();
    pcrs
}

/// `tpm2_checkquote` (tpm2-tools) accepts the bundle's quote: the AK's
/// signature over the TPMS_ATTEST, the qualifying data recomputed here
/// from the statement, and the PCR values the bundle carries against the
/// quote's digest; with one PCR value changed it refuses it.
#[cfg(feature = "tpm")]
fn tpm2_checkquote_accepts(checkquote: &Path, bundle: &[u8], files: &Scratch) {
    use provenix_verifier::{
        Bundle, Evidence, Statement, statement_report_data, tpm_qualifying_data,
    };
    let Ok(Bundle::Direct {
        statement,
        evidence: Evidence::Tpm(evidence),
    }) = Bundle::from_cbor(bundle)
    else {
        panic!("the VM's bundle is not a direct TPM bundle");
    };
    let statement = Statement::verify(&statement).expect("the bundle's statement");
    let qualifying = tpm_qualifying_data(&statement_report_data(&statement.to_cbor()));
    let f = |name: &str| files.0.join(name);
    // -u takes a TPM2B_PUBLIC: the TPMT_PUBLIC with its u16 size.
    let size = u16::try_from(evidence.ak_public.len()).expect("a TPMT_PUBLIC's size");
    let mut ak_public = size.to_be_bytes().to_vec();
    ak_public.extend_from_slice(&evidence.ak_public);
    std::fs::write(f("ak.pub"), ak_public).expect("writing ak.pub");
    std::fs::write(f("quote.msg"), &evidence.attest).expect("writing quote.msg");
    std::fs::write(f("quote.sig"), &evidence.signature).expect("writing quote.sig");
    let check = |pcrs: &[PcrValue]| {
        std::fs::write(f("quote.pcrs"), serialized_pcrs(pcrs)).expect("writing quote.pcrs");
        let out = Command::new(checkquote)
            .arg("-u")
            .arg(f("ak.pub"))
            .arg("-m")
            .arg(f("quote.msg"))
            .arg("-s")
            .arg(f("quote.sig"))
            .arg("-f")
            .arg(f("quote.pcrs"))
            .args(["-g", "sha256", "-q", &hex::encode(qualifying)])
            .output()
            .expect("running tpm2_checkquote");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (accepted, stderr) = check(&evidence.pcrs);
    assert!(accepted, "tpm2_checkquote refused the VM's quote: {stderr}");
    let mut changed = evidence.pcrs.clone();
    let pcr9 = changed
        .iter_mut()
        .find(|p| p.index == 9)
        .expect("the quote covers PCR 9");
    pcr9.value[0] ^= 1;
    assert!(
        !check(&changed).0,
        "tpm2_checkquote accepted the quote with PCR 9 changed"
    );
}

/// The PCR values in tpm2-tools' `serialized` PCR file, which
/// `tpm2_quote -o` writes by default and `tpm2_checkquote -f` reads: tss2's
/// C structures as laid out in memory on x86-64 (man tpm2_quote: "serialized
/// data structure in little endian format"). A TPML_PCR_SELECTION (u32
/// count, then 16 TPMS_PCR_SELECTION slots of u16 hash, u8 sizeofSelect,
/// 4 select bytes and 1 byte of padding), the u32 number of TPML_DIGESTs,
/// then those: u32 count and 8 TPM2B_DIGEST slots (u16 size, 64 bytes),
/// filled 8 values at a time in selection order, as TPM2_PCR_Read returns
/// them. Not the `values` format with `-l`: tpm2-tools 5.4 fails "Failed to
/// hash PCR values" with it for more than 6 PCRs, and the worker quotes 10
/// in each of two banks.
#[cfg(feature = "tpm")]
fn serialized_pcrs(pcrs: &[PcrValue]) -> Vec<u8> {
    // TPM2_NUM_PCR_BANKS, TPM2_PCR_SELECT_MAX, the TPML_DIGEST capacity
    // and sizeof(TPMU_HA): tss2_tpm2_types.h.
    const BANKS: usize = 16;
    const SELECT_MAX: usize = 4;
    const DIGESTS: usize = 8;
    const DIGEST_MAX: usize = 64;
    let mut banks: Vec<(u16, [u8; SELECT_MAX])> = Vec::new();
    for pcr in pcrs {
        if banks.last().is_none_or(|(bank, _)| *bank != pcr.bank) {
            banks.push((pcr.bank, [0; SELECT_MAX]));
        }
        let select = &mut banks.last_mut().expect("a bank").1;
        select[usize::from(pcr.index / 8)] |= 1 << (pcr.index % 8);
    }
    assert!(
        banks.len() <= BANKS,
        "more banks than a TPML_PCR_SELECTION holds"
    );
    let count = |n: usize| u32::try_from(n).expect("a count").to_le_bytes();
    let mut out = count(banks.len()).to_vec();
    for slot in 0..BANKS {
        let (bank, select) = banks.get(slot).copied().unwrap_or_default();
        out.extend_from_slice(&bank.to_le_bytes());
        // sizeofSelect 3: the PC Client TPM's 24 PCRs, as tpm2_quote writes.
        out.push(3);
        out.extend_from_slice(&select);
        out.push(0);
    }
    let lists: Vec<&[PcrValue]> = pcrs.chunks(DIGESTS).collect();
    out.extend_from_slice(&count(lists.len()));
    for list in lists {
        out.extend_from_slice(&count(list.len()));
        for slot in 0..DIGESTS {
            let value = list.get(slot).map_or(&[][..], |p| &p.value[..]);
            let size = u16::try_from(value.len()).expect("a digest's size");
            out.extend_from_slice(&size.to_le_bytes());
            out.extend_from_slice(value);
            out.resize(out.len() + DIGEST_MAX - value.len(), 0);
        }
    }
    out
}

/// Run `command`; fail the test with its output unless it succeeds.
#[cfg(feature = "tpm")]
fn succeeds(command: &mut Command, what: &str) {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("running {what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The initrd: busybox, `run`, `files` (path, contents), this build's
/// provenix-worker with its libraries and libtss2's device TCTI.
fn initrd(tools: &vm::Tools, run: &str, files: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let worker = Path::new(env!("CARGO_BIN_EXE_provenix-worker"));
    let mut initrd = vm::Initrd::new(tools, run).unwrap_or_else(|why| panic!("{why}"));
    for (path, data) in files {
        initrd.file(path, data.clone(), false);
    }
    initrd
        .program("provenix-worker", worker)
        .and_then(|i| i.tss2_device_tcti())
        .unwrap_or_else(|why| panic!("building the initrd: {why}"));
    initrd.cpio()
}

/// The initrd is a function of its inputs (its digest is what PCR 9 holds):
/// built twice, the bytes agree, and an independent reader, busybox's
/// cpio, lists every entry as owned by 0:0 with mtime 0.
#[test]
fn initrd_is_reproducible() {
    let test = "initrd_is_reproducible";
    let Some(tools) = vm::tools(test) else { return };
    let first = initrd(&tools, RUN, &[]);
    assert!(
        first == initrd(&tools, RUN, &[]),
        "two builds of the initrd differ"
    );

    let mut cpio = Command::new(&tools.busybox)
        .args(["cpio", "-tv"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running busybox cpio");
    let mut stdin = cpio.stdin.take().expect("cpio's stdin");
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &first));
    let out = cpio.wait_with_output().expect("waiting for busybox cpio");
    writer
        .join()
        .expect("the writer thread")
        .expect("writing to cpio");
    assert!(
        out.status.success(),
        "busybox cpio -tv: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = String::from_utf8_lossy(&out.stdout);
    let names: Vec<&str> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    for name in [
        "init",
        "run",
        "bin/busybox",
        "bin/provenix-worker",
        "dev/console",
    ] {
        assert!(names.contains(&name), "the initrd has no {name}: {names:?}");
    }
    for line in listing.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert!(
            fields.get(1) == Some(&"0/0") && fields.get(3) == Some(&"1970-01-01"),
            "an entry not owned by 0:0 at mtime 0: {line}"
        );
    }
}

/// What `provenix measure tpm --json` says a boot produces (sha256).
struct Measured {
    /// (PCR, digest) of each event it computed.
    events: Vec<(u32, Vec<u8>)>,
    /// The PCRs the golden log replays to with those events put in.
    pcrs: BTreeMap<u32, Vec<u8>>,
}

fn measure_tpm(
    provenix: &Path,
    kernel: &Path,
    initrd: &[u8],
    append: &str,
    golden: &Path,
    files: &Scratch,
) -> Measured {
    let initrd_path = files.0.join("measured-initrd.img");
    std::fs::write(&initrd_path, initrd).expect("writing the initrd");
    let out = Command::new(provenix)
        .args([
            "measure",
            "tpm",
            "--boot",
            "qemu-direct",
            "--machine",
            "q35",
            "--memory",
            "1024",
        ])
        .arg("--kernel")
        .arg(kernel)
        .arg("--initrd")
        .arg(&initrd_path)
        .arg(format!("--append={append}"))
        .arg("--golden-log")
        .arg(golden)
        .arg("--json")
        .output()
        .expect("running provenix measure tpm");
    assert!(
        out.status.success(),
        "provenix measure tpm: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("JSON from measure tpm");
    let hex_of =
        |v: &serde_json::Value| hex::decode(v.as_str().expect("a hex string")).expect("hex");
    let events = json["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            let pcr = e["pcr"].as_u64().and_then(|p| u32::try_from(p).ok());
            (pcr.expect("a PCR number"), hex_of(&e["digest"]))
        })
        .collect();
    let pcrs = json["pcrs"]
        .as_object()
        .expect("pcrs")
        .iter()
        .map(|(pcr, value)| (pcr.parse().expect("a PCR number"), hex_of(value)))
        .collect();
    Measured { events, pcrs }
}

/// `name` on PATH, else `None` after printing SKIP (a failure with CI=true).
fn tool(test: &str, name: &str, package: &str) -> Option<std::path::PathBuf> {
    let found = vm::which(name);
    if found.is_none() {
        let why = format!("{name} (Debian {package}) is not installed");
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true: {test}: {why}"
        );
        eprintln!("SKIP: {test}: {why}");
    }
    found
}

/// `N HEX` lines, as the VM's script writes them from sysfs.
fn pcrs(text: &[u8]) -> BTreeMap<u32, Vec<u8>> {
    String::from_utf8_lossy(text)
        .lines()
        .map(|line| {
            let (pcr, value) = line.split_once(' ').expect("a line `PCR VALUE`");
            let value = hex::decode(value.trim()).unwrap_or_else(|e| panic!("PCR {pcr}: {e}"));
            (pcr.parse().expect("a PCR number"), value)
        })
        .collect()
}

/// The sha256 PCRs `tpm2_eventlog` (tpm2-tools) replays `log` to, read from
/// the `pcrs:` section of its YAML output.
fn tpm2_eventlog_pcrs(tpm2_eventlog: &Path, log: &Path) -> BTreeMap<u32, Vec<u8>> {
    let out = Command::new(tpm2_eventlog)
        .arg(log)
        .output()
        .expect("running tpm2_eventlog");
    assert!(
        out.status.success(),
        "tpm2_eventlog failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut pcrs = BTreeMap::new();
    let mut bank = "";
    // `pcrs:`, then `  sha256:`, then `    0  : 0x<hex>` lines.
    for line in text.lines().skip_while(|line| *line != "pcrs:").skip(1) {
        let line = line.trim();
        if let Some(name) = line.strip_suffix(':') {
            bank = name;
        } else if let (Some((pcr, value)), "sha256") = (line.split_once(':'), bank) {
            let value = value.trim().trim_start_matches("0x");
            pcrs.insert(
                pcr.trim().parse().expect("a PCR number"),
                hex::decode(value).expect("a hex PCR value"),
            );
        }
    }
    assert!(
        !pcrs.is_empty(),
        "tpm2_eventlog printed no sha256 PCRs:\n{text}"
    );
    pcrs
}

/// Keep this boot's event log and what produced it in target/vm/golden for
/// the tests of `provenix measure tpm` and of the event-log code, unless a
/// golden boot is there already (it is replaced when the kernel changes).
fn save_golden(kernel: &vm::Kernel, vm: &vm::Vm, initrd: &[u8], boot: &vm::Boot) {
    let dir = vm::vm_dir().join("golden");
    let same_kernel = std::fs::read_to_string(dir.join("kernel-version"))
        .is_ok_and(|v| v.trim() == kernel.version);
    if same_kernel && dir.join("eventlog.bin").is_file() {
        return;
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating target/vm/golden");
    let ovmf = Command::new("dpkg-query")
        .args(["-W", "-f", "${Package} ${Version}", "ovmf"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let write = |name: &str, data: &[u8]| {
        std::fs::write(dir.join(name), data)
            .unwrap_or_else(|e| panic!("writing golden/{name}: {e}"))
    };
    write("eventlog.bin", boot.output("eventlog"));
    write("pcrs-sha256.txt", boot.output("pcr-sha256"));
    if let Some(sha384) = boot.outputs.get("pcr-sha384") {
        write("pcrs-sha384.txt", sha384);
    }
    write(
        "vmlinuz",
        &std::fs::read(&kernel.vmlinuz).expect("reading the kernel"),
    );
    write("initrd.img", initrd);
    write("cmdline", vm.append.as_bytes());
    write("kernel-version", kernel.version.as_bytes());
    let readme = format!(
        "# A real measured boot (written by worker/tests/measured_boot.rs)\n\n\
         QEMU q35 under TCG, `{ovmf}` (OVMF_CODE_4M.fd and a fresh copy of\n\
         OVMF_VARS_4M.fd, so Secure Boot off), swtpm 2.0 after\n\
         `swtpm_setup --create-ek-cert --pcr-banks sha256,sha384` (EK certificates\n\
         from a local CA of its own), direct kernel boot\n\
         (`-kernel vmlinuz -initrd initrd.img -append \"$(cat cmdline)\"`).\n\n\
         - `vmlinuz`: `{kernel}` (Debian, signed), tests/vm/kernel.lock.\n\
         - `initrd.img`: the newc cpio tests/support/vm.rs built: busybox, the\n  \
           test's provenix-worker (debug info stripped) and its libraries, and\n  \
           (with the worker's `tpm` feature) `/ak.pem`, the test's AK certificate\n  \
           chain, for the worker's `attest --platform tpm`.\n\
         - `cmdline`: QEMU's -append, no newline. OVMF passes the kernel the load\n  \
           options `<cmdline> initrd=initrd` (UCS-2, NUL-terminated), which the\n  \
           EFI stub measures into PCR 9, then the initrd's sha256.\n\
         - `eventlog.bin`: /sys/kernel/security/tpm0/binary_bios_measurements.\n\
         - `pcrs-sha256.txt`, `pcrs-sha384.txt`: /sys/class/tpm/tpm0/pcr-*/N after\n  \
           boot (`N HEX`); the log replays to them (PCR 10 is IMA's, not in the log).\n",
        kernel = kernel.version,
    );
    write("README.md", readme.as_bytes());
    eprintln!("saved the golden boot in {}", dir.display());
}

/// A directory for the test's files, removed when dropped.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new() -> Self {
        let dir =
            std::env::temp_dir().join(format!("provenix-measured-boot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("creating a scratch directory");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
