//! The manifest: what a bundle is for (host, serial, expiry) and what it holds (each file's size,
//! mode and SHA-256). It is the only signed object; every other member is bound to it by hash.

use serde::{Deserialize, Serialize};

/// Version of the bundle format this crate writes and reads.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Bundle format version; readers refuse versions they do not know.
    pub format: u32,
    /// Host name the bundle is bound to; the applier refuses it on any other host.
    pub host: String,
    /// Monotonic serial; appliers refuse going backwards (rollback protection).
    pub serial: u64,
    /// Unix time (seconds) after which the bundle must not be installed, if any.
    pub expires: Option<u64>,
    /// Name and version of the builder that made it.
    pub builder: String,
    /// Every other member of the archive, in archive order.
    pub files: Vec<FileEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    pub path: String,
    pub size: u64,
    /// Unix permission bits the file is written with (0o600 for files holding secrets).
    pub mode: u32,
    pub sha256: String,
}

impl Manifest {
    /// The canonical encoding: what is signed and stored in the archive.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).expect("manifest serializes");
        out.push(b'\n');
        out
    }

    pub fn file(&self, path: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.path == path)
    }
}

/// Whether `name` is acceptable as a member name: a plain file name, no directories, nothing a
/// filesystem or shell could read as special.
pub fn is_valid_member_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}
