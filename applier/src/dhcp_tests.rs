//! The DHCP driver on the in-memory host: dnsmasq's configuration and process come and go with
//! the rest of an apply, are put back by a failure or crash at any step, are restarted only
//! when the configuration changed, and are started again when a reboot left the file alone.

use crate::engine::tests::{assert_atomic_at_every_step, on_v1, profile, v1, Fixture, FULL};
use crate::engine::Outcome;
use crate::system::fake::FakeSystem;
use std::path::PathBuf;

const CONF: &str = "/etc/ovs-bundle/dnsmasq.conf";

/// v1 without `[bridges.dhcp]`.
fn v1_without_dhcp() -> String {
    let p = v1();
    p[..p.find("\n[bridges.dhcp]").unwrap()].to_string() + "\n"
}

fn restarts(sys: &FakeSystem) -> usize {
    sys.calls
        .iter()
        .filter(|c| c.starts_with("dhcp_restart"))
        .count()
}

#[test]
fn removing_dhcp_stops_dnsmasq_and_every_failure_or_crash_puts_it_back() {
    let fx = Fixture::new();
    let (base, before) = on_v1(&fx);
    assert!(before.dnsmasq.is_some(), "v1 serves DHCP");
    let b2 = fx.bundle(&v1_without_dhcp(), 2);
    let after = {
        let mut sys = base.clone();
        fx.applier(&mut sys).apply_bundle(&b2, FULL).unwrap();
        sys.view()
    };
    assert_eq!(after.dnsmasq, None);
    assert!(!after.files.contains_key(&PathBuf::from(CONF)));
    assert_atomic_at_every_step(&fx, &base, &b2, (&before, &after), "dhcp_restart");
}

#[test]
fn dnsmasq_is_restarted_only_when_its_configuration_changed_or_it_stopped() {
    let fx = Fixture::new();
    let (mut sys, before) = on_v1(&fx);
    // A change elsewhere (another address) but the same DHCP: no restart.
    let same_dhcp = v1().replace("10.99.0.3", "10.99.0.4");
    fx.applier(&mut sys)
        .apply_bundle(&fx.bundle(&same_dhcp, 2), FULL)
        .unwrap();
    assert_eq!(restarts(&sys), 0, "{:?}", sys.calls);
    assert_eq!(sys.view().dnsmasq, before.dnsmasq);
    // A reboot: the file is there, dnsmasq is not. Status says so; re-applying starts it.
    sys.dnsmasq = None;
    let (_, drift) = fx.applier(&mut sys).status().unwrap();
    assert!(drift
        .render()
        .contains("dhcp: write dnsmasq.conf, (re)start dnsmasq"));
    sys.calls.clear();
    let out = fx.applier(&mut sys).apply_generation(2, FULL).unwrap();
    assert!(matches!(out, Outcome::Applied { .. }), "{out:?}");
    assert_eq!(restarts(&sys), 1);
    assert_eq!(sys.view().dnsmasq, before.dnsmasq);
}

#[test]
fn a_host_without_dhcp_never_touches_dnsmasq() {
    let fx = Fixture::new();
    let mut sys = FakeSystem::new();
    let p = profile(&[("10.99.0.2", None)], "10.20.0.1/24", false);
    fx.applier(&mut sys)
        .apply_bundle(&fx.bundle(&p, 1), FULL)
        .unwrap();
    assert_eq!(restarts(&sys), 0);
    assert!(!sys.files.contains_key(&PathBuf::from(CONF)));
}
