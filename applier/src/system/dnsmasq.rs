//! The real side of the DHCP driver: this tool's own dnsmasq instance, started with
//! `--conf-file` (so neither `/etc/dnsmasq.conf` nor `/etc/dnsmasq.d/` is read, and a dnsmasq
//! the host runs for DNS is left alone), its own pid file and lease database. Everything lives
//! under the applier's root and runs in its network namespace, so the tests run it there. On
//! systemd hosts it runs in a transient unit of its own (see [`start_unit`]), elsewhere (and in
//! the tests) as a daemon.
//!
//! "Running" means: the pid file names a live (not zombie) process whose command line is
//! dnsmasq with our configuration file, so a stale pid file or a reused pid is not mistaken
//! for it.

use super::{DhcpInstance, SysError};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long a stopping dnsmasq may take before it is killed.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// The conf-file argument the instance is started with; how [`running_pid`] recognises it.
fn conf_arg(inst: &DhcpInstance) -> String {
    format!("--conf-file={}", inst.conf.display())
}

/// The pid of the running instance, if it runs.
pub(super) fn running_pid(inst: &DhcpInstance) -> Result<Option<Pid>, SysError> {
    let text = match std::fs::read_to_string(&inst.pid_file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(SysError::file(&inst.pid_file, e)),
    };
    let Ok(pid) = text.trim().parse::<i32>() else {
        return Ok(None);
    };
    if pid <= 1 {
        return Ok(None);
    }
    Ok(is_ours(pid, inst).then_some(Pid::from_raw(pid)))
}

fn is_ours(pid: i32, inst: &DhcpInstance) -> bool {
    let proc = Path::new("/proc").join(pid.to_string());
    let Ok(cmdline) = std::fs::read(proc.join("cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let is_dnsmasq = args.first().is_some_and(|a| a.ends_with(b"dnsmasq"));
    let want = conf_arg(inst);
    is_dnsmasq && args.contains(&want.as_bytes()) && !is_zombie(&proc)
}

/// A zombie has exited; only its parent (init, for a daemon) has yet to reap it.
fn is_zombie(proc: &Path) -> bool {
    std::fs::read_to_string(proc.join("stat")).map_or(true, |s| {
        s.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
    })
}

/// Stops the instance if it runs, then (if `start`) starts it: in a transient systemd unit when
/// `systemd` (falling back to a daemon if `systemd-run` itself fails), else as a daemon.
pub(super) fn restart(inst: &DhcpInstance, start: bool, systemd: bool) -> Result<(), SysError> {
    if let Some(pid) = running_pid(inst)? {
        stop(pid, inst)?;
    }
    let _ = std::fs::remove_file(&inst.pid_file);
    if !start {
        return Ok(());
    }
    for f in [&inst.pid_file, &inst.lease_file] {
        if let Some(dir) = f.parent() {
            std::fs::create_dir_all(dir).map_err(|e| SysError::file(dir, e))?;
        }
    }
    if systemd {
        if let Some(started) = start_unit(inst) {
            return started;
        }
    }
    // Its messages go to a file, not a pipe: the daemon keeps what it inherits open, and a pipe
    // would keep us waiting for its end.
    let err_path = inst.pid_file.with_extension("err");
    let err = std::fs::File::create(&err_path).map_err(|e| SysError::file(&err_path, e))?;
    let mut cmd = Command::new("dnsmasq");
    cmd.arg(conf_arg(inst))
        .arg(format!("--pid-file={}", inst.pid_file.display()))
        .arg(format!("--dhcp-leasefile={}", inst.lease_file.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err);
    let name = format!("{cmd:?}").replace('"', "");
    // dnsmasq's parent returns once the daemon has started (or says why it could not).
    let status = cmd.status().map_err(|e| SysError::Command {
        command: name.clone(),
        detail: format!("cannot run it: {e} (is dnsmasq installed? Debian: dnsmasq-base)"),
    })?;
    let detail = std::fs::read_to_string(&err_path).unwrap_or_default();
    let _ = std::fs::remove_file(&err_path);
    if !status.success() {
        return Err(SysError::Command {
            command: name,
            detail: format!("{status}: {}", detail.trim().replace('\n', " / ")),
        });
    }
    if running_pid(inst)?.is_none() {
        return Err(SysError::Command {
            command: name,
            detail: format!(
                "started, but {} names no running dnsmasq",
                inst.pid_file.display()
            ),
        });
    }
    Ok(())
}

/// Starts dnsmasq in the foreground (`-k`) as a transient unit, so it lives outside the cgroup of
/// whatever ran the applier (a oneshot service's leftover processes are killed when it ends).
/// `None`: systemd-run could not start a unit at all (the caller starts a daemon instead);
/// otherwise whether dnsmasq came up, which it says in the unit's journal if not.
fn start_unit(inst: &DhcpInstance) -> Option<Result<(), SysError>> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    // A new name per start: the unit stopped just before may not have been collected yet.
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    let unit = format!(
        "ovs-bundle-dnsmasq-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    );
    let status = Command::new("systemd-run")
        .args(["--quiet", "--collect", "--unit", &unit])
        .arg("--description=ovs-bundle: DHCP on the private bridges (dnsmasq)")
        .args(["dnsmasq", "-k"])
        .arg(conf_arg(inst))
        .arg(format!("--pid-file={}", inst.pid_file.display()))
        .arg(format!("--dhcp-leasefile={}", inst.lease_file.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !status.is_ok_and(|s| s.success()) {
        return None;
    }
    // systemd-run returns once the unit is started, not once dnsmasq has read its file.
    let deadline = Instant::now() + STOP_WAIT;
    while Instant::now() < deadline {
        match running_pid(inst) {
            Ok(Some(_)) => return Some(Ok(())),
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Some(Err(e)),
        }
    }
    Some(Err(SysError::Command {
        command: format!("dnsmasq in unit {unit}"),
        detail: format!("did not start; see journalctl -u {unit}"),
    }))
}

/// SIGTERM, then SIGKILL if it has not gone within [`STOP_WAIT`].
fn stop(pid: Pid, inst: &DhcpInstance) -> Result<(), SysError> {
    let gone = || !is_ours(pid.as_raw(), inst);
    let _ = kill(pid, Signal::SIGTERM);
    let deadline = Instant::now() + STOP_WAIT;
    while Instant::now() < deadline {
        if gone() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = kill(pid, Signal::SIGKILL);
    std::thread::sleep(Duration::from_millis(100));
    if gone() {
        Ok(())
    } else {
        Err(SysError::Command {
            command: format!("stopping dnsmasq (pid {pid})"),
            detail: "it did not exit after SIGTERM and SIGKILL".into(),
        })
    }
}
