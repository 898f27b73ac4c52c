//! Two hosts (network namespaces joined by a veth pair), each with its own OVS. The underlay
//! address sits on a hand-made `br-phy` holding the veth, as OVS's userspace tunnels need; the
//! bundles create the tunnel bridges. After `applier apply` on both, traffic crosses the tunnel.

mod common;
use common::{check, host, text, TestHost};
use std::process::Command;

fn underlay(h: &TestHost, veth: &str, ip: &str) {
    h.vsctl_ok(&[
        "add-br",
        "br-phy",
        "--",
        "set",
        "Bridge",
        "br-phy",
        "datapath_type=netdev",
    ]);
    h.vsctl_ok(&["add-port", "br-phy", veth]);
    check(
        h.exec("ip", &["addr", "add", ip, "dev", "br-phy"]),
        "ip addr",
    );
    check(
        h.exec("ip", &["link", "set", "br-phy", "up"]),
        "ip link br-phy",
    );
    check(h.exec("ip", &["link", "set", veth, "up"]), "ip link veth");
}

fn profile(name: &str, me: &str, peer: &str, addr: &str) -> String {
    format!(
        "[host]\nname = \"{name}\"\nunderlay_ip = \"{me}\"\n\n[[bridges]]\nname = \"br-t\"\ndatapath = \"netdev\"\n\
         host_interfaces = [{{ name = \"priv0\", address = \"{addr}\" }}]\n\n[[bridges.gre]]\nremote_ip = \"{peer}\"\nexternal = true\n"
    )
}

#[test]
fn two_hosts_pass_traffic_over_gre_after_apply() {
    let a = host("a");
    let b = host("b");
    let (va, vb) = (
        format!("va{}", std::process::id() % 100000),
        format!("vb{}", std::process::id() % 100000),
    );
    check(
        Command::new("ip")
            .args([
                "link", "add", &va, "netns", &a.ns, "type", "veth", "peer", "name", &vb, "netns",
                &b.ns,
            ])
            .output()
            .unwrap(),
        "veth",
    );
    underlay(&a, &va, "10.98.0.1/24");
    underlay(&b, &vb, "10.98.0.2/24");
    let ba = a.bundle(
        "a",
        &profile("a", "10.98.0.1", "10.98.0.2", "10.21.0.1/24"),
        1,
    );
    let bb = b.bundle(
        "b",
        &profile("b", "10.98.0.2", "10.98.0.1", "10.21.0.2/24"),
        1,
    );
    check(a.applier(&["apply", ba.to_str().unwrap()]), "apply a");
    check(b.applier(&["apply", bb.to_str().unwrap()]), "apply b");
    // The first packets wait for OVS's tunnel neighbour resolution; allow a few tries.
    let mut last = String::new();
    for _ in 0..10 {
        let out = a.exec("ping", &["-c", "1", "-W", "1", "10.21.0.2"]);
        if out.status.success() {
            return;
        }
        last = format!("{}{}", text(&out.stdout), text(&out.stderr));
    }
    let log = std::fs::read_to_string(a.ovs.join("ovs-vswitchd.log")).unwrap_or_default();
    panic!(
        "no reply over GRE:\n{last}\nvswitchd log tail:\n{}",
        log.lines().rev().take(20).collect::<Vec<_>>().join("\n")
    );
}
