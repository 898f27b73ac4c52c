//! Hardening of the applier process itself: no core dumps (it holds PSKs), bounded reads of
//! bundle files (a bundle path may name anything), and the exit status of errors that carry one.

use bundle::Exit;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// Makes this process impossible to dump: no core file (`RLIMIT_CORE` 0, soft and hard, so it
/// cannot be raised again) and not dumpable (`PR_SET_DUMPABLE` 0, which also keeps processes of
/// the same user from reading its memory through `/proc/PID/mem` or `ptrace`). Called first in
/// `main`: the applier holds PSKs in memory.
pub fn no_core_dumps() -> std::io::Result<()> {
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0)?;
    nix::sys::prctl::set_dumpable(false)?;
    Ok(())
}

/// Why a bundle file was not read.
#[derive(Debug, thiserror::Error)]
pub enum ReadBundleError {
    #[error("cannot open bundle {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "bundle {path} is not a regular file but a {kind}: pass the path of a bundle (.tgz) file"
    )]
    NotRegular { path: String, kind: &'static str },
    #[error("bundle {path} is {size} bytes, over the limit of {limit} for a compressed bundle: not a bundle the builder makes")]
    TooLarge { path: String, size: u64, limit: u64 },
    #[error("reading bundle {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
}

impl ReadBundleError {
    /// What this failure means to a script: a bundle over the size limit is malformed (11),
    /// the rest are plain failures (1).
    pub fn exit(&self) -> Exit {
        match self {
            ReadBundleError::TooLarge { .. } => Exit::Malformed,
            _ => Exit::Failed,
        }
    }
}

/// Reads the bundle file at `path`, refusing one larger than the compressed bundle limit
/// ([`bundle::Limits`]`::max_compressed`, 32 MiB) without reading it whole.
pub fn read_bundle_file(path: &Path) -> Result<Vec<u8>, ReadBundleError> {
    read_bounded(path, bundle::Limits::default().max_compressed)
}

/// [`read_bundle_file`] with another limit. The file is opened without blocking (`O_NONBLOCK`:
/// opening a FIFO with no writer would otherwise wait forever) and checked on the open
/// descriptor (`fstat`, so it cannot be swapped after the check) to be a regular file of at most
/// `limit` bytes; then at most `limit + 1` bytes are read, in case it grew meanwhile.
pub fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, ReadBundleError> {
    let name = || path.display().to_string();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits() | nix::fcntl::OFlag::O_NOCTTY.bits())
        .open(path)
        .map_err(|source| ReadBundleError::Open {
            path: name(),
            source,
        })?;
    let meta = file.metadata().map_err(|source| ReadBundleError::Read {
        path: name(),
        source,
    })?;
    let kind = meta.file_type();
    if !kind.is_file() {
        let kind = if kind.is_dir() {
            "directory"
        } else if kind.is_fifo() {
            "FIFO"
        } else if kind.is_char_device() {
            "character device"
        } else if kind.is_block_device() {
            "block device"
        } else if kind.is_socket() {
            "socket"
        } else {
            "special file"
        };
        return Err(ReadBundleError::NotRegular { path: name(), kind });
    }
    if meta.len() > limit {
        return Err(ReadBundleError::TooLarge {
            path: name(),
            size: meta.len(),
            limit,
        });
    }
    let mut data = Vec::with_capacity(meta.len() as usize);
    file.take(limit + 1)
        .read_to_end(&mut data)
        .map_err(|source| ReadBundleError::Read {
            path: name(),
            source,
        })?;
    if data.len() as u64 > limit {
        return Err(ReadBundleError::TooLarge {
            path: name(),
            size: data.len() as u64,
            limit,
        });
    }
    Ok(data)
}

/// The exit status an error stands for, if it (or anything in its chain) carries one: a
/// [`crate::trust::TrustError`] (an unreadable revocation is 10) or a [`ReadBundleError`] (over
/// the size limit is 11); otherwise [`Exit::Failed`].
pub fn exit_for(err: &anyhow::Error) -> Exit {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<crate::trust::TrustError>() {
            return e.exit();
        }
        if let Some(e) = cause.downcast_ref::<ReadBundleError>() {
            return e.exit();
        }
    }
    Exit::Failed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_bundle_file_within_the_limit_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.tgz");
        std::fs::write(&p, b"0123456789").unwrap();
        assert_eq!(read_bounded(&p, 10).unwrap(), b"0123456789");
        assert_eq!(read_bundle_file(&p).unwrap(), b"0123456789");
    }

    /// A sparse file of 32 MiB + 1 byte: refused from its size, and quickly, without a read.
    #[test]
    fn a_file_over_the_limit_is_refused_from_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("huge.tgz");
        let f = std::fs::File::create(&p).unwrap();
        f.set_len((32 << 20) + 1).unwrap();
        let err = read_bundle_file(&p).unwrap_err();
        assert!(
            matches!(err, ReadBundleError::TooLarge { size, limit, .. } if size == (32 << 20) + 1 && limit == 32 << 20),
            "{err}"
        );
        assert!(err.to_string().contains("huge.tgz"), "{err}");
        assert_eq!(err.exit(), Exit::Malformed);
        // Exactly at the limit is fine.
        f.set_len(32 << 20).unwrap();
        assert_eq!(read_bundle_file(&p).unwrap().len(), 32 << 20);
    }

    /// A file whose size says nothing (like those in /proc, which say 0) is still read no
    /// further than the limit.
    #[test]
    fn the_read_itself_stops_past_the_limit() {
        let err = read_bounded(Path::new("/proc/self/status"), 64).unwrap_err();
        assert!(
            matches!(
                err,
                ReadBundleError::TooLarge {
                    size: 65,
                    limit: 64,
                    ..
                }
            ),
            "{err}"
        );
    }

    /// A FIFO with no writer: without `O_NONBLOCK` the open would wait forever.
    #[test]
    fn fifos_devices_and_directories_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo.tgz");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let path = fifo.clone();
        std::thread::spawn(move || tx.send(read_bundle_file(&path)).unwrap());
        let err = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("read_bundle_file blocked on a FIFO")
            .unwrap_err();
        assert!(
            matches!(err, ReadBundleError::NotRegular { kind: "FIFO", .. }),
            "{err}"
        );
        assert!(err.to_string().contains("fifo.tgz"), "{err}");
        for (p, kind) in [
            (Path::new("/dev/zero"), "character device"),
            (dir.path(), "directory"),
        ] {
            let err = read_bundle_file(p).unwrap_err();
            assert!(
                matches!(err, ReadBundleError::NotRegular { kind: k, .. } if k == kind),
                "{err}"
            );
        }
        let err = read_bundle_file(&dir.path().join("missing.tgz")).unwrap_err();
        assert!(matches!(err, ReadBundleError::Open { .. }), "{err}");
    }

    #[test]
    fn errors_carry_their_exit_status_through_context() {
        use anyhow::Context;
        let revocation: anyhow::Error =
            Err::<(), _>(crate::trust::TrustError::UnreadableRevocation {
                path: "r.pub".into(),
                reason: "junk".into(),
            })
            .context("reading revoked keys")
            .unwrap_err();
        assert_eq!(exit_for(&revocation), Exit::NotAuthentic);
        assert_eq!(exit_for(&anyhow::anyhow!("other")), Exit::Failed);
    }

    /// In a child process (this test binary re-run on this test alone), so the test process
    /// itself stays dumpable.
    #[test]
    fn no_core_dumps_sets_the_limit_and_the_flag() {
        if std::env::var_os("OVSB_HARDEN_CHILD").is_some() {
            no_core_dumps().unwrap();
            assert_eq!(
                nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_CORE).unwrap(),
                (0, 0)
            );
            assert!(!nix::sys::prctl::get_dumpable().unwrap());
            return;
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "harden::tests::no_core_dumps_sets_the_limit_and_the_flag",
                "--nocapture",
            ])
            .env("OVSB_HARDEN_CHILD", "1")
            .output()
            .unwrap();
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("1 passed"),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
