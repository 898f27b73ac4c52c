//! The state directory (`/var/lib/ovs-bundle`): numbered generations of applied bundles, which one
//! is current, the highest serial applied, and the in-progress marker that makes a crash
//! mid-apply recoverable. Every write is atomic and goes through the [`System`] seam.

use crate::state::HostState;
use crate::system::{SysError, System};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// How many generations an apply keeps (older ones are deleted after it commits).
pub const DEFAULT_KEEP: usize = 10;

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
    /// `net.ipv4.ip_forward` as it was before ovs-bundle turned it on for a forwarder; kept
    /// while a forwarder needs forwarding, put back when a generation without one follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_forward_before: Option<String>,
    /// `net.ipv6.conf.all.forwarding` likewise, for an IPv6 forwarder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6_forward_before: Option<String>,
}

/// Written before the first change of an apply, removed after the last: if it is found, that
/// apply was interrupted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    pub target: u64,
    pub previous: Option<u64>,
    pub before: HostState,
    /// Interfaces that the apply cycles with ifdown/ifup, to cycle again when restoring.
    pub cycled: Vec<String>,
    /// Whether the apply created generation `target` (undoing it removes that generation; a
    /// rollback to an existing generation must not).
    #[serde(default)]
    pub created: bool,
    /// The highest serial recorded before the apply, put back when it is undone.
    #[serde(default)]
    pub highest_before: Option<u64>,
}

/// An `applier try` that has not been confirmed yet (`try.json`). Written before the apply it
/// guards, so that a crash or power loss at any point leaves a record that boot acts on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingTry {
    /// The generation on trial; `None` while its apply is still running.
    pub generation: Option<u64>,
    /// The generation a revert goes back to (current when the try began).
    pub previous: u64,
    /// Unix times: when the try began and when it reverts unless confirmed.
    pub started: u64,
    pub deadline: u64,
    /// How long checks may take to pass for the first time (tunnels and IKE need a moment).
    pub settle_secs: u64,
    /// The operator's `--check` commands (run with `/bin/sh -c`).
    pub checks: Vec<String>,
    /// Whether the built-in checks run (underlay routes, IPsec SAs).
    pub builtin_checks: bool,
    /// The kernel's boot id when the try began: a different one at boot means the host
    /// restarted before confirmation, and boot reverts.
    pub boot_id: String,
}

/// How the last try ended (`last-try.json`), for `status` and `confirm` to report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TryResult {
    pub generation: Option<u64>,
    pub previous: u64,
    /// `confirmed`, `reverted`, `rolled-back` or `revert-failed`.
    pub result: String,
    pub reason: String,
    pub at: u64,
}

impl Store {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Store { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates the state directory, readable by root only (generations hold PSKs).
    pub fn init(&self, sys: &mut dyn System) -> Result<(), SysError> {
        for d in [
            self.dir.clone(),
            self.dir.join("generations"),
            self.dir.join("incoming"),
        ] {
            sys.create_dir(&d, 0o700)?;
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

    /// The highest serial applied here. A damaged record does not stop anything: the highest
    /// serial of the generations kept stands in for it (a lower bound), and the next commit
    /// writes it anew.
    pub fn highest_serial(&self, sys: &mut dyn System) -> Result<Option<u64>, SysError> {
        match self.read_number(sys, "highest-serial") {
            Ok(v) => Ok(v),
            Err(SysError::File { .. }) => {
                let mut highest = None;
                for n in self.generations(sys)? {
                    if let Ok(m) = self.meta(sys, n) {
                        highest = highest.max(Some(m.serial));
                    }
                }
                Ok(highest)
            }
            Err(e) => Err(e),
        }
    }

    /// Generation numbers present, ascending.
    pub fn generations(&self, sys: &mut dyn System) -> Result<Vec<u64>, SysError> {
        let mut out = Vec::new();
        for name in sys.list_dir(&self.dir.join("generations"))? {
            let Ok(n) = name.parse::<u64>() else { continue };
            if sys
                .list_dir(&self.gen_dir(n))?
                .iter()
                .any(|f| f == "meta.json")
            {
                out.push(n);
            }
        }
        out.sort_unstable();
        Ok(out)
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

    pub fn next_number(&self, sys: &mut dyn System) -> Result<u64, SysError> {
        Ok(self.generations(sys)?.last().map_or(1, |n| n + 1))
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
        sys.remove_dir(&self.gen_dir(n))
    }

    /// The commit point: records `serial` if it is the highest yet, then makes `n` current. The
    /// serial goes first, so no crash can leave `n` current without its serial recorded (the
    /// replay ratchet); a crash between the two is undone like any interrupted apply, which puts
    /// the recorded serial back ([`Store::set_highest_serial`]).
    pub fn switch(&self, sys: &mut dyn System, n: u64, serial: u64) -> Result<(), SysError> {
        if self.highest_serial(sys)?.is_none_or(|h| serial > h) {
            self.set_highest_serial(sys, Some(serial))?;
        }
        sys.write_file(
            &self.dir.join("current"),
            format!("{n}\n").as_bytes(),
            0o600,
        )
    }

    /// Records `serial` as the highest applied (`None`: nothing applied yet).
    pub fn set_highest_serial(
        &self,
        sys: &mut dyn System,
        serial: Option<u64>,
    ) -> Result<(), SysError> {
        let path = self.dir.join("highest-serial");
        match serial {
            Some(s) => sys.write_file(&path, format!("{s}\n").as_bytes(), 0o600),
            None => sys.remove_file(&path),
        }
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

    fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        sys: &mut dyn System,
        name: &str,
    ) -> Result<Option<T>, SysError> {
        let path = self.dir.join(name);
        match sys.read_file(&path)? {
            None => Ok(None),
            Some(d) => serde_json::from_slice(&d)
                .map(Some)
                .map_err(|e| SysError::File {
                    path,
                    source: std::io::Error::other(format!("{e}; the state directory is damaged")),
                }),
        }
    }

    fn write_json<T: Serialize>(
        &self,
        sys: &mut dyn System,
        name: &str,
        v: &T,
    ) -> Result<(), SysError> {
        let data = serde_json::to_vec_pretty(v).expect("serializes");
        sys.write_file(&self.dir.join(name), &data, 0o600)
    }

    /// The try waiting for confirmation, if any.
    pub fn pending_try(&self, sys: &mut dyn System) -> Result<Option<PendingTry>, SysError> {
        self.read_json(sys, "try.json")
    }

    pub fn write_pending_try(&self, sys: &mut dyn System, t: &PendingTry) -> Result<(), SysError> {
        self.write_json(sys, "try.json", t)
    }

    /// Ends the pending try, recording how (the record goes first: a crash in between leaves
    /// the try pending, which is the safe side).
    pub fn end_try(&self, sys: &mut dyn System, r: &TryResult) -> Result<(), SysError> {
        self.write_json(sys, "last-try.json", r)?;
        sys.remove_file(&self.dir.join("try.json"))
    }

    pub fn last_try(&self, sys: &mut dyn System) -> Result<Option<TryResult>, SysError> {
        self.read_json(sys, "last-try.json")
    }

    /// Where a detached try watcher writes what it does (root only).
    pub fn try_log_path(&self) -> PathBuf {
        self.dir.join("try.log")
    }

    pub fn write_marker(&self, sys: &mut dyn System, m: &Marker) -> Result<(), SysError> {
        let data = serde_json::to_vec(m).expect("serializes");
        sys.write_file(&self.marker_path(), &data, 0o600)
    }

    pub fn remove_marker(&self, sys: &mut dyn System) -> Result<(), SysError> {
        sys.remove_file(&self.marker_path())
    }

    /// Deletes all but the newest `keep` generations, never one in `protect`. Returns what it
    /// deleted. A generation's files go meta first, so a crash in between leaves no half-listed
    /// generation behind.
    pub fn prune(
        &self,
        sys: &mut dyn System,
        keep: usize,
        protect: &[u64],
    ) -> Result<Vec<u64>, SysError> {
        let gens = self.generations(sys)?;
        let old = gens.len().saturating_sub(keep);
        let mut deleted = Vec::new();
        for n in gens.into_iter().take(old) {
            if protect.contains(&n) {
                continue;
            }
            self.remove_generation(sys, n)?;
            deleted.push(n);
        }
        Ok(deleted)
    }
}
