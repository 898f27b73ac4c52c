//! DHCP on the real thing: `applier apply` in a network namespace with real Open vSwitch
//! (userspace datapath) starts real dnsmasq on the bridge's internal port, and a client in a
//! second namespace, joined to the bridge by a veth pair, gets its static lease with busybox
//! `udhcpc`. Then: a re-apply leaves dnsmasq alone, a changed lease restarts it, a bundle
//! without DHCP stops it, a rollback starts it again, a signed bundle with an option the
//! builder never writes is refused, and an apply killed at the DHCP step is undone.

mod common;
use common::{check, host, text, TestHost};
use std::path::PathBuf;
use std::process::Command;

const MAC: &str = "52:54:00:dd:00:01";

fn profile(lease_ip: Option<&str>) -> String {
    let mut p = "[host]\nname = \"t1\"\nunderlay_ip = \"10.99.0.1\"\n\n[[bridges]]\nname = \"br-t\"\n\
                 datapath = \"netdev\"\nhost_interfaces = [{ name = \"priv0\", address = \"10.20.0.1/24\" }]\n"
        .to_string();
    if let Some(ip) = lease_ip {
        p.push_str(&format!(
            "\n[bridges.dhcp]\nrange_start = \"10.20.0.100\"\nrange_end = \"10.20.0.110\"\n\
             lease_time = \"1h\"\n\n[[bridges.dhcp.leases]]\nmac = \"{MAC}\"\nip = \"{ip}\"\nname = \"client1\"\n"
        ));
    }
    p
}

/// Kills the host's dnsmasq when it goes, whatever the test did (the applier started it as a
/// daemon: it outlives the applier, and would outlive the namespace's test).
struct KillDnsmasq(PathBuf);

impl Drop for KillDnsmasq {
    fn drop(&mut self) {
        if let Some(pid) = std::fs::read_to_string(&self.0)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        {
            let _ = Command::new("kill").arg(pid.to_string()).output();
        }
    }
}

/// The client's namespace, joined to the host's bridge by a veth pair; deleted when it goes.
struct Client {
    ns: String,
}

impl Client {
    fn new(h: &TestHost) -> Client {
        let ns = format!("{}c", h.ns);
        check(
            Command::new("ip")
                .args(["netns", "add", &ns])
                .output()
                .unwrap(),
            "ip netns add (client)",
        );
        let client = Client { ns };
        let id = std::process::id() % 100_000;
        let (vh, vc) = (format!("dh{id}"), format!("dc{id}"));
        check(
            Command::new("ip")
                .args([
                    "link", "add", &vh, "netns", &h.ns, "type", "veth", "peer", "name", &vc,
                ])
                .args(["netns", &client.ns])
                .output()
                .unwrap(),
            "veth",
        );
        check(
            h.exec("ip", &["link", "set", &vh, "up"]),
            "ip link (host end)",
        );
        h.vsctl_ok(&["add-port", "br-t", &vh]);
        client.exec(&["ip", "link", "set", &vc, "address", MAC]);
        client.exec(&["ip", "link", "set", &vc, "up"]);
        client
    }

    fn exec(&self, args: &[&str]) -> String {
        check(
            Command::new("ip")
                .args(["netns", "exec", &self.ns])
                .args(args)
                .output()
                .unwrap(),
            &args.join(" "),
        )
    }

    /// The address a DHCP exchange gets (`udhcpc` reports it; `-s /bin/true`: configure
    /// nothing), retried a few times while the bridge and dnsmasq settle.
    fn lease(&self) -> String {
        let iface = self.exec(&["ip", "-o", "link", "show", "type", "veth"]);
        let iface = iface
            .split(':')
            .nth(1)
            .unwrap()
            .trim()
            .split('@')
            .next()
            .unwrap()
            .to_string();
        let mut last = String::new();
        for _ in 0..5 {
            let out = Command::new("ip")
                .args([
                    "netns", "exec", &self.ns, "busybox", "udhcpc", "-f", "-q", "-n",
                ])
                .args(["-t", "4", "-T", "1", "-s", "/bin/true", "-i", &iface])
                .output()
                .unwrap();
            last = format!("{}{}", text(&out.stdout), text(&out.stderr));
            if let Some(rest) = last.split("lease of ").nth(1) {
                return rest.split_whitespace().next().unwrap().to_string();
            }
        }
        panic!("no DHCP lease:\n{last}");
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}

/// dnsmasq's pid, if ours runs.
fn dnsmasq_pid(h: &TestHost) -> Option<String> {
    let pid = std::fs::read_to_string(h.root.join("run/ovs-bundle/dnsmasq.pid")).ok()?;
    let pid = pid.trim().to_string();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    String::from_utf8_lossy(&cmdline)
        .contains("dnsmasq")
        .then_some(pid)
}

fn apply(h: &TestHost, bundle: &std::path::Path) -> String {
    check(
        h.applier(&["apply", bundle.to_str().unwrap()]),
        "applier apply",
    )
}

#[test]
fn a_client_on_the_bridge_gets_its_static_lease_and_dnsmasq_follows_the_generations() {
    let h = host("t1");
    let _kill = KillDnsmasq(h.root.join("run/ovs-bundle/dnsmasq.pid"));
    let v1 = h.bundle("v1", &profile(Some("10.20.0.10")), 1);
    let out = apply(&h, &v1);
    assert!(
        out.contains("dhcp: write dnsmasq.conf, (re)start dnsmasq"),
        "{out}"
    );
    let client = Client::new(&h);
    let first = dnsmasq_pid(&h).expect("dnsmasq runs after the apply");
    let conf = std::fs::read_to_string(h.root.join("etc/ovs-bundle/dnsmasq.conf")).unwrap();
    assert!(
        conf.contains("port=0\n") && conf.contains("interface=priv0\n"),
        "{conf}"
    );
    assert_eq!(client.lease(), "10.20.0.10");
    let leases =
        std::fs::read_to_string(h.root.join("var/lib/misc/ovs-bundle-dnsmasq.leases")).unwrap();
    assert!(
        leases.contains(MAC) && leases.contains("10.20.0.10"),
        "{leases}"
    );

    // The same bundle again: nothing to do, dnsmasq not restarted; status shows no drift.
    let out = apply(&h, &v1);
    assert!(out.contains("no changes"), "{out}");
    assert_eq!(dnsmasq_pid(&h).as_deref(), Some(first.as_str()));
    assert_eq!(h.applier(&["status"]).status.code(), Some(0));

    // dnsmasq gone (a crash, a reboot): status says so, and the next apply starts it again.
    let _ = Command::new("kill").arg(&first).output();
    for _ in 0..50 {
        if dnsmasq_pid(&h).is_none() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let status = h.applier(&["status"]);
    assert_eq!(status.status.code(), Some(2), "{}", text(&status.stdout));
    assert!(
        text(&status.stdout).contains("dhcp:"),
        "{}",
        text(&status.stdout)
    );

    // Another lease address: the configuration changes, dnsmasq is restarted and serves it.
    let v2 = h.bundle("v2", &profile(Some("10.20.0.20")), 2);
    apply(&h, &v2);
    let second = dnsmasq_pid(&h).expect("dnsmasq runs after v2");
    assert_eq!(client.lease(), "10.20.0.20");

    // A signed bundle with an option the builder never writes is refused before any change.
    let hostile = std::fs::read_to_string(h.root.join("etc/ovs-bundle/dnsmasq.conf")).unwrap()
        + "dhcp-script=/bin/sh\n";
    let bad = h.bundle_with(
        "bad",
        &profile(Some("10.20.0.30")),
        3,
        "dnsmasq.conf",
        &hostile,
    );
    let out = h.applier(&["apply", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(15), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("dnsmasq.conf"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(dnsmasq_pid(&h).as_deref(), Some(second.as_str()));

    // No DHCP any more: dnsmasq stops and its configuration goes.
    let v4 = h.bundle("v4", &profile(None), 4);
    let out = apply(&h, &v4);
    assert!(
        out.contains("dhcp: stop dnsmasq, remove dnsmasq.conf"),
        "{out}"
    );
    assert_eq!(dnsmasq_pid(&h), None);
    assert!(!h.root.join("etc/ovs-bundle/dnsmasq.conf").exists());

    // Rollback to v2: the same executor puts the configuration back and starts dnsmasq.
    check(h.applier(&["rollback"]), "applier rollback");
    assert!(
        dnsmasq_pid(&h).is_some(),
        "dnsmasq not started by the rollback"
    );
    assert_eq!(client.lease(), "10.20.0.20");

    // A boot before networking: dnsmasq is gone and priv0 has no address yet. The boot unit's
    // restore starts dnsmasq all the same (bind-dynamic), and it serves once the address is back.
    let pid = dnsmasq_pid(&h).unwrap();
    let _ = Command::new("kill").arg(&pid).output();
    for _ in 0..50 {
        if dnsmasq_pid(&h).is_none() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    check(
        h.exec("ip", &["addr", "flush", "dev", "priv0"]),
        "ip addr flush",
    );
    let boot = h.applier(&["boot"]);
    assert!(boot.status.success(), "{}", text(&boot.stderr));
    assert!(dnsmasq_pid(&h).is_some(), "dnsmasq not started at boot");
    check(
        h.exec("ip", &["addr", "add", "10.20.0.1/24", "dev", "priv0"]),
        "ip addr add",
    );
    assert_eq!(client.lease(), "10.20.0.20");

    // Killed at the DHCP step: the next run undoes the apply, dnsmasq serves v2's lease again.
    let v5 = h.bundle("v5", &profile(Some("10.20.0.50")), 5);
    let out = h.applier_env(
        &["apply", v5.to_str().unwrap()],
        &[("OVS_BUNDLE_TEST_KILL_AT", "dhcp")],
    );
    assert_eq!(out.status.code(), None, "not killed: {}", text(&out.stderr));
    let boot = h.applier(&["boot"]);
    let log = text(&boot.stderr);
    assert!(boot.status.success(), "{log}");
    assert!(log.contains("undid an interrupted apply"), "{log}");
    assert_eq!(h.applier(&["status"]).status.code(), Some(0));
    assert_eq!(client.lease(), "10.20.0.20");
}
