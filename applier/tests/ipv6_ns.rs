//! IPv6 on the real thing: two hosts (network namespaces joined by a veth pair, each with its own
//! userspace-datapath OVS) whose underlay is IPv6 only, on a hand-made `br-phy` holding the veth
//! as OVS's userspace tunnels need. After `applier apply` on both, overlay traffic crosses GRE
//! over IPv6 (`ip6gre`) and VXLAN over IPv6, each on its own bridge. And on one host: the
//! ip6tables chains of a v6 forwarder and IPsec guard are applied, left alone by a re-apply,
//! repaired after drift, rolled back with the rest when a later apply fails, and never filled
//! from a signed bundle with a rule the builder would not make.

mod common;
use common::{check, host, text, TestHost};
use nshost::veth_pair;

fn underlay6(h: &TestHost, veth: &str, ip: &str) {
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
    // nodad: the address is usable at once, not after duplicate address detection.
    check(
        h.exec("ip", &["-6", "addr", "add", ip, "dev", "br-phy", "nodad"]),
        "ip -6 addr",
    );
    check(
        h.exec("ip", &["link", "set", "br-phy", "up"]),
        "ip link br-phy",
    );
    check(h.exec("ip", &["link", "set", veth, "up"]), "ip link veth");
}

/// Two hosts joined by a veth pair, underlay addresses fd98::1 and fd98::2 on their br-phy, and
/// no IPv4 address on the underlay at all.
fn two_hosts6() -> (TestHost, TestHost) {
    let a = host("a");
    let b = host("b");
    let (va, vb) = veth_pair(&a, &b, "v6");
    underlay6(&a, &va, "fd98::1/64");
    underlay6(&b, &vb, "fd98::2/64");
    (a, b)
}

/// Host `name` at `me`, with a keyed GRE (ip6gre) bridge and a VXLAN bridge to `peer`; host
/// number `n` on the overlay networks 10.41.0.0/24 (with fd41::/64 beside it) and 10.42.0.0/24.
fn profile(name: &str, me: &str, peer: &str, n: u8) -> String {
    format!(
        "[host]\nname = \"{name}\"\nunderlay_ip = \"{me}\"\n\n\
         [[bridges]]\nname = \"br-g6\"\ndatapath = \"netdev\"\n\
         host_interfaces = [{{ name = \"p41\", address = \"10.41.0.{n}/24\", address6 = \"fd41::{n}/64\" }}]\n\
         [[bridges.gre]]\nremote_ip = \"{peer}\"\nkey = 6\nexternal = true\n\n\
         [[bridges]]\nname = \"br-v6\"\ndatapath = \"netdev\"\n\
         host_interfaces = [{{ name = \"p42\", address = \"10.42.0.{n}/24\" }}]\n\
         [[bridges.gre]]\nremote_ip = \"{peer}\"\ntype = \"vxlan\"\nexternal = true\n"
    )
}

#[test]
fn two_hosts_on_an_ipv6_underlay_pass_traffic_over_ip6gre_and_vxlan() {
    let (a, b) = two_hosts6();
    let ba = a.bundle("a", &profile("a", "fd98::1", "fd98::2", 1), 1);
    let bb = b.bundle("b", &profile("b", "fd98::2", "fd98::1", 2), 1);
    check(a.applier(&["apply", ba.to_str().unwrap()]), "apply a");
    check(b.applier(&["apply", bb.to_str().unwrap()]), "apply b");
    let gre: Vec<String> = a
        .ports("br-g6")
        .into_iter()
        .filter(|p| p != "p41")
        .collect();
    assert_eq!(gre.len(), 1, "{gre:?}");
    assert!(gre[0].starts_with("g6") && gre[0].len() == 15, "{gre:?}");
    assert_eq!(a.iface(&gre[0], "type"), "ip6gre");
    assert_eq!(a.iface(&gre[0], "options:remote_ip"), "\"fd98::2\"");
    let vx: Vec<String> = a
        .ports("br-v6")
        .into_iter()
        .filter(|p| p != "p42")
        .collect();
    assert_eq!(a.iface(&vx[0], "type"), "vxlan");
    a.ping_until_answered("10.41.0.2", 15);
    a.ping_until_answered("10.42.0.2", 15);
    // The generated inet6 stanza put the overlay's IPv6 address up too.
    a.ping_until_answered("fd41::2", 15);
    // Nothing drifted: what the applier reads back is what it applied.
    let status = a.applier(&["status"]);
    assert_eq!(status.status.code(), Some(0), "{}", text(&status.stdout));
}

fn ip6tables_save(h: &TestHost) -> String {
    let out = check(h.exec("ip6tables-save", &[]), "ip6tables-save");
    out.lines()
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

/// One host with a dual-stack forwarder and a VXLAN tunnel with a PSK to an IPv6 peer.
fn forwarder6(address: &str) -> String {
    format!(
        "[host]\nname = \"t1\"\nunderlay_ip = \"fd99::1\"\n\n[[bridges]]\nname = \"br-t\"\n\
         datapath = \"netdev\"\n\
         host_interfaces = [{{ name = \"priv0\", address = \"{address}\", address6 = \"fd20::1/64\" }}]\n\n\
         [[bridges.gre]]\nremote_ip = \"fd99::2\"\ntype = \"vxlan\"\npsk = \"ipv6-ns-psk-0123456789\"\nexternal = true\n\n\
         [bridges.forwarder]\nfrom = \"priv0\"\nvia = \"eth0\"\nsource = \"10.20.0.0/24\"\nsource6 = \"fd20::/64\"\n"
    )
}

#[test]
fn ip6tables_chains_are_applied_and_rolled_back_with_the_rest() {
    let h = host("t1");
    let fwd = h.exec("cat", &["/proc/sys/net/ipv6/conf/all/forwarding"]);
    assert_eq!(
        text(&fwd.stdout).trim(),
        "0",
        "a new namespace forwards nothing"
    );
    // A signed bundle whose ip6tables.rules would open the host's firewall (or holds an IPv4
    // network) is refused before anything changes.
    let empty = ip6tables_save(&h);
    for bad in [
        "*filter\n:OVSB-INPUT - [0:0]\n-A OVSB-INPUT -j ACCEPT\nCOMMIT\n",
        "*nat\n:OVSB-POSTROUTING - [0:0]\n-A OVSB-POSTROUTING -s 10.20.0.0/24 -o eth0 -j MASQUERADE\nCOMMIT\n",
    ] {
        let b = h.bundle_with("bad", &forwarder6("10.20.0.1/24"), 1, "ip6tables.rules", bad);
        let out = h.applier(&["apply", b.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(15), "{}", text(&out.stderr));
        assert!(text(&out.stderr).contains("ip6tables.rules"), "{}", text(&out.stderr));
        assert_eq!(ip6tables_save(&h), empty);
    }
    let out = h.applier(&[
        "apply",
        h.bundle("v1", &forwarder6("10.20.0.1/24"), 1)
            .to_str()
            .unwrap(),
    ]);
    check(out, "apply v1");
    let rules = ip6tables_save(&h);
    for want in [
        "-A POSTROUTING -j OVSB-POSTROUTING",
        "-A OVSB-POSTROUTING -s fd20::/64 -o eth0 -j MASQUERADE",
        "-A OVSB-FORWARD -s fd20::/64 -i priv0 -o eth0 -j ACCEPT",
        "-A OVSB-OUTPUT -d fd99::2/128 -j OVSB-GUARD-VXLAN",
        "-A OVSB-GUARD-VXLAN -p udp -m udp --dport 4789 -m policy --dir out --pol none -j DROP",
    ] {
        assert!(rules.contains(want), "missing {want:?} in:\n{rules}");
    }
    // IPv6 addresses stay out of the IPv4 chains.
    assert!(!h.iptables_save().contains("fd"), "{}", h.iptables_save());
    let fwd = h.exec("cat", &["/proc/sys/net/ipv6/conf/all/forwarding"]);
    assert_eq!(text(&fwd.stdout).trim(), "1");
    // A re-apply leaves them alone; status sees no drift in them.
    check(
        h.applier(&[
            "apply",
            h.bundle("v1b", &forwarder6("10.20.0.1/24"), 1)
                .to_str()
                .unwrap(),
        ]),
        "re-apply",
    );
    assert_eq!(ip6tables_save(&h), rules);
    // Drift is seen: a rule removed by hand.
    check(
        h.exec("ip6tables", &["-t", "nat", "-F", "OVSB-POSTROUTING"]),
        "flush by hand",
    );
    let status = h.applier(&["status"]);
    assert_ne!(status.status.code(), Some(0), "drift not seen");
    assert!(
        text(&status.stdout).contains("fd20::/64"),
        "{}",
        text(&status.stdout)
    );
    check(
        h.applier(&[
            "apply",
            h.bundle("v1c", &forwarder6("10.20.0.1/24"), 1)
                .to_str()
                .unwrap(),
        ]),
        "repair",
    );
    assert_eq!(ip6tables_save(&h), rules);
    // A v2 that drops the forwarder and the tunnel but cannot be applied (eth9 does not exist):
    // the ip6tables chains come back as they were.
    let broken =
        "[host]\nname = \"t1\"\nunderlay_ip = \"fd99::1\"\n\n[[bridges]]\nname = \"br-t\"\n\
         datapath = \"netdev\"\nphysical_interfaces = [\"eth9\"]\n\
         host_interfaces = [{ name = \"priv0\", address = \"10.20.0.7/24\" }]\n";
    let out = h.applier(&["apply", h.bundle("v2", broken, 2).to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("rolled back"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(ip6tables_save(&h), rules);
    // And an IPv4-only bundle removes them, jumps included.
    let plain = "[host]\nname = \"t1\"\nunderlay_ip = \"fd99::1\"\n\n[[bridges]]\nname = \"br-t\"\n\
         datapath = \"netdev\"\nhost_interfaces = [{ name = \"priv0\", address = \"10.20.0.1/24\" }]\n";
    check(
        h.applier(&["apply", h.bundle("v3", plain, 3).to_str().unwrap()]),
        "apply v3",
    );
    let after = ip6tables_save(&h);
    assert!(!after.contains("OVSB"), "{after}");
    // IPv6 forwarding is back to the namespace's 0 from before the forwarder.
    let fwd = h.exec("cat", &["/proc/sys/net/ipv6/conf/all/forwarding"]);
    assert_eq!(text(&fwd.stdout).trim(), "0");
}
