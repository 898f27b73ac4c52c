//! `ovn.json`: what a host's bundle says about OVN. A chassis carries the `Open_vSwitch`
//! `external_ids` keys ovn-controller reads (`system-id`, `ovn-remote`, `ovn-encap-type`,
//! `ovn-encap-ip`, `hostname`); the central host carries the northbound state (logical switches
//! and their ports) that its applier writes to the NB database. Its `br-int` and internal port
//! are ordinary rows of `ovs.json`.
//!
//! Every value here reaches OVSDB. A signed bundle is still checked ([`OvnState::from_bytes`]):
//! only the known keys, names and values of a narrow alphabet, addresses that parse.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// The `Open_vSwitch` `external_ids` keys a chassis bundle may set, and no other.
pub const CHASSIS_KEYS: [&str; 5] = [
    "hostname",
    "ovn-encap-ip",
    "ovn-encap-type",
    "ovn-remote",
    "system-id",
];

/// `Open_vSwitch` `external_ids` key listing (comma-separated) the chassis keys ovs-bundle set:
/// exactly those are removed when a bundle no longer has them.
pub const CHASSIS_OWNER: &str = "ovs-bundle-ovn-keys";

/// The port ovn-controller's southbound connection and the NB clients use: `tcp:ADDR:6642`.
pub const SB_PORT: u16 = 6642;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct OvnState {
    /// `Open_vSwitch` `external_ids` of a chassis (empty: the host is no chassis).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub chassis: BTreeMap<String, String>,
    /// The logical switches the central writes to the NB database (empty: not the central).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub northbound: Vec<LogicalSwitch>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogicalSwitch {
    pub name: String,
    /// The switch's IPv4 subnet, kept in `external_ids:ovs-bundle-subnet` for people reading
    /// the NB database (an `other_config:subnet` would turn on OVN's address management).
    pub subnet: String,
    pub ports: Vec<LogicalPort>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogicalPort {
    /// The port's name, which the chassis' interface names in `external_ids:iface-id`.
    pub name: String,
    /// `MAC IP`: the one entry of the port's `addresses`.
    pub address: String,
}

/// Why an `ovn.json` is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OvnError {
    #[error("ovn.json: {0}")]
    Json(String),
    #[error("ovn.json: chassis key {0:?} is not one ovs-bundle sets (only {keys})", keys = CHASSIS_KEYS.join(", "))]
    UnknownKey(String),
    #[error("ovn.json: {what} {value:?} {why}")]
    BadValue {
        what: String,
        value: String,
        why: &'static str,
    },
}

impl OvnState {
    pub fn is_empty(&self) -> bool {
        self.chassis.is_empty() && self.northbound.is_empty()
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).expect("ovn state serializes");
        out.push(b'\n');
        out
    }

    /// Parses and checks `ovn.json`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, OvnError> {
        let s: OvnState =
            serde_json::from_slice(bytes).map_err(|e| OvnError::Json(e.to_string()))?;
        s.check()?;
        Ok(s)
    }

    /// Every key known, every value of the narrow shape it must have.
    pub fn check(&self) -> Result<(), OvnError> {
        let bad = |what: &str, value: &str, why| OvnError::BadValue {
            what: what.to_string(),
            value: value.to_string(),
            why,
        };
        for (k, v) in &self.chassis {
            if !CHASSIS_KEYS.contains(&k.as_str()) {
                return Err(OvnError::UnknownKey(k.clone()));
            }
            let ok = match k.as_str() {
                "ovn-encap-type" => v == "geneve",
                "ovn-encap-ip" => v.parse::<IpAddr>().is_ok(),
                "ovn-remote" => remote_ok(v),
                _ => name_problem(v).is_none(),
            };
            if !ok {
                return Err(bad(k, v, "is not a value ovs-bundle writes there"));
            }
        }
        for ls in &self.northbound {
            if let Some(why) = name_problem(&ls.name) {
                return Err(bad("logical switch", &ls.name, why));
            }
            if !subnet_ok(&ls.subnet) {
                return Err(bad(
                    "subnet",
                    &ls.subnet,
                    "is not an IPv4 network a.b.c.d/len",
                ));
            }
            for p in &ls.ports {
                if let Some(why) = name_problem(&p.name) {
                    return Err(bad("logical port", &p.name, why));
                }
                if !address_ok(&p.address) {
                    return Err(bad("address", &p.address, "is not \"MAC IPv4\""));
                }
            }
        }
        Ok(())
    }
}

/// What is wrong with an OVN name (system-id, hostname, switch or port name), if anything:
/// 1 to 64 bytes of letters, digits, `-`, `_`, `.`, starting with a letter or digit. No `,`
/// (the owner mark lists keys with it), no quotes, spaces or control characters.
pub fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() || name.len() > 64 {
        return Some("must be 1 to 64 bytes");
    }
    if !name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric())
    {
        return Some("must start with a letter or digit");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Some("may hold only letters, digits, '-', '_' and '.'");
    }
    None
}

/// `tcp:ADDR:PORT`, `ssl:ADDR:PORT` with an IPv6 ADDR in brackets.
pub fn remote(proto: &str, ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(a) => format!("{proto}:{a}:{port}"),
        IpAddr::V6(a) => format!("{proto}:[{a}]:{port}"),
    }
}

fn remote_ok(v: &str) -> bool {
    let Some((proto, rest)) = v.split_once(':') else {
        return false;
    };
    let Some((addr, port)) = rest.rsplit_once(':') else {
        return false;
    };
    let addr = addr
        .strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .unwrap_or(addr);
    matches!(proto, "tcp" | "ssl")
        && addr.parse::<IpAddr>().is_ok()
        && port.parse::<u16>().is_ok_and(|p| p > 0)
}

fn subnet_ok(v: &str) -> bool {
    v.split_once('/').is_some_and(|(a, l)| {
        a.parse::<std::net::Ipv4Addr>().is_ok() && l.parse::<u8>().is_ok_and(|l| l <= 32)
    })
}

fn address_ok(v: &str) -> bool {
    v.split_once(' ').is_some_and(|(mac, ip)| {
        mac.parse::<crate::dhcp::Mac>().is_ok() && ip.parse::<std::net::Ipv4Addr>().is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chassis() -> OvnState {
        OvnState {
            chassis: BTreeMap::from([
                ("system-id".into(), "h1".into()),
                ("ovn-remote".into(), "tcp:192.0.2.10:6642".into()),
                ("ovn-encap-type".into(), "geneve".into()),
                ("ovn-encap-ip".into(), "192.0.2.1".into()),
                ("hostname".into(), "h1".into()),
            ]),
            northbound: vec![LogicalSwitch {
                name: "ls0".into(),
                subnet: "10.30.0.0/24".into(),
                ports: vec![LogicalPort {
                    name: "ovsb-h1".into(),
                    address: "0a:00:00:00:00:01 10.30.0.11".into(),
                }],
            }],
        }
    }

    #[test]
    fn round_trips_and_refuses_what_could_reach_ovsdb_unchecked() {
        let s = chassis();
        assert_eq!(OvnState::from_bytes(&s.to_bytes()).unwrap(), s);
        let refused = |f: &dyn Fn(&mut OvnState)| {
            let mut s = chassis();
            f(&mut s);
            OvnState::from_bytes(&s.to_bytes()).unwrap_err().to_string()
        };
        let e = refused(&|s| {
            s.chassis.insert("ovn-bridge".into(), "br-x".into());
        });
        assert!(
            e.contains("\"ovn-bridge\" is not one ovs-bundle sets"),
            "{e}"
        );
        let e = refused(&|s| {
            s.chassis.insert("system-id".into(), "a,b".into());
        });
        assert!(e.contains("system-id \"a,b\""), "{e}");
        let e = refused(&|s| {
            s.chassis.insert("ovn-remote".into(), "unix:/tmp/x".into());
        });
        assert!(e.contains("ovn-remote"), "{e}");
        let e = refused(&|s| {
            s.chassis.insert("ovn-encap-type".into(), "vxlan".into());
        });
        assert!(e.contains("ovn-encap-type"), "{e}");
        let e = refused(&|s| s.northbound[0].ports[0].address = "10.30.0.11".into());
        assert!(e.contains("is not \"MAC IPv4\""), "{e}");
        let e = refused(&|s| s.northbound[0].name = "-x".into());
        assert!(e.contains("must start with a letter or digit"), "{e}");
        assert!(remote_ok("ssl:[2001:db8::1]:6642"));
        assert_eq!(
            remote("tcp", "2001:db8::1".parse().unwrap(), 6642),
            "tcp:[2001:db8::1]:6642"
        );
        assert!(OvnState::from_bytes(b"{\"chassis\":{},\"x\":1}").is_err());
    }
}
