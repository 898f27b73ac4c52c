//! Validation of a bridge's `[bridges.dhcp]`: which host interface dnsmasq listens on (its
//! address gives the subnet), the dynamic range inside that subnet, the lease time, and the
//! static leases of the profile. Leases from fleet.toml and the checks across hosts are
//! [`crate::fleet::dhcp`]'s.

use super::raw::RawDhcp;
use crate::diag::{Diagnostic, SourceMap};
use crate::fleet::dhcp::lease;
use crate::model::{Dhcp, HostInterface};
use std::net::Ipv4Addr;
use toml::Spanned;

/// dnsmasq refuses shorter leases (it raises them to 2 minutes); a day is its longest sensible
/// default here, an hour its own default.
const MIN_LEASE_SECS: u64 = 120;
const DEFAULT_LEASE_SECS: u64 = 3600;

pub(super) fn dhcp(
    d: &Spanned<RawDhcp>,
    bridge: &str,
    host_ifs: &[HostInterface],
    map: &SourceMap,
    diags: &mut Vec<Diagnostic>,
) -> Option<Dhcp> {
    let raw = d.get_ref();
    let loc = map.span(&d.span());
    let at = |s: &Spanned<String>| map.span(&s.span());
    let before = diags.len();
    let addressed: Vec<&HostInterface> = host_ifs.iter().filter(|h| h.address.is_some()).collect();
    let iface = match &raw.interface {
        Some(i) => {
            let found = host_ifs.iter().find(|h| &h.name == i.get_ref());
            match found {
                Some(h) if h.address.is_some() => Some(h),
                Some(_) => {
                    diags.push(
                        Diagnostic::error(at(i), format!("dhcp interface {:?} has no address", i.get_ref()))
                            .hint("give it one in host_interfaces, e.g. { name = \"priv0\", address = \"10.20.20.1/24\" }: its subnet is the one served"),
                    );
                    None
                }
                None => {
                    diags.push(
                        Diagnostic::error(
                            at(i),
                            format!(
                                "dhcp interface {:?} is not a host interface of bridge {bridge}",
                                i.get_ref()
                            ),
                        )
                        .hint("name one of the bridge's host_interfaces that has an address"),
                    );
                    None
                }
            }
        }
        None if addressed.len() == 1 => Some(addressed[0]),
        None => {
            let hint = if addressed.is_empty() {
                "give one of the bridge's host_interfaces an address (dnsmasq listens there, and serves its subnet)".to_string()
            } else {
                format!(
                    "the bridge has several addressed host interfaces: say which with interface = \"{}\"",
                    addressed[0].name
                )
            };
            diags.push(
                Diagnostic::error(
                    loc.clone(),
                    format!("[bridges.dhcp] of bridge {bridge}: no interface to serve on"),
                )
                .hint(hint),
            );
            None
        }
    };
    let address = iface.and_then(|h| h.address);
    let ip = |s: &Spanned<String>, key: &str, diags: &mut Vec<Diagnostic>| -> Option<Ipv4Addr> {
        let Ok(a) = s.get_ref().parse::<Ipv4Addr>() else {
            diags.push(
                Diagnostic::error(
                    at(s),
                    format!("{key} {:?} is not an IPv4 address", s.get_ref()),
                )
                .hint("write a dotted quad in the served subnet, e.g. 10.20.20.100"),
            );
            return None;
        };
        if let Some(net) = address {
            let host_part = u32::from(a) & !net.mask();
            if !net.contains(a) || host_part == 0 || host_part == !net.mask() {
                diags.push(
                    Diagnostic::error(
                        at(s),
                        format!(
                            "{key} {a} is not a host address of {}'s subnet {}",
                            iface.map_or("", |h| h.name.as_str()),
                            net.network()
                        ),
                    )
                    .hint("DHCP serves addresses of the subnet dnsmasq listens on"),
                );
                return None;
            } else if a == net.addr {
                diags.push(
                    Diagnostic::error(
                        at(s),
                        format!(
                            "{key} {a} is the address of {} itself",
                            iface.map_or("", |h| h.name.as_str())
                        ),
                    )
                    .hint("clients need addresses of their own"),
                );
                return None;
            }
        }
        Some(a)
    };
    let range = match (&raw.range_start, &raw.range_end) {
        (None, None) => None,
        (Some(s), Some(e)) => {
            let (a, b) = (ip(s, "range_start", diags), ip(e, "range_end", diags));
            match (a, b) {
                (Some(a), Some(b)) if a > b => {
                    diags.push(
                        Diagnostic::error(at(e), format!("range_end {b} is below range_start {a}"))
                            .hint("swap them"),
                    );
                    None
                }
                (Some(a), Some(b)) => {
                    if let Some(own) = address.map(|n| n.addr).filter(|o| (a..=b).contains(o)) {
                        diags.push(
                            Diagnostic::error(
                                at(s),
                                format!("range {a} - {b} holds the server's own address {own}"),
                            )
                            .hint(
                                "start the range above (or end it below) the interface's address",
                            ),
                        );
                    }
                    Some((a, b))
                }
                _ => None,
            }
        }
        (Some(one), None) | (None, Some(one)) => {
            diags.push(
                Diagnostic::error(at(one), "range_start and range_end go together")
                    .hint("give both, or neither for static leases only"),
            );
            None
        }
    };
    let lease_secs = match &raw.lease_time {
        None => DEFAULT_LEASE_SECS,
        Some(t) => match bundle::time::parse_duration(t.get_ref()) {
            Ok(s) if s >= MIN_LEASE_SECS => s,
            Ok(_) => {
                diags.push(
                    Diagnostic::error(
                        at(t),
                        format!("lease_time {:?} is under 2 minutes", t.get_ref()),
                    )
                    .hint("dnsmasq's shortest lease is 2m; e.g. lease_time = \"12h\""),
                );
                DEFAULT_LEASE_SECS
            }
            Err(e) => {
                diags.push(
                    Diagnostic::error(at(t), format!("lease_time: {e}"))
                        .hint("e.g. lease_time = \"12h\""),
                );
                DEFAULT_LEASE_SECS
            }
        },
    };
    let mut leases = Vec::new();
    for l in &raw.leases {
        let Some(lease) = lease(l.get_ref(), map, diags) else {
            continue;
        };
        if let Some(net) = address {
            let host_part = u32::from(lease.ip) & !net.mask();
            if !net.contains(lease.ip)
                || host_part == 0
                || host_part == !net.mask()
                || lease.ip == net.addr
            {
                diags.push(
                    Diagnostic::error(
                        Some(lease.loc.clone()),
                        format!(
                            "lease ip {} is not a free host address of the served subnet {}",
                            lease.ip,
                            net.network()
                        ),
                    )
                    .hint("lease an address of the subnet other than the interface's own"),
                );
                continue;
            }
        }
        leases.push(lease);
    }
    if diags.len() > before {
        return None;
    }
    Some(Dhcp {
        interface: iface?.name.clone(),
        address: address?,
        range,
        lease_secs,
        leases,
        loc: loc.unwrap_or_else(|| map.line(1)),
    })
}
