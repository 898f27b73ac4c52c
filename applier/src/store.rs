//! The state directory (`/var/lib/ovs-bundle`): numbered generations of applied bundles, which one
//! is current, the highest serial applied, and the in-progress marker that makes a crash
//! mid-apply recoverable. Every write is atomic and goes through the [`System`] seam.

use crate::firewall::Chains;
use crate::system::{SysError, System};
use bundle::OvsState;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

/// What is recorded about each generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenMeta {
    pub host: String,
    pub serial: u64,
    /// SHA-256 of the bundle file.
    pub sha256: String,
    /// Unix time the generation became current.
    pub applied_at: u64,
    /// For a `--gre-only` apply: the generation whose non-GRE state it keeps.
    pub gre_only_base: Option<u64>,
}

/// The host's state before an apply started: what a rollback or crash recovery restores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Snapshot {
    pub ovs: OvsState,
    pub chains: Chains,
    pub interfaces: Option<Vec<u8>>,
    pub sysctl: Option<Vec<u8>>,
    pub ip_forward: Option<Vec<u8>>,
}

/// Written before the first change of an apply, removed after the last: if it is found, that
/// apply was interrupted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    pub target: u64,
    pub previous: Option<u64>,
    pub before: Snapshot,
    /// Interfaces that the apply cycles with ifdown/ifup, to cycle again when restoring.
    pub cycled: Vec<String>,
}

impl Store {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Store { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates the state directory, readable by root only (generations hold PSKs).
    pub fn init(&self) -> std::io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        for d in [
            self.dir.clone(),
            self.dir.join("generations"),
            self.dir.join("incoming"),
        ] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&d)?;
        }
        Ok(())
    }

    pub fn lock_path(&self) -> PathBuf {
        self.dir.join("lock")
    }

    pub fn incoming_dir(&self) -> PathBuf {
        self.dir.join("incoming")
    }

    fn gen_dir(&self, n: u64) -> PathBuf {
        self.dir.join("generations").join(n.to_string())
    }

    pub fn bundle_path(&self, n: u64) -> PathBuf {
        self.gen_dir(n).join("bundle.tgz")
    }

    fn marker_path(&self) -> PathBuf {
        self.dir.join("in-progress.json")
    }

    fn read_number(&self, sys: &mut dyn System, name: &str) -> Result<Option<u64>, SysError> {
        let path = self.dir.join(name);
        match sys.read_file(&path)? {
            None => Ok(None),
            Some(d) => String::from_utf8_lossy(&d)
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| SysError::File {
                    path,
                    source: std::io::Error::other("not a number; the state directory is damaged"),
                }),
        }
    }

    pub fn current(&self, sys: &mut dyn System) -> Result<Option<u64>, SysError> {
        self.read_number(sys, "current")
    }

    pub fn highest_serial(&self, sys: &mut dyn System) -> Result<Option<u64>, SysError> {
        self.read_number(sys, "highest-serial")
    }

    /// Generation numbers present, ascending.
    pub fn generations(&self) -> Vec<u64> {
        let mut out: Vec<u64> = std::fs::read_dir(self.dir.join("generations"))
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .filter(|n| self.gen_dir(*n).join("meta.json").exists())
            .collect();
        out.sort_unstable();
        out
    }

    pub fn meta(&self, sys: &mut dyn System, n: u64) -> Result<GenMeta, SysError> {
        let path = self.gen_dir(n).join("meta.json");
        let data = sys.read_file(&path)?.ok_or_else(|| SysError::File {
            path: path.clone(),
            source: std::io::ErrorKind::NotFound.into(),
        })?;
        serde_json::from_slice(&data).map_err(|e| SysError::File {
            path,
            source: std::io::Error::other(e),
        })
    }

    pub fn bundle(&self, sys: &mut dyn System, n: u64) -> Result<Vec<u8>, SysError> {
        let path = self.bundle_path(n);
        sys.read_file(&path)?.ok_or_else(|| SysError::File {
            path,
            source: std::io::ErrorKind::NotFound.into(),
        })
    }

    pub fn next_number(&self) -> u64 {
        self.generations().last().map_or(1, |n| n + 1)
    }

    /// Writes a generation's files. It counts as present only once `meta.json` exists, which is
    /// written last.
    pub fn write_generation(
        &self,
        sys: &mut dyn System,
        n: u64,
        bundle: &[u8],
        meta: &GenMeta,
    ) -> Result<(), SysError> {
        sys.write_file(&self.bundle_path(n), bundle, 0o600)?;
        let meta = serde_json::to_vec_pretty(meta).expect("serializes");
        sys.write_file(&self.gen_dir(n).join("meta.json"), &meta, 0o600)
    }

    pub fn remove_generation(&self, sys: &mut dyn System, n: u64) -> Result<(), SysError> {
        sys.remove_file(&self.gen_dir(n).join("meta.json"))?;
        sys.remove_file(&self.bundle_path(n))?;
        let _ = std::fs::remove_dir(self.gen_dir(n));
        Ok(())
    }

    /// Makes `n` current and records `serial` if it is the highest yet: the commit point.
    pub fn switch(&self, sys: &mut dyn System, n: u64, serial: u64) -> Result<(), SysError> {
        sys.write_file(
            &self.dir.join("current"),
            format!("{n}\n").as_bytes(),
            0o600,
        )?;
        if self.highest_serial(sys)?.is_none_or(|h| serial > h) {
            sys.write_file(
                &self.dir.join("highest-serial"),
                format!("{serial}\n").as_bytes(),
                0o600,
            )?;
        }
        Ok(())
    }

    pub fn marker(&self, sys: &mut dyn System) -> Result<Option<Marker>, SysError> {
        let path = self.marker_path();
        match sys.read_file(&path)? {
            None => Ok(None),
            Some(d) => serde_json::from_slice(&d)
                .map(Some)
                .map_err(|e| SysError::File {
                    path,
                    source: std::io::Error::other(e),
                }),
        }
    }

    pub fn write_marker(&self, sys: &mut dyn System, m: &Marker) -> Result<(), SysError> {
        let data = serde_json::to_vec(m).expect("serializes");
        sys.write_file(&self.marker_path(), &data, 0o600)
    }

    pub fn remove_marker(&self, sys: &mut dyn System) -> Result<(), SysError> {
        sys.remove_file(&self.marker_path())
    }
}
