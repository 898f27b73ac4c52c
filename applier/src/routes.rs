//! The kernel's IPv4 routing table as `/proc/net/route` shows it: which interface a packet to an
//! address leaves by. Read by the plan (warnings about cycling the underlay) and by `applier try`
//! (the underlay must still reach every tunnel peer). [`Routes6`] is the IPv6 table
//! (`/proc/net/ipv6_route`), for `try`'s check of IPv6 peers.

use std::net::{Ipv4Addr, Ipv6Addr};

pub struct Route {
    pub iface: String,
    dest: u32,
    mask: u32,
}

impl Route {
    pub fn is_default(&self) -> bool {
        self.mask == 0
    }
}

pub struct Routes(pub Vec<Route>);

impl Routes {
    /// Parses `/proc/net/route`: interface, destination and mask (hex, in the kernel's byte
    /// order). Lines it cannot read are skipped: the table is the kernel's, not input.
    pub fn parse(text: &str) -> Routes {
        let hex = |s: &str| {
            u32::from_str_radix(s, 16)
                .ok()
                .map(|v| u32::from_be_bytes(v.to_le_bytes()))
        };
        Routes(
            text.lines()
                .skip(1)
                .filter_map(|l| {
                    let w: Vec<&str> = l.split_whitespace().collect();
                    Some(Route {
                        iface: w.first()?.to_string(),
                        dest: hex(w.get(1)?)?,
                        mask: hex(w.get(7)?)?,
                    })
                })
                .collect(),
        )
    }

    /// The interface a packet to `ip` leaves by (longest prefix), if any route covers it.
    pub fn via(&self, ip: Ipv4Addr) -> Option<&str> {
        let ip = u32::from(ip);
        self.0
            .iter()
            .filter(|r| ip & r.mask == r.dest)
            .max_by_key(|r| r.mask.count_ones())
            .map(|r| r.iface.as_str())
    }
}

/// One route of `/proc/net/ipv6_route`.
pub struct Route6 {
    pub iface: String,
    dest: u128,
    prefix: u32,
}

impl Route6 {
    pub fn is_default(&self) -> bool {
        self.prefix == 0
    }
}

/// The kernel's IPv6 routing table (main and local tables together, as the file shows them).
pub struct Routes6(pub Vec<Route6>);

/// `RTF_REJECT`: an unreachable route (the kernel lists `::/0` via `lo` with it when there is no
/// default route), which leads nowhere.
const RTF_REJECT: u32 = 0x0200;

impl Routes6 {
    /// Parses `/proc/net/ipv6_route`: per line destination (32 hex digits), prefix length (hex),
    /// source, source prefix, next hop, metric, use, refcount, flags (hex), interface. Lines it
    /// cannot read, and reject routes, are skipped.
    pub fn parse(text: &str) -> Routes6 {
        Routes6(
            text.lines()
                .filter_map(|l| {
                    let w: Vec<&str> = l.split_whitespace().collect();
                    let flags = u32::from_str_radix(w.get(8)?, 16).ok()?;
                    if flags & RTF_REJECT != 0 {
                        return None;
                    }
                    Some(Route6 {
                        dest: u128::from_str_radix(w.first()?, 16).ok()?,
                        prefix: u32::from_str_radix(w.get(1)?, 16)
                            .ok()
                            .filter(|p| *p <= 128)?,
                        iface: w.get(9)?.to_string(),
                    })
                })
                .collect(),
        )
    }

    /// The interface a packet to `ip` leaves by (longest prefix), if any route covers it.
    pub fn via(&self, ip: Ipv6Addr) -> Option<&str> {
        let ip = u128::from(ip);
        self.0
            .iter()
            .filter(|r| {
                let mask = u128::MAX.checked_shl(128 - r.prefix).unwrap_or(0);
                ip & mask == r.dest & mask
            })
            .max_by_key(|r| r.prefix)
            .map(|r| r.iface.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::{Routes, Routes6};

    #[test]
    fn v6_longest_prefix_wins_and_reject_routes_lead_nowhere() {
        let table = "fd980000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001   br-phy
            fd980000000000000000000000000002 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000002 00000000 80200001       lo
            00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo
";
        let r = Routes6::parse(table);
        assert_eq!(r.0.len(), 2);
        assert_eq!(r.via("fd98::9".parse().unwrap()), Some("br-phy"));
        assert_eq!(r.via("fd98::2".parse().unwrap()), Some("lo"));
        assert_eq!(r.via("2001:db8::1".parse().unwrap()), None);
    }

    const TABLE: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
        eth0\t00000000\t0102000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
        eth1\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";

    #[test]
    fn longest_prefix_wins() {
        let r = Routes::parse(TABLE);
        assert_eq!(r.via("192.168.0.7".parse().unwrap()), Some("eth1"));
        assert_eq!(r.via("8.8.8.8".parse().unwrap()), Some("eth0"));
        assert!(r.0[0].is_default());
    }

    #[test]
    fn no_route_is_none() {
        let r = Routes::parse(
            &TABLE
                .lines()
                .take(1)
                .chain(TABLE.lines().skip(2))
                .collect::<Vec<_>>()
                .join("\n"),
        );
        assert_eq!(r.via("8.8.8.8".parse().unwrap()), None);
        assert_eq!(r.via("192.168.0.7".parse().unwrap()), Some("eth1"));
    }
}
