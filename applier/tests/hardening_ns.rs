//! Hardening on real OVS and iptables in namespaces: trust (revocation, roll-over, downgrade,
//! expiry), secrets (never in argv, logs, output or open files), and the host's services or
//! resources failing (ovsdb-server down, ovs-vswitchd down, iptables missing, disk full, two
//! applies at once): each gives one clear error and changes nothing.
//!
//! Over 500 lines on purpose: one scenario per function, each a story of its own on shared
//! namespace helpers.

mod common;
use common::{check, host, text, TestHost};
use std::path::Path;

const PSK: &str = "hardening-secret-psk-Zq8Wm3";

fn profile(peers: &[&str], addr: &str) -> String {
    let mut p = format!(
        "[host]\nname = \"t1\"\nunderlay_ip = \"10.99.0.1\"\n\n[[bridges]]\nname = \"br-t\"\ndatapath = \"netdev\"\n\
         host_interfaces = [{{ name = \"priv0\", address = \"{addr}\" }}]\n"
    );
    for ip in peers {
        p.push_str(&format!(
            "\n[[bridges.gre]]\nremote_ip = \"{ip}\"\nexternal = true\npsk = \"{PSK}\"\n"
        ));
    }
    p
}

fn v1() -> String {
    profile(&["10.99.0.2", "10.99.0.3"], "10.20.0.1/24")
}

fn v2() -> String {
    profile(&["10.99.0.2", "10.99.0.4"], "10.20.0.2/24")
}

fn apply(h: &TestHost, b: &Path) -> std::process::Output {
    h.applier(&["apply", b.to_str().unwrap()])
}

/// What must not change when an apply is refused or fails.
fn state(h: &TestHost) -> (Vec<String>, String, Option<String>, String) {
    // The generations and their serials (not the key or summary: they depend on what is
    // trusted now).
    let gens: String = text(&h.applier(&["generations"]).stdout)
        .lines()
        .map(|l| format!("{}\n", l.split("  key ").next().unwrap_or(l)))
        .collect();
    (h.ports("br-t"), h.iptables_save(), h.interfaces(), gens)
}

#[test]
fn revoked_keys_are_refused_and_listed() {
    let h = host("t1");
    check(apply(&h, &h.bundle("v1", &v1(), 1)), "apply");
    let keys = check(h.applier(&["keys"]), "keys");
    assert!(
        keys.contains("trusted") && keys.contains("test.pub"),
        "{keys}"
    );
    let before = state(&h);
    std::fs::create_dir_all(h.root.join("etc/ovs-bundle/revoked.d")).unwrap();
    std::fs::rename(
        h.root.join("etc/ovs-bundle/trusted.d/test.pub"),
        h.root.join("etc/ovs-bundle/revoked.d/test.pub"),
    )
    .unwrap();
    let out = apply(&h, &h.bundle("v2", &v2(), 2));
    assert_eq!(out.status.code(), Some(10));
    assert!(
        text(&out.stderr).contains("which is revoked"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(state(&h), before);
    let keys = check(h.applier(&["keys"]), "keys");
    assert!(
        keys.contains("revoked") && keys.contains("revoked.d/test.pub"),
        "{keys}"
    );
    // Even when the key is still in trusted.d as well.
    std::fs::copy(
        h.root.join("etc/ovs-bundle/revoked.d/test.pub"),
        h.root.join("etc/ovs-bundle/trusted.d/test.pub"),
    )
    .unwrap();
    assert_eq!(
        apply(&h, &h.bundle("v2b", &v2(), 2)).status.code(),
        Some(10)
    );
}

#[test]
fn lower_serials_are_refused_unless_downgrade_is_asked_for_loudly() {
    let h = host("t1");
    check(apply(&h, &h.bundle("v2", &v2(), 20)), "apply");
    let before = state(&h);
    let old = h.bundle("v1", &v1(), 10);
    let out = apply(&h, &old);
    assert_eq!(out.status.code(), Some(15));
    assert!(
        text(&out.stderr).contains("serial 10 is lower than 20"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(state(&h), before);
    // The same serial with other content: refused too.
    let out = apply(&h, &h.bundle("v1same", &v1(), 20));
    assert_eq!(out.status.code(), Some(15), "{}", text(&out.stderr));
    let out = h.applier(&["apply", "--allow-downgrade", old.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("WARNING: downgrading to serial 10 below 20"),
        "{}",
        text(&out.stderr)
    );
    // The ratchet stays at the highest serial ever applied.
    assert_eq!(
        apply(&h, &h.bundle("v1c", &v1(), 15)).status.code(),
        Some(15)
    );
}

#[test]
fn expired_bundles_are_not_installed_but_the_current_one_is_still_restored_at_boot() {
    let h = host("t1");
    let dir = h.dir.path().join("expiring");
    std::fs::create_dir_all(dir.join("hosts")).unwrap();
    std::fs::write(dir.join("hosts/t1.toml"), v1()).unwrap();
    let fleet = builder::profile::load_fleet(&dir).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let params = builder::build::BuildParams {
        serial: 5,
        expires: Some(now + 2),
    };
    std::fs::write(
        dir.join("t1.tgz"),
        builder::build::build_host(&fleet.hosts[0], &h.key, params),
    )
    .unwrap();
    let b = dir.join("t1.tgz");
    check(apply(&h, &b), "apply before expiry");
    std::thread::sleep(std::time::Duration::from_secs(3));
    // Installing it now is refused ...
    let again = h.applier(&["verify", b.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(13));
    // ... but at boot the host keeps its network, with a warning.
    h.vsctl_ok(&["del-port", "br-t", "gre-0a630003"]);
    let boot = h.applier(&["boot"]);
    assert!(boot.status.success(), "{}", text(&boot.stderr));
    assert!(
        text(&boot.stderr).contains("has expired; restoring it anyway"),
        "{}",
        text(&boot.stderr)
    );
    assert!(h.ports("br-t").contains(&"gre-0a630003".to_string()));
}

#[test]
fn psks_never_reach_argv_logs_output_or_open_files() {
    let h = host("t1");
    let b = h.bundle("v1", &v1(), 1);
    // Watch every process's command line while the apply runs.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut scans = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                scans += 1;
                for e in std::fs::read_dir("/proc").unwrap().flatten() {
                    if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
                        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                        if cmd.contains(PSK) {
                            seen.push(cmd);
                        }
                    }
                }
            }
            (seen, scans)
        })
    };
    let out = apply(&h, &b);
    let plan = h.applier(&["plan", "--json", h.bundle("v2", &v2(), 2).to_str().unwrap()]);
    let status = h.applier(&["status", "--json"]);
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let (seen, scans) = watcher.join().unwrap();
    assert!(
        scans > 1,
        "the process table was not scanned during the apply"
    );
    assert!(seen.is_empty(), "PSK in a command line: {seen:?}");
    check(out.clone(), "apply");
    for (what, o) in [("apply", &out), ("plan", &plan), ("status", &status)] {
        let all = format!("{}{}", text(&o.stdout), text(&o.stderr));
        assert!(!all.contains(PSK), "PSK in {what} output:\n{all}");
    }
    assert!(
        text(&plan.stdout).contains("<redacted sha256:"),
        "{}",
        text(&plan.stdout)
    );
    // Every file the applier wrote: PSK only in files readable by their owner alone, and no log.
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out)
            } else {
                out.push(p)
            }
        }
    }
    let mut files = Vec::new();
    walk(&h.root, &mut files);
    let mut holding = 0;
    for f in &files {
        let data = std::fs::read(f).unwrap_or_default();
        let mut hay = data.clone();
        // Bundles are compressed: look inside them too.
        if data.starts_with(&[0x1f, 0x8b]) {
            use std::io::Read;
            let _ = flate2::read::GzDecoder::new(&data[..]).read_to_end(&mut hay);
        }
        if String::from_utf8_lossy(&hay).contains(PSK) {
            holding += 1;
            let meta = std::fs::metadata(f).unwrap();
            assert_eq!(
                meta.permissions().mode() & 0o077,
                0,
                "{} holds a PSK and is readable by others",
                f.display()
            );
            assert_eq!(meta.uid(), 0, "{}", f.display());
        }
    }
    assert!(
        holding >= 1,
        "the generation's bundle holds the PSK, yet none was found"
    );
    for log in ["ovsdb-server.log", "ovs-vswitchd.log"] {
        let l = std::fs::read_to_string(h.ovs.join(log)).unwrap_or_default();
        assert!(!l.contains(PSK), "PSK in {log}");
    }
}

#[test]
fn ovsdb_server_down_is_one_clear_error_and_no_change() {
    let h = host("t1");
    check(apply(&h, &h.bundle("v1", &v1(), 1)), "apply");
    let (rules, file) = (h.iptables_save(), h.interfaces());
    h.stop("ovsdb-server");
    let out = apply(&h, &h.bundle("v2", &v2(), 2));
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("cannot connect to ovsdb-server") && err.contains("nothing was changed"),
        "{err}"
    );
    assert_eq!((h.iptables_save(), h.interfaces()), (rules, file));
    assert!(!h.root.join("var/lib/ovs-bundle/in-progress.json").exists());
    assert!(!h.root.join("var/lib/ovs-bundle/generations/2").exists());
}

#[test]
fn ovs_vswitchd_down_is_one_clear_error_and_the_host_as_it_was() {
    let h = host("t1");
    check(apply(&h, &h.bundle("v1", &v1(), 1)), "apply");
    let before = state(&h);
    h.stop("ovs-vswitchd");
    let v2b = h.bundle("v2", &v2(), 2);
    let out = h.applier(&["--ovs-timeout", "3", "apply", v2b.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    // The change is made in OVSDB, not confirmed, and undone: one error, the rows as they were,
    // nothing else touched.
    assert!(
        err.contains("is ovs-vswitchd running?") && err.contains("rolled back"),
        "{err}"
    );
    let other = err
        .lines()
        .filter(|l| !l.contains("warning: OVS rows restored"));
    assert_eq!(other.count(), 1, "{err}");
    assert_eq!(state(&h), before);
    // Tried again, it is refused before any change: vswitchd never caught up.
    let out = h.applier(&["--ovs-timeout", "3", "apply", v2b.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.contains("has not applied configuration") && err.contains("nothing was changed"),
        "{err}"
    );
    assert_eq!(state(&h), before);
    h.start_vswitchd();
    check(apply(&h, &v2b), "apply once ovs-vswitchd is back");
}

#[test]
fn missing_iptables_is_one_clear_error_and_no_change() {
    let h = host("t1");
    check(apply(&h, &h.bundle("v1", &v1(), 1)), "apply");
    let before = state(&h);
    let out = h.applier_env(
        &["apply", h.bundle("v2", &v2(), 2).to_str().unwrap()],
        &[("PATH", "/nonexistent")],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("iptables-save")
            && err.contains("is it installed?")
            && err.contains("nothing was changed"),
        "{err}"
    );
    assert_eq!(state(&h), before);
}

#[test]
fn a_full_disk_is_one_clear_error_and_no_change() {
    let h = host("t1");
    check(apply(&h, &h.bundle("v1", &v1(), 1)), "apply");
    // The state directory on a tiny tmpfs of its own, filled up.
    let state_dir = h.root.join("var/lib/ovs-bundle");
    let saved = h.dir.path().join("saved-state");
    check(
        std::process::Command::new("cp")
            .arg("-a")
            .arg(&state_dir)
            .arg(&saved)
            .output()
            .unwrap(),
        "cp",
    );
    check(
        std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
            .arg(&state_dir)
            .output()
            .unwrap(),
        "mount tmpfs",
    );
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).output();
        }
    }
    let _guard = Unmount(state_dir.clone());
    check(
        std::process::Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", saved.display()))
            .arg(&state_dir)
            .output()
            .unwrap(),
        "cp back",
    );
    let _ = std::process::Command::new("dd")
        .args(["if=/dev/zero", "bs=4k"])
        .arg(format!("of={}", state_dir.join("filler").display()))
        .output();
    let before = state(&h);
    let out = apply(&h, &h.bundle("v2", &v2(), 2));
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("No space left on device"), "{err}");
    assert!(
        err.contains("nothing was changed") || err.contains("rolled back"),
        "{err}"
    );
    assert_eq!(state(&h), before);
}

#[test]
fn two_applies_at_once_run_one_after_the_other_never_interleaved() {
    let h = host("t1");
    let (a, b) = (h.bundle("v1", &v1(), 1), h.bundle("v2", &v2(), 2));
    let run = |bundle: std::path::PathBuf| {
        let h = &h;
        move || h.applier(&["--lock-timeout", "60", "apply", bundle.to_str().unwrap()])
    };
    let (oa, ob) = std::thread::scope(|s| {
        let ta = s.spawn(run(a));
        let tb = s.spawn(run(b));
        (ta.join().unwrap(), tb.join().unwrap())
    });
    // Both complete (the second waits for the lock) unless the later serial went first, in
    // which case the earlier one is refused by the ratchet: never a mix of the two.
    let codes = (oa.status.code(), ob.status.code());
    assert!(
        matches!(codes, (Some(0), Some(0)) | (Some(15), Some(0))),
        "{codes:?}\n{}\n{}",
        text(&oa.stderr),
        text(&ob.stderr)
    );
    let status = h.applier(&["status"]);
    assert_eq!(status.status.code(), Some(0), "{}", text(&status.stdout));
    let mut ports = h.ports("br-t");
    ports.sort();
    assert_eq!(
        ports,
        ["gre-0a630002", "gre-0a630004", "priv0"],
        "the host must end wholly on v2"
    );
}

/// The "Max core file size" limits (soft, hard) of process `pid`.
fn core_limits(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap_or_else(|| panic!("no core limit in {limits}"));
    let mut f = line["Max core file size".len()..].split_whitespace();
    (f.next().unwrap().into(), f.next().unwrap().into())
}

/// Whether `uid` can read `/proc/PID/environ` (as a debugger or core dump would read memory).
fn readable_by(uid: u32, pid: u32) -> bool {
    use std::os::unix::process::CommandExt;
    std::process::Command::new("cat")
        .arg(format!("/proc/{pid}/environ"))
        .uid(uid)
        .gid(uid)
        .output()
        .unwrap()
        .status
        .success()
}

/// The applier holds PSKs: it must never dump core, nor be readable through /proc by its own
/// user. Shown on the real binary, run as an unprivileged user (nobody) so that root's
/// privileges do not hide the difference, while it waits for the lock (held by `flock`), next to
/// a `sleep` of the same user that did not ask for it.
#[test]
fn the_applier_cannot_dump_core_or_be_read_by_its_own_user() {
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::process::CommandExt;
    const NOBODY: u32 = 65534;
    assert!(
        nix::unistd::geteuid().is_root(),
        "needs root, like every namespace test"
    );
    // Children inherit a generous core limit: whatever the applier shows, it set itself.
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 1 << 30, 1 << 30)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("root/var/lib/ovs-bundle");
    std::fs::create_dir_all(&state).unwrap();
    // A copy of the binary, where nobody can run it whatever the target directory's modes.
    let bin = dir.path().join("applier");
    std::fs::copy(env!("CARGO_BIN_EXE_applier"), &bin).unwrap();
    for p in [
        dir.path(),
        &dir.path().join("root"),
        &dir.path().join("root/var"),
        &dir.path().join("root/var/lib"),
        &state,
        &bin,
    ] {
        std::os::unix::fs::chown(p, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    let lock = state.join("lock");
    let spawn = |cmd: &mut std::process::Command| {
        cmd.uid(NOBODY)
            .gid(NOBODY)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut holder = spawn(
        std::process::Command::new("flock")
            .arg(&lock)
            .args(["sleep", "60"]),
    );
    let mut control = spawn(std::process::Command::new("sleep").arg("60"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !lock.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "flock never took the lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mut applier = spawn(
        std::process::Command::new(&bin)
            .arg("--root")
            .arg(dir.path().join("root"))
            .args([
                "--host",
                "t1",
                "--ovsdb",
                "unix:/nonexistent",
                "--lock-timeout",
                "60",
            ])
            .args(["apply", "/nonexistent.tgz"]),
    );
    let pid = applier.id();
    // Waiting for the lock: it has the lock file open.
    let waiting = || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t == lock))
    };
    while !waiting() {
        if let Ok(Some(status)) = applier.try_wait() {
            let mut err = String::new();
            use std::io::Read;
            applier
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            panic!("the applier exited ({status}) instead of waiting for the lock: {err}");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the applier never opened the lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let status_owner = |pid: u32| {
        std::fs::metadata(format!("/proc/{pid}/status"))
            .unwrap()
            .uid()
    };
    let results = (
        core_limits(pid),
        status_owner(pid),
        readable_by(NOBODY, pid),
        core_limits(control.id()),
        status_owner(control.id()),
        readable_by(NOBODY, control.id()),
    );
    for c in [&mut applier, &mut control, &mut holder] {
        let _ = c.kill();
        let _ = c.wait();
    }
    let (limits, owner, readable, control_limits, control_owner, control_readable) = results;
    // The control shows that each check can tell: a core limit, files of its own, readable.
    assert_ne!(control_limits.0, "0");
    assert_eq!((control_owner, control_readable), (NOBODY, true));
    // The applier: no core file (soft and hard limit 0), and not dumpable, so proc(5) makes its
    // files root's and its user cannot read its memory.
    assert_eq!(limits, ("0".to_string(), "0".to_string()));
    assert_eq!(
        owner, 0,
        "/proc/{pid}/status is not root's: the applier is dumpable"
    );
    assert!(!readable, "nobody read the applier's /proc/{pid}/environ");
}
