//! The command line: what `builder` accepts, as clap types. Kept in the library (like the
//! applier's) so the man pages and shell completions are generated from the same definitions
//! (`packaging/docgen`).

use crate::cmd::{build, check, cloud_init, image, import, inspect, keygen, ovn_ca};
use clap::{Parser, Subcommand};

/// Compiles per-host TOML profiles into signed, reproducible ovs-bundle bundles.
///
/// Exit codes: 0 success; 1 invalid profiles (for import: an invalid map, files that would be
/// overwritten, or imported profiles that need edits) or any other failure; for `image host`,
/// a refused bundle (nothing written): 10 not signed by --key, 11 malformed, 12 another host's,
/// 13 expired; 64 bad usage
/// (including an --expires-in of zero or past the largest Unix time, and a --serial more than 10
/// years ahead without --allow-far-serial).
#[derive(Parser)]
#[command(name = "builder", version)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Create a minisign signing key pair (refuses to overwrite).
    ///
    /// The secret key signs bundles (`builder build --key`); the public key is what hosts trust.
    Keygen(keygen::KeygenArgs),
    /// Validate every profile under DIR and print every problem found.
    ///
    /// Every problem of every file is printed in one run: FILE:LINE:COL: error: ..., the line
    /// with carets under the offending text (PSKs shown as ****), and a hint. Exit 0 if the
    /// fleet is valid, 1 if not. Paths in a file are relative to that file.
    ///
    /// A profile is DIR/hosts/<host>.toml, named after its host. Its keys:
    ///
    ///   [host]               name; underlay_ip (IPv4 or IPv6, where tunnel peers reach
    ///                        this host; every remote_ip of the host is of its family);
    ///                        interfaces_file (optional, a verbatim /etc/network/interfaces)
    ///   [[bridges]]          name; datapath ("system", the default, or "netdev"); rstp (bool);
    ///                        host_interfaces (["priv0"] or [{ name = "priv0",
    ///                        address = "10.20.20.1/24", address6 = "fd20::1/64" }]);
    ///                        physical_interfaces (["eth1"])
    ///   [[bridges.gre]]      remote_ip (IPv4 or IPv6: GRE over IPv6 is OVS's ip6gre, which
    ///                        IPsec does not cover: no psk there); type ("gre", the default,
    ///                        "vxlan" or "geneve");
    ///                        key (GRE key or VNI, 0-16777215); psk_file or psk (neither:
    ///                        a plain tunnel); external (bool: the peer is not one of the
    ///                        profiles)
    ///   [bridges.forwarder]  from (an interface of the bridge); via (the uplink, e.g. eth0);
    ///                        source ("10.20.20.0/24" or "10.20.20.0/255.255.255.0")
    ///                        and/or source6 ("fd20::/64": NAT for IPv6)
    ///   [bridges.dhcp]       interface (optional if the bridge has one addressed host
    ///                        interface); range_start and range_end (neither: static leases
    ///                        only); lease_time ("12h", default 1h)
    ///   [[bridges.dhcp.leases]] mac; ip; name (optional, a DNS label)
    ///
    /// DIR/fleet.toml is optional:
    ///
    ///   [[mesh]]             bridge; members (host names); psk_file or psk_secret_file
    ///                        (one key per pair derived from it); type, key (as in
    ///                        [[bridges.gre]], for every tunnel of the mesh)
    ///   [[dhcp_leases]]      bridge; mac; ip; name (optional): a static lease for the host
    ///                        whose bridge of that name serves DHCP on the lease's subnet
    ///   [ovn]                central (the host running the NB/SB databases and ovn-northd);
    ///                        datapath of br-int ("system", the default, or "netdev")
    ///   [[ovn.switches]]     name; subnet ("10.30.0.0/24"): a logical switch
    ///                        ipsec_pki (a directory made by `builder ovn-ca`: IPsec between
    ///                        chassis, X.509); ipsec_expiry ("2030-01-01"; default never)
    ///   [[ovn.chassis]]      host; switch; address ("10.30.0.11/24", in the switch's subnet);
    ///                        interface (on br-int, default "ovn0"); system_id (default the
    ///                        host name)
    ///
    /// The original tool's keys are named differently: :interfaces-file is interfaces_file,
    /// :host-interfaces-to-connect is host_interfaces, :gre-connections is [[bridges.gre]],
    /// :remote-ip is remote_ip, :act-as-forwarder is [bridges.forwarder];
    /// `builder import ovs-crate` converts a whole EDN map.
    #[command(
        verbatim_doc_comment,
        about = "Validate every profile under DIR and print every problem found"
    )]
    Check(check::CheckArgs),
    /// Build one signed bundle per host: OUTDIR/<host>.tgz.
    ///
    /// The profiles are checked first, as by `builder check`; nothing is built if any is
    /// invalid. For each host the output says whether its bundle is new, unchanged, changed in
    /// GRE tunnels only (`applier apply --gre-only` suffices) or needs a full apply.
    Build(build::BuildArgs),
    /// Show a bundle's manifest and contents, PSKs redacted.
    Inspect(inspect::InspectArgs),
    /// Write #cloud-config user data that configures HOST on first boot.
    ///
    /// The user data holds HOST's signed bundle and the public key, and installs both (and,
    /// unless --no-packages, Open vSwitch) when the machine first boots.
    CloudInit(cloud_init::CloudInitArgs),
    /// Write a profiles directory from another tool's configuration (ovs-crate's EDN map).
    Import(import::ImportArgs),
    /// Build bootable disk images: a base per fleet release, then one image per host.
    ///
    /// `image base` makes Debian 12 with Open vSwitch, strongSwan, iptables, ifupdown, the
    /// applier package and GRUB (BIOS); `image host` installs a host's verified bundle into a
    /// copy of it as its current generation, which the boot unit restores at first boot.
    /// Host images hold PSKs: written 0600. See docs/image.md.
    Image(image::ImageArgs),
    /// Create the CA for OVN IPsec between chassis: DIR/ca.key (refuses to overwrite).
    ///
    /// Name DIR in fleet.toml (`[ovn] ipsec_pki`). Builds then make each chassis' RSA key in
    /// DIR/chassis/ the first time its bundle is built, and issue its certificate (subject CN =
    /// its system-id), the same bytes at every build until ipsec_expiry changes. See docs/ovn.md.
    OvnCa(ovn_ca::OvnCaArgs),
}
