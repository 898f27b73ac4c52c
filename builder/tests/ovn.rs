//! OVN fleets: a host joining changes only its own bundle and the central's (by one logical
//! port), never another chassis' bundle, byte for byte.

use builder::build::{build_host, BuildParams};
use builder::profile::load_fleet;
use builder::sign::{keygen, load_secret_key, Passphrase, Protection};
use std::collections::BTreeMap;
use std::path::Path;

const P: BuildParams = BuildParams {
    serial: 42,
    expires: None,
};

fn write_fleet(dir: &Path, chassis: &[&str]) {
    std::fs::create_dir_all(dir.join("hosts")).unwrap();
    let mut fleet =
        "[ovn]\ncentral = \"c1\"\n\n[[ovn.switches]]\nname = \"ls0\"\nsubnet = \"10.30.0.0/24\"\n"
            .to_string();
    std::fs::write(
        dir.join("hosts/c1.toml"),
        "[host]\nname = \"c1\"\nunderlay_ip = \"192.0.2.100\"\n",
    )
    .unwrap();
    for (i, h) in chassis.iter().enumerate() {
        let n = i + 1;
        std::fs::write(
            dir.join(format!("hosts/{h}.toml")),
            format!("[host]\nname = \"{h}\"\nunderlay_ip = \"192.0.2.{n}\"\n"),
        )
        .unwrap();
        fleet.push_str(&format!(
            "\n[[ovn.chassis]]\nhost = \"{h}\"\nswitch = \"ls0\"\naddress = \"10.30.0.{n}/24\"\n"
        ));
    }
    std::fs::write(dir.join("fleet.toml"), fleet).unwrap();
}

fn build_all(dir: &Path, key: &builder::sign::SecretKey) -> BTreeMap<String, Vec<u8>> {
    let fleet = load_fleet(dir).unwrap_or_else(|d| panic!("{d:#?}"));
    fleet
        .hosts
        .iter()
        .map(|h| (h.name.clone(), build_host(h, key, P)))
        .collect()
}

#[test]
fn a_joining_host_changes_only_its_own_and_the_centrals_bundle() {
    let tmp = tempfile::tempdir().unwrap();
    let (skp, pkp) = (tmp.path().join("k.key"), tmp.path().join("k.pub"));
    keygen(&skp, &pkp, Protection::Unencrypted).unwrap();
    let key = load_secret_key(&skp, Passphrase::None).unwrap();
    let dir = tmp.path().join("profiles");
    write_fleet(&dir, &["h1", "h2", "h3"]);
    let before = build_all(&dir, &key);
    write_fleet(&dir, &["h1", "h2", "h3", "h4"]);
    let after = build_all(&dir, &key);
    for h in ["h1", "h2", "h3"] {
        assert_eq!(before[h], after[h], "{h}'s bundle changed when h4 joined");
    }
    assert_ne!(before["c1"], after["c1"]);
    assert!(!before.contains_key("h4") && after.contains_key("h4"));
    // The central's northbound state gained exactly h4's port.
    let nb = |b: &[u8]| {
        let v = bundle::read_unverified(b, &bundle::Limits::default()).unwrap();
        bundle::ovn::OvnState::from_bytes(v.file(bundle::OVN_NAME).unwrap()).unwrap()
    };
    let (old, new) = (nb(&before["c1"]), nb(&after["c1"]));
    let names = |s: &bundle::ovn::OvnState| -> Vec<String> {
        s.northbound[0]
            .ports
            .iter()
            .map(|p| p.name.clone())
            .collect()
    };
    assert_eq!(names(&old), ["ovsb-h1", "ovsb-h2", "ovsb-h3"]);
    assert_eq!(names(&new), ["ovsb-h1", "ovsb-h2", "ovsb-h3", "ovsb-h4"]);
    assert!(old.chassis.is_empty(), "the central is no chassis here");
    let h4 = nb(&after["h4"]);
    assert_eq!(h4.chassis["ovn-remote"], "tcp:192.0.2.100:6642");
    assert_eq!(h4.chassis["ovn-encap-ip"], "192.0.2.4");
    assert_eq!(h4.chassis["system-id"], "h4");
}
