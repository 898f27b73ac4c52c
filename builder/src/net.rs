//! Small address types the profiles need: IPv4 networks in either of the forms our users write
//! (`10.20.20.0/24`, or the original tool's `10.20.20.0/255.255.255.0`), and interface names as
//! Linux accepts them.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// An IPv4 address with a prefix length: a host address on a network (`10.20.20.1/24`) or a network
/// itself (`10.20.20.0/24`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Cidr {
    /// Parses `a.b.c.d/len` or `a.b.c.d/m.m.m.m` (a contiguous netmask).
    pub fn parse(s: &str) -> Result<Self, String> {
        let (addr, len) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} has no prefix length (write it as a.b.c.d/len)"))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an IPv4 address"))?;
        let prefix = if let Ok(len) = len.parse::<u8>() {
            if len > 32 {
                return Err(format!("prefix length {len} is over 32"));
            }
            len
        } else {
            let mask: Ipv4Addr = len
                .parse()
                .map_err(|_| format!("{len:?} is neither a prefix length nor a netmask"))?;
            let bits = u32::from(mask);
            let ones = bits.leading_ones();
            if bits.checked_shl(ones).unwrap_or(0) != 0 {
                return Err(format!("netmask {mask} is not contiguous"));
            }
            ones as u8
        };
        Ok(Ipv4Cidr { addr, prefix })
    }

    pub fn mask(&self) -> u32 {
        u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0)
    }

    pub fn network(&self) -> Ipv4Cidr {
        Ipv4Cidr {
            addr: Ipv4Addr::from(u32::from(self.addr) & self.mask()),
            prefix: self.prefix,
        }
    }

    pub fn is_network(&self) -> bool {
        self.network().addr == self.addr
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr) & self.mask()
    }

    /// Whether `addr` is usable as a host address on its network (not the network or broadcast
    /// address, where those exist).
    pub fn is_host_address(&self) -> bool {
        if self.prefix >= 31 {
            return true;
        }
        let host = u32::from(self.addr) & !self.mask();
        host != 0 && host != !self.mask()
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// An IPv6 address with a prefix length (`fd20::1/64`, or the network `fd20::/64`). Only the
/// prefix-length form exists for IPv6; it is displayed (and so rendered into interfaces(5) and
/// ip6tables rules) in canonical RFC 5952 form, whatever the profile wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv6Cidr {
    pub addr: Ipv6Addr,
    pub prefix: u8,
}

impl Ipv6Cidr {
    /// Parses `addr/len`, len 0 to 128.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (addr, len) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} has no prefix length (write it as address/len)"))?;
        let addr: Ipv6Addr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an IPv6 address"))?;
        let prefix = len
            .parse::<u8>()
            .ok()
            .filter(|l| *l <= 128)
            .ok_or_else(|| format!("{len:?} is not a prefix length of 0 to 128"))?;
        Ok(Ipv6Cidr { addr, prefix })
    }

    pub fn mask(&self) -> u128 {
        u128::MAX
            .checked_shl(128 - u32::from(self.prefix))
            .unwrap_or(0)
    }

    pub fn network(&self) -> Ipv6Cidr {
        Ipv6Cidr {
            addr: Ipv6Addr::from(u128::from(self.addr) & self.mask()),
            prefix: self.prefix,
        }
    }

    pub fn is_network(&self) -> bool {
        self.network().addr == self.addr
    }

    /// Why this network cannot be NATed as a forwarder's `source6`, if it cannot: too wide
    /// (below /8; `::/0` is also what ip6tables-save leaves out, so it would never verify),
    /// link-local, multicast or IPv4-mapped/-compatible space.
    pub fn source_problem(&self) -> Option<&'static str> {
        let a = self.addr.segments()[0];
        if self.prefix < 8 {
            Some("is wider than /8; name the private network behind the from interface")
        } else if a & 0xffc0 == 0xfe80 {
            Some("is link-local space, which is never routed")
        } else if self.addr.is_multicast() {
            Some("is multicast space")
        } else if self.addr.to_ipv4().is_some() {
            Some("is IPv4-mapped or IPv4-compatible space; an IPv4 network belongs in `source`")
        } else {
            None
        }
    }

    pub fn contains(&self, ip: Ipv6Addr) -> bool {
        u128::from(ip) & self.mask() == u128::from(self.addr) & self.mask()
    }

    /// Why `addr` cannot be an interface's own address, if it cannot: the subnet-router anycast
    /// address (all host bits zero, below /127), an unspecified, loopback, multicast,
    /// IPv4-mapped or IPv4-compatible one, or a prefix so short (below /8) that most of the
    /// address space would be on-link, the default route included.
    pub fn host_address_problem(&self) -> Option<&'static str> {
        if self.addr.is_unspecified() || self.addr.is_loopback() {
            Some("is the unspecified or loopback address")
        } else if self.addr.is_multicast() {
            Some("is a multicast address")
        } else if self.addr.to_ipv4().is_some() {
            Some("is an IPv4-mapped or IPv4-compatible address (an IPv4 address belongs in `address`)")
        } else if self.prefix < 8 {
            Some("has a prefix shorter than /8, which would put most of IPv6 on this link")
        } else if self.prefix < 127 && self.is_network() {
            Some("is the subnet-router anycast address (no host bits)")
        } else {
            None
        }
    }
}

impl fmt::Display for Ipv6Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Longest interface name Linux accepts (IFNAMSIZ - 1).
pub use bundle::names::MAX_IFNAME;

/// Why `name` cannot be a Linux interface or OVS port name, if it cannot. The decision is the
/// format's ([`bundle::names::ifname_problem`], the same rule for builder and applier); this only
/// adds the detail an operator needs to fix the profile (the length, the offending character).
pub fn ifname_problem(name: &str) -> Option<String> {
    let reason = bundle::names::ifname_problem(name)?;
    if name.len() > MAX_IFNAME {
        return Some(format!(
            "is {} bytes long; Linux allows at most {MAX_IFNAME}",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Some(format!(
            "contains {c:?}; use letters, digits, '-', '_' and '.' only"
        ));
    }
    Some(reason.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v6_networks() {
        let a = Ipv6Cidr::parse("fd20:0:0::1/64").unwrap();
        assert_eq!(a.to_string(), "fd20::1/64");
        assert_eq!(a.network().to_string(), "fd20::/64");
        assert!(a.host_address_problem().is_none());
        assert!(a.network().contains(a.addr));
        assert!(Ipv6Cidr::parse("fd20::/64")
            .unwrap()
            .host_address_problem()
            .is_some());
        assert!(Ipv6Cidr::parse("ff02::1/64")
            .unwrap()
            .host_address_problem()
            .is_some());
        assert!(Ipv6Cidr::parse("fd20::1").is_err());
        assert!(Ipv6Cidr::parse("fd20::1/129").is_err());
        assert!(Ipv6Cidr::parse("fd20::1/ffff::").is_err());
        assert!(Ipv6Cidr::parse("10.0.0.1/24").is_err());
        assert_eq!(Ipv6Cidr::parse("::/0").unwrap().mask(), 0);
    }

    #[test]
    fn both_prefix_forms_parse_to_the_same_network() {
        let a = Ipv4Cidr::parse("10.20.20.0/24").unwrap();
        let b = Ipv4Cidr::parse("10.20.20.0/255.255.255.0").unwrap();
        assert_eq!(a, b);
        assert!(a.is_network());
        assert!(a.contains("10.20.20.77".parse().unwrap()));
        assert!(!a.contains("10.20.21.1".parse().unwrap()));
    }

    #[test]
    fn bad_forms_are_refused() {
        assert!(Ipv4Cidr::parse("10.20.20.0").is_err());
        assert!(Ipv4Cidr::parse("10.20.20.0/33").is_err());
        assert!(Ipv4Cidr::parse("10.20.20.0/255.0.255.0").is_err());
        assert!(Ipv4Cidr::parse("10.20.300.0/24").is_err());
    }

    #[test]
    fn host_addresses() {
        assert!(Ipv4Cidr::parse("10.0.0.1/24").unwrap().is_host_address());
        assert!(!Ipv4Cidr::parse("10.0.0.0/24").unwrap().is_host_address());
        assert!(!Ipv4Cidr::parse("10.0.0.255/24").unwrap().is_host_address());
        assert!(Ipv4Cidr::parse("10.0.0.0/31").unwrap().is_host_address());
        assert_eq!(Ipv4Cidr::parse("0.0.0.0/0").unwrap().mask(), 0);
    }

    #[test]
    fn interface_names() {
        assert!(ifname_problem("priv0").is_none());
        assert!(ifname_problem("a23456789012345").is_none());
        assert!(ifname_problem("a234567890123456")
            .unwrap()
            .contains("16 bytes"));
        assert!(ifname_problem("eth 0").is_some());
        assert!(ifname_problem("a/b").is_some());
        assert!(ifname_problem("").is_some());
        assert!(ifname_problem("-a").unwrap().contains("starts with '-'"));
        assert!(ifname_problem("..").is_some());
        assert!(ifname_problem("eth0:1").unwrap().contains("':'"));
        assert!(ifname_problem("a=b").unwrap().contains("'='"));
    }

    /// The builder never accepts a name the format (and so the applier) refuses, nor the
    /// reverse.
    #[test]
    fn interface_names_follow_the_format_rule() {
        for name in [
            "",
            "-a",
            ".",
            "..",
            "a/b",
            "a b",
            "a\u{1}",
            "eth0:1",
            "x".repeat(16).as_str(),
            "ok0",
            "a.b",
        ] {
            assert_eq!(
                ifname_problem(name).is_some(),
                bundle::names::ifname_problem(name).is_some(),
                "{name:?}"
            );
        }
    }
}
