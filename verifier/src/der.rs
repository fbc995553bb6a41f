//! Canonical DER structure (X.690 section 10), checked before a certificate
//! is parsed.
//!
//! A certificate's signature covers its TBSCertificate only. The outer
//! SEQUENCE, the outer signatureAlgorithm and the signature BIT STRING can be
//! re-encoded (a long-form length where a short one fits, a length with a
//! leading zero byte) while the signature still verifies, so two byte
//! strings can be "the same certificate". Nothing the verifier counts or
//! remembers may depend on such bytes (STYLE.md, "Identity and
//! reproducibility"), and a certificate whose encoding is not the one DER
//! allows is refused outright: every TLV, at every depth, must have a
//! definite, minimally encoded length and a low-number tag, and the values
//! must tile their parent exactly.

#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions
)]

/// Deepest nesting walked. An X.509 certificate nests about ten levels
/// (Certificate > TBS > extensions > [3] > Extension > OCTET STRING is
/// primitive); 32 leaves room and bounds the recursion.
const MAX_DEPTH: usize = 32;

/// Check that `der` is exactly one TLV in canonical DER structure. The error
/// names the offset and what is wrong there.
pub(crate) fn check_canonical(der: &[u8]) -> Result<(), String> {
    let end = element(der, 0, 0)?;
    match der.len().checked_sub(end) {
        Some(0) => Ok(()),
        Some(n) => Err(format!("{n} trailing bytes after the DER element")),
        None => Err("DER element runs past the input".into()),
    }
}

/// The TLVs directly inside the constructed element `der` (one canonical
/// TLV, as [`check_canonical`] accepts): each child's tag and its whole
/// encoding.
fn children(der: &[u8]) -> Result<Vec<(u8, &[u8])>, String> {
    let end = element(der, 0, 0)?;
    let header = header_len(der)?;
    let mut out = Vec::new();
    let mut at = header;
    while at < end {
        let next = element(der, at, 1)?;
        let tag = *der.get(at).ok_or("DER truncated")?;
        out.push((tag, der.get(at..next).ok_or("DER truncated")?));
        at = next;
    }
    Ok(out)
}

/// The length of the tag and length octets at the start of `der`.
fn header_len(der: &[u8]) -> Result<usize, String> {
    let first = *der.get(1).ok_or("DER truncated")?;
    Ok(if first < 0x80 {
        2
    } else {
        2usize
            .checked_add(usize::from(first & 0x7f))
            .ok_or("DER offset overflow")?
    })
}

/// Check the parts of a certificate (RFC 5280 4.1) that its signature does
/// not cover: `Certificate ::= SEQUENCE { tbsCertificate,
/// signatureAlgorithm, signatureValue BIT STRING }`, with the outer
/// signatureAlgorithm byte for byte the copy inside the signed TBS
/// (4.1.1.2: "MUST contain the same algorithm identifier"), and the BIT
/// STRING with no unused bits. With [`check_canonical`], nothing outside
/// the TBS can change but the signature value, which the signature check
/// fixes.
pub(crate) fn check_certificate_envelope(der: &[u8]) -> Result<(), String> {
    check_canonical(der)?;
    if der.first() != Some(&0x30) {
        return Err("a certificate is not a SEQUENCE".into());
    }
    let parts = children(der)?;
    let [(0x30, tbs), (0x30, outer_alg), (0x03, signature)] = parts.as_slice() else {
        return Err(
            "a certificate is not SEQUENCE { TBS SEQUENCE, AlgorithmIdentifier SEQUENCE, BIT STRING }"
                .into(),
        );
    };
    // TBSCertificate: [0] version (optional), serialNumber, signature.
    let fields = children(tbs)?;
    let inner_alg = fields
        .iter()
        .skip_while(|(tag, _)| *tag == 0xa0)
        .nth(1)
        .map(|(_, bytes)| *bytes)
        .ok_or("the TBS certificate has no signature algorithm")?;
    if inner_alg != *outer_alg {
        return Err(
            "the outer signature algorithm is not byte for byte the one in the signed TBS (RFC 5280 4.1.1.2)"
                .into(),
        );
    }
    let header = header_len(signature)?;
    if signature.get(header) != Some(&0) {
        return Err("the signature BIT STRING has unused bits".into());
    }
    Ok(())
}

/// Walk the TLV at `at`, returning the offset just past it.
fn element(der: &[u8], at: usize, depth: usize) -> Result<usize, String> {
    if depth > MAX_DEPTH {
        return Err(format!(
            "DER nested deeper than {MAX_DEPTH} levels at offset {at}"
        ));
    }
    let byte = |i: usize| {
        der.get(i)
            .copied()
            .ok_or_else(|| format!("DER truncated at offset {i}"))
    };
    let tag = byte(at)?;
    // X.690 8.1.2.4: tag number 31 announces a multi-byte tag number, which
    // no certificate field uses.
    if tag & 0x1f == 0x1f {
        return Err(format!("DER high tag number form at offset {at}"));
    }
    let constructed = tag & 0x20 != 0;
    let len_at = at.checked_add(1).ok_or("DER offset overflow")?;
    let first = byte(len_at)?;
    let (len, header_end) = if first < 0x80 {
        (usize::from(first), len_at.checked_add(1))
    } else {
        // X.690 10.1: definite form, the fewest octets. 0x80 (indefinite)
        // and 0xff (reserved) are refused; more than 4 octets cannot fit a
        // certificate.
        let n = usize::from(first & 0x7f);
        if n == 0 {
            return Err(format!("DER indefinite length at offset {len_at}"));
        }
        if n > 4 {
            return Err(format!(
                "DER length of {n} octets at offset {len_at} (at most 4)"
            ));
        }
        let mut len = 0usize;
        for i in 1..=n {
            let b = byte(len_at.checked_add(i).ok_or("DER offset overflow")?)?;
            if i == 1 && b == 0 {
                return Err(format!(
                    "DER length with a leading zero octet at offset {len_at} (not minimal)"
                ));
            }
            len = len
                .checked_mul(256)
                .and_then(|l| l.checked_add(usize::from(b)))
                .ok_or("DER length overflow")?;
        }
        if len < 0x80 {
            return Err(format!(
                "DER long-form length {len} at offset {len_at} (the short form is required)"
            ));
        }
        (len, len_at.checked_add(1).and_then(|x| x.checked_add(n)))
    };
    let start = header_end.ok_or("DER offset overflow")?;
    let end = start
        .checked_add(len)
        .filter(|&e| e <= der.len())
        .ok_or_else(|| format!("DER element at offset {at} runs past the input"))?;
    if constructed {
        let mut child = start;
        while child < end {
            child = element(der, child, depth.checked_add(1).ok_or("depth overflow")?)?;
        }
        if child != end {
            return Err(format!(
                "DER element at offset {at}: its contents overrun its length"
            ));
        }
    }
    Ok(end)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    #[test]
    fn canonical_and_not() {
        let cases: &[(&[u8], Option<&str>)] = &[
            (&[0x30, 0x03, 0x02, 0x01, 0x05], None),
            (&[0x30, 0x00], None),
            // Long form where the short form fits.
            (&[0x30, 0x81, 0x03, 0x02, 0x01, 0x05], Some("short form")),
            // A leading zero length octet.
            (
                &[0x30, 0x82, 0x00, 0x03, 0x02, 0x01, 0x05],
                Some("leading zero"),
            ),
            // Indefinite length.
            (
                &[0x30, 0x80, 0x02, 0x01, 0x05, 0x00, 0x00],
                Some("indefinite"),
            ),
            // Trailing bytes.
            (&[0x30, 0x03, 0x02, 0x01, 0x05, 0x00], Some("trailing")),
            // A child that overruns its parent.
            (&[0x30, 0x02, 0x02, 0x01, 0x05], Some("overrun")),
            // High tag number form.
            (&[0x1f, 0x01, 0x00], Some("high tag")),
            // Truncated.
            (&[0x30], Some("truncated")),
        ];
        for (der, want) in cases {
            match (check_canonical(der), want) {
                (Ok(()), None) => {}
                (Err(e), Some(w)) => assert!(e.contains(w), "{der:02x?}: {e}"),
                (got, _) => panic!("{der:02x?}: {got:?}, expected {want:?}"),
            }
        }
    }

    #[test]
    fn deep_nesting_is_bounded() {
        let mut der = Vec::new();
        for _ in 0..100 {
            der.extend_from_slice(&[0x30, 0x80]);
        }
        assert!(check_canonical(&der).is_err());
        let mut der = vec![0x05, 0x00];
        for _ in 0..40 {
            let mut outer = vec![0x30, u8::try_from(der.len()).unwrap_or(0x7f)];
            outer.extend_from_slice(&der);
            der = outer;
        }
        let e = check_canonical(&der).unwrap_err();
        assert!(e.contains("deeper"), "{e}");
    }
}
