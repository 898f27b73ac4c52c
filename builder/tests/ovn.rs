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

fn builder(cwd: &Path, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_builder"))
        .current_dir(cwd)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// IPsec between chassis, through the builder's command line: `builder ovn-ca` makes the CA,
/// each build makes the keys of chassis that have none (and says so), bundles carry each
/// chassis' certificate and key (ovn.json 0600; `inspect` shows no key), the central's turns
/// IPsec on; a rebuild gives the same bytes, and a join makes one key and changes no other
/// chassis' bundle.
#[test]
fn ipsec_credentials_are_made_once_reproducible_and_a_join_touches_no_other_chassis() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (ok, _, err) = builder(
        t,
        &[
            "keygen",
            "--unencrypted",
            "--secret-key",
            "k.key",
            "--public-key",
            "k.pub",
        ],
    );
    assert!(ok, "{err}");
    let dir = t.join("profiles");
    let with_ipsec = |chassis: &[&str]| {
        write_fleet(&dir, chassis);
        let fleet = std::fs::read_to_string(dir.join("fleet.toml")).unwrap();
        let fleet = fleet.replacen(
            "central = \"c1\"\n",
            "central = \"c1\"\nipsec_pki = \"../pki\"\nipsec_expiry = \"2030-01-01\"\n",
            1,
        );
        std::fs::write(dir.join("fleet.toml"), fleet).unwrap();
    };
    with_ipsec(&["h1", "h2"]);
    // Without the CA, the fleet is refused at the line that names it, saying what to run.
    let (ok, _, err) = builder(t, &["check", "profiles"]);
    assert!(!ok);
    assert!(
        err.contains("fleet.toml:3:") && err.contains("OVN IPsec PKI"),
        "{err}"
    );
    assert!(err.contains("builder ovn-ca"), "{err}");
    let (ok, out, err) = builder(t, &["ovn-ca", "--pki", "pki"]);
    assert!(ok, "{err}");
    assert!(out.contains("ca.key (mode 0600"), "{out}");
    let (ok, _, err) = builder(t, &["ovn-ca", "--pki", "pki"]);
    assert!(!ok && err.contains("already exists"), "{err}");
    // check reads the CA but makes no key; it says which a build will make.
    let (ok, _, err) = builder(t, &["check", "profiles"]);
    assert!(ok, "{err}");
    assert!(
        err.contains("chassis h1 has no OVN IPsec key yet: `builder build` makes"),
        "{err}"
    );
    assert!(!t.join("pki/chassis").exists());

    let build = |out: &str| {
        let (ok, _, err) = builder(
            t,
            &[
                "build", "profiles", "--out", out, "--key", "k.key", "--serial", "7",
            ],
        );
        assert!(ok, "{err}");
        let bundles: BTreeMap<String, Vec<u8>> = std::fs::read_dir(t.join(out))
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|p| {
                let name = p.file_stem().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read(&p).unwrap())
            })
            .collect();
        (bundles, err)
    };
    let (first, err) = build("b1");
    for h in ["h1", "h2"] {
        assert!(
            err.contains(&format!(
                "made OVN IPsec key profiles/../pki/chassis/{h}.key for chassis {h}"
            )),
            "{err}"
        );
    }
    assert!(!err.contains("for chassis c1"), "{err}");
    let ovn = |b: &[u8]| {
        let v = bundle::read_unverified(b, &bundle::Limits::default()).unwrap();
        let mode = v.manifest.file(bundle::OVN_NAME).unwrap().mode;
        (
            bundle::ovn::OvnState::from_bytes(v.file(bundle::OVN_NAME).unwrap()).unwrap(),
            mode,
        )
    };
    let (h1, mode) = ovn(&first["h1"]);
    assert_eq!(mode, 0o600, "ovn.json holds a key");
    let creds = h1.ipsec.clone().expect("h1 has IPsec credentials");
    assert!(creds
        .private_key
        .starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    let (c1, mode) = ovn(&first["c1"]);
    assert!(c1.northbound_ipsec && c1.ipsec.is_none() && mode == 0o644);
    // A chassis' Geneve (OVN's tunnels, to any chassis) leaves only under an IPsec policy; the
    // central, no chassis here, has no such guard.
    let rules = |b: &[u8]| {
        let v = bundle::read_unverified(b, &bundle::Limits::default()).unwrap();
        String::from_utf8(v.file(bundle::IPTABLES_NAME).unwrap().to_vec()).unwrap()
    };
    assert!(rules(&first["h1"]).contains("\n-A OVSB-OUTPUT -j OVSB-GUARD-GENEVE\n"));
    assert!(!rules(&first["c1"]).contains("-A OVSB-OUTPUT -j"));
    let key_file = t.join("pki/chassis/h1.key");
    assert_eq!(
        std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::read_to_string(&key_file).unwrap(),
        creds.private_key
    );
    // inspect: certificates shown, the key not.
    let (ok, out, err) = builder(t, &["inspect", "b1/h1.tgz"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("BEGIN CERTIFICATE") && out.contains("<redacted sha256:"),
        "{out}"
    );
    let body: String = creds.private_key.lines().nth(1).unwrap().into();
    assert!(
        !out.contains(&body) && !out.contains("RSA PRIVATE KEY"),
        "{out}"
    );

    // The same inputs, the same bytes; no key made.
    let (again, err) = build("b2");
    assert_eq!(again, first);
    assert!(!err.contains("made OVN IPsec key"), "{err}");

    // h3 joins: one key made; h1's and h2's bundles unchanged.
    with_ipsec(&["h1", "h2", "h3"]);
    let (joined, err) = build("b3");
    assert_eq!(err.matches("made OVN IPsec key").count(), 1, "{err}");
    assert!(err.contains("chassis/h3.key for chassis h3"), "{err}");
    for h in ["h1", "h2"] {
        assert_eq!(joined[h], first[h], "{h}'s bundle changed when h3 joined");
    }
    let (h3, _) = ovn(&joined["h3"]);
    assert_eq!(
        h3.ipsec.unwrap().ca_cert,
        creds.ca_cert,
        "one CA for the fleet"
    );
}
