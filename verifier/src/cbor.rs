//! Deterministic CBOR (RFC 8949 section 4.2.1): the one strict map reader
//! of the project. Statements and bundles (unsigned integer keys), the
//! worker's state files (integer keys) and its hook protocol (text keys)
//! all decode through [`decode_map`] or [`decode_map_with`] and take their
//! fields with [`Fields`], so every one of them refuses what the others
//! refuse: indefinite lengths, integers or lengths not in their shortest
//! form, keys out of order, unknown keys, trailing bytes.

use std::fmt;

use ciborium::Value;

use crate::error::Error;

/// The CBOR encoding of `value`: ciborium writes definite lengths and the
/// shortest integer forms, so with keys in ascending order this is the
/// deterministic encoding of RFC 8949 section 4.2.1.
pub fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = ciborium::ser::into_writer(value, &mut out);
    out
}

/// A map with its entries in the order RFC 8949 section 4.2.1 requires:
/// by the bytes of each key's encoding (so integer keys before text keys,
/// shorter text keys before longer ones). Nested values are kept as given.
pub fn sorted_map(entries: Vec<(Value, Value)>) -> Value {
    let mut keyed: Vec<(Vec<u8>, (Value, Value))> = entries
        .into_iter()
        .map(|(k, v)| (encode(&k), (k, v)))
        .collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    Value::Map(keyed.into_iter().map(|(_, kv)| kv).collect())
}

/// Decode `bytes` as one deterministically encoded CBOR map of at most
/// `max` bytes with unsigned integer keys (statements, bundles) and return
/// its fields; anything else is refused through `err`, naming what is
/// wrong.
pub fn decode_map(bytes: &[u8], max: usize, err: fn(String) -> Error) -> Result<Fields, Error> {
    decode_map_with(bytes, max, err)
}

/// [`decode_map`] for any key kind ([`MapKey`]) and any error type: the
/// same checks, in the same order, with the same messages.
pub fn decode_map_with<K: MapKey, E>(
    bytes: &[u8],
    max: usize,
    err: fn(String) -> E,
) -> Result<Fields<K, E>, E> {
    if bytes.len() > max {
        return Err(err(format!(
            "{} bytes exceeds the limit of {max}",
            bytes.len()
        )));
    }
    // ciborium bounds nesting (256 levels), and `max` bounds the rest.
    let value: Value =
        ciborium::de::from_reader(bytes).map_err(|e| err(format!("not CBOR: {e}")))?;
    let kind = match &value {
        Value::Map(_) => None,
        Value::Array(_) => Some("an array"),
        Value::Bytes(_) => Some("a byte string"),
        Value::Text(_) => Some("a text string"),
        Value::Integer(_) => Some("an integer"),
        Value::Tag(..) => Some("a tagged item"),
        _ => Some("a simple value"),
    };
    if let Some(kind) = kind {
        return Err(err(format!("not a CBOR map but {kind}")));
    }
    // Verify the bytes received: the decoded value re-encodes to exactly
    // them only if every length and integer was in its shortest definite
    // form and nothing follows the item.
    let canonical = encode(&value);
    if canonical != bytes {
        if let Some(rest) = bytes.strip_prefix(canonical.as_slice()) {
            return Err(err(format!(
                "{} trailing bytes after the CBOR item (a truncated, concatenated or padded file?)",
                rest.len()
            )));
        }
        return Err(err(
            "not in deterministic CBOR encoding (RFC 8949 section 4.2.1)".into(),
        ));
    }
    match value {
        Value::Map(entries) => Ok(Fields::new(entries, err)),
        _ => Err(err("not a CBOR map".into())),
    }
}

/// The kind of key a map is read by: unsigned integers (`u64`: statements,
/// bundles, state files) or text strings (`&str`: the hook protocol).
/// Taking fields in ascending key order is what makes [`Fields`] catch
/// unsorted maps, so each kind says how its keys compare.
pub trait MapKey: Copy + fmt::Display {
    /// A key as read from the map.
    type Read: fmt::Debug;
    /// What this kind is, for errors ("an unsigned integer").
    const KIND: &'static str;
    /// The key `v` as this kind, if it is one.
    fn read(v: Value) -> Option<Self::Read>;
    /// Whether `read` is this key.
    fn is(self, read: &Self::Read) -> bool;
}

impl MapKey for u64 {
    type Read = u64;
    const KIND: &'static str = "an unsigned integer";
    fn read(v: Value) -> Option<u64> {
        v.as_integer().and_then(|i| u64::try_from(i).ok())
    }
    fn is(self, read: &u64) -> bool {
        self == *read
    }
}

impl MapKey for &str {
    type Read = String;
    const KIND: &'static str = "a text string";
    fn read(v: Value) -> Option<String> {
        match v {
            Value::Text(t) => Some(t),
            _ => None,
        }
    }
    fn is(self, read: &String) -> bool {
        self == read.as_str()
    }
}

/// The fields of a decoded map, taken one by one in ascending key order,
/// so a missing, unknown or out-of-order key is caught; `err` makes the
/// error of the structure being decoded.
pub struct Fields<K: MapKey = u64, E = Error> {
    entries: std::vec::IntoIter<(Value, Value)>,
    peeked: Option<(K::Read, Value)>,
    err: fn(String) -> E,
}

impl<K: MapKey, E> fmt::Debug for Fields<K, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fields")
            .field("next", &self.peeked.as_ref().map(|(k, _)| k))
            .field("left", &self.entries.len())
            .finish()
    }
}

impl<K: MapKey, E> Fields<K, E> {
    /// The fields of `entries`, in the order given.
    pub fn new(entries: Vec<(Value, Value)>, err: fn(String) -> E) -> Self {
        Fields {
            entries: entries.into_iter(),
            peeked: None,
            err,
        }
    }

    /// The next key, without taking its field.
    pub fn next_key(&mut self) -> Result<Option<&K::Read>, E> {
        if self.peeked.is_none()
            && let Some((k, v)) = self.entries.next()
        {
            let shown = format!("{k:?}");
            let key = K::read(k)
                .ok_or_else(|| (self.err)(format!("map key {shown} is not {}", K::KIND)))?;
            self.peeked = Some((key, v));
        }
        Ok(self.peeked.as_ref().map(|(k, _)| k))
    }

    /// Whether the next key is `key`.
    pub fn next_is(&mut self, key: K) -> Result<bool, E> {
        Ok(self.next_key()?.is_some_and(|k| key.is(k)))
    }

    /// The field `key` (`name` in errors), which must come next.
    pub fn take(&mut self, key: K, name: &str) -> Result<Value, E> {
        if self.next_is(key)? {
            Ok(self.peeked.take().map(|(_, v)| v).unwrap_or(Value::Null))
        } else {
            Err((self.err)(format!("missing {name} (key {key})")))
        }
    }

    /// The field `key` read by `read` if it comes next, else `None`.
    pub fn optional<T>(
        &mut self,
        key: K,
        read: impl FnOnce(&mut Self) -> Result<T, E>,
    ) -> Result<Option<T>, E> {
        if self.next_is(key)? {
            read(self).map(Some)
        } else {
            Ok(None)
        }
    }

    /// An unsigned integer.
    pub fn uint(&mut self, key: K, name: &str) -> Result<u64, E> {
        let v = self.take(key, name)?;
        v.as_integer()
            .and_then(|i| u64::try_from(i).ok())
            .ok_or_else(|| (self.err)(format!("{name} is not an unsigned integer")))
    }

    /// A signed integer that fits 64 bits.
    pub fn int(&mut self, key: K, name: &str) -> Result<i64, E> {
        let v = self.take(key, name)?;
        v.as_integer()
            .and_then(|i| i64::try_from(i).ok())
            .ok_or_else(|| (self.err)(format!("{name} is not a 64-bit integer")))
    }

    /// A boolean.
    pub fn bool(&mut self, key: K, name: &str) -> Result<bool, E> {
        match self.take(key, name)? {
            Value::Bool(b) => Ok(b),
            _ => Err((self.err)(format!("{name} is not a boolean"))),
        }
    }

    /// A text string.
    pub fn text(&mut self, key: K, name: &str) -> Result<String, E> {
        match self.take(key, name)? {
            Value::Text(t) => Ok(t),
            _ => Err((self.err)(format!("{name} is not a text string"))),
        }
    }

    /// A byte string of exactly `N` bytes.
    pub fn bytes<const N: usize>(&mut self, key: K, name: &str) -> Result<[u8; N], E> {
        match self.take(key, name)? {
            Value::Bytes(b) => b.try_into().map_err(|b: Vec<u8>| {
                (self.err)(format!("{name} is {} bytes, expected {N}", b.len()))
            }),
            _ => Err((self.err)(format!("{name} is not a byte string"))),
        }
    }

    /// An array of at most `max` text strings.
    pub fn text_array(&mut self, key: K, name: &str, max: usize) -> Result<Vec<String>, E> {
        let Value::Array(items) = self.take(key, name)? else {
            return Err((self.err)(format!("{name} is not an array")));
        };
        if items.len() > max {
            return Err((self.err)(format!("{name}: more than {max}")));
        }
        items
            .into_iter()
            .map(|v| match v {
                Value::Text(t) => Ok(t),
                _ => Err((self.err)(format!("{name}: an item is not a text string"))),
            })
            .collect()
    }

    /// An array of at most `max` unsigned integers.
    pub fn uint_array(&mut self, key: K, name: &str, max: usize) -> Result<Vec<u64>, E> {
        self.array(key, name, max)?
            .into_iter()
            .map(|v| {
                v.as_integer()
                    .and_then(|i| u64::try_from(i).ok())
                    .ok_or_else(|| {
                        (self.err)(format!("{name}: an item is not an unsigned integer"))
                    })
            })
            .collect()
    }

    /// A byte string of at most `max` bytes.
    pub fn byte_string(&mut self, key: K, name: &str, max: usize) -> Result<Vec<u8>, E> {
        match self.take(key, name)? {
            Value::Bytes(b) if b.len() <= max => Ok(b),
            Value::Bytes(b) => Err((self.err)(format!(
                "{name} is {} bytes, more than {max}",
                b.len()
            ))),
            _ => Err((self.err)(format!("{name} is not a byte string"))),
        }
    }

    /// An array of at most `max` items.
    pub fn array(&mut self, key: K, name: &str, max: usize) -> Result<Vec<Value>, E> {
        match self.take(key, name)? {
            Value::Array(a) if a.len() <= max => Ok(a),
            Value::Array(a) => Err((self.err)(format!(
                "{name} has {} items, more than {max}",
                a.len()
            ))),
            _ => Err((self.err)(format!("{name} is not an array"))),
        }
    }

    /// A nested map, as its own fields.
    pub fn map(&mut self, key: K, name: &str) -> Result<Fields<K, E>, E> {
        match self.take(key, name)? {
            Value::Map(m) => Ok(Fields::new(m, self.err)),
            _ => Err((self.err)(format!("{name} is not a map"))),
        }
    }

    /// Refuse any field not taken.
    pub fn finish(mut self) -> Result<(), E> {
        let err = self.err;
        match self.next_key()? {
            None => Ok(()),
            Some(k) => Err(err(format!("unknown or out-of-order key {k:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_maps_follow_rfc_8949_key_order_and_read_back_in_order() {
        let map = sorted_map(vec![
            (Value::from("ok"), Value::Bool(true)),
            (Value::from("v"), Value::from(1u64)),
            (Value::from("aa"), Value::from(2u64)),
        ]);
        let bytes = encode(&map);
        // "v" (one byte) before "aa" and "ok" (two bytes, bytewise).
        assert_eq!(bytes, b"\xa3\x61v\x01\x62aa\x02\x62ok\xf5");
        let mut m = decode_map_with::<&str, String>(&bytes, 64, |e| e).unwrap();
        assert_eq!(m.uint("v", "v").unwrap(), 1);
        assert!(m.next_is("aa").unwrap());
        assert_eq!(m.uint("aa", "aa").unwrap(), 2);
        assert!(m.bool("ok", "ok").unwrap());
        m.finish().unwrap();
        // Taken out of order: the skipped key is reported.
        let mut m = decode_map_with::<&str, String>(&bytes, 64, |e| e).unwrap();
        assert_eq!(m.uint("aa", "aa").unwrap_err(), "missing aa (key aa)");
        // Integer keys where text keys are read, and the other way round.
        let ints = encode(&Value::Map(vec![(Value::from(1u64), Value::Null)]));
        let m = decode_map_with::<&str, String>(&ints, 64, |e| e).unwrap();
        assert_eq!(
            m.finish().unwrap_err(),
            "map key Integer(Integer(1)) is not a text string"
        );
        let mut m = decode_map_with::<u64, String>(&bytes, 64, |e| e).unwrap();
        assert_eq!(
            m.next_key().unwrap_err(),
            "map key Text(\"v\") is not an unsigned integer"
        );
    }
}
