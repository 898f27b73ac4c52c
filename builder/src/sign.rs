//! Signing keys and deterministic minisign signatures.
//!
//! Key files are minisign's own (made with the `minisign` crate, readable by the `minisign` tool),
//! but signatures are computed here with plain RFC 8032 Ed25519: the `minisign` crate adds random
//! noise to every signature, which would make two builds of the same bundle differ. The output is
//! minisign's prehashed format (BLAKE2b-512 of the data, then a global signature over signature and
//! trusted comment), checked in tests by `minisign-verify` and the `minisign` tool.

use bundle::keys::base64_encode;
use bundle::KeyId;
use ed25519_dalek::{Signer, SigningKey};
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} already exists; refusing to overwrite a key (move it away first)")]
    Exists { path: String },
    #[error("{path}: not a minisign secret key: {reason}")]
    Invalid { path: String, reason: String },
    #[error("key generation failed: {0}")]
    Generate(String),
}

/// A secret key ready to sign. Its `Debug` shows only the key id.
pub struct SecretKey {
    id: KeyId,
    signing: SigningKey,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey({})", self.id)
    }
}

/// How a new secret key is protected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Protection {
    /// Encrypted with a passphrase (scrypt, as minisign does).
    Passphrase(String),
    /// Encrypted with a passphrase asked for on the terminal (minisign's prompt).
    Prompt,
    /// Stored in the clear, mode 0600: for CI and throw-away example keys.
    Unencrypted,
}

/// Creates a key pair; refuses to overwrite either file. The secret key is created mode 0600.
pub fn keygen(secret: &Path, public: &Path, protection: Protection) -> Result<KeyId, KeyError> {
    for p in [secret, public] {
        if p.exists() {
            return Err(KeyError::Exists {
                path: p.display().to_string(),
            });
        }
    }
    let gen = |e: minisign::PError| KeyError::Generate(e.to_string());
    let pair = match protection {
        Protection::Unencrypted => {
            minisign::KeyPair::generate_unencrypted_keypair().map_err(gen)?
        }
        Protection::Passphrase(p) => {
            minisign::KeyPair::generate_encrypted_keypair(Some(p)).map_err(gen)?
        }
        Protection::Prompt => minisign::KeyPair::generate_encrypted_keypair(None).map_err(gen)?,
    };
    let id = KeyId(pair.pk.keynum().try_into().expect("8-byte key id"));
    let sk_text = pair
        .sk
        .to_box(Some(&format!("ovs-bundle secret key {id}")))
        .map_err(gen)?
        .into_string();
    let pk_text = pair.pk.to_box().map_err(gen)?.into_string();
    write_new(secret, sk_text.as_bytes(), 0o600)?;
    write_new(public, pk_text.as_bytes(), 0o644)?;
    Ok(id)
}

fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<(), KeyError> {
    let io = |source| KeyError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io)?;
    f.write_all(data).map_err(io)?;
    f.sync_all().map_err(io)
}

/// Byte offsets in minisign's serialized secret key: algorithm ids and KDF parameters (54 bytes),
/// the key id (8), then the Ed25519 secret key as seed and public key (64).
const KEYNUM_AT: usize = 54;
const SEED_AT: usize = 62;

/// Where the passphrase of an encrypted secret key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Passphrase {
    /// The key is not encrypted.
    None,
    Given(String),
    /// Ask on the terminal (minisign's prompt).
    Prompt,
}

/// Loads a minisign secret key; an encrypted one needs its passphrase.
pub fn load_secret_key(path: &Path, passphrase: Passphrase) -> Result<SecretKey, KeyError> {
    let invalid = |reason: String| KeyError::Invalid {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let sk_box = minisign::SecretKeyBox::from_string(&text).map_err(|e| invalid(e.to_string()))?;
    let sk = match passphrase {
        Passphrase::Given(p) => sk_box.into_secret_key(Some(p)),
        Passphrase::Prompt => sk_box.into_secret_key(None),
        Passphrase::None => sk_box.into_unencrypted_secret_key(),
    }
    .map_err(|e| invalid(e.to_string()))?;
    let raw = sk.to_bytes();
    let id = KeyId(raw[KEYNUM_AT..KEYNUM_AT + 8].try_into().expect("8 bytes"));
    let seed: [u8; 32] = raw[SEED_AT..SEED_AT + 32].try_into().expect("32 bytes");
    let signing = SigningKey::from_bytes(&seed);
    // The stored public half must match the seed, or the layout is not what we think it is.
    if signing.verifying_key().as_bytes()[..] != raw[SEED_AT + 32..SEED_AT + 64] {
        return Err(invalid(
            "key material is inconsistent (wrong passphrase?)".into(),
        ));
    }
    Ok(SecretKey { id, signing })
}

/// Whether the secret key file at `path` is passphrase-protected.
pub fn is_encrypted(path: &Path) -> Result<bool, KeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let sk_box = minisign::SecretKeyBox::from_string(&text).map_err(|e| KeyError::Invalid {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    Ok(sk_box.into_unencrypted_secret_key().is_err())
}

impl SecretKey {
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The matching public key, as a minisign public key file.
    pub fn public_key_file(&self) -> String {
        let mut raw = Vec::with_capacity(42);
        raw.extend_from_slice(b"Ed");
        raw.extend_from_slice(&self.id.0);
        raw.extend_from_slice(self.signing.verifying_key().as_bytes());
        format!(
            "untrusted comment: minisign public key {}\n{}\n",
            self.id,
            base64_encode(&raw)
        )
    }

    /// A minisign signature file (prehashed `ED` algorithm) over `data`. Deterministic.
    pub fn sign(&self, data: &[u8], trusted_comment: &str) -> String {
        use blake2::Digest;
        let prehash = blake2::Blake2b512::digest(data);
        let sig = self.signing.sign(&prehash).to_bytes();
        let mut sig_line = Vec::with_capacity(74);
        sig_line.extend_from_slice(b"ED");
        sig_line.extend_from_slice(&self.id.0);
        sig_line.extend_from_slice(&sig);
        let mut global = sig.to_vec();
        global.extend_from_slice(trusted_comment.as_bytes());
        let global_sig = self.signing.sign(&global).to_bytes();
        format!(
            "untrusted comment: ovs-bundle signature by key {}\n{}\ntrusted comment: {trusted_comment}\n{}\n",
            self.id,
            base64_encode(&sig_line),
            base64_encode(&global_sig)
        )
    }
}
