//! Verification: from untrusted bytes to a [`VerifiedBundle`], or one clear refusal.
//!
//! Order matters: the archive's structure is checked first (bounded, nothing interpreted), then the
//! manifest's signature against the trusted keys, and only then is the manifest parsed and each
//! member's size and SHA-256 compared. Nothing here writes anywhere.

use crate::archive::{parse_archive, ArchiveError, Limits, RawMember};
use crate::keys::{signature_key_id, KeyId, TrustedKey};
use crate::manifest::{is_valid_member_name, Manifest, FORMAT_VERSION};
use crate::{sha256_hex, MANIFEST_NAME, SIGNATURE_NAME};
use std::collections::BTreeMap;

/// What the verifier must check besides the signature.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Refuse the bundle unless it is for this host.
    pub host: Option<String>,
    /// Current Unix time; `None` skips the expiry check (e.g. `builder inspect`).
    pub now: Option<u64>,
    /// Keys whose signatures are refused even if also trusted (revoked keys).
    pub revoked: Vec<KeyId>,
    pub limits: Limits,
}

/// A bundle whose signature, hashes and binding were all checked.
#[derive(Debug, Clone)]
pub struct VerifiedBundle {
    pub manifest: Manifest,
    /// The exact signed manifest bytes and signature, kept so a generation can be re-verified.
    pub manifest_bytes: Vec<u8>,
    pub signature: String,
    pub signed_by: KeyId,
    /// Every listed file's contents, by path.
    pub files: BTreeMap<String, Vec<u8>>,
}

impl VerifiedBundle {
    pub fn file(&self, path: &str) -> Option<&[u8]> {
        self.files.get(path).map(Vec::as_slice)
    }
}

/// Why a bundle was refused. Each variant maps to one documented exit code.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error("bundle has no {0} as its {1} member")]
    MissingMember(&'static str, &'static str),
    #[error("signature is not a minisign signature: {0}")]
    BadSignatureFormat(String),
    #[error("no trusted keys: add the builder's public key to the trusted keys directory or pass --trusted-key")]
    NoTrustedKeys,
    #[error("bundle is signed by key {signer}, which is revoked")]
    Revoked { signer: KeyId },
    #[error("bundle is signed by key {signer}, which is not trusted (trusted: {trusted})")]
    UntrustedKey { signer: KeyId, trusted: String },
    #[error("signature by key {signer} does not match the manifest: the bundle was altered after signing")]
    BadSignature { signer: KeyId },
    #[error("signed manifest is not valid: {0}")]
    BadManifest(String),
    #[error("bundle format {found} is not supported (this applier reads format {supported}); upgrade the applier")]
    UnsupportedFormat { found: u32, supported: u32 },
    #[error("member {path:?}: {reason}: the bundle was altered after signing")]
    Tampered { path: String, reason: String },
    #[error("member {0:?} is not listed in the signed manifest")]
    Unlisted(String),
    #[error("member {0:?} is listed in the signed manifest but missing from the bundle")]
    Missing(String),
    #[error("bundle is for host {bundle:?}, not {expected:?}")]
    WrongHost { bundle: String, expected: String },
    #[error("bundle expired at {} (it is now {}): rebuild it with a later --expires-in", crate::time::format_utc(*expires), crate::time::format_utc(*now))]
    Expired { expires: u64, now: u64 },
}

impl VerifyError {
    /// What this refusal means to a script (`docs/exit-codes.md`).
    pub fn exit(&self) -> crate::Exit {
        use crate::Exit;
        match self {
            VerifyError::NoTrustedKeys => Exit::NoTrustedKeys,
            VerifyError::UntrustedKey { .. }
            | VerifyError::Revoked { .. }
            | VerifyError::BadSignature { .. }
            | VerifyError::Tampered { .. } => Exit::NotAuthentic,
            VerifyError::WrongHost { .. } => Exit::WrongHost,
            VerifyError::Expired { .. } => Exit::Expired,
            _ => Exit::Malformed,
        }
    }
}

/// Checks everything about `compressed` and returns its verified contents.
pub fn verify_bundle(
    compressed: &[u8],
    keys: &[TrustedKey],
    opts: &VerifyOptions,
) -> Result<VerifiedBundle, VerifyError> {
    let bundle = check_authenticity(compressed, keys, opts)?;
    check_binding(&bundle.manifest, opts)?;
    Ok(bundle)
}

/// Checks structure and hashes but not who signed it: for showing a bundle, never for applying.
pub fn read_unverified(compressed: &[u8], limits: &Limits) -> Result<VerifiedBundle, VerifyError> {
    let (manifest_member, signature, rest) = split(compressed, limits)?;
    let signed_by = signature_key_id(&signature)
        .ok_or_else(|| VerifyError::BadSignatureFormat("no key id".into()))?;
    finish(manifest_member.data, signature, signed_by, rest)
}

fn check_authenticity(
    compressed: &[u8],
    keys: &[TrustedKey],
    opts: &VerifyOptions,
) -> Result<VerifiedBundle, VerifyError> {
    let (manifest_member, signature, rest) = split(compressed, &opts.limits)?;
    let signer = signature_key_id(&signature)
        .ok_or_else(|| VerifyError::BadSignatureFormat("no key id".into()))?;
    if opts.revoked.contains(&signer) {
        return Err(VerifyError::Revoked { signer });
    }
    if keys.is_empty() {
        return Err(VerifyError::NoTrustedKeys);
    }
    let key = keys
        .iter()
        .find(|k| k.id == signer)
        .ok_or_else(|| VerifyError::UntrustedKey {
            signer,
            trusted: keys
                .iter()
                .map(|k| k.id.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    let sig = minisign_verify::Signature::decode(&signature)
        .map_err(|e| VerifyError::BadSignatureFormat(e.to_string()))?;
    key.key
        .verify(&manifest_member.data, &sig, false)
        .map_err(|_| VerifyError::BadSignature { signer })?;
    finish(manifest_member.data, signature, signer, rest)
}

type Split = (RawMember, String, Vec<RawMember>);

fn split(compressed: &[u8], limits: &Limits) -> Result<Split, VerifyError> {
    let mut members = parse_archive(compressed, limits)?.members.into_iter();
    let manifest = members
        .next()
        .filter(|m| m.name == MANIFEST_NAME)
        .ok_or(VerifyError::MissingMember(MANIFEST_NAME, "first"))?;
    if manifest.data.len() as u64 > limits.max_manifest {
        return Err(ArchiveError::MemberTooLarge {
            name: MANIFEST_NAME.into(),
            size: manifest.data.len() as u64,
            limit: limits.max_manifest,
        }
        .into());
    }
    let signature = members
        .next()
        .filter(|m| m.name == SIGNATURE_NAME)
        .ok_or(VerifyError::MissingMember(SIGNATURE_NAME, "second"))?;
    if signature.data.len() as u64 > limits.max_signature {
        return Err(ArchiveError::MemberTooLarge {
            name: SIGNATURE_NAME.into(),
            size: signature.data.len() as u64,
            limit: limits.max_signature,
        }
        .into());
    }
    let signature = String::from_utf8(signature.data)
        .map_err(|_| VerifyError::BadSignatureFormat("not UTF-8".into()))?;
    Ok((manifest, signature, members.collect()))
}

/// Parses the (already authenticated, or knowingly unauthenticated) manifest and binds every
/// remaining member to it.
fn finish(
    manifest_bytes: Vec<u8>,
    signature: String,
    signed_by: KeyId,
    rest: Vec<RawMember>,
) -> Result<VerifiedBundle, VerifyError> {
    let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| VerifyError::BadManifest(e.to_string()))?;
    if manifest.format != FORMAT_VERSION {
        return Err(VerifyError::UnsupportedFormat {
            found: manifest.format,
            supported: FORMAT_VERSION,
        });
    }
    for (i, entry) in manifest.files.iter().enumerate() {
        let reserved = entry.path == MANIFEST_NAME || entry.path == SIGNATURE_NAME;
        let repeated = manifest.files[..i].iter().any(|f| f.path == entry.path);
        if !is_valid_member_name(&entry.path) || reserved || repeated {
            return Err(VerifyError::BadManifest(format!(
                "file entry {:?} is not a valid, unique member name",
                entry.path
            )));
        }
    }
    let mut files = BTreeMap::new();
    let mut listed = manifest.files.iter();
    for member in rest {
        let Some(entry) = listed.next() else {
            return Err(VerifyError::Unlisted(member.name));
        };
        if entry.path != member.name {
            return Err(if manifest.file(&member.name).is_some() {
                VerifyError::Tampered {
                    path: member.name,
                    reason: "out of the manifest's order".into(),
                }
            } else {
                VerifyError::Unlisted(member.name)
            });
        }
        let tampered = |reason: String| VerifyError::Tampered {
            path: member.name.clone(),
            reason,
        };
        if member.data.len() as u64 != entry.size {
            return Err(tampered(format!(
                "{} bytes, manifest says {}",
                member.data.len(),
                entry.size
            )));
        }
        if member.mode != entry.mode {
            return Err(tampered(format!(
                "mode {:o}, manifest says {:o}",
                member.mode, entry.mode
            )));
        }
        if sha256_hex(&member.data) != entry.sha256 {
            return Err(tampered("SHA-256 differs from the manifest".into()));
        }
        files.insert(member.name, member.data);
    }
    if let Some(missing) = listed.next() {
        return Err(VerifyError::Missing(missing.path.clone()));
    }
    Ok(VerifiedBundle {
        manifest,
        manifest_bytes,
        signature,
        signed_by,
        files,
    })
}

fn check_binding(manifest: &Manifest, opts: &VerifyOptions) -> Result<(), VerifyError> {
    if let Some(expected) = &opts.host {
        if &manifest.host != expected {
            return Err(VerifyError::WrongHost {
                bundle: manifest.host.clone(),
                expected: expected.clone(),
            });
        }
    }
    if let (Some(expires), Some(now)) = (manifest.expires, opts.now) {
        if now >= expires {
            return Err(VerifyError::Expired { expires, now });
        }
    }
    Ok(())
}
