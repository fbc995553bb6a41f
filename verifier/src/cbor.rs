//! Deterministic CBOR (RFC 8949 section 4.2.1) helpers shared by the
//! statement and bundle formats.

use ciborium::Value;

use crate::error::Error;

/// The CBOR encoding of `value`: ciborium writes definite lengths and the
/// shortest integer forms, so with keys in ascending order this is the
/// deterministic encoding of RFC 8949 section 4.2.1.
pub(crate) fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = ciborium::ser::into_writer(value, &mut out);
    out
}

/// Decode `bytes` as one deterministically encoded CBOR map of at most
/// `max` bytes and return its fields; anything else is refused through
/// `err`, naming what is wrong.
pub(crate) fn decode_map(
    bytes: &[u8],
    max: usize,
    err: fn(String) -> Error,
) -> Result<Fields, Error> {
    if bytes.len() > max {
        return Err(err(format!(
            "{} bytes exceeds the limit of {max}",
            bytes.len()
        )));
    }
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

/// The fields of a decoded map with unsigned integer keys, taken one by one
/// in ascending key order, so a missing, unknown or out-of-order key is
/// caught; `err` makes the error of the structure being decoded.
pub(crate) struct Fields {
    entries: std::vec::IntoIter<(Value, Value)>,
    peeked: Option<(u64, Value)>,
    err: fn(String) -> Error,
}

impl Fields {
    pub(crate) fn new(entries: Vec<(Value, Value)>, err: fn(String) -> Error) -> Self {
        Fields {
            entries: entries.into_iter(),
            peeked: None,
            err,
        }
    }

    pub(crate) fn next_key(&mut self) -> Result<Option<u64>, Error> {
        if self.peeked.is_none()
            && let Some((k, v)) = self.entries.next()
        {
            let key = k
                .as_integer()
                .and_then(|i| u64::try_from(i).ok())
                .ok_or_else(|| (self.err)(format!("map key {k:?} is not an unsigned integer")))?;
            self.peeked = Some((key, v));
        }
        Ok(self.peeked.as_ref().map(|(k, _)| *k))
    }

    pub(crate) fn take(&mut self, key: u64, name: &str) -> Result<Value, Error> {
        match self.next_key()? {
            Some(k) if k == key => Ok(self.peeked.take().map(|(_, v)| v).unwrap_or(Value::Null)),
            _ => Err((self.err)(format!("missing {name} (key {key})"))),
        }
    }

    pub(crate) fn optional<T>(
        &mut self,
        key: u64,
        read: impl FnOnce(&mut Self) -> Result<T, Error>,
    ) -> Result<Option<T>, Error> {
        if self.next_key()? == Some(key) {
            read(self).map(Some)
        } else {
            Ok(None)
        }
    }

    pub(crate) fn uint(&mut self, key: u64, name: &str) -> Result<u64, Error> {
        let v = self.take(key, name)?;
        v.as_integer()
            .and_then(|i| u64::try_from(i).ok())
            .ok_or_else(|| (self.err)(format!("{name} is not an unsigned integer")))
    }

    pub(crate) fn int(&mut self, key: u64, name: &str) -> Result<i64, Error> {
        let v = self.take(key, name)?;
        v.as_integer()
            .and_then(|i| i64::try_from(i).ok())
            .ok_or_else(|| (self.err)(format!("{name} is not a 64-bit integer")))
    }

    pub(crate) fn text(&mut self, key: u64, name: &str) -> Result<String, Error> {
        match self.take(key, name)? {
            Value::Text(t) => Ok(t),
            _ => Err((self.err)(format!("{name} is not a text string"))),
        }
    }

    pub(crate) fn bytes<const N: usize>(&mut self, key: u64, name: &str) -> Result<[u8; N], Error> {
        match self.take(key, name)? {
            Value::Bytes(b) => b.try_into().map_err(|b: Vec<u8>| {
                (self.err)(format!("{name} is {} bytes, expected {N}", b.len()))
            }),
            _ => Err((self.err)(format!("{name} is not a byte string"))),
        }
    }

    /// An array of at most `max` text strings.
    pub(crate) fn text_array(
        &mut self,
        key: u64,
        name: &str,
        max: usize,
    ) -> Result<Vec<String>, Error> {
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

    /// A byte string of at most `max` bytes.
    pub(crate) fn byte_string(
        &mut self,
        key: u64,
        name: &str,
        max: usize,
    ) -> Result<Vec<u8>, Error> {
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
    pub(crate) fn array(&mut self, key: u64, name: &str, max: usize) -> Result<Vec<Value>, Error> {
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
    pub(crate) fn map(&mut self, key: u64, name: &str) -> Result<Fields, Error> {
        match self.take(key, name)? {
            Value::Map(m) => Ok(Fields::new(m, self.err)),
            _ => Err((self.err)(format!("{name} is not a map"))),
        }
    }

    pub(crate) fn finish(mut self) -> Result<(), Error> {
        match self.next_key()? {
            None => Ok(()),
            Some(k) => Err((self.err)(format!("unknown or out-of-order key {k}"))),
        }
    }
}
