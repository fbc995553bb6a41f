//! Rendering reports and verdicts, for people and for machines.

use std::fmt::Write as _;
use std::path::Path;

use provenix_firmware::snp::{AttestationReport, PlatformInfo, TcbVersion};
use provenix_verifier::TrustAnchors;
use serde_json::{Value, json};

use provenix_verifier::Refusal;

fn tcb_json(tcb: TcbVersion) -> Value {
    let mut v = json!({
        "bootloader": tcb.bootloader,
        "tee": tcb.tee,
        "snp": tcb.snp,
        "microcode": tcb.microcode,
    });
    if let (Some(fmc), Some(map)) = (tcb.fmc, v.as_object_mut()) {
        map.insert("fmc".into(), fmc.into());
    }
    v
}

/// Every field, named as in the ABI spec, lower case.
pub(crate) fn report_json(r: &AttestationReport) -> Value {
    let p = r.policy();
    let key = r.key_info();
    json!({
        "version": r.version(),
        "product": r.product().map(|p| p.name()),
        "guest_svn": r.guest_svn(),
        "policy": {
            "raw": format!("{:#x}", p.0),
            "abi_major": p.abi_major(),
            "abi_minor": p.abi_minor(),
            "smt": p.smt(),
            "migrate_ma": p.migrate_ma(),
            "debug": p.debug(),
            "single_socket": p.single_socket(),
            "cxl_allow": p.cxl_allow(),
            "mem_aes_256_xts": p.mem_aes_256_xts(),
            "rapl_dis": p.rapl_dis(),
            "ciphertext_hiding": p.ciphertext_hiding(),
            "page_swap_disable": p.page_swap_disable(),
        },
        "family_id": hex::encode(r.family_id()),
        "image_id": hex::encode(r.image_id()),
        "vmpl": r.vmpl(),
        "signature_algo": r.signature_algo(),
        "current_tcb": tcb_json(r.current_tcb()),
        "platform_info": {
            "raw": format!("{:#x}", r.platform_info().0),
            "flags": platform_flags(r.platform_info()),
        },
        "author_key_en": key.author_key_en(),
        "mask_chip_key": key.mask_chip_key(),
        "signing_key": key.signing_key().map(|k| k.to_string()).unwrap_or_default(),
        "report_data": hex::encode(r.report_data()),
        "measurement": hex::encode(r.measurement()),
        "host_data": hex::encode(r.host_data()),
        "id_key_digest": hex::encode(r.id_key_digest()),
        "author_key_digest": hex::encode(r.author_key_digest()),
        "report_id": hex::encode(r.report_id()),
        "report_id_ma": hex::encode(r.report_id_ma()),
        "reported_tcb": tcb_json(r.reported_tcb()),
        "cpuid": r.cpuid().map(|c| json!({"family": c.family, "model": c.model, "stepping": c.stepping})),
        "chip_id": hex::encode(r.chip_id()),
        "committed_tcb": tcb_json(r.committed_tcb()),
        "current_version": r.current_version().to_string(),
        "committed_version": r.committed_version().to_string(),
        "launch_tcb": tcb_json(r.launch_tcb()),
        "launch_mit_vector": r.launch_mit_vector(),
        "current_mit_vector": r.current_mit_vector(),
        "signature": {
            "r": hex::encode(r.signature_r()),
            "s": hex::encode(r.signature_s()),
        },
    })
}

fn platform_flags(info: PlatformInfo) -> Vec<String> {
    (0..64)
        .filter(|&bit| info.bit(bit))
        .map(|bit| {
            PlatformInfo::NAMES
                .iter()
                .find(|(n, _)| *n == bit)
                .map_or_else(|| format!("bit{bit}"), |(_, name)| (*name).to_owned())
        })
        .collect()
}

/// Every field, aligned, for a person. Long hex values wrap at 32 bytes.
pub(crate) fn report_text(r: &AttestationReport) -> String {
    let mut out = String::new();
    let mut line = |name: &str, value: String| {
        let _ = writeln!(out, "{name:<20} {value}");
    };
    let hexed = |bytes: &[u8]| -> String {
        let chunks: Vec<String> = bytes.chunks(32).map(hex::encode).collect();
        chunks.join(&format!("\n{:21}", ""))
    };
    let p = r.policy();
    let key = r.key_info();
    line("version", r.version().to_string());
    line(
        "product",
        r.product()
            .map_or("(not in a v2 report)".into(), |p| p.to_string()),
    );
    if let Some(c) = r.cpuid() {
        line(
            "cpuid",
            format!(
                "family {:#04x} model {:#04x} stepping {:#x}",
                c.family, c.model, c.stepping
            ),
        );
    }
    line("guest_svn", r.guest_svn().to_string());
    let mut flags = vec![format!("abi {}.{}", p.abi_major(), p.abi_minor())];
    for (on, name) in [
        (p.smt(), "smt"),
        (p.migrate_ma(), "migrate_ma"),
        (p.debug(), "DEBUG"),
        (p.single_socket(), "single_socket"),
        (p.cxl_allow(), "cxl_allow"),
        (p.mem_aes_256_xts(), "mem_aes_256_xts"),
        (p.rapl_dis(), "rapl_dis"),
        (p.ciphertext_hiding(), "ciphertext_hiding"),
        (p.page_swap_disable(), "page_swap_disable"),
    ] {
        if on {
            flags.push(name.into());
        }
    }
    line("policy", format!("{:#x} ({})", p.0, flags.join(", ")));
    line("family_id", hex::encode(r.family_id()));
    line("image_id", hex::encode(r.image_id()));
    line("vmpl", r.vmpl().to_string());
    line(
        "signature_algo",
        format!("{} (ECDSA P-384 with SHA-384)", r.signature_algo()),
    );
    line(
        "platform_info",
        format!(
            "{:#x} ({})",
            r.platform_info().0,
            platform_flags(r.platform_info()).join(", ")
        ),
    );
    line(
        "signing_key",
        key.signing_key().map(|k| k.to_string()).unwrap_or_default(),
    );
    line("author_key_en", key.author_key_en().to_string());
    line("mask_chip_key", key.mask_chip_key().to_string());
    line("report_data", hexed(r.report_data()));
    line("measurement", hexed(r.measurement()));
    line("host_data", hexed(r.host_data()));
    line("id_key_digest", hexed(r.id_key_digest()));
    line("author_key_digest", hexed(r.author_key_digest()));
    line("report_id", hexed(r.report_id()));
    line("report_id_ma", hexed(r.report_id_ma()));
    line("chip_id", hexed(r.chip_id()));
    line("current_tcb", r.current_tcb().to_string());
    line("reported_tcb", r.reported_tcb().to_string());
    line("committed_tcb", r.committed_tcb().to_string());
    line("launch_tcb", r.launch_tcb().to_string());
    line("current_version", r.current_version().to_string());
    line("committed_version", r.committed_version().to_string());
    if let (Some(launch), Some(current)) = (r.launch_mit_vector(), r.current_mit_vector()) {
        line("launch_mit_vector", format!("{launch:#x}"));
        line("current_mit_vector", format!("{current:#x}"));
    }
    line("signature.r", hexed(r.signature_r()));
    line("signature.s", hexed(r.signature_s()));
    out
}

/// Print `verify-report`'s verdict. `any_measurement`: the policy accepts
/// any measured software (`measurements = "any"`), which the verdict says.
pub(crate) fn print_verdict(
    anchors: &TrustAnchors,
    path: &Path,
    outcome: &Result<crate::Verdict, Refusal>,
    any_measurement: bool,
    at: i64,
    json: bool,
) -> anyhow::Result<()> {
    use crate::Verdict;
    let name = path.display();
    let root_name = |fp: &[u8; 32]| {
        anchors
            .roots()
            .iter()
            .find(|r| r.fingerprint == *fp)
            .map_or_else(String::new, |r| r.source.clone())
    };
    let authentic = match outcome {
        Ok(Verdict::Accepted(v)) => Some((v.authenticated(), "accepted")),
        Ok(Verdict::Authentic(a)) => Some((a, "authentic_not_appraised")),
        Err(_) => None,
    };
    if json {
        let value = match (outcome, authentic) {
            (Ok(_), Some((a, verdict))) => json!({
                "subject": name.to_string(),
                "verdict": verdict,
                "at": at,
                "product": a.product().name(),
                "signer": a.signer().to_string(),
                "root": {"sha256": hex::encode(a.root_fingerprint()), "name": root_name(a.root_fingerprint())},
                "vek_sha256": hex::encode(a.vek_fingerprint()),
                "measurement": hex::encode(a.report().measurement()),
                "measurement_appraised": verdict == "accepted" && !any_measurement,
                "report_data": hex::encode(a.report().report_data()),
                "reasons": [],
            }),
            (Err(Refusal::Invalid(e)), _) => json!({
                "subject": name.to_string(),
                "verdict": "rejected",
                "at": at,
                "stage": "authenticate",
                "reasons": [{"field": "evidence", "found": e.to_string(), "expected": "authentic evidence"}],
            }),
            (Err(Refusal::Policy { rejection: r, .. }), _) => json!({
                "subject": name.to_string(),
                "verdict": "rejected",
                "at": at,
                "stage": "appraise",
                "reasons": r.findings,
            }),
            (Ok(_), None) => json!({}),
        };
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    match (outcome, authentic) {
        (Ok(v), Some((a, _))) => {
            let root = root_name(a.root_fingerprint());
            let head = match v {
                Verdict::Accepted(_) => "ACCEPTED",
                Verdict::Authentic(_) => "AUTHENTIC, NOT APPRAISED",
            };
            println!(
                "{head} {name}: {} report v{} signed by a {}, chain to {} root {}",
                a.product(),
                a.report().version(),
                a.signer(),
                if root.is_empty() {
                    "a pinned"
                } else {
                    root.as_str()
                },
                &hex::encode(a.root_fingerprint())[..16],
            );
            println!("  measurement {}", hex::encode(a.report().measurement()));
            match v {
                Verdict::Authentic(_) => println!(
                    "  no --policy: what software this measurement is, and whether it is acceptable, was not checked (exit 3)"
                ),
                Verdict::Accepted(_) if any_measurement => println!(
                    "  WARNING: the policy accepts any software (measurements = \"any\"): the measurement was not checked"
                ),
                Verdict::Accepted(_) => {}
            }
        }
        (Err(Refusal::Invalid(e)), _) => {
            println!("REJECTED {name}: not authentic");
            println!("  - {e}");
        }
        (Err(Refusal::Policy { rejection: r, .. }), _) => {
            println!("REJECTED {name}: authentic, but against the policy");
            for f in &r.findings {
                println!("  - {f}");
            }
        }
        (Ok(_), None) => {}
    }
    Ok(())
}

fn digest_json(d: provenix_verifier::Actual) -> Value {
    json!({"sha256": hex::encode(d.sha256), "size": d.size})
}

fn builder_json(b: &provenix_verifier::Builder) -> Value {
    json!({
        "bundle": b.source,
        "name": b.name,
        "worker_key": hex::encode(b.worker_key),
        "source_commit": b.source_commit,
        "unit": b.unit,
        "platform": b.platform,
        "reference_commit": b.reference_commit,
        "sha256": hex::encode(b.sha256),
        "size": b.size,
    })
}

/// Why a bundle was not counted: a code, a message, and for untrusted
/// inputs each input with what the trace recorded and the problem.
fn why_json(w: &provenix_verifier::Why) -> Value {
    use provenix_verifier::{Problem, Why};
    let mut value = json!({"code": w.code(), "message": w.to_string()});
    if let Why::UntrustedInputs(inputs) = w {
        value["inputs"] = inputs
            .iter()
            .map(|u| {
                let mut input = json!({
                    "path": u.path,
                    "recorded_sha256": hex::encode(u.recorded),
                    "message": u.to_string(),
                });
                input["problem"] = match &u.problem {
                    Problem::Content(why) => json!({"code": "content", "message": why}),
                    Problem::OtherHash { accepted, builders } => json!({
                        "code": "other_hash",
                        "accepted": digest_json(*accepted),
                        "builders": builders,
                    }),
                    Problem::NotAccepted {
                        claims,
                        reasons,
                        below,
                    } => json!({
                        "code": "not_accepted",
                        "claims": claims.iter().map(|c| json!({
                            "sha256": hex::encode(c.digest.sha256),
                            "size": c.digest.size,
                            "builders": c.builders,
                        })).collect::<Vec<_>>(),
                        "reasons": reasons,
                        "untrusted_below": below,
                    }),
                    Problem::Cycle => json!({"code": "cycle"}),
                    _ => json!({"code": "other"}),
                };
                input
            })
            .collect();
    }
    value
}

/// The `--json` form of one decision (schema: docs/verify.md).
pub(crate) fn decision_json(d: &provenix_verifier::Decision) -> Value {
    json!({
        "subject": {"kind": d.subject().kind(), "name": d.subject().name()},
        "verdict": if d.accepted() { "accepted" } else { "rejected" },
        "actual": d.actual().map(digest_json),
        "digest": d.digest().map(digest_json),
        "required": d.required(),
        "distinct": d.distinct().name(),
        "counted": d.counted().iter().map(builder_json).collect::<Vec<_>>(),
        "excluded": d.excluded().iter().map(|e| json!({
            "bundle": e.source,
            "builder": e.builder.as_ref().map(builder_json),
            "reasons": e.reasons.iter().map(why_json).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "missing": d.missing(),
        "disagreement": d.disagreement().iter().map(|c| json!({
            "sha256": hex::encode(c.digest.sha256),
            "size": c.digest.size,
            "builders": c.builders,
        })).collect::<Vec<_>>(),
        "reasons": d.reasons().iter().map(|r| json!({"code": r.code(), "message": r.to_string()})).collect::<Vec<_>>(),
    })
}

/// Print `provenix verify`'s decisions: per subject a verdict line, then
/// the builders counted, every bundle not counted and why, the misses and
/// any disagreement.
pub(crate) fn print_decisions(
    policy: &provenix_verifier::Policy,
    decisions: &[provenix_verifier::Decision],
    at: i64,
    json: bool,
) -> anyhow::Result<()> {
    if json {
        let value = decisions_json(policy, decisions, at);
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    for d in decisions {
        print_decision(policy, d);
    }
    Ok(())
}

/// Print `provenix verify --recursive`'s verdict: the target's decision,
/// then the graph behind it.
pub(crate) fn print_graph(
    policy: &provenix_verifier::Policy,
    graph: &provenix_verifier::GraphDecision,
    lookups: usize,
    at: i64,
    json: bool,
) -> anyhow::Result<()> {
    use provenix_verifier::GraphRoot;
    let decisions = graph.decisions();
    let root_json = |(path, root): &(String, GraphRoot)| match root {
        GraphRoot::Named => json!({"path": path, "trusted_as": "named"}),
        GraphRoot::SignedBy(key) => json!({"path": path, "trusted_as": "signed", "key": key}),
    };
    if json {
        let mut value = decisions_json(policy, std::slice::from_ref(graph.decision()), at);
        value["graph"] = json!({
            "paths_looked_up": lookups,
            "decided": decisions.iter().map(|d| decision_json(d)).collect::<Vec<_>>(),
            "content_addressed": graph.content_addressed(),
            "roots": graph.roots().iter().map(root_json).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    print_decision(policy, graph.decision());
    print!("{}", graph_text(graph));
    Ok(())
}

/// What `--recursive` adds below the target's decision: the graph's
/// figures, its roots, and every input that was not accepted, with why.
pub(crate) fn graph_text(graph: &provenix_verifier::GraphDecision) -> String {
    use provenix_verifier::GraphRoot;
    let mut out = String::new();
    let decisions = graph.decisions();
    let accepted = decisions.iter().filter(|d| d.accepted()).count();
    let _ = writeln!(
        out,
        "  build graph: {} path(s) decided, {accepted} accepted; {} content-addressed input(s) checked themselves; {} root(s)",
        decisions.len(),
        graph.content_addressed(),
        graph.roots().len()
    );
    for (path, root) in graph.roots() {
        let _ = match root {
            GraphRoot::Named => writeln!(out, "  root {path}: named in the policy"),
            GraphRoot::SignedBy(key) => writeln!(out, "  root {path}: signed by {key}"),
        };
    }
    // Inputs that were not accepted, each once, for the user to look at.
    for d in decisions
        .iter()
        .filter(|d| !d.accepted() && d.subject() != graph.decision().subject())
    {
        let _ = writeln!(out, "  input {} is not accepted:", d.subject().name());
        for r in d.reasons() {
            let _ = writeln!(out, "    - {r}");
        }
        for e in d.excluded() {
            let _ = writeln!(out, "    - not counted: {}", excluded_text(e));
        }
    }
    out
}

/// A bundle not counted: its builder (or source) and every reason.
fn excluded_text(e: &provenix_verifier::Excluded) -> String {
    let who = e.builder.as_ref().map_or_else(
        || e.source.clone(),
        |b| format!("{} ({})", b.name, b.source),
    );
    let why: Vec<String> = e.reasons.iter().map(ToString::to_string).collect();
    format!("{who}: {}", why.join("; "))
}

/// The `--json` document of `provenix verify` (docs/verify.md).
fn decisions_json(
    policy: &provenix_verifier::Policy,
    decisions: &[provenix_verifier::Decision],
    at: i64,
) -> Value {
    use provenix_verifier::Builders;
    {
        let all = decisions.iter().all(provenix_verifier::Decision::accepted);
        json!({
            "schema": "provenix.verify/v1",
            "verdict": if all { "accepted" } else { "rejected" },
            "at": at,
            "threshold": {
                "m": policy.threshold.m,
                "distinct": policy.threshold.distinct.name(),
                "builders": match &policy.threshold.builders {
                    Builders::Any => json!("any"),
                    Builders::Named(named) => json!(named.iter().map(|n| json!({"name": n.name, "key": hex::encode(n.key.0)})).collect::<Vec<_>>()),
                },
            },
            "measurements": match policy.measurements {
                provenix_verifier::Measurements::Pinned => "pinned",
                provenix_verifier::Measurements::Any => "any",
            },
            "subjects": decisions.iter().map(decision_json).collect::<Vec<_>>(),
        })
    }
}

/// One decision as text: a verdict line, the builders counted, every
/// bundle not counted and why, the misses and any disagreement.
pub(crate) fn decision_text(
    policy: &provenix_verifier::Policy,
    d: &provenix_verifier::Decision,
) -> String {
    let mut out = String::new();
    {
        let names = |bs: &[provenix_verifier::Builder]| {
            bs.iter()
                .map(|b| b.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let digest = d.digest().map_or_else(
            || "no digest".to_owned(),
            |x| format!("sha256:{} ({} bytes)", hex::encode(x.sha256), x.size),
        );
        let counted = d.counted().len();
        let required = d.required();
        let distinct = d.distinct().name();
        let mut line = format!(
            "{} {}: {digest}, {counted} of {required} required distinct by {distinct}",
            if d.accepted() { "ACCEPTED" } else { "REJECTED" },
            d.subject().name(),
        );
        if counted > 0 {
            let _ = write!(line, " ({})", names(d.counted()));
        }
        let _ = writeln!(out, "{line}");
        if d.accepted() {
            let mut commits: Vec<&str> = d
                .counted()
                .iter()
                .map(|b| b.source_commit.as_str())
                .collect();
            commits.sort_unstable();
            commits.dedup();
            let _ = writeln!(out, "  built from source commit {}", commits.join(", "));
            if policy.measurements == provenix_verifier::Measurements::Any {
                let _ = writeln!(
                    out,
                    "  WARNING: the policy accepts any software (measurements = \"any\"): what the builders ran was not checked"
                );
            }
        }
        for r in d.reasons() {
            let _ = writeln!(out, "  - {r}");
        }
        if !d.missing().is_empty() {
            let _ = writeln!(out, "  - no statement from: {}", d.missing().join(", "));
        }
        for e in d.excluded() {
            let _ = writeln!(out, "  - not counted: {}", excluded_text(e));
        }
        if !d.disagreement().is_empty() {
            let _ = writeln!(out, "  - builders disagree:");
            for c in d.disagreement() {
                let _ = writeln!(
                    out,
                    "      sha256:{} ({} bytes): {}",
                    hex::encode(c.digest.sha256),
                    c.digest.size,
                    c.builders.join(", ")
                );
            }
        }
    }
    out
}

fn print_decision(policy: &provenix_verifier::Policy, d: &provenix_verifier::Decision) {
    print!("{}", decision_text(policy, d));
}
