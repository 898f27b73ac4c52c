//! OVN IPsec on the in-memory host: a chassis bundle of a fleet with `ipsec_pki` writes the
//! certificate, key and CA certificate (0600, in strongSwan's directories) before OVS names them in
//! `Open_vSwitch` `other_config`; a failure or crash at any step puts the host back; a bundle
//! without IPsec removes exactly those keys and files; an `other_config` key someone else set is
//! not taken over; `status` shows a changed file by name only; a renewed certificate gets a new
//! file name (what ovs-monitor-ipsec notices), and the old file goes.
//!
//! Over 500 lines on purpose: one test per behaviour, each its own story on the fake host.

use crate::engine::tests::{assert_atomic_at_every_step, on_v1, v1, Fixture, FULL};
use bundle::ovn::IPSEC_OWNER;
use std::path::{Path, PathBuf};

const C1: &str = "[host]\nname = \"c1\"\nunderlay_ip = \"10.99.0.50\"\n";
const IPSEC_D: &str = "/etc/ipsec.d";

/// The file `other_config:key` names on `sys`.
fn named(sys: &crate::system::fake::FakeSystem, key: &str) -> String {
    sys.ovs.root_other_config[key].clone()
}

/// Whether `sys` has a file of ovs-bundle's under `dir` of `/etc/ipsec.d`.
fn has_file_in(sys: &crate::system::fake::FakeSystem, dir: &str) -> bool {
    let dir = Path::new(IPSEC_D).join(dir);
    sys.files.keys().any(|p| p.starts_with(&dir))
}

fn fleet(ipsec: bool) -> String {
    fleet_expiring(ipsec, None)
}

/// With IPsec certificates ending on `expiry` (YYYY-MM-DD), if given.
fn fleet_expiring(ipsec: bool, expiry: Option<&str>) -> String {
    format!(
        "[ovn]\ncentral = \"c1\"\ndatapath = \"netdev\"\n{}{}\n\
         [[ovn.switches]]\nname = \"ls0\"\nsubnet = \"10.30.0.0/24\"\n\n\
         [[ovn.chassis]]\nhost = \"t1\"\nswitch = \"ls0\"\naddress = \"10.30.0.1/24\"\n",
        if ipsec {
            "ipsec_pki = \"../pki\"\n"
        } else {
            ""
        },
        expiry.map_or(String::new(), |e| format!("ipsec_expiry = \"{e}\"\n"))
    )
}

/// t1 as in v1 without its PSK: ovs-monitor-ipsec takes PSKs or certificates on a host.
fn t1() -> String {
    let v1 = v1();
    let plain: Vec<&str> = v1.lines().filter(|l| !l.starts_with("psk")).collect();
    let text = plain.join("\n") + "\n";
    assert_ne!(text, v1, "v1 has a PSK to leave out");
    text
}

/// t1, a chassis of ls0, with IPsec or without. One CA per fixture (beside the fleet
/// directories the fixture makes).
fn bundle(fx: &Fixture, serial: u64, ipsec: bool) -> Vec<u8> {
    bundle_expiring(fx, serial, ipsec, None)
}

fn bundle_expiring(fx: &Fixture, serial: u64, ipsec: bool, expiry: Option<&str>) -> Vec<u8> {
    let pki = fx.dir.path().join("pki");
    if ipsec && !pki.exists() {
        builder::ovn_pki::init(&pki).unwrap();
    }
    fx.fleet_bundle(
        &[
            ("hosts/t1.toml", &t1()),
            ("hosts/c1.toml", C1),
            ("fleet.toml", &fleet_expiring(ipsec, expiry)),
        ],
        "t1",
        serial,
    )
}

/// On v1, a host with strongSwan (openvswitch-ipsec's dependency): its `/etc/ipsec.d`
/// directories, where the chassis' files go.
fn on_chassis_host(fx: &Fixture) -> (crate::system::fake::FakeSystem, crate::system::fake::View) {
    let (mut sys, g) = on_v1(fx);
    for d in ["cacerts", "certs", "private"] {
        sys.dirs.insert(Path::new(IPSEC_D).join(d));
    }
    sys.dirs.insert(IPSEC_D.into());
    (sys, g)
}

#[test]
fn without_strongswan_s_directories_nothing_changes_and_the_error_says_what_to_install() {
    let fx = Fixture::new();
    let (mut sys, _) = on_v1(&fx);
    let before = sys.view();
    let err = fx
        .applier(&mut sys)
        .apply_bundle(&bundle(&fx, 2, true), FULL)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "/etc/ipsec.d/cacerts: strongSwan's directory is missing: install openvswitch-ipsec"
        ),
        "{err}"
    );
    assert_eq!(sys.view(), before);
}

fn file(path: &str) -> PathBuf {
    PathBuf::from(path)
}

#[test]
fn a_chassis_gets_its_ipsec_files_then_other_config_and_every_failure_or_crash_puts_it_back() {
    let fx = Fixture::new();
    let (base, _) = on_chassis_host(&fx);
    let before = base.view();
    let b2 = bundle(&fx, 2, true);
    let mut sys = base.clone();
    fx.applier(&mut sys).apply_bundle(&b2, FULL).unwrap();
    let after = sys.view();
    let conf = &after.root.0;
    for (key, dir, name) in [
        ("ca_cert", "cacerts", "ovs-bundle-ovn-ca-"),
        ("certificate", "certs", "ovs-bundle-ovn-"),
        ("private_key", "private", "ovs-bundle-ovn-"),
    ] {
        // Named after the content: ovs-bundle-ovn[-ca]-<16 hex digits>.pem.
        let path = &conf[key];
        let digest = path
            .strip_prefix(&format!("/etc/ipsec.d/{dir}/{name}"))
            .and_then(|r| r.strip_suffix(".pem"))
            .unwrap_or_else(|| panic!("other_config:{key} = {path}"));
        assert!(
            digest.len() == 16 && digest.bytes().all(|b| b.is_ascii_hexdigit()),
            "{path}"
        );
        assert_eq!(sys.modes[&file(path)], 0o600, "{path}");
    }
    let (ca, cert, key) = (
        named(&sys, "ca_cert"),
        named(&sys, "certificate"),
        named(&sys, "private_key"),
    );
    assert_eq!(after.root.1[IPSEC_OWNER], "ca_cert,certificate,private_key");
    assert!(after.files[&file(&key)].starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    assert!(after.files[&file(&cert)].starts_with("-----BEGIN CERTIFICATE-----"));
    // The files come before the OVS transaction that names them.
    let calls = sys.calls.join("\n");
    let key_written = calls.find(&format!("write_file {key}"));
    let ovs = calls.find("ovs_apply");
    assert!(key_written.is_some() && key_written < ovs, "{calls}");
    // Every Geneve packet (OVN's tunnels) leaves only under an IPsec policy, from before OVS
    // changes on (the firewall step comes first). No skb mark: see `state::skb_mark_for`.
    let output = &after.chains.chains["OVSB-OUTPUT"].rules;
    assert!(
        output.contains(&"-A OVSB-OUTPUT -j OVSB-GUARD-GENEVE".to_string()),
        "{output:?}"
    );
    let firewall = calls.find("firewall_write");
    assert!(firewall.is_some() && firewall < ovs, "{calls}");
    assert!(!conf.contains_key("ipsec_skb_mark"), "{conf:?}");
    // A running charon is told to load the new CA (it reads cacerts/ only when it starts).
    let ca_written = calls.find(&format!("write_file {ca}"));
    let reread = calls.find("ipsec_reread_cacerts");
    assert!(ca_written.is_some() && ca_written < reread, "{calls}");
    // No drift right after.
    let (_, drift) = fx.applier(&mut sys).status().unwrap();
    assert!(drift.is_empty(), "{}", drift.render());

    assert_atomic_at_every_step(&fx, &base, &b2, (&before, &after), "ovs_apply");
}

#[test]
fn a_bundle_without_ipsec_removes_exactly_its_keys_and_files() {
    let fx = Fixture::new();
    let (mut sys, _) = on_chassis_host(&fx);
    // Someone else's other_config key: stays.
    sys.ovs
        .root_other_config
        .insert("n-handler-threads".into(), "2".into());
    fx.applier(&mut sys)
        .apply_bundle(&bundle(&fx, 2, false), FULL)
        .unwrap();
    let without = sys.view();
    fx.applier(&mut sys)
        .apply_bundle(&bundle(&fx, 3, true), FULL)
        .unwrap();
    let ca = named(&sys, "ca_cert");
    assert!(has_file_in(&sys, "private"));
    fx.applier(&mut sys)
        .apply_bundle(&bundle(&fx, 4, false), FULL)
        .unwrap();
    let after = sys.view();
    assert_eq!(after.root, without.root);
    assert!(
        !sys.files.keys().any(|p| p.starts_with(IPSEC_D)),
        "the files go (strongSwan's directories stay)"
    );
    // And a running charon forgets the CA.
    let calls = sys.calls.join("\n");
    let removed = calls.rfind(&format!("remove_file {ca}"));
    assert!(
        removed.is_some() && removed < calls.rfind("ipsec_reread_cacerts"),
        "{calls}"
    );
    assert_eq!(sys.ovs.root_other_config["n-handler-threads"], "2");
}

#[test]
fn an_other_config_key_someone_else_set_is_refused_before_any_change() {
    let fx = Fixture::new();
    let (mut sys, _) = on_chassis_host(&fx);
    sys.ovs
        .root_other_config
        .insert("certificate".into(), "/etc/ssl/mine.pem".into());
    let before = sys.view();
    let err = fx
        .applier(&mut sys)
        .apply_bundle(&bundle(&fx, 2, true), FULL)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("other_config:certificate is \"/etc/ssl/mine.pem\", set by someone else")
            && err.contains("ovs-vsctl remove Open_vSwitch . other_config certificate"),
        "{err}"
    );
    assert_eq!(sys.view(), before);
    assert!(!has_file_in(&sys, "private"));
}

#[test]
fn status_names_a_changed_key_file_without_its_content_and_apply_restores_it() {
    let fx = Fixture::new();
    let (mut sys, _) = on_chassis_host(&fx);
    fx.applier(&mut sys)
        .apply_bundle(&bundle(&fx, 2, true), FULL)
        .unwrap();
    let (ca, key_path) = (named(&sys, "ca_cert"), named(&sys, "private_key"));
    let key = sys.files[&file(&key_path)].clone();
    sys.files.insert(
        file(&key_path),
        b"-----BEGIN RSA PRIVATE KEY-----\nxx\n".to_vec(),
    );
    sys.ovs.root_other_config.remove("ca_cert");
    let (_, drift) = fx.applier(&mut sys).status().unwrap();
    let text = drift.render();
    assert!(text.contains(&key_path), "{text}");
    assert!(text.contains("ca_cert"), "{text}");
    let body = String::from_utf8_lossy(&key)
        .lines()
        .nth(1)
        .unwrap()
        .to_string();
    assert!(!text.contains(&body) && !text.contains("xx"), "{text}");
    fx.applier(&mut sys).apply_generation(2, FULL).unwrap();
    assert_eq!(sys.files[&file(&key_path)], key);
    assert_eq!(sys.ovs.root_other_config["ca_cert"], ca);
}

/// The central t1 (chassis h1) with IPsec, on a host whose northbound database has someone
/// else's switch and an `NB_Global` row with `ipsec` as given: the fixture, the host, its view
/// and the bundle.
fn central_with_ipsec(
    ipsec_on: bool,
) -> (
    Fixture,
    crate::system::fake::FakeSystem,
    crate::system::fake::View,
    Vec<u8>,
) {
    use crate::ovn_tests::{central_bundle_with, with_nb};
    let fx = Fixture::new();
    builder::ovn_pki::init(&fx.dir.path().join("pki")).unwrap();
    let (mut base, _) = on_chassis_host(&fx);
    with_nb(&mut base);
    base.nb.global = Some(crate::nb::NbGlobal {
        uuid: "g1".into(),
        ipsec: ipsec_on,
        external_ids: [("theirs".to_string(), "1".to_string())].into(),
    });
    let before = base.view();
    let b2 = central_bundle_with(&fx, &["h1"], 2, "ipsec_pki = \"../pki\"\n");
    (fx, base, before, b2)
}

#[test]
fn the_central_turns_ipsec_on_in_nb_global_and_every_failure_or_crash_puts_it_back() {
    use crate::ovn_tests::central_bundle_with;
    let (fx, base, before, b2) = central_with_ipsec(false);
    let mut sys = base.clone();
    let plan = fx
        .applier(&mut sys)
        .plan_bundle(&b2, FULL)
        .unwrap()
        .render();
    assert!(plan.contains("~ NB_Global ipsec=true"), "{plan}");
    fx.applier(&mut sys).apply_bundle(&b2, FULL).unwrap();
    let after = sys.view();
    let (on, ids) = after.nb_global.clone().unwrap();
    assert!(on);
    assert_eq!(ids[bundle::ovn::NB_IPSEC_OWNER], "t1");
    assert_eq!(ids["theirs"], "1");
    // The central is no chassis: no IPsec files of its own.
    assert!(!sys.files.keys().any(|p| p.starts_with(IPSEC_D)));
    let (_, drift) = fx.applier(&mut sys).status().unwrap();
    assert!(drift.is_empty(), "{}", drift.render());
    assert_atomic_at_every_step(&fx, &base, &b2, (&before, &after), "nb_apply");
    // Without IPsec again: off, and the mark gone; their key stays.
    fx.applier(&mut sys)
        .apply_bundle(&central_bundle_with(&fx, &["h1"], 3, ""), FULL)
        .unwrap();
    assert_eq!(sys.view().nb_global, before.nb_global);
}

#[test]
fn a_signed_bundle_with_certificates_and_a_psk_tunnel_is_refused_before_any_change() {
    let fx = Fixture::new();
    let (mut sys, _) = on_chassis_host(&fx);
    let before = sys.view();
    // ovn.json with IPsec credentials, in a bundle whose t1 keeps v1's PSK tunnel: what the
    // builder refuses, signed anyway.
    let with_ipsec = bundle(&fx, 2, true);
    let v = bundle::read_unverified(&with_ipsec, &bundle::Limits::default()).unwrap();
    let ovn = String::from_utf8(v.file(bundle::OVN_NAME).unwrap().to_vec()).unwrap();
    let forged = fx.fleet_bundle_with(
        &[
            ("hosts/t1.toml", &v1()),
            ("hosts/c1.toml", C1),
            ("fleet.toml", &fleet(false)),
        ],
        "t1",
        3,
        Some((bundle::OVN_NAME, &ovn)),
    );
    let err = fx
        .applier(&mut sys)
        .apply_bundle(&forged, FULL)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("ovs-monitor-ipsec takes PSKs or certificates, not both"),
        "{err}"
    );
    assert_eq!(sys.view(), before);
}

#[test]
fn a_key_file_or_system_id_conf_changed_alone_is_drift_and_put_back() {
    let fx = Fixture::new();
    let (mut sys, _) = on_chassis_host(&fx);
    fx.applier(&mut sys)
        .apply_bundle(&bundle(&fx, 2, true), FULL)
        .unwrap();
    let key_path = named(&sys, "private_key");
    let key = sys.files[&file(&key_path)].clone();
    // Only the key file gone: drift, by name.
    sys.files.remove(&file(&key_path));
    let (_, drift) = fx.applier(&mut sys).status().unwrap();
    assert!(!drift.is_empty(), "a missing key file is drift");
    assert!(
        drift.render().contains(&format!("+ {key_path}")),
        "{}",
        drift.render()
    );
    // The plan holds the key to write: its Debug form shows sizes, never the bytes.
    let shown = format!("{drift:?}");
    assert!(
        shown.contains(&key_path) && !shown.contains("PRIVATE KEY"),
        "{shown}"
    );
    fx.applier(&mut sys).apply_generation(2, FULL).unwrap();
    assert_eq!(sys.files[&file(&key_path)], key);
    // Only system-id.conf changed (ovs-ctl would set that system-id at the next start).
    let conf = std::path::PathBuf::from("/etc/openvswitch/system-id.conf");
    sys.files.insert(conf.clone(), b"someone-else\n".to_vec());
    let (_, drift) = fx.applier(&mut sys).status().unwrap();
    assert!(
        drift.render().contains("system-id.conf = t1"),
        "{}",
        drift.render()
    );
    fx.applier(&mut sys).apply_generation(2, FULL).unwrap();
    assert_eq!(sys.files[&conf], b"t1\n");
}

#[test]
fn ipsec_someone_else_turned_on_stays_on_through_an_apply_a_failure_and_a_removal() {
    use crate::ovn_tests::central_bundle_with;
    let (fx, base, before, b2) = central_with_ipsec(true);
    let mut sys = base.clone();
    fx.applier(&mut sys).apply_bundle(&b2, FULL).unwrap();
    let after = sys.view();
    // On, and not marked ours: nothing of ours to undo.
    assert_eq!(after.nb_global, before.nb_global);
    assert_atomic_at_every_step(&fx, &base, &b2, (&before, &after), "nb_apply");
    fx.applier(&mut sys)
        .apply_bundle(&central_bundle_with(&fx, &["h1"], 3, ""), FULL)
        .unwrap();
    assert_eq!(sys.view().nb_global, before.nb_global);
}

#[test]
fn leaving_ipsec_is_atomic_at_every_step() {
    let fx = Fixture::new();
    let (mut base, _) = on_chassis_host(&fx);
    fx.applier(&mut base)
        .apply_bundle(&bundle(&fx, 2, true), FULL)
        .unwrap();
    let before = base.view();
    let b3 = bundle(&fx, 3, false);
    let mut sys = base.clone();
    fx.applier(&mut sys).apply_bundle(&b3, FULL).unwrap();
    let after = sys.view();
    assert!(!after.root.1.contains_key(IPSEC_OWNER));
    assert_atomic_at_every_step(&fx, &base, &b3, (&before, &after), "ovs_apply");
}

#[test]
fn a_renewed_certificate_is_a_new_file_and_the_old_one_goes_atomically() {
    let fx = Fixture::new();
    let (mut base, _) = on_chassis_host(&fx);
    fx.applier(&mut base)
        .apply_bundle(&bundle(&fx, 2, true), FULL)
        .unwrap();
    let (ca, cert, key) = (
        named(&base, "ca_cert"),
        named(&base, "certificate"),
        named(&base, "private_key"),
    );
    // A leftover of a write cut short (key bytes, maybe) is ours too: drift, removed.
    let tmp = format!(
        "/etc/ipsec.d/private/{}",
        crate::system::temp_name(&key["/etc/ipsec.d/private/".len()..])
    );
    base.files.insert(file(&tmp), b"partial".to_vec());
    let before = base.view();
    // Renewal is a rebuild: the same key, a certificate with a new end date (and the CA's
    // certificate, which the builder issues with the same end date, from the same CA key).
    let b3 = bundle_expiring(&fx, 3, true, Some("2031-06-30"));
    let mut sys = base.clone();
    let plan = fx
        .applier(&mut sys)
        .plan_bundle(&b3, FULL)
        .unwrap()
        .render();
    assert!(plan.contains(&format!("- {cert}")), "{plan}");
    assert!(plan.contains(&format!("- {tmp}")), "{plan}");
    fx.applier(&mut sys).apply_bundle(&b3, FULL).unwrap();
    let after = sys.view();
    let renewed = named(&sys, "certificate");
    assert_ne!(renewed, cert, "a new certificate has a new name");
    assert!(renewed.starts_with("/etc/ipsec.d/certs/ovs-bundle-ovn-"));
    let new_ca = named(&sys, "ca_cert");
    assert_ne!(new_ca, ca);
    assert_eq!(
        named(&sys, "private_key"),
        key,
        "the same key, the same file"
    );
    assert!(
        !sys.files.contains_key(&file(&cert)),
        "the old certificate goes"
    );
    assert!(
        !sys.files.contains_key(&file(&ca)),
        "the old CA certificate goes"
    );
    assert!(!sys.files.contains_key(&file(&tmp)));
    let certs: Vec<_> = sys
        .files
        .keys()
        .filter(|p| p.starts_with("/etc/ipsec.d/certs"))
        .collect();
    assert_eq!(certs, [&file(&renewed)]);
    // The new files before the OVS step names them, the old ones removed after it; charon
    // rereads its CAs when the new one is there (both are trusted meanwhile) and when the old
    // one is gone.
    let calls: Vec<&str> = sys.calls.iter().map(String::as_str).collect();
    let at = |c: &str| {
        calls
            .iter()
            .rposition(|x| *x == c)
            .unwrap_or_else(|| panic!("{c}: {calls:#?}"))
    };
    let ovs = calls
        .iter()
        .rposition(|x| x.starts_with("ovs_apply"))
        .unwrap();
    let (ca_written, ca_removed) = (
        at(&format!("write_file {new_ca}")),
        at(&format!("remove_file {ca}")),
    );
    assert!(at(&format!("write_file {renewed}")) < ovs, "{calls:#?}");
    assert!(ovs < at(&format!("remove_file {cert}")), "{calls:#?}");
    let rereads: Vec<usize> = (0..calls.len())
        .filter(|&i| calls[i] == "ipsec_reread_cacerts")
        .collect();
    assert!(
        rereads.iter().any(|&r| ca_written < r && r < ovs)
            && rereads.iter().any(|&r| ca_removed < r),
        "{calls:#?}"
    );
    let (_, drift) = fx.applier(&mut sys).status().unwrap();
    assert!(drift.is_empty(), "{}", drift.render());
    assert_atomic_at_every_step(&fx, &base, &b3, (&before, &after), "ovs_apply");
}

#[test]
fn stored_ipsec_files_name_only_our_files_and_the_old_form_reads_as_its_paths() {
    use crate::state::IpsecFiles;
    let old: IpsecFiles =
        serde_json::from_str(r#"{"ca_cert": [65], "certificate": [66], "private_key": [67]}"#)
            .unwrap();
    assert_eq!(
        old.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "etc/ipsec.d/cacerts/ovs-bundle-ovn-ca.pem",
            "etc/ipsec.d/certs/ovs-bundle-ovn.pem",
            "etc/ipsec.d/private/ovs-bundle-ovn.pem",
        ]
    );
    let name = bundle::ovn::ipsec_file_name("private_key", b"k");
    let new = format!(r#"{{"etc/ipsec.d/private/{name}": [67]}}"#);
    let files: IpsecFiles = serde_json::from_str(&new).unwrap();
    assert_eq!(
        serde_json::to_string(&files).unwrap(),
        new.replace(": ", ":")
    );
    for bad in [
        "etc/ipsec.d/private/../../shadow",
        "etc/shadow",
        "etc/ipsec.d/private/theirs.pem",
        "etc/ipsec.d/private/sub/ovs-bundle-ovn-x.pem",
    ] {
        let e = serde_json::from_str::<IpsecFiles>(&format!(r#"{{"{bad}": [1]}}"#)).unwrap_err();
        assert!(
            e.to_string().contains("is not an OVN IPsec file"),
            "{bad}: {e}"
        );
    }
}
