//! The raw shape of a host profile, as serde reads it from TOML: every key a profile may have,
//! and source spans kept so validation can point at the exact place. Nothing here is checked
//! beyond TOML types; that is [`super::validate`]'s job.
//!
//! [`PROFILE`] lists the same keys for [`crate::shape`], which reports every unknown, missing or
//! mistyped key at once before serde runs. serde therefore ignores unknown keys in a build (so a
//! profile with a typo is still validated and all its problems shown in one run), and refuses
//! them in unit tests, where `every_schema_key_is_read` proves the two lists agree.

use crate::fleet::dhcp::{RawLease, LEASE};
use crate::shape::{Field, Kind};
use serde::Deserialize;
use toml::Spanned;

/// Every key of a host profile, for the shape check. Keep in step with the structs below.
pub(super) const PROFILE: &[Field] = &[
    Field::req("host", Kind::Table(HOST)),
    Field::opt("bridges", Kind::Tables(BRIDGE)),
];
const HOST: &[Field] = &[
    Field::req("name", Kind::Str),
    Field::req("underlay_ip", Kind::Str),
    Field::opt("interfaces_file", Kind::Str),
];
const BRIDGE: &[Field] = &[
    Field::req("name", Kind::Str),
    Field::opt("datapath", Kind::Str),
    Field::opt("rstp", Kind::Bool),
    Field::opt("host_interfaces", Kind::Array(&Kind::StrOrTable(HOST_IF))),
    Field::opt("physical_interfaces", Kind::Array(&Kind::Str)),
    Field::opt("gre", Kind::Tables(GRE)),
    Field::opt("forwarder", Kind::Table(FORWARDER)),
    Field::opt("dhcp", Kind::Table(DHCP)),
];
const HOST_IF: &[Field] = &[
    Field::req("name", Kind::Str),
    Field::opt("address", Kind::Str),
    Field::opt("address6", Kind::Str),
];
const GRE: &[Field] = &[
    Field::req("remote_ip", Kind::Str),
    Field::opt("type", Kind::Str),
    Field::opt("key", Kind::Int),
    Field::secret("psk"),
    Field::opt("psk_file", Kind::Str),
    Field::opt("external", Kind::Bool),
];
const FORWARDER: &[Field] = &[
    Field::req("from", Kind::Str),
    Field::req("via", Kind::Str),
    // One of the two, or both: validation says so when neither is there.
    Field::opt("source", Kind::Str),
    Field::opt("source6", Kind::Str),
];

const DHCP: &[Field] = &[
    Field::opt("interface", Kind::Str),
    Field::opt("range_start", Kind::Str),
    Field::opt("range_end", Kind::Str),
    Field::opt("lease_time", Kind::Str),
    Field::opt("leases", Kind::Tables(LEASE)),
];

#[derive(Debug, Deserialize)]
#[cfg_attr(test, serde(deny_unknown_fields))]
pub(super) struct RawProfile {
    pub(super) host: RawHost,
    #[serde(default)]
    pub(super) bridges: Vec<RawBridge>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(test, serde(deny_unknown_fields))]
pub(super) struct RawHost {
    pub(super) name: Spanned<String>,
    /// Required, but optional here so that a profile without it is still validated: the shape
    /// check reports it missing.
    pub(super) underlay_ip: Option<Spanned<String>>,
    pub(super) interfaces_file: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(test, serde(deny_unknown_fields))]
pub(super) struct RawBridge {
    pub(super) name: Spanned<String>,
    pub(super) datapath: Option<Spanned<String>>,
    pub(super) rstp: Option<bool>,
    #[serde(default)]
    pub(super) host_interfaces: Vec<Spanned<RawHostInterface>>,
    #[serde(default)]
    pub(super) physical_interfaces: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) gre: Vec<Spanned<RawGre>>,
    pub(super) forwarder: Option<Spanned<RawForwarder>>,
    pub(super) dhcp: Option<Spanned<RawDhcp>>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(test, serde(deny_unknown_fields))]
pub(super) struct RawDhcp {
    pub(super) interface: Option<Spanned<String>>,
    pub(super) range_start: Option<Spanned<String>>,
    pub(super) range_end: Option<Spanned<String>>,
    pub(super) lease_time: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) leases: Vec<Spanned<RawLease>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawHostInterface {
    Name(String),
    Table(RawHostInterfaceTable),
}

// Inside an untagged enum serde buffers values, which loses spans: the element's span is used.
#[derive(Debug, Deserialize)]
#[cfg_attr(test, serde(deny_unknown_fields))]
pub(super) struct RawHostInterfaceTable {
    pub(super) name: String,
    pub(super) address: Option<String>,
    /// An IPv6 address with prefix length (`fd20::1/64`).
    pub(super) address6: Option<String>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(test, serde(deny_unknown_fields))]
pub(super) struct RawGre {
    /// Required, as underlay_ip: a misspelt `remote_ipp` must not hide the file's other problems.
    pub(super) remote_ip: Option<Spanned<String>>,
    /// `gre` (the default), `vxlan` or `geneve`.
    #[serde(rename = "type")]
    pub(super) kind: Option<Spanned<String>>,
    /// GRE key or VNI.
    pub(super) key: Option<Spanned<i64>>,
    pub(super) psk: Option<Spanned<String>>,
    pub(super) psk_file: Option<Spanned<String>>,
    pub(super) external: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(test, serde(deny_unknown_fields))]
pub(super) struct RawForwarder {
    pub(super) from: Spanned<String>,
    pub(super) via: Spanned<String>,
    /// The IPv4 network behind `from`; optional when `source6` is given.
    pub(super) source: Option<Spanned<String>>,
    /// The IPv6 network behind `from` (`fd20::/64`): NATed out of `via` as well.
    pub(super) source6: Option<Spanned<String>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::SourceMap;

    /// A profile with every key [`PROFILE`] lists, each table in both of its forms: the shape
    /// check must accept it, and serde (refusing unknown keys in tests) must read every key.
    #[test]
    fn every_schema_key_is_read() {
        let text = r#"
[host]
name = "h1"
underlay_ip = "192.0.2.1"
interfaces_file = "x"

[[bridges]]
name = "br0"
datapath = "system"
rstp = true
host_interfaces = ["a", { name = "b", address = "10.0.0.1/24", address6 = "fd00::1/64" }]
physical_interfaces = ["eth1"]
gre = [{ remote_ip = "192.0.2.3", type = "vxlan", key = 7, psk = "0123456789abcdef", psk_file = "f", external = true }]
forwarder = { from = "a", via = "eth0", source = "10.0.0.0/24", source6 = "fd00::/64" }
dhcp = { interface = "b", range_start = "10.0.0.100", range_end = "10.0.0.200", lease_time = "12h", leases = [{ mac = "52:54:00:00:00:01", ip = "10.0.0.10", name = "n1" }] }

[[bridges]]
name = "br1"
[[bridges.gre]]
remote_ip = "192.0.2.2"
[bridges.forwarder]
from = "a"
via = "eth0"
source = "10.0.0.0/24"
[bridges.dhcp]
lease_time = "1h"
[[bridges.dhcp.leases]]
mac = "52:54:00:00:00:02"
ip = "10.0.0.11"
"#;
        let doc = toml_edit::ImDocument::parse(text).unwrap();
        let checked = crate::shape::check(doc.as_table(), PROFILE, &SourceMap::new("f", text), "");
        assert!(checked.diags.is_empty(), "{:#?}", checked.diags);
        let raw: RawProfile = toml::from_str(text).unwrap();
        assert_eq!(raw.bridges.len(), 2);
    }
}
