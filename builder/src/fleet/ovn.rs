//! `fleet.toml`'s `[ovn]`: the central host, the logical switches, and which host attaches to
//! which switch. Each chassis gets its `Open_vSwitch` `external_ids` (system-id, ovn-remote,
//! ovn-encap-type, ovn-encap-ip, hostname), a `br-int` with one internal port bound to its
//! logical switch port (`external_ids:iface-id`) and an address stanza; the central gets the
//! northbound state. A switch bridged to a physical network (`network`) gets a localnet port,
//! and each of its chassis maps that network to its `uplink` bridge (`ovn-bridge-mappings`).
//! A host's chassis settings depend only on itself and the central, so adding a host changes
//! no other chassis' bundle (only the central's, by one logical port).
//!
//! Over 500 lines: OVN's fleet-wide checks, each with its place and hint, and the chassis and
//! central parts they decide.

use crate::diag::{Diagnostic, Loc, SourceMap};
use crate::model::{Bridge, Datapath, Host, HostInterface, OvnAttachment, OvnIpsec};
use crate::net::Ipv4Cidr;
use crate::ovn_pki;
use crate::shape::{Field, Kind};
use bundle::ovn::{name_problem, remote, LogicalPort, LogicalSwitch, SB_PORT};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use toml::Spanned;

/// The integration bridge ovn-controller uses (its default `ovn-bridge`).
pub const BR_INT: &str = "br-int";
/// The host interface's name on `br-int` when `interface` is not given.
const DEFAULT_IFACE: &str = "ovn0";

pub(super) const OVN: &[Field] = &[
    Field::req("central", Kind::Str),
    Field::opt("datapath", Kind::Str),
    Field::opt("switches", Kind::Tables(SWITCH)),
    Field::opt("chassis", Kind::Tables(CHASSIS)),
    Field::opt("ipsec_pki", Kind::Str),
    Field::opt("ipsec_expiry", Kind::Str),
];
const SWITCH: &[Field] = &[
    Field::req("name", Kind::Str),
    Field::req("subnet", Kind::Str),
    Field::opt("network", Kind::Str),
];
const CHASSIS: &[Field] = &[
    Field::req("host", Kind::Str),
    Field::opt("system_id", Kind::Str),
    Field::req("switch", Kind::Str),
    Field::opt("interface", Kind::Str),
    Field::req("address", Kind::Str),
    Field::opt("uplink", Kind::Str),
];

#[derive(Debug, Deserialize)]
#[cfg_attr(test, serde(deny_unknown_fields))]
pub(super) struct RawOvn {
    central: Spanned<String>,
    datapath: Option<Spanned<String>>,
    #[serde(default)]
    switches: Vec<Spanned<RawSwitch>>,
    #[serde(default)]
    chassis: Vec<Spanned<RawChassis>>,
    /// IPsec between chassis: the PKI directory (`builder ovn-ca`), relative to fleet.toml.
    ipsec_pki: Option<Spanned<String>>,
    /// When the chassis certificates expire, YYYY-MM-DD (end of day, UTC); default: never.
    ipsec_expiry: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(test, serde(deny_unknown_fields))]
struct RawSwitch {
    name: Spanned<String>,
    subnet: Spanned<String>,
    /// The physical network the switch is bridged to (a localnet port): OVN then carries the
    /// switch's traffic between chassis over that network, not over Geneve.
    network: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(test, serde(deny_unknown_fields))]
struct RawChassis {
    host: Spanned<String>,
    system_id: Option<Spanned<String>>,
    switch: Spanned<String>,
    interface: Option<Spanned<String>>,
    address: Spanned<String>,
    /// The host's bridge (declared in its profile) on the switch's physical network.
    uplink: Option<Spanned<String>>,
}

/// The logical switch port of `host`: also the `iface-id` of its interface.
pub fn port_name(host: &str) -> String {
    format!("ovsb-{host}")
}

/// The MAC of a logical port: locally administered, unicast, from a digest of the port's name,
/// so it never changes and needs no state.
pub fn port_mac(port: &str) -> bundle::dhcp::Mac {
    use sha2::Digest;
    let d = sha2::Sha256::digest(format!("ovs-bundle ovn mac v1\0{port}").as_bytes());
    bundle::dhcp::Mac([0x0a, d[0], d[1], d[2], d[3], d[4]])
}

/// Checks `[ovn]` against the hosts and gives each host its part. Errors go to `diags`; on any
/// error no host is changed.
pub(super) fn expand(
    dir: &std::path::Path,
    raw: &Spanned<RawOvn>,
    hosts: &mut [Host],
    map: &SourceMap,
    diags: &mut Vec<Diagnostic>,
) {
    let before = diags.len();
    let at = |span: std::ops::Range<usize>| Some(map.span_loc(&span));
    let o = raw.get_ref();
    let index: HashMap<&str, usize> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| (h.name.as_str(), i))
        .collect();
    let central = match index.get(o.central.get_ref().as_str()) {
        Some(&c) => Some(c),
        None => {
            let names: Vec<&str> = index.keys().copied().collect();
            diags.push(
                Diagnostic::error(
                    at(o.central.span()),
                    format!("OVN central {:?} has no profile", o.central.get_ref()),
                )
                .hint(did_you_mean(
                    o.central.get_ref(),
                    &names,
                    "create hosts/<central>.toml",
                )),
            );
            None
        }
    };
    let datapath = match o.datapath.as_ref().map(|d| (d.get_ref().as_str(), d)) {
        None | Some(("system", _)) => Datapath::System,
        Some(("netdev", _)) => Datapath::Netdev,
        Some((other, d)) => {
            diags.push(
                Diagnostic::error(
                    at(d.span()),
                    format!("unknown datapath {other:?} for br-int"),
                )
                .hint("datapath is \"system\" (the kernel's) or \"netdev\" (userspace)"),
            );
            Datapath::System
        }
    };
    // Switches: name -> (subnet, where, physical network).
    let mut switches: BTreeMap<String, (Ipv4Cidr, Loc, Option<String>)> = BTreeMap::new();
    for s in &o.switches {
        let (name, loc) = (s.get_ref().name.get_ref(), map.loc(s.span().start));
        if let Some(why) = name_problem(name) {
            diags.push(
                Diagnostic::error(
                    at(s.get_ref().name.span()),
                    format!("logical switch name {name:?} {why}"),
                )
                .hint("name it like ls0 or tenant-a"),
            );
            continue;
        }
        let subnet = match Ipv4Cidr::parse(s.get_ref().subnet.get_ref()) {
            Ok(c) if c.is_network() => c,
            Ok(c) => {
                diags.push(
                    Diagnostic::error(
                        at(s.get_ref().subnet.span()),
                        format!("subnet {c} of logical switch {name} has host bits set"),
                    )
                    .hint(format!("did you mean {}?", c.network())),
                );
                continue;
            }
            Err(e) => {
                diags.push(
                    Diagnostic::error(
                        at(s.get_ref().subnet.span()),
                        format!("subnet of logical switch {name}: {e}"),
                    )
                    .hint("write it as a.b.c.d/len, e.g. 10.30.0.0/24"),
                );
                continue;
            }
        };
        let network = match &s.get_ref().network {
            None => None,
            Some(n) => {
                let port = bundle::ovn::localnet_port_name(name);
                if let Some(why) = name_problem(n.get_ref()) {
                    diags.push(
                        Diagnostic::error(
                            at(n.span()),
                            format!("physical network name {:?} {why}", n.get_ref()),
                        )
                        .hint("name it like physnet or dc1-vlan20: the name each chassis maps to its uplink bridge"),
                    );
                    continue;
                }
                if name_problem(&port).is_some() {
                    diags.push(
                        Diagnostic::error(
                            at(s.get_ref().name.span()),
                            format!("logical switch name {name:?} is too long for its localnet port {port:?} (64 bytes at most)"),
                        )
                        .hint("shorten the switch's name to 56 bytes or less"),
                    );
                    continue;
                }
                if let Some(pki) = &o.ipsec_pki {
                    diags.push(
                        Diagnostic::error(
                            at(n.span()),
                            format!(
                                "logical switch {name} is bridged to physical network {:?}, and [ovn] has ipsec_pki ({}): OVN carries a bridged switch's traffic between chassis over the physical network, outside Geneve and IPsec",
                                n.get_ref(),
                                map.span_loc(&pki.span())
                            ),
                        )
                        .hint("keep traffic that must be encrypted on a switch without network, in a fleet with ipsec_pki; bridge uplinks in a fleet without it"),
                    );
                    continue;
                }
                Some(n.get_ref().clone())
            }
        };
        if let Some((_, first, _)) = switches.get(name) {
            diags.push(
                Diagnostic::error(
                    Some(loc),
                    format!("logical switch {name} is declared twice (first at {first})"),
                )
                .hint("declare each [[ovn.switches]] once"),
            );
            continue;
        }
        switches.insert(name.clone(), (subnet, loc, network));
    }
    let ipsec = ipsec_pki(dir, o, &at, diags);
    let switch_names: Vec<&str> = switches.keys().map(String::as_str).collect();
    // What each chassis entry gives, checked; applied to the hosts only when all is well.
    struct Planned {
        host: usize,
        system_id: String,
        switch: String,
        iface: String,
        address: Ipv4Cidr,
        /// (physical network, the host's bridge on it).
        uplink: Option<(String, String)>,
        loc: Loc,
    }
    let mut planned: Vec<Planned> = Vec::new();
    let mut by_host: HashMap<usize, Loc> = HashMap::new();
    let mut by_system_id: HashMap<String, (String, Loc)> = HashMap::new();
    let mut by_encap: HashMap<IpAddr, (String, Loc)> = HashMap::new();
    let mut by_address: HashMap<Ipv4Addr, (String, Loc)> = HashMap::new();
    for c in &o.chassis {
        let r = c.get_ref();
        let loc = map.loc(c.span().start);
        let host_name = r.host.get_ref();
        let Some(&h) = index.get(host_name.as_str()) else {
            let names: Vec<&str> = index.keys().copied().collect();
            diags.push(
                Diagnostic::error(
                    at(r.host.span()),
                    format!("OVN chassis {host_name:?} has no profile"),
                )
                .hint(did_you_mean(
                    host_name,
                    &names,
                    "create hosts/<host>.toml or remove the entry",
                )),
            );
            continue;
        };
        if let Some(first) = by_host.insert(h, loc.clone()) {
            diags.push(
                Diagnostic::error(
                    at(r.host.span()),
                    format!("host {host_name} is an OVN chassis twice (first at {first})"),
                )
                .hint("one [[ovn.chassis]] per host: it has one attachment"),
            );
            continue;
        }
        let host = &hosts[h];
        let system_id = r
            .system_id
            .as_ref()
            .map_or(host_name.clone(), |s| s.get_ref().clone());
        if let Some(why) = name_problem(&system_id) {
            let span = r.system_id.as_ref().map_or(r.host.span(), |s| s.span());
            diags.push(
                Diagnostic::error(at(span), format!("system_id {system_id:?} {why}"))
                    .hint("a chassis name: letters, digits, '-', '_', '.'"),
            );
            continue;
        }
        if let Some((other, first)) =
            by_system_id.insert(system_id.clone(), (host_name.clone(), loc.clone()))
        {
            diags.push(
                Diagnostic::error(Some(loc.clone()), format!("system-id {system_id:?} of chassis {host_name} is also chassis {other}'s ({first})"))
                    .hint("every chassis needs its own system-id: ovn-controller registers one Chassis row per system-id"),
            );
        }
        if let Some((other, first)) =
            by_encap.insert(host.underlay_ip, (host_name.clone(), loc.clone()))
        {
            diags.push(
                Diagnostic::error(
                    Some(loc.clone()),
                    format!(
                        "encap IP {} of chassis {host_name} is also chassis {other}'s ({first})",
                        host.underlay_ip
                    ),
                )
                .hint("each chassis' Geneve tunnels end at its own underlay_ip"),
            );
        }
        // One address family: a Geneve tunnel joins two underlays of one family, and the
        // chassis reaches the central's SB database on its own.
        if let Some(c) = central {
            let central_ip = hosts[c].underlay_ip;
            if central_ip.is_ipv4() != host.underlay_ip.is_ipv4() {
                diags.push(
                    Diagnostic::error(at(r.host.span()), format!(
                        "chassis {host_name} has underlay_ip {} but the OVN central {} is at {central_ip}: one address family for the whole OVN fleet",
                        host.underlay_ip, hosts[c].name
                    ))
                    .hint("give every chassis and the central underlay addresses of one family"),
                );
                continue;
            }
        }
        let Some((subnet, _, network)) = switches.get(r.switch.get_ref()) else {
            diags.push(
                Diagnostic::error(
                    at(r.switch.span()),
                    format!("logical switch {:?} is not declared", r.switch.get_ref()),
                )
                .hint(did_you_mean(
                    r.switch.get_ref(),
                    &switch_names,
                    "add an [[ovn.switches]] with this name",
                )),
            );
            continue;
        };
        let iface = r
            .interface
            .as_ref()
            .map_or(DEFAULT_IFACE.to_string(), |i| i.get_ref().clone());
        let iface_span = r.interface.as_ref().map_or(c.span(), |i| i.span());
        if let Some(why) = crate::net::ifname_problem(&iface) {
            diags.push(
                Diagnostic::error(at(iface_span), format!("interface name {iface:?} {why}"))
                    .hint("a Linux device name of at most 15 bytes, e.g. ovn0"),
            );
            continue;
        }
        // br-int is OVN's: a host that declares it (a mesh or hand tunnels on it) would have two
        // owners for one bridge.
        // A chassis with IPsec certificates has no tunnel of its own that they would cut off:
        // - no PSK tunnel: ovs-monitor-ipsec takes PSKs or certificates, not both; with
        //   certificates it refuses every PSK tunnel of the host ("must be unset with PSK"),
        //   whose guard then drops all its traffic;
        // - no plain Geneve tunnel: the chassis' guard drops every Geneve packet outside IPsec
        //   (OVN's tunnels go to chassis no bundle lists, so it cannot name its peers).
        let conflict = o.ipsec_pki.as_ref().and_then(|pki| {
            host.bridges.iter().flat_map(|b| &b.gre).find_map(|g| {
                if g.psk.is_some() {
                    Some((pki, g, "a PSK tunnel", "ovs-monitor-ipsec takes PSKs or certificates on a host, not both",
                        "move the host in two steps (docs/ovn.md): OVN without ipsec_pki beside the PSK mesh, or the mesh's PSKs gone before ipsec_pki"))
                } else if g.kind == bundle::tunnel::TunnelKind::Geneve {
                    Some((pki, g, "a plain Geneve tunnel", "the chassis' guard drops every Geneve packet outside IPsec",
                        "make that tunnel GRE or VXLAN (type = \"gre\" or \"vxlan\"), or keep the host out of OVN with IPsec"))
                } else {
                    None
                }
            })
        });
        if let Some((pki, g, what, why, hint)) = conflict {
            diags.push(
                Diagnostic::error(
                    at(r.host.span()),
                    format!(
                        "host {host_name} would be an OVN chassis with IPsec certificates ({}) and has {what} to {} ({}): {why}",
                        map.span_loc(&pki.span()),
                        g.remote_ip,
                        g.loc
                    ),
                )
                .hint(hint),
            );
            continue;
        }
        if let Some(b) = host.bridges.iter().find(|b| b.name == BR_INT) {
            diags.push(
                Diagnostic::error(at(r.host.span()), format!("host {host_name} is an OVN chassis but its profile declares bridge {BR_INT} ({})", b.loc))
                    .hint(format!("{BR_INT} is OVN's integration bridge: rename the profile's bridge (a hand mesh and OVN run side by side on different bridges)")),
            );
            continue;
        }
        let taken = host.bridges.iter().any(|b| {
            b.name == iface
                || b.host_interfaces.iter().any(|i| i.name == iface)
                || b.physical_interfaces.contains(&iface)
                || b.gre.iter().any(|g| g.port == iface)
        });
        if taken || iface == BR_INT {
            diags.push(
                Diagnostic::error(at(iface_span), format!("interface {iface} of chassis {host_name} is already a name on that host ({})", host.loc.file))
                    .hint("give the OVN attachment its own name with interface = \"…\""),
            );
            continue;
        }
        let address = match Ipv4Cidr::parse(r.address.get_ref()) {
            Ok(a) if a.network() == *subnet && a.is_host_address() => a,
            Ok(a) => {
                diags.push(
                    Diagnostic::error(at(r.address.span()), format!("address {a} of chassis {host_name} is not a host address of subnet {subnet} of logical switch {}", r.switch.get_ref()))
                        .hint(format!("pick an address inside {subnet} with prefix length /{}, not its network or broadcast address", subnet.prefix)),
                );
                continue;
            }
            Err(e) => {
                diags.push(
                    Diagnostic::error(
                        at(r.address.span()),
                        format!("address of chassis {host_name}: {e}"),
                    )
                    .hint("write it as a.b.c.d/len, e.g. 10.30.0.11/24"),
                );
                continue;
            }
        };
        if let Some((other, first)) =
            by_address.insert(address.addr, (host_name.clone(), loc.clone()))
        {
            diags.push(
                Diagnostic::error(
                    at(r.address.span()),
                    format!(
                        "address {} of chassis {host_name} is also chassis {other}'s ({first})",
                        address.addr
                    ),
                )
                .hint("every attachment on a logical switch needs its own address"),
            );
            continue;
        }
        let uplink = match (network, &r.uplink) {
            (None, None) => None,
            (Some(net), None) => {
                diags.push(
                    Diagnostic::error(
                        Some(loc.clone()),
                        format!(
                            "chassis {host_name} is on logical switch {}, which is bridged to physical network {net:?}: OVN sends that switch's traffic between chassis over the physical network, and {host_name} has no bridge on it",
                            r.switch.get_ref()
                        ),
                    )
                    .hint("add uplink = \"BRIDGE\" naming the host's bridge that holds its NIC on that network (declared in its profile)"),
                );
                continue;
            }
            (None, Some(u)) => {
                diags.push(
                    Diagnostic::error(
                        at(u.span()),
                        format!(
                            "chassis {host_name} has uplink {:?}, but logical switch {} is bridged to no physical network",
                            u.get_ref(),
                            r.switch.get_ref()
                        ),
                    )
                    .hint(format!(
                        "add network = \"NAME\" to the [[ovn.switches]] named {}, or remove uplink",
                        r.switch.get_ref()
                    )),
                );
                continue;
            }
            (Some(net), Some(u)) => {
                let Some(b) = host.bridges.iter().find(|b| &b.name == u.get_ref()) else {
                    let names: Vec<&str> = host.bridges.iter().map(|b| b.name.as_str()).collect();
                    diags.push(
                        Diagnostic::error(
                            at(u.span()),
                            format!(
                                "uplink {:?} of chassis {host_name} is not a bridge of its profile ({})",
                                u.get_ref(),
                                host.loc.file
                            ),
                        )
                        .hint(did_you_mean(
                            u.get_ref(),
                            &names,
                            "declare the bridge in the host's profile, with its NIC on the physical network in physical_interfaces",
                        )),
                    );
                    continue;
                };
                // A tunnel on the uplink would join the physical network to the hand mesh,
                // and OVN's localnet port joins both to the logical switch: frames could go
                // round.
                if let Some(g) = b.gre.first() {
                    diags.push(
                        Diagnostic::error(
                            at(u.span()),
                            format!(
                                "uplink {} of chassis {host_name} carries a tunnel to {} ({}): bridged into logical switch {} as well, frames could come back over the mesh",
                                b.name,
                                g.remote_ip,
                                g.loc,
                                r.switch.get_ref()
                            ),
                        )
                        .hint("bridge the uplink NIC on a bridge of its own, without tunnels"),
                    );
                    continue;
                }
                // ovn-controller joins the uplink to br-int with a pair of patch ports, which
                // Open vSwitch connects only between bridges of one datapath type.
                if b.datapath != datapath {
                    diags.push(
                        Diagnostic::error(
                            at(u.span()),
                            format!(
                                "uplink {} of chassis {host_name} has datapath {} ({}) but {BR_INT} has {}: Open vSwitch's patch ports join bridges of one datapath type only",
                                b.name,
                                b.datapath.as_ovs(),
                                b.loc,
                                datapath.as_ovs()
                            ),
                        )
                        .hint(format!(
                            "give the bridge datapath = \"{}\", or [ovn] datapath = \"{}\"",
                            datapath.as_ovs(),
                            b.datapath.as_ovs()
                        )),
                    );
                    continue;
                }
                Some((net.clone(), b.name.clone()))
            }
        };
        planned.push(Planned {
            host: h,
            system_id,
            switch: r.switch.get_ref().clone(),
            iface,
            address,
            uplink,
            loc,
        });
    }
    if diags.len() > before {
        return;
    }
    let Some(central) = central else { return };
    let remote = remote("tcp", hosts[central].underlay_ip, SB_PORT);
    let mut northbound: Vec<LogicalSwitch> = switches
        .iter()
        .map(|(name, (subnet, _, network))| LogicalSwitch {
            name: name.clone(),
            subnet: subnet.to_string(),
            ports: network
                .iter()
                .map(|net| LogicalPort {
                    name: bundle::ovn::localnet_port_name(name),
                    address: bundle::ovn::LOCALNET_ADDRESS.into(),
                    network: Some(net.clone()),
                })
                .collect(),
        })
        .collect();
    // A chassis' port name a localnet port has (a host named `ln-SWITCH`).
    for p in &planned {
        let port = port_name(&hosts[p.host].name);
        if let Some(ls) = northbound
            .iter()
            .find(|ls| ls.ports.iter().any(|lp| lp.name == port))
        {
            diags.push(
                Diagnostic::error(
                    Some(p.loc.clone()),
                    format!(
                        "chassis {}'s logical port {port:?} is also the name of logical switch {}'s localnet port",
                        hosts[p.host].name, ls.name
                    ),
                )
                .hint("rename the host or the switch"),
            );
        }
    }
    if diags.len() > before {
        return;
    }
    for p in planned {
        let host = &mut hosts[p.host];
        let port = port_name(&host.name);
        let mac = port_mac(&port);
        let ls = northbound
            .iter_mut()
            .find(|s| s.name == p.switch)
            .expect("checked above");
        ls.ports.push(LogicalPort {
            name: port.clone(),
            address: format!("{mac} {}", p.address.addr),
            network: None,
        });
        host.ovn.chassis = BTreeMap::from([
            ("hostname".into(), host.name.clone()),
            ("ovn-encap-ip".into(), host.underlay_ip.to_string()),
            ("ovn-encap-type".into(), "geneve".into()),
            ("ovn-remote".into(), remote.clone()),
            ("system-id".into(), p.system_id.clone()),
        ]);
        if let Some((net, bridge)) = &p.uplink {
            host.ovn.chassis.insert(
                "ovn-bridge-mappings".into(),
                bundle::ovn::bridge_mappings(&[(net, bridge)]),
            );
        }
        if let Some((pki, _)) = &ipsec {
            let key = pki
                .join(ovn_pki::CHASSIS_DIR)
                .join(format!("{}.key", p.system_id));
            if !key.exists() {
                diags.push(Diagnostic::note(
                    Some(p.loc.clone()),
                    format!(
                        "chassis {} has no OVN IPsec key yet: `builder build` makes {} (back up the PKI directory after)",
                        host.name,
                        key.display()
                    ),
                ));
            }
        }
        host.ovn_ipsec = ipsec.as_ref().map(|(pki, not_after)| OvnIpsec {
            pki: pki.clone(),
            not_after: *not_after,
            system_id: p.system_id,
        });
        host.bridges.push(Bridge {
            name: BR_INT.into(),
            loc: p.loc.clone(),
            datapath,
            rstp: false,
            host_interfaces: vec![HostInterface {
                name: p.iface,
                address: Some(p.address),
                address6: None,
                loc: p.loc,
                ovn: Some(OvnAttachment {
                    iface_id: port,
                    mac,
                }),
            }],
            physical_interfaces: Vec::new(),
            gre: Vec::new(),
            forwarder: None,
            dhcp: None,
            ovn_switch: Some(p.switch),
            ovn_uplink: p.uplink.map(|(_, bridge)| bridge),
        });
    }
    for ls in &mut northbound {
        ls.ports.sort_by(|a, b| a.name.cmp(&b.name));
    }
    hosts[central].ovn.northbound = northbound;
    hosts[central].ovn.northbound_ipsec = ipsec.is_some();
}

/// `ipsec_pki` and `ipsec_expiry`: the PKI directory, opened once here so that a missing or
/// exposed CA key is reported with the profiles' other problems, and the expiry.
fn ipsec_pki(
    dir: &std::path::Path,
    o: &RawOvn,
    at: &dyn Fn(std::ops::Range<usize>) -> Option<Loc>,
    diags: &mut Vec<Diagnostic>,
) -> Option<(PathBuf, u64)> {
    let Some(pki) = &o.ipsec_pki else {
        if let Some(e) = &o.ipsec_expiry {
            diags.push(
                Diagnostic::error(at(e.span()), "ipsec_expiry is set but ipsec_pki is not")
                    .hint("set ipsec_pki = \"DIR\" (made by `builder ovn-ca --pki DIR`) to turn IPsec on, or remove ipsec_expiry"),
            );
        }
        return None;
    };
    let not_after = match &o.ipsec_expiry {
        None => ovn_pki::NO_EXPIRY,
        Some(e) => match ovn_pki::parse_expiry(e.get_ref()) {
            Some(t) => t,
            None => {
                diags.push(
                    Diagnostic::error(
                        at(e.span()),
                        format!("ipsec_expiry {:?} is not a date after 2000-01-01", e.get_ref()),
                    )
                    .hint("write it as YYYY-MM-DD, e.g. \"2030-01-01\" (the certificates end with that day, UTC)"),
                );
                return None;
            }
        },
    };
    let path = dir.join(pki.get_ref());
    match ovn_pki::Pki::open(&path, not_after) {
        Ok(_) => Some((path, not_after)),
        Err(e) => {
            diags.push(
                Diagnostic::error(at(pki.span()), format!("OVN IPsec PKI: {e}")).hint(e.hint()),
            );
            None
        }
    }
}

/// `hosts` with the OVN IPsec credentials of each chassis filled in (`ovn.ipsec`), making the
/// key of a chassis that has none yet. Each PKI directory is opened once. Also returns one line
/// per key made, for the operator (the PKI directory needs backing up again).
pub fn with_credentials(hosts: &[&Host]) -> Result<(Vec<Host>, Vec<String>), ovn_pki::PkiError> {
    let mut opened: Vec<((PathBuf, u64), ovn_pki::Pki)> = Vec::new();
    let mut made = Vec::new();
    let mut out = Vec::with_capacity(hosts.len());
    for h in hosts {
        let mut h = (*h).clone();
        if let Some(i) = &h.ovn_ipsec {
            let id = (i.pki.clone(), i.not_after);
            let pki = match opened.iter().position(|(k, _)| *k == id) {
                Some(n) => &opened[n].1,
                None => {
                    let p = ovn_pki::Pki::open(&i.pki, i.not_after)?;
                    opened.push((id, p));
                    &opened[opened.len() - 1].1
                }
            };
            let (creds, new) = pki.chassis(&i.system_id)?;
            if new {
                made.push(format!(
                    "made OVN IPsec key {} for chassis {} (back up the PKI directory)",
                    pki.key_path(&i.system_id).display(),
                    h.name
                ));
            }
            h.ovn.ipsec = Some(bundle::ovn::ChassisIpsec {
                ca_cert: creds.ca_cert,
                certificate: creds.certificate,
                private_key: creds.private_key,
            });
        }
        out.push(h);
    }
    Ok((out, made))
}

fn did_you_mean(name: &str, known: &[&str], otherwise: &str) -> String {
    known
        .iter()
        .map(|k| (strsim::jaro_winkler(name, k), *k))
        .filter(|(s, _)| *s >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map_or(otherwise.to_string(), |(_, k)| {
            format!("did you mean {k:?}?")
        })
}
