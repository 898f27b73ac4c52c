//! Trusted public keys and minisign key ids.
//!
//! minisign public keys and signatures carry an 8-byte key id; we read it ourselves so that a
//! refusal can say *which* key signed a bundle and which keys were trusted.

use std::fmt;

/// A minisign key id, shown as minisign shows it (16 upper-case hex digits, little-endian).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 8]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016X}", u64::from_le_bytes(self.0))
    }
}

/// A public key the applier accepts signatures from.
#[derive(Clone)]
pub struct TrustedKey {
    pub id: KeyId,
    /// Where the key came from (a file path), for messages.
    pub source: String,
    pub(crate) key: minisign_verify::PublicKey,
}

impl fmt::Debug for TrustedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustedKey")
            .field("id", &self.id)
            .field("source", &self.source)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{source_name}: not a minisign public key ({reason}); expected the two-line file written by `builder keygen` or `minisign -G`")]
pub struct KeyParseError {
    pub source_name: String,
    pub reason: String,
}

impl TrustedKey {
    /// Parses a minisign public key file's text (`untrusted comment:` line, then base64).
    pub fn parse(text: &str, source: &str) -> Result<Self, KeyParseError> {
        let err = |reason: &str| KeyParseError {
            source_name: source.to_string(),
            reason: reason.to_string(),
        };
        // A byte order mark, as some Windows editors write, changes nothing about the key.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let b64 = key_line(text).ok_or_else(|| err("no base64 key line"))?;
        let raw = base64_decode(b64).ok_or_else(|| err("invalid base64"))?;
        if raw.len() != 42 || &raw[..2] != b"Ed" {
            return Err(err("wrong length or algorithm"));
        }
        let key = minisign_verify::PublicKey::from_base64(b64).map_err(|e| err(&e.to_string()))?;
        Ok(TrustedKey {
            id: KeyId(raw[2..10].try_into().expect("8 bytes")),
            source: source.to_string(),
            key,
        })
    }
}

/// The key id a minisign signature file names.
pub fn signature_key_id(sig_text: &str) -> Option<KeyId> {
    let raw = base64_decode(key_line(sig_text)?)?;
    if raw.len() != 74 {
        return None;
    }
    Some(KeyId(raw[2..10].try_into().ok()?))
}

/// Whether a minisign signature file holds a legacy signature (algorithm `Ed`: Ed25519 over the
/// data itself) rather than a prehashed one (`ED`: over its BLAKE2b-512), which is all this
/// format accepts.
pub fn signature_is_legacy(sig_text: &str) -> bool {
    key_line(sig_text)
        .and_then(base64_decode)
        .is_some_and(|raw| raw.starts_with(b"Ed"))
}

/// The first line that is not a comment: the base64 payload of a key or signature file.
fn key_line(text: &str) -> Option<&str> {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("untrusted comment:"))
}

/// Standard base64 with padding, as minisign writes it.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}

/// Standard base64 with padding.
pub fn base64_encode(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}
