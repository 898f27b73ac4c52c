//! The validated model of a fleet. Every value here has passed validation: later stages
//! (rendering, signing) trust it and cannot fail on bad input.

use crate::diag::Loc;
use crate::net::{Ipv4Cidr, Ipv6Cidr};
use bundle::psk::Psk;
use bundle::tunnel::TunnelKind;
use std::net::{IpAddr, Ipv4Addr};

#[derive(Debug, Clone)]
pub struct Fleet {
    /// Hosts in name order.
    pub hosts: Vec<Host>,
    /// Notes from validation (e.g. a loop that RSTP breaks): worth showing, not errors.
    pub notes: Vec<crate::diag::Diagnostic>,
}

#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    /// IPv4 or IPv6: every tunnel of the host is of the same family.
    pub underlay_ip: IpAddr,
    /// The profile's path relative to the profiles directory (e.g. `hosts/gw1.toml`), as named in
    /// generated files, so output does not depend on where the profiles are checked out.
    pub profile_rel: String,
    pub loc: Loc,
    pub interfaces_file: Option<VerbatimFile>,
    pub bridges: Vec<Bridge>,
    /// What `fleet.toml`'s `[ovn]` gives this host: its chassis settings (`Open_vSwitch`
    /// `external_ids`) and, on the central, the northbound state. Empty: not in OVN.
    pub ovn: bundle::ovn::OvnState,
    /// A chassis of a fleet with OVN IPsec: where its credentials come from. The build fills
    /// `ovn.ipsec` from it ([`crate::fleet::ovn::with_credentials`]): loading profiles (also
    /// for `check`) never makes a key.
    pub ovn_ipsec: Option<OvnIpsec>,
}

#[derive(Debug, Clone)]
pub struct OvnIpsec {
    /// The PKI directory (`[ovn] ipsec_pki`, resolved against the profiles directory).
    pub pki: std::path::PathBuf,
    /// Unix time at which the certificates expire (`ipsec_expiry`).
    pub not_after: u64,
    pub system_id: String,
}

#[derive(Debug, Clone)]
pub struct VerbatimFile {
    pub rel_path: String,
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datapath {
    System,
    Netdev,
}

impl Datapath {
    pub fn as_ovs(self) -> &'static str {
        match self {
            Datapath::System => "system",
            Datapath::Netdev => "netdev",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Bridge {
    pub name: String,
    pub loc: Loc,
    pub datapath: Datapath,
    pub rstp: bool,
    pub host_interfaces: Vec<HostInterface>,
    pub physical_interfaces: Vec<String>,
    pub gre: Vec<Gre>,
    pub forwarder: Option<Forwarder>,
    /// `[bridges.dhcp]`: dnsmasq on one of the bridge's host interfaces.
    pub dhcp: Option<Dhcp>,
    /// The OVN logical switch this bridge (`br-int`, made from `fleet.toml`'s `[ovn]`) attaches
    /// to: bridges on one logical switch are one L2 network for the address checks.
    pub ovn_switch: Option<String>,
    /// The host's bridge OVN joins to this one (`br-int`) through the switch's localnet port
    /// (`ovn-bridge-mappings`): one L2 network for the address checks.
    pub ovn_uplink: Option<String>,
}

#[derive(Debug, Clone)]
pub struct HostInterface {
    pub name: String,
    pub address: Option<Ipv4Cidr>,
    /// `address6`: an IPv6 address beside (or instead of) the IPv4 one.
    pub address6: Option<Ipv6Cidr>,
    pub loc: Loc,
    /// OVN attachment: the logical switch port this interface is (`external_ids:iface-id`) and
    /// the MAC its logical port lists, set on the device by its interfaces stanza.
    pub ovn: Option<OvnAttachment>,
}

#[derive(Debug, Clone)]
pub struct OvnAttachment {
    pub iface_id: String,
    pub mac: bundle::dhcp::Mac,
}

#[derive(Debug, Clone)]
pub struct Gre {
    pub port: String,
    /// Of the same family as the host's `underlay_ip`.
    pub remote_ip: IpAddr,
    /// GRE (the default), VXLAN or Geneve.
    pub kind: TunnelKind,
    /// GRE key or VNI: required where two tunnels of a type share a peer.
    pub key: Option<u32>,
    pub psk: Option<Psk>,
    /// Where the connection was declared: a `[[bridges.gre]]` entry or a `[[mesh]]`.
    pub loc: Loc,
    /// OVS Port `protected` (split horizon): set on mesh tunnels.
    pub protected: bool,
    /// The peer is outside this fleet: exempt from the cross-host checks.
    pub external: bool,
}

#[derive(Debug, Clone)]
pub struct Forwarder {
    pub from: String,
    pub via: String,
    /// `source`: the IPv4 network NATed out of `via` (iptables, IPv4 forwarding).
    pub source: Option<Ipv4Cidr>,
    /// `source6`: the IPv6 network NATed out of `via` too (ip6tables, IPv6 forwarding).
    pub source6: Option<Ipv6Cidr>,
    pub loc: Loc,
}

/// A DHCP server on a bridge (`[bridges.dhcp]`), with the static leases of its profile and of
/// `fleet.toml`'s `[[dhcp_leases]]` for its subnet.
#[derive(Debug, Clone)]
pub struct Dhcp {
    /// The host interface dnsmasq listens on.
    pub interface: String,
    /// That interface's address (its subnet is the one served).
    pub address: Ipv4Cidr,
    /// Dynamic addresses; `None`: static leases only.
    pub range: Option<(Ipv4Addr, Ipv4Addr)>,
    pub lease_secs: u64,
    pub leases: Vec<Lease>,
    pub loc: Loc,
}

/// A static DHCP lease: this MAC always gets this address.
#[derive(Debug, Clone)]
pub struct Lease {
    pub mac: bundle::dhcp::Mac,
    pub ip: Ipv4Addr,
    pub name: Option<String>,
    /// Where it was declared: the profile or fleet.toml.
    pub loc: Loc,
}
