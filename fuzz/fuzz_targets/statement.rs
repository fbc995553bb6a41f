//! Statements on arbitrary bytes: `Statement::from_cbor` and
//! `Statement::verify` never panic, and the encoding is deterministic: a
//! statement that decodes encodes back to exactly the bytes it came from.
//!
//! The same input goes to both: as a bare statement (deterministic CBOR)
//! and as a signed one (COSE_Sign1). `examples/seeds.rs` seeds both kinds.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use provenix_verifier::{MAX_STATEMENT_SIZE, Statement};
use ring::signature::{Ed25519KeyPair, KeyPair as _};

/// A worker key to re-sign decoded statements with (seed `[7; 32]`).
fn worker() -> &'static Ed25519KeyPair {
    static WORKER: OnceLock<Ed25519KeyPair> = OnceLock::new();
    WORKER.get_or_init(|| match Ed25519KeyPair::from_seed_unchecked(&[7; 32]) {
        Ok(pair) => pair,
        Err(e) => panic!("Ed25519 seed: {e}"),
    })
}

fuzz_target!(|data: &[u8]| {
    match Statement::from_cbor(data) {
        Ok(statement) => {
            assert!(data.len() <= MAX_STATEMENT_SIZE);
            // Deterministic: one statement, one encoding.
            assert_eq!(
                statement.to_cbor(),
                data,
                "{statement:?} encodes differently"
            );
            // The references come sorted and unique, as encoding makes them.
            assert!(statement.references.windows(2).all(|w| w[0] < w[1]));

            // Signed by its worker key, it verifies as itself. Its Nix
            // signature, by another key, is made again with ours, when the
            // statement has a Nix fingerprint at all.
            let mut ours = statement.clone();
            ours.worker_key
                .copy_from_slice(worker().public_key().as_ref());
            ours.nix_signature = None;
            if statement.nix_signature.is_some() {
                // Fails, leaving none, when there is no Nix fingerprint.
                let _ = ours.add_nix_signature(worker());
            }
            let signed = match ours.sign(worker()) {
                Ok(signed) => signed,
                Err(e) => panic!("{ours:?} does not sign: {e}"),
            };
            match Statement::verify(&signed) {
                Ok(back) => assert_eq!(back, ours),
                Err(e) => panic!("{ours:?}, just signed, does not verify: {e}"),
            }
            // A statement naming another worker key cannot be signed with
            // this one.
            if statement.worker_key != ours.worker_key {
                assert!(statement.sign(worker()).is_err());
            }
        }
        Err(e) => {
            let _ = (e.to_string(), format!("{e:?}"));
        }
    }

    match Statement::verify(data) {
        Ok(statement) => {
            // What verified decodes from its own encoding to itself.
            let cbor = statement.to_cbor();
            assert_eq!(Statement::from_cbor(&cbor).ok().as_ref(), Some(&statement));
        }
        Err(e) => {
            let _ = (e.to_string(), format!("{e:?}"));
        }
    }
});
