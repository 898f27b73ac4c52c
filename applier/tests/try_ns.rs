//! `applier try` on real Open vSwitch and iptables in namespaces, with the real detached
//! watcher: it reverts by itself when nobody confirms (even after the calling session is
//! killed), when a check fails, and not after `confirm`; while a try is pending, `apply` and
//! another `try` are refused; `rollback` ends it. Also the tools for going back by hand:
//! `generations` (what each changed) and `diff`. Waits are polls with generous bounds, never
//! timed assertions.

mod common;
use common::{check, host, text, TestHost};
use std::path::Path;
use std::time::{Duration, Instant};

fn profile(peers: &[&str], addr: &str) -> String {
    let mut p = format!(
        "[host]\nname = \"t1\"\nunderlay_ip = \"10.99.0.1\"\n\n[[bridges]]\nname = \"br-t\"\ndatapath = \"netdev\"\n\
         host_interfaces = [{{ name = \"priv0\", address = \"{addr}\" }}]\n"
    );
    for ip in peers {
        p.push_str(&format!(
            "\n[[bridges.gre]]\nremote_ip = \"{ip}\"\nexternal = true\n"
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

/// The host on generation 1, and what it looks like.
fn on_v1(h: &TestHost) -> (Vec<String>, String, Option<String>) {
    let b = h.bundle("v1", &v1(), 1);
    check(h.applier(&["apply", b.to_str().unwrap()]), "apply v1");
    state(h)
}

fn state(h: &TestHost) -> (Vec<String>, String, Option<String>) {
    let mut ports = h.ports("br-t");
    ports.sort();
    (ports, h.iptables_save(), h.interfaces())
}

fn try_status(h: &TestHost) -> String {
    check(h.applier(&["try", "--status"]), "try --status")
}

/// Polls until `done` (at most `limit`), then says what it saw last.
fn wait_for(limit: Duration, what: &str, mut done: impl FnMut() -> Option<String>) -> String {
    let start = Instant::now();
    loop {
        if let Some(v) = done() {
            return v;
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn reverted(h: &TestHost) -> String {
    wait_for(Duration::from_secs(90), "the revert", || {
        let s = try_status(h);
        s.contains("no try is pending").then_some(s)
    })
}

fn try_log(h: &TestHost) -> String {
    std::fs::read_to_string(h.root.join("var/lib/ovs-bundle/try.log")).unwrap_or_default()
}

#[test]
fn an_unconfirmed_try_reverts_by_itself_even_when_its_session_is_killed() {
    let h = host("t1");
    let before = on_v1(&h);
    let b2 = h.bundle("v2", &v2(), 2);
    // `applier try` from a shell in a process group of its own, as an SSH session would run
    // it; the whole group is killed right after, as when the connection drops.
    let cmd = format!(
        "{} --root {} --ovsdb unix:{} --host t1 try {} --timeout 6s --no-builtin-checks; sleep 300",
        h.applier_bin.display(),
        h.root.display(),
        h.sock().display(),
        b2.display()
    );
    let mut session = {
        use std::os::unix::process::CommandExt;
        std::process::Command::new("ip")
            .args(["netns", "exec", &h.ns, "sh", "-c", &cmd])
            .env("OVS_RUNDIR", &h.ovs)
            .stdout(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap()
    };
    wait_for(Duration::from_secs(60), "the try", || {
        let s = try_status(&h);
        s.contains("generation 2 is on trial").then_some(s)
    });
    let trying = state(&h);
    assert_ne!(trying, before, "generation 2 is applied");
    assert!(
        trying.0.contains(&"gre-0a630004".to_string()),
        "{:?}",
        trying.0
    );
    let status = check_code(h.applier(&["status"]), 0, "status");
    assert!(
        status.contains("try: generation 2 is on trial; it reverts to generation 1"),
        "{status}"
    );
    let pgid = nix::unistd::Pid::from_raw(session.id() as i32);
    nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGHUP).unwrap();
    nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL).unwrap();
    session.wait().unwrap();

    let s = reverted(&h);
    assert!(
        s.contains("last try: generation 2 reverted") && s.contains("not confirmed within 6 s"),
        "{s}"
    );
    assert_eq!(state(&h), before, "the host is back on generation 1");
    let gens = check(h.applier(&["generations"]), "generations");
    assert!(gens.lines().any(|l| l.starts_with("*    1")), "{gens}");
    let log = try_log(&h);
    assert!(log.contains("reverted to generation 1"), "{log}");
    // Nothing to confirm any more, and the answer says why.
    let out = h.applier(&["confirm"]);
    assert_eq!(out.status.code(), Some(15));
    assert!(
        text(&out.stderr).contains("was reverted at"),
        "{}",
        text(&out.stderr)
    );
}

fn check_code(out: std::process::Output, code: i32, what: &str) -> String {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}: stdout {} stderr {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

#[test]
fn confirm_keeps_the_generation_and_stops_the_watcher() {
    let h = host("t1");
    on_v1(&h);
    let b2 = h.bundle("v2", &v2(), 2);
    let out = check(
        h.applier(&[
            "try",
            b2.to_str().unwrap(),
            "--timeout",
            "20s",
            "--check",
            "true",
        ]),
        "try",
    );
    assert!(
        out.contains("applied on trial: generation 2 is on trial"),
        "{out}"
    );
    assert!(out.contains("run `applier confirm` to keep it"), "{out}");
    let trying = state(&h);
    let out = check(h.applier(&["confirm"]), "confirm");
    assert!(out.contains("confirmed: generation 2 stays"), "{out}");
    wait_for(Duration::from_secs(30), "the watcher to stop", || {
        let log = try_log(&h);
        log.contains("ended (confirmed or rolled back)")
            .then_some(log)
    });
    assert_eq!(state(&h), trying);
    let s = try_status(&h);
    assert!(s.contains("no try is pending"), "{s}");
    // Confirmed means permanent: an apply is accepted again.
    let b3 = h.bundle("v3", &v1(), 3);
    check(
        h.applier(&["apply", b3.to_str().unwrap()]),
        "apply after confirm",
    );
}

#[test]
fn a_failing_check_reverts_at_once_and_a_pending_try_refuses_changes() {
    let h = host("t1");
    let before = on_v1(&h);
    let flag = h.root.join("healthy");
    std::fs::write(&flag, "").unwrap();
    let check_cmd = format!("test -e {}", flag.display());
    let b2 = h.bundle("v2", &v2(), 2);
    check(
        h.applier(&[
            "try",
            b2.to_str().unwrap(),
            "--timeout",
            "10m",
            "--no-builtin-checks",
            "--check",
            &check_cmd,
        ]),
        "try",
    );
    wait_for(Duration::from_secs(30), "the check to pass", || {
        let log = try_log(&h);
        log.contains("all 1 check(s) passed").then_some(log)
    });
    // While it is pending: another apply or try is refused, and says what to do; plan
    // predicts it.
    for cmd in ["apply", "try", "plan"] {
        let out = h.applier(&[cmd, b2.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(15), "{cmd}");
        let err = text(&out.stderr);
        assert!(
            err.contains("generation 2 is on trial") && err.contains("applier confirm"),
            "{cmd}: {err}"
        );
    }
    // The check starts failing: the try reverts long before its 10 minutes.
    std::fs::remove_file(&flag).unwrap();
    let s = reverted(&h);
    assert!(
        s.contains(&format!("check `{check_cmd}` failed after it had passed")),
        "{s}"
    );
    assert_eq!(state(&h), before);
}

#[test]
fn builtin_checks_revert_a_try_whose_peers_have_no_underlay_route() {
    let h = host("t1");
    let before = on_v1(&h);
    let b2 = h.bundle("v2", &v2(), 2);
    // The namespace has no route to 10.99.0.0/24: the underlay check never passes.
    let out = check(
        h.applier(&[
            "try",
            b2.to_str().unwrap(),
            "--timeout",
            "10m",
            "--settle",
            "2s",
        ]),
        "try",
    );
    assert!(out.contains("underlay route to every peer"), "{out}");
    let s = reverted(&h);
    assert!(
        s.contains("underlay route to 10.99.0.2 has not passed within 2 s: no route"),
        "{s}"
    );
    assert_eq!(state(&h), before);
}

/// IPv6 peers are checked too (from `/proc/net/ipv6_route`): the namespace has no IPv6 route
/// but the kernel's reject route, which leads nowhere.
#[test]
fn builtin_checks_revert_a_try_whose_ipv6_peers_have_no_underlay_route() {
    let h = host("t1");
    let before = on_v1(&h);
    let v6 = "[host]\nname = \"t1\"\nunderlay_ip = \"fd99::1\"\n\n[[bridges]]\nname = \"br-t\"\n\
              datapath = \"netdev\"\nhost_interfaces = [{ name = \"priv0\", address = \"10.20.0.1/24\" }]\n\n\
              [[bridges.gre]]\nremote_ip = \"fd99::2\"\ntype = \"vxlan\"\nexternal = true\n";
    let b2 = h.bundle("v6", v6, 2);
    check(
        h.applier(&[
            "try",
            b2.to_str().unwrap(),
            "--timeout",
            "10m",
            "--settle",
            "2s",
        ]),
        "try",
    );
    let s = reverted(&h);
    assert!(
        s.contains("underlay route to fd99::2 has not passed within 2 s: no route"),
        "{s}"
    );
    assert_eq!(state(&h), before);
}

#[test]
fn rollback_ends_a_pending_try_and_json_reports_it() {
    let h = host("t1");
    let before = on_v1(&h);
    let b2 = h.bundle("v2", &v2(), 2);
    let out = check(
        h.applier(&["--json", "try", b2.to_str().unwrap(), "--timeout", "10m"]),
        "try --json",
    );
    let doc: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(doc["result"], "on-trial", "{doc}");
    assert_eq!(
        (doc["generation"].as_u64(), doc["previous"].as_u64()),
        (Some(2), Some(1))
    );
    let out = check(
        h.applier(&["--json", "try", "--status"]),
        "try --status --json",
    );
    let doc: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(doc["result"], "pending");
    assert_eq!(doc["try"]["generation"], 2);
    // Boot in the same boot (the incoming path unit) leaves the try to its watcher.
    let out = check(h.applier(&["boot"]), "boot");
    let _ = out;
    assert!(try_status(&h).contains("generation 2 is on trial"));

    let out = check(h.applier(&["rollback"]), "rollback");
    assert!(out.contains("generation 1 is current"), "{out}");
    let s = try_status(&h);
    assert!(s.contains("last try: generation 2 rolled-back"), "{s}");
    assert_eq!(state(&h), before);
}

#[test]
fn try_refuses_a_host_with_nothing_to_go_back_to() {
    let h = host("t1");
    let b = h.bundle("v1", &v1(), 1);
    let out = h.applier(&["try", b.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(15));
    assert!(
        text(&out.stderr).contains("Use `applier apply`"),
        "{}",
        text(&out.stderr)
    );
    assert!(!Path::new(&h.root.join("var/lib/ovs-bundle/try.json")).exists());
}

#[test]
fn generations_and_diff_say_what_changed_without_showing_psks() {
    let h = host("t1");
    on_v1(&h);
    let psk = "generations-test-psk-Kq2v9";
    let mut v2 = v2();
    v2.push_str(&format!(
        "\n[[bridges.gre]]\nremote_ip = \"10.99.0.9\"\nexternal = true\npsk = \"{psk}\"\n"
    ));
    let b2 = h.bundle("v2", &v2, 2);
    check(h.applier(&["apply", b2.to_str().unwrap()]), "apply v2");
    let gens = check(h.applier(&["generations"]), "generations");
    let key = check(h.applier(&["keys"]), "keys");
    let key_id = key.split_whitespace().next().unwrap();
    let lines: Vec<&str> = gens.lines().collect();
    assert!(
        lines[0].contains("serial 1")
            && lines[0].contains(&format!("key {key_id}"))
            && lines[0].ends_with("first: 1 bridge(s), 2 tunnel(s)"),
        "{gens}"
    );
    assert!(
        lines[1].starts_with("*    2")
            && lines[1].ends_with("+2 tunnel(s), -1 tunnel(s), iptables, interfaces"),
        "{gens}"
    );
    let out = h.applier(&["diff", "1", "2"]);
    assert_eq!(out.status.code(), Some(2));
    let d = text(&out.stdout);
    for want in [
        "generation 1 -> 2:",
        "- port gre-0a630003 on br-t: gre remote_ip=10.99.0.3",
        "+ port gre-0a630004 on br-t: gre remote_ip=10.99.0.4",
        "+ port gre-0a630009 on br-t: gre psk=<redacted sha256:",
        "    +    address 10.20.0.2/24",
    ] {
        assert!(d.contains(want), "missing {want:?}:\n{d}");
    }
    assert!(!d.contains(psk) && !text(&out.stderr).contains(psk), "{d}");
    // B defaults to the current generation; the same generation differs in nothing.
    let out = h.applier(&["diff", "2"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("configure the same"));
    let out = h.applier(&["diff", "7"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("generation 7:"),
        "{}",
        text(&out.stderr)
    );
}
