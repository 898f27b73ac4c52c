//! `dnsmasq.conf` in a bundle: the DHCP server of a host's private bridges, as typed values
//! ([`DhcpConfig`]) and as the one text the builder renders from them.
//!
//! The file is handed to a dnsmasq instance of its own (`--conf-file`), so every line is an
//! option dnsmasq obeys: a line smuggled in (`dhcp-script=`, `conf-dir=`, a second `interface=`)
//! would run commands or serve other networks. The values are therefore types (interface names
//! that pass [`crate::names::ifname_problem`], MAC and IPv4 addresses, DNS labels) and the
//! applier accepts only a file that [`parse`] reads back into a config which renders to exactly
//! the same bytes: anything else, even in a signed bundle, is refused.

use crate::names::ifname_problem;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// A MAC address (`52:54:00:12:34:56`), always rendered in lower case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

impl FromStr for Mac {
    type Err = String;
    fn from_str(s: &str) -> Result<Mac, String> {
        let bad =
            || format!("{s:?} is not a MAC address; write six hex pairs, e.g. 52:54:00:12:34:56");
        let parts: Vec<&str> = s.split([':', '-']).collect();
        if parts.len() != 6 {
            return Err(bad());
        }
        let mut out = [0u8; 6];
        for (o, p) in out.iter_mut().zip(&parts) {
            if p.len() != 2 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            *o = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if out[0] & 1 == 1 {
            return Err(format!(
                "{s:?} is a multicast MAC address; a client's MAC is unicast"
            ));
        }
        Ok(Mac(out))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// Why a lease's host name is refused, if it is: a DNS label (letters, digits, `-`; 1 to 63
/// bytes; not starting or ending with `-`), which dnsmasq takes as it is.
pub fn lease_name_problem(name: &str) -> Option<&'static str> {
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

/// One static lease: this MAC always gets this address (and, optionally, this host name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticLease {
    pub mac: Mac,
    pub ip: Ipv4Addr,
    pub name: Option<String>,
}

/// DHCP on one interface (a bridge's host interface).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpServer {
    pub interface: String,
    /// The interface's subnet: network address and prefix length.
    pub network: Ipv4Addr,
    pub prefix: u8,
    /// Addresses handed out to clients without a static lease; `None`: static leases only.
    pub range: Option<(Ipv4Addr, Ipv4Addr)>,
    pub lease_secs: u64,
    pub leases: Vec<StaticLease>,
}

/// Everything the host's dnsmasq instance serves.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DhcpConfig {
    /// Comment lines at the top (each without the `# `), e.g. where the file was generated from.
    pub header: Vec<String>,
    pub servers: Vec<DhcpServer>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DhcpError {
    #[error("dnsmasq.conf is not text")]
    NotText,
    #[error("dnsmasq.conf line {line}: {problem}")]
    Line { line: usize, problem: String },
    #[error("dnsmasq.conf is not in the form the builder writes ({0}); refusing it")]
    NotCanonical(String),
}

/// The options every instance has: no DNS (`port=0`), only the named interfaces (bound to them,
/// never to `lo`), and authoritative, as the only DHCP server of its networks (the builder
/// checks that). `bind-dynamic` rather than `bind-interfaces`: the latter will not start while
/// the interface has no address yet (at boot, before networking brings it up).
const GLOBAL: [&str; 4] = [
    "port=0",
    "bind-dynamic",
    "except-interface=lo",
    "dhcp-authoritative",
];

fn mask(prefix: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0))
}

impl DhcpConfig {
    /// The file's text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for line in &self.header {
            out.push_str("# ");
            out.push_str(line);
            out.push('\n');
        }
        for g in GLOBAL {
            out.push_str(g);
            out.push('\n');
        }
        for s in &self.servers {
            out.push_str(&format!("interface={}\n", s.interface));
            let m = mask(s.prefix);
            match s.range {
                Some((a, b)) => out.push_str(&format!("dhcp-range={a},{b},{m},{}\n", s.lease_secs)),
                None => out.push_str(&format!(
                    "dhcp-range={},static,{m},{}\n",
                    s.network, s.lease_secs
                )),
            }
            for l in &s.leases {
                match &l.name {
                    Some(n) => out.push_str(&format!("dhcp-host={},{},{n}\n", l.mac, l.ip)),
                    None => out.push_str(&format!("dhcp-host={},{}\n", l.mac, l.ip)),
                }
            }
        }
        out
    }

    /// The interfaces served, in order.
    pub fn interfaces(&self) -> impl Iterator<Item = &str> {
        self.servers.iter().map(|s| s.interface.as_str())
    }
}

/// Reads a bundle's `dnsmasq.conf` back into its values, refusing anything but the exact text
/// [`DhcpConfig::render`] makes of them.
pub fn parse(data: &[u8]) -> Result<DhcpConfig, DhcpError> {
    let text = std::str::from_utf8(data).map_err(|_| DhcpError::NotText)?;
    let mut cfg = DhcpConfig::default();
    let mut lines = text.split_inclusive('\n').enumerate().peekable();
    while let Some((_, l)) = lines.peek() {
        let Some(c) = l.strip_prefix("# ") else { break };
        cfg.header.push(c.trim_end_matches('\n').to_string());
        lines.next();
    }
    for (i, raw) in lines {
        let line_no = i + 1;
        let err = |problem: String| DhcpError::Line {
            line: line_no,
            problem,
        };
        let line = raw
            .strip_suffix('\n')
            .ok_or_else(|| err("the last line has no newline".into()))?;
        if GLOBAL.contains(&line) {
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| err(format!("{line:?} is not an option the builder writes")))?;
        match key {
            "interface" => {
                if let Some(p) = ifname_problem(value) {
                    return Err(err(format!("interface {value:?} {p}")));
                }
                cfg.servers.push(DhcpServer {
                    interface: value.to_string(),
                    network: Ipv4Addr::UNSPECIFIED,
                    prefix: 0,
                    range: None,
                    lease_secs: 0,
                    leases: Vec::new(),
                });
            }
            "dhcp-range" => {
                let s = cfg
                    .servers
                    .last_mut()
                    .ok_or_else(|| err("dhcp-range before any interface=".into()))?;
                let f: Vec<&str> = value.split(',').collect();
                let [a, b, m, secs] = f[..] else {
                    return Err(err(format!(
                        "dhcp-range {value:?} is not start,end,mask,secs"
                    )));
                };
                let ip = |v: &str| {
                    v.parse::<Ipv4Addr>()
                        .map_err(|_| err(format!("{v:?} is not an IPv4 address")))
                };
                let m = ip(m)?;
                let prefix = u32::from(m).leading_ones() as u8;
                if mask(prefix) != m || prefix == 0 || prefix > 30 {
                    return Err(err(format!("{m} is not a netmask of /1 to /30")));
                }
                s.prefix = prefix;
                s.lease_secs = secs
                    .parse::<u64>()
                    .map_err(|_| err(format!("lease time {secs:?} is not seconds")))?;
                let a = ip(a)?;
                s.network = Ipv4Addr::from(u32::from(a) & u32::from(m));
                if b == "static" {
                    s.range = None;
                } else {
                    s.range = Some((a, ip(b)?));
                }
            }
            "dhcp-host" => {
                let s = cfg
                    .servers
                    .last_mut()
                    .ok_or_else(|| err("dhcp-host before any interface=".into()))?;
                let f: Vec<&str> = value.split(',').collect();
                let (mac, ip, name) = match f[..] {
                    [m, i] => (m, i, None),
                    [m, i, n] => (m, i, Some(n)),
                    _ => return Err(err(format!("dhcp-host {value:?} is not mac,ip[,name]"))),
                };
                let mac = mac.parse::<Mac>().map_err(err)?;
                let ip = ip
                    .parse::<Ipv4Addr>()
                    .map_err(|_| err(format!("{ip:?} is not an IPv4 address")))?;
                if let Some(p) = name.and_then(lease_name_problem) {
                    return Err(err(format!("host name {:?} {p}", name.unwrap_or_default())));
                }
                s.leases.push(StaticLease {
                    mac,
                    ip,
                    name: name.map(str::to_string),
                });
            }
            _ => return Err(err(format!("option {key:?} is not one the builder writes"))),
        }
    }
    if let Some(s) = cfg.servers.iter().find(|s| s.prefix == 0) {
        return Err(DhcpError::NotCanonical(format!(
            "interface {} has no dhcp-range",
            s.interface
        )));
    }
    if cfg.render().as_bytes() != data {
        return Err(DhcpError::NotCanonical(
            "options missing, repeated or out of order".into(),
        ));
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> DhcpConfig {
        DhcpConfig {
            header: vec!["Generated by ovs-bundle from hosts/gw1.toml.".into()],
            servers: vec![DhcpServer {
                interface: "priv0".into(),
                network: "10.20.20.0".parse().unwrap(),
                prefix: 24,
                range: Some((
                    "10.20.20.100".parse().unwrap(),
                    "10.20.20.200".parse().unwrap(),
                )),
                lease_secs: 43200,
                leases: vec![StaticLease {
                    mac: "52:54:00:AB:cd:01".parse().unwrap(),
                    ip: "10.20.20.10".parse().unwrap(),
                    name: Some("node1".into()),
                }],
            }],
        }
    }

    #[test]
    fn renders_and_reads_back() {
        let c = sample();
        let text = c.render();
        assert_eq!(
            text,
            "# Generated by ovs-bundle from hosts/gw1.toml.\nport=0\nbind-dynamic\n\
             except-interface=lo\ndhcp-authoritative\ninterface=priv0\n\
             dhcp-range=10.20.20.100,10.20.20.200,255.255.255.0,43200\n\
             dhcp-host=52:54:00:ab:cd:01,10.20.20.10,node1\n"
        );
        assert_eq!(parse(text.as_bytes()).unwrap(), c);
        let mut st = c.clone();
        st.servers[0].range = None;
        st.servers[0].leases[0].name = None;
        assert_eq!(parse(st.render().as_bytes()).unwrap(), st);
    }

    #[test]
    fn anything_but_the_rendered_form_is_refused() {
        let good = sample().render();
        let bad = [
            good.replace("port=0\n", ""),
            good.replace("node1", "node1\ndhcp-script=/bin/sh"),
            good.replace("node1", "node1,set:x"),
            good.replace("node1", "no de"),
            good.replace("priv0", "-priv0"),
            good.replace("priv0", "priv0,lo"),
            format!("{good}conf-dir=/tmp\n"),
            format!("{good}dhcp-host=52:54:00:ab:cd:02,10.20.20.11"),
            good.replace("255.255.255.0", "255.0.255.0"),
            good.replace("52:54", "53:54"),
            good.replace("dhcp-authoritative\n", "dhcp-authoritative\nport=0\n"),
            good.replace("# Generated", "#Generated"),
        ];
        for b in bad {
            assert!(parse(b.as_bytes()).is_err(), "accepted:\n{b}");
        }
    }

    #[test]
    fn macs() {
        assert_eq!(
            "52-54-00-00-00-0A".parse::<Mac>().unwrap().to_string(),
            "52:54:00:00:00:0a"
        );
        assert!("52:54:00:00:00".parse::<Mac>().is_err());
        assert!("52:54:00:00:00:0g".parse::<Mac>().is_err());
        assert!("01:00:5e:00:00:01".parse::<Mac>().is_err());
    }
}
