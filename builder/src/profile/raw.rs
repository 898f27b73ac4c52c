//! The raw shape of a host profile, as serde reads it from TOML: every key a profile may have,
//! unknown keys refused, and source spans kept so validation can point at the exact place.
//! Nothing here is checked beyond TOML types; that is [`super::validate`]'s job.

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProfile {
    pub(super) host: RawHost,
    #[serde(default)]
    pub(super) bridges: Vec<RawBridge>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHost {
    pub(super) name: Spanned<String>,
    pub(super) underlay_ip: Spanned<String>,
    pub(super) interfaces_file: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
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
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawHostInterface {
    Name(String),
    Table(RawHostInterfaceTable),
}

// Inside an untagged enum serde buffers values, which loses spans: the element's span is used.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHostInterfaceTable {
    pub(super) name: String,
    pub(super) address: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGre {
    pub(super) remote_ip: Spanned<String>,
    pub(super) psk: Option<Spanned<String>>,
    pub(super) psk_file: Option<Spanned<String>>,
    pub(super) external: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawForwarder {
    pub(super) from: Spanned<String>,
    pub(super) via: Spanned<String>,
    pub(super) source: Spanned<String>,
}
