//! The OVN IPsec PKI against the tools that consume it: OpenSSL (which ovs-monitor-ipsec runs
//! to read the local name) and strongSwan's own parser (`pki`, the plugins charon loads keys
//! and certificates with).

use builder::ovn_pki::{self, parse_expiry, Pki, PkiError};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

fn run(cmd: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e} (test.sh installs it)"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn chassis_certificates_verify_and_read_as_ovs_monitor_ipsec_and_strongswan_read_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");
    let ca_pem = ovn_pki::init(&dir).unwrap();
    assert!(ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("ca.key")), 0o600);
    // An existing CA is never replaced.
    let err = ovn_pki::init(&dir).unwrap_err();
    assert!(matches!(err, PkiError::Exists { .. }), "{err}");

    let expiry = parse_expiry("2030-01-01").unwrap();
    let pki = Pki::open(&dir, expiry).unwrap();
    let (creds, made) = pki.chassis("node1").unwrap();
    assert!(made);
    let key_file = dir.join("chassis/node1.key");
    assert_eq!(mode(&key_file), 0o600);
    assert_eq!(mode(&dir.join("chassis")), 0o700);
    // Reproducible: the same key, CA and expiry give the same bytes, from a new opening too.
    let (again, made) = Pki::open(&dir, expiry).unwrap().chassis("node1").unwrap();
    assert!(!made);
    assert_eq!(again, creds);
    assert_eq!(creds.ca_cert, pki.ca_pem());
    // Another expiry is another certificate (renewal is a rebuild), of the same key.
    let later = Pki::open(&dir, parse_expiry("2031-06-30").unwrap())
        .unwrap()
        .chassis("node1")
        .unwrap()
        .0;
    assert_ne!(later.certificate, creds.certificate);
    assert_eq!(later.private_key, creds.private_key);
    // Debug output never shows the key.
    assert!(!format!("{creds:?}").contains("PRIVATE KEY"));

    let files = tmp.path();
    std::fs::write(files.join("ca.pem"), &creds.ca_cert).unwrap();
    std::fs::write(files.join("node1.pem"), &creds.certificate).unwrap();
    std::fs::write(files.join("node1.key"), &creds.private_key).unwrap();
    let p = |n: &str| files.join(n).display().to_string();

    let (ok, out) = run(
        "openssl",
        &["verify", "-CAfile", &p("ca.pem"), &p("node1.pem")],
    );
    assert!(ok && out.contains(": OK"), "openssl verify:\n{out}");
    // ovs-monitor-ipsec: `openssl x509 -noout -subject -nameopt RFC2253`, then the regex
    // "CN=(.+?)," for its local name (so the CN must be followed by another attribute).
    let (ok, out) = run(
        "openssl",
        &[
            "x509",
            "-noout",
            "-subject",
            "-nameopt",
            "RFC2253",
            "-in",
            &p("node1.pem"),
        ],
    );
    assert!(ok, "{out}");
    let name = out
        .split("CN=")
        .nth(1)
        .and_then(|rest| rest.split_once(','))
        .map(|(cn, _)| cn);
    assert_eq!(
        name,
        Some("node1"),
        "subject as ovs-monitor-ipsec reads it: {out}"
    );
    let (ok, out) = run(
        "openssl",
        &[
            "x509",
            "-noout",
            "-enddate",
            "-ext",
            "subjectAltName,basicConstraints",
            "-in",
            &p("node1.pem"),
        ],
    );
    assert!(ok, "{out}");
    assert!(out.contains("notAfter=Jan  1 23:59:59 2030 GMT"), "{out}");
    assert!(out.contains("DNS:node1"), "{out}");
    assert!(out.contains("CA:FALSE"), "{out}");
    let (ok, out) = run(
        "openssl",
        &[
            "x509",
            "-noout",
            "-ext",
            "basicConstraints,keyUsage",
            "-in",
            &p("ca.pem"),
        ],
    );
    assert!(
        ok && out.contains("CA:TRUE") && out.contains("Certificate Sign"),
        "{out}"
    );

    // strongSwan: the key loads as the RSA key ovs-monitor-ipsec declares it to be
    // (`: RSA file`), and the certificate chains to the CA.
    let (ok, out) = run(
        "pki",
        &["--print", "--type", "rsa", "--in", &p("node1.key")],
    );
    assert!(ok && out.contains("RSA"), "pki --print --type rsa:\n{out}");
    let (ok, out) = run(
        "pki",
        &[
            "--verify",
            "--in",
            &p("node1.pem"),
            "--cacert",
            &p("ca.pem"),
        ],
    );
    assert!(
        ok && out.contains("certificate trusted"),
        "pki --verify:\n{out}"
    );
    let (ok, out) = run("pki", &["--print", "--in", &p("node1.pem")]);
    assert!(ok && out.contains("node1"), "pki --print:\n{out}");
}

#[test]
fn keys_others_can_read_or_that_do_not_parse_are_refused_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");
    ovn_pki::init(&dir).unwrap();
    let ca = dir.join("ca.key");
    std::fs::set_permissions(&ca, std::fs::Permissions::from_mode(0o640)).unwrap();
    let err = Pki::open(&dir, ovn_pki::NO_EXPIRY).err().unwrap();
    assert!(matches!(err, PkiError::Exposed { .. }), "{err}");
    assert!(err.to_string().contains("ca.key"), "{err}");
    assert!(err.hint().contains("chmod go="), "{}", err.hint());
    std::fs::set_permissions(&ca, std::fs::Permissions::from_mode(0o600)).unwrap();

    let pki = Pki::open(&dir, ovn_pki::NO_EXPIRY).unwrap();
    let key = pki.key_path("node2");
    std::fs::create_dir_all(key.parent().unwrap()).unwrap();
    std::fs::write(&key, "-----BEGIN RSA PRIVATE KEY-----\ncut short\n").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let err = pki.chassis("node2").unwrap_err();
    assert!(matches!(err, PkiError::BadKey { .. }), "{err}");
    assert!(err.to_string().contains("node2.key"), "{err}");
    // Nothing of the key's text in the message.
    assert!(!err.to_string().contains("cut short"), "{err}");

    // A PKI directory others can read into is refused before any key goes in.
    let open_dir = tmp.path().join("open");
    std::fs::create_dir(&open_dir).unwrap();
    std::fs::set_permissions(&open_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let err = ovn_pki::init(&open_dir).unwrap_err();
    assert!(matches!(err, PkiError::Exposed { .. }), "{err}");
    assert!(!open_dir.join("ca.key").exists());

    let missing = Pki::open(&tmp.path().join("nowhere"), ovn_pki::NO_EXPIRY)
        .err()
        .unwrap();
    assert!(matches!(missing, PkiError::Io { .. }), "{missing}");
    assert!(
        missing.hint().contains("builder ovn-ca"),
        "{}",
        missing.hint()
    );
}
