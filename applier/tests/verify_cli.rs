//! `applier verify` as a host runs it: trust from ROOT/etc/ovs-bundle/trusted.d, one line per
//! refusal, documented exit codes.

use builder::build::{build_host, BuildParams};
use builder::sign::{keygen, load_secret_key, Passphrase, Protection};
use std::path::{Path, PathBuf};
use std::process::Command;

struct Env {
    root: tempfile::TempDir,
    other_pub: PathBuf,
}

fn setup() -> (Env, builder::sign::SecretKey) {
    let root = tempfile::tempdir().unwrap();
    let trusted = root.path().join("etc/ovs-bundle/trusted.d");
    std::fs::create_dir_all(&trusted).unwrap();
    let sk_path = root.path().join("signing.key");
    keygen(&sk_path, &trusted.join("ci.pub"), Protection::Unencrypted).unwrap();
    let other_pub = root.path().join("other.pub");
    keygen(
        &root.path().join("other.key"),
        &other_pub,
        Protection::Unencrypted,
    )
    .unwrap();
    let sk = load_secret_key(&sk_path, Passphrase::None).unwrap();
    (Env { root, other_pub }, sk)
}

fn bundle(env: &Env, sk: &builder::sign::SecretKey, host: &str, expires: Option<u64>) -> PathBuf {
    let profiles = Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles");
    let fleet = builder::profile::load_fleet(&profiles).unwrap();
    let h = fleet.hosts.iter().find(|h| h.name == host).unwrap();
    let bytes = build_host(h, sk, BuildParams { serial: 9, expires });
    let path = env.root.path().join(format!("{host}-{expires:?}.tgz"));
    std::fs::write(&path, bytes).unwrap();
    path
}

fn verify(env: &Env, bundle: &Path, extra: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_applier"))
        .arg("--root")
        .arg(env.root.path())
        .arg("verify")
        .arg(bundle)
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_good_bundle_verifies_against_the_trusted_directory() {
    let (env, sk) = setup();
    let b = bundle(&env, &sk, "gw1", None);
    let (code, out, err) = verify(&env, &b, &["--host", "gw1"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("OK: host gw1, serial 9"), "{out}");
}

#[test]
fn each_refusal_is_one_line_with_its_exit_code() {
    let (env, sk) = setup();
    let good = bundle(&env, &sk, "gw1", None);
    let mut bytes = std::fs::read(&good).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x55;
    let tampered = env.root.path().join("tampered.tgz");
    std::fs::write(&tampered, &bytes).unwrap();
    let junk = env.root.path().join("junk.tgz");
    std::fs::write(&junk, b"not a bundle at all").unwrap();
    let expired = bundle(&env, &sk, "gw1", Some(1));
    let other = env.other_pub.to_str().unwrap().to_string();
    let cases: Vec<(&Path, Vec<&str>, i32, &str)> = vec![
        (&tampered, vec!["--host", "gw1"], 11, "refused"),
        (&junk, vec!["--host", "gw1"], 11, "not a bundle"),
        (
            &good,
            vec!["--host", "node1"],
            12,
            "bundle is for host \"gw1\", not \"node1\"",
        ),
        (
            &expired,
            vec!["--host", "gw1"],
            13,
            "expired at 1970-01-01T00:00:01Z",
        ),
        (
            &good,
            vec!["--host", "gw1", "--trusted-key", &other],
            10,
            "which is not trusted",
        ),
    ];
    for (path, args, want_code, want_text) in cases {
        let (code, out, err) = verify(&env, path, &args);
        assert_eq!(code, want_code, "{args:?}: {err}");
        assert!(out.is_empty());
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(want_text), "want {want_text:?} in {err}");
    }
}

#[test]
fn no_trusted_keys_names_the_directory() {
    let (env, sk) = setup();
    let b = bundle(&env, &sk, "gw1", None);
    std::fs::remove_dir_all(env.root.path().join("etc/ovs-bundle/trusted.d")).unwrap();
    let (code, _, err) = verify(&env, &b, &["--host", "gw1"]);
    assert_eq!(code, 14);
    assert!(err.contains("etc/ovs-bundle/trusted.d"), "{err}");
}

#[test]
fn a_damaged_key_file_in_the_trusted_directory_is_skipped_with_a_warning() {
    let (env, sk) = setup();
    let b = bundle(&env, &sk, "gw1", None);
    std::fs::write(
        env.root.path().join("etc/ovs-bundle/trusted.d/broken.pub"),
        "",
    )
    .unwrap();
    let (code, _, err) = verify(&env, &b, &["--host", "gw1"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("warning: ignoring trusted key") && err.contains("broken.pub"),
        "{err}"
    );
    // A key named on the command line must be valid.
    let broken = env.root.path().join("etc/ovs-bundle/trusted.d/broken.pub");
    let (code, _, err) = verify(
        &env,
        &b,
        &["--host", "gw1", "--trusted-key", broken.to_str().unwrap()],
    );
    assert_eq!(code, 1, "{err}");
}
