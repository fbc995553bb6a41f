//! The `provenix` binary: verdicts, exit codes (0 accepted, 1 rejected,
//! 2 error) and JSON output.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../tests/support/evidence.rs"]
mod common;

use std::path::{Path, PathBuf};

use common::provenix;
use provenix_firmware::sim::{ChainParams, ReportParams, SimPlatform, VekKind, ark_fingerprint};
use provenix_firmware::snp::{Product, TcbVersion};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("provenix-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn inspect_prints_every_vector() {
    let Some(dir) = common::shared() else { return };
    for v in common::vectors().unwrap() {
        let report = dir
            .join("vectors/snp")
            .join(v.json["files"]["report"].as_str().unwrap());
        let (code, out, err) = provenix(&["inspect", s(&report), "--json"]);
        assert_eq!(code, 0, "{}: {err}", v.id);
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(json["measurement"], v.json["measurement"], "{}", v.id);
        assert_eq!(json["chip_id"], v.json["chip_id"], "{}", v.id);
        let (code, out, _) = provenix(&["inspect", s(&report)]);
        assert_eq!(code, 0);
        for field in [
            "measurement",
            "reported_tcb",
            "chip_id",
            "policy",
            "signature.r",
        ] {
            assert!(out.contains(field), "{}: {field} missing", v.id);
        }
    }
}

#[test]
fn verify_report_exit_codes_follow_the_verdict() {
    let Some(dir) = common::shared() else { return };
    let snp = dir.join("vectors/snp");
    let f = |p: &str| snp.join(p).to_str().unwrap().to_owned();
    let cases: Vec<(Vec<String>, i32, &str)> = vec![
        (
            vec![
                f("virtee-sev/report_milan.hex"),
                "--vcek".into(),
                f("virtee-sev/vcek_milan.der"),
                "--at".into(),
                "2026-06-01".into(),
            ],
            3,
            "AUTHENTIC, NOT APPRAISED",
        ),
        (
            vec![
                f("virtee-sev/report_milan.hex"),
                "--vcek".into(),
                f("virtee-sev/vcek_milan.der"),
                "--chain".into(),
                f("virtee-sev/cert_chain_milan"),
                "--at".into(),
                "2026-06-01T12:00:00Z".into(),
            ],
            3,
            "AUTHENTIC, NOT APPRAISED",
        ),
        (
            vec![
                f("go-sev-guest/attestation.bin"),
                "--vcek".into(),
                f("go-sev-guest/vcek.der"),
                "--at".into(),
                "2026-06-01".into(),
            ],
            3,
            "was not checked",
        ),
        (
            vec![
                f("trustee/test-vlek-report.bin"),
                "--vcek".into(),
                f("trustee/test-vlek.der"),
                "--at".into(),
                "2026-11-22".into(),
            ],
            1,
            "VLEK is not valid",
        ),
        (
            vec![
                f("trustee/test-vlek-report.bin"),
                "--vlek".into(),
                f("trustee/test-vlek.der"),
                "--at".into(),
                "@1748736000".into(),
            ],
            3,
            "AUTHENTIC, NOT APPRAISED",
        ),
        (
            vec![
                f("project-oak/turin_report.bin"),
                "--vcek".into(),
                f("project-oak/turin_vcek.der"),
                "--chain".into(),
                f("amd-anchors/ask_ark_milan.pem"),
                "--at".into(),
                "2026-06-01".into(),
            ],
            1,
            "no ASK for Turin",
        ),
        (
            vec![
                f("project-oak/turin_report.bin"),
                "--vcek".into(),
                f("project-oak/milan_vcek.der"),
                "--at".into(),
                "2026-06-01".into(),
            ],
            1,
            "report is from a Turin",
        ),
        (
            vec![
                f("project-oak/turin_report.bin"),
                "--at".into(),
                "2026-06-01".into(),
            ],
            1,
            "no VCEK or VLEK given",
        ),
        (
            vec![
                f("README.md"),
                "--vcek".into(),
                f("project-oak/turin_vcek.der"),
            ],
            1,
            "attestation report is",
        ),
        (
            vec![
                f("project-oak/turin_report.bin"),
                "--vcek".into(),
                f("README.md"),
            ],
            2,
            "error",
        ),
        (
            vec![
                f("no-such-report.bin"),
                "--vcek".into(),
                f("project-oak/turin_vcek.der"),
            ],
            2,
            "cannot read",
        ),
        (
            vec![
                f("project-oak/turin_report.bin"),
                "--vcek".into(),
                f("project-oak/turin_vcek.der"),
                "--at".into(),
                "yesterday".into(),
            ],
            2,
            "YYYY-MM-DD",
        ),
    ];
    for (args, want, needle) in cases {
        let mut all = vec!["verify-report"];
        all.extend(args.iter().map(String::as_str));
        let (code, out, err) = provenix(&all);
        assert_eq!(code, want, "{args:?}\n{out}{err}");
        assert!(
            out.contains(needle) || err.contains(needle),
            "{args:?}: {needle:?} not in\n{out}{err}"
        );
    }
}

#[test]
fn verify_report_json_lists_every_reason() {
    let Some(dir) = common::shared() else { return };
    let snp = dir.join("vectors/snp");
    let scratch = scratch("json");
    let policy = scratch.join("policy.toml");
    std::fs::write(&policy, "[snp]\nmax_vmpl = 0\nmin_guest_svn = 9\n").unwrap();
    let (code, out, err) = provenix(&[
        "verify-report",
        s(&snp.join("go-sev-guest/attestation.bin")),
        "--vcek",
        s(&snp.join("go-sev-guest/vcek.der")),
        "--policy",
        s(&policy),
        "--at",
        "2026-06-01",
        "--json",
    ]);
    assert_eq!(code, 1, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["verdict"], "rejected");
    assert_eq!(json["stage"], "appraise");
    let fields: Vec<&str> = json["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["field"].as_str().unwrap())
        .collect();
    // Every finding, and the measurement the policy does not pin last.
    assert_eq!(fields, ["policy.debug", "guest_svn", "measurement"]);

    std::fs::write(&policy, "[snp]\nmax_vmpll = 0\n").unwrap();
    let (code, _, err) = provenix(&[
        "verify-report",
        s(&snp.join("go-sev-guest/attestation.bin")),
        "--policy",
        s(&policy),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("max_vmpll"), "{err}");
}

#[test]
fn a_simulated_report_and_its_certificate_table() {
    let scratch = scratch("sim");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let tcb = TcbVersion {
        fmc: Some(0),
        bootloader: 1,
        tee: 0,
        snp: 4,
        microcode: 81,
    };
    let platform = SimPlatform::new(&ChainParams {
        product: Product::Turin,
        kind: VekKind::Vcek,
        tcb,
        hw_id: [7; 64],
        not_before: now - 60,
        not_after: now + 3600,
    })
    .unwrap();
    let bytes = platform
        .report_bytes(&ReportParams {
            product: Product::Turin,
            tcb,
            chip_id: [7; 64],
            ..ReportParams::default()
        })
        .unwrap();
    std::fs::write(scratch.join("report.bin"), bytes).unwrap();
    std::fs::write(scratch.join("certs.bin"), platform.cert_table().unwrap()).unwrap();
    let policy = scratch.join("policy.toml");
    let roots = format!(
        "[[roots]]\nname = \"sim\"\nproduct = \"Turin\"\nsha256 = \"{}\"\n",
        hex::encode(ark_fingerprint(Product::Turin))
    );
    // The simulator launches no image: its measurement is all zeros.
    let pinned = format!("{roots}[snp]\nmeasurements = [\"{}\"]\n", "00".repeat(48));
    std::fs::write(&policy, &pinned).unwrap();
    let report = scratch.join("report.bin");
    let certs = scratch.join("certs.bin");
    let verify = |policy: &str| {
        std::fs::write(scratch.join("p.toml"), policy).unwrap();
        provenix(&[
            "verify-report",
            s(&report),
            "--certs",
            s(&certs),
            "--policy",
            s(&scratch.join("p.toml")),
        ])
    };
    let (code, out, err) = verify(&pinned);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("ACCEPTED")
            && out.contains("Turin report v5 signed by a VCEK, chain to sim root"),
        "{out}"
    );
    // Fail closed: a policy that pins no measurement accepts nothing...
    let (code, out, err) = verify(&roots);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("measurement") && out.contains("pins"), "{out}");
    // ...another measurement is refused...
    let (code, out, _) = verify(&pinned.replace(&"00".repeat(48), &"11".repeat(48)));
    assert_eq!(code, 1, "{out}");
    // ...and `measurements = "any"` accepts, saying so.
    let (code, out, err) = verify(&format!("measurements = \"any\"\n{roots}"));
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("WARNING") && out.contains("measurements = \"any\""),
        "{out}"
    );
    // A key verify-report cannot apply is an error naming it.
    for key in [
        "[threshold]\nm = 2\n",
        "[checkpoint]\nmax_age = \"1h\"\n",
        "[tpm]\npcrs = [0]\n",
        "[snp]\naccepted_commits = [\"abc\"]\n",
    ] {
        let (code, out, err) = verify(&format!("{roots}{key}"));
        assert_eq!(code, 2, "{key}: {out}{err}");
        let name = key.trim_start_matches('[').replace("]\n", ".");
        let name = name.split(' ').next().unwrap();
        assert!(err.contains(name), "{key}: {name} not in {err}");
    }
    // Without a policy (AMD's roots only), the simulator's root is not
    // trusted: not authentic. (Authentic without a policy is exit 3: the
    // real vectors above.)
    let (code, out, _) = provenix(&["verify-report", s(&report), "--certs", s(&certs)]);
    assert_eq!(code, 1);
    assert!(out.contains("no trusted ARK for Turin"), "{out}");
    // An AMD-style CRL revoking the ASK, given with --crl.
    let crl = scratch.join("crl.der");
    std::fs::write(
        &crl,
        provenix_firmware::sim::crl(Product::Turin, VekKind::Vcek, true, now - 60, now + 3600)
            .unwrap(),
    )
    .unwrap();
    let (code, out, _) = provenix(&[
        "verify-report",
        s(&report),
        "--certs",
        s(&certs),
        "--policy",
        s(&policy),
        "--crl",
        s(&crl),
    ]);
    assert_eq!(code, 1);
    assert!(out.contains("ASK serial 030001 is revoked"), "{out}");
    // A truncated certificate table is an error in the input.
    std::fs::write(&certs, &platform.cert_table().unwrap()[..100]).unwrap();
    let (code, _, err) = provenix(&[
        "verify-report",
        s(&report),
        "--certs",
        s(&certs),
        "--policy",
        s(&policy),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("certificate table"), "{err}");
}
