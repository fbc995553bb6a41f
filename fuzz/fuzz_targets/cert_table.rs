//! `CertTable::from_bytes` on arbitrary bytes (GHCB spec section 4.1.8.1):
//! parsing never panics, and a table that parses encodes with `to_bytes` and
//! parses back to an equal table.

#![no_main]

use libfuzzer_sys::fuzz_target;
use provenix_firmware::snp::{CertKind, CertTable, MAX_ENTRIES};

fuzz_target!(|data: &[u8]| {
    let Ok(table) = CertTable::from_bytes(data) else {
        return;
    };
    assert!(table.entries().len() <= MAX_ENTRIES);

    for entry in table.entries() {
        assert!(
            !entry.data.is_empty(),
            "empty {} entry accepted",
            entry.kind
        );
        // A GUID maps to a kind and back, and a kind appears once.
        assert_eq!(CertKind::from_guid(entry.kind.guid()), entry.kind);
        assert_eq!(
            table.get(entry.kind),
            Some(entry.data.as_slice()),
            "{} appears twice",
            entry.kind
        );
        let _ = entry.kind.to_string();
    }

    let encoded = match table.to_bytes() {
        Ok(encoded) => encoded,
        Err(e) => panic!("a parsed table does not encode: {e}"),
    };
    let reparsed = match CertTable::from_bytes(&encoded) {
        Ok(reparsed) => reparsed,
        Err(e) => panic!("an encoded table does not parse: {e}"),
    };
    assert_eq!(reparsed, table, "round trip changed the table");
    // The encoding is canonical: encoding again gives the same bytes.
    assert_eq!(reparsed.to_bytes().ok(), Some(encoded));
});
