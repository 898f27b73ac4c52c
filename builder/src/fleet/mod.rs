//! The fleet as a whole: meshes declared in `fleet.toml` ([`mesh`]), and the checks that need
//! every host at once: links symmetric with matching PSKs, peers known, underlay addresses unique,
//! addresses unique on each L2 network and networks disjoint, forwarders covering their networks,
//! and no forwarding loop through unprotected tunnels unless RSTP runs on every bridge of it
//! ([`loops`]). Works on hosts already valid on their own; never reads host profiles itself.

pub(crate) mod dhcp;
mod loops;
mod mesh;
pub mod ovn;

pub use mesh::{derive_psk, expand_meshes};

use crate::diag::{Diagnostic, Loc};
use crate::model::{Gre, Host};
use crate::net::{Ipv4Cidr, Ipv6Cidr};
use bundle::tunnel::TunnelKind;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One end of a link: host, bridge, and whether its tunnel port is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct End {
    host: usize,
    bridge: usize,
    protected: bool,
}

/// Cross-host checks on fully expanded hosts. Errors and notes go to `diags`.
pub fn check_fleet(hosts: &[Host], diags: &mut Vec<Diagnostic>) {
    let mut by_ip: HashMap<IpAddr, usize> = HashMap::new();
    for (i, host) in hosts.iter().enumerate() {
        if let Some(&first) = by_ip.get(&host.underlay_ip) {
            let first = &hosts[first];
            diags.push(
                Diagnostic::error(
                    Some(host.loc.clone()),
                    format!(
                        "underlay_ip {} of host {:?} is also host {:?}'s ({})",
                        host.underlay_ip, host.name, first.name, first.loc
                    ),
                )
                .hint("every host needs its own underlay address"),
            );
        } else {
            by_ip.insert(host.underlay_ip, i);
        }
    }
    // Each host's tunnels by peer address, type and key: the two ends of a link must agree on
    // all three (a keyed tunnel is only found by the same key at the other end).
    type TunnelId = (IpAddr, TunnelKind, Option<u32>);
    let tunnels: Vec<HashMap<TunnelId, (usize, &Gre)>> = hosts
        .iter()
        .map(|h| {
            h.bridges
                .iter()
                .enumerate()
                .flat_map(|(b, br)| {
                    br.gre
                        .iter()
                        .map(move |g| ((g.remote_ip, g.kind, g.key), (b, g)))
                })
                .collect()
        })
        .collect();
    let mut links: Vec<(End, End)> = Vec::new();
    for (h, host) in hosts.iter().enumerate() {
        for (b, bridge) in host.bridges.iter().enumerate() {
            for g in bridge.gre.iter().filter(|g| !g.external) {
                let Some(&r) = by_ip.get(&g.remote_ip) else {
                    diags.push(
                        Diagnostic::error(
                            Some(g.loc.clone()),
                            format!("host {}: remote_ip {} is not the underlay_ip of any host in the fleet", host.name, g.remote_ip),
                        )
                        .hint("fix the address, or mark the connection `external = true` if the peer is outside this fleet"),
                    );
                    continue;
                };
                let Some(&(rb, back)) = tunnels[r].get(&(host.underlay_ip, g.kind, g.key)) else {
                    let peer = &hosts[r];
                    let (kind, key) = (
                        g.kind.as_str().to_uppercase(),
                        g.key.map(|k| format!(" with key {k}")).unwrap_or_default(),
                    );
                    let other = tunnels[r]
                        .iter()
                        .filter(|((ip, _, _), _)| *ip == host.underlay_ip)
                        .map(|((_, k, key), (_, t))| {
                            format!(
                                "{}{} at {}",
                                k.as_str(),
                                key.map(|k| format!(" key {k}")).unwrap_or_default(),
                                t.loc
                            )
                        })
                        .collect::<Vec<_>>();
                    let mut other = other;
                    other.sort();
                    let also = if other.is_empty() {
                        String::new()
                    } else {
                        format!("; it has {}", other.join(", "))
                    };
                    diags.push(
                        Diagnostic::error(
                            Some(g.loc.clone()),
                            format!(
                                "host {} has a {kind} tunnel{key} to {} ({}), but {} has no {kind} tunnel{key} back to {} ({}){also}",
                                host.name, peer.name, g.remote_ip, peer.name, host.underlay_ip, peer.loc
                            ),
                        )
                        .hint(format!("both ends need the same type and key: add or fix the [[bridges.gre]] with remote_ip = \"{}\" in {}", host.underlay_ip, peer.loc.file)),
                    );
                    continue;
                };
                if h > r {
                    continue; // each link once, from its lower end
                }
                if g.psk != back.psk {
                    let how = match (&g.psk, &back.psk) {
                        (Some(_), None) | (None, Some(_)) => "one end has a PSK and the other none",
                        _ => "the two ends have different PSKs",
                    };
                    diags.push(
                        Diagnostic::error(
                            Some(g.loc.clone()),
                            format!(
                                "link {} <-> {}: {how} (other end at {})",
                                host.name, hosts[r].name, back.loc
                            ),
                        )
                        .hint("both ends of a tunnel need the same psk or psk_file, or neither"),
                    );
                }
                links.push((
                    End {
                        host: h,
                        bridge: b,
                        protected: g.protected,
                    },
                    End {
                        host: r,
                        bridge: rb,
                        protected: back.protected,
                    },
                ));
            }
        }
    }
    // Bridges attached to one OVN logical switch are one L2 network: joined here as a star of
    // protected ends (no crossing, so no loop), for the address and DHCP checks.
    let mut first_on_switch: HashMap<&str, End> = HashMap::new();
    for (h, host) in hosts.iter().enumerate() {
        for (b, bridge) in host.bridges.iter().enumerate() {
            let Some(ls) = &bridge.ovn_switch else {
                continue;
            };
            let end = End {
                host: h,
                bridge: b,
                protected: true,
            };
            match first_on_switch.get(ls.as_str()) {
                Some(first) => links.push((*first, end)),
                None => {
                    first_on_switch.insert(ls, end);
                }
            }
            // Its uplink, joined to it by OVN's patch port (the uplink has no tunnel: the
            // OVN expansion refuses one, so this adds no crossing either).
            if let Some(up) = bridge
                .ovn_uplink
                .as_ref()
                .and_then(|u| host.bridges.iter().position(|x| &x.name == u))
            {
                links.push((
                    end,
                    End {
                        host: h,
                        bridge: up,
                        protected: true,
                    },
                ));
            }
        }
    }
    check_addresses(hosts, &links, diags);
    dhcp::check(hosts, &networks(hosts, &links), diags);
    loops::check_loops(hosts, &links, diags);
}

/// Union-find over (host, bridge): the L2 networks.
fn networks(hosts: &[Host], links: &[(End, End)]) -> HashMap<(usize, usize), usize> {
    let ids: Vec<(usize, usize)> = hosts
        .iter()
        .enumerate()
        .flat_map(|(h, host)| (0..host.bridges.len()).map(move |b| (h, b)))
        .collect();
    let index: HashMap<(usize, usize), usize> =
        ids.iter().enumerate().map(|(i, k)| (*k, i)).collect();
    let mut parent: Vec<usize> = (0..ids.len()).collect();
    fn find(p: &mut [usize], mut x: usize) -> usize {
        while p[x] != x {
            p[x] = p[p[x]];
            x = p[x];
        }
        x
    }
    for (a, b) in links {
        let (x, y) = (index[&(a.host, a.bridge)], index[&(b.host, b.bridge)]);
        let (rx, ry) = (find(&mut parent, x), find(&mut parent, y));
        parent[rx] = ry;
    }
    ids.iter()
        .enumerate()
        .map(|(i, k)| (*k, find(&mut parent, i)))
        .collect()
}

fn check_addresses(hosts: &[Host], links: &[(End, End)], diags: &mut Vec<Diagnostic>) {
    let net_of = networks(hosts, links);
    // Per network: addresses, and the subnets they are on.
    let mut addrs: BTreeMap<usize, Vec<(Ipv4Cidr, &str, &Loc)>> = BTreeMap::new();
    for (h, host) in hosts.iter().enumerate() {
        for (b, bridge) in host.bridges.iter().enumerate() {
            for hi in &bridge.host_interfaces {
                if let Some(a) = hi.address {
                    addrs
                        .entry(net_of[&(h, b)])
                        .or_default()
                        .push((a, &host.name, &hi.loc));
                }
            }
        }
    }
    let mut subnets: Vec<(u32, u32, usize, Ipv4Cidr, &Loc)> = Vec::new();
    for (net, list) in &addrs {
        let mut seen: HashMap<Ipv4Addr, (&str, &Loc)> = HashMap::new();
        let mut nets: HashSet<Ipv4Cidr> = HashSet::new();
        for (a, host, loc) in list {
            if let Some((other, first)) = seen.insert(a.addr, (host, loc)) {
                diags.push(
                    Diagnostic::error(Some((*loc).clone()), format!("address {} of host {host} is also host {other}'s ({first}), on the same L2 network", a.addr))
                        .hint("give every interface on a network its own address"),
                );
            }
            if nets.insert(a.network()) {
                let n = a.network();
                let start = u32::from(n.addr);
                subnets.push((start, start | !n.mask(), *net, n, loc));
            }
        }
    }
    subnets.sort_by_key(|s| (s.0, s.1));
    for (i, a) in subnets.iter().enumerate() {
        for b in subnets[i + 1..].iter().take_while(|b| b.0 <= a.1) {
            if a.2 != b.2 {
                diags.push(
                    Diagnostic::error(
                        Some(b.4.clone()),
                        format!(
                            "subnet {} overlaps {} ({}) of another L2 network",
                            b.3, a.3, a.4
                        ),
                    )
                    .hint("separate networks need separate subnets, or NAT and routing break"),
                );
            }
        }
    }
    check_addresses6(hosts, &net_of, diags);
    for (h, host) in hosts.iter().enumerate() {
        for (b, bridge) in host.bridges.iter().enumerate() {
            let Some(f) = &bridge.forwarder else { continue };
            // An IPv6-only forwarder does not route the IPv4 addresses behind it.
            let Some(source) = f.source else { continue };
            for (a, other, loc) in addrs.get(&net_of[&(h, b)]).into_iter().flatten() {
                if !source.contains(a.addr) {
                    diags.push(
                        Diagnostic::error(
                            Some(f.loc.clone()),
                            format!("forwarder of {} on {} has source {source}, which does not contain {} of host {other} ({loc}) behind it", host.name, bridge.name, a.addr),
                        )
                        .hint("widen source to the whole network behind the forwarder"),
                    );
                }
            }
        }
    }
}

/// The IPv6 side of [`check_addresses`]: subnets of different L2 networks disjoint, on each
/// network no `address6` twice, and a forwarder's `source6` holds every `address6` behind it.
fn check_addresses6(
    hosts: &[Host],
    net_of: &HashMap<(usize, usize), usize>,
    diags: &mut Vec<Diagnostic>,
) {
    let mut addrs: BTreeMap<usize, Vec<(Ipv6Addr, &str, &Loc)>> = BTreeMap::new();
    // Each subnet once per network: (first address, last, network, subnet, where first seen).
    let mut subnets: Vec<(u128, u128, usize, Ipv6Cidr, &Loc)> = Vec::new();
    for (h, host) in hosts.iter().enumerate() {
        for (b, bridge) in host.bridges.iter().enumerate() {
            for hi in &bridge.host_interfaces {
                if let Some(a) = hi.address6 {
                    let net = net_of[&(h, b)];
                    addrs
                        .entry(net)
                        .or_default()
                        .push((a.addr, &host.name, &hi.loc));
                    let n = a.network();
                    let start = u128::from(n.addr);
                    if !subnets.iter().any(|s| s.2 == net && s.3 == n) {
                        subnets.push((start, start | !n.mask(), net, n, &hi.loc));
                    }
                }
            }
        }
    }
    subnets.sort_by_key(|s| (s.0, s.1));
    for (i, a) in subnets.iter().enumerate() {
        for b in subnets[i + 1..].iter().take_while(|b| b.0 <= a.1) {
            if a.2 != b.2 {
                diags.push(
                    Diagnostic::error(
                        Some(b.4.clone()),
                        format!(
                            "IPv6 subnet {} overlaps {} ({}) of another L2 network",
                            b.3, a.3, a.4
                        ),
                    )
                    .hint("separate networks need separate subnets, or NAT and routing break"),
                );
            }
        }
    }
    for list in addrs.values() {
        let mut seen: HashMap<Ipv6Addr, (&str, &Loc)> = HashMap::new();
        for (a, host, loc) in list {
            if let Some((other, first)) = seen.insert(*a, (host, loc)) {
                diags.push(
                    Diagnostic::error(Some((*loc).clone()), format!("address6 {a} of host {host} is also host {other}'s ({first}), on the same L2 network"))
                        .hint("give every interface on a network its own address"),
                );
            }
        }
    }
    for (h, host) in hosts.iter().enumerate() {
        for (b, bridge) in host.bridges.iter().enumerate() {
            let Some(f) = &bridge.forwarder else { continue };
            let Some(source6) = f.source6 else { continue };
            for (a, other, loc) in addrs.get(&net_of[&(h, b)]).into_iter().flatten() {
                if !source6.contains(*a) {
                    diags.push(
                        Diagnostic::error(
                            Some(f.loc.clone()),
                            format!("forwarder of {} on {} has source6 {source6}, which does not contain {a} of host {other} ({loc}) behind it", host.name, bridge.name),
                        )
                        .hint("widen source6 to the whole network behind the forwarder"),
                    );
                }
            }
        }
    }
}
