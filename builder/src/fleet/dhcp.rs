//! DHCP across the fleet: static leases listed in `fleet.toml` (`[[dhcp_leases]]`) given to the
//! DHCP server of the bridge that serves their subnet, and the checks that need every host at
//! once: at most one DHCP server per L2 network (two would hand out the same dynamic addresses
//! from separate lease databases, and both claim authority), and on each network no MAC or IP in
//! two leases and no lease on another host's interface address.
//!
//! Also the one checker of a lease's values ([`lease`]), which profiles use for theirs.

use crate::diag::{Diagnostic, Loc, SourceMap};
use crate::model::{Host, Lease};
use crate::shape::{Field, Kind};
use bundle::dhcp::{lease_name_problem, Mac};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use toml::Spanned;

/// The keys of a static lease (`[[bridges.dhcp.leases]]` in a profile).
pub(crate) const LEASE: &[Field] = &[
    Field::req("mac", Kind::Str),
    Field::req("ip", Kind::Str),
    Field::opt("name", Kind::Str),
];

/// The keys of a fleet-wide lease (`[[dhcp_leases]]` in fleet.toml): a lease and its bridge.
pub(super) const FLEET_LEASE: &[Field] = &[
    Field::req("bridge", Kind::Str),
    Field::req("mac", Kind::Str),
    Field::req("ip", Kind::Str),
    Field::opt("name", Kind::Str),
];

/// A static lease as written.
#[derive(Debug, Deserialize)]
#[cfg_attr(test, serde(deny_unknown_fields))]
pub(crate) struct RawLease {
    pub(crate) mac: Spanned<String>,
    pub(crate) ip: Spanned<String>,
    pub(crate) name: Option<Spanned<String>>,
}

/// A lease in fleet.toml: for the bridge of this name on whichever host serves its subnet.
#[derive(Debug, Deserialize)]
#[cfg_attr(test, serde(deny_unknown_fields))]
pub(super) struct RawFleetLease {
    bridge: Spanned<String>,
    // Not `#[serde(flatten)]` of a RawLease: flattening buffers values, which loses their spans.
    mac: Spanned<String>,
    ip: Spanned<String>,
    name: Option<Spanned<String>>,
}

/// Checks a lease's values (not yet where it belongs), each problem at its own place.
pub(crate) fn lease(raw: &RawLease, map: &SourceMap, diags: &mut Vec<Diagnostic>) -> Option<Lease> {
    lease_of(&raw.mac, &raw.ip, raw.name.as_ref(), map, diags)
}

fn lease_of(
    mac: &Spanned<String>,
    ip: &Spanned<String>,
    name: Option<&Spanned<String>>,
    map: &SourceMap,
    diags: &mut Vec<Diagnostic>,
) -> Option<Lease> {
    let raw = RawLease {
        mac: mac.clone(),
        ip: ip.clone(),
        name: name.cloned(),
    };
    let at = |s: &Spanned<String>| map.span(&s.span());
    let before = diags.len();
    let mac = raw
        .mac
        .get_ref()
        .parse::<Mac>()
        .map_err(|e| {
            diags.push(
                Diagnostic::error(at(&raw.mac), format!("lease mac: {e}"))
                    .hint("the client's Ethernet address, e.g. mac = \"52:54:00:12:34:56\""),
            )
        })
        .ok();
    let ip = raw
        .ip
        .get_ref()
        .parse::<Ipv4Addr>()
        .map_err(|_| {
            diags.push(
                Diagnostic::error(
                    at(&raw.ip),
                    format!("lease ip {:?} is not an IPv4 address", raw.ip.get_ref()),
                )
                .hint("write a dotted quad in the served subnet, e.g. ip = \"10.20.20.10\""),
            )
        })
        .ok();
    if let Some(n) = &raw.name {
        if let Some(p) = lease_name_problem(n.get_ref()) {
            diags.push(
                Diagnostic::error(at(n), format!("lease name {:?} {p}", n.get_ref()))
                    .hint("a host name handed to the client: a DNS label such as node1"),
            );
        }
    }
    if diags.len() > before {
        return None;
    }
    Some(Lease {
        mac: mac?,
        ip: ip?,
        name: raw.name.as_ref().map(|n| n.get_ref().clone()),
        loc: at(&raw.mac).unwrap_or_else(|| map.line(1)),
    })
}

/// Gives each `[[dhcp_leases]]` of fleet.toml to every host whose bridge of that name serves DHCP
/// on a subnet holding the lease's address; a lease no host serves is an error.
pub(super) fn add_fleet_leases(
    raw: &[Spanned<RawFleetLease>],
    hosts: &mut [Host],
    map: &SourceMap,
    diags: &mut Vec<Diagnostic>,
) {
    for r in raw {
        let r = r.get_ref();
        let Some(l) = lease_of(&r.mac, &r.ip, r.name.as_ref(), map, diags) else {
            continue;
        };
        let bridge = r.bridge.get_ref();
        let mut served = 0;
        for h in hosts.iter_mut() {
            for b in h.bridges.iter_mut().filter(|b| &b.name == bridge) {
                // A host address of the subnet (the server's own is refused by `check`).
                let served_by = |d: &&mut crate::model::Dhcp| {
                    let h = u32::from(l.ip) & !d.address.mask();
                    d.address.contains(l.ip) && h != 0 && h != !d.address.mask()
                };
                if let Some(d) = b.dhcp.as_mut().filter(served_by) {
                    d.leases.push(l.clone());
                    served += 1;
                }
            }
        }
        if served == 0 {
            diags.push(
                Diagnostic::error(
                    map.span(&r.ip.span()),
                    format!(
                        "no host's bridge {bridge} serves DHCP on a subnet holding lease ip {}",
                        l.ip
                    ),
                )
                .hint("add [bridges.dhcp] to that bridge on the host that should serve it, or fix bridge or ip"),
            );
        }
    }
}

/// The fleet checks of DHCP; `net_of` maps (host, bridge) to its L2 network.
pub(super) fn check(
    hosts: &[Host],
    net_of: &HashMap<(usize, usize), usize>,
    diags: &mut Vec<Diagnostic>,
) {
    // Interface addresses per network, and the servers on it.
    let mut addrs: HashMap<usize, Vec<(Ipv4Addr, &str, &Loc)>> = HashMap::new();
    let mut servers: BTreeMap<usize, Vec<(&str, &str, &Loc)>> = BTreeMap::new();
    for (h, host) in hosts.iter().enumerate() {
        for (b, bridge) in host.bridges.iter().enumerate() {
            let net = net_of[&(h, b)];
            for hi in &bridge.host_interfaces {
                if let Some(a) = hi.address {
                    addrs
                        .entry(net)
                        .or_default()
                        .push((a.addr, &host.name, &hi.loc));
                }
            }
            if let Some(d) = &bridge.dhcp {
                servers
                    .entry(net)
                    .or_default()
                    .push((&host.name, &bridge.name, &d.loc));
            }
        }
    }
    for list in servers.values() {
        let (first_host, first_bridge, first_loc) = list[0];
        for (host, bridge, loc) in &list[1..] {
            diags.push(
                Diagnostic::error(
                    Some((*loc).clone()),
                    format!(
                        "{host}/{bridge} serves DHCP on the same L2 network as {first_host}/{first_bridge} ({first_loc})"
                    ),
                )
                .hint("one DHCP server per network: keep [bridges.dhcp] on one host and list every static lease there (or in fleet.toml)"),
            );
        }
    }
    for (h, host) in hosts.iter().enumerate() {
        for (b, bridge) in host.bridges.iter().enumerate() {
            let Some(d) = &bridge.dhcp else { continue };
            let mut macs: HashMap<Mac, &Loc> = HashMap::new();
            let mut ips: HashMap<Ipv4Addr, &Loc> = HashMap::new();
            for l in &d.leases {
                if let Some(first) = macs.insert(l.mac, &l.loc) {
                    diags.push(
                        Diagnostic::error(
                            Some(l.loc.clone()),
                            format!(
                                "MAC {} has a second lease on {}/{} (first at {first})",
                                l.mac, host.name, bridge.name
                            ),
                        )
                        .hint("a client gets one address: remove one of the leases"),
                    );
                }
                if let Some(first) = ips.insert(l.ip, &l.loc) {
                    diags.push(
                        Diagnostic::error(
                            Some(l.loc.clone()),
                            format!(
                                "address {} is leased twice on {}/{} (first at {first})",
                                l.ip, host.name, bridge.name
                            ),
                        )
                        .hint("give each client its own address"),
                    );
                }
                let taken = addrs.get(&net_of[&(h, b)]).into_iter().flatten();
                for (a, other, loc) in taken.filter(|(a, ..)| *a == l.ip) {
                    diags.push(
                        Diagnostic::error(
                            Some(l.loc.clone()),
                            format!(
                                "lease address {a} is host {other}'s interface address ({loc})"
                            ),
                        )
                        .hint("lease an address no interface of the network has"),
                    );
                }
            }
        }
    }
}
