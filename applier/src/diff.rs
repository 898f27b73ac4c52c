//! What differs between two generations, for people: `applier diff A B` in full and the one-line
//! summary `applier generations` shows. PSKs are shown only as fingerprints.

use crate::plan::line_diff;
use crate::state::HostState;
use bundle::state::{Bridge, Port};
use bundle::sysctl::IP_FORWARD;
use std::collections::BTreeMap;

/// Every difference from `a` to `b`, one line each (`+` added, `-` removed, `~` changed).
pub fn diff(a: &HostState, b: &HostState) -> Vec<String> {
    let (oa, ob) = (a.ovs.redacted(), b.ovs.redacted());
    let mut out = Vec::new();
    let bridges = |s: &bundle::OvsState| -> BTreeMap<String, Bridge> {
        s.bridges
            .iter()
            .map(|b| (b.name.clone(), b.clone()))
            .collect()
    };
    let (ba, bb) = (bridges(&oa), bridges(&ob));
    for (name, br) in &ba {
        if !bb.contains_key(name) {
            out.push(format!("- bridge {name} ({} port(s))", br.ports.len()));
        }
    }
    for (name, new) in &bb {
        let Some(old) = ba.get(name) else {
            out.push(format!("+ bridge {name}"));
            for p in &new.ports {
                out.push(format!("+ port {} on {name}: {}", p.name, describe_port(p)));
            }
            continue;
        };
        if old.datapath_type != new.datapath_type {
            out.push(format!(
                "~ bridge {name}: datapath_type {:?} -> {:?}",
                old.datapath_type, new.datapath_type
            ));
        }
        if old.rstp != new.rstp {
            out.push(format!(
                "~ bridge {name}: rstp {} -> {}",
                old.rstp, new.rstp
            ));
        }
        let ports = |b: &Bridge| -> BTreeMap<String, Port> {
            b.ports
                .iter()
                .map(|p| (p.name.clone(), p.clone()))
                .collect()
        };
        let (pa, pb) = (ports(old), ports(new));
        for (pname, p) in &pa {
            if !pb.contains_key(pname) {
                out.push(format!("- port {pname} on {name}: {}", describe_port(p)));
            }
        }
        for (pname, p) in &pb {
            match pa.get(pname) {
                None => out.push(format!("+ port {pname} on {name}: {}", describe_port(p))),
                Some(q) if q != p => {
                    out.push(format!("~ port {pname} on {name}: {}", port_change(q, p)))
                }
                Some(_) => {}
            }
        }
    }
    out.extend(
        b.chains
            .diff(&a.chains)
            .into_iter()
            .map(|l| format!("{l} (iptables)")),
    );
    out.extend(
        b.chains6
            .diff(&a.chains6)
            .into_iter()
            .map(|l| format!("{l} (ip6tables)")),
    );
    let file = |f: &Option<Vec<u8>>| f.clone().unwrap_or_default();
    if a.interfaces != b.interfaces {
        out.push("~ /etc/network/interfaces:".into());
        for l in line_diff(&file(&a.interfaces), &file(&b.interfaces)).lines() {
            out.push(format!("    {l}"));
        }
    }
    if a.sysctl != b.sysctl {
        out.push(match (&a.sysctl, &b.sysctl) {
            (None, Some(_)) => format!("+ sysctl drop-in ({IP_FORWARD} = 1)"),
            (Some(_), None) => "- sysctl drop-in".into(),
            _ => "~ sysctl drop-in".into(),
        });
    }
    if a.dhcp != b.dhcp {
        out.push("~ dnsmasq.conf (DHCP):".into());
        for l in line_diff(&file(&a.dhcp), &file(&b.dhcp)).lines() {
            out.push(format!("    {l}"));
        }
    }
    if a.ovn_chassis != b.ovn_chassis {
        for (k, v) in &b.ovn_chassis {
            match a.ovn_chassis.get(k) {
                Some(old) if old == v => {}
                Some(old) => out.push(format!("~ external_ids:{k} {old} -> {v} (OVN chassis)")),
                None => out.push(format!("+ external_ids:{k}={v} (OVN chassis)")),
            }
        }
        for k in a
            .ovn_chassis
            .keys()
            .filter(|k| !b.ovn_chassis.contains_key(*k))
        {
            out.push(format!("- external_ids:{k} (OVN chassis)"));
        }
    }
    for (k, v) in &b.ovn_ipsec_keys {
        if a.ovn_ipsec_keys.get(k) != Some(v) {
            out.push(format!("~ other_config:{k} -> {v} (OVN IPsec)"));
        }
    }
    for k in a.ovn_ipsec_keys.keys() {
        if !b.ovn_ipsec_keys.contains_key(k) {
            out.push(format!("- other_config:{k} (OVN IPsec)"));
        }
    }
    // Names only: one of them is a private key.
    for l in crate::plan::ovn_ipsec_lines(a.ovn_ipsec_files.as_ref(), b.ovn_ipsec_files.as_ref()) {
        out.push(format!("{l} (OVN IPsec)"));
    }
    if a.ovn_nb != b.ovn_nb {
        let ports = |s: &[bundle::ovn::LogicalSwitch]| {
            s.iter()
                .flat_map(|ls| {
                    ls.ports
                        .iter()
                        .map(move |p| format!("{}/{} {}", ls.name, p.name, p.address))
                })
                .collect::<std::collections::BTreeSet<_>>()
        };
        let (old, new) = (ports(&a.ovn_nb), ports(&b.ovn_nb));
        for p in old.difference(&new) {
            out.push(format!("- OVN logical port {p}"));
        }
        for p in new.difference(&old) {
            out.push(format!("+ OVN logical port {p}"));
        }
        let names = |s: &[bundle::ovn::LogicalSwitch]| {
            s.iter()
                .map(|l| format!("{} {}", l.name, l.subnet))
                .collect::<Vec<_>>()
        };
        if names(&a.ovn_nb) != names(&b.ovn_nb) {
            out.push(format!(
                "~ OVN logical switches [{}] -> [{}]",
                names(&a.ovn_nb).join(", "),
                names(&b.ovn_nb).join(", ")
            ));
        }
    }
    if !b.ovs_system_id.holds(&a.ovs_system_id) {
        out.push("~ /etc/openvswitch/system-id.conf (the OVN chassis' system-id)".into());
    }
    if a.ovn_nb_ipsec != b.ovn_nb_ipsec {
        out.push(format!(
            "~ NB_Global ipsec={} -> {} (OVN IPsec)",
            a.ovn_nb_ipsec, b.ovn_nb_ipsec
        ));
    }
    if a.ipsec_skb_mark != b.ipsec_skb_mark {
        out.push(format!(
            "~ other_config:ipsec_skb_mark {} -> {}",
            a.ipsec_skb_mark.as_deref().unwrap_or("(unset)"),
            b.ipsec_skb_mark.as_deref().unwrap_or("(unset)")
        ));
    }
    out
}

fn describe_port(p: &Port) -> String {
    let mut s = if p.interface.kind.is_empty() {
        "system".to_string()
    } else {
        p.interface.kind.clone()
    };
    for (k, v) in &p.interface.options {
        s.push_str(&format!(" {k}={v}"));
    }
    if p.protected {
        s.push_str(" protected");
    }
    s
}

fn port_change(a: &Port, b: &Port) -> String {
    let mut parts = Vec::new();
    if a.interface.kind != b.interface.kind {
        parts.push(format!(
            "type {:?} -> {:?}",
            a.interface.kind, b.interface.kind
        ));
    }
    let keys: std::collections::BTreeSet<&String> = a
        .interface
        .options
        .keys()
        .chain(b.interface.options.keys())
        .collect();
    for k in keys {
        let (x, y) = (a.interface.options.get(k), b.interface.options.get(k));
        if x != y {
            let show = |v: Option<&String>| v.cloned().unwrap_or_else(|| "(unset)".into());
            parts.push(format!("{k} {} -> {}", show(x), show(y)));
        }
    }
    if a.protected != b.protected {
        parts.push(format!("protected {} -> {}", a.protected, b.protected));
    }
    if a.role != b.role || a.external_ids != b.external_ids {
        parts.push("ownership marks".into());
    }
    parts.join(", ")
}

/// One line: what generation `b` changed from `a` (`None`: the first generation).
pub fn summary(a: Option<&HostState>, b: &HostState) -> String {
    let Some(a) = a else {
        let tunnels = b.ovs.ports().filter(|(_, p)| is_tunnel(p)).count();
        return format!(
            "first: {} bridge(s), {tunnels} tunnel(s)",
            b.ovs.bridges.len()
        );
    };
    let lines = diff(a, b);
    let count = |prefix: &str, what: &str| {
        lines
            .iter()
            .filter(|l| l.starts_with(prefix) && l.contains(what))
            .count()
    };
    let tunnel_ports = |s: &HostState| -> BTreeMap<String, Port> {
        s.ovs
            .ports()
            .filter(|(_, p)| is_tunnel(p))
            .map(|(br, p)| (format!("{}/{}", br.name, p.name), p.clone()))
            .collect()
    };
    let (ta, tb) = (tunnel_ports(a), tunnel_ports(b));
    let added = tb.keys().filter(|k| !ta.contains_key(*k)).count();
    let removed = ta.keys().filter(|k| !tb.contains_key(*k)).count();
    let rekeyed = tb
        .iter()
        .filter(|(k, p)| {
            ta.get(*k).is_some_and(|q| {
                q.interface.options.get(bundle::state::PSK_OPTION)
                    != p.interface.options.get(bundle::state::PSK_OPTION)
            })
        })
        .count();
    let mut parts = Vec::new();
    if added > 0 {
        parts.push(format!("+{added} tunnel(s)"));
    }
    if removed > 0 {
        parts.push(format!("-{removed} tunnel(s)"));
    }
    if rekeyed > 0 {
        parts.push(format!("{rekeyed} PSK(s) changed"));
    }
    let bridges = count("+ bridge", "") + count("- bridge", "") + count("~ bridge", "");
    if bridges > 0 {
        parts.push(format!("{bridges} bridge change(s)"));
    }
    if lines.iter().any(|l| l.ends_with("(iptables)")) {
        parts.push("iptables".into());
    }
    if lines.iter().any(|l| l.ends_with("(ip6tables)")) {
        parts.push("ip6tables".into());
    }
    if a.interfaces != b.interfaces {
        parts.push("interfaces".into());
    }
    if a.sysctl != b.sysctl {
        parts.push("sysctl".into());
    }
    if a.dhcp != b.dhcp {
        parts.push("dhcp".into());
    }
    if parts.is_empty() {
        if lines.is_empty() {
            "no change".into()
        } else {
            format!("{} change(s)", lines.len())
        }
    } else {
        parts.join(", ")
    }
}

fn is_tunnel(p: &Port) -> bool {
    p.role == bundle::PortRole::Gre
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::tests::{profile, Fixture};

    fn state(fx: &Fixture, profile: &str, serial: u64) -> HostState {
        let b = fx.bundle(profile, serial);
        let v = bundle::verify_bundle(&b, &[fx.trusted()], &Default::default()).unwrap();
        HostState::from_bundle(&v).unwrap()
    }

    #[test]
    fn diff_lists_each_change_and_never_a_psk() {
        let fx = Fixture::new();
        let a = state(
            &fx,
            &profile(
                &[
                    ("10.99.0.2", Some("first-psk-aaaaaaaaaaaaaa")),
                    ("10.99.0.3", None),
                ],
                "10.20.0.1/24",
                true,
            ),
            1,
        );
        let b = state(
            &fx,
            &profile(
                &[
                    ("10.99.0.2", Some("second-psk-bbbbbbbbbbbbb")),
                    ("10.99.0.4", None),
                ],
                "10.20.0.2/24",
                false,
            ),
            2,
        );
        let d = diff(&a, &b).join("\n");
        for want in [
            "- port gre-0a630003 on br-t: gre remote_ip=10.99.0.3",
            "+ port gre-0a630004 on br-t: gre remote_ip=10.99.0.4",
            "~ port gre-0a630002 on br-t: psk <redacted sha256:",
            "- -A OVSB-POSTROUTING -s 10.20.0.0/24 -o eth0 -j MASQUERADE (iptables)",
            "~ /etc/network/interfaces:",
            "    -    address 10.20.0.1/24",
            "    +    address 10.20.0.2/24",
            "- sysctl drop-in",
        ] {
            assert!(d.contains(want), "missing {want:?} in:\n{d}");
        }
        assert!(!d.contains("first-psk") && !d.contains("second-psk"), "{d}");
        assert_eq!(
            summary(Some(&a), &b),
            "+1 tunnel(s), -1 tunnel(s), 1 PSK(s) changed, iptables, interfaces, sysctl"
        );
        assert_eq!(summary(None, &a), "first: 1 bridge(s), 2 tunnel(s)");
        assert!(diff(&a, &a).is_empty());
        assert_eq!(summary(Some(&a), &a), "no change");
    }

    #[test]
    fn diff_shows_dhcp_lease_changes() {
        let fx = Fixture::new();
        let p = profile(&[("10.99.0.2", None)], "10.20.0.1/24", false);
        let lease = |ip: &str| {
            format!("{p}\n[bridges.dhcp]\n[[bridges.dhcp.leases]]\nmac = \"52:54:00:00:00:01\"\nip = \"{ip}\"\n")
        };
        let (a, b) = (
            state(&fx, &lease("10.20.0.10"), 1),
            state(&fx, &lease("10.20.0.11"), 2),
        );
        let d = diff(&a, &b).join("\n");
        for want in [
            "~ dnsmasq.conf (DHCP):",
            "    -dhcp-host=52:54:00:00:00:01,10.20.0.10",
            "    +dhcp-host=52:54:00:00:00:01,10.20.0.11",
        ] {
            assert!(d.contains(want), "missing {want:?} in:\n{d}");
        }
        assert_eq!(summary(Some(&a), &b), "dhcp");
        let none = state(&fx, &p, 3);
        assert!(diff(&none, &a).join("\n").contains("    +port=0"));
    }
}
