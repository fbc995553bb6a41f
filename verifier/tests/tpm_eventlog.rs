//! The TCG event-log parser, decoder and replay on the real logs in
//! `../shared/vectors/tpm` (see its README.md and vectors.json): each log
//! replays to the PCRs its vector gives, bank by bank; the events an
//! appraisal reads decode to their known contents; `tpm2_eventlog` agrees
//! where the vectors say it is right and disagrees where they say it is
//! wrong; truncated and mutated logs are refused or parse, never panic.
//!
//! Without the shared folder the tests print SKIP; with `CI=true` a missing
//! folder or a missing `tpm2_eventlog` fails them.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use provenix_firmware::tpm::eventlog::LogFormat;
use provenix_firmware::tpm::events::{
    CrtmVersion, LINUX_INITRD_TAG, LINUX_LOAD_OPTIONS_TAG, NoAction, Separator,
};
use provenix_firmware::tpm::{Decoded, EventLog, EventType, Guid, HashAlg};
use provenix_verifier::tpm::{Pcrs, replay};
use ring::digest::{SHA256, digest};
use serde_json::Value;

type View = BTreeMap<String, BTreeMap<u32, String>>;

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// `<shared>/vectors/tpm`, or `None` (SKIP) when absent outside CI.
fn vectors() -> Option<PathBuf> {
    let shared = std::env::var_os("PROVENIX_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    let dir = shared.join("vectors/tpm");
    if dir.join("vectors.json").is_file() {
        return Some(dir);
    }
    assert!(
        !ci(),
        "CI=true but the TPM vectors are missing at {} (set PROVENIX_SHARED)",
        dir.display()
    );
    eprintln!("SKIP: TPM vectors not found at {}", dir.display());
    None
}

/// Each vector with an event log: (name, its JSON, the log's path).
fn logs(dir: &Path) -> Vec<(String, Value, PathBuf)> {
    let all: Vec<Value> =
        serde_json::from_slice(&std::fs::read(dir.join("vectors.json")).unwrap()).unwrap();
    let logs: Vec<_> = all
        .into_iter()
        .filter(|v| v.get("expected_replayed_pcrs").is_some())
        .map(|v| {
            let name = v["name"].as_str().unwrap().to_owned();
            let path = dir.join(&name).join("eventlog.bin");
            (name, v, path)
        })
        .collect();
    assert_eq!(logs.len(), 5, "vectors.json lists five event logs");
    logs
}

fn parse(path: &Path) -> EventLog {
    let bytes = std::fs::read(path).unwrap();
    EventLog::parse(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A `{"sha1": {"0": "hex", ...}, ...}` object as a view.
fn view_of(json: &Value) -> View {
    json.as_object()
        .unwrap()
        .iter()
        .map(|(bank, pcrs)| {
            let pcrs = pcrs
                .as_object()
                .unwrap()
                .iter()
                .map(|(i, v)| (i.parse().unwrap(), v.as_str().unwrap().to_owned()))
                .collect();
            (bank.clone(), pcrs)
        })
        .collect()
}

fn ours(pcrs: &Pcrs) -> View {
    pcrs.extended_view()
        .into_iter()
        .map(|(bank, v)| (bank.to_owned(), v))
        .collect()
}

fn log_named(dir: &Path, name: &str) -> EventLog {
    parse(&dir.join(name).join("eventlog.bin"))
}

#[test]
fn every_log_replays_to_its_expected_pcrs_bank_by_bank() {
    let Some(dir) = vectors() else { return };
    for (name, v, path) in logs(&dir) {
        let log = parse(&path);
        let expected = view_of(&v["expected_replayed_pcrs"]);
        let banks: Vec<&str> = log.banks().iter().map(|b| b.name()).collect();
        assert_eq!(
            banks,
            expected.keys().map(String::as_str).collect::<Vec<_>>(),
            "{name}: banks"
        );
        if let Some(n) = v["events"].as_u64() {
            assert_eq!(log.events().len() as u64, n, "{name}: event count");
        }
        let pcrs = replay(&log);
        for (bank, want) in &expected {
            let got = &ours(&pcrs)[bank];
            assert_eq!(got, want, "{name}: {bank} bank");
        }
        // The serialised view has the shape of expected_pcrs.json.
        let json = serde_json::to_value(&pcrs).unwrap();
        for (bank, want) in &expected {
            for (i, value) in want {
                assert_eq!(json[bank][i.to_string()], *value, "{name}: JSON {bank}:{i}");
            }
        }
    }
}

#[test]
fn windows_sha1_log_replays_to_all_24_quoted_pcrs() {
    let Some(dir) = vectors() else { return };
    let (_, v, path) = logs(&dir)
        .into_iter()
        .find(|(n, ..)| n == "gcp-windows-shielded-vm-quote")
        .unwrap();
    let log = parse(&path);
    assert_eq!(log.format(), LogFormat::Sha1);
    assert!(log.spec_id().is_none());
    let pcrs = replay(&log);
    let quoted = v["quoted_pcrs_sha1"].as_object().unwrap();
    assert_eq!(quoted.len(), 24);
    let quoted: Vec<(u32, Vec<u8>)> = quoted
        .iter()
        .map(|(i, h)| {
            (
                i.parse().unwrap(),
                hex::decode(h.as_str().unwrap()).unwrap(),
            )
        })
        .collect();
    // Including the untouched PCRs: zero, and all ones for 17-22.
    let mismatches = pcrs.compare(
        HashAlg::Sha1,
        quoted.iter().map(|(i, v)| (*i, v.as_slice())),
    );
    assert!(mismatches.is_empty(), "{mismatches:?}");
}

#[test]
fn tpm2_tools_variant_replays_to_its_own_pcr4_and_not_the_original() {
    let Some(dir) = vectors() else { return };
    let arch = dir.join("physical-arch-linux-workstation");
    let all: Vec<Value> =
        serde_json::from_slice(&std::fs::read(dir.join("vectors.json")).unwrap()).unwrap();
    let v = all
        .iter()
        .find(|v| v["name"] == "physical-arch-linux-workstation")
        .unwrap();
    let original = replay(&parse(&arch.join("eventlog.bin")));
    let variant = replay(&parse(&arch.join("eventlog-tpm2-tools-variant.bin")));
    assert_eq!(ours(&variant), view_of(&v["variant_replayed_pcrs"]));
    assert_ne!(ours(&variant), view_of(&v["expected_replayed_pcrs"]));
    // Only PCR 4 differs, in both banks.
    let diff = variant.differences(&original);
    let where_: Vec<(HashAlg, u32)> = diff.iter().map(|d| (d.alg, d.pcr)).collect();
    assert_eq!(where_, [(HashAlg::Sha1, 4), (HashAlg::Sha256, 4)]);
    assert_eq!(
        hex::encode(variant.get(HashAlg::Sha256, 4).unwrap()),
        "7672cbacaf6568fd1767a29cce541602ad91360dbd753a16b0d64021e619d65d"
    );
}

#[test]
fn locality_3_starts_pcr0_at_3_and_as_a_measurement_gives_the_old_tools_value() {
    let Some(dir) = vectors() else { return };
    let path = dir.join("physical-gdc-host-locality3/eventlog.bin");
    let bytes = std::fs::read(&path).unwrap();
    let log = EventLog::parse(&bytes).unwrap();
    assert_eq!(log.startup_locality(), Some(3));
    let pcr0 = hex::encode(replay(&log).get(HashAlg::Sha256, 0).unwrap());
    assert_eq!(
        pcr0,
        "dab77c454bd12c27ff6b6ce1f9adca90b7a330c1cef0b5cd01cb89fb3bd0dffa"
    );

    // tpm2-tools 5.4's value is what replay gives when the StartupLocality
    // event is taken for a measurement: PCR 0 from zero, extended with the
    // event's all-zero digest. Retype it (EV_NO_ACTION -> EV_POST_CODE) to
    // show it.
    let event = log
        .events()
        .iter()
        .find(|e| e.data.starts_with(b"StartupLocality\0"))
        .unwrap();
    let mut retyped = bytes.clone();
    retyped[event.offset + 4..event.offset + 8].copy_from_slice(&1u32.to_le_bytes());
    let retyped = EventLog::parse(&retyped).unwrap();
    assert_eq!(retyped.startup_locality(), None);
    assert_eq!(
        hex::encode(replay(&retyped).get(HashAlg::Sha256, 0).unwrap()),
        "5ce0fe6a27698dae022fd4927204dcb7edb386cc9fa41940d9c09e6c4270e48e"
    );
}

/// The `pcrs:` block of `tpm2_eventlog`'s YAML, or `None` (SKIP) without
/// the tool outside CI.
fn tpm2_eventlog(path: &Path) -> Option<View> {
    let out = match Command::new("tpm2_eventlog").arg(path).output() {
        Ok(out) => out,
        Err(e) => {
            assert!(!ci(), "CI=true but tpm2_eventlog cannot run: {e}");
            eprintln!("SKIP: tpm2_eventlog: {e}");
            return None;
        }
    };
    assert!(
        out.status.success(),
        "tpm2_eventlog {}: {out:?}",
        path.display()
    );
    let yaml = String::from_utf8(out.stdout).unwrap();
    let block = yaml.split("\npcrs:\n").nth(1).expect("a pcrs: block");
    let mut view = View::new();
    let mut bank = String::new();
    for line in block.lines() {
        let trimmed = line.trim();
        if let Some(name) = trimmed
            .strip_suffix(':')
            .filter(|_| line.starts_with("  ") && !line.starts_with("    "))
        {
            bank = name.to_owned();
        } else if let Some((i, v)) = trimmed.split_once(':') {
            let value = v.trim().strip_prefix("0x").unwrap().to_owned();
            view.entry(bank.clone())
                .or_default()
                .insert(i.trim().parse().unwrap(), value);
        }
    }
    Some(view)
}

#[test]
fn agrees_with_tpm2_eventlog_except_where_the_tool_is_wrong() {
    let Some(dir) = vectors() else { return };
    let mut compared = 0;
    for (name, v, path) in logs(&dir) {
        let Some(tool) = tpm2_eventlog(&path) else {
            return;
        };
        let pcrs = ours(&replay(&parse(&path)));
        if v["tpm2_eventlog_5.4_match"] == Value::Bool(true) {
            assert_eq!(tool, pcrs, "{name}");
        } else {
            // gdc-host: the tool ignores StartupLocality; PCR 0 is wrong
            // there and only there.
            assert_eq!(name, "physical-gdc-host-locality3");
            let expected = view_of(&v["expected_replayed_pcrs"]);
            assert_eq!(pcrs, expected);
            assert_ne!(tool["sha256"][&0], pcrs["sha256"][&0]);
            assert_eq!(
                tool["sha256"][&0],
                "5ce0fe6a27698dae022fd4927204dcb7edb386cc9fa41940d9c09e6c4270e48e"
            );
            let mut tool_fixed = tool.clone();
            tool_fixed
                .get_mut("sha256")
                .unwrap()
                .insert(0, pcrs["sha256"][&0].clone());
            assert_eq!(tool_fixed, pcrs);
        }
        compared += 1;
    }
    // The variant too: the tool's own fixture.
    let variant = dir.join("physical-arch-linux-workstation/eventlog-tpm2-tools-variant.bin");
    if let Some(tool) = tpm2_eventlog(&variant) {
        assert_eq!(tool, ours(&replay(&parse(&variant))));
        compared += 1;
    }
    assert_eq!(compared, 6);
}

#[test]
fn every_event_of_every_log_decodes() {
    let Some(dir) = vectors() else { return };
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut paths: Vec<PathBuf> = logs(&dir).into_iter().map(|(.., p)| p).collect();
    paths.push(dir.join("physical-arch-linux-workstation/eventlog-tpm2-tools-variant.bin"));
    for path in paths {
        for e in parse(&path).events() {
            let decoded = e.decode().unwrap_or_else(|err| {
                panic!(
                    "{} event {} ({}): {err}",
                    path.display(),
                    e.index,
                    e.event_type
                )
            });
            let kind = match decoded {
                Decoded::Raw(_) => "raw",
                _ => "decoded",
            };
            *counts.entry(kind).or_default() += 1;
        }
    }
    // Most events are of a type an appraisal reads.
    assert!(counts["decoded"] > 5 * counts["raw"], "{counts:?}");
}

fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

#[test]
fn gce_log_decodes_to_its_known_contents() {
    let Some(dir) = vectors() else { return };
    let log = log_named(&dir, "gce-ubuntu2404-amd-sevsnp");
    let events = log.events();

    let Decoded::NoAction(NoAction::SpecId(spec)) = events[0].decode().unwrap() else {
        panic!("event 0 is not the Spec ID event");
    };
    assert_eq!((spec.uintn_size, spec.algorithms.len()), (2, 3));
    assert_eq!(
        events[1].decode().unwrap(),
        Decoded::CrtmVersion(CrtmVersion::Text("GCE Virtual Firmware v2".into()))
    );

    // PCR 7: Secure Boot off, then PK, KEK, db, dbx.
    let vars: Vec<(Guid, String, usize)> = events
        .iter()
        .filter(|e| e.pcr == 7 && e.event_type == EventType::EFI_VARIABLE_DRIVER_CONFIG)
        .map(|e| match e.decode().unwrap() {
            Decoded::Variable(v) => (v.guid, v.name, v.data.len()),
            other => panic!("{other:?}"),
        })
        .collect();
    let names: Vec<&str> = vars.iter().map(|(_, n, _)| n.as_str()).collect();
    assert_eq!(names, ["SecureBoot", "PK", "KEK", "db", "dbx"]);
    assert_eq!(vars[0].0, Guid::GLOBAL_VARIABLE);
    assert_eq!(vars[0].2, 1);
    assert_eq!(vars[3].0, Guid::IMAGE_SECURITY_DATABASE);
    assert_eq!(
        vars[3].0.to_string(),
        "D719B2CB-3D3A-4596-A3BC-DAD00E67656F"
    );

    // Separators on PCRs 0-7, all normal.
    let seps: Vec<u32> = events
        .iter()
        .filter(|e| e.event_type == EventType::SEPARATOR)
        .map(|e| {
            assert_eq!(e.decode().unwrap(), Decoded::Separator(Separator::Normal));
            e.pcr
        })
        .collect();
    assert_eq!(seps, [7, 0, 1, 2, 3, 4, 5, 6]);

    // PCR 4: shim from the NVMe disk's ESP, then GRUB by file path alone.
    let apps: Vec<String> = events
        .iter()
        .filter(|e| e.event_type == EventType::EFI_BOOT_SERVICES_APPLICATION)
        .map(|e| match e.decode().unwrap() {
            Decoded::Image(img) => img.device_path.to_string(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        apps,
        [
            "PciRoot(0x0)/Pci(0x4,0x0)/NVMe(0x1,00-00-00-00-00-00-00-00)/HD(15,GPT,FC24E8B6-5E8C-4396-AADD-2C6A9A43B92D,0x2800,0x35000)/\\EFI\\ubuntu\\shimx64.efi",
            "\\EFI\\ubuntu\\grubx64.efi",
        ]
    );

    // PCR 5: the GPT, and the exit-boot-services actions: a failure
    // (logged without its invocation), then an attempt that succeeded.
    let gpt = events
        .iter()
        .find(|e| e.event_type == EventType::EFI_GPT_EVENT)
        .unwrap();
    let Decoded::Gpt(gpt) = gpt.decode().unwrap() else {
        panic!()
    };
    assert!(
        gpt.partitions.iter().any(|p| p.start_lba == 0x2800),
        "{gpt:?}"
    );
    let actions: Vec<String> = events
        .iter()
        .filter(|e| e.event_type == EventType::EFI_ACTION)
        .map(|e| match e.decode().unwrap() {
            Decoded::Action(a) => a,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        actions,
        [
            "Calling EFI Application from Boot Option",
            "Exit Boot Services Returned with Failure",
            "Exit Boot Services Invocation",
            "Exit Boot Services Returned with Success",
        ]
    );

    // PCR 9: the Linux stub's load options. GRUB hands the kernel its
    // command line with "BOOT_IMAGE=" in front, in UTF-16 without a NUL,
    // and that is what the stub hashed.
    let tag = events
        .iter()
        .find(|e| e.event_type == EventType::EVENT_TAG)
        .unwrap();
    assert_eq!(tag.pcr, 9);
    let Decoded::Tagged(t) = tag.decode().unwrap() else {
        panic!()
    };
    assert_eq!(
        (t.id, t.text().as_str()),
        (LINUX_LOAD_OPTIONS_TAG, "LOADED_IMAGE::LoadOptions")
    );
    let cmdline = "/vmlinuz-6.8.0-1010-gcp root=PARTUUID=8270f3c9-b4e4-4345-80ee-5a62db7ebf3f ro console=ttyS0,115200 panic=-1";
    assert_eq!(
        tag.digest(HashAlg::Sha256).unwrap(),
        digest(&SHA256, &utf16(&format!("BOOT_IMAGE={cmdline}"))).as_ref()
    );
    // GRUB measured the same command line into PCR 8, as ASCII.
    assert!(
        events.iter().any(|e| e.pcr == 8
            && e.decode().unwrap() == Decoded::Ipl(format!("kernel_cmdline: {cmdline}")))
    );
}

#[test]
fn azure_uki_log_decodes_stub_and_uki_events() {
    let Some(dir) = vectors() else { return };
    let log = log_named(&dir, "azure-snp-ncc40ads-h100-v5");
    let events = log.events();
    let tags: Vec<(u32, u32, String)> = events
        .iter()
        .filter_map(|e| match e.decode().unwrap() {
            Decoded::Tagged(t) => Some((e.pcr, t.id, t.text())),
            _ => None,
        })
        .collect();
    assert_eq!(
        tags,
        [
            (
                9,
                LINUX_LOAD_OPTIONS_TAG,
                "LOADED_IMAGE::LoadOptions".into()
            ),
            (9, LINUX_INITRD_TAG, "Linux initrd".into()),
        ]
    );
    // PCR 11: systemd-stub's seven sections, two events each (the name,
    // then the content), both described by the name in UTF-16.
    let sections: Vec<String> = events
        .iter()
        .filter(|e| e.pcr == 11)
        .filter_map(|e| match e.decode().unwrap() {
            Decoded::Ipl(s) if s.starts_with('.') => Some(s),
            _ => None,
        })
        .collect();
    assert_eq!(
        sections,
        [
            ".linux", ".osrel", ".cmdline", ".initrd", ".ucode", ".uname", ".sbat"
        ]
        .iter()
        .flat_map(|s| [s.to_string(), s.to_string()])
        .collect::<Vec<_>>()
    );
    // PCR 4: the UKI from the VMBus SCSI disk, then the .linux section
    // that systemd-stub loads from memory under its vendor media node.
    let apps: Vec<String> = events
        .iter()
        .filter(|e| e.event_type == EventType::EFI_BOOT_SERVICES_APPLICATION)
        .map(|e| match e.decode().unwrap() {
            Decoded::Image(img) => img.device_path.to_string(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        apps,
        [
            "AcpiEx(@@@0000,@@@0000,0x0,VMBus,,)/VenHw(9B17E5A2-0891-42DD-B653-80B5C22809BA,D96361BAA104294DB60572E2FFB1DC7F1A78B3F8821E1848A1C363D806EC15BB)/Scsi(0x0,0x0)/HD(1,GPT,CB96A8E9-ADDC-4BE7-B68E-69B6D1EA59CB,0x800,0x100000)/\\EFI\\BOOT\\BOOTX64.EFI",
            "VenMedia(55C5D1F8-04CD-46B5-8A20-E56CBB3052D0)",
        ]
    );
    let Decoded::CrtmVersion(v) = events[1].decode().unwrap() else {
        panic!()
    };
    assert_eq!(v, CrtmVersion::Text(String::new()));
}

#[test]
fn arch_and_gdc_quirks_decode() {
    let Some(dir) = vectors() else { return };
    let arch = log_named(&dir, "physical-arch-linux-workstation");
    // The empty SecureBoot variable is a variable with no data, not an error.
    let sb = arch
        .events()
        .iter()
        .find_map(|e| match e.decode().unwrap() {
            Decoded::Variable(v) if v.name == "SecureBoot" => Some(v),
            _ => None,
        })
        .unwrap();
    assert!(sb.data.is_empty());
    // The S-CRTM version is a 16-byte blob, not text.
    let crtm = arch
        .events()
        .iter()
        .find(|e| e.event_type == EventType::S_CRTM_VERSION)
        .unwrap();
    assert!(
        matches!(crtm.decode().unwrap(), Decoded::CrtmVersion(CrtmVersion::Bytes(b)) if b.len() == 16)
    );

    let gdc = log_named(&dir, "physical-gdc-host-locality3");
    let decoded: Vec<_> = gdc
        .events()
        .iter()
        .map(|e| (e, e.decode().unwrap()))
        .collect();
    assert!(
        decoded
            .iter()
            .any(|(e, d)| e.pcr == 0 && *d == Decoded::NoAction(NoAction::StartupLocality(3)))
    );
    assert!(
        decoded
            .iter()
            .any(|(e, d)| e.pcr == 7 && *d == Decoded::Action("DMA Protection Disabled".into()))
    );
    let tags: Vec<u32> = decoded
        .iter()
        .filter_map(|(_, d)| match d {
            Decoded::Tagged(t) => Some(t.id),
            _ => None,
        })
        .collect();
    assert_eq!(tags, [LINUX_LOAD_OPTIONS_TAG, LINUX_INITRD_TAG]);
}

/// A tiny deterministic generator, so that failures reproduce.
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Parse, and if that works, replay and decode everything: the work a
/// verifier does on a log it was handed.
fn exercise(bytes: &[u8]) -> Option<Pcrs> {
    let log = EventLog::parse(bytes).ok()?;
    for e in log.events() {
        let _ = e.decode();
    }
    Some(replay(&log))
}

#[test]
fn truncations_and_mutations_are_refused_or_parse_never_panic() {
    let Some(dir) = vectors() else { return };
    let mut cases = 0;
    let mut rng = XorShift(0x05ee_d1e5_50dd_ba11);
    for (name, _, path) in logs(&dir) {
        let bytes = std::fs::read(&path).unwrap();
        let log = EventLog::parse(&bytes).unwrap();
        let pcrs = replay(&log);
        let boundaries: Vec<usize> = log.events().iter().map(|e| e.offset).collect();

        // Truncations: at an event boundary the log is the prefix; anywhere
        // else inside an event it is refused.
        for &end in &boundaries[1..] {
            let prefix = EventLog::parse(&bytes[..end]).unwrap();
            assert_eq!(
                prefix.events(),
                &log.events()[..prefix.events().len()],
                "{name} cut at {end}"
            );
            cases += 1;
        }
        for _ in 0..40 {
            let end = rng.below(bytes.len());
            if boundaries.contains(&end) && end > 0 {
                continue;
            }
            let e = EventLog::parse(&bytes[..end]).unwrap_err();
            assert!(
                e.to_string().contains("event log") || e.to_string().contains("Spec ID"),
                "{e}"
            );
            cases += 1;
        }

        // Byte flips anywhere: refused or parsed; never a panic.
        for _ in 0..40 {
            let mut m = bytes.clone();
            let at = rng.below(m.len());
            m[at] ^= 1 << rng.below(8);
            let _ = exercise(&m);
            cases += 1;
        }

        // A flip inside an extended event's digest parses and moves exactly
        // that PCR.
        let extended: Vec<_> = log.events().iter().filter(|e| e.is_extended()).collect();
        for _ in 0..10 {
            let e = extended[rng.below(extended.len())];
            // The first digest starts after pcrIndex, eventType (and, when
            // crypto-agile, count and hashAlg).
            let skip = if log.format() == LogFormat::Sha1 {
                8
            } else {
                14
            };
            let mut m = bytes.clone();
            m[e.offset + skip + rng.below(20)] ^= 0x80;
            let changed = exercise(&m).expect("a digest flip still parses");
            let diff = changed.differences(&pcrs);
            assert_eq!(diff.len(), 1, "{name}: {diff:?}");
            // Events may list their digests in another order than the Spec
            // ID event (the Azure log: SHA-384 first).
            assert_eq!((diff[0].alg, diff[0].pcr), (e.digests[0].0, e.pcr));
            cases += 1;
        }

        // Length fields set to hostile values: refused.
        for e in log.events().iter().skip(1).take(10) {
            let size_at = e.offset
                + match log.format() {
                    LogFormat::Sha1 => 28,
                    LogFormat::CryptoAgile => {
                        12 + e.digests.iter().map(|(a, _)| 2 + a.size()).sum::<usize>()
                    }
                };
            for size in [u32::MAX, 1 << 20 | 1, e.data.len() as u32 + 1] {
                let mut m = bytes.clone();
                m[size_at..size_at + 4].copy_from_slice(&size.to_le_bytes());
                if e.index + 1 == log.events().len() || size > (1 << 20) {
                    assert!(EventLog::parse(&m).is_err(), "{name}: size {size}");
                } else {
                    let _ = exercise(&m);
                }
                cases += 1;
            }
        }
    }
    assert!(cases > 500, "{cases} cases");
    eprintln!("{cases} truncation and mutation cases");
}
