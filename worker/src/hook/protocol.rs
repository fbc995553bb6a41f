//! The hook protocol's messages and frames.
//!
//! Each message is a frame: its length as a 4-byte big-endian integer, then
//! that many bytes of deterministically encoded CBOR (RFC 8949 section
//! 4.2.1), a map with text keys. Both sides decode with the verifier's
//! strict reader (`provenix_verifier::cbor`), as statements are decoded:
//! indefinite lengths, integers not in their shortest form, keys out of
//! order, unknown keys and trailing bytes are refused.

// Parses what clients hand it: no panics from input.
#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions
)]

use ciborium::Value;
use provenix_verifier::cbor::{Fields, decode_map_with, encode, sorted_map};

/// The protocol version.
pub const PROTOCOL_VERSION: u64 = 1;
/// Largest request: a submission of a few hundred outputs, each a store
/// path of at most ~500 bytes (store directory, hash, 211-byte name).
pub const MAX_REQUEST: usize = 256 << 10;
/// Largest response: a bundle (at most `provenix_verifier::MAX_BUNDLE_SIZE`)
/// with its envelope.
pub const MAX_RESPONSE: usize = provenix_verifier::MAX_BUNDLE_SIZE + (4 << 10);
/// Most outputs named in one submission: what fits [`MAX_REQUEST`] with
/// the shortest store paths; the daemon applies its own, smaller limit.
const MAX_OUTS: usize = 4096;
/// Length of a frame's header.
pub const FRAME_HEADER: usize = 4;

/// The daemon's acknowledgement of a submission: every output is durable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ack {
    /// The key whose log holds the entries.
    pub worker_key: [u8; 32],
    /// One index per output, in the order sent.
    pub indices: Vec<u64>,
}

/// The current log's head, as the daemon reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeadInfo {
    /// The current worker key.
    pub worker_key: [u8; 32],
    /// Entries in its log.
    pub size: u64,
    /// Entries its latest attested checkpoint covers.
    pub checkpoint: u64,
}

/// A request, as the daemon decodes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Log these outputs of this derivation.
    Submit {
        /// The derivation. The daemon refuses a submission without one:
        /// it signs only outputs Nix registered as built from it.
        drv: Option<String>,
        /// The outputs.
        outs: Vec<String>,
    },
    /// The bundle of the newest statement about this store path.
    Export {
        /// The store path.
        path: String,
    },
    /// The current log's head.
    Head,
    /// The consistency proof between two sizes of the current log.
    Consistency {
        /// The older tree size.
        size1: u64,
        /// The newer tree size.
        size2: u64,
    },
}

type TextFields = Fields<&'static str, String>;

fn decode(bytes: &[u8], max: usize) -> Result<TextFields, String> {
    let mut m = decode_map_with::<&'static str, String>(bytes, max, |e| e)?;
    match m.uint("v", "protocol version")? {
        PROTOCOL_VERSION => Ok(m),
        other => Err(format!(
            "protocol version {other}, this daemon speaks {PROTOCOL_VERSION}"
        )),
    }
}

fn encode_map(map: Vec<(&str, Value)>) -> Vec<u8> {
    let entries = std::iter::once(("v", Value::from(PROTOCOL_VERSION)))
        .chain(map)
        .map(|(k, v)| (Value::from(k), v))
        .collect();
    encode(&sorted_map(entries))
}

impl Request {
    /// The CBOR encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut map = Vec::new();
        match self {
            Request::Submit { drv, outs } => {
                map.push(("op", Value::from("submit")));
                if let Some(d) = drv {
                    map.push(("drv", Value::from(d.as_str())));
                }
                map.push((
                    "outs",
                    Value::Array(outs.iter().map(|o| Value::from(o.as_str())).collect()),
                ));
            }
            Request::Export { path } => {
                map.push(("op", Value::from("export")));
                map.push(("path", Value::from(path.as_str())));
            }
            Request::Head => map.push(("op", Value::from("head"))),
            Request::Consistency { size1, size2 } => {
                map.push(("op", Value::from("consistency")));
                map.push(("size1", Value::from(*size1)));
                map.push(("size2", Value::from(*size2)));
            }
        }
        encode_map(map)
    }

    /// Decode an untrusted request.
    pub fn decode(bytes: &[u8]) -> Result<Request, String> {
        let mut m = decode(bytes, MAX_REQUEST)?;
        let op = m.text("op", "op")?;
        let request = match op.as_str() {
            "submit" => Request::Submit {
                drv: m.optional("drv", |m| m.text("drv", "drv"))?,
                outs: m.text_array("outs", "outs", MAX_OUTS)?,
            },
            "export" => Request::Export {
                path: m.text("path", "path")?,
            },
            "head" => Request::Head,
            "consistency" => Request::Consistency {
                size1: m.uint("size1", "size1")?,
                size2: m.uint("size2", "size2")?,
            },
            other => return Err(format!("unknown op {:?}", crate::daemon::truncate(other))),
        };
        m.finish()?;
        Ok(request)
    }
}

/// A response, as the client decodes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// Submitted.
    Ack(Ack),
    /// A bundle.
    Bundle(Vec<u8>),
    /// The head.
    Head(HeadInfo),
    /// A consistency proof's nodes.
    Proof(Vec<[u8; 32]>),
    /// Refused or failed.
    Error(String),
}

impl Response {
    /// The CBOR encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut map = Vec::new();
        match self {
            Response::Ack(ack) => {
                map.push(("ok", Value::Bool(true)));
                map.push(("key", Value::Bytes(ack.worker_key.to_vec())));
                map.push((
                    "indices",
                    Value::Array(ack.indices.iter().map(|&i| Value::from(i)).collect()),
                ));
            }
            Response::Bundle(b) => {
                map.push(("ok", Value::Bool(true)));
                map.push(("bundle", Value::Bytes(b.clone())));
            }
            Response::Head(h) => {
                map.push(("ok", Value::Bool(true)));
                map.push(("key", Value::Bytes(h.worker_key.to_vec())));
                map.push(("size", Value::from(h.size)));
                map.push(("checkpoint", Value::from(h.checkpoint)));
            }
            Response::Proof(hashes) => {
                map.push(("ok", Value::Bool(true)));
                map.push((
                    "proof",
                    Value::Array(hashes.iter().map(|h| Value::Bytes(h.to_vec())).collect()),
                ));
            }
            Response::Error(e) => {
                map.push(("ok", Value::Bool(false)));
                map.push(("error", Value::from(e.as_str())));
            }
        }
        encode_map(map)
    }

    /// Decode a response.
    pub fn decode(bytes: &[u8]) -> Result<Response, String> {
        let mut m = decode(bytes, MAX_RESPONSE)?;
        if !m.bool("ok", "ok")? {
            let error = m.text("error", "error")?;
            m.finish()?;
            return Ok(Response::Error(error));
        }
        let next = m.next_key()?.cloned().unwrap_or_default();
        let response = match next.as_str() {
            "bundle" => Response::Bundle(m.byte_string(
                "bundle",
                "bundle",
                provenix_verifier::MAX_BUNDLE_SIZE,
            )?),
            "proof" => Response::Proof(
                m.array("proof", "proof", provenix_verifier::MAX_CONSISTENCY_PROOF)?
                    .into_iter()
                    .map(|n| match n {
                        Value::Bytes(b) => b
                            .try_into()
                            .map_err(|_| "a proof node is not 32 bytes".to_owned()),
                        _ => Err("a proof node is not a byte string".to_owned()),
                    })
                    .collect::<Result<_, _>>()?,
            ),
            _ => {
                let worker_key = m.bytes::<32>("key", "key")?;
                if m.next_is("indices")? {
                    Response::Ack(Ack {
                        worker_key,
                        indices: m.uint_array("indices", "indices", MAX_OUTS)?,
                    })
                } else {
                    Response::Head(HeadInfo {
                        worker_key,
                        size: m.uint("size", "size")?,
                        checkpoint: m.uint("checkpoint", "checkpoint")?,
                    })
                }
            }
        };
        m.finish()?;
        Ok(response)
    }
}

/// `body` as a frame: its length (u32, big-endian), then the body. `None`
/// if it is longer than a frame can say.
pub fn frame(body: &[u8]) -> Option<Vec<u8>> {
    let len = u32::try_from(body.len()).ok()?;
    let mut frame = Vec::with_capacity(body.len().saturating_add(FRAME_HEADER));
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(body);
    Some(frame)
}

/// The body length a frame header announces.
pub fn frame_len(header: [u8; FRAME_HEADER]) -> usize {
    usize::try_from(u32::from_be_bytes(header)).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        for r in [
            Request::Submit {
                drv: Some("/nix/store/x.drv".into()),
                outs: vec!["/nix/store/a".into(), "/nix/store/b".into()],
            },
            Request::Submit {
                drv: None,
                outs: vec![],
            },
            Request::Export {
                path: "/nix/store/a".into(),
            },
            Request::Head,
            Request::Consistency { size1: 3, size2: 7 },
        ] {
            assert_eq!(Request::decode(&r.encode()).unwrap(), r);
        }
        for r in [
            Response::Ack(Ack {
                worker_key: [7; 32],
                indices: vec![1, 2, u64::MAX],
            }),
            Response::Bundle(vec![1, 2, 3]),
            Response::Head(HeadInfo {
                worker_key: [1; 32],
                size: 10,
                checkpoint: 8,
            }),
            Response::Proof(vec![[3; 32], [4; 32]]),
            Response::Error("no".into()),
        ] {
            assert_eq!(Response::decode(&r.encode()).unwrap(), r);
        }
    }

    /// A submit request's map with `extra` entries, encoded as given (not
    /// sorted).
    fn raw(entries: Vec<(&str, Value)>) -> Vec<u8> {
        encode(&Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| (Value::from(k), v))
                .collect(),
        ))
    }

    fn submit_entries() -> Vec<(&'static str, Value)> {
        vec![
            ("v", Value::from(1u64)),
            ("op", Value::from("submit")),
            ("drv", Value::from("/nix/store/x.drv")),
            ("outs", Value::Array(vec![Value::from("/nix/store/a")])),
        ]
    }

    /// Known good, then one mutation per case, each with its exact error.
    #[test]
    fn non_canonical_and_hostile_requests_are_refused() {
        let good = raw(submit_entries());
        assert_eq!(good, Request::decode(&good).unwrap().encode());

        let mut cases: Vec<(&str, Vec<u8>, &str)> = Vec::new();
        // Trailing bytes.
        let mut trailing = good.clone();
        trailing.push(0);
        cases.push((
            "trailing byte",
            trailing,
            "1 trailing bytes after the CBOR item",
        ));
        // Indefinite-length map: 0xbf ... 0xff instead of 0xa4.
        let mut indefinite = good.clone();
        indefinite[0] = 0xbf;
        indefinite.push(0xff);
        cases.push((
            "indefinite-length map",
            indefinite,
            "not in deterministic CBOR encoding",
        ));
        // The version as a two-byte integer (0x18 0x01) instead of 0x01.
        let v_at = good.iter().position(|&b| b == 0x01).unwrap();
        let mut long_int = good.clone();
        long_int.splice(v_at..=v_at, [0x18, 0x01]);
        cases.push((
            "non-shortest integer",
            long_int,
            "not in deterministic CBOR encoding",
        ));
        // An indefinite-length text string for "op".
        let mut chunks = good.clone();
        let op_at = good.windows(7).position(|w| w == b"\x66submit").unwrap();
        chunks.splice(op_at..op_at + 7, *b"\x7f\x66submit\xff");
        cases.push((
            "indefinite-length text",
            chunks,
            "not in deterministic CBOR encoding",
        ));
        // Keys out of order: "outs" before "drv".
        let mut unsorted = submit_entries();
        unsorted.swap(2, 3);
        cases.push((
            "unsorted keys",
            raw(unsorted),
            "unknown or out-of-order key \"drv\"",
        ));
        // A hash the client would like signed.
        let mut hash = submit_entries();
        hash.push(("sha256", Value::Bytes(vec![0; 32])));
        cases.push((
            "extra field",
            raw(hash),
            "unknown or out-of-order key \"sha256\"",
        ));
        let mut v2 = submit_entries();
        v2[0].1 = Value::from(2u64);
        cases.push(("version 2", raw(v2), "protocol version 2"));
        let mut int_key = submit_entries();
        int_key.truncate(1);
        let mut bytes = raw(int_key);
        bytes[0] = 0xa2;
        bytes.extend_from_slice(&[0x01, 0x01]);
        cases.push((
            "integer key",
            bytes,
            "map key Integer(Integer(1)) is not a text string",
        ));
        let mut not_text = submit_entries();
        not_text[3].1 = Value::Array(vec![Value::from(1u64)]);
        cases.push((
            "outs not text",
            raw(not_text),
            "outs: an item is not a text string",
        ));
        let mut too_big = good.clone();
        too_big.resize(MAX_REQUEST + 1, 0);
        cases.push(("oversized", too_big, "exceeds the limit of 262144"));
        cases.push(("array", vec![0x80], "not a CBOR map but an array"));
        cases.push(("empty", vec![], "not CBOR"));

        for (name, bytes, want) in cases {
            let got = Request::decode(&bytes).unwrap_err();
            assert!(got.contains(want), "{name}: {got:?} lacks {want:?}");
        }
        // Deep nesting is refused by ciborium's recursion limit, not the
        // stack.
        let mut deep = vec![0x81u8; 100_000];
        deep.push(0);
        assert!(Request::decode(&deep).is_err());
    }
}
