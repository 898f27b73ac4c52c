//! OVN chassis settings on the in-memory host: the `Open_vSwitch` `external_ids` keys of a
//! chassis bundle are written with the rest of the apply and marked ours, a failure or crash at
//! any step puts the host back, removing OVN from the bundle removes exactly those keys (and
//! `br-int`), and keys of others are neither overwritten nor removed.
//!
//! Over 500 lines on purpose: one test per behaviour, each its own story on the fake host.

use crate::engine::tests::{assert_atomic_at_every_step, on_v1, v1, Fixture, FULL};
use crate::system::fake::FakeSystem;
use bundle::ovn::CHASSIS_OWNER;
use std::collections::BTreeMap;

const C1: &str = "[host]\nname = \"c1\"\nunderlay_ip = \"10.99.0.50\"\n";
const FLEET: &str = "[ovn]\ncentral = \"c1\"\ndatapath = \"netdev\"\n\n\
    [[ovn.switches]]\nname = \"ls0\"\nsubnet = \"10.30.0.0/24\"\n\n\
    [[ovn.chassis]]\nhost = \"t1\"\nswitch = \"ls0\"\naddress = \"10.30.0.1/24\"\n";

/// t1 as in v1, and a chassis of ls0.
fn ovn_bundle(fx: &Fixture, serial: u64) -> Vec<u8> {
    let t1 = v1();
    fx.fleet_bundle(
        &[
            ("hosts/t1.toml", &t1),
            ("hosts/c1.toml", C1),
            ("fleet.toml", FLEET),
        ],
        "t1",
        serial,
    )
}

fn chassis() -> BTreeMap<String, String> {
    [
        ("hostname", "t1"),
        ("ovn-encap-ip", "10.99.0.1"),
        ("ovn-encap-type", "geneve"),
        ("ovn-remote", "tcp:10.99.0.50:6642"),
        ("system-id", "t1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Keys someone else set on the root row: never touched.
fn with_foreign_keys(sys: &mut FakeSystem) {
    let ids = &mut sys.ovs.root_external_ids;
    ids.insert("ovn-bridge-mappings".into(), "phys:br-ex".into());
    ids.insert("rundir".into(), "/var/run/openvswitch".into());
}

#[test]
fn joining_ovn_sets_the_chassis_keys_and_every_failure_or_crash_puts_the_host_back() {
    let fx = Fixture::new();
    let (mut base, _) = on_v1(&fx);
    with_foreign_keys(&mut base);
    let before = base.view();
    let b2 = ovn_bundle(&fx, 2);
    let after = {
        let mut sys = base.clone();
        fx.applier(&mut sys).apply_bundle(&b2, FULL).unwrap();
        sys.view()
    };
    let ids = &after.root.1;
    for (k, v) in chassis() {
        assert_eq!(ids.get(&k), Some(&v), "{k}");
    }
    assert_eq!(
        ids[CHASSIS_OWNER],
        "hostname,ovn-encap-ip,ovn-encap-type,ovn-remote,system-id"
    );
    assert_eq!(ids["ovn-bridge-mappings"], "phys:br-ex");
    assert_eq!(ids["rundir"], "/var/run/openvswitch");
    let br_int = after.owned.bridges.iter().find(|b| b.name == "br-int");
    let port = &br_int.expect("br-int made").ports[0];
    assert_eq!(port.name, "ovn0");
    assert_eq!(port.external_ids["iface-id"], "ovsb-t1");
    let ifaces = &after.files[&std::path::PathBuf::from("/etc/network/interfaces")];
    assert!(
        ifaces
            .contains("iface ovn0 inet static\n    address 10.30.0.1/24\n    hwaddress ether 0a:"),
        "{ifaces}"
    );
    assert!(after.up.contains("ovn0"), "{:?}", after.up);

    assert_atomic_at_every_step(&fx, &base, &b2, (&before, &after), "ovs_apply");
}

#[test]
fn leaving_ovn_removes_exactly_the_chassis_keys_and_br_int() {
    let fx = Fixture::new();
    let (mut sys, _) = on_v1(&fx);
    with_foreign_keys(&mut sys);
    let before = sys.view();
    fx.applier(&mut sys)
        .apply_bundle(&ovn_bundle(&fx, 2), FULL)
        .unwrap();
    // ovn-controller adds keys of its own to the root row: they stay.
    sys.ovs
        .root_external_ids
        .insert("ovn-installed-ts".into(), "1".into());
    let mut want = before.clone();
    want.root.1.insert("ovn-installed-ts".into(), "1".into());
    fx.applier(&mut sys)
        .apply_bundle(&fx.bundle(&v1(), 3), FULL)
        .unwrap();
    let after = sys.view();
    assert_eq!(after.root, want.root);
    assert_eq!(after.owned, before.owned);
    assert!(!after.up.contains("ovn0"));
}

#[test]
fn a_chassis_key_someone_else_set_is_not_taken_over_but_the_same_value_is_adopted() {
    let fx = Fixture::new();
    let (mut sys, _) = on_v1(&fx);
    // As Debian's ovs-ctl does at start: a random system-id.
    sys.ovs
        .root_external_ids
        .insert("system-id".into(), "0f9e-random".into());
    let before = sys.view();
    let err = fx
        .applier(&mut sys)
        .apply_bundle(&ovn_bundle(&fx, 2), FULL)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("external_ids:system-id is \"0f9e-random\", set by someone else")
            && err.contains("ovs-vsctl remove Open_vSwitch . external_ids system-id"),
        "{err}"
    );
    assert_eq!(sys.view(), before);
    // The value the bundle wants: adopted, and from then on ours (removed with OVN).
    sys.ovs
        .root_external_ids
        .insert("system-id".into(), "t1".into());
    fx.applier(&mut sys)
        .apply_bundle(&ovn_bundle(&fx, 3), FULL)
        .unwrap();
    assert!(sys.ovs.root_external_ids[CHASSIS_OWNER].contains("system-id"));
}

#[test]
fn status_shows_a_chassis_key_changed_by_hand_and_apply_puts_it_back() {
    let fx = Fixture::new();
    let (mut sys, _) = on_v1(&fx);
    fx.applier(&mut sys)
        .apply_bundle(&ovn_bundle(&fx, 2), FULL)
        .unwrap();
    let (_, drift) = fx.applier(&mut sys).status().unwrap();
    assert!(drift.is_empty(), "{}", drift.render());
    sys.ovs
        .root_external_ids
        .insert("ovn-remote".into(), "tcp:10.99.0.66:6642".into());
    let (_, drift) = fx.applier(&mut sys).status().unwrap();
    let text = drift.render();
    assert!(
        text.contains("ovn-remote tcp:10.99.0.66:6642 -> tcp:10.99.0.50:6642"),
        "{text}"
    );
    fx.applier(&mut sys).apply_generation(2, FULL).unwrap();
    assert_eq!(
        sys.ovs.root_external_ids["ovn-remote"],
        "tcp:10.99.0.50:6642"
    );
}

#[test]
fn keys_ovn_controller_writes_on_br_int_and_the_bound_interface_are_no_drift_and_stay() {
    let fx = Fixture::new();
    let (mut sys, _) = on_v1(&fx);
    fx.applier(&mut sys)
        .apply_bundle(&ovn_bundle(&fx, 2), FULL)
        .unwrap();
    // What ovn-controller does once it runs: conntrack zones on br-int, a flag on the interface.
    let br = sys
        .ovs
        .bridges
        .iter_mut()
        .find(|b| b.name == "br-int")
        .unwrap();
    br.external_ids.insert("ct-zone-ovsb-t1".into(), "1".into());
    let iface = sys
        .ovs
        .ifaces
        .values_mut()
        .find(|i| i.name == "ovn0")
        .unwrap();
    iface
        .external_ids
        .insert("ovn-installed".into(), "true".into());
    let (_, drift) = fx.applier(&mut sys).status().unwrap();
    assert!(drift.is_empty(), "{}", drift.render());
    // A later apply (another system-id) keeps them too.
    let t1 = v1();
    let b3 = fx.fleet_bundle(
        &[
            ("hosts/t1.toml", &t1),
            ("hosts/c1.toml", C1),
            (
                "fleet.toml",
                &FLEET.replace("host = \"t1\"", "host = \"t1\"\nsystem_id = \"t1-b\""),
            ),
        ],
        "t1",
        3,
    );
    fx.applier(&mut sys).apply_bundle(&b3, FULL).unwrap();
    assert_eq!(sys.ovs.root_external_ids["system-id"], "t1-b");
    let br = sys.ovs.bridges.iter().find(|b| b.name == "br-int").unwrap();
    assert_eq!(br.external_ids["ct-zone-ovsb-t1"], "1");
    let iface = sys.ovs.ifaces.values().find(|i| i.name == "ovn0").unwrap();
    assert_eq!(iface.external_ids["ovn-installed"], "true");
}

/// The fleet with t1 as the central and `chassis` (hosts h1, h2, …) on ls0.
fn central_bundle(fx: &Fixture, chassis: &[&str], serial: u64) -> Vec<u8> {
    central_bundle_with(fx, chassis, serial, "")
}

/// [`central_bundle`] with `extra` lines in `[ovn]`.
pub(crate) fn central_bundle_with(
    fx: &Fixture,
    chassis: &[&str],
    serial: u64,
    extra: &str,
) -> Vec<u8> {
    let mut files: Vec<(String, String)> = vec![("hosts/t1.toml".into(), v1())];
    let mut fleet = format!(
        "[ovn]\ncentral = \"t1\"\n{extra}\n[[ovn.switches]]\nname = \"ls0\"\nsubnet = \"10.30.0.0/24\"\n"
    );
    for (i, h) in chassis.iter().enumerate() {
        let n = i + 11;
        files.push((
            format!("hosts/{h}.toml"),
            format!("[host]\nname = \"{h}\"\nunderlay_ip = \"10.99.0.{n}\"\n"),
        ));
        fleet.push_str(&format!(
            "\n[[ovn.chassis]]\nhost = \"{h}\"\nswitch = \"ls0\"\naddress = \"10.30.0.{n}/24\"\n"
        ));
    }
    files.push(("fleet.toml".into(), fleet));
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    fx.fleet_bundle(&refs, "t1", serial)
}

/// A northbound database with a switch (and port) someone else made.
pub(crate) fn with_nb(sys: &mut FakeSystem) {
    use crate::nb::{NbPort, NbSwitch};
    sys.nb.present = true;
    sys.nb.switches.push(NbSwitch {
        uuid: "their-ls".into(),
        name: "theirs".into(),
        ports: vec!["their-lsp".into()],
        external_ids: BTreeMap::new(),
    });
    sys.nb.ports.insert(
        "their-lsp".into(),
        NbPort {
            uuid: "their-lsp".into(),
            name: "vm1".into(),
            addresses: vec!["unknown".into()],
            kind: String::new(),
            options: BTreeMap::new(),
            external_ids: BTreeMap::new(),
        },
    );
}

#[test]
fn the_central_writes_its_logical_switches_and_every_failure_or_crash_puts_them_back() {
    let fx = Fixture::new();
    let (mut base, _) = on_v1(&fx);
    with_nb(&mut base);
    let before = base.view();
    let b2 = central_bundle(&fx, &["h1", "h2"], 2);
    let after = {
        let mut sys = base.clone();
        let plan = fx
            .applier(&mut sys)
            .plan_bundle(&b2, FULL)
            .unwrap()
            .render();
        assert!(
            plan.contains("ovn northbound:\n  + logical switch ls0 (10.30.0.0/24, 2 ports)"),
            "{plan}"
        );
        fx.applier(&mut sys).apply_bundle(&b2, FULL).unwrap();
        sys.view()
    };
    let names: Vec<(&str, bool)> = after.nb.iter().map(|s| (s.0.as_str(), s.1)).collect();
    assert_eq!(names, [("ls0", true), ("theirs", false)]);
    let ports: Vec<&str> = after.nb[0].2.iter().map(|p| p.0.as_str()).collect();
    assert_eq!(ports, ["ovsb-h1", "ovsb-h2"]);
    assert!(
        after.nb[0].2[0].1[0].ends_with(" 10.30.0.11"),
        "{:?}",
        after.nb[0]
    );
    // The central is no chassis here: no chassis keys, no br-int.
    assert!(!after.root.1.contains_key(CHASSIS_OWNER));
    assert_atomic_at_every_step(&fx, &base, &b2, (&before, &after), "nb_apply");
}

#[test]
fn a_joining_host_adds_one_logical_port_and_leaving_ovn_removes_only_our_rows() {
    let fx = Fixture::new();
    let (mut sys, _) = on_v1(&fx);
    with_nb(&mut sys);
    let before = sys.view();
    fx.applier(&mut sys)
        .apply_bundle(&central_bundle(&fx, &["h1", "h2"], 2), FULL)
        .unwrap();
    let b3 = central_bundle(&fx, &["h1", "h2", "h3"], 3);
    let plan = fx.applier(&mut sys).plan_bundle(&b3, FULL).unwrap();
    let got: Vec<String> = plan.nb.iter().map(crate::nb::NbChange::describe).collect();
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].starts_with("+ logical port ls0/ovsb-h3 0a:"),
        "{got:?}"
    );
    assert!(plan.ovs.is_empty(), "{:?}", plan.ovs);
    fx.applier(&mut sys).apply_bundle(&b3, FULL).unwrap();
    // Someone adds a port of their own to our switch: status shows no drift for it.
    let ls0 = sys
        .nb
        .switches
        .iter()
        .position(|s| s.name == "ls0")
        .unwrap();
    sys.nb.switches[ls0].ports.push("their-lsp".into());
    let (_, drift) = fx.applier(&mut sys).status().unwrap();
    assert!(drift.is_empty(), "{}", drift.render());
    sys.nb.switches[ls0].ports.pop();
    // Our port changed by hand: drift, and the apply puts it back.
    let p = sys
        .nb
        .ports
        .values_mut()
        .find(|p| p.name == "ovsb-h1")
        .unwrap();
    p.addresses = vec!["0a:00:00:00:00:99 10.30.0.99".into()];
    let (_, drift) = fx.applier(&mut sys).status().unwrap();
    assert!(
        drift
            .render()
            .contains("~ logical port ls0/ovsb-h1: addresses"),
        "{}",
        drift.render()
    );
    fx.applier(&mut sys)
        .apply_bundle(&fx.bundle(&v1(), 4), FULL)
        .unwrap();
    assert_eq!(sys.view().nb, before.nb);
}

#[test]
fn a_central_bundle_without_a_northbound_database_changes_nothing() {
    let fx = Fixture::new();
    let (mut sys, before) = on_v1(&fx);
    let err = fx
        .applier(&mut sys)
        .apply_bundle(&central_bundle(&fx, &["h1"], 2), FULL)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("there is no northbound database") && err.contains("--ovn-nb"),
        "{err}"
    );
    assert_eq!(sys.view(), before);
}

/// Signed is not trusted: an `ovn.json` with a key or value the builder never writes (here one
/// that would make ovn-controller use another bridge, and a remote that is no address) is
/// refused before anything changes.
#[test]
fn a_signed_bundle_with_ovn_values_the_builder_never_writes_is_refused() {
    let fx = Fixture::new();
    let (mut sys, before) = on_v1(&fx);
    let t1 = v1();
    let files = [
        ("hosts/t1.toml", t1.as_str()),
        ("hosts/c1.toml", C1),
        ("fleet.toml", FLEET),
    ];
    for (bad, says) in [
        (
            r#"{"chassis": {"ovn-bridge": "br-ex"}}"#,
            "chassis key \"ovn-bridge\" is not one ovs-bundle sets",
        ),
        (
            r#"{"chassis": {"ovn-remote": "unix:/run/x.sock"}}"#,
            "ovn-remote \"unix:/run/x.sock\"",
        ),
        (
            r#"{"northbound": [{"name": "ls0", "subnet": "10.30.0.0/24", "ports": [{"name": "p\"; x", "address": "0a:00:00:00:00:01 10.30.0.1"}]}]}"#,
            "logical port",
        ),
    ] {
        let b = fx.fleet_bundle_with(&files, "t1", 2, Some((bundle::OVN_NAME, bad)));
        let err = fx
            .applier(&mut sys)
            .apply_bundle(&b, FULL)
            .unwrap_err()
            .to_string();
        assert!(err.contains(says), "{bad}: {err}");
        assert_eq!(sys.view(), before);
    }
}

/// At boot the northbound database is not up yet (ovn-central starts after the network, after
/// the applier) and keeps its rows by itself: boot restores the rest and says so; a plain apply
/// refuses instead.
#[test]
fn boot_on_the_central_restores_the_rest_without_the_northbound_database() {
    let fx = Fixture::new();
    let (mut sys, _) = on_v1(&fx);
    with_nb(&mut sys);
    fx.applier(&mut sys)
        .apply_bundle(&central_bundle(&fx, &["h1"], 2), FULL)
        .unwrap();
    let applied = sys.view();
    // A reboot: no iptables rules, no northbound database yet.
    sys.chains = bundle::Chains::from_save("");
    let nb = std::mem::take(&mut sys.nb);
    let mut log = Vec::new();
    let code = {
        let mut app = fx.applier(&mut sys);
        app.log = Box::new(|m| log.push(m.to_string()));
        crate::boot::boot(&mut app, false)
    };
    assert_eq!(code, bundle::Exit::Ok, "{log:#?}");
    assert!(
        log.iter()
            .any(|l| l.contains("there is no northbound database")),
        "{log:#?}"
    );
    sys.nb = nb;
    assert_eq!(sys.view(), applied);
    // Outside boot, a central bundle without its database is refused.
    sys.nb = crate::nb::NbLive::default();
    let err = fx
        .applier(&mut sys)
        .apply_generation(2, FULL)
        .unwrap_err()
        .to_string();
    assert!(err.contains("there is no northbound database"), "{err}");
}

/// The central may be a chassis too: one apply writes its chassis keys, its br-int and the
/// northbound rows, and one removal takes all of them away again.
#[test]
fn a_central_that_is_also_a_chassis_gets_both_in_one_apply() {
    let fx = Fixture::new();
    let (mut sys, _) = on_v1(&fx);
    with_nb(&mut sys);
    let before = sys.view();
    let t1 = v1();
    let fleet = FLEET.replace("central = \"c1\"", "central = \"t1\"");
    let b2 = fx.fleet_bundle(
        &[
            ("hosts/t1.toml", &t1),
            ("hosts/c1.toml", C1),
            ("fleet.toml", &fleet),
        ],
        "t1",
        2,
    );
    fx.applier(&mut sys).apply_bundle(&b2, FULL).unwrap();
    let after = sys.view();
    assert_eq!(after.root.1["ovn-remote"], "tcp:10.99.0.1:6642");
    assert!(after.owned.bridges.iter().any(|b| b.name == "br-int"));
    assert_eq!(after.nb[0].2[0].0, "ovsb-t1");
    fx.applier(&mut sys)
        .apply_bundle(&fx.bundle(&v1(), 3), FULL)
        .unwrap();
    let gone = sys.view();
    assert_eq!(
        (gone.root, gone.owned, gone.nb),
        (before.root, before.owned, before.nb)
    );
}

/// A Debian host as its Open vSwitch start left it: `ovs-ctl` set a random system-id from
/// `/etc/openvswitch/system-id.conf` and recorded `hostname -f`.
fn as_ovs_ctl_left_it(sys: &mut FakeSystem) {
    let id = "0f9e2c4a-6d1b-4e8e-9b1a-5a7f3c2e1d00";
    sys.files.insert(
        "/etc/openvswitch/system-id.conf".into(),
        format!("{id}\n").into_bytes(),
    );
    sys.dirs.insert("/etc/openvswitch".into());
    let ids = &mut sys.ovs.root_external_ids;
    ids.insert("system-id".into(), id.into());
    ids.insert("hostname".into(), "t1.example.org".into());
}

#[test]
fn a_debian_hosts_own_system_id_and_hostname_are_taken_over_and_kept_across_ovs_restarts() {
    let fx = Fixture::new();
    let (mut base, _) = on_v1(&fx);
    as_ovs_ctl_left_it(&mut base);
    let before = base.view();
    let b2 = ovn_bundle(&fx, 2);
    let mut sys = base.clone();
    let plan = fx
        .applier(&mut sys)
        .plan_bundle(&b2, FULL)
        .unwrap()
        .render();
    assert!(plan.contains("open vswitch: system-id.conf = t1"), "{plan}");
    fx.applier(&mut sys).apply_bundle(&b2, FULL).unwrap();
    let after = sys.view();
    assert_eq!(after.root.1["system-id"], "t1");
    assert_eq!(after.root.1["hostname"], "t1");
    // ovs-ctl sets the system-id from this file at the next start: the same one.
    assert_eq!(
        after.files[std::path::Path::new("/etc/openvswitch/system-id.conf")],
        "t1\n"
    );
    assert_atomic_at_every_step(&fx, &base, &b2, (&before, &after), "ovs_apply");
    // An Open vSwitch restart: ovs-ctl sets the system-id from the file (and leaves the
    // hostname, which is set). No drift.
    let conf = String::from_utf8(
        sys.files[std::path::Path::new("/etc/openvswitch/system-id.conf")].clone(),
    )
    .unwrap();
    sys.ovs
        .root_external_ids
        .insert("system-id".into(), conf.trim().to_string());
    let (_, drift) = fx.applier(&mut sys).status().unwrap();
    assert!(drift.is_empty(), "{}", drift.render());
    // A system-id the file does not hold is someone else's: refused as before.
    let mut other = base.clone();
    other
        .ovs
        .root_external_ids
        .insert("system-id".into(), "set-by-hand".into());
    let err = fx
        .applier(&mut other)
        .apply_bundle(&b2, FULL)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("external_ids:system-id is \"set-by-hand\""),
        "{err}"
    );
}
