//! The archive layer: a deterministic writer and a strict, bounded reader.
//!
//! The reader accepts only the canonical layout the writer produces (one gzip member with a fixed
//! header; ustar headers of regular files with plain names; zero padding; zero end blocks), so that
//! every byte of a bundle is covered by a check: header bytes by the tar checksum, contents by the
//! signed SHA-256s, padding and trailer by being required to be zero, the gzip body by its CRC.
//! Nothing is decompressed past [`Limits`], which bounds gzip and tar bombs.
//!
//! Over 500 lines with its tests (about a third): the canonical reader and writer are one
//! format, checked against each other.

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
/// Reads every member; [`MemberReader`] reads them one at a time.
pub fn parse_archive(compressed: &[u8], limits: &Limits) -> Result<ParsedArchive, ArchiveError> {
    let mut reader = MemberReader::new(compressed, limits)?;
    let mut members = Vec::new();
    while let Some(header) = reader.next_header()? {
        let data = reader.read_data()?;
        members.push(RawMember {
            name: header.name,
            mode: header.mode,
            data,
        });
    }
    Ok(ParsedArchive { members })
}

/// A member's header: what the archive says the member is, before its data is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberHeader {
    pub name: String,
    pub mode: u32,
    pub size: u64,
}

/// Reads an archive one member at a time, decompressing only as far as it is asked to: a caller
/// can read the first members (the manifest and its signature), check them, and refuse the
/// bundle before the rest is decompressed at all. The rules are those of [`parse_archive`]:
/// every header is checked before its data is read, no read goes past [`Limits`], and the end of
/// the archive (zero trailer, gzip CRC and length, nothing after the gzip stream) is checked when
/// [`MemberReader::next_header`] reaches it.
pub struct MemberReader<'a> {
    decoder: flate2::bufread::GzDecoder<&'a [u8]>,
    compressed_len: u64,
    limits: Limits,
    /// Most bytes of tar stream that will be decompressed (the bomb limit).
    limit: u64,
    /// Bytes of tar stream decompressed so far (the offset in the tar stream).
    pos: u64,
    names: Vec<String>,
    /// The size of the member whose header was read last and whose data was not read yet.
    pending: Option<u64>,
    done: bool,
}

impl<'a> MemberReader<'a> {
    /// Checks the compressed size and the gzip header; decompresses nothing yet.
    pub fn new(compressed: &'a [u8], limits: &Limits) -> Result<Self, ArchiveError> {
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
        Ok(MemberReader {
            decoder: flate2::bufread::GzDecoder::new(compressed),
            compressed_len: size,
            limits: *limits,
            limit: limits
                .max_uncompressed
                .min((1 << 20) + size.saturating_mul(limits.max_ratio)),
            pos: 0,
            names: Vec::new(),
            pending: None,
            done: false,
        })
    }

    /// Bytes of tar stream decompressed so far.
    pub fn decompressed(&self) -> u64 {
        self.pos
    }

    /// Bytes of the compressed input the decompressor has consumed so far.
    pub fn compressed_consumed(&self) -> u64 {
        self.compressed_len - self.decoder.get_ref().len() as u64
    }

    fn bad(&self, offset: u64, reason: &str) -> ArchiveError {
        ArchiveError::Tar {
            offset: offset as usize,
            reason: reason.to_string(),
        }
    }

    /// Up to `n` more bytes of the tar stream (fewer only at its end), never past the limit.
    fn read_up_to(&mut self, n: u64) -> Result<Vec<u8>, ArchiveError> {
        if self.pos.saturating_add(n) > self.limit {
            return Err(ArchiveError::Bomb { limit: self.limit });
        }
        let mut out = Vec::with_capacity(n.min(1 << 20) as usize);
        (&mut self.decoder)
            .take(n)
            .read_to_end(&mut out)
            .map_err(|e| ArchiveError::Gzip(e.to_string()))?;
        self.pos += out.len() as u64;
        Ok(out)
    }

    /// The next member's header, checked; `None` at the end of the archive, once everything
    /// after the last member has been checked. The data of a member whose header was read but
    /// not its data is skipped (read, bounded, and dropped).
    pub fn next_header(&mut self) -> Result<Option<MemberHeader>, ArchiveError> {
        if self.done {
            return Ok(None);
        }
        if self.pending.is_some() {
            self.read_data()?;
        }
        let at = self.pos;
        let block = self.read_up_to(BLOCK as u64)?;
        if block.len() < BLOCK {
            return Err(self.bad(at, "archive ends without end-of-archive blocks"));
        }
        if block.iter().all(|&b| b == 0) {
            self.end(at)?;
            return Ok(None);
        }
        if self.names.len() == self.limits.max_entries {
            return Err(ArchiveError::TooManyMembers {
                limit: self.limits.max_entries,
            });
        }
        let header = tar::Header::from_byte_slice(&block);
        let stored = header
            .cksum()
            .map_err(|_| self.bad(at, "unreadable header checksum"))?;
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
            return Err(self.bad(at, "header checksum mismatch"));
        }
        let ustar = header
            .as_ustar()
            .ok_or_else(|| self.bad(at, "not a ustar header"))?;
        if ustar.prefix.iter().any(|&b| b != 0) {
            return Err(ArchiveError::BadName {
                name: String::from_utf8_lossy(&header.path_bytes()).into_owned(),
            });
        }
        let name = String::from_utf8(header.path_bytes().into_owned())
            .map_err(|_| self.bad(at, "member name is not UTF-8"))?;
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
            .map_err(|_| self.bad(at, "unreadable size"))?;
        // Checked before anything of the data is decompressed.
        if self
            .pos
            .saturating_add(size.div_ceil(BLOCK as u64) * BLOCK as u64)
            > self.limit
        {
            return Err(ArchiveError::Bomb { limit: self.limit });
        }
        if size > self.limits.max_member {
            return Err(ArchiveError::MemberTooLarge {
                name,
                size,
                limit: self.limits.max_member,
            });
        }
        let mode = header.mode().map_err(|_| self.bad(at, "unreadable mode"))?;
        if self.names.contains(&name) {
            return Err(ArchiveError::Duplicate { name });
        }
        self.names.push(name.clone());
        self.pending = Some(size);
        Ok(Some(MemberHeader { name, mode, size }))
    }

    /// The data of the member whose header [`MemberReader::next_header`] returned last, its
    /// padding checked. Reads exactly the size the header states (already checked against the
    /// limits).
    pub fn read_data(&mut self) -> Result<Vec<u8>, ArchiveError> {
        let Some(size) = self.pending.take() else {
            return Ok(Vec::new());
        };
        let at = self.pos;
        let data = self.read_up_to(size)?;
        if (data.len() as u64) < size {
            return Err(self.bad(at - BLOCK as u64, "member runs past the end of the archive"));
        }
        let padding = size.div_ceil(BLOCK as u64) * BLOCK as u64 - size;
        let end = self.pos;
        let pad = self.read_up_to(padding)?;
        if pad.len() as u64 != padding || pad.iter().any(|&b| b != 0) {
            return Err(self.bad(end, "member padding is not zero"));
        }
        Ok(data)
    }

    /// After the first end-of-archive block at `at`: at least one more, only zeros up to the
    /// end of the gzip stream (whose CRC and length the decoder checks there), and nothing
    /// after it.
    fn end(&mut self, at: u64) -> Result<(), ArchiveError> {
        let mut rest = Vec::new();
        (&mut self.decoder)
            .take(self.limit - self.pos + 1)
            .read_to_end(&mut rest)
            .map_err(|e| ArchiveError::Gzip(e.to_string()))?;
        self.pos += rest.len() as u64;
        if self.pos > self.limit {
            return Err(ArchiveError::Bomb { limit: self.limit });
        }
        if !self.pos.is_multiple_of(BLOCK as u64) {
            return Err(self.bad(self.pos, "length is not a multiple of 512"));
        }
        if rest.len() < BLOCK {
            return Err(self.bad(at, "only one end-of-archive block"));
        }
        if let Some(i) = rest.iter().position(|&b| b != 0) {
            return Err(self.bad(
                at + BLOCK as u64 + i as u64,
                "non-zero bytes after end of archive",
            ));
        }
        if !self.decoder.get_ref().is_empty() {
            return Err(ArchiveError::Gzip(
                "data after the end of the gzip stream".into(),
            ));
        }
        self.done = true;
        Ok(())
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

    /// Incompressible bytes: what is read of them shows in the compressed bytes consumed.
    fn noise(len: usize) -> Vec<u8> {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn the_reader_decompresses_nothing_past_the_members_it_was_asked_for() {
        let big = noise(4 << 20);
        let bytes = write_archive(&[member("a", b"first"), member("big", &big), member("c", b"")]);
        assert!(bytes.len() > 4 << 20);
        let mut r = MemberReader::new(&bytes, &Limits::default()).unwrap();
        assert_eq!(r.decompressed(), 0);
        let h = r.next_header().unwrap().unwrap();
        assert_eq!((h.name.as_str(), h.size), ("a", 5));
        assert_eq!(r.read_data().unwrap(), b"first");
        let h = r.next_header().unwrap().unwrap();
        assert_eq!((h.name.as_str(), h.size), ("big", 4 << 20));
        // Three blocks decompressed (two headers, one data block); of the compressed input, no
        // more than deflate's look-ahead.
        assert_eq!(r.decompressed(), 3 * 512);
        assert!(
            r.compressed_consumed() < 64 << 10,
            "{}",
            r.compressed_consumed()
        );
        // Going on reads it all, and checks the end.
        assert_eq!(r.read_data().unwrap(), big);
        assert_eq!(r.next_header().unwrap().unwrap().name, "c");
        assert_eq!(r.next_header().unwrap(), None);
        assert_eq!(r.compressed_consumed(), bytes.len() as u64);
    }

    #[test]
    fn a_member_over_the_limits_is_refused_from_its_header_before_its_data() {
        let limits = Limits {
            max_member: 1 << 20,
            ..Limits::default()
        };
        let bytes = write_archive(&[member("a", b"x"), member("big", &noise(2 << 20))]);
        let mut r = MemberReader::new(&bytes, &limits).unwrap();
        r.next_header().unwrap();
        r.read_data().unwrap();
        let err = r.next_header().unwrap_err();
        assert!(
            matches!(err, ArchiveError::MemberTooLarge { size, .. } if size == 2 << 20),
            "{err}"
        );
        assert_eq!(r.decompressed(), 3 * 512);
        assert!(r.compressed_consumed() < 64 << 10);
    }

    #[test]
    fn zeros_bomb_is_stopped_at_the_ratio_limit() {
        // 16 MiB of zeros compress to ~16 KiB: a ratio of about 1000.
        let bomb = write_archive(&[member("z", &vec![0; 16 << 20])]);
        let err = parse_archive(&bomb, &Limits::default()).unwrap_err();
        assert!(matches!(err, ArchiveError::Bomb { .. }), "{err}");
        // Refused from the member's header: none of it was decompressed.
        let mut r = MemberReader::new(&bomb, &Limits::default()).unwrap();
        assert!(matches!(r.next_header(), Err(ArchiveError::Bomb { .. })));
        assert_eq!(r.decompressed(), 512);
    }

    #[test]
    fn a_trailer_of_zeros_past_the_limit_is_a_bomb_too() {
        let mut tar = write_archive(&[member("x", b"y")]);
        // Rebuild with a long run of zeros after the end blocks.
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&tar[..])
            .read_to_end(&mut plain)
            .unwrap();
        plain.resize(plain.len() + (8 << 20), 0);
        let mut gz = flate2::GzBuilder::new()
            .mtime(0)
            .operating_system(0xff)
            .write(Vec::new(), flate2::Compression::default());
        gz.write_all(&plain).unwrap();
        tar = gz.finish().unwrap();
        let err = parse_archive(&tar, &Limits::default()).unwrap_err();
        assert!(matches!(err, ArchiveError::Bomb { .. }), "{err}");
    }

    #[test]
    fn a_corrupt_crc_is_refused_at_the_end() {
        let mut bytes = write_archive(&[member("x", b"hello")]);
        let n = bytes.len();
        bytes[n - 8] ^= 1; // the gzip trailer's CRC-32
        let err = parse_archive(&bytes, &Limits::default()).unwrap_err();
        assert!(matches!(err, ArchiveError::Gzip(_)), "{err}");
    }
}
