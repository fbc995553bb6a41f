//! `provenix measure compare`: a user's check of an operator's claim. Given
//! the manifest an operator published and the image the user rebuilt from
//! the same commit (`./run image`), say whether they are identical, and if
//! not, which reference value and which input differ (docs/image.md).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use provenix_measurements::manifest::{MAX_MANIFEST_SIZE, Manifest};
use serde_json::Value;

use crate::input;

/// What one side is: a manifest.json, or an image directory holding one
/// (and, beside it, the inputs.json the image build wrote).
struct Side {
    manifest: Value,
    inputs: Option<Value>,
    label: String,
}

fn side(path: &Path) -> Result<Side> {
    let (manifest_path, inputs_path): (PathBuf, PathBuf) = if path.is_dir() {
        (path.join("manifest.json"), path.join("inputs.json"))
    } else {
        let dir = path.parent().unwrap_or(Path::new("."));
        (path.to_path_buf(), dir.join("inputs.json"))
    };
    // Parsed as a manifest first: only a valid one is compared.
    let text = String::from_utf8(input::read(&manifest_path, MAX_MANIFEST_SIZE)?)
        .with_context(|| format!("{} is not UTF-8", manifest_path.display()))?;
    Manifest::from_json(&text).with_context(|| format!("{}", manifest_path.display()))?;
    let manifest = serde_json::from_str(&text)?;
    let inputs = if inputs_path.is_file() {
        let bytes = input::read(&inputs_path, input::SMALL)?;
        Some(
            serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is not JSON", inputs_path.display()))?,
        )
    } else {
        None
    };
    Ok(Side {
        manifest,
        inputs,
        label: manifest_path.display().to_string(),
    })
}

/// Compare; exit 0 when identical, 1 when not, naming every difference.
pub(crate) fn run(published: &Path, rebuilt: &Path) -> Result<ExitCode> {
    let a = side(published)?;
    let b = side(rebuilt)?;
    let mut values = Vec::new();
    diff("", &a.manifest, &b.manifest, &mut values);
    let mut inputs = Vec::new();
    match (&a.inputs, &b.inputs) {
        (Some(x), Some(y)) => diff("", x, y, &mut inputs),
        _ if values.is_empty() => {}
        _ => inputs.push("(no inputs.json on both sides: the inputs cannot be compared)".into()),
    }
    if values.is_empty() && inputs.is_empty() {
        println!(
            "IDENTICAL: {} and {} (commit {})",
            a.label,
            b.label,
            a.manifest["commit"].as_str().unwrap_or("?")
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "DIFFERENT: {} (published) and {} (rebuilt)",
        a.label, b.label
    );
    if !values.is_empty() {
        println!("reference values that differ:");
        for line in &values {
            println!("  {line}");
        }
    }
    if !inputs.is_empty() {
        println!("inputs that differ:");
        for line in &inputs {
            println!("  {line}");
        }
    }
    Ok(ExitCode::from(1))
}

/// Every leaf that differs, by its path. Arrays of objects with a `name`
/// (packages) are compared by name, other arrays by position.
fn diff(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    let join = |key: &str| {
        if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        }
    };
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                diff(
                    &join(k),
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        (Value::Array(x), Value::Array(y)) if keyed(x) && keyed(y) => {
            let by_name = |v: &Vec<Value>| -> std::collections::BTreeMap<String, Value> {
                v.iter()
                    .filter_map(|e| Some((key(e)?, e.clone())))
                    .collect()
            };
            let (x, y) = (by_name(x), by_name(y));
            let names: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for n in names {
                diff(
                    &format!("{path}[{n}]"),
                    x.get(n).unwrap_or(&Value::Null),
                    y.get(n).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            for i in 0..x.len().max(y.len()) {
                diff(
                    &format!("{path}[{i}]"),
                    x.get(i).unwrap_or(&Value::Null),
                    y.get(i).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        _ if a == b => {}
        _ => out.push(format!(
            "{path}: published {}, rebuilt {}",
            show(a),
            show(b)
        )),
    }
}

/// What names an element of the manifest's and inputs' lists: a package
/// by name, an SNP shape by VMM, vCPU type and count, a TPM reference by
/// boot path and bank, an event by PCR and source.
fn key(e: &Value) -> Option<String> {
    let text = |k: &str| e.get(k).map(show);
    if let Some(name) = e.get("name").and_then(Value::as_str) {
        return Some(name.to_owned());
    }
    if let (Some(vmm), Some(vcpus)) = (text("vmm"), text("vcpus")) {
        let cpu = text("vcpu_type")
            .or_else(|| text("vcpu_sig"))
            .unwrap_or_default();
        let features =
            text("guest_features").map_or_else(String::new, |f| format!(" features {f}"));
        return Some(format!("{vmm} {cpu} {vcpus} vCPUs{features}"));
    }
    if let (Some(boot), Some(bank)) = (text("boot_path"), text("bank")) {
        return Some(format!("{boot} {bank}"));
    }
    if let (Some(pcr), Some(source)) = (text("pcr"), text("source")) {
        return Some(format!("PCR {pcr} {source}"));
    }
    None
}

/// Whether every element has a [`key`], each a different one.
fn keyed(v: &[Value]) -> bool {
    let keys: Option<std::collections::BTreeSet<String>> = v.iter().map(key).collect();
    !v.is_empty() && keys.is_some_and(|k| k.len() == v.len())
}

fn show(v: &Value) -> String {
    match v {
        Value::Null => "nothing".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_each_difference_by_its_path() {
        let a = json!({"snp": [{"vmm": "QEMU", "vcpus": 1, "vcpu_type": "EPYC-Milan", "measurement": "aa"}], "packages": [{"name": "libc6", "version": "1"}, {"name": "nix-bin", "version": "2.8"}]});
        let b = json!({"snp": [{"vmm": "QEMU", "vcpus": 1, "vcpu_type": "EPYC-Milan", "measurement": "bb"}], "packages": [{"name": "nix-bin", "version": "2.8"}, {"name": "libc6", "version": "2"}]});
        let mut out = Vec::new();
        diff("", &a, &b, &mut out);
        assert_eq!(
            out,
            [
                "packages[libc6].version: published 1, rebuilt 2",
                "snp[QEMU EPYC-Milan 1 vCPUs].measurement: published aa, rebuilt bb"
            ]
        );
        let mut none = Vec::new();
        diff("", &a, &a, &mut none);
        assert!(none.is_empty());
        let mut extra = Vec::new();
        diff("", &json!({"x": [1]}), &json!({"x": [1, 2]}), &mut extra);
        assert_eq!(extra, ["x[1]: published nothing, rebuilt 2"]);
    }
}
