//! One test per validation rule: `tests/errors/<case>/hosts/*.toml` must fail with exactly the
//! diagnostics in `tests/errors/<case>/expected.txt` (paths shown relative to the case).
//! `UPDATE_GOLDEN=1` rewrites the expected files.

use builder::profile::load_fleet;
use std::path::Path;

fn check(case: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/errors")
        .join(case);
    let diags = match load_fleet(&dir) {
        Ok(_) => panic!("{case}: profiles were accepted"),
        Err(d) => d,
    };
    let prefix = format!("{}/", dir.display());
    let got: String = diags
        .iter()
        .map(|d| format!("{d}\n").replace(&prefix, ""))
        .collect();
    let expected_path = dir.join("expected.txt");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&expected_path, &got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&expected_path).unwrap_or_default();
    assert_eq!(got, want, "\n--- expected ---\n{want}--- got ---\n{got}");
}

macro_rules! cases {
    ($($name:ident => $dir:literal,)*) => {
        $(#[test] fn $name() { check($dir); })*
    };
}

cases! {
    ovn_ipsec_pki => "ovn-ipsec-pki",
    ovn_ipsec_expiry => "ovn-ipsec-expiry",
    ovn_ipsec_no_pki => "ovn-ipsec-no-pki",
    ovn_ipsec_psk => "ovn-ipsec-psk",
    ovn_ipsec_geneve => "ovn-ipsec-geneve",
    ovn_uplink => "ovn-uplink",
    ovn_localnet_ipsec => "ovn-localnet-ipsec",
    ovn_localnet_name => "ovn-localnet-name",
    dhcp_values => "dhcp-values",
    dhcp_unknown_key => "dhcp-unknown-key",
    dhcp_fleet => "dhcp-fleet",
    dhcp_lease_unserved => "dhcp-lease-unserved",
    bad_ip => "bad-ip",
    tunnel_type_and_key => "tunnel-type-and-key",
    tunnel_keys_disagree => "tunnel-keys-disagree",
    bad_cidr => "bad-cidr",
    ifname_too_long => "ifname-too-long",
    ifname_invalid => "ifname-invalid",
    ifname_unsafe => "ifname-unsafe",
    duplicate_bridge => "duplicate-bridge",
    duplicate_port => "duplicate-port",
    interface_on_two_bridges => "interface-on-two-bridges",
    gre_to_self => "gre-to-self",
    duplicate_remote => "duplicate-remote",
    remote_on_two_bridges => "remote-on-two-bridges",
    forwarder_from_not_on_bridge => "forwarder-from-not-on-bridge",
    forwarder_source_host_bits => "forwarder-source-host-bits",
    forwarder_via_ovs_port => "forwarder-via-ovs-port",
    psk_file_missing => "psk-file-missing",
    psk_empty => "psk-empty",
    psk_too_short => "psk-too-short",
    psk_and_psk_file => "psk-and-psk-file",
    verbatim_conflict => "verbatim-conflict",
    unknown_key => "unknown-key",
    unknown_keys_at_once => "unknown-keys-at-once",
    toml_syntax => "toml-syntax",
    host_name_mismatch => "host-name-mismatch",
    datapath_unknown => "datapath-unknown",
    duplicate_underlay => "duplicate-underlay",
    all_at_once => "all-at-once",
    link_asymmetric => "link-asymmetric",
    remote_unknown => "remote-unknown",
    psk_mismatch => "psk-mismatch",
    loop_triangle => "loop-triangle",
    address_collision => "address-collision",
    subnet_overlap => "subnet-overlap",
    forwarder_too_narrow => "forwarder-too-narrow",
    mesh_errors => "mesh-errors",
    mesh_doubles_a_link => "mesh-doubles-a-link",
    ipv6_values => "ipv6-values",
    ipv6_fleet => "ipv6-fleet",
    ipv6_mesh => "ipv6-mesh",
    mesh_types_keys => "mesh-types-keys",
    ipv6_ranges => "ipv6-ranges",
    ovn_values => "ovn-values",
    ovn_fleet => "ovn-fleet",
    ovn_unknown_key => "ovn-unknown-key",
}

#[test]
fn every_error_case_has_a_test() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/errors");
    let count = std::fs::read_dir(dir).unwrap().count();
    assert_eq!(count, 57, "add the new case to the cases! list above");
}

/// A forwarder may NAT out of another bridge's own interface: on a userspace-datapath host the
/// uplink NIC is a port of a bridge (`br-phy`) and the host's uplink address sits on that bridge.
#[test]
fn a_forwarder_may_leave_by_another_bridges_own_interface() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("hosts")).unwrap();
    std::fs::write(
        dir.path().join("hosts/h1.toml"),
        "[host]\nname = \"h1\"\nunderlay_ip = \"192.0.2.1\"\n\n\
         [[bridges]]\nname = \"br-phy\"\ndatapath = \"netdev\"\nphysical_interfaces = [\"eth0\"]\n\n\
         [[bridges]]\nname = \"br0\"\ndatapath = \"netdev\"\n\
         host_interfaces = [{ name = \"priv0\", address = \"10.20.20.1/24\" }]\n\n\
         [bridges.forwarder]\nfrom = \"priv0\"\nvia = \"br-phy\"\nsource = \"10.20.20.0/24\"\n",
    )
    .unwrap();
    let fleet = load_fleet(dir.path()).unwrap_or_else(|d| {
        panic!(
            "{}",
            d.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        )
    });
    let rules = builder::render::iptables(&fleet.hosts[0]);
    assert!(
        rules.contains("-A OVSB-POSTROUTING -s 10.20.20.0/24 -o br-phy -j MASQUERADE"),
        "{rules}"
    );
}
