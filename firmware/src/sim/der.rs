//! A tiny DER writer, enough to build X.509 certificates (ITU-T X.690).
//!
//! Each function returns one complete TLV as a `Vec<u8>`; constructed values
//! take their already-encoded children. The writer only ever sees values the
//! simulator chose itself, so its errors are programming errors, reported as
//! [`Error::Sim`] rather than panics.

use crate::Error;

/// Universal tag numbers (X.690 §8.1.2 and X.680 Table 1), with the
/// constructed bit (0x20) set for SEQUENCE and SET.
mod tag {
    pub(super) const BOOLEAN: u8 = 0x01;
    pub(super) const INTEGER: u8 = 0x02;
    pub(super) const BIT_STRING: u8 = 0x03;
    pub(super) const OCTET_STRING: u8 = 0x04;
    pub(super) const NULL: u8 = 0x05;
    pub(super) const OID: u8 = 0x06;
    pub(super) const UTF8_STRING: u8 = 0x0C;
    pub(super) const PRINTABLE_STRING: u8 = 0x13;
    pub(super) const IA5_STRING: u8 = 0x16;
    pub(super) const UTC_TIME: u8 = 0x17;
    pub(super) const GENERALIZED_TIME: u8 = 0x18;
    pub(super) const SEQUENCE: u8 = 0x30;
    pub(super) const SET: u8 = 0x31;
    /// Class bits 10 (context-specific), X.690 §8.1.2.2 Table 1.
    pub(super) const CONTEXT: u8 = 0x80;
    /// Bit 6 of the identifier octet, X.690 §8.1.2.5.
    pub(super) const CONSTRUCTED: u8 = 0x20;
    /// Tag numbers up to 30 fit in the identifier octet (X.690 §8.1.2.3).
    pub(super) const MAX_LOW_NUMBER: u8 = 30;
}

/// One TLV with an arbitrary single-octet identifier. Definite length, short
/// form below 128 and minimal long form above (X.690 §8.1.3, §10.1).
pub(super) fn tlv(identifier: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len().saturating_add(6));
    out.push(identifier);
    push_length(&mut out, content.len());
    out.extend_from_slice(content);
    out
}

fn push_length(out: &mut Vec<u8>, len: usize) {
    match u8::try_from(len) {
        Ok(short) if short < 0x80 => out.push(short),
        _ => {
            let bytes = len.to_be_bytes();
            let significant = strip_leading_zeros(&bytes);
            // At most size_of::<usize>() (8) octets, so this never truncates.
            let count = u8::try_from(significant.len()).unwrap_or(u8::MAX);
            out.push(0x80 | count);
            out.extend_from_slice(significant);
        }
    }
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    bytes.get(first..).unwrap_or_default()
}

fn concat<I, T>(items: I) -> Vec<u8>
where
    I: IntoIterator<Item = T>,
    T: AsRef<[u8]>,
{
    let mut out = Vec::new();
    for item in items {
        out.extend_from_slice(item.as_ref());
    }
    out
}

/// SEQUENCE of already-encoded elements, in the order given.
pub(super) fn sequence<I, T>(items: I) -> Vec<u8>
where
    I: IntoIterator<Item = T>,
    T: AsRef<[u8]>,
{
    tlv(tag::SEQUENCE, &concat(items))
}

/// SET of already-encoded elements. DER sorts SET OF elements (X.690
/// §11.6); every SET we write holds a single AttributeTypeAndValue, so the
/// order given is kept.
pub(super) fn set<I, T>(items: I) -> Vec<u8>
where
    I: IntoIterator<Item = T>,
    T: AsRef<[u8]>,
{
    tlv(tag::SET, &concat(items))
}

/// INTEGER from the unsigned big-endian magnitude `be`: leading zeros are
/// dropped and a zero octet is prepended when the top bit is set, so the value
/// stays positive and minimal (X.690 §8.3.2). Empty input encodes zero.
pub(super) fn integer(be: &[u8]) -> Vec<u8> {
    let magnitude = strip_leading_zeros(be);
    match magnitude.first() {
        None => tlv(tag::INTEGER, &[0]),
        Some(&top) if top & 0x80 != 0 => {
            let mut content = Vec::with_capacity(magnitude.len().saturating_add(1));
            content.push(0);
            content.extend_from_slice(magnitude);
            tlv(tag::INTEGER, &content)
        }
        Some(_) => tlv(tag::INTEGER, magnitude),
    }
}

/// INTEGER from a `u64`.
pub(super) fn uint(value: u64) -> Vec<u8> {
    integer(&value.to_be_bytes())
}

/// OBJECT IDENTIFIER from its arcs, base-128 with the first two arcs folded
/// into one subidentifier as 40 * X + Y (X.690 §8.19).
pub(super) fn oid(arcs: &[u64]) -> Result<Vec<u8>, Error> {
    let bad = || Error::Sim(format!("invalid object identifier {arcs:?}"));
    let (first, second, rest) = match arcs {
        [first, second, rest @ ..] => (*first, *second, rest),
        _ => return Err(bad()),
    };
    // X.660 §A.2: the first arc is 0, 1 or 2; under 0 and 1 the second is
    // below 40.
    if first > 2 || (first < 2 && second >= 40) {
        return Err(bad());
    }
    let head = first
        .checked_mul(40)
        .and_then(|v| v.checked_add(second))
        .ok_or_else(bad)?;
    let mut content = Vec::new();
    for arc in core::iter::once(head).chain(rest.iter().copied()) {
        push_base128(&mut content, arc);
    }
    Ok(tlv(tag::OID, &content))
}

/// One subidentifier: big-endian groups of seven bits, all but the last with
/// the top bit set (X.690 §8.19.2).
fn push_base128(out: &mut Vec<u8>, value: u64) {
    // A u64 needs at most ceil(64 / 7) = 10 groups.
    let mut groups = [0u8; 10];
    let mut count = 0;
    let mut rest = value;
    for slot in groups.iter_mut().rev() {
        *slot = u8::try_from(rest & 0x7F).unwrap_or_default();
        rest >>= 7;
        count += 1;
        if rest == 0 {
            break;
        }
    }
    let start = groups.len().saturating_sub(count);
    let used = groups.get(start..).unwrap_or_default();
    let last = used.len().saturating_sub(1);
    for (i, &group) in used.iter().enumerate() {
        out.push(if i == last { group } else { group | 0x80 });
    }
}

/// BIT STRING of whole octets (no unused bits), as used for keys and
/// signatures.
pub(super) fn bit_string(bytes: &[u8]) -> Vec<u8> {
    bit_string_with_unused(0, bytes)
}

/// BIT STRING whose last octet has `unused` trailing bits that are not part
/// of the value (X.690 §8.6.2). DER requires the minimal count for named bit
/// lists (§11.2.2), but this writer takes the count as given so that it can
/// reproduce encodings such as AMD's KeyUsage verbatim.
pub(super) fn bit_string_with_unused(unused: u8, bytes: &[u8]) -> Vec<u8> {
    let mut content = Vec::with_capacity(bytes.len().saturating_add(1));
    content.push(unused);
    content.extend_from_slice(bytes);
    tlv(tag::BIT_STRING, &content)
}

/// OCTET STRING.
pub(super) fn octet_string(bytes: &[u8]) -> Vec<u8> {
    tlv(tag::OCTET_STRING, bytes)
}

/// UTF8String.
pub(super) fn utf8_string(s: &str) -> Vec<u8> {
    tlv(tag::UTF8_STRING, s.as_bytes())
}

/// IA5String: seven-bit ASCII only (X.680 §41.4 Table 8).
pub(super) fn ia5_string(s: &str) -> Result<Vec<u8>, Error> {
    if !s.is_ascii() {
        return Err(Error::Sim(format!("{s:?} is not an IA5String")));
    }
    Ok(tlv(tag::IA5_STRING, s.as_bytes()))
}

/// PrintableString: letters, digits, space and `'()+,-./:=?` (X.680 §41.4
/// Table 10).
pub(super) fn printable_string(s: &str) -> Result<Vec<u8>, Error> {
    let printable = |c: char| c.is_ascii_alphanumeric() || " '()+,-./:=?".contains(c);
    if !s.chars().all(printable) {
        return Err(Error::Sim(format!("{s:?} is not a PrintableString")));
    }
    Ok(tlv(tag::PRINTABLE_STRING, s.as_bytes()))
}

/// NULL.
pub(super) fn null() -> Vec<u8> {
    tlv(tag::NULL, &[])
}

/// BOOLEAN; DER encodes TRUE as 0xFF (X.690 §11.1).
pub(super) fn boolean(value: bool) -> Vec<u8> {
    tlv(tag::BOOLEAN, &[if value { 0xFF } else { 0x00 }])
}

/// A constructed context-specific tag `[number]` around `content`: EXPLICIT
/// tagging, or IMPLICIT tagging of a constructed type.
pub(super) fn explicit(number: u8, content: &[u8]) -> Result<Vec<u8>, Error> {
    Ok(tlv(context_identifier(number)? | tag::CONSTRUCTED, content))
}

/// A primitive context-specific tag `[number]`: IMPLICIT tagging of a
/// primitive type, such as a GeneralName's uniformResourceIdentifier `[6]`.
// Only the CA certificates' profile uses it, and that is built by tests.
#[cfg_attr(not(test), allow(dead_code))]
pub(super) fn implicit_primitive(number: u8, content: &[u8]) -> Result<Vec<u8>, Error> {
    Ok(tlv(context_identifier(number)?, content))
}

fn context_identifier(number: u8) -> Result<u8, Error> {
    if number > tag::MAX_LOW_NUMBER {
        return Err(Error::Sim(format!(
            "context tag [{number}] needs the high-tag-number form"
        )));
    }
    Ok(tag::CONTEXT | number)
}

/// First second that RFC 5280 §4.1.2.5 wants as GeneralizedTime:
/// 2050-01-01T00:00:00Z.
const GENERALIZED_FROM: i64 = 2_524_608_000;
/// First second that UTCTime can hold: 1950-01-01T00:00:00Z (two-digit years
/// 50..99 mean 19xx, RFC 5280 §4.1.2.5.1).
const UTC_FROM: i64 = -631_152_000;

/// An X.509 `Time`: UTCTime for 1950 through 2049, GeneralizedTime
/// otherwise, both in UTC with seconds and no fraction (RFC 5280 §4.1.2.5).
pub(super) fn time(unix: i64) -> Result<Vec<u8>, Error> {
    if (UTC_FROM..GENERALIZED_FROM).contains(&unix) {
        utc_time(unix)
    } else {
        generalized_time(unix)
    }
}

/// UTCTime `YYMMDDHHMMSSZ` (RFC 5280 §4.1.2.5.1).
pub(super) fn utc_time(unix: i64) -> Result<Vec<u8>, Error> {
    if !(UTC_FROM..GENERALIZED_FROM).contains(&unix) {
        return Err(Error::Sim(format!(
            "time {unix} is outside UTCTime's 1950..2049"
        )));
    }
    let t = Civil::from_unix(unix)?;
    let text = format!(
        "{:02}{:02}{:02}{:02}{:02}{:02}Z",
        t.year % 100,
        t.month,
        t.day,
        t.hour,
        t.minute,
        t.second
    );
    Ok(tlv(tag::UTC_TIME, text.as_bytes()))
}

/// GeneralizedTime `YYYYMMDDHHMMSSZ` (RFC 5280 §4.1.2.5.2).
pub(super) fn generalized_time(unix: i64) -> Result<Vec<u8>, Error> {
    let t = Civil::from_unix(unix)?;
    let text = format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}Z",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    );
    Ok(tlv(tag::GENERALIZED_TIME, text.as_bytes()))
}

/// A UTC calendar date and time of day.
struct Civil {
    year: i64,
    month: i64,
    day: i64,
    hour: i64,
    minute: i64,
    second: i64,
}

/// 0000-01-01T00:00:00Z, the earliest four-digit year.
const YEAR_0_FROM: i64 = -62_167_219_200;
/// 9999-12-31T23:59:59Z, the latest four-digit year.
const YEAR_9999_UNTIL: i64 = 253_402_300_799;

impl Civil {
    /// Howard Hinnant's `civil_from_days` (proleptic Gregorian calendar,
    /// <https://howardhinnant.github.io/date_algorithms.html#civil_from_days>).
    /// The range check first keeps every step far from overflow.
    #[allow(clippy::arithmetic_side_effects)] // bounded by the range check
    fn from_unix(unix: i64) -> Result<Self, Error> {
        if !(YEAR_0_FROM..=YEAR_9999_UNTIL).contains(&unix) {
            return Err(Error::Sim(format!(
                "time {unix} is outside years 0000..9999"
            )));
        }
        let days = unix.div_euclid(86_400);
        let secs = unix.rem_euclid(86_400);
        // Shift the epoch to 0000-03-01 so that leap days end each 400-year
        // era (146097 days) and each year.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        Ok(Civil {
            year,
            month,
            day,
            hour: secs / 3600,
            minute: secs % 3600 / 60,
            second: secs % 60,
        })
    }
}

#[cfg(test)]
mod tests {
    // A panic is how a test reports failure.
    #![allow(clippy::indexing_slicing, clippy::unwrap_used)]
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        ::hex::encode(bytes)
    }

    #[test]
    fn lengths_short_and_long_form() {
        let cases: [(usize, &str); 5] = [
            (0, "0400"),
            (0x7F, "047f"),
            (0x80, "048180"),
            (0xFF, "0481ff"),
            (0x100, "04820100"),
        ];
        for (len, header) in cases {
            let out = octet_string(&vec![0; len]);
            assert_eq!(hex(&out[..header.len() / 2]), header, "len {len}");
            assert_eq!(out.len(), header.len() / 2 + len);
        }
    }

    #[test]
    fn integers_are_minimal_and_positive() {
        let cases: [(&[u8], &str); 6] = [
            (&[], "020100"),
            (&[0, 0], "020100"),
            (&[0x7F], "02017f"),
            (&[0x80], "02020080"),
            (&[0x00, 0xDB], "020200db"),
            (&[0x01, 0x00, 0x01], "0203010001"),
        ];
        for (be, want) in cases {
            assert_eq!(hex(&integer(be)), want, "{be:02x?}");
        }
        assert_eq!(hex(&uint(0x010101)), "0203010101");
        assert_eq!(hex(&uint(0)), "020100");
    }

    #[test]
    fn object_identifiers() {
        let cases: [(&[u64], &str); 4] = [
            // id-sha384, RFC 5754 §2.
            (&[2, 16, 840, 1, 101, 3, 4, 2, 2], "0609608648016503040202"),
            // id-RSASSA-PSS, RFC 4055 §3.1.
            (&[1, 2, 840, 113549, 1, 1, 10], "06092a864886f70d01010a"),
            // AMD's VCEK microcode SPL, as in a real VCEK.
            (
                &[1, 3, 6, 1, 4, 1, 3704, 1, 3, 8],
                "060a2b060104019c78010308",
            ),
            (&[2, 999, 0], "0603883700" /* 2*40+999 = 1079 */),
        ];
        for (arcs, want) in cases {
            assert_eq!(hex(&oid(arcs).unwrap()), want, "{arcs:?}");
        }
        for bad in [&[1][..], &[3, 1], &[1, 40], &[]] {
            assert!(matches!(oid(bad), Err(Error::Sim(_))), "{bad:?}");
        }
    }

    #[test]
    fn times_switch_to_generalized_in_2050() {
        let cases: [(i64, &str); 6] = [
            (0, "700101000000Z"),
            // AMD's ARK-Milan notBefore.
            (1_603_387_385, "201022172305Z"),
            (GENERALIZED_FROM - 1, "491231235959Z"),
            (GENERALIZED_FROM, "20500101000000Z"),
            (UTC_FROM, "500101000000Z"),
            (UTC_FROM - 1, "19491231235959Z"),
        ];
        for (unix, want) in cases {
            let encoded = time(unix).unwrap();
            assert_eq!(&encoded[2..], want.as_bytes(), "{unix}");
            let want_tag = if want.len() == 13 {
                tag::UTC_TIME
            } else {
                tag::GENERALIZED_TIME
            };
            assert_eq!(encoded.first(), Some(&want_tag));
        }
        // Leap day.
        assert_eq!(
            &generalized_time(951_782_400).unwrap()[2..],
            b"20000229000000Z"
        );
        assert!(generalized_time(YEAR_9999_UNTIL + 1).is_err());
        assert!(generalized_time(YEAR_0_FROM - 1).is_err());
        assert!(utc_time(GENERALIZED_FROM).is_err());
    }

    #[test]
    fn strings_and_small_types() {
        assert_eq!(hex(&null()), "0500");
        assert_eq!(hex(&boolean(true)), "0101ff");
        assert_eq!(hex(&boolean(false)), "010100");
        assert_eq!(hex(&printable_string("US").unwrap()), "13025553");
        assert!(printable_string("a@b").is_err());
        assert_eq!(hex(&ia5_string("Turin").unwrap()), "1605547572696e");
        assert!(ia5_string("é").is_err());
        assert_eq!(hex(&utf8_string("CA")), "0c024341");
        assert_eq!(hex(&bit_string_with_unused(1, &[0x04])), "03020104");
        assert_eq!(hex(&bit_string(&[0xAB])), "030200ab");
        assert_eq!(hex(&explicit(3, &[]).unwrap()), "a300");
        assert_eq!(hex(&implicit_primitive(6, b"x").unwrap()), "860178");
        assert!(explicit(31, &[]).is_err());
        assert_eq!(hex(&sequence([uint(1), null()])), "30050201010500");
        assert_eq!(hex(&set([null()])), "31020500");
    }
}
