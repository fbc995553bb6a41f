//! A bounds-checked cursor over untrusted bytes that names what it was
//! reading and where when it runs out.

use crate::Error;

/// Reads TPM structures (big-endian) and event logs (little-endian).
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    structure: &'static str,
}

impl<'a> Reader<'a> {
    /// A reader over `bytes`; `structure` names them in errors.
    pub fn new(structure: &'static str, bytes: &'a [u8]) -> Reader<'a> {
        Reader {
            bytes,
            pos: 0,
            structure,
        }
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes left.
    pub fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.pos)
    }

    /// Whether every byte was consumed.
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// An error at the current position.
    pub fn error(&self, reason: impl Into<String>) -> Error {
        Error::Tpm {
            structure: self.structure,
            offset: self.pos,
            reason: reason.into(),
        }
    }

    /// The next `n` bytes; `what` names the field in the error.
    pub fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], Error> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        match end.and_then(|e| self.bytes.get(self.pos..e).map(|s| (e, s))) {
            Some((e, s)) => {
                self.pos = e;
                Ok(s)
            }
            None => Err(self.error(format!(
                "{what}: needs {n} bytes, {} left",
                self.remaining()
            ))),
        }
    }

    /// The next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], Error> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    /// A byte.
    pub fn u8(&mut self, what: &str) -> Result<u8, Error> {
        Ok(self.array::<1>(what)?[0])
    }
    /// A big-endian u16 (TPM structures).
    pub fn u16_be(&mut self, what: &str) -> Result<u16, Error> {
        self.array(what).map(u16::from_be_bytes)
    }
    /// A big-endian u32.
    pub fn u32_be(&mut self, what: &str) -> Result<u32, Error> {
        self.array(what).map(u32::from_be_bytes)
    }
    /// A big-endian u64.
    pub fn u64_be(&mut self, what: &str) -> Result<u64, Error> {
        self.array(what).map(u64::from_be_bytes)
    }
    /// A little-endian u16 (event logs).
    pub fn u16_le(&mut self, what: &str) -> Result<u16, Error> {
        self.array(what).map(u16::from_le_bytes)
    }
    /// A little-endian u32.
    pub fn u32_le(&mut self, what: &str) -> Result<u32, Error> {
        self.array(what).map(u32::from_le_bytes)
    }
    /// A little-endian u64.
    pub fn u64_le(&mut self, what: &str) -> Result<u64, Error> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// A TPM2B: a big-endian u16 size, then that many bytes, at most `max`.
    pub fn tpm2b(&mut self, what: &str, max: usize) -> Result<&'a [u8], Error> {
        let n = usize::from(self.u16_be(what)?);
        if n > max {
            return Err(self.error(format!("{what}: size {n} exceeds {max}")));
        }
        self.take(n, what)
    }

    /// Fail unless every byte was consumed.
    pub fn finish(&self) -> Result<(), Error> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(self.error(format!("{} trailing bytes", self.remaining())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_byte_orders_and_names_short_input() {
        let mut r = Reader::new("test", &[0, 1, 1, 0, 0, 2, 0xAA, 0xBB, 9]);
        assert_eq!(r.u16_be("a").unwrap(), 1);
        assert_eq!(r.u16_le("b").unwrap(), 1);
        assert_eq!(r.tpm2b("c", 2).unwrap(), &[0xAA, 0xBB]);
        assert!(r.finish().is_err());
        let e = r.u32_le("d").unwrap_err().to_string();
        assert!(
            e.contains("test at byte 8") && e.contains("d: needs 4 bytes, 1 left"),
            "{e}"
        );
        let mut big = Reader::new("t", &[0, 3, 1, 2, 3]);
        assert!(big.tpm2b("x", 2).is_err());
    }
}
