//! Checkpoints (c2sp.org/tlog-checkpoint in a c2sp.org/signed-note):
//! `verify_checkpoint` and `VerifierKey::parse` never panic, and a
//! checkpoint signed by the key verifies, gives back what was signed, and
//! stops verifying once any byte of it changes.
//!
//! The first byte picks what the rest is, modulo 3:
//!
//! ```text
//! 0  a note, verified with KEY for ORIGIN
//! 1  a verifier key, `<name>+<key ID>+<base64 key>`
//! 2  a checkpoint to sign and verify:
//!      0       u8    flags: bit 0 adds a cosignature by WITNESS,
//!                    bit 1 puts it before KEY's signature
//!      1..9    u64   tree size, little-endian
//!      9..41         root hash
//!      41..43  u16   where to change a byte of the signed note, modulo its
//!                    length, little-endian
//!      43      u8    what to XOR it with (0: change nothing)
//!      44..          origin (UTF-8)
//! ```

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use provenix_verifier::{Checkpoint, Hash, VerifierKey, signature_line, verify_checkpoint};
use ring::signature::{Ed25519KeyPair, KeyPair as _};

/// The log whose checkpoints mode 0 verifies (`seeds` signs some for it).
const ORIGIN: &str = "provenix.example/fuzz";

/// A signer: its key pair and verifier key.
struct Signer {
    pair: Ed25519KeyPair,
    key: VerifierKey,
}

impl Signer {
    fn new(name: &str, seed: u8) -> Self {
        let pair = match Ed25519KeyPair::from_seed_unchecked(&[seed; 32]) {
            Ok(pair) => pair,
            Err(e) => panic!("Ed25519 seed: {e}"),
        };
        let key = match VerifierKey::ed25519(name, pair.public_key().as_ref()) {
            Ok(key) => key,
            Err(e) => panic!("verifier key: {e}"),
        };
        Signer { pair, key }
    }

    /// The signature line over `text`.
    fn sign(&self, text: &str) -> String {
        signature_line(&self.key, self.pair.sign(text.as_bytes()).as_ref())
    }
}

/// The log's key (seed `[7; 32]`, as `examples/seeds.rs` has it).
fn log() -> &'static Signer {
    static LOG: OnceLock<Signer> = OnceLock::new();
    LOG.get_or_init(|| Signer::new("provenix-fuzz", 7))
}

/// A witness that cosigns (seed `[8; 32]`).
fn witness() -> &'static Signer {
    static WITNESS: OnceLock<Signer> = OnceLock::new();
    WITNESS.get_or_init(|| Signer::new("witness.example", 8))
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => note(rest),
        1 => verifier_key(rest),
        _ => round_trip(rest),
    }
});

/// An arbitrary note. Whatever verifies is for ORIGIN, and its text is the
/// note up to the blank line, encoded canonically: what was signed is the
/// only encoding of what was read.
fn note(note: &[u8]) {
    let key = &log().key;
    let verified = match verify_checkpoint(note, key, ORIGIN) {
        Ok(verified) => verified,
        Err(e) => {
            let _ = (e.to_string(), format!("{e:?}"));
            return;
        }
    };
    assert_eq!(verified.origin(), ORIGIN);
    let mut signed = verified.checkpoint().text();
    signed.push('\n');
    assert!(
        note.starts_with(signed.as_bytes()),
        "{verified:?} is not the text of the note it came from"
    );
    // The same note for another log is refused.
    assert!(verify_checkpoint(note, key, "provenix.example/other").is_err());
}

/// An arbitrary verifier key. One that parses prints back as given.
fn verifier_key(text: &[u8]) {
    let Ok(text) = core::str::from_utf8(text) else {
        return;
    };
    let key = match VerifierKey::parse(text) {
        Ok(key) => key,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    assert_eq!(key.to_string(), text, "{key:?} prints differently");
    let rebuilt = VerifierKey::ed25519(key.name(), key.public_key());
    assert_eq!(rebuilt.as_ref().ok(), Some(&key));
}

struct RoundTrip<'a> {
    cosign: bool,
    witness_first: bool,
    size: u64,
    root: Hash,
    at: u16,
    xor: u8,
    origin: &'a str,
}

fn split(data: &[u8]) -> Option<RoundTrip<'_>> {
    let (&flags, rest) = data.split_first()?;
    let (size, rest) = rest.split_first_chunk::<8>()?;
    let (root, rest) = rest.split_first_chunk::<32>()?;
    let (at, rest) = rest.split_first_chunk::<2>()?;
    let (&xor, origin) = rest.split_first()?;
    Some(RoundTrip {
        cosign: flags & 1 == 1,
        witness_first: flags & 2 == 2,
        size: u64::from_le_bytes(*size),
        root: *root,
        at: u16::from_le_bytes(*at),
        xor,
        origin: core::str::from_utf8(origin).ok()?,
    })
}

/// Sign a checkpoint of fuzzer-chosen origin, size and root; it verifies,
/// reads back as signed, and one changed byte makes it fail.
fn round_trip(data: &[u8]) {
    let Some(input) = split(data) else {
        return;
    };
    let checkpoint = match Checkpoint::new(input.origin, input.size, input.root) {
        Ok(checkpoint) => checkpoint,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let text = checkpoint.text();
    let ours = log().sign(&text);
    let theirs = input.cosign.then(|| witness().sign(&text));
    let mut note = text.clone() + "\n";
    // Where the witness's line is, newline included.
    let mut theirs_at = None;
    if input.witness_first {
        if let Some(line) = &theirs {
            theirs_at = Some(note.len()..note.len() + line.len());
            note.push_str(line);
        }
        note.push_str(&ours);
    } else {
        note.push_str(&ours);
        if let Some(line) = &theirs {
            theirs_at = Some(note.len()..note.len() + line.len());
            note.push_str(line);
        }
    }

    let verified = match verify_checkpoint(note.as_bytes(), &log().key, input.origin) {
        Ok(verified) => verified,
        Err(e) => panic!("a checkpoint just signed is refused: {e}\n{note}"),
    };
    assert_eq!(verified.checkpoint(), &checkpoint);
    assert_eq!(verified.origin(), input.origin);
    assert_eq!(verified.size(), input.size);
    assert_eq!(verified.root(), &input.root);
    assert!(verified.checkpoint().extensions().is_empty());
    // The witness's key verifies it iff it cosigned.
    let by_witness = verify_checkpoint(note.as_bytes(), &witness().key, input.origin);
    assert_eq!(by_witness.is_ok(), input.cosign, "{by_witness:?}");

    if input.xor == 0 {
        return;
    }
    let mut changed = note.into_bytes();
    let at = usize::from(input.at) % changed.len();
    changed[at] ^= input.xor;
    // A change to the witness's line may leave the log's signature intact,
    // but not the witness's own.
    let signer = match &theirs_at {
        Some(line) if line.contains(&at) => witness(),
        _ => log(),
    };
    let got = verify_checkpoint(&changed, &signer.key, input.origin);
    assert!(
        got.is_err(),
        "byte {at} changed (^{:#04x}) and {} still verifies: {got:?}",
        input.xor,
        signer.key
    );
}
