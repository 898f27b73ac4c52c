//! The real host (or the network namespace the process runs in): OVSDB over its unix socket,
//! `iptables-save`/`iptables-restore`, files, /proc/sys, `ifup`/`ifdown`, dnsmasq ([`super::dnsmasq`]).
//!
//! Over 500 lines: the whole seam's real side, one `impl System`; its parts share the OVSDB
//! connection and the reads `read_begin` starts (only dnsmasq's own process handling is apart).

use super::{DhcpInstance, IfAction, SysError, System};
use crate::ovs::{self, Live, OvsChange};
use crate::ovsdb::Connection;
use bundle::firewall::Family;
use bundle::Chains;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The largest file [`RealSystem::read_file`] reads: twice the largest compressed bundle.
const MAX_READ: u64 = 64 << 20;

/// The real host (or the namespace the process runs in).
pub struct RealSystem {
    pub ovsdb: PathBuf,
    pub timeout: Duration,
    pub ifstate_dir: PathBuf,
    /// ovs-vswitchd's log, where it says why it could not set something up.
    pub vswitchd_log: PathBuf,
    /// Start dnsmasq as a transient systemd unit (on systemd hosts with root `/`), not as a
    /// daemon of this process's cgroup.
    pub dhcp_systemd: bool,
    /// The OVN northbound database's socket (`--ovn-nb`): read where it exists, written only
    /// when the bundle carries northbound state (the central host).
    pub ovn_nb: PathBuf,
    nb_conn: Option<Connection>,
    /// Its size when the last OVS change was sent: what it says after that is about our change.
    log_mark: Option<u64>,
    conn: Option<Connection>,
    /// The id of the OVSDB read [`System::read_begin`] sent, its reply not taken yet.
    ovs_pending: Option<u64>,
    /// An `iptables-save` started by [`System::read_begin`], drained by a thread (its output
    /// outgrows a pipe's buffer at 1,000 guard rules, so nobody reading it would stall it).
    firewall_pending: Option<Pending>,
    /// The same for `ip6tables-save`, where it is installed (both run at once: one after the
    /// other, the second was a tenth of a 1,000-tunnel no-op's time).
    firewall6_pending: Option<Pending>,
}

/// A `*tables-save` running, its output collected and parsed by a thread: on a no-op the
/// parse is done by the time ovsdb-server's reply has been decoded.
type Pending = std::thread::JoinHandle<Result<Chains, SysError>>;

/// `iptables-save` or `ip6tables-save`.
fn save_program(family: Family) -> String {
    format!("{}-save", family.command())
}

/// Starts `family`'s `*tables-save`, its output drained and parsed by a thread.
fn save_in_background(family: Family) -> Pending {
    let started = spawn(&mut Command::new(save_program(family)), None);
    std::thread::spawn(move || {
        let (child, name) = started?;
        Ok(Chains::from_save_in(family, &finish(child, name)?))
    })
}

/// The chains a [`Pending`] save read.
fn pending_chains(pending: Pending, family: Family) -> Result<Chains, SysError> {
    pending.join().map_err(|_| SysError::Command {
        command: save_program(family),
        detail: "the thread reading its output panicked".into(),
    })?
}

impl RealSystem {
    pub fn new(ovsdb: PathBuf, timeout: Duration, ifstate_dir: PathBuf) -> Self {
        // Where Open vSwitch's own tools look: $OVS_LOGDIR, else Debian's log directory.
        let log_dir = std::env::var_os("OVS_LOGDIR")
            .map_or_else(|| PathBuf::from("/var/log/openvswitch"), PathBuf::from);
        RealSystem {
            ovsdb,
            timeout,
            ifstate_dir,
            vswitchd_log: log_dir.join("ovs-vswitchd.log"),
            dhcp_systemd: false,
            ovn_nb: PathBuf::from("/var/run/ovn/ovnnb_db.sock"),
            nb_conn: None,
            log_mark: None,
            conn: None,
            ovs_pending: None,
            firewall_pending: None,
            firewall6_pending: None,
        }
    }

    /// Forgets the reads started before a change: they would show the host as it was. Waits
    /// for a pending `iptables-save` (read-only) so no child outlives its use; the reply to a
    /// pending OVSDB read is skipped when it arrives (replies are matched by id).
    fn discard_pending(&mut self) {
        self.ovs_pending = None;
        for pending in [self.firewall_pending.take(), self.firewall6_pending.take()]
            .into_iter()
            .flatten()
        {
            let _ = pending.join();
        }
    }

    /// What ovs-vswitchd logged as an error since our change (at most a few lines), with the
    /// remedy for the usual cause. Empty if its log cannot be read.
    fn vswitchd_complaint(&self) -> Option<String> {
        use std::io::{Read, Seek, SeekFrom};
        let mark = self.log_mark?;
        let mut f = std::fs::File::open(&self.vswitchd_log).ok()?;
        f.seek(SeekFrom::Start(mark)).ok()?;
        let mut text = String::new();
        f.take(256 * 1024).read_to_string(&mut text).ok()?;
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("|ERR|") || l.contains("kernel module"))
            .map(|l| l.rsplit('|').next().unwrap_or(l).trim())
            .take(4)
            .collect();
        if lines.is_empty() {
            return None;
        }
        let mut s = format!(
            "ovs-vswitchd says ({}): {}",
            self.vswitchd_log.display(),
            lines.join("; ")
        );
        if text.contains("kernel module is probably not loaded") {
            s.push_str(
                ". The openvswitch kernel module is not loaded: load it (modprobe openvswitch) \
                 or give the bridge datapath = \"netdev\" (userspace) in its profile",
            );
        }
        Some(s)
    }

    fn nb_conn(&mut self) -> Result<&mut Connection, SysError> {
        if self.nb_conn.is_none() {
            self.nb_conn = Some(Connection::connect(&self.ovn_nb, self.timeout)?);
        }
        Ok(self.nb_conn.as_mut().expect("just connected"))
    }

    fn conn(&mut self) -> Result<&mut Connection, SysError> {
        if self.conn.is_none() {
            self.conn = Some(Connection::connect(&self.ovsdb, self.timeout)?);
        }
        Ok(self.conn.as_mut().expect("just connected"))
    }
}

fn run(cmd: &mut Command, input: Option<&str>) -> Result<String, SysError> {
    let (child, name) = spawn(cmd, input)?;
    finish(child, name)
}

/// Starts `cmd` with `input` on its stdin (then closed).
fn spawn(
    cmd: &mut Command,
    input: Option<&str>,
) -> Result<(std::process::Child, String), SysError> {
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
    Ok((child, name))
}

/// Waits for a [`spawn`]ed command: its stdout, or an error with its stderr.
fn finish(child: std::process::Child, name: String) -> Result<String, SysError> {
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

/// Whether `program` is on the PATH.
fn installed(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

impl System for RealSystem {
    fn ovs_read(&mut self) -> Result<Live, SysError> {
        let pending = self.ovs_pending.take();
        let conn = self.conn()?;
        let id = match pending {
            Some(id) => id,
            None => conn.transact_request(&ovs::live::read_ops())?,
        };
        let reply = conn.reply_as(id, "transact")?;
        Live::from_reply(reply).map_err(SysError::Ovs)
    }

    fn ovs_apply(
        &mut self,
        changes: &[OvsChange],
        base: &Live,
        comment: &str,
    ) -> Result<i64, SysError> {
        self.discard_pending();
        let ops = ovs::txn::transaction(changes, base, comment);
        self.log_mark = std::fs::metadata(&self.vswitchd_log).ok().map(|m| m.len());
        let results = self.conn()?.transact(&ops)?;
        Ok(ovs::txn::committed_cfg(&results).unwrap_or(base.next_cfg + 1))
    }

    fn ovs_interface_errors(&mut self, names: &[&str]) -> Result<Vec<String>, SysError> {
        let results = self.conn()?.transact(&ovs::txn::error_ops(names))?;
        let mut errors = ovs::txn::interface_errors(names, &results);
        if !errors.is_empty() {
            errors.extend(self.vswitchd_complaint());
        }
        Ok(errors)
    }

    fn nb_read(&mut self) -> Result<crate::nb::NbLive, SysError> {
        // No socket, or one nobody listens on (left by a server that died): no northbound
        // database here, so none of our rows. A bundle that wants some then says so.
        if !self.ovn_nb.exists() {
            return Ok(crate::nb::NbLive::default());
        }
        let conn = match self.nb_conn() {
            Ok(c) => c,
            Err(SysError::Ovsdb(e))
                if matches!(&*e, crate::ovsdb::OvsdbError::Connect { source, .. }
                    if source.kind() == std::io::ErrorKind::ConnectionRefused) =>
            {
                return Ok(crate::nb::NbLive::default());
            }
            Err(e) => return Err(e),
        };
        let results = conn.transact_in(crate::nb::NB_DB, &crate::nb::NbLive::read_ops())?;
        crate::nb::NbLive::from_results(&results).map_err(SysError::Ovs)
    }

    fn nb_apply(
        &mut self,
        changes: &[crate::nb::NbChange],
        base: &crate::nb::NbLive,
        owner: &str,
        comment: &str,
    ) -> Result<(), SysError> {
        let ops = crate::nb::transaction(changes, base, owner, comment);
        self.nb_conn()?.transact_in(crate::nb::NB_DB, &ops)?;
        Ok(())
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

    fn read_begin(&mut self) {
        if self.ovs_pending.is_none() {
            // A failure here is met again, and reported, by `ovs_read`.
            self.ovs_pending = self
                .conn()
                .and_then(|c| Ok(c.transact_request(&ovs::live::read_ops())?))
                .ok();
        }
        if self.firewall_pending.is_none() {
            self.firewall_pending = Some(save_in_background(Family::V4));
        }
        if self.firewall6_pending.is_none() && installed(&save_program(Family::V6)) {
            self.firewall6_pending = Some(save_in_background(Family::V6));
        }
    }

    fn read_cancel(&mut self) {
        self.discard_pending();
    }

    fn firewall_read(&mut self, family: Family) -> Result<Chains, SysError> {
        let pending = match family {
            Family::V4 => self.firewall_pending.take(),
            Family::V6 => self.firewall6_pending.take(),
        };
        if let Some(pending) = pending {
            return pending_chains(pending, family);
        }
        let program = save_program(family);
        // A host without ip6tables has no IPv6 chains of ours; a bundle that wants some then
        // fails at its ip6tables-restore --test, before anything changed.
        if family == Family::V6 && !installed(&program) {
            return Ok(Chains::from_save_in(family, ""));
        }
        Ok(Chains::from_save_in(
            family,
            &run(&mut Command::new(&program), None)?,
        ))
    }

    fn firewall_write(
        &mut self,
        want: &Chains,
        current: &Chains,
        test_only: bool,
    ) -> Result<(), SysError> {
        self.discard_pending();
        let mut cmd = Command::new(format!("{}-restore", want.family.command()));
        cmd.arg("--noflush");
        if test_only {
            cmd.arg("--test");
        }
        run(&mut cmd, Some(&want.restore_input(current))).map(drop)
    }

    fn read_file(&mut self, path: &Path) -> Result<Option<Vec<u8>>, SysError> {
        use std::io::Read;
        // Non-blocking open and a type check: a FIFO (or a device) put where a file is expected
        // must not hang the applier, least of all at boot, before networking.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NONBLOCK)
            .open(path);
        let file = match file {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(SysError::file(path, e)),
        };
        let meta = file.metadata().map_err(|e| SysError::file(path, e))?;
        if !meta.is_file() {
            return Err(SysError::file(
                path,
                std::io::Error::other("not a regular file; remove it"),
            ));
        }
        // Nothing the applier reads is larger than a bundle: a huge file (in incoming/, say)
        // is refused before it is read, not after it filled the memory.
        if meta.len() > MAX_READ {
            return Err(SysError::file(
                path,
                std::io::Error::other(format!(
                    "{} bytes, more than the {MAX_READ} any file of ovs-bundle has; remove it",
                    meta.len()
                )),
            ));
        }
        let mut data = Vec::with_capacity(meta.len() as usize);
        file.take(MAX_READ + 1)
            .read_to_end(&mut data)
            .map_err(|e| SysError::file(path, e))?;
        if data.len() as u64 > MAX_READ {
            return Err(SysError::file(
                path,
                std::io::Error::other("grew past the limit while read"),
            ));
        }
        Ok(Some(data))
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

    fn write_sysctl(&mut self, path: &Path, value: &[u8]) -> Result<(), SysError> {
        self.discard_pending();
        let file = std::fs::OpenOptions::new().write(true).open(path);
        file.and_then(|mut f| f.write_all(value))
            .map_err(|source| SysError::File {
                path: path.into(),
                source,
            })
    }

    fn ifupdown(
        &mut self,
        action: IfAction,
        iface: &str,
        interfaces: &Path,
    ) -> Result<(), SysError> {
        self.discard_pending();
        std::fs::create_dir_all(&self.ifstate_dir)
            .map_err(|e| SysError::file(&self.ifstate_dir, e))?;
        let mut cmd = Command::new(match action {
            IfAction::Down => "ifdown",
            IfAction::Up => "ifup",
        });
        // `--`: an interface name is never read as an option.
        cmd.arg("-i")
            .arg(interfaces)
            .arg("--state-dir")
            .arg(&self.ifstate_dir)
            .arg("--")
            .arg(iface);
        run(&mut cmd, None).map(drop)
    }

    fn dhcp_running(&mut self, inst: &DhcpInstance) -> Result<bool, SysError> {
        super::dnsmasq::running_pid(inst).map(|p| p.is_some())
    }

    fn dhcp_restart(&mut self, inst: &DhcpInstance, start: bool) -> Result<(), SysError> {
        super::dnsmasq::restart(inst, start, self.dhcp_systemd)
    }

    fn ipsec_reread_cacerts(&mut self) -> Result<(), SysError> {
        // charon's stroke socket, which `ipsec` (ovs-monitor-ipsec's way to strongSwan) talks
        // to: without it no IKE daemon of that kind runs.
        if !Path::new("/var/run/charon.ctl").exists() {
            return Ok(());
        }
        run(Command::new("ipsec").arg("rereadcacerts"), None).map(drop)
    }

    fn rename(&mut self, from: &Path, to: &Path) -> Result<(), SysError> {
        std::fs::rename(from, to).map_err(|e| SysError::file(from, e))?;
        sync_dir(to).map_err(|e| SysError::file(to, e))
    }

    fn list_dir(&mut self, path: &Path) -> Result<Vec<String>, SysError> {
        let entries = match std::fs::read_dir(path) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(SysError::file(path, e)),
        };
        let mut names = Vec::new();
        for e in entries {
            let e = e.map_err(|e| SysError::file(path, e))?;
            names.push(e.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    fn create_dir(&mut self, path: &Path, mode: u32) -> Result<(), SysError> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(path)
            .map_err(|e| SysError::file(path, e))
    }

    fn remove_dir(&mut self, path: &Path) -> Result<(), SysError> {
        match std::fs::remove_dir(path) {
            Ok(()) => Ok(()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::DirectoryNotEmpty
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(SysError::file(path, e)),
        }
    }
}

/// The temporary file [`atomic_write`] writes `name` through, in the same directory.
pub fn temp_name(name: &str) -> String {
    format!(".{name}.ovs-bundle-tmp")
}

/// The file `name` is the temporary file of (see [`temp_name`]), if it is one.
pub fn temp_of(name: &str) -> Option<&str> {
    name.strip_prefix('.')?.strip_suffix(".ovs-bundle-tmp")
}

/// Writes `data` to `path` so that a crash leaves either the old or the new file: a temporary
/// file in the same directory, fsynced, renamed over `path`, then the directory fsynced.
pub fn atomic_write(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(temp_name(&name));
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
