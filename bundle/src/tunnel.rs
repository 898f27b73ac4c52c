//! The tunnel types ovs-bundle makes between hosts (OVS interface `type`s), the names of their
//! ports, and what the IPsec guard matches for each. Both sides use it: the builder to name and
//! guard tunnels, the applier to recognise its tunnel ports and re-derive the guard.

use std::net::Ipv4Addr;

/// The largest tunnel key (GRE key or VXLAN/Geneve VNI) a profile may give: 24 bits, the VNI's
/// range, for every type alike (port names have room for no more; see [`port_name`]).
pub const MAX_KEY: u32 = (1 << 24) - 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TunnelKind {
    Gre,
    Vxlan,
    Geneve,
}

impl TunnelKind {
    pub const ALL: [TunnelKind; 3] = [TunnelKind::Gre, TunnelKind::Vxlan, TunnelKind::Geneve];

    /// The OVS interface `type`, as profiles spell it too.
    pub fn as_str(self) -> &'static str {
        match self {
            TunnelKind::Gre => "gre",
            TunnelKind::Vxlan => "vxlan",
            TunnelKind::Geneve => "geneve",
        }
    }

    pub fn parse(s: &str) -> Option<TunnelKind> {
        TunnelKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// What its packets on the underlay are, as iptables-save prints the match: IP protocol 47,
    /// or UDP to the type's IANA port (what a firewall between hosts must let through).
    pub fn underlay_match(self) -> &'static str {
        match self {
            TunnelKind::Gre => "-p gre",
            TunnelKind::Vxlan => "-p udp -m udp --dport 4789",
            TunnelKind::Geneve => "-p udp -m udp --dport 6081",
        }
    }

    /// The IPsec guard chain of this type (see `crate::firewall::GUARD_CHAINS`).
    pub fn guard_chain(self) -> &'static str {
        match self {
            TunnelKind::Gre => "OVSB-GUARD-GRE",
            TunnelKind::Vxlan => "OVSB-GUARD-VXLAN",
            TunnelKind::Geneve => "OVSB-GUARD-GENEVE",
        }
    }

    /// Port-name prefix: three letters and a dash without a key, one letter with one.
    fn prefix(self) -> (&'static str, char) {
        match self {
            TunnelKind::Gre => ("gre-", 'g'),
            TunnelKind::Vxlan => ("vxl-", 'v'),
            TunnelKind::Geneve => ("gnv-", 'n'),
        }
    }
}

/// The stable OVS port name of a tunnel, derived from its type, the peer's address and its key
/// alone (so adding or removing other tunnels never renames it), at most 15 bytes:
/// `gre-c0000202` without a key, `gc0000202k1z` with key 71 (base 36, `k` then at most 5 digits).
pub fn port_name(kind: TunnelKind, remote: Ipv4Addr, key: Option<u32>) -> String {
    let (long, short) = kind.prefix();
    match key {
        None => format!("{long}{:08x}", u32::from(remote)),
        Some(k) => format!("{short}{:08x}k{}", u32::from(remote), base36(k)),
    }
}

fn base36(mut n: u32) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("ascii digits")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_an_interface_name_and_differ_by_type_and_key() {
        let ip: Ipv4Addr = "192.0.2.2".parse().unwrap();
        assert_eq!(port_name(TunnelKind::Gre, ip, None), "gre-c0000202");
        assert_eq!(port_name(TunnelKind::Vxlan, ip, None), "vxl-c0000202");
        assert_eq!(port_name(TunnelKind::Geneve, ip, None), "gnv-c0000202");
        assert_eq!(port_name(TunnelKind::Gre, ip, Some(71)), "gc0000202k1z");
        assert_eq!(port_name(TunnelKind::Vxlan, ip, Some(0)), "vc0000202k0");
        let longest = port_name(TunnelKind::Geneve, Ipv4Addr::BROADCAST, Some(MAX_KEY));
        assert_eq!(longest, "nffffffffk9zldr");
        assert!(crate::names::ifname_problem(&longest).is_none());
    }

    #[test]
    fn kinds_round_trip() {
        for k in TunnelKind::ALL {
            assert_eq!(TunnelKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(TunnelKind::parse("ipsec_gre"), None);
    }
}
