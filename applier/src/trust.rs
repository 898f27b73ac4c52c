//! Trusted keys: every `*.pub` in the trusted directory, plus keys named on the command line;
//! revoked keys: every `*.pub` in the revoked directory.
//!
//! The two directories fail in opposite directions. A damaged file in `trusted.d` only loses
//! trust in one key, so it is skipped with a warning (one bad file must not keep a host from
//! restoring its network at boot). A damaged file in `revoked.d` would silently un-revoke a key,
//! so it is an error ([`TrustError::UnreadableRevocation`]) and every command refuses until it is
//! fixed. `.pub` is matched in any case (`.PUB`, `.Pub`), a UTF-8 byte order mark before a key is
//! ignored, and any other file in either directory is named in a warning, since a key saved as
//! `leaked.key.txt` is not read.

use bundle::{Exit, TrustedKey};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("cannot read trusted key {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Parse(#[from] bundle::keys::KeyParseError),
    /// A revocation that cannot be read: the key it names cannot be refused, so nothing is
    /// accepted until the file is fixed or removed.
    #[error(
        "revoked key {path} cannot be read ({reason}), so the key it revokes would be trusted: \
             refusing to continue. Replace it with the revoked key's public key file (the \
             two-line file written by `builder keygen` or `minisign -G`), or remove it if it \
             revokes nothing"
    )]
    UnreadableRevocation { path: String, reason: String },
}

impl TrustError {
    /// What this failure means to a script: an unreadable revocation makes every bundle
    /// unauthentic (10); the others are plain failures (1).
    pub fn exit(&self) -> Exit {
        match self {
            TrustError::UnreadableRevocation { .. } => Exit::NotAuthentic,
            TrustError::Read { .. } | TrustError::Parse(_) => Exit::Failed,
        }
    }
}

/// Loads `extra` key files, all of which must be valid; if `extra` is empty, every `*.pub` in
/// `dir` (a missing directory holds no keys), where a damaged file is skipped and reported in the
/// returned warnings, so one bad file cannot keep a host from restoring its network at boot.
/// Sorted by file name, so messages list keys in a stable order.
pub fn load_trusted(
    dir: &Path,
    extra: &[PathBuf],
) -> Result<(Vec<TrustedKey>, Vec<String>), TrustError> {
    if !extra.is_empty() {
        let keys = extra
            .iter()
            .map(|p| load_one(p))
            .collect::<Result<_, _>>()?;
        return Ok((keys, Vec::new()));
    }
    let (files, mut warnings) = pub_files(dir).map_err(|source| TrustError::Read {
        path: dir.display().to_string(),
        source,
    })?;
    let mut keys = Vec::new();
    for p in files {
        match load_one(&p) {
            Ok(k) => keys.push(k),
            Err(e) => warnings.push(format!("ignoring trusted key: {e}")),
        }
    }
    Ok((keys, warnings))
}

/// The text of a key file, without a leading UTF-8 byte order mark.
fn read_key_text(p: &Path) -> std::io::Result<String> {
    let text = std::fs::read_to_string(p)?;
    Ok(match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_string(),
        None => text,
    })
}

fn load_one(p: &Path) -> Result<TrustedKey, TrustError> {
    let text = read_key_text(p).map_err(|source| TrustError::Read {
        path: p.display().to_string(),
        source,
    })?;
    Ok(TrustedKey::parse(&text, &p.display().to_string())?)
}

/// Every `*.pub` (any case) in `dir`, sorted, and a warning naming each other entry; a missing
/// directory holds nothing.
fn pub_files(dir: &Path) -> std::io::Result<(Vec<PathBuf>, Vec<String>)> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
        Err(e) => return Err(e),
    };
    let mut files = Vec::new();
    let mut others = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path
            .extension()
            .and_then(|x| x.to_str())
            .is_some_and(|x| x.eq_ignore_ascii_case("pub"))
        {
            files.push(path);
        } else {
            others.push(path);
        }
    }
    files.sort();
    others.sort();
    let warnings = others
        .iter()
        .map(|p| {
            format!(
                "{} is not read: only *.pub files in {} are keys",
                p.display(),
                dir.display()
            )
        })
        .collect();
    Ok((files, warnings))
}

/// Every `*.pub` in the revoked directory: keys whose signatures are refused. Any of them that
/// cannot be read or parsed, or the directory itself, is an error: see
/// [`TrustError::UnreadableRevocation`].
pub fn load_revoked(dir: &Path) -> Result<(Vec<TrustedKey>, Vec<String>), TrustError> {
    let (files, warnings) = pub_files(dir).map_err(|e| TrustError::UnreadableRevocation {
        path: dir.display().to_string(),
        reason: e.to_string(),
    })?;
    let mut keys = Vec::new();
    for p in files {
        let unreadable = |reason: String| TrustError::UnreadableRevocation {
            path: p.display().to_string(),
            reason,
        };
        let text = read_key_text(&p).map_err(|e| unreadable(e.to_string()))?;
        let key =
            TrustedKey::parse(&text, &p.display().to_string()).map_err(|e| unreadable(e.reason))?;
        keys.push(key);
    }
    Ok((keys, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A syntactically valid minisign public key with key id `id`.
    fn key_text(id: u8) -> String {
        let mut raw = b"Ed".to_vec();
        raw.extend_from_slice(&[id; 8]);
        raw.extend_from_slice(&[id; 32]);
        format!(
            "untrusted comment: minisign public key\n{}\n",
            bundle::keys::base64_encode(&raw)
        )
    }

    #[test]
    fn every_unreadable_revocation_is_an_error_naming_the_file() {
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("empty.pub", Vec::new(), "no base64 key line"),
            ("junk.pub", b"not a key\n".to_vec(), "invalid base64"),
            ("latin1.pub", vec![0xe9, b'\n'], "valid UTF-8"),
            (
                "utf16.pub",
                [0xff, 0xfe]
                    .into_iter()
                    .chain(key_text(1).bytes().flat_map(|b| [b, 0]))
                    .collect(),
                "valid UTF-8",
            ),
        ];
        for (name, data, reason) in cases {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("good.pub"), key_text(1)).unwrap();
            std::fs::write(dir.path().join(name), data).unwrap();
            let err = load_revoked(dir.path()).unwrap_err();
            let msg = err.to_string();
            assert!(
                matches!(&err, TrustError::UnreadableRevocation { path, .. } if path.ends_with(name)),
                "{name}: {msg}"
            );
            assert!(msg.contains(reason), "{name}: {msg}");
            assert!(msg.contains("refusing to continue"), "{msg}");
            assert_eq!(err.exit(), Exit::NotAuthentic);
        }
        // A `.pub` that is not a file (here a directory) cannot be read either.
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("odd.pub")).unwrap();
        assert!(matches!(
            load_revoked(dir.path()),
            Err(TrustError::UnreadableRevocation { .. })
        ));
    }

    #[test]
    fn an_unreadable_revoked_directory_is_an_error_and_a_missing_one_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let (keys, warnings) = load_revoked(&dir.path().join("missing")).unwrap();
        assert!(keys.is_empty() && warnings.is_empty());
        let file = dir.path().join("revoked.d");
        std::fs::write(&file, "a file, not a directory").unwrap();
        assert!(matches!(
            load_revoked(&file),
            Err(TrustError::UnreadableRevocation { .. })
        ));
    }

    #[test]
    fn byte_order_marks_and_any_case_of_pub_are_read_in_both_directories() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("bom.pub"),
            format!("\u{feff}{}", key_text(1)),
        )
        .unwrap();
        std::fs::write(dir.path().join("upper.PUB"), key_text(2)).unwrap();
        std::fs::write(dir.path().join("mixed.Pub"), key_text(3)).unwrap();
        std::fs::write(
            dir.path().join("crlf.pub"),
            key_text(4).replace('\n', "\r\n"),
        )
        .unwrap();
        std::fs::write(dir.path().join("leaked.key.txt"), key_text(5)).unwrap();
        let ids = |keys: &[TrustedKey]| {
            let mut ids: Vec<u8> = keys.iter().map(|k| k.id.0[0]).collect();
            ids.sort();
            ids
        };
        let (revoked, warnings) = load_revoked(dir.path()).unwrap();
        assert_eq!(ids(&revoked), [1, 2, 3, 4]);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("leaked.key.txt is not read: only *.pub files"),
            "{warnings:?}"
        );
        let (trusted, warnings) = load_trusted(dir.path(), &[]).unwrap();
        assert_eq!(ids(&trusted), [1, 2, 3, 4]);
        assert!(warnings[0].contains("leaked.key.txt"), "{warnings:?}");
    }

    #[test]
    fn a_damaged_trusted_key_is_still_only_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("good.pub"), key_text(1)).unwrap();
        std::fs::write(dir.path().join("bad.pub"), "junk").unwrap();
        let (keys, warnings) = load_trusted(dir.path(), &[]).unwrap();
        assert_eq!(keys.len(), 1);
        assert!(
            warnings.len() == 1 && warnings[0].contains("bad.pub"),
            "{warnings:?}"
        );
    }
}
