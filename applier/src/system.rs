//! The one seam for side effects. Everything the applier does to a host goes through [`System`]:
//! OVSDB, iptables, files, ifupdown. [`RealSystem`] does it for real; tests wrap it to inject a
//! failure at any step, while integration tests run the real thing in a namespace.

use crate::ovs::{self, Live};
use crate::ovsdb::{Connection, OvsdbError};
use serde_json::Value;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A failed step, with what it was doing.
#[derive(Debug, thiserror::Error)]
pub enum SysError {
    #[error(transparent)]
    Ovsdb(Box<OvsdbError>),
    #[error("{0}")]
    Ovs(String),
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{command} failed: {detail}")]
    Command { command: String, detail: String },
    #[error("{0}")]
    Injected(String),
}

impl From<OvsdbError> for SysError {
    fn from(e: OvsdbError) -> Self {
        SysError::Ovsdb(Box::new(e))
    }
}

pub trait System {
    fn ovs_read(&mut self) -> Result<Live, SysError>;
    /// Runs one transaction; returns the results of each operation.
    fn ovs_transact(&mut self, ops: &[Value]) -> Result<Vec<Value>, SysError>;
    /// Waits until ovs-vswitchd reports having applied configuration `cfg`.
    fn ovs_wait_applied(&mut self, cfg: i64) -> Result<(), SysError>;
    fn iptables_save(&mut self) -> Result<String, SysError>;
    /// `iptables-restore --noflush` (with `--test` when `test_only`).
    fn iptables_restore(&mut self, input: &str, test_only: bool) -> Result<(), SysError>;
    fn read_file(&mut self, path: &Path) -> Result<Option<Vec<u8>>, SysError>;
    /// Replaces `path` atomically: temporary file, fsync, rename, fsync of the directory.
    fn write_file(&mut self, path: &Path, data: &[u8], mode: u32) -> Result<(), SysError>;
    fn remove_file(&mut self, path: &Path) -> Result<(), SysError>;
    /// Writes a kernel setting (a file under /proc/sys: written in place, never created).
    fn write_sysctl(&mut self, path: &Path, value: &[u8]) -> Result<(), SysError>;
    /// `ifdown`/`ifup` of one interface, with the given interfaces file.
    fn ifupdown(&mut self, up: bool, iface: &str, interfaces: &Path) -> Result<(), SysError>;
    /// A named point between steps: tests use it to kill the process or fail there.
    fn step(&mut self, _name: &str) -> Result<(), SysError> {
        Ok(())
    }
}

/// The real host (or the namespace the process runs in).
pub struct RealSystem {
    pub ovsdb: PathBuf,
    pub timeout: Duration,
    pub ifstate_dir: PathBuf,
    conn: Option<Connection>,
}

impl RealSystem {
    pub fn new(ovsdb: PathBuf, timeout: Duration, ifstate_dir: PathBuf) -> Self {
        RealSystem {
            ovsdb,
            timeout,
            ifstate_dir,
            conn: None,
        }
    }

    fn conn(&mut self) -> Result<&mut Connection, SysError> {
        if self.conn.is_none() {
            self.conn = Some(Connection::connect(&self.ovsdb, self.timeout)?);
        }
        Ok(self.conn.as_mut().expect("just connected"))
    }
}

fn run(cmd: &mut Command, input: Option<&str>) -> Result<String, SysError> {
    let name = format!("{cmd:?}").replace('"', "");
    let mut child = cmd
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| SysError::Command {
            command: name.clone(),
            detail: format!("cannot run it: {e} (is it installed?)"),
        })?;
    if let Some(input) = input {
        let mut stdin = child.stdin.take().expect("piped");
        let _ = stdin.write_all(input.as_bytes());
    }
    let out = child.wait_with_output().map_err(|e| SysError::Command {
        command: name.clone(),
        detail: e.to_string(),
    })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(SysError::Command {
            command: name,
            detail: format!("{}: {}", out.status, err.trim().replace('\n', " / ")),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl System for RealSystem {
    fn ovs_read(&mut self) -> Result<Live, SysError> {
        let results = self.conn()?.transact(&ovs::read_ops())?;
        Live::from_results(&results).map_err(SysError::Ovs)
    }

    fn ovs_transact(&mut self, ops: &[Value]) -> Result<Vec<Value>, SysError> {
        Ok(self.conn()?.transact(ops)?)
    }

    fn ovs_wait_applied(&mut self, cfg: i64) -> Result<(), SysError> {
        let deadline = Instant::now() + self.timeout;
        let root = [
            serde_json::json!({"op": "select", "table": "Open_vSwitch", "where": [], "columns": ["cur_cfg"]}),
        ];
        loop {
            let r = self.conn()?.transact(&root)?;
            let cur = r[0]["rows"][0]["cur_cfg"].as_i64().unwrap_or(0);
            if cur >= cfg {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(SysError::Ovs(format!(
                    "ovs-vswitchd did not apply the change within {} s (configuration {cfg}, it reports {cur}): is ovs-vswitchd running?",
                    self.timeout.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn iptables_save(&mut self) -> Result<String, SysError> {
        run(&mut Command::new("iptables-save"), None)
    }

    fn iptables_restore(&mut self, input: &str, test_only: bool) -> Result<(), SysError> {
        let mut cmd = Command::new("iptables-restore");
        cmd.arg("--noflush");
        if test_only {
            cmd.arg("--test");
        }
        run(&mut cmd, Some(input)).map(drop)
    }

    fn read_file(&mut self, path: &Path) -> Result<Option<Vec<u8>>, SysError> {
        match std::fs::read(path) {
            Ok(d) => Ok(Some(d)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(SysError::File {
                path: path.into(),
                source,
            }),
        }
    }

    fn write_file(&mut self, path: &Path, data: &[u8], mode: u32) -> Result<(), SysError> {
        atomic_write(path, data, mode).map_err(|source| SysError::File {
            path: path.into(),
            source,
        })
    }

    fn remove_file(&mut self, path: &Path) -> Result<(), SysError> {
        match std::fs::remove_file(path) {
            Ok(()) => sync_dir(path).map_err(|source| SysError::File {
                path: path.into(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(SysError::File {
                path: path.into(),
                source,
            }),
        }
    }

    /// Test hooks, for kill and fault-injection tests of the real binary:
    /// `OVS_BUNDLE_TEST_KILL_AT=<step>` SIGKILLs the process there, `OVS_BUNDLE_TEST_FAIL_AT=<step>`
    /// fails the step.
    fn step(&mut self, name: &str) -> Result<(), SysError> {
        if std::env::var("OVS_BUNDLE_TEST_KILL_AT").is_ok_and(|s| s == name) {
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        }
        if std::env::var("OVS_BUNDLE_TEST_FAIL_AT").is_ok_and(|s| s == name) {
            return Err(SysError::Injected(format!(
                "injected failure at step {name}"
            )));
        }
        Ok(())
    }

    fn write_sysctl(&mut self, path: &Path, value: &[u8]) -> Result<(), SysError> {
        let file = std::fs::OpenOptions::new().write(true).open(path);
        file.and_then(|mut f| f.write_all(value))
            .map_err(|source| SysError::File {
                path: path.into(),
                source,
            })
    }

    fn ifupdown(&mut self, up: bool, iface: &str, interfaces: &Path) -> Result<(), SysError> {
        std::fs::create_dir_all(&self.ifstate_dir).map_err(|source| SysError::File {
            path: self.ifstate_dir.clone(),
            source,
        })?;
        let mut cmd = Command::new(if up { "ifup" } else { "ifdown" });
        cmd.arg("-i")
            .arg(interfaces)
            .arg("--state-dir")
            .arg(&self.ifstate_dir)
            .arg(iface);
        run(&mut cmd, None).map(drop)
    }
}

/// Writes `data` to `path` so that a crash leaves either the old or the new file: a temporary
/// file in the same directory, fsynced, renamed over `path`, then the directory fsynced.
pub fn atomic_write(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.ovs-bundle-tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    sync_dir(path)
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::File::open(dir)?.sync_all()
}
