//! Writing an import's files: nothing is overwritten unless asked (`--force`), which is checked
//! for every file before the first is written, and each file is written atomically (a new
//! temporary file in the same directory, synced, then renamed over the name), so a crash leaves
//! either the old file or the new one. PSK files are created with mode 0600 from the start, in a
//! directory of mode 0700, and never exist with wider permissions.

use super::OutFile;
use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(
        "refusing to overwrite {} existing file(s) in {}: {}; pass --force to replace them, or \
         choose another --out",
        .0.len(),
        .1.display(),
        .0.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    Exists(Vec<PathBuf>, PathBuf),
    #[error("writing {}: {source}; files written before it stay", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Writes `files` under `out`; returns the paths written, in order.
pub fn write_all(out: &Path, files: &[OutFile], force: bool) -> Result<Vec<PathBuf>, WriteError> {
    if !force {
        let existing: Vec<PathBuf> = files
            .iter()
            .map(|f| out.join(&f.rel))
            .filter(|p| p.symlink_metadata().is_ok())
            .collect();
        if !existing.is_empty() {
            return Err(WriteError::Exists(existing, out.to_path_buf()));
        }
    }
    let mut written = Vec::new();
    for f in files {
        let path = out.join(&f.rel);
        let io = |source| WriteError::Io {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent() {
            // Directories holding PSKs are private; the others are ordinary.
            let mode = if f.mode == 0o600 { 0o700 } else { 0o755 };
            DirBuilder::new()
                .recursive(true)
                .mode(mode)
                .create(dir)
                .map_err(io)?;
        }
        atomic_write(&path, &f.bytes, f.mode).map_err(io)?;
        written.push(path);
    }
    Ok(written)
}

fn atomic_write(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.import-tmp"));
    // A leftover from a crashed run; create_new below then refuses anything else in its way
    // (including a symbolic link planted there).
    let _ = std::fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    let result = f
        .write_all(bytes)
        .and_then(|()| f.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn refuses_to_overwrite_unless_forced_and_psks_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let files = vec![
            OutFile {
                rel: "hosts/a.toml".into(),
                bytes: b"x".to_vec(),
                mode: 0o644,
            },
            OutFile {
                rel: "secrets/a.psk".into(),
                bytes: b"k".to_vec(),
                mode: 0o600,
            },
        ];
        write_all(dir.path(), &files, false).unwrap();
        let mode = |p: &str| {
            std::fs::metadata(dir.path().join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("secrets/a.psk"), 0o600);
        assert_eq!(mode("secrets"), 0o700);
        let e = write_all(dir.path(), &files, false).unwrap_err();
        assert!(e.to_string().contains("pass --force"), "{e}");
        write_all(dir.path(), &files, true).unwrap();
        let left: Vec<_> = std::fs::read_dir(dir.path().join("hosts"))
            .unwrap()
            .collect();
        assert_eq!(left.len(), 1, "a temporary file was left");
    }
}
