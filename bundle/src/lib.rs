//! The ovs-bundle format, shared by the builder (which writes bundles) and the applier (which
//! verifies and applies them).
//!
//! A bundle is a gzip-compressed ustar archive whose first member is `manifest.json`, whose second
//! is its minisign signature `manifest.json.minisig`, and whose other members are exactly the files
//! the manifest lists, in the manifest's order, each with the size and SHA-256 it states. See
//! `docs/bundle-format.md` for the full specification.
//!
//! This crate does no I/O of its own: it turns bytes into verified values and values into bytes.

pub mod archive;
pub mod dhcp;
pub mod exit;
pub mod firewall;
pub mod interfaces;
pub mod keys;
pub mod manifest;
pub mod names;
pub mod ovn;
pub mod psk;
pub mod state;
pub mod sysctl;
pub mod time;
pub mod tunnel;
pub mod verify;

pub use archive::{write_archive, ArchiveMember, Limits, ParsedArchive};
pub use exit::Exit;
pub use firewall::Chains;
pub use keys::{KeyId, TrustedKey};
pub use manifest::{FileEntry, Manifest, FORMAT_VERSION};
pub use state::{Bridge, Interface, OvsState, Port, PortRole};
pub use verify::{read_unverified, verify_bundle, VerifiedBundle, VerifyError, VerifyOptions};

/// Name of the manifest member; always the first member of a bundle.
pub const MANIFEST_NAME: &str = "manifest.json";
/// Name of the signature member; always the second member of a bundle.
pub const SIGNATURE_NAME: &str = "manifest.json.minisig";
/// The `/etc/network/interfaces` content.
pub const INTERFACES_NAME: &str = "interfaces";
/// The desired OVS state (JSON, see [`state::OvsState`]). Holds PSKs, so it is mode 0600.
pub const OVS_NAME: &str = "ovs.json";
/// iptables-restore input filling this tool's own chains.
pub const IPTABLES_NAME: &str = "iptables.rules";
/// ip6tables-restore input filling this tool's own IPv6 chains (present only when the host has
/// IPv6 rules: a v6 forwarder or the IPsec guard of a PSK tunnel to an IPv6 peer).
pub const IP6TABLES_NAME: &str = "ip6tables.rules";
/// sysctl settings (present only when the host needs any, e.g. a NAT forwarder).
pub const SYSCTL_NAME: &str = "sysctl.conf";
/// The DHCP server's configuration (present only when a bridge serves DHCP; see [`dhcp`]).
pub const DHCP_NAME: &str = "dnsmasq.conf";

/// OVN: the chassis' `Open_vSwitch` `external_ids` and, on the central, the northbound state
/// (present only when the host is in the fleet's `[ovn]`; see [`ovn`]).
pub const OVN_NAME: &str = "ovn.json";

/// Hex-encoded SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    to_hex(&sha2::Sha256::digest(data))
}

/// Lower-case hex encoding.
pub fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// iptables chains this tool owns, as `(table, built-in chain, owned chain)`. The builder fills the
/// owned chains in `iptables.rules`; the applier replaces their contents and adds one jump from
/// each built-in chain, so re-applying never duplicates a rule and rules of others stay untouched.
/// A chain with no built-in chain (`""`) is reached only from another owned chain.
///
/// The IPsec guard: `OVSB-OUTPUT` sends tunnel packets to each PSK peer into the guard chain of
/// the tunnel's type, which drops what no IPsec policy covers, so no tunnel packet leaves in
/// plaintext while ovs-monitor-ipsec or strongSwan has not (yet, or any more) installed the
/// peer's policies. The per-peer rules carry no protocol match on purpose: `iptables-save` looks
/// a protocol without a built-in name (GRE) up in `/etc/protocols` once per rule, which at 1,000
/// PSK tunnels was most of a no-op apply (see `firewall::GUARD_CHAINS`).
pub const IPTABLES_CHAINS: [(&str, &str, &str); 7] = [
    ("filter", "FORWARD", "OVSB-FORWARD"),
    ("filter", "INPUT", "OVSB-INPUT"),
    ("filter", "OUTPUT", "OVSB-OUTPUT"),
    ("filter", "", "OVSB-GUARD-GRE"),
    ("filter", "", "OVSB-GUARD-VXLAN"),
    ("filter", "", "OVSB-GUARD-GENEVE"),
    ("nat", "POSTROUTING", "OVSB-POSTROUTING"),
];
