//! Validation of one host profile: every rule a host must satisfy on its own (names, addresses,
//! ports unique on the host, PSKs, forwarders, the verbatim interfaces file), each problem
//! reported with its place and a hint, all of them collected rather than stopping at the first.
//!
//! Over 500 lines: every per-host rule in one pass, so that all problems are reported at once.

use super::raw::{RawBridge, RawForwarder, RawGre, RawHostInterface, RawProfile};
use crate::diag::{Diagnostic, Loc, SourceMap};
use crate::model::{Bridge, Datapath, Forwarder, Gre, Host, HostInterface, VerbatimFile};
use crate::net::{ifname_problem, Ipv4Cidr, Ipv6Cidr};
use crate::psk;
use bundle::psk::Psk;
use bundle::tunnel::TunnelKind;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use toml::Spanned;

/// Validates `raw`, read from `path` (`rel` relative to the profiles directory), adding every
/// problem to `diags`. The host is returned even when problems were found, if it could be built
/// at all; the caller decides by whether `diags` grew.
pub(super) fn host(
    raw: &RawProfile,
    map: &SourceMap,
    path: &Path,
    rel: &str,
    diags: &mut Vec<Diagnostic>,
) -> Option<Host> {
    let base = path.parent().unwrap_or(Path::new("."));
    let mut v = Validator {
        map,
        base,
        diags,
        ports: BTreeMap::new(),
        host_side: BTreeMap::new(),
    };
    v.host(raw, path, rel)
}

struct Validator<'a> {
    map: &'a SourceMap,
    base: &'a Path,
    diags: &'a mut Vec<Diagnostic>,
    /// Every port name on the host (bridge local ports included), where it was first named, and
    /// as what.
    ports: BTreeMap<String, (Loc, String)>,
    /// Names that are an interface of the host itself (a bridge's own port, a host interface),
    /// with their bridge: a forwarder may NAT out of another bridge's (`via = "br-phy"`).
    host_side: BTreeMap<String, String>,
}

impl Validator<'_> {
    fn at<T>(&self, s: &Spanned<T>) -> Option<Loc> {
        self.map.span(&s.span())
    }

    fn err(&mut self, loc: Option<Loc>, msg: impl Into<String>, hint: impl Into<String>) {
        self.diags.push(Diagnostic::error(loc, msg).hint(hint));
    }

    fn host(&mut self, raw: &RawProfile, path: &Path, rel: &str) -> Option<Host> {
        let name = raw.host.name.get_ref();
        let name_loc = self.at(&raw.host.name);
        if let Some(problem) = hostname_problem(name) {
            self.err(
                name_loc.clone(),
                format!("host name {name:?} {problem}"),
                "use a DNS label: letters, digits and '-', at most 63 bytes",
            );
        }
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
        if stem.as_deref() != Some(name.as_str()) {
            self.err(
                name_loc.clone(),
                format!(
                    "host name {name:?} differs from the file name {:?}",
                    path.file_name().unwrap_or_default()
                ),
                format!("name the file hosts/{name}.toml, so each host has exactly one profile"),
            );
        }
        // Missing: the shape check has said so; the rest of the host is still validated.
        let underlay = raw
            .host
            .underlay_ip
            .as_ref()
            .and_then(|u| self.ip(u, "underlay_ip"));
        let interfaces_file = raw.host.interfaces_file.as_ref().and_then(|f| {
            let bytes = self.read_file(f, "interfaces_file")?;
            match String::from_utf8(bytes) {
                Ok(text) => Some((f, text)),
                Err(_) => {
                    self.err(
                        self.at(f),
                        format!("interfaces_file {:?} is not UTF-8 text", f.get_ref()),
                        "point it at an /etc/network/interfaces file",
                    );
                    None
                }
            }
        });
        let mut bridges = Vec::new();
        for rb in &raw.bridges {
            bridges.push(self.bridge(rb, underlay));
        }
        let interfaces_file = interfaces_file.map(|(f, text)| {
            self.verbatim_conflicts(f, &text, &bridges);
            VerbatimFile {
                rel_path: f.get_ref().clone(),
                text,
            }
        });
        Some(Host {
            name: name.clone(),
            underlay_ip: underlay?,
            profile_rel: rel.to_string(),
            loc: name_loc.unwrap_or_else(|| self.map.line(1)),
            interfaces_file,
            bridges,
            ovn: Default::default(),
            ovn_ipsec: None,
        })
    }

    fn bridge(&mut self, rb: &RawBridge, underlay: Option<IpAddr>) -> Bridge {
        let name = rb.name.get_ref().clone();
        self.port_name(&rb.name, "", "bridge");
        self.host_side.insert(name.clone(), name.clone());
        let datapath = match rb.datapath.as_ref().map(|d| d.get_ref().as_str()) {
            None | Some("system") => Datapath::System,
            Some("netdev") => Datapath::Netdev,
            Some(other) => {
                let loc = rb.datapath.as_ref().and_then(|d| self.at(d));
                self.err(
                    loc,
                    format!("datapath {other:?} is not known"),
                    "use \"system\" (kernel, the default) or \"netdev\" (userspace)",
                );
                Datapath::System
            }
        };
        let mut host_interfaces = Vec::new();
        for hi in &rb.host_interfaces {
            let (ifname, address, address6) = match hi.get_ref() {
                RawHostInterface::Name(n) => (n.clone(), None, None),
                RawHostInterface::Table(t) => {
                    (t.name.clone(), t.address.clone(), t.address6.clone())
                }
            };
            let loc = self.at(hi);
            self.port_name_at(
                &ifname,
                loc.clone(),
                &format!("bridge {name}"),
                "host interface",
            );
            self.host_side.insert(ifname.clone(), name.clone());
            let address6 = address6.and_then(|a| self.address6(&a, &ifname, loc.clone()));
            let address = address.and_then(|a| match Ipv4Cidr::parse(&a) {
                Ok(c) if c.is_host_address() => Some(c),
                Err(_) if Ipv6Cidr::parse(&a).is_ok() => {
                    self.err(
                        loc.clone(),
                        format!("address {a} of {ifname} is an IPv6 address"),
                        format!("`address` is the IPv4 one; write address6 = \"{a}\""),
                    );
                    None
                }
                Ok(c) => {
                    self.err(
                        loc.clone(),
                        format!("address {c} of {ifname} is the network or broadcast address"),
                        "give the interface a host address, e.g. 10.20.20.1/24",
                    );
                    None
                }
                Err(e) => {
                    self.err(
                        loc.clone(),
                        format!("address of {ifname}: {e}"),
                        "write it as a.b.c.d/len, e.g. 10.20.20.1/24",
                    );
                    None
                }
            });
            host_interfaces.push(HostInterface {
                name: ifname,
                address,
                address6,
                loc: loc.unwrap_or_else(|| self.map.line(1)),
                ovn: None,
            });
        }
        let mut physical_interfaces = Vec::new();
        for pi in &rb.physical_interfaces {
            self.port_name(pi, &format!("bridge {name}"), "physical interface");
            physical_interfaces.push(pi.get_ref().clone());
        }
        let mut gre: Vec<Gre> = Vec::new();
        for rg in &rb.gre {
            let loc = self.at(rg);
            let psk = self.psk(rg.get_ref());
            // Missing: the shape check has said so (or suggested it for a misspelt key).
            let Some(raw_remote) = rg.get_ref().remote_ip.as_ref() else {
                continue;
            };
            let Some(remote_ip) = self.ip(raw_remote, "remote_ip") else {
                continue;
            };
            let remote_loc = self.at(raw_remote);
            if let Some(u) = underlay.filter(|u| u.is_ipv4() != remote_ip.is_ipv4()) {
                self.err(
                    remote_loc.clone(),
                    format!(
                        "tunnel remote_ip {remote_ip} is {}, but this host's underlay_ip {u} is {}",
                        family_name(remote_ip),
                        family_name(u)
                    ),
                    "a tunnel's two ends are of one address family: give the peer's address of the underlay's family, or change underlay_ip",
                );
                continue;
            }
            if Some(remote_ip) == underlay {
                self.err(
                    remote_loc.clone(),
                    format!("tunnel remote_ip {remote_ip} is this host's own underlay_ip"),
                    "a tunnel must lead to another host; remove this [[bridges.gre]] entry",
                );
                continue;
            }
            let Some((kind, key)) = self.tunnel_type(rg.get_ref()) else {
                continue;
            };
            if psk.is_some() && !kind.ipsec_supported(remote_ip) {
                self.err(
                    loc.clone(),
                    format!(
                        "GRE to the IPv6 peer {remote_ip} (OVS type {}) with a PSK: ovs-monitor-ipsec does not protect that type, so the tunnel would carry its traffic in plaintext",
                        kind.ovs_type(remote_ip)
                    ),
                    "use type = \"vxlan\" or \"geneve\" (IPsec over IPv6 is supported for both), or drop the psk",
                );
                continue;
            }
            let port = bundle::tunnel::port_name(kind, remote_ip, key);
            let key_text = key.map(|k| format!(" with key {k}")).unwrap_or_default();
            let kind_up = kind.as_str().to_uppercase();
            if let Some((first, first_what)) = self.ports.get(&port) {
                if *first_what == format!("tunnel port {port:?} on bridge {name}") {
                    let msg = format!(
                        "bridge {name} has two {kind_up} tunnels to {remote_ip}{key_text} (first at {first})"
                    );
                    self.err(
                        remote_loc,
                        msg,
                        "remove the duplicate [[bridges.gre]] entry",
                    );
                    continue;
                }
                if first_what.starts_with("tunnel port") {
                    let msg = format!(
                        "{kind_up} tunnel to {remote_ip}{key_text} from bridge {name}, and from another bridge at {first}"
                    );
                    self.err(loc, msg, "OVS cannot tell two tunnels of one type to one peer apart without keys: give each a different `key` (the same on both hosts' ends), or connect the peer from one bridge");
                    continue;
                }
            }
            self.port_name_at(&port, loc.clone(), &format!("bridge {name}"), "tunnel port");
            gre.push(Gre {
                port,
                remote_ip,
                kind,
                key,
                psk,
                loc: loc.unwrap_or_else(|| self.map.line(1)),
                protected: false,
                external: rg.get_ref().external.unwrap_or(false),
            });
        }
        let forwarder = rb
            .forwarder
            .as_ref()
            .and_then(|f| self.forwarder(f, &name, &host_interfaces, &physical_interfaces));
        let dhcp = rb
            .dhcp
            .as_ref()
            .and_then(|d| super::dhcp::dhcp(d, &name, &host_interfaces, self.map, self.diags));
        Bridge {
            loc: self.at(&rb.name).unwrap_or_else(|| self.map.line(1)),
            name,
            datapath,
            rstp: rb.rstp.unwrap_or(false),
            host_interfaces,
            physical_interfaces,
            gre,
            forwarder,
            dhcp,
            ovn_switch: None,
            ovn_uplink: None,
        }
    }

    /// A tunnel's `type` and `key`, checked.
    fn tunnel_type(&mut self, rg: &RawGre) -> Option<(TunnelKind, Option<u32>)> {
        match super::tunnel_type(rg.kind.as_ref(), rg.key.as_ref()) {
            Ok(t) => Some(t),
            Err((span, msg, hint)) => {
                self.err(self.map.span(&span), msg, hint);
                None
            }
        }
    }

    fn psk(&mut self, rg: &RawGre) -> Option<Psk> {
        let (loc, checked) = match (&rg.psk, &rg.psk_file) {
            (None, None) => return None,
            (Some(a), Some(b)) => {
                self.err(
                    self.at(b),
                    "both psk and psk_file are set",
                    format!("keep one of them (psk is at {})", self.at(a)?),
                );
                return None;
            }
            (Some(p), None) => (self.at(p), psk::check(p.get_ref().clone(), "psk")),
            (None, Some(f)) => {
                let bytes = self.read_file(f, "psk_file")?;
                let what = format!("PSK in {:?}", f.get_ref());
                (self.at(f), psk::from_file(bytes, &what))
            }
        };
        match checked {
            Ok(psk) => Some(psk),
            Err(e) => {
                self.err(loc, e.message, e.hint);
                None
            }
        }
    }

    fn forwarder(
        &mut self,
        f: &Spanned<RawForwarder>,
        bridge: &str,
        host_ifs: &[HostInterface],
        phys: &[String],
    ) -> Option<Forwarder> {
        let raw = f.get_ref();
        let from = raw.from.get_ref();
        let via = raw.via.get_ref();
        let from_if = host_ifs.iter().find(|h| &h.name == from);
        if let Some(p) = ifname_problem(from) {
            self.err(
                self.at(&raw.from),
                format!("forwarder from {from:?} {p}"),
                IFNAME_HINT,
            );
        } else if from_if.is_none() && !phys.contains(from) {
            self.err(
                self.at(&raw.from),
                format!("forwarder from {from:?} is not an interface of bridge {bridge}"),
                "name one of the bridge's host_interfaces or physical_interfaces",
            );
        }
        if let Some(p) = ifname_problem(via) {
            self.err(
                self.at(&raw.via),
                format!("forwarder via {via:?} {p}"),
                "name the uplink device, e.g. eth0",
            );
        } else if via == from {
            self.err(
                self.at(&raw.via),
                "forwarder via is the same interface as from",
                "via is the uplink the traffic leaves by, e.g. eth0",
            );
        } else if let Some((first, owner)) = self.ports.get(via) {
            // Another bridge's own interface (the bridge holding the uplink NIC, as on userspace
            // datapath hosts) is a host interface like eth0; a port of this bridge, a NIC
            // enslaved to OVS or a tunnel is not.
            let other_bridges = self.host_side.get(via).is_some_and(|b| b != bridge);
            if !other_bridges {
                let msg = format!("forwarder via {via:?} is {owner} at {first}");
                self.err(
                    self.at(&raw.via),
                    msg,
                    "via is the uplink: a device outside OVS (eth0) or another bridge's own interface",
                );
            }
        }
        // Either family or both; neither is a forwarder of nothing.
        if raw.source.is_none() && raw.source6.is_none() {
            self.err(
                self.at(f),
                "forwarder has neither source nor source6",
                "name the network behind `from`: source = \"10.20.20.0/24\" (IPv4), source6 = \"fd20::/64\" (IPv6), or both",
            );
            return None;
        }
        let source = match raw
            .source
            .as_ref()
            .map(|s| (s, Ipv4Cidr::parse(s.get_ref())))
        {
            None => None,
            Some((_, Ok(c))) if c.is_network() => Some(c),
            Some((s, Ok(c))) => {
                self.err(
                    self.at(s),
                    format!("forwarder source {c} has host bits set"),
                    format!("did you mean {}?", c.network()),
                );
                return None;
            }
            Some((s, Err(e))) => {
                self.err(
                    self.at(s),
                    format!("forwarder source: {e}"),
                    "write it as 10.20.20.0/24 or 10.20.20.0/255.255.255.0",
                );
                return None;
            }
        };
        if let (Some(source), Some(addr), Some(s)) =
            (source, from_if.and_then(|h| h.address), raw.source.as_ref())
        {
            if !source.contains(addr.addr) {
                self.err(
                    self.at(s),
                    format!("forwarder source {source} does not contain {from}'s address {addr}"),
                    "the source network should be the network behind the from interface",
                );
            }
        }
        let source6 = raw.source6.as_ref().and_then(|s6| {
            let loc = self.at(s6);
            match Ipv6Cidr::parse(s6.get_ref()) {
                Ok(c) if c.source_problem().is_some() => {
                    self.err(
                        loc,
                        format!(
                            "forwarder source6 {c} {}",
                            c.source_problem().unwrap_or_default()
                        ),
                        "write the IPv6 network behind the from interface, e.g. fd20::/64",
                    );
                    None
                }
                Ok(c) if c.is_network() => {
                    if let Some(addr) = from_if.and_then(|h| h.address6) {
                        if !c.contains(addr.addr) {
                            self.err(
                                loc,
                                format!("forwarder source6 {c} does not contain {from}'s address6 {addr}"),
                                "the source network should be the network behind the from interface",
                            );
                        }
                    }
                    Some(c)
                }
                Ok(c) => {
                    self.err(
                        loc,
                        format!("forwarder source6 {c} has host bits set"),
                        format!("did you mean {}?", c.network()),
                    );
                    None
                }
                Err(e) => {
                    self.err(
                        loc,
                        format!("forwarder source6: {e}"),
                        "write it as an IPv6 network, e.g. fd20::/64",
                    );
                    None
                }
            }
        });
        Some(Forwarder {
            from: from.clone(),
            via: via.clone(),
            source,
            source6,
            loc: self.at(f).unwrap_or_else(|| self.map.line(1)),
        })
    }

    /// A verbatim interfaces file must not define what the profile generates: the result would
    /// have two stanzas for one interface.
    fn verbatim_conflicts(&mut self, f: &Spanned<String>, text: &str, bridges: &[Bridge]) {
        let file = self.base.join(f.get_ref());
        let map = SourceMap::new(file.display().to_string(), text);
        let generated: Vec<&str> = bridges
            .iter()
            .flat_map(|b| &b.host_interfaces)
            .filter(|h| h.address.is_some() || h.address6.is_some())
            .map(|h| h.name.as_str())
            .collect();
        for (name, line) in bundle::interfaces::defined(text) {
            if !generated.contains(&name.as_str()) {
                continue;
            }
            let profile_loc = self.at(f);
            self.diags.push(
                Diagnostic::error(
                    Some(map.line(line)),
                    format!(
                        "interfaces file defines {name}, whose stanza the profile also generates from its address (interfaces_file named at {})",
                        profile_loc.map(|l| l.to_string()).unwrap_or_default()
                    ),
                )
                .hint("keep one: remove the address from host_interfaces, or the stanza from the file"),
            );
        }
    }

    /// An underlay address: IPv4 or IPv6, one the host can be reached at (not unspecified,
    /// loopback or multicast).
    fn ip(&mut self, s: &Spanned<String>, key: &str) -> Option<IpAddr> {
        match s.get_ref().parse::<IpAddr>() {
            Ok(ip) if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() => {
                self.err(
                    self.at(s),
                    format!("{key} {ip} is an unspecified, loopback or multicast address"),
                    "give the unicast address peers reach the host at",
                );
                None
            }
            // A link-local peer needs an interface (a zone) OVS has no option for; an
            // IPv4-mapped (or -compatible, ::/96) one is an IPv4 peer in disguise, of the other family
            // than it looks.
            Ok(IpAddr::V6(v6)) if v6.is_unicast_link_local() || v6.to_ipv4().is_some() => {
                self.err(
                    self.at(s),
                    format!(
                        "{key} {v6} is a link-local, IPv4-mapped or IPv4-compatible IPv6 address"
                    ),
                    "give a global or unique-local (fc00::/7) address, or the IPv4 address itself",
                );
                None
            }
            Ok(ip) => Some(ip),
            Err(_) => {
                self.err(
                    self.at(s),
                    format!("{key} {:?} is not an IPv4 or IPv6 address", s.get_ref()),
                    "write a dotted quad such as 192.0.2.1, or an IPv6 address such as 2001:db8::1",
                );
                None
            }
        }
    }

    /// A host interface's `address6`, checked as `address` is.
    fn address6(&mut self, a: &str, ifname: &str, loc: Option<Loc>) -> Option<Ipv6Cidr> {
        match Ipv6Cidr::parse(a) {
            Ok(c) => match c.host_address_problem() {
                None => Some(c),
                Some(p) => {
                    self.err(
                        loc,
                        format!("address6 {c} of {ifname} {p}"),
                        "give the interface a host address, e.g. fd20::1/64",
                    );
                    None
                }
            },
            Err(e) => {
                self.err(
                    loc,
                    format!("address6 of {ifname}: {e}"),
                    "write it as an IPv6 address with prefix length, e.g. fd20::1/64",
                );
                None
            }
        }
    }

    fn read_file(&mut self, f: &Spanned<String>, key: &str) -> Option<Vec<u8>> {
        let path = self.base.join(f.get_ref());
        match std::fs::read(&path) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                self.err(
                    self.at(f),
                    format!("{key} {}: {e}", path.display()),
                    "paths are relative to the profile that names them",
                );
                None
            }
        }
    }

    fn port_name(&mut self, s: &Spanned<String>, owner: &str, what: &str) {
        let loc = self.at(s);
        self.port_name_at(s.get_ref(), loc, owner, what);
    }

    fn port_name_at(&mut self, name: &str, loc: Option<Loc>, owner: &str, what: &str) {
        if let Some(problem) = ifname_problem(name) {
            self.err(loc, format!("{what} name {name:?} {problem}"), IFNAME_HINT);
            return;
        }
        let here = loc.clone().unwrap_or_else(|| self.map.line(1));
        let this = if owner.is_empty() {
            format!("{what} {name:?}")
        } else {
            format!("{what} {name:?} on {owner}")
        };
        if let Some((first, first_this)) = self.ports.get(name) {
            let msg = format!("{this} clashes with {first_this} at {first}");
            let hint =
                "a port or bridge name can appear once per host (a bridge's name is its own port)";
            self.err(loc, msg, hint);
            return;
        }
        self.ports.insert(name.to_string(), (here, this));
    }
}

fn family_name(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    }
}

/// What every refused interface name is told.
const IFNAME_HINT: &str = "interface names are Linux device names: 1 to 15 letters, digits, '-', '_' or '.', not starting with '-'";

fn hostname_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() || name.len() > 63 {
        return Some("must be 1 to 63 bytes");
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Some("must not start or end with '-'");
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Some("contains characters other than letters, digits and '-'");
    }
    None
}
