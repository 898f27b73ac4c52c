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

fn run(env: &Env, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_applier"))
        .arg("--root")
        .arg(env.root.path())
        .args(["--host", "gw1"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The public key of the signing key, as the revoked directory would hold it.
fn revoke(env: &Env, name: &str, content: &[u8]) -> PathBuf {
    let dir = env.root.path().join("etc/ovs-bundle/revoked.d");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

/// A revocation the applier cannot read would un-revoke the key: every command refuses, naming
/// the file and what to do, before it reads a bundle or touches the host.
#[test]
fn an_unreadable_revocation_makes_every_command_refuse() {
    let (env, sk) = setup();
    let b = bundle(&env, &sk, "gw1", None);
    // A key cut short in copying: the base64 line broken off.
    let ci =
        std::fs::read_to_string(env.root.path().join("etc/ovs-bundle/trusted.d/ci.pub")).unwrap();
    let broken = revoke(&env, "ci-leaked.pub", &ci.as_bytes()[..ci.len() - 20]);
    let (code, out, err) = verify(&env, &b, &["--host", "gw1"]);
    assert_eq!(code, 10, "verified despite an unreadable revocation: {out}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains(&broken.display().to_string())
            && err.contains("cannot be read")
            && err.contains("Replace it with the revoked key's public key file"),
        "{err}"
    );
    let b = b.to_str().unwrap();
    for args in [
        vec!["keys"],
        vec!["apply", b],
        vec!["plan", b],
        vec!["status"],
    ] {
        let (code, _, err) = run(&env, &args);
        assert_eq!(code, 10, "{args:?}: {err}");
        assert!(err.contains("ci-leaked.pub"), "{args:?}: {err}");
    }
    assert!(!env.root.path().join("var/lib/ovs-bundle").exists());
    // Fixed, the key is revoked.
    std::fs::write(&broken, &ci).unwrap();
    let (code, _, err) = verify(&env, Path::new(b), &["--host", "gw1"]);
    assert_eq!(code, 10, "{err}");
    assert!(err.contains("which is revoked"), "{err}");
}

/// Revocations as operators write them: with a byte order mark (Windows editors), or named
/// `.PUB`. Each revokes the key; before, the first was a warning and the second not read.
#[test]
fn revocations_with_a_byte_order_mark_or_an_upper_case_name_are_in_force() {
    for (name, bom) in [("ci.pub", true), ("CI.PUB", false), ("ci.Pub", true)] {
        let (env, sk) = setup();
        let b = bundle(&env, &sk, "gw1", None);
        let key = std::fs::read(env.root.path().join("etc/ovs-bundle/trusted.d/ci.pub")).unwrap();
        let content = if bom {
            [&b"\xef\xbb\xbf"[..], &key].concat()
        } else {
            key
        };
        revoke(&env, name, &content);
        let (code, _, err) = verify(&env, &b, &["--host", "gw1"]);
        assert_eq!(code, 10, "{name}: {err}");
        assert!(err.contains("which is revoked"), "{name}: {err}");
        assert_eq!(err.lines().count(), 1, "{name}: {err}");
    }
}

/// Anything else in revoked.d is not a revocation, and is named so that nobody thinks it is.
#[test]
fn other_files_in_the_revoked_directory_are_named_in_a_warning() {
    let (env, sk) = setup();
    let b = bundle(&env, &sk, "gw1", None);
    let key = std::fs::read(env.root.path().join("etc/ovs-bundle/trusted.d/ci.pub")).unwrap();
    revoke(&env, "ci.pub.txt", &key);
    let (code, _, err) = verify(&env, &b, &["--host", "gw1"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("warning:") && err.contains("ci.pub.txt is not read: only *.pub files"),
        "{err}"
    );
}

/// A bundle whose manifest is signed in minisign's legacy mode (`minisign -S -l`) by the trusted
/// key: refused as such, not as "altered after signing".
#[test]
fn a_legacy_signature_is_named_and_says_what_to_do() {
    let (env, sk) = setup();
    let good = std::fs::read(bundle(&env, &sk, "gw1", None)).unwrap();
    let b = bundle::read_unverified(&good, &bundle::Limits::default()).unwrap();
    let manifest = env.root.path().join("manifest.json");
    std::fs::write(&manifest, &b.manifest_bytes).unwrap();
    let out = Command::new("minisign")
        .arg("-S")
        .arg("-l")
        .arg("-s")
        .arg(env.root.path().join("signing.key"))
        .arg("-m")
        .arg(&manifest)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("minisign is installed by the test command");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let legacy = std::fs::read(env.root.path().join("manifest.json.minisig")).unwrap();
    let mut members = vec![
        bundle::ArchiveMember {
            name: bundle::MANIFEST_NAME.into(),
            mode: 0o644,
            data: b.manifest_bytes.clone(),
        },
        bundle::ArchiveMember {
            name: bundle::SIGNATURE_NAME.into(),
            mode: 0o644,
            data: legacy,
        },
    ];
    for f in &b.manifest.files {
        members.push(bundle::ArchiveMember {
            name: f.path.clone(),
            mode: f.mode,
            data: b.files[&f.path].clone(),
        });
    }
    let path = env.root.path().join("legacy.tgz");
    std::fs::write(&path, bundle::write_archive(&members)).unwrap();
    let (code, out, err) = verify(&env, &path, &["--host", "gw1"]);
    assert_eq!(code, 10, "{err}");
    assert!(out.is_empty());
    assert!(
        err.contains("is a legacy (non-prehashed) signature; re-sign with this builder"),
        "{err}"
    );
    assert!(!err.contains("altered"), "{err}");
}

/// A closed pipe on standard output is no reason to die: `applier keys | true` exits 0 (it used
/// to panic on EPIPE, exit 134, which after an apply hid a committed generation).
#[test]
fn a_closed_pipe_on_stdout_does_not_change_the_exit_code() {
    let (env, _) = setup();
    let (read, write) = nix::unistd::pipe().unwrap();
    drop(read); // every write to the pipe now fails with EPIPE
    let out = Command::new(env!("CARGO_BIN_EXE_applier"))
        .arg("--root")
        .arg(env.root.path())
        .arg("keys")
        .stdout(std::process::Stdio::from(write))
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `status` where nothing was ever applied has its own exit code, and read-only commands
/// (`status`, `plan`) create nothing under the state directory.
#[test]
fn status_on_a_fresh_host_says_so_and_read_only_commands_write_nothing() {
    let (env, sk) = setup();
    let (code, out, err) = run(&env, &["status"]);
    assert_eq!(code, 5, "{out}{err}");
    assert!(out.contains("no generation applied yet"), "{out}");
    let b = bundle(&env, &sk, "gw1", None);
    // No ovsdb-server here: plan fails reading OVS, but must not have written anything first.
    let (code, _, err) = run(
        &env,
        &[
            "--ovsdb",
            "unix:/nonexistent/db.sock",
            "plan",
            b.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        !env.root.path().join("var/lib/ovs-bundle").exists(),
        "a read-only command created the state directory"
    );
}

/// With `--json`, every command prints exactly one JSON document with the schema version,
/// refusals and errors included, and exits as it would without it.
#[test]
fn every_command_prints_one_json_document_errors_included() {
    let (env, sk) = setup();
    let good = bundle(&env, &sk, "gw1", None);
    let other_host = bundle(&env, &sk, "node1", None);
    let doc = |args: &[&str]| {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let (code, out, err) = run(&env, &all);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: not one document:\n{out}\n{err}");
        let v: serde_json::Value =
            serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"));
        assert_eq!(v["version"], 1, "{args:?}: {v}");
        (code, v)
    };
    let (code, v) = doc(&["verify", good.to_str().unwrap()]);
    assert_eq!((code, v["result"].as_str()), (0, Some("ok")), "{v}");
    assert_eq!(v["host"], "gw1");
    let (code, v) = doc(&["verify", other_host.to_str().unwrap()]);
    assert_eq!((code, v["result"].as_str()), (12, Some("error")), "{v}");
    assert_eq!(v["exit"], 12);
    assert!(v["error"].as_str().unwrap().contains("not \"gw1\""), "{v}");
    let (code, v) = doc(&["keys"]);
    assert_eq!(code, 0);
    assert_eq!(v["keys"][0]["state"], "trusted", "{v}");
    let (code, v) = doc(&["generations"]);
    assert_eq!(
        (code, v["generations"].as_array().map(Vec::len)),
        (0, Some(0)),
        "{v}"
    );
    let (code, v) = doc(&["status"]);
    assert_eq!(
        (code, v["result"].as_str()),
        (5, Some("nothing-applied")),
        "{v}"
    );
    // A refused apply (a bundle for another host) is a document too.
    let (code, v) = doc(&["apply", other_host.to_str().unwrap()]);
    assert_eq!((code, v["exit"].as_i64()), (12, Some(12)), "{v}");
    // So is an error before any bundle is read.
    let (code, v) = doc(&["verify", "/nonexistent.tgz"]);
    assert_eq!((code, v["result"].as_str()), (1, Some("error")), "{v}");
}
