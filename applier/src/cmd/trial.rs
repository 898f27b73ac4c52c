//! `applier try`, `confirm`, `try --status` and the detached watcher (`try-watch`) that runs the
//! checks and reverts. The decisions are in `crate::trial`; this is the process side: starting
//! the watcher outside the caller's session, running checks, taking the lock to revert.
//!
//! The watcher is a transient systemd unit on systemd hosts and a `setsid --fork` child
//! elsewhere. A child of an SSH session lives in that session's cgroup: logind (with
//! `KillUserProcesses=yes`, or when the session scope is stopped) kills everything in it,
//! `setsid` or not; a unit started with `systemd-run` lives outside the session. Hosts without
//! systemd (containers, the tests' own init) have no such reaper, and there a new session (no
//! controlling terminal, so no SIGHUP when the terminal goes) is enough.

use super::{applier, emit, json, log, opts, read_bundle, real_system, report, unix_now};
use crate::cli::{ApplyFlags, Global};
use crate::engine::{Applier, Outcome, Trust};
use crate::paths::Paths;
use crate::store::{PendingTry, Store};
use crate::trial::{describe, run_checks, tunnel_peers, Judge, Probe, TryOpts};
use anyhow::{Context, Result};
use bundle::Exit;
use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How often the watcher runs the checks.
const CHECK_EVERY: Duration = Duration::from_secs(3);
/// How long one `--check` command may run before it counts as failed (and is killed).
const CHECK_LIMIT: Duration = Duration::from_secs(20);
/// How often a failed revert is retried, and how often at most.
const REVERT_RETRY: Duration = Duration::from_secs(10);
const REVERT_ATTEMPTS: u32 = 30;

/// What `try` was asked for, from the command line.
pub struct TryArgs {
    pub bundle: PathBuf,
    pub flags: ApplyFlags,
    pub timeout: u64,
    pub settle: u64,
    pub checks: Vec<String>,
    pub builtin_checks: bool,
}

/// `applier try BUNDLE`: apply on trial, start the watcher, say when it reverts.
pub fn try_bundle(app: &mut Applier, a: TryArgs, g: &Global, paths: &Paths) -> Result<Exit> {
    let opts = TryOpts {
        apply: opts(a.flags),
        timeout: a.timeout,
        settle: a.settle,
        checks: a.checks,
        builtin_checks: a.builtin_checks,
    };
    let bytes = read_bundle(&a.bundle)?;
    let (outcome, pending) = match app.begin_try(&bytes, &opts) {
        Ok(r) => r,
        Err(e) => return Ok(report(&e)),
    };
    let (Outcome::Applied { generation, plan }, Some(t)) = (outcome, pending) else {
        if json() {
            emit(serde_json::json!({"result": "unchanged", "changes": 0}));
        } else {
            outln!("no changes: the bundle is the current generation and the host matches it; nothing to try");
        }
        return Ok(Exit::Ok);
    };
    let watcher = match spawn_watcher(g, paths, generation, &app.host, &app.store) {
        Ok(how) => how,
        Err(e) => {
            // Nobody would revert it: go back now.
            let why = format!("the watcher could not be started: {e:#}");
            log(&why);
            return Ok(match app.revert_try(&t, &why) {
                Ok(_) => {
                    log(&format!(
                        "reverted to generation {}; nothing is on trial",
                        t.previous
                    ));
                    super::emit_error(&why, Exit::Failed);
                    Exit::Failed
                }
                Err(e) => report(&e),
            });
        }
    };
    if json() {
        let mut v = plan.to_json();
        v["result"] = "on-trial".into();
        v["generation"] = generation.into();
        v["previous"] = t.previous.into();
        v["deadline"] = t.deadline.into();
        v["watcher"] = watcher.clone().into();
        emit(v);
    } else {
        out!("{}", plan.render());
        outln!("applied on trial: {}", describe(&t, app.now));
        outln!(
            "run `applier confirm` to keep it; the watcher ({watcher}) checks {}",
            what_is_checked(&t)
        );
    }
    Ok(Exit::Ok)
}

fn what_is_checked(t: &PendingTry) -> String {
    let mut parts = Vec::new();
    if t.builtin_checks {
        parts.push("the underlay route to every peer and the IPsec SA of every PSK peer".into());
    }
    if !t.checks.is_empty() {
        parts.push(format!("{} --check command(s)", t.checks.len()));
    }
    if parts.is_empty() {
        "nothing: it reverts when the time is up".into()
    } else {
        format!(
            "{}; a check that has not passed within {} s, or fails after passing, reverts at once",
            parts.join(" and "),
            t.settle_secs
        )
    }
}

/// `applier confirm`.
pub fn confirm(app: &mut Applier) -> Exit {
    match app.confirm_try() {
        Ok(n) => {
            if json() {
                emit(serde_json::json!({"result": "confirmed", "generation": n}));
            } else {
                outln!("confirmed: generation {n} stays");
            }
            Exit::Ok
        }
        Err(e) => report(&e),
    }
}

/// `applier try --status`, and the try part of `applier status`.
pub fn try_status(sys: &mut dyn crate::system::System, store: &Store) -> Result<Exit> {
    let now = unix_now();
    let pending = store.pending_try(sys).context("reading the pending try")?;
    let last = store.last_try(sys).context("reading the last try")?;
    if json() {
        emit(serde_json::json!({
            "result": if pending.is_some() { "pending" } else { "none" },
            "try": pending, "last": last, "now": now,
        }));
        return Ok(Exit::Ok);
    }
    match &pending {
        Some(t) => outln!("{}", describe(t, now)),
        None => outln!("no try is pending"),
    }
    if let (None, Some(r)) = (&pending, &last) {
        outln!(
            "last try: {} {} at {}: {}",
            r.generation
                .map_or("an unfinished apply".into(), |g| format!("generation {g}")),
            r.result,
            bundle::time::format_utc(r.at),
            r.reason
        );
    }
    Ok(Exit::Ok)
}

/// The arguments that make a watcher see the same host as this command.
fn watcher_args(g: &Global, host: &str) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "--root".into(),
        g.root.clone().into(),
        "--ovsdb".into(),
        g.ovsdb.clone().into(),
        "--proc".into(),
        g.proc.clone().into(),
        "--ovs-timeout".into(),
        g.ovs_timeout.to_string().into(),
        "--lock-timeout".into(),
        g.lock_timeout.to_string().into(),
        "--host".into(),
        host.into(),
    ];
    for k in &g.trusted_key {
        args.push("--trusted-key".into());
        args.push(k.clone().into());
    }
    args.push("try-watch".into());
    args
}

/// Starts the watcher outside this session. Returns how, for the user.
fn spawn_watcher(
    g: &Global,
    paths: &Paths,
    generation: u64,
    host: &str,
    store: &Store,
) -> Result<String> {
    let exe = std::env::current_exe().context("finding the applier binary")?;
    let args = watcher_args(g, host);
    if g.root == Path::new("/") && paths.host("/run/systemd/system").is_dir() {
        let unit = format!("ovs-bundle-try-{generation}");
        let status = Command::new("systemd-run")
            .args(["--quiet", "--collect", "--unit", &unit])
            .arg(format!(
                "--description=ovs-bundle: revert generation {generation} unless confirmed"
            ))
            .arg(&exe)
            .args(&args)
            .stdin(Stdio::null())
            .status();
        match status {
            Ok(s) if s.success() => return Ok(format!("systemd unit {unit}")),
            Ok(s) => log(&format!(
                "warning: systemd-run {s}; starting the watcher as a detached process instead"
            )),
            Err(e) => log(&format!(
                "warning: systemd-run: {e}; starting the watcher as a detached process instead"
            )),
        }
    }
    let log_path = store.try_log_path();
    let log_file = open_log(&log_path)?;
    let status = Command::new("setsid")
        .arg("--fork")
        .arg(&exe)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().context("duplicating the log file")?)
        .stderr(log_file)
        .status()
        .context("running setsid (util-linux)")?;
    anyhow::ensure!(
        status.success(),
        "setsid --fork {}: {status}",
        exe.display()
    );
    Ok(format!("a detached process; log in {}", log_path.display()))
}

/// The watcher's log: appended to, root only (it names peers and check commands).
fn open_log(path: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

/// The checks against this host.
struct RealProbe {
    proc_dir: PathBuf,
}

impl Probe for RealProbe {
    fn routes(&mut self) -> Result<String, String> {
        let path = self.proc_dir.join("net/route");
        std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))
    }

    fn routes6(&mut self) -> Result<String, String> {
        let path = self.proc_dir.join("net/ipv6_route");
        std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))
    }

    fn xfrm_states(&mut self) -> Result<String, String> {
        let out = Command::new("ip")
            .args(["xfrm", "state"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("ip xfrm state: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "ip xfrm state: {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn run_check(&mut self, cmd: &str) -> Result<(), String> {
        use std::os::unix::process::CommandExt;
        // Its own process group, so that a check that hangs is killed with its children.
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(cmd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("/bin/sh: {e}"))?;
        let pid = child.id();
        let (tx, rx) = std::sync::mpsc::channel();
        let mut out = child.stdout.take();
        let mut err = child.stderr.take();
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(o) = out.as_mut() {
                let _ = o.take(64 * 1024).read_to_string(&mut text);
            }
            if let Some(e) = err.as_mut() {
                let _ = e.take(64 * 1024).read_to_string(&mut text);
            }
            let _ = tx.send(text);
        });
        let deadline = Instant::now() + CHECK_LIMIT;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    let text = rx.recv_timeout(Duration::from_secs(1)).unwrap_or_default();
                    return if status.success() {
                        Ok(())
                    } else {
                        let last = text.lines().last().unwrap_or("").trim().to_string();
                        Err(if last.is_empty() {
                            status.to_string()
                        } else {
                            format!("{status}: {last}")
                        })
                    };
                }
                Ok(None) if Instant::now() >= deadline => {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                    let _ = child.wait();
                    return Err(format!("timed out after {} s", CHECK_LIMIT.as_secs()));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => return Err(e.to_string()),
            }
        }
    }
}

/// Whether `t` is still the try this watcher watches (not confirmed, rolled back or replaced).
fn still_pending(store: &Store, sys: &mut dyn crate::system::System, t: &PendingTry) -> bool {
    match store.pending_try(sys) {
        Ok(Some(now)) => now.started == t.started && now.generation == t.generation,
        // Unreadable: keep watching; reverting is decided on a record that can be read.
        Err(_) => true,
        Ok(None) => false,
    }
}

fn stamp(msg: &str) {
    log(&format!("{} {msg}", bundle::time::format_utc(unix_now())));
}

/// `applier try-watch`: runs the checks until the try is confirmed, a check fails or the time
/// is up, then reverts under the lock.
pub fn watch(g: &Global, paths: &Paths, trust: Trust, host: String) -> Result<Exit> {
    let store = Store::new(paths.state_dir());
    let mut sys = real_system(g, paths)?;
    let Some(t) = store
        .pending_try(&mut sys)
        .context("reading the pending try")?
    else {
        stamp("no try is pending; nothing to watch");
        return Ok(Exit::Ok);
    };
    let Some(generation) = t.generation else {
        stamp("the try's apply has not finished; nothing to watch");
        return Ok(Exit::Ok);
    };
    let peers = {
        let mut app = applier(
            &mut sys,
            g,
            paths,
            store.clone(),
            trust.clone(),
            host.clone(),
        );
        match app.generation_desired(generation) {
            Ok((desired, _)) => tunnel_peers(&desired),
            Err(e) => {
                stamp(&format!(
                    "warning: cannot read generation {generation} for its peers ({e}); \
                     built-in checks see no peers"
                ));
                Vec::new()
            }
        }
    };
    stamp(&format!(
        "watching the try of generation {generation}: {}",
        describe(&t, unix_now())
    ));
    let mut probe = RealProbe {
        proc_dir: g.proc.clone(),
    };
    let mut judge = Judge::default();
    let mut all_passed = false;
    let mut next_check = Instant::now();
    let reason = loop {
        if !still_pending(&store, &mut sys, &t) {
            stamp(&format!(
                "the try of generation {generation} ended (confirmed or rolled back)"
            ));
            return Ok(Exit::Ok);
        }
        let now = unix_now();
        if now >= t.deadline {
            break format!("not confirmed within {} s", t.deadline - t.started);
        }
        if Instant::now() >= next_check {
            let results = run_checks(&t, &peers, &mut probe);
            if let Some(why) = judge.judge(now.saturating_sub(t.started), t.settle_secs, &results) {
                break why;
            }
            if !all_passed && judge.all_passed(&results) {
                all_passed = true;
                stamp(&format!(
                    "all {} check(s) passed; waiting for `applier confirm`",
                    results.len()
                ));
            }
            next_check = Instant::now() + CHECK_EVERY;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    revert(g, paths, &store, &mut sys, trust, host, &t, &reason)
}

#[allow(clippy::too_many_arguments)]
fn revert(
    g: &Global,
    paths: &Paths,
    store: &Store,
    sys: &mut crate::system::RealSystem,
    trust: Trust,
    host: String,
    t: &PendingTry,
    reason: &str,
) -> Result<Exit> {
    for attempt in 1..=REVERT_ATTEMPTS {
        let lock = crate::lock::acquire(&store.lock_path(), Duration::from_secs(g.lock_timeout));
        match lock {
            Err(e) => stamp(&format!("cannot revert yet: {e}")),
            Ok(_lock) => {
                // Confirmed while we waited for the lock: nothing to do.
                if !still_pending(store, sys, t) {
                    stamp("the try ended before the revert; nothing to do");
                    return Ok(Exit::Ok);
                }
                let mut app = applier(sys, g, paths, store.clone(), trust.clone(), host.clone());
                match app.revert_try(t, reason) {
                    Ok(_) => {
                        stamp(&format!("reverted to generation {}: {reason}", t.previous));
                        return Ok(Exit::Ok);
                    }
                    Err(e) => stamp(&format!(
                        "ERROR: revert attempt {attempt} of {REVERT_ATTEMPTS} failed: {e}"
                    )),
                }
            }
        }
        std::thread::sleep(REVERT_RETRY);
    }
    stamp("ERROR: giving up on the revert; boot reverts, or run `applier rollback`");
    Ok(Exit::RollbackFailed)
}
