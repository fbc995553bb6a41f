//! Checkpoints: a log's signed tree head, as a C2SP signed note.
//!
//! A checkpoint (c2sp.org/tlog-checkpoint) is the note text
//!
//! ```text
//! <origin>
//! <tree size, decimal>
//! <root hash, base64>
//! [extension lines]
//! ```
//!
//! wrapped in a signed note (c2sp.org/signed-note): a blank line, then one
//! or more lines `— <key name> <base64(4-byte key ID || signature)>`. The
//! worker signs its log's checkpoints with its identity key K (DESIGN.md,
//! "The binding", step 5); the verifier checks the signature of the one key
//! it was asked about, ignores the others (witness cosignatures, rotated
//! keys), as the spec requires, and only then reads the text.
//!
//! Parsing is strict: a note is refused unless it is exactly what a
//! well-behaved signer writes (canonical decimal, canonical base64, no
//! trailing whitespace, exactly one blank line), so one checkpoint has one
//! encoding and the bytes a bundle carries are the bytes that were signed.

#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions
)]

use core::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::digest;
use ring::signature::{self, UnparsedPublicKey};

use crate::error::Error;
use crate::merkle::Hash;

/// Most signature lines read. c2sp.org/signed-note: verifiers "MUST accept
/// at least up to 16 signatures"; more is a note to refuse, not to scan.
pub const MAX_SIGNATURES: usize = 16;

/// Most extension lines after the root hash. c2sp.org/tlog-checkpoint does
/// not recommend them at all (monitors cannot audit them); Provenix writes
/// one, the worker's clock (`provenix-time`, see `witness`), and allows a
/// few so checkpoints of other logs still parse.
pub const MAX_EXTENSION_LINES: usize = 16;

/// Longest line, in bytes. The longest signature line the signed-note
/// spec foresees is a post-quantum one ("up to nearly 5kB": ML-DSA-87's
/// 4627 bytes plus the key ID are 6176 base64 characters) plus a key name.
pub const MAX_LINE_LEN: usize = 8192;

/// Lines of note text at most: origin, size, root, extensions.
const MAX_TEXT_LINES: usize = 19;
const _: () = assert!(MAX_TEXT_LINES == 3 + MAX_EXTENSION_LINES);

/// Longest note accepted: every line at its longest, with its newline.
pub const MAX_NOTE_LEN: usize = (MAX_TEXT_LINES + 1 + MAX_SIGNATURES) * (MAX_LINE_LEN + 1);

/// What starts a signature line: em dash (U+2014), space.
const SIGNATURE_PREFIX: &str = "\u{2014} ";

/// Signature type of Ed25519 in key IDs and verifier keys
/// (c2sp.org/signed-note, "Signature types").
const ED25519_TYPE: u8 = 0x01;

/// Key ID length (c2sp.org/signed-note, "Format": "a 4-byte key ID").
const KEY_ID_LEN: usize = 4;

pub use crate::error::CheckpointFailure;

impl fmt::Display for CheckpointFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckpointFailure::TooLong { len } => {
                write!(f, "note is {len} bytes, more than {MAX_NOTE_LEN}")
            }
            CheckpointFailure::NotUtf8 => f.write_str("not UTF-8"),
            CheckpointFailure::ControlCharacter => f.write_str("control character"),
            CheckpointFailure::NoFinalNewline => f.write_str("no final newline"),
            CheckpointFailure::LineTooLong { len } => {
                write!(f, "line is {len} bytes, more than {MAX_LINE_LEN}")
            }
            CheckpointFailure::TrailingWhitespace => f.write_str("trailing whitespace"),
            CheckpointFailure::EmptyLine => f.write_str("unexpected empty line"),
            CheckpointFailure::MissingLine => {
                f.write_str("missing line: origin, tree size and root hash are required")
            }
            CheckpointFailure::TooManyExtensionLines => {
                write!(f, "more than {MAX_EXTENSION_LINES} extension lines")
            }
            CheckpointFailure::TreeSize => {
                f.write_str("tree size is not a canonical decimal 64-bit number")
            }
            CheckpointFailure::RootHash => {
                f.write_str("root hash is not canonical base64 of 32 bytes")
            }
            CheckpointFailure::NoSignatures => f.write_str("no signature lines"),
            CheckpointFailure::TooManySignatures => {
                write!(f, "more than {MAX_SIGNATURES} signatures")
            }
            CheckpointFailure::SignatureLine => {
                f.write_str("signature line is not \"\u{2014} <name> <base64>\"")
            }
            CheckpointFailure::KeyName => {
                f.write_str("key name is empty or holds a space or a plus")
            }
            CheckpointFailure::SignatureEncoding => {
                f.write_str("signature is not canonical base64 of a key ID and a signature")
            }
        }
    }
}

fn failure(line: usize, reason: CheckpointFailure) -> Error {
    Error::Checkpoint { line, reason }
}

/// The note text of a checkpoint: origin, tree size, root hash, and any
/// extension lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    origin: String,
    size: u64,
    root: Hash,
    extensions: Vec<String>,
}

impl Checkpoint {
    /// A checkpoint of the tree of `size` leaves with root `root`, for the
    /// log `origin`. The origin must be one non-empty line with no control
    /// characters and no trailing whitespace.
    pub fn new(origin: &str, size: u64, root: Hash) -> Result<Self, Error> {
        if origin.contains('\n') {
            return Err(failure(1, CheckpointFailure::ControlCharacter));
        }
        if origin.is_empty() {
            return Err(failure(1, CheckpointFailure::EmptyLine));
        }
        check_line(1, origin)?;
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
            extensions: Vec::new(),
        })
    }

    /// The log's identity, the first line.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The root hash of the tree of [`Self::size`] leaves.
    pub fn root(&self) -> &Hash {
        &self.root
    }

    /// Extension lines, opaque.
    pub fn extensions(&self) -> &[String] {
        &self.extensions
    }

    /// The note text, with its final newline: the bytes a log signs.
    pub fn text(&self) -> String {
        let mut text = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            STANDARD.encode(self.root)
        );
        for e in &self.extensions {
            text.push_str(e);
            text.push('\n');
        }
        text
    }
}

/// A checkpoint whose signature by a trusted key verified. Only
/// [`verify_checkpoint`] makes one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedCheckpoint {
    checkpoint: Checkpoint,
}

impl VerifiedCheckpoint {
    /// The checkpoint.
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    /// The log's identity.
    pub fn origin(&self) -> &str {
        self.checkpoint.origin()
    }

    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.checkpoint.size()
    }

    /// The root hash.
    pub fn root(&self) -> &Hash {
        self.checkpoint.root()
    }
}

/// A note verifier key: name, key ID and Ed25519 public key, written
/// `<name>+<8 hex digits of key ID>+<base64(0x01 || public key)>` as Go's
/// sumdb/note and the C2SP tools do.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifierKey {
    name: String,
    id: [u8; KEY_ID_LEN],
    public_key: [u8; 32],
}

impl fmt::Debug for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifierKey({self})")
    }
}

impl fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut typed = [0u8; 33];
        if let Some((t, key)) = typed.split_first_mut() {
            *t = ED25519_TYPE;
            key.copy_from_slice(&self.public_key);
        }
        write!(
            f,
            "{}+{}+{}",
            self.name,
            hex::encode(self.id),
            STANDARD.encode(typed)
        )
    }
}

impl VerifierKey {
    /// The verifier key of the Ed25519 public key `public_key` (32 bytes)
    /// under the key name `name`.
    pub fn ed25519(name: &str, public_key: &[u8]) -> Result<Self, Error> {
        if !is_key_name(name) {
            return Err(Error::VerifierKey {
                reason: "key name is empty, too long, or holds a space, a plus or a control character",
            });
        }
        let public_key: [u8; 32] = public_key.try_into().map_err(|_| Error::VerifierKey {
            reason: "an Ed25519 public key is 32 bytes",
        })?;
        Ok(VerifierKey {
            name: name.to_owned(),
            id: key_id(name, ED25519_TYPE, &public_key),
            public_key,
        })
    }

    /// Parse `<name>+<hex key ID>+<base64(0x01 || public key)>`. The key ID
    /// must be the one the name and key give.
    pub fn parse(vkey: &str) -> Result<Self, Error> {
        let err = |reason| Error::VerifierKey { reason };
        // Key names hold no '+', but base64 may: split at the first two.
        let mut parts = vkey.splitn(3, '+');
        let (Some(name), Some(id_hex), Some(key_b64)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(err("not <name>+<key ID>+<key>"));
        };
        if id_hex.len() != 2usize.saturating_mul(KEY_ID_LEN)
            || !id_hex
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(err("key ID is not 8 lowercase hex digits"));
        }
        let mut id = [0u8; KEY_ID_LEN];
        hex::decode_to_slice(id_hex, &mut id).map_err(|_| err("key ID is not hex"))?;
        let typed = STANDARD
            .decode(key_b64)
            .map_err(|_| err("key is not canonical base64"))?;
        let Some((&kind, public_key)) = typed.split_first() else {
            return Err(err("key is empty"));
        };
        if kind != ED25519_TYPE {
            return Err(err("not an Ed25519 key (signature type 0x01)"));
        }
        let key = Self::ed25519(name, public_key)?;
        if key.id != id {
            return Err(err("key ID does not match the name and key"));
        }
        Ok(key)
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key ID: the first four bytes of
    /// `SHA-256(name || 0x0A || 0x01 || public key)`.
    pub fn key_id(&self) -> [u8; 4] {
        self.id
    }

    /// The Ed25519 public key.
    pub fn public_key(&self) -> &[u8; 32] {
        &self.public_key
    }

    /// `<name>+<hex key ID>`, how errors name the key.
    fn label(&self) -> String {
        format!("{}+{}", self.name, hex::encode(self.id))
    }
}

/// The signature line for `signature`, made by `key` over a note's text:
/// `— <name> <base64(key ID || signature)>`, with its newline. A signed
/// note is its text, a newline, then its signature lines.
pub fn signature_line(key: &VerifierKey, signature: &[u8]) -> String {
    let mut blob = Vec::with_capacity(KEY_ID_LEN.saturating_add(signature.len()));
    blob.extend_from_slice(&key.id);
    blob.extend_from_slice(signature);
    format!("{SIGNATURE_PREFIX}{} {}\n", key.name, STANDARD.encode(blob))
}

/// Verify the checkpoint `note` with `key`, and that it is for the log
/// `origin`.
///
/// Signatures by other keys (another name or key ID) are ignored, as
/// c2sp.org/signed-note requires; a signature by `key` that does not verify
/// refuses the whole note, as it recommends.
pub fn verify_checkpoint(
    note: &[u8],
    key: &VerifierKey,
    origin: &str,
) -> Result<VerifiedCheckpoint, Error> {
    let parsed = parse(note)?;
    let public_key = UnparsedPublicKey::new(&signature::ED25519, &key.public_key);
    let mut verified = false;
    for sig in &parsed.signatures {
        if sig.name != key.name || sig.key_id != key.id {
            continue;
        }
        public_key
            .verify(parsed.text.as_bytes(), &sig.signature)
            .map_err(|_| Error::CheckpointSignature { key: key.label() })?;
        verified = true;
    }
    if !verified {
        return Err(Error::CheckpointUnsigned { key: key.label() });
    }
    // Only now is the text worth reading (signed-note: "The text MUST be
    // ignored unless the note is signed by a trusted key").
    if parsed.checkpoint.origin != origin {
        return Err(Error::CheckpointOrigin {
            expected: origin.to_owned(),
            found: parsed.checkpoint.origin,
        });
    }
    Ok(VerifiedCheckpoint {
        checkpoint: parsed.checkpoint,
    })
}

/// `SHA-256(name || 0x0A || type || public key)[:4]` (c2sp.org/signed-note,
/// "Signatures").
fn key_id(name: &str, kind: u8, public_key: &[u8]) -> [u8; KEY_ID_LEN] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(name.as_bytes());
    ctx.update(b"\n");
    ctx.update(&[kind]);
    ctx.update(public_key);
    let d = ctx.finish();
    let mut id = [0u8; KEY_ID_LEN];
    if let Some(prefix) = d.as_ref().first_chunk::<KEY_ID_LEN>() {
        id = *prefix;
    }
    id
}

/// A key name: non-empty, no Unicode space, no plus (signed-note,
/// "Format"), and no control character, since it sits on a note line.
fn is_key_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_LINE_LEN
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c == '+' || c.is_control())
}

/// A signature line, parsed; not yet verified.
struct NoteSignature<'a> {
    name: &'a str,
    key_id: [u8; KEY_ID_LEN],
    signature: Vec<u8>,
}

/// A checkpoint note split into text, checkpoint and signatures.
struct Parsed<'a> {
    /// The signed bytes: the text with its final newline, without the
    /// blank line.
    text: &'a str,
    checkpoint: Checkpoint,
    signatures: Vec<NoteSignature<'a>>,
}

/// Line-level rules every line obeys: length, control characters,
/// trailing whitespace.
fn check_line(number: usize, line: &str) -> Result<(), Error> {
    if line.len() > MAX_LINE_LEN {
        return Err(failure(
            number,
            CheckpointFailure::LineTooLong { len: line.len() },
        ));
    }
    if line.chars().any(|c| c < ' ') {
        return Err(failure(number, CheckpointFailure::ControlCharacter));
    }
    if line.ends_with(char::is_whitespace) {
        return Err(failure(number, CheckpointFailure::TrailingWhitespace));
    }
    Ok(())
}

/// Split and check a checkpoint note; no signature is verified here.
fn parse(note: &[u8]) -> Result<Parsed<'_>, Error> {
    if note.len() > MAX_NOTE_LEN {
        return Err(failure(0, CheckpointFailure::TooLong { len: note.len() }));
    }
    let note = core::str::from_utf8(note).map_err(|e| {
        let line = note
            .get(..e.valid_up_to())
            .map_or(0, |ok| ok.iter().filter(|&&b| b == b'\n').count())
            .saturating_add(1);
        failure(line, CheckpointFailure::NotUtf8)
    })?;
    let lines: Vec<&str> = note.split_terminator('\n').collect();
    if !note.ends_with('\n') {
        return Err(failure(lines.len(), CheckpointFailure::NoFinalNewline));
    }
    for (number, line) in (1..).zip(&lines) {
        check_line(number, line)?;
    }

    // The text ends at the first empty line. Signed-note says the last,
    // but a checkpoint's text has no empty line, so in a valid checkpoint
    // they are one; taking the first lets every other empty line be named.
    let Some(blank) = lines.iter().position(|l| l.is_empty()) else {
        return Err(failure(
            lines.len().saturating_add(1),
            CheckpointFailure::NoSignatures,
        ));
    };
    let (text_lines, rest) = lines.split_at(blank);
    let signature_lines = rest.get(1..).unwrap_or_default();

    // Checkpoint text (tlog-checkpoint, "Note text").
    let [origin, size, root, extensions @ ..] = text_lines else {
        return Err(failure(
            text_lines.len().saturating_add(1),
            CheckpointFailure::MissingLine,
        ));
    };
    if extensions.len() > MAX_EXTENSION_LINES {
        return Err(failure(
            MAX_TEXT_LINES.saturating_add(1),
            CheckpointFailure::TooManyExtensionLines,
        ));
    }
    let size = parse_size(size).ok_or(failure(2, CheckpointFailure::TreeSize))?;
    let root: Hash = STANDARD
        .decode(root)
        .ok()
        .and_then(|r| r.try_into().ok())
        .ok_or(failure(3, CheckpointFailure::RootHash))?;
    let text_len = text_lines
        .iter()
        .fold(0usize, |n, l| n.saturating_add(l.len()).saturating_add(1));
    let text = note
        .get(..text_len)
        .ok_or(failure(0, CheckpointFailure::MissingLine))?;

    // Signatures (signed-note, "Format").
    let first_signature_line = blank.saturating_add(2);
    if signature_lines.is_empty() {
        return Err(failure(
            first_signature_line,
            CheckpointFailure::NoSignatures,
        ));
    }
    let mut signatures = Vec::new();
    for (number, line) in (first_signature_line..).zip(signature_lines) {
        if line.is_empty() {
            return Err(failure(number, CheckpointFailure::EmptyLine));
        }
        if signatures.len() == MAX_SIGNATURES {
            return Err(failure(number, CheckpointFailure::TooManySignatures));
        }
        signatures.push(parse_signature_line(number, line)?);
    }

    Ok(Parsed {
        text,
        checkpoint: Checkpoint {
            origin: (*origin).to_owned(),
            size,
            root,
            extensions: extensions.iter().map(|e| (*e).to_owned()).collect(),
        },
        signatures,
    })
}

/// The tree size: ASCII decimal, "no leading zeroes (unless the tree is
/// empty, in which case the tree size is `0`)" (tlog-checkpoint).
fn parse_size(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if s.len() > 1 && s.starts_with('0') {
        return None;
    }
    s.parse().ok()
}

/// `— <name> <base64(key ID || signature)>`.
fn parse_signature_line(number: usize, line: &str) -> Result<NoteSignature<'_>, Error> {
    let fields = line
        .strip_prefix(SIGNATURE_PREFIX)
        .and_then(|rest| rest.split_once(' '));
    let Some((name, blob)) = fields else {
        return Err(failure(number, CheckpointFailure::SignatureLine));
    };
    if blob.contains(' ') {
        return Err(failure(number, CheckpointFailure::SignatureLine));
    }
    if !is_key_name(name) {
        return Err(failure(number, CheckpointFailure::KeyName));
    }
    let blob = STANDARD
        .decode(blob)
        .map_err(|_| failure(number, CheckpointFailure::SignatureEncoding))?;
    match blob.split_first_chunk::<KEY_ID_LEN>() {
        Some((id, signature)) if !signature.is_empty() => Ok(NoteSignature {
            name,
            key_id: *id,
            signature: signature.to_vec(),
        }),
        _ => Err(failure(number, CheckpointFailure::SignatureEncoding)),
    }
}

#[cfg(test)]
mod tests {
    // Test code: a failed unwrap is a failed test.
    #![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]
    use super::*;
    use ring::signature::{Ed25519KeyPair, KeyPair};

    /// golang.org/x/mod/sumdb/note's documented example: its verifier key,
    /// signer key and signed note. Ed25519 is deterministic (RFC 8032), so
    /// signing the text with the seed must give the same note byte for byte.
    const GO_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const GO_SKEY: &str =
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const GO_TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                           then you don't know what your problem is.\n";
    const GO_SIGNATURE_LINE: &str = "\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

    #[test]
    fn go_verifier_key_parses_and_prints_back() {
        let key = VerifierKey::parse(GO_VKEY).unwrap();
        assert_eq!(key.name(), "PeterNeumann");
        assert_eq!(key.key_id(), [0xc7, 0x4f, 0x20, 0xa3]);
        assert_eq!(key.to_string(), GO_VKEY);
    }

    #[test]
    fn go_signer_key_signs_the_go_note_byte_for_byte() {
        let seed = STANDARD
            // PRIVATE+KEY+<name>+<key ID>+<base64>: the base64 holds a '+'.
            .decode(GO_SKEY.splitn(5, '+').nth(4).unwrap())
            .unwrap();
        let (kind, seed) = seed.split_first().unwrap();
        assert_eq!(*kind, ED25519_TYPE);
        let pair = Ed25519KeyPair::from_seed_unchecked(seed).unwrap();
        let key = VerifierKey::ed25519("PeterNeumann", pair.public_key().as_ref()).unwrap();
        assert_eq!(key.to_string(), GO_VKEY);
        let line = signature_line(&key, pair.sign(GO_TEXT.as_bytes()).as_ref());
        assert_eq!(line, GO_SIGNATURE_LINE);
        // And our parser reads the Go signature line back.
        let parsed = parse_signature_line(1, GO_SIGNATURE_LINE.trim_end_matches('\n')).unwrap();
        assert_eq!(parsed.name, "PeterNeumann");
        assert_eq!(parsed.key_id, key.key_id());
        UnparsedPublicKey::new(&signature::ED25519, key.public_key())
            .verify(GO_TEXT.as_bytes(), &parsed.signature)
            .unwrap();
    }

    #[test]
    fn malformed_verifier_keys_are_refused() {
        let reason = |s: &str| match VerifierKey::parse(s) {
            Err(Error::VerifierKey { reason }) => reason,
            other => panic!("{s}: {other:?}"),
        };
        // Wrong key ID.
        assert_eq!(
            reason("PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"),
            "key ID does not match the name and key"
        );
        // Upper-case hex.
        assert_eq!(
            reason("PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"),
            "key ID is not 8 lowercase hex digits"
        );
        // Not Ed25519.
        assert_eq!(
            reason("PeterNeumann+c74f20a3+Ahpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"),
            "not an Ed25519 key (signature type 0x01)"
        );
        assert_eq!(reason("PeterNeumann"), "not <name>+<key ID>+<key>");
        // Every truncation fails.
        for end in 0..GO_VKEY.len() {
            assert!(VerifierKey::parse(&GO_VKEY[..end]).is_err(), "{end}");
        }
    }

    #[test]
    fn key_names() {
        for good in ["a", "example.com/log42", "provenix.dev/worker/c74f20a3"] {
            assert!(is_key_name(good), "{good}");
        }
        for bad in ["", "a b", "a+b", "a\u{a0}b", "a\tb", "a\u{2003}"] {
            assert!(!is_key_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("0"), Some(0));
        assert_eq!(parse_size("20852163"), Some(20_852_163));
        assert_eq!(parse_size("18446744073709551615"), Some(u64::MAX));
        for bad in [
            "",
            "01",
            "00",
            "+1",
            "-1",
            "1e3",
            "18446744073709551616",
            "１",
        ] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
    }

    #[test]
    fn checkpoint_text_matches_the_spec_example_layout() {
        let root: Hash = STANDARD
            .decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=")
            .unwrap()
            .try_into()
            .unwrap();
        let c = Checkpoint::new("example.com/behind-the-sofa", 20_852_163, root).unwrap();
        assert_eq!(
            c.text(),
            "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
        );
    }

    #[test]
    fn bad_origins_are_refused() {
        let cases = [
            ("", CheckpointFailure::EmptyLine),
            ("a\nb", CheckpointFailure::ControlCharacter),
            ("a\r", CheckpointFailure::ControlCharacter),
            ("log ", CheckpointFailure::TrailingWhitespace),
        ];
        for (origin, want) in cases {
            match Checkpoint::new(origin, 0, [0; 32]) {
                Err(Error::Checkpoint { line: 1, reason }) => {
                    assert_eq!(reason, want, "{origin:?}")
                }
                other => panic!("{origin:?}: {other:?}"),
            }
        }
    }

    /// A key pair from a fixed seed, its verifier key, and a signed
    /// checkpoint of size 5 for `example.com/log`.
    fn fixture(name: &str, seed: u8) -> (Ed25519KeyPair, VerifierKey) {
        let pair = Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).unwrap();
        let key = VerifierKey::ed25519(name, pair.public_key().as_ref()).unwrap();
        (pair, key)
    }

    const ORIGIN: &str = "example.com/log";

    fn signed(pair: &Ed25519KeyPair, key: &VerifierKey, text: &str) -> String {
        format!(
            "{text}\n{}",
            signature_line(key, pair.sign(text.as_bytes()).as_ref())
        )
    }

    fn good() -> (Ed25519KeyPair, VerifierKey, Checkpoint, String) {
        let (pair, key) = fixture(ORIGIN, 7);
        let c = Checkpoint::new(ORIGIN, 5, crate::merkle::leaf_hash(b"root")).unwrap();
        let note = signed(&pair, &key, &c.text());
        (pair, key, c, note)
    }

    /// The checkpoint failure of `note`, verified with `key`.
    fn parse_failure(note: &str, key: &VerifierKey) -> (usize, CheckpointFailure) {
        match verify_checkpoint(note.as_bytes(), key, ORIGIN) {
            Err(Error::Checkpoint { line, reason }) => (line, reason),
            other => panic!("{note:?}: {other:?}"),
        }
    }

    #[test]
    fn round_trip() {
        let (_, key, c, note) = good();
        let v = verify_checkpoint(note.as_bytes(), &key, ORIGIN).unwrap();
        assert_eq!(v.checkpoint(), &c);
        assert_eq!(v.size(), 5);
        assert_eq!(v.origin(), ORIGIN);
        // And through the verifier key's text form.
        let again = VerifierKey::parse(&key.to_string()).unwrap();
        assert_eq!(again, key);
        verify_checkpoint(note.as_bytes(), &again, ORIGIN).unwrap();
    }

    #[test]
    fn wrong_key() {
        let (_, _, _, note) = good();
        // Same name, another key: another key ID, so an unknown signature.
        let (_, other) = fixture(ORIGIN, 8);
        match verify_checkpoint(note.as_bytes(), &other, ORIGIN) {
            Err(Error::CheckpointUnsigned { key }) => assert_eq!(key, other.label()),
            r => panic!("{r:?}"),
        }
        // Same key under another name: also unknown.
        let (_, renamed) = fixture("example.com/other", 7);
        assert!(matches!(
            verify_checkpoint(note.as_bytes(), &renamed, ORIGIN),
            Err(Error::CheckpointUnsigned { .. })
        ));
    }

    #[test]
    fn flipped_byte_in_root() {
        let (_, key, c, note) = good();
        let mut root = *c.root();
        root[0] ^= 1;
        let flipped = note.replace(&STANDARD.encode(c.root()), &STANDARD.encode(root));
        assert_ne!(flipped, note);
        match verify_checkpoint(flipped.as_bytes(), &key, ORIGIN) {
            Err(Error::CheckpointSignature { key: k }) => assert_eq!(k, key.label()),
            r => panic!("{r:?}"),
        }
    }

    #[test]
    fn extra_blank_line() {
        let (_, key, _, note) = good();
        // Between text and signatures: line 5 is the second blank line.
        let doubled = note.replacen("\n\n", "\n\n\n", 1);
        assert_eq!(
            parse_failure(&doubled, &key),
            (5, CheckpointFailure::EmptyLine)
        );
        // After the signatures.
        let trailing = format!("{note}\n");
        assert_eq!(
            parse_failure(&trailing, &key),
            (6, CheckpointFailure::EmptyLine)
        );
        // Inside the text.
        let inside = note.replacen("\n", "\n\n", 1);
        assert_eq!(
            parse_failure(&inside, &key),
            (2, CheckpointFailure::MissingLine)
        );
    }

    #[test]
    fn non_canonical_size() {
        let (pair, key, c, _) = good();
        // Signed as it is, so only the parser can object.
        for size in ["05", "+5", "5.0", "", "0x5", "18446744073709551616"] {
            let text = c.text().replacen("\n5\n", &format!("\n{size}\n"), 1);
            let note = signed(&pair, &key, &text);
            let want = if size.is_empty() {
                (2, CheckpointFailure::MissingLine)
            } else {
                (2, CheckpointFailure::TreeSize)
            };
            assert_eq!(parse_failure(&note, &key), want, "{size:?}");
        }
        let zero = Checkpoint::new(ORIGIN, 0, crate::merkle::EMPTY_ROOT).unwrap();
        let note = signed(&pair, &key, &zero.text());
        assert_eq!(
            verify_checkpoint(note.as_bytes(), &key, ORIGIN)
                .unwrap()
                .size(),
            0
        );
    }

    #[test]
    fn size_with_leading_zero_01() {
        let (pair, key) = fixture(ORIGIN, 7);
        let text = format!("{ORIGIN}\n01\n{}\n", STANDARD.encode([0u8; 32]));
        let note = signed(&pair, &key, &text);
        assert_eq!(parse_failure(&note, &key), (2, CheckpointFailure::TreeSize));
    }

    #[test]
    fn trailing_space() {
        let (pair, key, c, note) = good();
        let on_origin = note.replacen(ORIGIN, &format!("{ORIGIN} "), 1);
        assert_eq!(
            parse_failure(&on_origin, &key),
            (1, CheckpointFailure::TrailingWhitespace)
        );
        let on_signature = format!("{} \n", note.trim_end_matches('\n'));
        assert_eq!(
            parse_failure(&on_signature, &key),
            (5, CheckpointFailure::TrailingWhitespace)
        );
        // Even when signed that way.
        let text = c.text().replacen("\n5\n", "\n5 \n", 1);
        assert_eq!(
            parse_failure(&signed(&pair, &key, &text), &key),
            (2, CheckpointFailure::TrailingWhitespace)
        );
    }

    #[test]
    fn missing_signature() {
        let (_, key, c, _) = good();
        // Text and blank line, no signature line.
        let bare = format!("{}\n", c.text());
        assert_eq!(
            parse_failure(&bare, &key),
            (5, CheckpointFailure::NoSignatures)
        );
        // Text alone.
        assert_eq!(
            parse_failure(&c.text(), &key),
            (4, CheckpointFailure::NoSignatures)
        );
        // Only someone else's signature.
        let (witness_pair, witness) = fixture("witness.example", 9);
        let other = signed(&witness_pair, &witness, &c.text());
        assert!(matches!(
            verify_checkpoint(other.as_bytes(), &key, ORIGIN),
            Err(Error::CheckpointUnsigned { .. })
        ));
    }

    #[test]
    fn unknown_signatures_are_ignored() {
        let (pair, key, c, note) = good();
        let (witness_pair, witness) = fixture("witness.example", 9);
        let cosigned = format!(
            "{}\n{}{}",
            c.text(),
            signature_line(&witness, witness_pair.sign(b"anything").as_ref()),
            signature_line(&key, pair.sign(c.text().as_bytes()).as_ref())
        );
        verify_checkpoint(cosigned.as_bytes(), &key, ORIGIN).unwrap();
        // A signature line by our key that does not verify refuses the
        // note, even beside one that does.
        let forged = format!("{note}{}", signature_line(&key, &[0u8; 64]));
        assert!(matches!(
            verify_checkpoint(forged.as_bytes(), &key, ORIGIN),
            Err(Error::CheckpointSignature { .. })
        ));
    }

    #[test]
    fn origin_mismatch() {
        let (_, key, _, note) = good();
        match verify_checkpoint(note.as_bytes(), &key, "example.com/other") {
            Err(Error::CheckpointOrigin { expected, found }) => {
                assert_eq!(expected, "example.com/other");
                assert_eq!(found, ORIGIN);
            }
            r => panic!("{r:?}"),
        }
    }

    #[test]
    fn malformed_notes() {
        let (pair, key, c, note) = good();
        let crlf = note.replace('\n', "\r\n");
        assert_eq!(
            parse_failure(&crlf, &key),
            (1, CheckpointFailure::ControlCharacter)
        );
        let unterminated = note.trim_end_matches('\n');
        assert_eq!(
            parse_failure(unterminated, &key),
            (5, CheckpointFailure::NoFinalNewline)
        );
        let mut bytes = note.clone().into_bytes();
        // "example.com/log\n" is 16 bytes: byte 16 is the size line's.
        bytes[16] = 0xff;
        match verify_checkpoint(&bytes, &key, ORIGIN) {
            Err(Error::Checkpoint {
                line: 2,
                reason: CheckpointFailure::NotUtf8,
            }) => {}
            r => panic!("{r:?}"),
        }
        let bad_root = note.replacen(&STANDARD.encode(c.root()), "not base64", 1);
        assert_eq!(
            parse_failure(&bad_root, &key),
            (3, CheckpointFailure::RootHash)
        );
        let short_root = note.replacen(&STANDARD.encode(c.root()), &STANDARD.encode([0u8; 31]), 1);
        assert_eq!(
            parse_failure(&short_root, &key),
            (3, CheckpointFailure::RootHash)
        );
        let hyphen = note.replacen('\u{2014}', "-", 1);
        assert_eq!(
            parse_failure(&hyphen, &key),
            (5, CheckpointFailure::SignatureLine)
        );
        let plus_name = note.replacen("\u{2014} example.com/log", "\u{2014} example.com+log", 1);
        assert_eq!(
            parse_failure(&plus_name, &key),
            (5, CheckpointFailure::KeyName)
        );
        let short_sig = format!("{}\n\u{2014} {ORIGIN} AAAA\n", c.text());
        assert_eq!(
            parse_failure(&short_sig, &key),
            (5, CheckpointFailure::SignatureEncoding)
        );
        let too_long = "a".repeat(MAX_NOTE_LEN + 1);
        assert_eq!(
            parse_failure(&too_long, &key),
            (
                0,
                CheckpointFailure::TooLong {
                    len: MAX_NOTE_LEN + 1
                }
            )
        );
        // 16 signatures are read; a 17th is refused.
        let line = signature_line(&key, pair.sign(c.text().as_bytes()).as_ref());
        let sixteen = format!("{}\n{}", c.text(), line.repeat(MAX_SIGNATURES));
        verify_checkpoint(sixteen.as_bytes(), &key, ORIGIN).unwrap();
        let seventeen = format!("{}\n{}", c.text(), line.repeat(MAX_SIGNATURES + 1));
        assert_eq!(
            parse_failure(&seventeen, &key),
            (5 + MAX_SIGNATURES, CheckpointFailure::TooManySignatures)
        );
        // Extension lines are read, signed, and kept.
        let text = format!("{}ext one\n", c.text());
        let v = verify_checkpoint(signed(&pair, &key, &text).as_bytes(), &key, ORIGIN).unwrap();
        assert_eq!(v.checkpoint().extensions(), ["ext one".to_owned()]);
    }
}
