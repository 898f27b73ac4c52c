//! Verification: from untrusted bytes to a [`VerifiedBundle`], or one clear refusal.
//!
//! Order matters, and nothing is decompressed ahead of it: the first two members (the manifest and
//! its signature, each bounded by its own limit) are read and the signature is checked against
//! the trusted keys before any other member is decompressed. Only then is the manifest parsed,
//! and every further member is checked against it (name, order, size, mode) from its header,
//! before its data is read; so an untrusted bundle costs at most the manifest and signature, and
//! a trusted one no more than its signed manifest states. The hashes are compared once the whole
//! archive has been read and its end (trailer, gzip CRC) checked. Nothing here writes anywhere.

use crate::archive::{ArchiveError, Limits, MemberReader};
use crate::keys::{signature_is_legacy, signature_key_id, KeyId, TrustedKey};
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
    #[error("signature by key {signer} is a legacy (non-prehashed) signature; re-sign with this builder (`builder build`), which writes the prehashed minisign signatures the applier requires")]
    LegacySignature { signer: KeyId },
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
            | VerifyError::LegacySignature { .. }
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
    verify_reader(
        &mut MemberReader::new(compressed, &opts.limits)?,
        keys,
        opts,
    )
}

/// [`verify_bundle`] on an archive being read, for callers that want to know how much of it was
/// decompressed ([`MemberReader::decompressed`]) when it was accepted or refused.
pub fn verify_reader(
    reader: &mut MemberReader,
    keys: &[TrustedKey],
    opts: &VerifyOptions,
) -> Result<VerifiedBundle, VerifyError> {
    let bundle = check_authenticity(reader, keys, opts)?;
    check_binding(&bundle.manifest, opts)?;
    Ok(bundle)
}

/// Checks structure and hashes but not who signed it: for showing a bundle, never for applying.
pub fn read_unverified(compressed: &[u8], limits: &Limits) -> Result<VerifiedBundle, VerifyError> {
    let mut reader = MemberReader::new(compressed, limits)?;
    let (manifest_bytes, signature) = read_head(&mut reader, limits)?;
    let signed_by = signature_key_id(&signature)
        .ok_or_else(|| VerifyError::BadSignatureFormat("no key id".into()))?;
    finish(&mut reader, manifest_bytes, signature, signed_by)
}

fn check_authenticity(
    reader: &mut MemberReader,
    keys: &[TrustedKey],
    opts: &VerifyOptions,
) -> Result<VerifiedBundle, VerifyError> {
    let (manifest_bytes, signature) = read_head(reader, &opts.limits)?;
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
    if signature_is_legacy(&signature) {
        return Err(VerifyError::LegacySignature { signer });
    }
    let sig = minisign_verify::Signature::decode(&signature)
        .map_err(|e| VerifyError::BadSignatureFormat(e.to_string()))?;
    key.key
        .verify(&manifest_bytes, &sig, false)
        .map_err(|_| VerifyError::BadSignature { signer })?;
    finish(reader, manifest_bytes, signature, signer)
}

/// The first two members, the manifest and its signature, each refused from its header if over
/// its own limit. Nothing after them is decompressed.
fn read_head(reader: &mut MemberReader, limits: &Limits) -> Result<(Vec<u8>, String), VerifyError> {
    let mut member = |name: &'static str, which: &'static str, limit: u64| {
        let header = reader
            .next_header()?
            .filter(|h| h.name == name)
            .ok_or(VerifyError::MissingMember(name, which))?;
        if header.size > limit {
            return Err(VerifyError::from(ArchiveError::MemberTooLarge {
                name: name.into(),
                size: header.size,
                limit,
            }));
        }
        Ok(reader.read_data()?)
    };
    let manifest = member(MANIFEST_NAME, "first", limits.max_manifest)?;
    let signature = member(SIGNATURE_NAME, "second", limits.max_signature)?;
    let signature = String::from_utf8(signature)
        .map_err(|_| VerifyError::BadSignatureFormat("not UTF-8".into()))?;
    Ok((manifest, signature))
}

/// Parses the (already authenticated, or knowingly unauthenticated) manifest and reads every
/// remaining member against it: each member's name, order, size and mode are compared from its
/// header, before its data is decompressed, so nothing beyond what the manifest states is read.
/// The hashes are compared once the archive's end has been checked.
fn finish(
    reader: &mut MemberReader,
    manifest_bytes: Vec<u8>,
    signature: String,
    signed_by: KeyId,
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
    let mut read = Vec::with_capacity(manifest.files.len());
    let mut listed = manifest.files.iter();
    while let Some(member) = reader.next_header()? {
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
        if member.size != entry.size {
            return Err(tampered(format!(
                "{} bytes, manifest says {}",
                member.size, entry.size
            )));
        }
        if member.mode != entry.mode {
            return Err(tampered(format!(
                "mode {:o}, manifest says {:o}",
                member.mode, entry.mode
            )));
        }
        read.push((entry, reader.read_data()?));
    }
    if let Some(missing) = listed.next() {
        return Err(VerifyError::Missing(missing.path.clone()));
    }
    let mut files = BTreeMap::new();
    for (entry, data) in read {
        if sha256_hex(&data) != entry.sha256 {
            return Err(VerifyError::Tampered {
                path: entry.path.clone(),
                reason: "SHA-256 differs from the manifest".into(),
            });
        }
        files.insert(entry.path.clone(), data);
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

#[cfg(test)]
mod tests {
    //! Refusals that need no real signature: who signed is known from the signature's key id
    //! before any signature is checked. Real signatures are tested with the real builder in
    //! `builder/tests/bundles.rs`.
    use super::*;
    use crate::archive::{write_archive, ArchiveMember};
    use crate::keys::base64_encode;

    fn noise(len: usize) -> Vec<u8> {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn key(id: u8) -> TrustedKey {
        let mut raw = b"Ed".to_vec();
        raw.extend_from_slice(&[id; 8]);
        raw.extend_from_slice(&[id; 32]);
        let text = format!("untrusted comment: test key\n{}\n", base64_encode(&raw));
        TrustedKey::parse(&text, "test").unwrap()
    }

    /// A well-formed minisign signature file by key `id` with algorithm `alg` that matches
    /// nothing.
    fn signature(alg: &[u8; 2], id: u8) -> Vec<u8> {
        let mut raw = alg.to_vec();
        raw.extend_from_slice(&[id; 8]);
        raw.extend_from_slice(&[1; 64]);
        format!(
            "untrusted comment: sig\n{}\ntrusted comment: t\n{}\n",
            base64_encode(&raw),
            base64_encode(&[2; 64])
        )
        .into_bytes()
    }

    /// A bundle whose second-to-last member is 2 MiB of incompressible bytes.
    fn bundle_with_big_member(sig: Vec<u8>) -> Vec<u8> {
        let member = |name: &str, data: Vec<u8>| ArchiveMember {
            name: name.into(),
            mode: 0o644,
            data,
        };
        let big = noise(2 << 20);
        let manifest = Manifest {
            format: FORMAT_VERSION,
            host: "h".into(),
            serial: 1,
            expires: None,
            builder: "test".into(),
            files: [("big", &big[..]), ("last", b"x")]
                .iter()
                .map(|(p, d)| crate::FileEntry {
                    path: p.to_string(),
                    size: d.len() as u64,
                    mode: 0o644,
                    sha256: sha256_hex(d),
                })
                .collect(),
        };
        write_archive(&[
            member(MANIFEST_NAME, manifest.to_bytes()),
            member(SIGNATURE_NAME, sig),
            member("big", big),
            member("last", b"x".to_vec()),
        ])
    }

    /// Each refusal that a signature's key id or algorithm decides comes before anything after
    /// the signature is decompressed: at most the manifest, the signature and the next header.
    #[test]
    fn untrusted_revoked_legacy_and_forged_bundles_are_refused_before_the_rest_is_decompressed() {
        let trusted = [key(1)];
        let cases: Vec<(Vec<u8>, Vec<KeyId>, &str, u8)> = vec![
            (signature(b"ED", 2), vec![], "which is not trusted", 10),
            (
                signature(b"ED", 1),
                vec![KeyId([1; 8])],
                "which is revoked",
                10,
            ),
            (
                signature(b"Ed", 1),
                vec![],
                "legacy (non-prehashed) signature; re-sign with this builder",
                10,
            ),
            (signature(b"ED", 1), vec![], "altered after signing", 10),
        ];
        for (sig, revoked, want, code) in cases {
            let bytes = bundle_with_big_member(sig);
            assert!(bytes.len() > 2 << 20);
            let opts = VerifyOptions {
                revoked,
                ..VerifyOptions::default()
            };
            let mut reader = MemberReader::new(&bytes, &opts.limits).unwrap();
            let err = verify_reader(&mut reader, &trusted, &opts).unwrap_err();
            assert!(err.to_string().contains(want), "want {want:?}: {err}");
            assert_eq!(err.exit().code(), code, "{err}");
            // Manifest and signature: well under 8 KiB of tar stream.
            assert!(reader.decompressed() < 8 << 10, "{}", reader.decompressed());
            assert!(
                reader.compressed_consumed() < 64 << 10,
                "{} of {} compressed bytes consumed",
                reader.compressed_consumed(),
                bytes.len()
            );
        }
    }

    #[test]
    fn an_unsigned_read_still_reads_everything_and_checks_it() {
        let bytes = bundle_with_big_member(signature(b"ED", 2));
        let b = read_unverified(&bytes, &Limits::default()).unwrap();
        assert_eq!(b.files["big"].len(), 2 << 20);
        assert_eq!(b.signed_by, KeyId([2; 8]));
    }

    #[test]
    fn a_key_file_with_a_byte_order_mark_parses_to_the_same_key() {
        let k = key(3);
        let mut raw = b"Ed".to_vec();
        raw.extend_from_slice(&[3; 8]);
        raw.extend_from_slice(&[3; 32]);
        let text = format!(
            "\u{feff}untrusted comment: test key\r\n{}\r\n",
            base64_encode(&raw)
        );
        assert_eq!(TrustedKey::parse(&text, "bom").unwrap().id, k.id);
    }
}
