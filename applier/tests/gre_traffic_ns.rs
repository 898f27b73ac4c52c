//! Two hosts (network namespaces joined by a veth pair), each with its own OVS. The underlay
//! address sits on a hand-made `br-phy` holding the veth, as OVS's userspace tunnels need; the
//! bundles create the tunnel bridges. After `applier apply` on both, traffic crosses the tunnel:
//! plain GRE, and several bridges to the same peer told apart by GRE keys and by type (VXLAN,
//! Geneve), whose traffic stays on its own bridge.

mod common;
use common::{check, host, text, TestHost};
use nshost::veth_pair;

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

/// Two hosts joined by a veth pair, underlay addresses 10.98.0.1 and .2 on their br-phy.
fn two_hosts() -> (TestHost, TestHost) {
    let a = host("a");
    let b = host("b");
    let (va, vb) = veth_pair(&a, &b, "v");
    underlay(&a, &va, "10.98.0.1/24");
    underlay(&b, &vb, "10.98.0.2/24");
    (a, b)
}

#[test]
fn two_hosts_pass_traffic_over_gre_after_apply() {
    let (a, b) = two_hosts();
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
    a.ping_until_answered("10.21.0.2", 10);
}

/// Four bridges per host to the same peer: GRE with key 1, GRE with key 2, VXLAN, Geneve. Each
/// pair of bridges talks; a frame from one bridge never reaches another (their MAC tables).
#[test]
fn keyed_and_vxlan_tunnels_to_one_peer_keep_their_bridges_apart() {
    let (a, b) = two_hosts();
    let profile = |name: &str, me: &str, peer: &str, n: u8| {
        let mut p = format!("[host]\nname = \"{name}\"\nunderlay_ip = \"{me}\"\n");
        for (br, kind, key, net) in [
            ("br-k1", "gre", "key = 1\n", 31),
            ("br-k2", "gre", "key = 2\n", 32),
            ("br-vx", "vxlan", "", 33),
            ("br-gn", "geneve", "key = 9\n", 34),
        ] {
            p.push_str(&format!(
                "\n[[bridges]]\nname = \"{br}\"\ndatapath = \"netdev\"\n\
                 host_interfaces = [{{ name = \"p{net}\", address = \"10.{net}.0.{n}/24\" }}]\n\
                 [[bridges.gre]]\nremote_ip = \"{peer}\"\ntype = \"{kind}\"\n{key}external = true\n"
            ));
        }
        p
    };
    let ba = a.bundle("a", &profile("a", "10.98.0.1", "10.98.0.2", 1), 1);
    let bb = b.bundle("b", &profile("b", "10.98.0.2", "10.98.0.1", 2), 1);
    check(a.applier(&["apply", ba.to_str().unwrap()]), "apply a");
    check(b.applier(&["apply", bb.to_str().unwrap()]), "apply b");
    // Port names carry type and key; the key is set on the interface.
    let mut ports = a.ports("br-k1");
    ports.extend(a.ports("br-k2"));
    ports.extend(a.ports("br-vx"));
    ports.extend(a.ports("br-gn"));
    ports.sort();
    assert_eq!(
        ports,
        [
            "g0a620002k1",
            "g0a620002k2",
            "n0a620002k9",
            "p31",
            "p32",
            "p33",
            "p34",
            "vxl-0a620002"
        ]
    );
    assert_eq!(a.iface("g0a620002k2", "options:key"), "\"2\"");
    assert_eq!(a.iface("vxl-0a620002", "type"), "vxlan");
    for addr in ["10.31.0.2", "10.32.0.2", "10.33.0.2", "10.34.0.2"] {
        a.ping_until_answered(addr, 10);
    }
    // A's p31 is known to b's br-k1 only: its frames (ARP broadcasts included) never left
    // their key.
    let mac = a.exec("cat", &["/sys/class/net/p31/address"]).stdout;
    let mac = text(&mac).trim().to_string();
    let ctl = b.ovs.join("ovs-vswitchd.ctl").display().to_string();
    let fdb = |br: &str| {
        check(
            b.exec("ovs-appctl", &["-t", &ctl, "fdb/show", br]),
            "ovs-appctl fdb/show",
        )
    };
    assert!(fdb("br-k1").contains(&mac), "{}", fdb("br-k1"));
    for br in ["br-k2", "br-vx", "br-gn"] {
        assert!(!fdb(br).contains(&mac), "{br} learnt {mac}:\n{}", fdb(br));
    }
    let status = a.applier(&["status"]);
    assert_eq!(status.status.code(), Some(0), "{}", text(&status.stdout));
}
