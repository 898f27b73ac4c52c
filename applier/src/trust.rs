//! Trusted keys: every `*.pub` in the trusted directory, plus keys named on the command line.

use bundle::TrustedKey;
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
    let mut keys = Vec::new();
    let mut warnings = Vec::new();
    for p in pub_files(dir)? {
        match load_one(&p) {
            Ok(k) => keys.push(k),
            Err(e) => warnings.push(format!("ignoring trusted key: {e}")),
        }
    }
    Ok((keys, warnings))
}

fn load_one(p: &Path) -> Result<TrustedKey, TrustError> {
    let text = std::fs::read_to_string(p).map_err(|source| TrustError::Read {
        path: p.display().to_string(),
        source,
    })?;
    Ok(TrustedKey::parse(&text, &p.display().to_string())?)
}

fn pub_files(dir: &Path) -> Result<Vec<PathBuf>, TrustError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(TrustError::Read {
                path: dir.display().to_string(),
                source,
            })
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "pub"))
        .collect();
    files.sort();
    Ok(files)
}

/// Every readable `*.pub` in the revoked directory: keys whose signatures are refused.
pub fn load_revoked(dir: &Path) -> Result<(Vec<TrustedKey>, Vec<String>), TrustError> {
    let mut keys = Vec::new();
    let mut warnings = Vec::new();
    for p in pub_files(dir)? {
        match load_one(&p) {
            Ok(k) => keys.push(k),
            Err(e) => warnings.push(format!(
                "cannot read revoked key, so it is not known as revoked: {e}"
            )),
        }
    }
    Ok((keys, warnings))
}
