//! IPv6 on the in-memory host: a bundle with an IPv6 underlay, `ip6tables.rules` and IPv6
//! forwarding is applied like the IPv4 parts (both families tried before any change), a failure
//! at any step leaves both families' chains and the forwarding value as they were, a crash at
//! any step is undone or finished by the next run, and a later IPv4-only bundle removes the
//! ip6tables chains again and puts IPv6 forwarding back as it was.

use crate::engine::tests::{on_v1, Fixture, FULL};
use crate::engine::{ApplyError, Outcome};
use crate::system::fake::FakeSystem;
use crate::system::System;
use bundle::firewall::Family;
use std::path::PathBuf;

const FORWARD6: &str = "/proc/sys/net/ipv6/conf/all/forwarding";

/// Host t1 on an IPv6 underlay: VXLAN with a PSK and a keyed ip6gre tunnel, a dual-stack
/// private interface, and a forwarder for both families.
fn v6_profile() -> String {
    "[host]\nname = \"t1\"\nunderlay_ip = \"2001:db8::1\"\n\n[[bridges]]\nname = \"br-t\"\n\
     datapath = \"netdev\"\n\
     host_interfaces = [{ name = \"priv0\", address = \"10.20.0.1/24\", address6 = \"fd20::1/64\" }]\n\n\
     [[bridges.gre]]\nremote_ip = \"2001:db8::2\"\ntype = \"vxlan\"\npsk = \"ipv6-engine-psk-0123456789\"\nexternal = true\n\n\
     [[bridges.gre]]\nremote_ip = \"2001:db8::3\"\nkey = 4\nexternal = true\n\n\
     [bridges.forwarder]\nfrom = \"priv0\"\nvia = \"eth0\"\nsource = \"10.20.0.0/24\"\nsource6 = \"fd20::/64\"\n"
        .to_string()
}

fn forward6(sys: &FakeSystem) -> String {
    String::from_utf8_lossy(&sys.files[&PathBuf::from(FORWARD6)]).into_owned()
}

#[test]
fn a_v6_bundle_fills_the_ip6tables_chains_and_sets_v6_forwarding() {
    let fx = Fixture::new();
    let (mut sys, before) = on_v1(&fx);
    assert!(before.chains6.chains.values().all(|c| !c.exists));
    let out = fx
        .applier(&mut sys)
        .apply_bundle(&fx.bundle(&v6_profile(), 2), FULL)
        .unwrap();
    assert!(matches!(out, Outcome::Applied { .. }));
    let c6 = sys.firewall_read(Family::V6).unwrap();
    assert_eq!(c6.family, Family::V6);
    assert!(c6.chains.values().all(|c| c.exists), "{c6:?}");
    // Built-in chains jump to the owned chains of their name, never to a guard chain.
    assert!(c6.chains["OVSB-OUTPUT"].jump && !c6.chains["OVSB-GUARD-VXLAN"].jump);
    assert_eq!(
        c6.chains["OVSB-GUARD-VXLAN"].rules,
        ["-A OVSB-GUARD-VXLAN -p udp -m udp --dport 4789 -m policy --dir out --pol none -j DROP"]
    );
    assert_eq!(
        c6.chains["OVSB-POSTROUTING"].rules,
        ["-A OVSB-POSTROUTING -s fd20::/64 -o eth0 -j MASQUERADE"]
    );
    assert_eq!(
        c6.chains["OVSB-OUTPUT"].rules,
        ["-A OVSB-OUTPUT -d 2001:db8::2/128 -j OVSB-GUARD-VXLAN"]
    );
    // No IPv6 address in the IPv4 chains.
    assert!(sys.chains.chains["OVSB-OUTPUT"].rules.is_empty());
    assert_eq!(forward6(&sys), "1\n");
    // The ip6tables input was tried before the first change, as the iptables one is.
    let tested = sys.calls.iter().position(|c| c == "firewall6_write --test");
    let first_change = sys.calls.iter().position(|c| c.starts_with("ovs_apply"));
    assert!(tested.is_some() && tested < first_change, "{:?}", sys.calls);
    let kinds: Vec<String> = sys
        .view()
        .owned
        .bridges
        .iter()
        .flat_map(|b| &b.ports)
        .map(|p| p.interface.kind.clone())
        .collect();
    assert!(kinds.contains(&"ip6gre".to_string()), "{kinds:?}");
    // A re-apply is a no-op: what ip6tables-save shows is what the bundle says.
    let again = fx
        .applier(&mut sys)
        .apply_bundle(&fx.bundle(&v6_profile(), 2), FULL)
        .unwrap();
    assert!(matches!(again, Outcome::Unchanged { .. }));
}

#[test]
fn a_failure_at_every_step_of_a_v6_apply_leaves_both_families_as_they_were() {
    let fx = Fixture::new();
    let (base, before) = on_v1(&fx);
    let b2 = fx.bundle(&v6_profile(), 2);
    let mut failed = 0;
    for n in 0.. {
        let mut sys = base.clone();
        sys.fail_at = Some(n);
        let result = fx.applier(&mut sys).apply_bundle(&b2, FULL);
        if n >= sys.calls.len() {
            break;
        }
        let Err(e) = result else { continue };
        failed += 1;
        assert!(
            matches!(e, ApplyError::Unchanged(_) | ApplyError::RolledBack { .. }),
            "step {n} ({}): {e}",
            sys.calls[n]
        );
        assert_eq!(
            sys.view(),
            before,
            "step {n} ({}): host changed",
            sys.calls[n]
        );
        assert_eq!(forward6(&sys), "0\n", "step {n} ({})", sys.calls[n]);
    }
    assert!(failed > 20, "only {failed} steps");
}

#[test]
fn a_crash_at_every_step_of_a_v6_apply_is_undone_or_finished() {
    let fx = Fixture::new();
    let (base, before) = on_v1(&fx);
    let b2 = fx.bundle(&v6_profile(), 2);
    let after = {
        let mut sys = base.clone();
        fx.applier(&mut sys).apply_bundle(&b2, FULL).unwrap();
        sys.view()
    };
    assert_ne!(after.chains6, before.chains6);
    for n in 0.. {
        let mut sys = base.clone();
        sys.crash_at = Some(n);
        if fx.applier(&mut sys).apply_bundle(&b2, FULL).is_ok() && !sys.crashed() {
            break;
        }
        let step = sys.calls[n].clone();
        sys.restart();
        fx.applier(&mut sys)
            .recover()
            .unwrap_or_else(|e| panic!("step {n} ({step}): {e}"));
        let view = sys.view();
        assert!(
            view == before || view == after,
            "step {n} ({step}): half applied:\n{:?}\n{:?}",
            view.chains6,
            after.chains6
        );
    }
}

#[test]
fn a_v4_only_bundle_after_a_v6_one_removes_the_ip6tables_chains_and_v6_forwarding() {
    let fx = Fixture::new();
    let (mut sys, before) = on_v1(&fx);
    fx.applier(&mut sys)
        .apply_bundle(&fx.bundle(&v6_profile(), 2), FULL)
        .unwrap();
    let v4 = crate::engine::tests::v1();
    fx.applier(&mut sys)
        .apply_bundle(&fx.bundle(&v4, 3), FULL)
        .unwrap();
    assert_eq!(sys.view().chains6, before.chains6);
    assert!(sys.calls.iter().any(|c| c == "firewall6_write"));
    // IPv6 forwarding is put back to what it was before the IPv6 forwarder needed it.
    assert_eq!(forward6(&sys), "0\n");
}

/// `--gre-only` reconciles the IPsec guard of an IPv6 peer in ip6tables as it does an IPv4
/// peer's in iptables, and leaves the rest of the IPv6 chains (the forwarder's) alone.
#[test]
fn gre_only_follows_the_ipv6_guard() {
    use crate::engine::ApplyOpts;
    use crate::ovs::Scope;
    let fx = Fixture::new();
    let (mut sys, _) = on_v1(&fx);
    let plain = v6_profile().replace("psk = \"ipv6-engine-psk-0123456789\"\n", "");
    fx.applier(&mut sys)
        .apply_bundle(&fx.bundle(&plain, 2), FULL)
        .unwrap();
    assert!(sys.chains6.chains["OVSB-OUTPUT"].rules.is_empty());
    let forwarder = sys.chains6.chains["OVSB-POSTROUTING"].clone();
    assert_eq!(forwarder.rules.len(), 1);
    let gre_only = ApplyOpts {
        scope: Scope::GreOnly,
        ..FULL
    };
    // The PSK tunnel, from a bundle whose forwarder is gone: only the tunnels count.
    let no_forwarder = v6_profile().replace("source6 = \"fd20::/64\"\n", "");
    fx.applier(&mut sys)
        .apply_bundle(&fx.bundle(&no_forwarder, 3), gre_only)
        .unwrap();
    assert_eq!(
        sys.chains6.chains["OVSB-OUTPUT"].rules,
        ["-A OVSB-OUTPUT -d 2001:db8::2/128 -j OVSB-GUARD-VXLAN"]
    );
    assert_eq!(sys.chains6.chains["OVSB-POSTROUTING"], forwarder);
}

/// The first IPv6 PSK peer of a host with no ip6tables chains of ours, by `--gre-only`: only the
/// guard's chains are made, and the generation records just that (no drift afterwards).
#[test]
fn gre_only_makes_the_first_ipv6_guard_and_nothing_else() {
    use crate::engine::ApplyOpts;
    use crate::ovs::Scope;
    let fx = Fixture::new();
    let (mut sys, _) = on_v1(&fx);
    let plain = v6_profile()
        .replace("psk = \"ipv6-engine-psk-0123456789\"\n", "")
        .replace("source6 = \"fd20::/64\"\n", "");
    fx.applier(&mut sys)
        .apply_bundle(&fx.bundle(&plain, 2), FULL)
        .unwrap();
    assert!(sys.chains6.chains.values().all(|c| !c.exists));
    let gre_only = ApplyOpts {
        scope: Scope::GreOnly,
        ..FULL
    };
    let with_psk = v6_profile().replace("source6 = \"fd20::/64\"\n", "");
    fx.applier(&mut sys)
        .apply_bundle(&fx.bundle(&with_psk, 3), gre_only)
        .unwrap();
    assert_eq!(
        sys.chains6.chains["OVSB-OUTPUT"].rules,
        ["-A OVSB-OUTPUT -d 2001:db8::2/128 -j OVSB-GUARD-VXLAN"]
    );
    assert!(sys.chains6.chains["OVSB-GUARD-VXLAN"].exists);
    assert!(!sys.chains6.chains["OVSB-FORWARD"].exists);
    let (_, drift) = fx.applier(&mut sys).status().unwrap();
    assert!(
        drift.is_empty(),
        "drift after a GRE-only apply: {}",
        drift.render()
    );
}
