//! The tunnel types ovs-bundle makes between hosts (OVS interface `type`s), the names of their
//! ports, and what the IPsec guard matches for each. Both sides use it: the builder to name and
//! guard tunnels, the applier to recognise its tunnel ports and re-derive the guard.
//!
//! Over an IPv6 underlay GRE is OVS's `ip6gre` (an L2 GRE tunnel over IPv6), while VXLAN and
//! Geneve keep their type and only take an IPv6 `remote_ip`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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

    /// The OVS interface `type` of a tunnel of this kind to `remote`: `ip6gre` for GRE to an IPv6
    /// peer (OVS's plain `gre` type is the IPv4 one in the kernel datapath), the kind's own type
    /// otherwise.
    pub fn ovs_type(self, remote: IpAddr) -> &'static str {
        match (self, remote) {
            (TunnelKind::Gre, IpAddr::V6(_)) => IP6GRE,
            _ => self.as_str(),
        }
    }

    /// The kind of an OVS interface `type` this tool makes (`ip6gre` is GRE).
    pub fn from_ovs_type(s: &str) -> Option<TunnelKind> {
        if s == IP6GRE {
            return Some(TunnelKind::Gre);
        }
        TunnelKind::parse(s)
    }

    /// Whether ovs-monitor-ipsec protects this kind of tunnel to `remote`. It configures IPsec
    /// only for interface types `gre`, `vxlan` and `geneve` (its `is_tunneling_type_supported`),
    /// with either address family for the latter two; an `ip6gre` interface with a PSK would be
    /// ignored by it and carry the traffic in plaintext.
    pub fn ipsec_supported(self, remote: IpAddr) -> bool {
        self.ovs_type(remote) != IP6GRE
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

/// The OVS interface type of GRE over IPv6.
pub const IP6GRE: &str = "ip6gre";

/// The stable OVS port name of a tunnel, derived from its type, the peer's address and its key
/// alone (so adding or removing other tunnels never renames it), at most 15 bytes.
///
/// IPv4 peers: `gre-c0000202` without a key, `gc0000202k1z` with key 71 (base 36, `k` then at
/// most 5 digits). IPv6 peers: see [`port_name_v6`].
pub fn port_name(kind: TunnelKind, remote: IpAddr, key: Option<u32>) -> String {
    match remote {
        IpAddr::V4(v4) => port_name_v4(kind, v4, key),
        IpAddr::V6(v6) => port_name_v6(kind, v6, key),
    }
}

fn port_name_v4(kind: TunnelKind, remote: Ipv4Addr, key: Option<u32>) -> String {
    let (long, short) = kind.prefix();
    match key {
        None => format!("{long}{:08x}", u32::from(remote)),
        Some(k) => format!("{short}{:08x}k{}", u32::from(remote), base36(k)),
    }
}

/// An IPv6 peer's 128 bits do not fit 15 bytes, so its name is a digest: the type letter
/// (`g`, `v`, `n`), `6`, then the first 13 hex digits (52 bits) of
/// SHA-256(`"ovs-bundle tunnel v1\0" TYPE "\0" ADDRESS "\0" KEY`), with the address in its
/// canonical (RFC 5952) text and the key in decimal (empty without one): `g6` + 13 hex digits,
/// always 15 bytes. The name is deterministic and cannot be confused with an IPv4 one (those
/// have a dash or an 8-digit hex address, never `6` then 13 digits without `k`); two tunnels of
/// one host whose names collide (about one chance in 2^52 per pair) are refused by the builder
/// like any other port-name clash. The peer itself is in the interface's `options:remote_ip`.
pub fn port_name_v6(kind: TunnelKind, remote: Ipv6Addr, key: Option<u32>) -> String {
    use sha2::Digest;
    let (_, short) = kind.prefix();
    let key = key.map(|k| k.to_string()).unwrap_or_default();
    let digest = sha2::Sha256::digest(
        format!("ovs-bundle tunnel v1\0{}\0{remote}\0{key}", kind.as_str()).as_bytes(),
    );
    let hex = crate::to_hex(&digest);
    format!("{short}6{}", &hex[..13])
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
        let ip: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(port_name(TunnelKind::Gre, ip, None), "gre-c0000202");
        assert_eq!(port_name(TunnelKind::Vxlan, ip, None), "vxl-c0000202");
        assert_eq!(port_name(TunnelKind::Geneve, ip, None), "gnv-c0000202");
        assert_eq!(port_name(TunnelKind::Gre, ip, Some(71)), "gc0000202k1z");
        assert_eq!(port_name(TunnelKind::Vxlan, ip, Some(0)), "vc0000202k0");
        let longest = port_name(
            TunnelKind::Geneve,
            Ipv4Addr::BROADCAST.into(),
            Some(MAX_KEY),
        );
        assert_eq!(longest, "nffffffffk9zldr");
        assert!(crate::names::ifname_problem(&longest).is_none());
    }

    #[test]
    fn v6_names_are_15_bytes_and_differ_by_type_key_and_peer() {
        let ip: IpAddr = "2001:db8::2".parse().unwrap();
        let names: Vec<String> = [
            (TunnelKind::Gre, None),
            (TunnelKind::Gre, Some(1)),
            (TunnelKind::Vxlan, None),
            (TunnelKind::Geneve, Some(MAX_KEY)),
        ]
        .into_iter()
        .map(|(k, key)| port_name(k, ip, key))
        .collect();
        for n in &names {
            assert_eq!(n.len(), 15, "{n}");
            assert!(crate::names::ifname_problem(n).is_none(), "{n}");
        }
        assert!(names[0].starts_with("g6") && names[2].starts_with("v6"));
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len());
        // The same address written otherwise is the same peer, so the same port.
        let long: IpAddr = "2001:0db8:0:0:0:0:0:2".parse().unwrap();
        assert_eq!(port_name(TunnelKind::Gre, long, None), names[0]);
        let other: IpAddr = "2001:db8::3".parse().unwrap();
        assert_ne!(port_name(TunnelKind::Gre, other, None), names[0]);
    }

    #[test]
    fn gre_over_v6_is_ip6gre_and_has_no_ipsec() {
        let v6: IpAddr = "2001:db8::2".parse().unwrap();
        let v4: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(TunnelKind::Gre.ovs_type(v6), "ip6gre");
        assert_eq!(TunnelKind::Gre.ovs_type(v4), "gre");
        assert_eq!(TunnelKind::Vxlan.ovs_type(v6), "vxlan");
        assert_eq!(TunnelKind::from_ovs_type("ip6gre"), Some(TunnelKind::Gre));
        assert!(!TunnelKind::Gre.ipsec_supported(v6));
        assert!(TunnelKind::Gre.ipsec_supported(v4));
        assert!(TunnelKind::Geneve.ipsec_supported(v6));
    }

    #[test]
    fn kinds_round_trip() {
        for k in TunnelKind::ALL {
            assert_eq!(TunnelKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(TunnelKind::parse("ipsec_gre"), None);
    }
}
