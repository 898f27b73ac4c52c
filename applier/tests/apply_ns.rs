//! `applier apply` on real Open vSwitch (userspace datapath) and iptables, each test in its own
//! network namespace with its own ovsdb-server and ovs-vswitchd. Results are read back with
//! independent tools: ovs-vsctl, iptables-save, the files themselves.
//!
//! Over 500 lines on purpose: one scenario per function, each a story of its own; splitting
//! them by size would only separate steps that belong together.

mod common;
use common::{check, host, text, TestHost};

const PSK_A: &str = "namespace-test-psk-aaaaaaaa";

/// A host with one userspace bridge, an internal port with an address, three GRE peers (one
/// with a PSK) and a NAT forwarder.
fn profile(peers: &[(&str, Option<&str>)], address: &str) -> String {
    let mut p = format!(
        "[host]\nname = \"t1\"\nunderlay_ip = \"10.99.0.1\"\n\n[[bridges]]\nname = \"br-t\"\ndatapath = \"netdev\"\n\
         host_interfaces = [{{ name = \"priv0\", address = \"{address}\" }}]\n"
    );
    for (ip, psk) in peers {
        // A host of its own: its peers are outside the fleet it is built in.
        p.push_str(&format!(
            "\n[[bridges.gre]]\nremote_ip = \"{ip}\"\nexternal = true\n"
        ));
        if let Some(psk) = psk {
            p.push_str(&format!("psk = \"{psk}\"\n"));
        }
    }
    p.push_str(
        "\n[bridges.forwarder]\nfrom = \"priv0\"\nvia = \"eth0\"\nsource = \"10.20.0.0/24\"\n",
    );
    p
}

/// The steps of an apply, as the kill hook names them.
const APPLY_STEPS: [&str; 8] = [
    "generation",
    "ovs-transact",
    "ovs-wait",
    "iptables",
    "sysctl",
    "interfaces",
    "ifupdown",
    "switch",
];

/// A successor of `three_peers` that changes every part: tunnels (the first one's key becomes
/// `psk`), the address, and no more forwarder (rules and sysctl go), so that every step of an
/// apply has work to do and can be interrupted.
fn changes_every_part(psk: &str) -> String {
    let p = profile(
        &[("10.99.0.2", Some(psk)), ("10.99.0.7", None)],
        "10.20.0.8/24",
    );
    p.split("\n[bridges.forwarder]").next().unwrap().to_string()
}

fn three_peers() -> String {
    profile(
        &[
            ("10.99.0.2", Some(PSK_A)),
            ("10.99.0.3", None),
            ("10.99.0.4", None),
        ],
        "10.20.0.1/24",
    )
}

fn apply(h: &TestHost, bundle: &std::path::Path, extra: &[&str]) -> String {
    let mut args = vec!["apply", bundle.to_str().unwrap()];
    args.extend_from_slice(extra);
    check(h.applier(&args), "applier apply")
}

#[test]
fn first_apply_configures_ovs_iptables_interfaces_and_sysctl() {
    let h = host("t1");
    let b = h.bundle("v1", &three_peers(), 1);
    let out = apply(&h, &b, &[]);
    assert!(out.contains("applied: generation 1 is current"), "{out}");
    assert!(!out.contains(PSK_A), "PSK printed:\n{out}");

    let mut ports = h.ports("br-t");
    ports.sort();
    assert_eq!(
        ports,
        ["gre-0a630002", "gre-0a630003", "gre-0a630004", "priv0"]
    );
    assert_eq!(
        h.vsctl_ok(&["get", "Bridge", "br-t", "datapath_type"]),
        "netdev"
    );
    assert_eq!(h.iface("gre-0a630002", "type"), "gre");
    assert_eq!(
        h.iface("gre-0a630002", "options:remote_ip"),
        "\"10.99.0.2\""
    );
    assert_eq!(
        h.iface("gre-0a630002", "options:psk").trim_matches('"'),
        PSK_A
    );
    assert_eq!(
        h.iface("gre-0a630003", "options"),
        "{remote_ip=\"10.99.0.3\"}"
    );
    assert_eq!(h.iface("priv0", "type"), "internal");
    assert_eq!(
        h.vsctl_ok(&["get", "Port", "priv0", "external_ids:ovs-bundle-owner"]),
        "t1"
    );
    assert!(h.iface("gre-0a630004", "ofport").parse::<i64>().unwrap() > 0);

    let rules = h.iptables_save();
    assert!(rules.contains("-A FORWARD -j OVSB-FORWARD"), "{rules}");
    assert!(
        rules.contains("-A POSTROUTING -j OVSB-POSTROUTING"),
        "{rules}"
    );
    assert!(
        rules.contains("-A OVSB-POSTROUTING -s 10.20.0.0/24 -o eth0 -j MASQUERADE"),
        "{rules}"
    );
    assert!(
        rules.contains("-A OVSB-INPUT -i priv0 -j ACCEPT"),
        "{rules}"
    );

    let file = h.interfaces().unwrap();
    assert!(
        file.contains("iface priv0 inet static\n    address 10.20.0.1/24"),
        "{file}"
    );
    // ifup ran for the changed stanza: the internal port has its address.
    let addr = text(&h.exec("ip", &["-4", "addr", "show", "priv0"]).stdout);
    assert!(addr.contains("10.20.0.1/24"), "{addr}");
    assert_eq!(
        std::fs::read_to_string(h.root.join("etc/sysctl.d/60-ovs-bundle.conf"))
            .unwrap()
            .lines()
            .last(),
        Some("net.ipv4.ip_forward = 1")
    );
    let fwd = text(&h.exec("cat", &["/proc/sys/net/ipv4/ip_forward"]).stdout);
    assert_eq!(fwd.trim(), "1");

    let gens = check(h.applier(&["generations"]), "generations");
    assert!(gens.contains("*    1  serial 1"), "{gens}");
    // Secrets on disk are for root only.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(h.root.join("var/lib/ovs-bundle/generations/1/bundle.tgz"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0);
}

#[test]
fn reapplying_is_a_noop_with_zero_writes() {
    let h = host("t1");
    let b = h.bundle("v1", &three_peers(), 1);
    apply(&h, &b, &[]);
    let (cfg, uuid, rules) = (h.next_cfg(), h.port_uuid("gre-0a630002"), h.iptables_save());
    let out = apply(&h, &b, &["--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["result"], "unchanged", "{out}");
    assert_eq!(v["ovs_write_ops"], 0);
    assert_eq!(h.next_cfg(), cfg, "a transaction was committed");
    assert_eq!(h.port_uuid("gre-0a630002"), uuid);
    assert_eq!(h.iptables_save(), rules);
    // A rebuilt bundle with a new serial but the same content: a new generation, still no writes.
    let b2 = h.bundle("v1b", &three_peers(), 2);
    let out = apply(&h, &b2, &["--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (
            v["result"].as_str(),
            v["generation"].as_u64(),
            v["changes"].as_u64()
        ),
        (Some("applied"), Some(2), Some(0)),
        "{out}"
    );
    assert_eq!(h.next_cfg(), cfg);
    // plan agrees: nothing to do, exit 0.
    let plan = h.applier(&["plan", b2.to_str().unwrap()]);
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan.stdout));
}

#[test]
fn changing_one_tunnel_updates_only_that_row_in_place() {
    let h = host("t1");
    apply(&h, &h.bundle("v1", &three_peers(), 1), &[]);
    let before: Vec<(String, String)> = ["gre-0a630002", "gre-0a630003", "gre-0a630004", "priv0"]
        .iter()
        .map(|p| (h.port_uuid(p), h.iface(p, "ofport")))
        .collect();
    let changed = profile(
        &[
            ("10.99.0.2", Some("a-different-psk-bbbbbbbbbb")),
            ("10.99.0.3", None),
            ("10.99.0.4", None),
        ],
        "10.20.0.1/24",
    );
    let b2 = h.bundle("v2", &changed, 2);
    let plan = h.applier(&["plan", b2.to_str().unwrap()]);
    assert_eq!(plan.status.code(), Some(2));
    let shown = text(&plan.stdout);
    assert!(
        shown.contains("~ port br-t/gre-0a630002: options:psk <redacted sha256:"),
        "{shown}"
    );
    assert!(!shown.contains("a-different-psk"), "{shown}");
    assert_eq!(
        shown.matches("\n  ").count(),
        1,
        "only one change expected:\n{shown}"
    );
    apply(&h, &b2, &[]);
    let after: Vec<(String, String)> = ["gre-0a630002", "gre-0a630003", "gre-0a630004", "priv0"]
        .iter()
        .map(|p| (h.port_uuid(p), h.iface(p, "ofport")))
        .collect();
    assert_eq!(before, after, "uuids and ofports must not change");
    assert_eq!(
        h.iface("gre-0a630002", "options:psk").trim_matches('"'),
        "a-different-psk-bbbbbbbbbb"
    );
}

#[test]
fn removing_a_peer_deletes_exactly_its_port() {
    let h = host("t1");
    apply(&h, &h.bundle("v1", &three_peers(), 1), &[]);
    let keep = (h.port_uuid("gre-0a630002"), h.port_uuid("gre-0a630004"));
    let fewer = profile(
        &[("10.99.0.2", Some(PSK_A)), ("10.99.0.4", None)],
        "10.20.0.1/24",
    );
    let out = apply(&h, &h.bundle("v2", &fewer, 2), &[]);
    assert!(out.contains("- port br-t/gre-0a630003"), "{out}");
    let mut ports = h.ports("br-t");
    ports.sort();
    assert_eq!(ports, ["gre-0a630002", "gre-0a630004", "priv0"]);
    assert_eq!(
        (h.port_uuid("gre-0a630002"), h.port_uuid("gre-0a630004")),
        keep
    );
    assert!(
        !h.vsctl(&["get", "Interface", "gre-0a630003", "type"])
            .status
            .success(),
        "interface row left behind"
    );
}

#[test]
fn gre_only_touches_nothing_but_tunnels() {
    let h = host("t1");
    apply(&h, &h.bundle("v1", &three_peers(), 1), &[]);
    h.vsctl_ok(&[
        "add-port",
        "br-t",
        "handmade",
        "--",
        "set",
        "Interface",
        "handmade",
        "type=internal",
    ]);
    let (rules, file) = (h.iptables_save(), h.interfaces());
    // The new profile changes tunnels *and* the address and forwarder: only tunnels may change.
    let changed = profile(
        &[("10.99.0.2", Some(PSK_A)), ("10.99.0.5", None)],
        "10.20.0.9/24",
    )
    .replace("eth0", "eth1");
    let b2 = h.bundle("v2", &changed, 2);
    let out = apply(&h, &b2, &["--gre-only"]);
    assert!(out.contains("+ port br-t/gre-0a630005"), "{out}");
    let mut ports = h.ports("br-t");
    ports.sort();
    assert_eq!(ports, ["gre-0a630002", "gre-0a630005", "handmade", "priv0"]);
    assert_eq!(h.iptables_save(), rules);
    assert_eq!(h.interfaces(), file);
    let gens = check(h.applier(&["generations"]), "generations");
    assert!(gens.contains("(gre-only on 1)"), "{gens}");
    // The host matches its new generation: GRE from v2, the rest from v1.
    let status = h.applier(&["status"]);
    assert_eq!(status.status.code(), Some(0), "{}", text(&status.stdout));
}

/// (Before rules were limited to the builder's shapes, this rule reached `iptables-restore
/// --test`, which refused it; now the shape check refuses it first. A failing `--test` is covered
/// on the in-memory host: `applier::engine` tests fail every call in turn.)
#[test]
fn a_rule_the_applier_will_not_apply_leaves_ovs_untouched() {
    let h = host("t1");
    apply(&h, &h.bundle("v1", &three_peers(), 1), &[]);
    let (cfg, ports) = (h.next_cfg(), h.ports("br-t"));
    let more = profile(
        &[
            ("10.99.0.2", Some(PSK_A)),
            ("10.99.0.3", None),
            ("10.99.0.4", None),
            ("10.99.0.6", None),
        ],
        "10.20.0.1/24",
    );
    let bad_rules =
        "*filter\n:OVSB-FORWARD - [0:0]\n-A OVSB-FORWARD -m nosuchmatch -j ACCEPT\nCOMMIT\n";
    let b = h.bundle_with("bad", &more, 2, "iptables.rules", bad_rules);
    let out = h.applier(&["apply", b.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(15));
    let err = text(&out.stderr);
    assert!(err.contains("not a rule ovs-bundle makes"), "{err}");
    assert_eq!(h.ports("br-t"), ports);
    assert_eq!(h.next_cfg(), cfg);
    let gens = check(h.applier(&["generations"]), "generations");
    assert_eq!(gens.lines().count(), 1, "{gens}");
}

#[test]
fn an_interface_ovs_cannot_create_rolls_everything_back() {
    let h = host("t1");
    apply(&h, &h.bundle("v1", &three_peers(), 1), &[]);
    let ports = h.ports("br-t");
    let rules = h.iptables_save();
    // eth9 does not exist in the namespace: ovs-vswitchd reports an error on it.
    let broken = three_peers()
        .replace(
            "datapath = \"netdev\"\n",
            "datapath = \"netdev\"\nphysical_interfaces = [\"eth9\"]\n",
        )
        .replace("10.20.0.1/24", "10.20.0.7/24");
    let out = h.applier(&["apply", h.bundle("v2", &broken, 2).to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(
        err.contains("interface eth9") && err.contains("rolled back"),
        "{err}"
    );
    assert_eq!(h.ports("br-t"), ports);
    assert_eq!(h.iptables_save(), rules);
    assert!(h.interfaces().unwrap().contains("10.20.0.1/24"));
    assert!(!h.root.join("var/lib/ovs-bundle/in-progress.json").exists());
    let status = h.applier(&["status"]);
    assert_eq!(
        status.status.code(),
        Some(0),
        "drift after rollback: {}",
        text(&status.stdout)
    );
}

// Failure injected at every step (not only at these boundaries) is tested on the in-memory fake
// host: `applier::engine` unit tests. Here the real binary is killed at each step boundary.
#[test]
#[cfg_attr(
    not(feature = "test-hooks"),
    ignore = "needs the kill hook: cargo test --features ovs-bundle-applier/test-hooks"
)]
fn a_killed_apply_is_recovered_by_the_next_run() {
    let h = host("t1");
    apply(&h, &h.bundle("v1", &three_peers(), 1), &[]);
    let ports = h.ports("br-t");
    let b2 = h.bundle("v2", &changes_every_part(PSK_A), 2);
    for step in APPLY_STEPS {
        let out = h.applier_env(
            &["apply", b2.to_str().unwrap()],
            &[("OVS_BUNDLE_TEST_KILL_AT", step)],
        );
        assert_eq!(
            out.status.code(),
            None,
            "{step}: not killed: {}",
            text(&out.stderr)
        );
        assert!(
            h.root.join("var/lib/ovs-bundle/in-progress.json").exists(),
            "{step}: no marker"
        );
        // The next run (here: boot) finds the marker and puts the host back on generation 1.
        let boot = h.applier(&["boot"]);
        let log = text(&boot.stderr);
        assert!(boot.status.success(), "{step}: {log}");
        assert!(log.contains("undid an interrupted apply"), "{step}: {log}");
        assert_eq!(h.ports("br-t"), ports, "{step}");
        assert!(h.interfaces().unwrap().contains("10.20.0.1/24"), "{step}");
        let status = h.applier(&["status"]);
        assert_eq!(
            status.status.code(),
            Some(0),
            "{step}: drift: {}",
            text(&status.stdout)
        );
    }
    // And the apply then goes through.
    apply(&h, &b2, &[]);
    assert!(h.ports("br-t").contains(&"gre-0a630007".to_string()));
}

#[test]
fn status_reports_drift() {
    let h = host("t1");
    apply(&h, &h.bundle("v1", &three_peers(), 1), &[]);
    assert_eq!(h.applier(&["status"]).status.code(), Some(0));
    h.vsctl_ok(&["del-port", "br-t", "gre-0a630003"]);
    check(
        h.exec(
            "iptables",
            &["-A", "OVSB-INPUT", "-i", "evil", "-j", "ACCEPT"],
        ),
        "iptables",
    );
    std::fs::write(h.root.join("etc/network/interfaces"), "# edited by hand\n").unwrap();
    let out = h.applier(&["status"]);
    assert_eq!(out.status.code(), Some(2));
    let shown = text(&out.stdout);
    assert!(shown.contains("+ port br-t/gre-0a630003"), "{shown}");
    assert!(
        shown.contains("- -A OVSB-INPUT -i evil -j ACCEPT"),
        "{shown}"
    );
    assert!(shown.contains("-# edited by hand"), "{shown}");
    let json = h.applier(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["generation"], 1);
    // Applying the current generation again repairs it.
    check(h.applier(&["boot"]), "boot");
    assert_eq!(h.applier(&["status"]).status.code(), Some(0));
}

#[test]
fn rollback_returns_to_the_previous_generation() {
    let h = host("t1");
    apply(&h, &h.bundle("v1", &three_peers(), 1), &[]);
    let fewer = profile(&[("10.99.0.2", Some(PSK_A))], "10.20.0.1/24");
    apply(&h, &h.bundle("v2", &fewer, 2), &[]);
    assert_eq!(h.ports("br-t").len(), 2);
    let out = check(h.applier(&["rollback"]), "rollback");
    assert!(out.contains("generation 1 is current"), "{out}");
    assert_eq!(h.ports("br-t").len(), 4);
}

#[test]
fn a_second_apply_waits_for_the_lock_then_fails_clearly() {
    let h = host("t1");
    let b = h.bundle("v1", &three_peers(), 1);
    std::fs::create_dir_all(h.root.join("var/lib/ovs-bundle")).unwrap();
    let lock = h.root.join("var/lib/ovs-bundle/lock");
    let mut holder = std::process::Command::new("flock")
        .arg(&lock)
        .args(["sleep", "30"])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let out = h.applier(&["--lock-timeout", "1", "apply", b.to_str().unwrap()]);
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(out.status.code(), Some(4));
    assert!(
        text(&out.stderr).contains("another applier is running"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        h.vsctl(&["br-exists", "br-t"]).status.code() == Some(2),
        "bridge created despite the lock"
    );
}

#[test]
fn a_thousand_tunnels_go_in_one_transaction_and_replies_are_reassembled() {
    let h = host("t1");
    let peers: Vec<String> = (0..1000)
        .map(|i| format!("10.100.{}.{}", i / 250, i % 250 + 1))
        .collect();
    let list: Vec<(&str, Option<&str>)> = peers.iter().map(|p| (p.as_str(), Some(PSK_A))).collect();
    let b = h.bundle("big", &profile(&list, "10.20.0.1/24"), 1);
    let out = h.applier(&["apply", "--json", b.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&check(out, "apply").into_bytes()).unwrap();
    assert_eq!(v["result"], "applied");
    assert_eq!(h.ports("br-t").len(), 1001);
    let cfg = h.next_cfg();
    // One transaction: next_cfg went up once for the whole change.
    assert_eq!(cfg, 1, "next_cfg {cfg}");
    // Reading 1000 rows back (a reply of hundreds of KiB, in many reads) finds nothing to do.
    let again = check(
        h.applier(&["apply", "--json", b.to_str().unwrap()]),
        "re-apply",
    );
    assert!(again.contains("\"unchanged\""), "{again}");
    assert_eq!(h.next_cfg(), cfg);
}

#[test]
fn boot_installs_delivered_bundles_and_restores_rules_lost_in_a_reboot() {
    let h = host("t1");
    let incoming = h.root.join("var/lib/ovs-bundle/incoming");
    std::fs::create_dir_all(&incoming).unwrap();
    std::fs::copy(h.bundle("v1", &three_peers(), 1), incoming.join("t1.tgz")).unwrap();
    check(h.applier(&["boot"]), "boot");
    assert!(
        !incoming.join("t1.tgz").exists(),
        "delivered bundle left in incoming"
    );
    assert_eq!(h.ports("br-t").len(), 4);
    let rules = h.iptables_save();
    // A reboot loses every iptables rule; OVSDB and files persist.
    for table in ["filter", "nat"] {
        check(h.exec("iptables", &["-t", table, "-F"]), "iptables -F");
        check(h.exec("iptables", &["-t", table, "-X"]), "iptables -X");
    }
    assert_eq!(h.applier(&["status"]).status.code(), Some(2));
    check(h.applier(&["boot"]), "boot");
    assert_eq!(h.iptables_save(), rules);
    assert_eq!(h.applier(&["status"]).status.code(), Some(0));
    // A tampered delivery is set aside; the host keeps its generation.
    let mut bytes =
        std::fs::read(h.bundle("v2", &profile(&[("10.99.0.2", None)], "10.20.0.1/24"), 2)).unwrap();
    let n = bytes.len();
    bytes[n - 20] ^= 1;
    std::fs::write(incoming.join("t1.tgz"), bytes).unwrap();
    let out = h.applier(&["boot"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("not installed, keeping the current generation"),
        "{}",
        text(&out.stderr)
    );
    assert!(incoming.join("failed/t1.tgz").exists());
    assert_eq!(h.ports("br-t").len(), 4);
}

#[test]
fn a_signed_bundle_cannot_name_an_interface_ifdown_would_read_as_an_option() {
    let h = host("t1");
    apply(&h, &h.bundle("v1", &three_peers(), 1), &[]);
    let before = (h.ports("br-t"), h.iptables_save(), h.interfaces());
    // `-a` as an interface: `ifdown -a` would take down every interface on the host.
    let hostile = "auto lo\niface lo inet loopback\n\nauto -a\niface -a inet manual\n";
    let b = h.bundle_with("v2", &three_peers(), 2, "interfaces", hostile);
    let out = h.applier(&["apply", b.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(15), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("interfaces:5: interface name \"-a\""), "{err}");
    assert_eq!((h.ports("br-t"), h.iptables_save(), h.interfaces()), before);
}

#[test]
fn a_signed_bundle_cannot_open_the_host_firewall() {
    let h = host("t1");
    apply(&h, &h.bundle("v1", &three_peers(), 1), &[]);
    let before = h.iptables_save();
    let open =
        "*filter\n:OVSB-FORWARD - [0:0]\n:OVSB-INPUT - [0:0]\n-A OVSB-INPUT -j ACCEPT\nCOMMIT\n\
                *nat\n:OVSB-POSTROUTING - [0:0]\nCOMMIT\n";
    let b = h.bundle_with("v2", &three_peers(), 2, "iptables.rules", open);
    let out = h.applier(&["apply", b.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(15), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("iptables.rules line 4") && err.contains("not a rule ovs-bundle makes"),
        "{err}"
    );
    assert_eq!(h.iptables_save(), before);
}

#[test]
fn the_first_apply_leaves_up_an_uplink_the_hosts_own_interfaces_file_configured() {
    let h = host("t1");
    check(
        h.exec(
            "ip",
            &["link", "add", "up0", "type", "veth", "peer", "name", "up0p"],
        ),
        "ip link add",
    );
    let file = h.root.join("etc/network/interfaces");
    std::fs::write(
        &file,
        "auto lo\niface lo inet loopback\n\nauto up0\niface up0 inet static\n    address 10.77.0.1/24\n",
    )
    .unwrap();
    let state = h.root.join("run/network");
    std::fs::create_dir_all(&state).unwrap();
    let (f, s) = (file.display().to_string(), state.display().to_string());
    check(
        h.exec("ifup", &["-i", &f, "--state-dir", &s, "up0"]),
        "ifup up0",
    );
    let out = apply(&h, &h.bundle("v1", &three_peers(), 1), &[]);
    let addr = check(
        h.exec("ip", &["-o", "addr", "show", "dev", "up0"]),
        "ip addr",
    );
    assert!(
        addr.contains("10.77.0.1/24"),
        "uplink lost its address: {addr}\n{out}"
    );
    let link = check(
        h.exec("ip", &["-o", "link", "show", "dev", "up0"]),
        "ip link",
    );
    assert!(link.contains(",UP"), "uplink down: {link}");
}

#[test]
fn a_fifo_in_the_incoming_directory_does_not_hang_boot() {
    let h = host("t1");
    apply(&h, &h.bundle("v1", &three_peers(), 1), &[]);
    let incoming = h.root.join("var/lib/ovs-bundle/incoming");
    check(
        std::process::Command::new("mkfifo")
            .arg(incoming.join("t1.tgz"))
            .output()
            .unwrap(),
        "mkfifo",
    );
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| tx.send(h.applier(&["boot"])).unwrap());
        let out = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .unwrap_or_else(|_| {
                // Unblock the reader so the test ends, then fail.
                let _ = std::fs::OpenOptions::new()
                    .write(true)
                    .open(incoming.join("t1.tgz"));
                panic!("boot hung on a FIFO");
            });
        let log = text(&out.stderr);
        assert!(log.contains("not a regular file"), "{log}");
        assert!(log.contains("restored generation 1"), "{log}");
    });
    assert!(incoming.join("failed/t1.tgz").exists());
}

#[test]
fn ipsec_skb_mark_is_set_only_while_every_tunnel_is_an_ipsec_one() {
    let h = host("t1");
    let only_ipsec = profile(&[("10.99.0.2", Some(PSK_A))], "10.20.0.1/24");
    apply(&h, &h.bundle("v1", &only_ipsec, 1), &[]);
    let mark = h.vsctl(&["get", "Open_vSwitch", ".", "other_config:ipsec_skb_mark"]);
    assert_eq!(
        text(&mark.stdout).trim(),
        "\"0/1\"",
        "{}",
        text(&mark.stderr)
    );
    assert_eq!(h.applier(&["status"]).status.code(), Some(0));
    // A plain tunnel joins: the mark would drop its packets, so it goes.
    apply(&h, &h.bundle("v2", &three_peers(), 2), &[]);
    let mark = h.vsctl(&["get", "Open_vSwitch", ".", "other_config:ipsec_skb_mark"]);
    assert_ne!(
        mark.status.code(),
        Some(0),
        "still set: {}",
        text(&mark.stdout)
    );
    assert_eq!(h.applier(&["status"]).status.code(), Some(0));
}

#[test]
fn a_huge_file_in_the_incoming_directory_is_set_aside_unread() {
    let h = host("t1");
    apply(&h, &h.bundle("v1", &three_peers(), 1), &[]);
    let incoming = h.root.join("var/lib/ovs-bundle/incoming");
    // Sparse: 1 GiB that takes no disk, but would take memory if read.
    let f = std::fs::File::create(incoming.join("t1.tgz")).unwrap();
    f.set_len(1 << 30).unwrap();
    let out = h.applier(&["boot"]);
    let log = text(&out.stderr);
    assert!(log.contains("more than the"), "{log}");
    assert!(log.contains("restored generation 1"), "{log}");
    assert!(incoming.join("failed/t1.tgz").exists());
}

#[test]
fn rollback_to_any_kept_generation_and_gc_keeps_the_current_one() {
    let h = host("t1");
    apply(&h, &h.bundle("v1", &three_peers(), 1), &[]);
    let fewer = profile(&[("10.99.0.2", Some(PSK_A))], "10.20.0.1/24");
    apply(&h, &h.bundle("v2", &fewer, 2), &[]);
    apply(
        &h,
        &h.bundle("v3", &fewer.replace("10.20.0.1/24", "10.20.0.5/24"), 3),
        &[],
    );
    let out = check(h.applier(&["rollback", "1"]), "rollback 1");
    assert!(out.contains("generation 1 is current"), "{out}");
    assert_eq!(h.ports("br-t").len(), 4);
    let missing = h.applier(&["rollback", "9"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing.stderr).contains("generation 9 is not kept here"));
    let gc = check(h.applier(&["gc", "--keep", "1"]), "gc");
    assert!(gc.contains("deleted 1 generation(s): [2]"), "{gc}");
    let gens = check(h.applier(&["generations"]), "generations");
    assert_eq!(gens.lines().count(), 2, "{gens}");
    assert!(
        gens.lines()
            .any(|l| l.starts_with('*') && l.contains(" 1 ")),
        "{gens}"
    );
}

/// ip_forward is per network namespace: the real value goes back when the forwarder goes.
#[test]
fn removing_the_forwarder_puts_ip_forward_back() {
    let h = host("t1");
    let fwd = || {
        text(&h.exec("cat", &["/proc/sys/net/ipv4/ip_forward"]).stdout)
            .trim()
            .to_string()
    };
    assert_eq!(fwd(), "0");
    apply(&h, &h.bundle("v1", &three_peers(), 1), &[]);
    assert_eq!(fwd(), "1");
    let out = apply(&h, &h.bundle("v2", &changes_every_part(PSK_A), 2), &[]);
    assert!(out.contains("net.ipv4.ip_forward = 0"), "{out}");
    assert_eq!(fwd(), "0");
    assert_eq!(h.applier(&["status"]).status.code(), Some(0));
}

/// A damaged state directory (garbage `current`, then a damaged generation) does not keep boot
/// from putting back the rules a reboot lost.
#[test]
fn boot_restores_the_newest_sound_generation_of_a_damaged_state_directory() {
    let h = host("t1");
    apply(&h, &h.bundle("v1", &three_peers(), 1), &[]);
    apply(&h, &h.bundle("v2", &changes_every_part(PSK_A), 2), &[]);
    let v2_rules = h.iptables_save();
    let state = h.root.join("var/lib/ovs-bundle");
    let reboot = |h: &TestHost| {
        for table in ["filter", "nat"] {
            check(h.exec("iptables", &["-t", table, "-F"]), "iptables -F");
            check(h.exec("iptables", &["-t", table, "-X"]), "iptables -X");
        }
    };
    std::fs::write(state.join("current"), "garbage\n").unwrap();
    reboot(&h);
    let out = h.applier(&["boot"]);
    let log = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(log.contains("restored generation 2"), "{log}");
    assert_eq!(h.iptables_save(), v2_rules);
    std::fs::write(state.join("generations/2/meta.json"), "{").unwrap();
    reboot(&h);
    let out = h.applier(&["boot"]);
    let log = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(log.contains("restored generation 1 instead"), "{log}");
    assert!(h.iptables_save().contains("MASQUERADE"), "v1's NAT is back");
}

/// A bridge ovs-vswitchd cannot create (here: the kernel datapath, with no openvswitch module in
/// this kernel) is reported as the real cause, with vswitchd's own words and the remedy, not as
/// the `ifup` failure it leads to; and the host is rolled back.
#[test]
fn a_bridge_vswitchd_cannot_create_is_reported_as_such() {
    let h = host("t1");
    let kernel_datapath = three_peers().replace("datapath = \"netdev\"\n", "");
    let out = h.applier(&[
        "apply",
        h.bundle("v1", &kernel_datapath, 1).to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    for want in [
        "interfaces br-t, gre-0a630002, gre-0a630003, gre-0a630004, priv0: ovs-vswitchd did not set them up",
        "failed to create bridge br-t",
        "modprobe openvswitch",
        "datapath = \"netdev\"",
        "rolled back",
    ] {
        assert!(err.contains(want), "missing {want:?} in: {err}");
    }
    assert!(!err.contains("ifup"), "{err}");
    assert_eq!(
        h.vsctl(&["br-exists", "br-t"]).status.code(),
        Some(2),
        "rolled back"
    );
    eprintln!("{err}");
}

/// `applier install` into an offline root writes the generation and the files, and nothing
/// live; the first `boot` then configures the host exactly as an apply does.
#[test]
fn an_installed_root_is_configured_by_its_first_boot() {
    let h = host("t1");
    let b = h.bundle("v1", &three_peers(), 1);
    let cfg = h.next_cfg();
    let rules = h.iptables_save();
    let out = check(h.applier(&["install", b.to_str().unwrap()]), "install");
    assert!(out.contains("installed: generation 1 is current"), "{out}");
    assert_eq!(h.next_cfg(), cfg, "install touched OVS");
    assert_eq!(h.vsctl(&["br-exists", "br-t"]).status.code(), Some(2));
    assert_eq!(h.iptables_save(), rules, "install touched iptables");
    assert!(h.interfaces().unwrap().contains("10.20.0.1/24"));
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &str| {
        std::fs::metadata(h.root.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("var/lib/ovs-bundle"), 0o700);
    assert_eq!(mode("var/lib/ovs-bundle/generations/1/bundle.tgz"), 0o600);
    let out = check(h.applier(&["boot"]), "first boot");
    assert!(out.is_empty() || !out.contains("error"), "{out}");
    let mut ports = h.ports("br-t");
    ports.sort();
    assert_eq!(
        ports,
        ["gre-0a630002", "gre-0a630003", "gre-0a630004", "priv0"]
    );
    assert!(h.iptables_save().contains("MASQUERADE"));
    let status = h.applier(&["status"]);
    assert_eq!(status.status.code(), Some(0), "{}", text(&status.stdout));
}
