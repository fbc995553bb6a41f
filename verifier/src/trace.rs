//! Build traces: what a build consumed, as the worker found it in its
//! store when the build ran (DESIGN.md, "Transitive trust").
//!
//! A trace names the derivation (the SHA-256 of its text, from which its
//! store path is made) and every store path of the build's input closure:
//! the input sources and the outputs of the input derivations the build
//! used, closed over references. Each input carries the SHA-256 of its NAR
//! as the worker hashed it; a content-addressed input (a source added to
//! the store, a `builtins.toFile` text, a fixed-output fetch) also carries
//! how it is addressed, the content hash the worker computed from the
//! store, and its references, so that it checks itself offline
//! ([`TraceInput::check_content`]).
//!
//! Encoding, inside the statement (deterministic CBOR):
//!
//! ```text
//! trace = { 1: bstr .size 32,          ; SHA-256 of the derivation's text
//!           2: [* input] }             ; sorted by path, unique
//! input = [path: tstr, nar_sha256: bstr .size 32]
//!       / [path, nar_sha256, method: 0 (text) / 1 (flat) / 2 (recursive),
//!          algo: "sha1" / "sha256" / "sha512", digest: bstr, references: [* tstr]]
//! ```

#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions
)]

use ciborium::Value;

use crate::cbor::Fields;
use crate::storepath::{self, ContentAddress, HashAlgo, Method};

/// Most inputs one trace may list: a nixpkgs build's input closure has
/// hundreds of paths, a large one (a browser, a toolchain) a few thousand.
/// The statement's size limit binds first in practice.
pub const MAX_TRACE_INPUTS: usize = 65_536;
/// Most references one content-addressed input may list (the statement's
/// own limit for an output's references).
const MAX_INPUT_REFERENCES: usize = crate::statement::MAX_REFERENCES;

/// A build's resolved inputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trace {
    /// SHA-256 of the derivation's text (its ATerm file): the hash its
    /// store path is made from.
    pub derivation_sha256: [u8; 32],
    /// The input closure, sorted by path, without duplicates.
    pub inputs: Vec<TraceInput>,
}

/// One store path the build could read.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TraceInput {
    /// The store path.
    pub path: String,
    /// SHA-256 of its NAR, as the worker computed it from its store.
    pub nar_sha256: [u8; 32],
    /// How it is content-addressed, when it is.
    pub content: Option<Content>,
}

/// A content-addressed input: what its store path is made from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Content {
    /// Method, algorithm and the content's hash, computed by the worker.
    pub address: ContentAddress,
    /// Its references (a source may name itself).
    pub references: Vec<String>,
}

const K_DERIVATION: u64 = 1;
const K_INPUTS: u64 = 2;

impl Trace {
    /// The CBOR value, inputs sorted.
    pub fn to_value(&self) -> Value {
        let mut inputs: Vec<&TraceInput> = self.inputs.iter().collect();
        inputs.sort_by(|a, b| a.path.cmp(&b.path));
        inputs.dedup_by(|a, b| a.path == b.path);
        Value::Map(vec![
            (
                Value::from(K_DERIVATION),
                Value::Bytes(self.derivation_sha256.to_vec()),
            ),
            (
                Value::from(K_INPUTS),
                Value::Array(inputs.into_iter().map(TraceInput::to_value).collect()),
            ),
        ])
    }

    /// Read a trace, refusing anything but its one encoding.
    pub fn from_value(value: Value) -> Result<Trace, String> {
        let Value::Map(entries) = value else {
            return Err("the trace is not a map".into());
        };
        let mut fields = Fields::new(entries, |e| e);
        let derivation_sha256 = fields.bytes::<32>(K_DERIVATION, "trace derivation")?;
        let items = fields.array(K_INPUTS, "trace inputs", MAX_TRACE_INPUTS)?;
        fields.finish()?;
        let inputs = items
            .into_iter()
            .map(TraceInput::from_value)
            .collect::<Result<Vec<_>, _>>()?;
        if inputs
            .windows(2)
            .any(|w| matches!(w, [a, b] if a.path >= b.path))
        {
            return Err("the trace's inputs are not sorted and unique".into());
        }
        Ok(Trace {
            derivation_sha256,
            inputs,
        })
    }

    /// The input `path`, if the trace lists it.
    pub fn input(&self, path: &str) -> Option<&TraceInput> {
        self.inputs
            .binary_search_by(|i| i.path.as_str().cmp(path))
            .ok()
            .and_then(|at| self.inputs.get(at))
    }
}

impl TraceInput {
    fn to_value(&self) -> Value {
        let mut items = vec![
            Value::Text(self.path.clone()),
            Value::Bytes(self.nar_sha256.to_vec()),
        ];
        if let Some(c) = &self.content {
            let method: u64 = match c.address.method {
                Method::Text => 0,
                Method::Flat => 1,
                Method::Recursive => 2,
            };
            let mut refs = c.references.clone();
            refs.sort();
            refs.dedup();
            items.extend([
                Value::from(method),
                Value::from(c.address.algo.name()),
                Value::Bytes(c.address.digest.clone()),
                Value::Array(refs.into_iter().map(Value::Text).collect()),
            ]);
        }
        Value::Array(items)
    }

    fn from_value(value: Value) -> Result<TraceInput, String> {
        let bad = |what: &str| format!("a trace input: {what}");
        let Value::Array(items) = value else {
            return Err(bad("not an array"));
        };
        let mut items = items.into_iter();
        let path = match items.next() {
            Some(Value::Text(p)) => p,
            _ => return Err(bad("no path")),
        };
        storepath::check_path(&path).map_err(|e| bad(&e.to_string()))?;
        let in_path = |what: &str| format!("trace input {path}: {what}");
        let nar_sha256 = match items.next() {
            Some(Value::Bytes(b)) => <[u8; 32]>::try_from(b.as_slice())
                .map_err(|_| in_path("the NAR hash is not 32 bytes"))?,
            _ => return Err(in_path("no NAR hash")),
        };
        let content = match items.next() {
            None => None,
            Some(method) => {
                let method = match method.as_integer().and_then(|i| u8::try_from(i).ok()) {
                    Some(0) => Method::Text,
                    Some(1) => Method::Flat,
                    Some(2) => Method::Recursive,
                    _ => return Err(in_path("an unknown content-addressing method")),
                };
                let algo = match items.next() {
                    Some(Value::Text(a)) => HashAlgo::from_name(&a)
                        .ok_or_else(|| in_path(&format!("unknown hash algorithm {a:?}")))?,
                    _ => return Err(in_path("no hash algorithm")),
                };
                let digest = match items.next() {
                    Some(Value::Bytes(d)) if d.len() == algo.digest_len() => d,
                    _ => return Err(in_path("no content hash of its algorithm's length")),
                };
                let references = match items.next() {
                    Some(Value::Array(refs)) if refs.len() <= MAX_INPUT_REFERENCES => refs
                        .into_iter()
                        .map(|r| match r {
                            Value::Text(r) if storepath::check_path(&r).is_ok() => Ok(r),
                            _ => Err(in_path("a reference is not a store path")),
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                    _ => return Err(in_path("no references")),
                };
                if references.windows(2).any(|w| matches!(w, [a, b] if a >= b)) {
                    return Err(in_path("references are not sorted and unique"));
                }
                Some(Content {
                    address: ContentAddress {
                        method,
                        algo,
                        digest,
                    },
                    references,
                })
            }
        };
        if items.next().is_some() {
            return Err(in_path("more items than an input has"));
        }
        Ok(TraceInput {
            path,
            nar_sha256,
            content,
        })
    }

    /// For a content-addressed input: whether its recorded content hash,
    /// name and references reproduce its store path, as Nix computes it
    /// (and, for a recursive SHA-256 address, whether that hash is the NAR
    /// hash recorded, which it must be). `None` for an input that is not
    /// content-addressed.
    pub fn check_content(&self) -> Option<Result<(), String>> {
        let c = self.content.as_ref()?;
        Some((|| {
            let name = storepath::name_of(&self.path).map_err(|e| e.to_string())?;
            let self_reference = c.references.contains(&self.path);
            let others: Vec<String> = c
                .references
                .iter()
                .filter(|r| **r != self.path)
                .cloned()
                .collect();
            let made = c
                .address
                .store_path(name, &others, self_reference)
                .map_err(|e| e.to_string())?;
            if made != self.path {
                return Err(format!(
                    "its content hash {} gives {made}, not this path",
                    c.address.render()
                ));
            }
            if c.address.method == Method::Recursive
                && c.address.algo == HashAlgo::Sha256
                && c.address.digest != self.nar_sha256
            {
                return Err(format!(
                    "its NAR hash {} is not its content hash {}",
                    crate::nixsig::nar_hash(&self.nar_sha256),
                    c.address.render()
                ));
            }
            Ok(())
        })())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cbor::encode;

    fn sha256(data: &[u8]) -> Vec<u8> {
        ring::digest::digest(&ring::digest::SHA256, data)
            .as_ref()
            .to_vec()
    }

    fn text_input() -> TraceInput {
        // builtins.toFile "provenix-text" "hello\n" (storepath's vectors).
        TraceInput {
            path: "/nix/store/w2y8rxzw09n8qyb4i9a84q2c4b84dy9q-provenix-text".into(),
            nar_sha256: [3; 32],
            content: Some(Content {
                address: ContentAddress {
                    method: Method::Text,
                    algo: HashAlgo::Sha256,
                    digest: sha256(b"hello\n"),
                },
                references: Vec::new(),
            }),
        }
    }

    fn sample() -> Trace {
        Trace {
            derivation_sha256: [1; 32],
            inputs: vec![
                TraceInput {
                    path: "/nix/store/yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy-b".into(),
                    nar_sha256: [2; 32],
                    content: None,
                },
                text_input(),
            ],
        }
    }

    #[test]
    fn traces_round_trip_sorted() {
        let t = sample();
        let back = Trace::from_value(t.to_value()).unwrap();
        assert_eq!(back.inputs.first().unwrap().path, text_input().path);
        assert_eq!(encode(&back.to_value()), encode(&t.to_value()));
        assert!(back.input(&text_input().path).is_some());
        assert!(back.input("/nix/store/x").is_none());
    }

    #[test]
    fn malformed_traces_are_refused_by_what_is_wrong() {
        let good = sample().to_value();
        let Value::Map(entries) = good else { panic!() };
        let inputs = |items: Vec<Value>| {
            Value::Map(vec![
                (Value::from(1u64), Value::Bytes(vec![1; 32])),
                (Value::from(2u64), Value::Array(items)),
            ])
        };
        let input = |items: Vec<Value>| inputs(vec![Value::Array(items)]);
        let p = || Value::Text("/nix/store/yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy-b".into());
        let h = || Value::Bytes(vec![2; 32]);
        for (value, expected) in [
            (Value::Bool(true), "not a map"),
            (
                Value::Map(entries.into_iter().take(1).collect()),
                "missing trace inputs",
            ),
            (input(vec![]), "no path"),
            (
                input(vec![Value::Text("/etc/passwd".into()), h()]),
                "not a store path",
            ),
            (input(vec![p()]), "no NAR hash"),
            (input(vec![p(), Value::Bytes(vec![2; 31])]), "not 32 bytes"),
            (
                input(vec![p(), h(), Value::from(7u64)]),
                "unknown content-addressing",
            ),
            (
                input(vec![p(), h(), Value::from(1u64), Value::from("md5")]),
                "unknown hash algorithm",
            ),
            (
                input(vec![
                    p(),
                    h(),
                    Value::from(1u64),
                    Value::from("sha256"),
                    Value::Bytes(vec![0; 20]),
                ]),
                "algorithm's length",
            ),
            (
                input(vec![
                    p(),
                    h(),
                    Value::from(1u64),
                    Value::from("sha256"),
                    h(),
                ]),
                "no references",
            ),
            (
                input(vec![
                    p(),
                    h(),
                    Value::from(1u64),
                    Value::from("sha256"),
                    h(),
                    Value::Array(vec![p(), p()]),
                ]),
                "not sorted",
            ),
            (
                input(vec![
                    p(),
                    h(),
                    Value::from(1u64),
                    Value::from("sha256"),
                    h(),
                    Value::Array(vec![]),
                    Value::Null,
                ]),
                "more items",
            ),
            (
                inputs(vec![
                    Value::Array(vec![p(), h()]),
                    Value::Array(vec![p(), h()]),
                ]),
                "not sorted",
            ),
        ] {
            let e = Trace::from_value(value).unwrap_err();
            assert!(e.contains(expected), "{e} (expected {expected})");
        }
    }

    #[test]
    fn content_addressed_inputs_check_themselves() {
        assert_eq!(text_input().check_content(), Some(Ok(())));
        let plain = &sample().inputs[0];
        assert_eq!(plain.check_content(), None);
        // Other content under the same path: the path is not reproduced.
        let mut doctored = text_input();
        if let Some(c) = &mut doctored.content {
            c.address.digest = sha256(b"hello, world\n");
        }
        let e = doctored.check_content().unwrap().unwrap_err();
        assert!(e.contains("not this path"), "{e}");
        // A reference it did not have when it was made.
        let mut referring = text_input();
        if let Some(c) = &mut referring.content {
            c.references = vec![plain.path.clone()];
        }
        assert!(referring.check_content().unwrap().is_err());
        // A recursive SHA-256 address must be the NAR hash itself.
        let nar = [9u8; 32];
        let address = ContentAddress {
            method: Method::Recursive,
            algo: HashAlgo::Sha256,
            digest: nar.to_vec(),
        };
        let path = address.store_path("src", &[], false).unwrap();
        let source = TraceInput {
            path,
            nar_sha256: nar,
            content: Some(Content {
                address,
                references: Vec::new(),
            }),
        };
        assert_eq!(source.check_content(), Some(Ok(())));
        let other_nar = TraceInput {
            nar_sha256: [8; 32],
            ..source
        };
        let e = other_nar.check_content().unwrap().unwrap_err();
        assert!(e.contains("is not its content hash"), "{e}");
    }
}
