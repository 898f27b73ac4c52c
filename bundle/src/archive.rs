//! The archive layer: a deterministic writer and a strict, bounded reader.
//!
//! The reader accepts only the canonical layout the writer produces (one gzip member with a fixed
//! header; ustar headers of regular files with plain names; zero padding; zero end blocks), so that
//! every byte of a bundle is covered by a check: header bytes by the tar checksum, contents by the
//! signed SHA-256s, padding and trailer by being required to be zero, the gzip body by its CRC.
//! Nothing is decompressed past [`Limits`], which bounds gzip and tar bombs.

use std::io::{Read, Write};

/// A member to write: name, Unix mode, contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveMember {
    pub name: String,
    pub mode: u32,
    pub data: Vec<u8>,
}

/// Bounds on what the reader will accept. The defaults are documented in `docs/bundle-format.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Size of the compressed bundle.
    pub max_compressed: u64,
    /// Size of the decompressed tar stream (headers included).
    pub max_uncompressed: u64,
    /// Decompressed bytes per compressed byte, beyond the first MiB.
    pub max_ratio: u64,
    /// Number of members.
    pub max_entries: usize,
    /// Size of any one member.
    pub max_member: u64,
    /// Size of the manifest.
    pub max_manifest: u64,
    /// Size of the signature.
    pub max_signature: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_compressed: 32 << 20,
            max_uncompressed: 128 << 20,
            max_ratio: 200,
            max_entries: 32,
            max_member: 64 << 20,
            max_manifest: 1 << 20,
            max_signature: 4 << 10,
        }
    }
}

/// The gzip header the writer emits: no name, no mtime, no extra fields, OS "unknown".
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
const BLOCK: usize = 512;

/// Writes `members` as a reproducible `.tgz`: the given order, fixed owner, mtime and header
/// format, deterministic compression. The same members always give the same bytes.
pub fn write_archive(members: &[ArchiveMember]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for m in members {
        let mut header = tar::Header::new_ustar();
        header
            .set_path(&m.name)
            .expect("member names are validated plain names");
        header.set_size(m.data.len() as u64);
        header.set_mode(m.mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        tar.append(&header, m.data.as_slice())
            .expect("writing to memory cannot fail");
    }
    let tar_bytes = tar.into_inner().expect("writing to memory cannot fail");
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(0xff)
        .write(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar_bytes)
        .expect("writing to memory cannot fail");
    let out = gz.finish().expect("writing to memory cannot fail");
    debug_assert_eq!(out[..10], GZIP_HEADER);
    out
}

/// One member as found in an archive, not yet checked against a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMember {
    pub name: String,
    pub mode: u32,
    pub data: Vec<u8>,
}

/// An archive whose structure is sound; nothing about its authenticity is known yet.
#[derive(Debug, Clone)]
pub struct ParsedArchive {
    pub members: Vec<RawMember>,
}

/// Why an archive's structure was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArchiveError {
    #[error("bundle is {size} bytes compressed, over the limit of {limit}")]
    TooLarge { size: u64, limit: u64 },
    #[error("bundle decompresses to more than {limit} bytes (gzip bomb?)")]
    Bomb { limit: u64 },
    #[error("not a bundle: {0}")]
    Gzip(String),
    #[error("malformed archive at offset {offset}: {reason}")]
    Tar { offset: usize, reason: String },
    #[error("member {name:?} is not a regular file (type {kind:?}); links, devices and directories are refused")]
    NotRegular { name: String, kind: String },
    #[error("member name {name:?} is not a plain file name (absolute paths, directories and `..` are refused)")]
    BadName { name: String },
    #[error("member {name:?} is {size} bytes, over the limit of {limit}")]
    MemberTooLarge { name: String, size: u64, limit: u64 },
    #[error("more than {limit} members")]
    TooManyMembers { limit: usize },
    #[error("member {name:?} appears twice")]
    Duplicate { name: String },
}

/// Decompresses and walks `compressed` within `limits`, accepting only the canonical layout.
pub fn parse_archive(compressed: &[u8], limits: &Limits) -> Result<ParsedArchive, ArchiveError> {
    let size = compressed.len() as u64;
    if size > limits.max_compressed {
        return Err(ArchiveError::TooLarge {
            size,
            limit: limits.max_compressed,
        });
    }
    if compressed.len() < GZIP_HEADER.len() || compressed[..2] != GZIP_HEADER[..2] {
        return Err(ArchiveError::Gzip("no gzip header".into()));
    }
    if compressed[..10] != GZIP_HEADER {
        return Err(ArchiveError::Gzip(
            "gzip header differs from the canonical one the builder writes".into(),
        ));
    }
    let limit = limits
        .max_uncompressed
        .min((1 << 20) + size.saturating_mul(limits.max_ratio));
    let mut decoder = flate2::bufread::GzDecoder::new(compressed);
    let mut tar_bytes = Vec::new();
    (&mut decoder)
        .take(limit + 1)
        .read_to_end(&mut tar_bytes)
        .map_err(|e| ArchiveError::Gzip(e.to_string()))?;
    if tar_bytes.len() as u64 > limit {
        return Err(ArchiveError::Bomb { limit });
    }
    if !decoder.into_inner().is_empty() {
        return Err(ArchiveError::Gzip(
            "data after the end of the gzip stream".into(),
        ));
    }
    walk_tar(&tar_bytes, limits)
}

fn walk_tar(buf: &[u8], limits: &Limits) -> Result<ParsedArchive, ArchiveError> {
    let bad = |offset: usize, reason: &str| ArchiveError::Tar {
        offset,
        reason: reason.to_string(),
    };
    if !buf.len().is_multiple_of(BLOCK) {
        return Err(bad(buf.len(), "length is not a multiple of 512"));
    }
    let mut members: Vec<RawMember> = Vec::new();
    let mut pos = 0;
    loop {
        let block = buf
            .get(pos..pos + BLOCK)
            .ok_or_else(|| bad(pos, "archive ends without end-of-archive blocks"))?;
        if block.iter().all(|&b| b == 0) {
            // End of archive: everything after must be zero, at least one more block.
            if buf.len() - pos < 2 * BLOCK {
                return Err(bad(pos, "only one end-of-archive block"));
            }
            if let Some(i) = buf[pos..].iter().position(|&b| b != 0) {
                return Err(bad(pos + i, "non-zero bytes after end of archive"));
            }
            return Ok(ParsedArchive { members });
        }
        if members.len() == limits.max_entries {
            return Err(ArchiveError::TooManyMembers {
                limit: limits.max_entries,
            });
        }
        let header = tar::Header::from_byte_slice(block);
        let stored = header
            .cksum()
            .map_err(|_| bad(pos, "unreadable header checksum"))?;
        let actual: u32 = block
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u32::from(b)
                }
            })
            .sum();
        if stored != actual {
            return Err(bad(pos, "header checksum mismatch"));
        }
        let ustar = header
            .as_ustar()
            .ok_or_else(|| bad(pos, "not a ustar header"))?;
        if ustar.prefix.iter().any(|&b| b != 0) {
            return Err(ArchiveError::BadName {
                name: String::from_utf8_lossy(&header.path_bytes()).into_owned(),
            });
        }
        let name = String::from_utf8(header.path_bytes().into_owned())
            .map_err(|_| bad(pos, "member name is not UTF-8"))?;
        if !crate::manifest::is_valid_member_name(&name) {
            return Err(ArchiveError::BadName { name });
        }
        let kind = header.entry_type();
        if kind != tar::EntryType::Regular {
            return Err(ArchiveError::NotRegular {
                name,
                kind: format!("{kind:?}"),
            });
        }
        let size = header
            .entry_size()
            .map_err(|_| bad(pos, "unreadable size"))?;
        if size > limits.max_member {
            return Err(ArchiveError::MemberTooLarge {
                name,
                size,
                limit: limits.max_member,
            });
        }
        let mode = header.mode().map_err(|_| bad(pos, "unreadable mode"))?;
        let start = pos + BLOCK;
        let end = start + size as usize;
        let padded = end.div_ceil(BLOCK) * BLOCK;
        let data = buf
            .get(start..end)
            .ok_or_else(|| bad(pos, "member runs past the end of the archive"))?;
        if buf
            .get(end..padded)
            .is_none_or(|p| p.iter().any(|&b| b != 0))
        {
            return Err(bad(end, "member padding is not zero"));
        }
        if members.iter().any(|m| m.name == name) {
            return Err(ArchiveError::Duplicate { name });
        }
        members.push(RawMember {
            name,
            mode,
            data: data.to_vec(),
        });
        pos = padded;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, data: &[u8]) -> ArchiveMember {
        ArchiveMember {
            name: name.into(),
            mode: 0o644,
            data: data.to_vec(),
        }
    }

    #[test]
    fn round_trip_keeps_order_modes_and_contents() {
        let members = vec![
            member("b", b"second"),
            ArchiveMember {
                name: "a".into(),
                mode: 0o600,
                data: vec![7; 1000],
            },
            member("empty", b""),
        ];
        let parsed = parse_archive(&write_archive(&members), &Limits::default()).unwrap();
        let got: Vec<_> = parsed
            .members
            .iter()
            .map(|m| (m.name.as_str(), m.mode, m.data.clone()))
            .collect();
        let want: Vec<_> = members
            .iter()
            .map(|m| (m.name.as_str(), m.mode, m.data.clone()))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn writer_is_deterministic() {
        let members = vec![member("x", b"hello")];
        assert_eq!(write_archive(&members), write_archive(&members));
    }

    #[test]
    fn trailing_garbage_after_gzip_is_refused() {
        let mut bytes = write_archive(&[member("x", b"hello")]);
        bytes.push(0);
        assert!(matches!(
            parse_archive(&bytes, &Limits::default()),
            Err(ArchiveError::Gzip(_))
        ));
    }

    #[test]
    fn entry_count_limit_is_enforced() {
        let members: Vec<_> = (0..5).map(|i| member(&format!("f{i}"), b"x")).collect();
        let limits = Limits {
            max_entries: 4,
            ..Limits::default()
        };
        assert_eq!(
            parse_archive(&write_archive(&members), &limits).unwrap_err(),
            ArchiveError::TooManyMembers { limit: 4 }
        );
    }

    #[test]
    fn member_size_limit_is_enforced() {
        let limits = Limits {
            max_member: 10,
            ..Limits::default()
        };
        let err = parse_archive(&write_archive(&[member("big", &[1; 11])]), &limits).unwrap_err();
        assert!(
            matches!(err, ArchiveError::MemberTooLarge { size: 11, .. }),
            "{err}"
        );
    }

    #[test]
    fn compressed_size_limit_is_enforced() {
        let limits = Limits {
            max_compressed: 20,
            ..Limits::default()
        };
        let err = parse_archive(&write_archive(&[member("x", b"y")]), &limits).unwrap_err();
        assert!(matches!(err, ArchiveError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn zeros_bomb_is_stopped_at_the_ratio_limit() {
        // 16 MiB of zeros compress to ~16 KiB: a ratio of about 1000.
        let bomb = write_archive(&[member("z", &vec![0; 16 << 20])]);
        let err = parse_archive(&bomb, &Limits::default()).unwrap_err();
        assert!(matches!(err, ArchiveError::Bomb { .. }), "{err}");
    }
}
