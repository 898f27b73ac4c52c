//! `ovn.json`: what a host's bundle says about OVN. A chassis carries the `Open_vSwitch`
//! `external_ids` keys ovn-controller reads (`system-id`, `ovn-remote`, `ovn-encap-type`,
//! `ovn-encap-ip`, `hostname`, and `ovn-bridge-mappings` where an uplink is bridged into a
//! logical switch); the central host carries the northbound state (logical switches and their
//! ports, a switch's `localnet` port among them) that its applier writes to the NB database. Its
//! `br-int`, internal port and uplink bridge are ordinary rows of `ovs.json`.
//!
//! Every value here reaches OVSDB. A signed bundle is still checked ([`OvnState::from_bytes`]):
//! only the known keys, names and values of a narrow alphabet, addresses that parse.
//!
//! Over 500 lines with its tests: `ovn.json`'s types, their checks and the IPsec file names are
//! one format that both sides read.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// The `Open_vSwitch` `external_ids` keys a chassis bundle may set, and no other.
pub const CHASSIS_KEYS: [&str; 6] = [
    "hostname",
    "ovn-bridge-mappings",
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
    /// The central: IPsec between all chassis (`NB_Global` `ipsec=true`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub northbound_ipsec: bool,
    /// A chassis of a fleet with IPsec: the files `other_config:certificate`, `private_key` and
    /// `ca_cert` name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipsec: Option<ChassisIpsec>,
}

/// A chassis' IPsec credentials, PEM: its certificate (subject CN = its system-id), its RSA key
/// (PKCS#1) and the fleet CA's certificate. The key is a secret: `ovn.json` holding it is 0600,
/// and [`OvnState::redacted`] is what people are shown.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChassisIpsec {
    pub ca_cert: String,
    pub certificate: String,
    pub private_key: String,
}

impl std::fmt::Debug for ChassisIpsec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChassisIpsec")
            .field("ca_cert", &self.ca_cert)
            .field("certificate", &self.certificate)
            .field("private_key", &crate::state::redact(&self.private_key))
            .finish()
    }
}

/// A chassis' IPsec files as the applier writes them (each 0600: one is a key): the
/// `Open_vSwitch` `other_config` key naming each (what ovs-monitor-ipsec reads) and the
/// directory it goes to (relative to the root); its name is [`ipsec_file_name`].
///
/// In strongSwan's own directories, for two reasons. charon's AppArmor profile (Debian's,
/// enforcing where AppArmor runs) lets it read `/etc/ipsec.d/**` and nothing of ours. And
/// strongSwan never loads the CA from the `ca` section ovs-monitor-ipsec 3.1 writes into
/// ipsec.conf (it has no `auto=add`, and ignoring is the default): charon loads CA
/// certificates from `cacerts/` when it starts, or when told to (VM scenario 9 found this). The
/// directories are strongSwan's package's; only files named [`IPSEC_FILE_PREFIX`]`*` are
/// ovs-bundle's.
pub const IPSEC_FILES: [(&str, &str); 3] = [
    ("ca_cert", IPSEC_CA_DIR),
    ("certificate", "etc/ipsec.d/certs"),
    ("private_key", "etc/ipsec.d/private"),
];

/// The directory of the CA certificates charon trusts (relative to the root).
pub const IPSEC_CA_DIR: &str = "etc/ipsec.d/cacerts";

/// What the names of ovs-bundle's files in [`IPSEC_FILES`]' directories start with (the names
/// of earlier versions, `ovs-bundle-ovn.pem` and `ovs-bundle-ovn-ca.pem`, too).
pub const IPSEC_FILE_PREFIX: &str = "ovs-bundle-ovn";

/// The name of the IPsec file for `other_config` key `key` holding `content`: a digest of the
/// content in it, so that a renewed certificate or key has a new name. ovs-monitor-ipsec
/// notices only a changed `other_config` value (a path), not new content at the same path:
/// with a new name, a rebuild and an apply renew a chassis' credentials, and it re-keys its
/// tunnels with them.
pub fn ipsec_file_name(key: &str, content: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(content);
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    let kind = if key == "ca_cert" { "-ca" } else { "" };
    format!("{IPSEC_FILE_PREFIX}{kind}-{hex}.pem")
}

/// Whether `name`, in one of [`IPSEC_FILES`]' directories, is one of ovs-bundle's IPsec files
/// (of any version's naming).
pub fn is_ipsec_file_name(name: &str) -> bool {
    !name.contains('/') && name.starts_with(IPSEC_FILE_PREFIX)
}

/// The name of `path` (relative to the root) if it is in one of [`IPSEC_FILES`]' directories.
pub fn ipsec_dir_entry(path: &str) -> Option<&str> {
    IPSEC_FILES
        .iter()
        .find_map(|(_, dir)| path.strip_prefix(dir)?.strip_prefix('/'))
}

/// Whether `path` (relative to the root) is in the CA certificates' directory of
/// [`IPSEC_FILES`].
pub fn is_ipsec_ca_path(path: &str) -> bool {
    path.strip_prefix(IPSEC_CA_DIR)
        .is_some_and(|rest| rest.starts_with('/'))
}

/// The IPsec files of `ipsec`: (`other_config` key, path relative to the root, content).
pub fn ipsec_files(ipsec: &ChassisIpsec) -> [(&'static str, String, &str); 3] {
    IPSEC_FILES.map(|(key, dir)| {
        let content = match key {
            "ca_cert" => ipsec.ca_cert.as_str(),
            "certificate" => ipsec.certificate.as_str(),
            _ => ipsec.private_key.as_str(),
        };
        (
            key,
            format!("{dir}/{}", ipsec_file_name(key, content.as_bytes())),
            content,
        )
    })
}
/// `NB_Global` `external_ids` key saying ovs-bundle set `ipsec=true` (the central).
pub const NB_IPSEC_OWNER: &str = "ovs-bundle-ipsec";
/// `Open_vSwitch` `other_config` key listing (comma-separated) the keys ovs-bundle set there.
pub const IPSEC_OWNER: &str = "ovs-bundle-ovn-ipsec-keys";

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
    /// `MAC IP`: the one entry of the port's `addresses`; [`LOCALNET_ADDRESS`] for a localnet
    /// port.
    pub address: String,
    /// A `localnet` port bridging the switch to this physical network (`type=localnet`,
    /// `options:network_name`); each chassis maps the name to one of its bridges in
    /// `ovn-bridge-mappings`. `None`: a chassis' attachment (a VIF).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
}

/// The `addresses` of a localnet port: frames to any MAC not on the switch go to the physical
/// network.
pub const LOCALNET_ADDRESS: &str = "unknown";

/// The name of the localnet port of logical switch `switch`.
pub fn localnet_port_name(switch: &str) -> String {
    format!("ovsb-ln-{switch}")
}

/// `ovn-bridge-mappings`' value: `NETWORK:BRIDGE` pairs, comma-separated, in the given order.
pub fn bridge_mappings(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(n, b)| format!("{n}:{b}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The pairs of an `ovn-bridge-mappings` value, `None` if it is not one ovs-bundle writes:
/// every network and bridge a name ([`name_problem`]; a bridge at most 15 bytes, a device name),
/// each network once.
pub fn parse_bridge_mappings(v: &str) -> Option<Vec<(&str, &str)>> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for pair in v.split(',') {
        let (net, br) = pair.split_once(':')?;
        if name_problem(net).is_some()
            || name_problem(br).is_some()
            || br.len() > 15
            || out.iter().any(|(n, _)| *n == net)
        {
            return None;
        }
        out.push((net, br));
    }
    Some(out)
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
        self.chassis.is_empty()
            && self.northbound.is_empty()
            && !self.northbound_ipsec
            && self.ipsec.is_none()
    }

    /// The same, with the private key replaced by its fingerprint: what `inspect` shows.
    pub fn redacted(&self) -> Self {
        let mut s = self.clone();
        if let Some(i) = &mut s.ipsec {
            i.private_key = crate::state::redact(&i.private_key);
        }
        s
    }

    /// The mode `ovn.json` is written with: 0600 when it holds a key.
    pub fn mode(&self) -> u32 {
        if self.ipsec.is_some() {
            0o600
        } else {
            0o644
        }
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
                "ovn-bridge-mappings" => parse_bridge_mappings(v).is_some(),
                _ => name_problem(v).is_none(),
            };
            if !ok {
                return Err(bad(k, v, "is not a value ovs-bundle writes there"));
            }
        }
        if let Some(i) = &self.ipsec {
            if self.chassis.is_empty() {
                return Err(bad("ipsec", "", "is for a chassis, and this host is none"));
            }
            for (what, text, label) in [
                ("ca_cert", &i.ca_cert, "CERTIFICATE"),
                ("certificate", &i.certificate, "CERTIFICATE"),
                ("private_key", &i.private_key, "RSA PRIVATE KEY"),
            ] {
                if !pem_ok(text, label) {
                    // Never the value: it may be a key.
                    return Err(bad(
                        what,
                        "",
                        "is not one PEM block of the kind ovs-bundle writes",
                    ));
                }
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
                match &p.network {
                    None if !address_ok(&p.address) => {
                        return Err(bad("address", &p.address, "is not \"MAC IPv4\""));
                    }
                    None => {}
                    Some(net) => {
                        if let Some(why) = name_problem(net) {
                            return Err(bad("network", net, why));
                        }
                        if p.address != LOCALNET_ADDRESS {
                            return Err(bad(
                                "address",
                                &p.address,
                                "of a localnet port is not \"unknown\"",
                            ));
                        }
                    }
                }
            }
            // OVN bridges a switch to at most one physical network.
            if ls.ports.iter().filter(|p| p.network.is_some()).count() > 1 {
                return Err(bad(
                    "logical switch",
                    &ls.name,
                    "has more than one localnet port",
                ));
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

/// One PEM block with `label`, as the builder writes it: the two marker lines and base64 lines
/// of at most 64 characters, each ending in a newline; nothing before or after. What reaches a
/// file strongSwan and OpenSSL parse is no more than that.
fn pem_ok(text: &str, label: &str) -> bool {
    let (begin, end) = (
        format!("-----BEGIN {label}-----\n"),
        format!("-----END {label}-----\n"),
    );
    let Some(body) = text
        .strip_prefix(begin.as_str())
        .and_then(|t| t.strip_suffix(end.as_str()))
    else {
        return false;
    };
    !body.is_empty()
        && body.len() < 16 * 1024
        && body.split_terminator('\n').all(|l| {
            !l.is_empty()
                && l.len() <= 64
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b))
        })
        && body.ends_with('\n')
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
                    network: None,
                }],
            }],
            ..Default::default()
        }
    }

    fn pem(label: &str, lines: usize) -> String {
        let mut s = format!("-----BEGIN {label}-----\n");
        let fill = if label.contains("KEY") {
            "S2V5"
        } else {
            "QUJD"
        };
        for _ in 0..lines {
            s.push_str(&fill.repeat(16));
            s.push('\n');
        }
        s.push_str("MA==\n");
        s.push_str(&format!("-----END {label}-----\n"));
        s
    }

    #[test]
    fn ipsec_credentials_are_pem_of_the_kinds_written_and_the_key_is_redacted() {
        let mut s = chassis();
        s.ipsec = Some(ChassisIpsec {
            ca_cert: pem("CERTIFICATE", 3),
            certificate: pem("CERTIFICATE", 4),
            private_key: pem("RSA PRIVATE KEY", 5),
        });
        assert_eq!(OvnState::from_bytes(&s.to_bytes()).unwrap(), s);
        assert_eq!(s.mode(), 0o600);
        let shown = String::from_utf8(s.redacted().to_bytes()).unwrap();
        assert!(
            !shown.contains("S2V5") && !shown.contains("RSA PRIVATE KEY"),
            "{shown}"
        );
        assert!(shown.contains("QUJD"), "certificates are shown: {shown}");
        assert!(shown.contains("<redacted sha256:"), "{shown}");
        assert!(!format!("{s:?}").contains("S2V5"));
        let refused = |f: &dyn Fn(&mut ChassisIpsec)| {
            let mut s = s.clone();
            f(s.ipsec.as_mut().unwrap());
            OvnState::from_bytes(&s.to_bytes()).unwrap_err().to_string()
        };
        // A key of another kind, text around the block, a line no encoder writes, two blocks.
        let e = refused(&|i| i.private_key = pem("PRIVATE KEY", 2));
        assert!(e.contains("private_key"), "{e}");
        assert!(
            !e.contains("S2V5"),
            "the message shows no key material: {e}"
        );
        let e = refused(&|i| i.certificate = format!("x\n{}", pem("CERTIFICATE", 1)));
        assert!(e.contains("certificate"), "{e}");
        let e = refused(&|i| i.ca_cert = pem("CERTIFICATE", 1).replace("MA==", "M A=="));
        assert!(e.contains("ca_cert"), "{e}");
        let e = refused(&|i| i.ca_cert = pem("CERTIFICATE", 1).repeat(2));
        assert!(e.contains("ca_cert"), "{e}");
        // Credentials only on a chassis.
        let mut central = chassis();
        central.chassis.clear();
        central.ipsec = s.ipsec.clone();
        assert!(OvnState::from_bytes(&central.to_bytes()).is_err());
        central.ipsec = None;
        central.northbound_ipsec = true;
        assert_eq!(OvnState::from_bytes(&central.to_bytes()).unwrap(), central);
        assert_eq!(central.mode(), 0o644);
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

    #[test]
    fn bridge_mappings_and_localnet_ports_are_checked() {
        let mut s = chassis();
        s.chassis.insert(
            "ovn-bridge-mappings".into(),
            bridge_mappings(&[("physnet", "br-ex"), ("lab", "br-lab")]),
        );
        s.northbound[0].ports.push(LogicalPort {
            name: localnet_port_name("ls0"),
            address: LOCALNET_ADDRESS.into(),
            network: Some("physnet".into()),
        });
        assert_eq!(OvnState::from_bytes(&s.to_bytes()).unwrap(), s);
        assert_eq!(
            parse_bridge_mappings("physnet:br-ex,lab:br-lab").unwrap(),
            [("physnet", "br-ex"), ("lab", "br-lab")]
        );
        let refused = |f: &dyn Fn(&mut OvnState)| {
            let mut s = s.clone();
            f(&mut s);
            OvnState::from_bytes(&s.to_bytes()).unwrap_err().to_string()
        };
        // What ovn-controller would split differently, a network twice, a bridge name no device
        // can have, a value that is no pair.
        for bad in [
            "physnet:br-ex,physnet:br-2",
            "physnet:br-ex:x",
            "physnet:br-0123456789abcdef",
            "physnet",
            "physnet:br ex",
            "",
        ] {
            let e = refused(&|s| {
                s.chassis.insert("ovn-bridge-mappings".into(), bad.into());
            });
            assert!(e.contains("ovn-bridge-mappings"), "{bad}: {e}");
        }
        let e =
            refused(&|s| s.northbound[0].ports[1].address = "0a:00:00:00:00:02 10.30.0.1".into());
        assert!(e.contains("of a localnet port is not \"unknown\""), "{e}");
        let e = refused(&|s| s.northbound[0].ports[1].network = Some("a b".into()));
        assert!(e.contains("network \"a b\""), "{e}");
        let e = refused(&|s| {
            let mut p = s.northbound[0].ports[1].clone();
            p.name = "ovsb-ln-2".into();
            s.northbound[0].ports.push(p);
        });
        assert!(e.contains("more than one localnet port"), "{e}");
        // A VIF's address stays "MAC IPv4": "unknown" is only a localnet port's.
        let e = refused(&|s| s.northbound[0].ports[0].address = LOCALNET_ADDRESS.into());
        assert!(e.contains("is not \"MAC IPv4\""), "{e}");
    }
}
