//! The `builder` binary as an operator runs it.

use std::path::Path;
use std::process::{Command, Output};

fn builder(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_builder"))
        .current_dir(cwd)
        .args(args)
        .output()
        .unwrap()
}

fn profiles() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../profiles")
        .display()
        .to_string()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn check_reports_every_error_and_exits_1() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/errors/all-at-once");
    let out = builder(Path::new("."), &["check", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert_eq!(err.matches(": error: ").count(), 6, "{err}");
    assert!(
        err.contains("hosts/b.toml:3:15: error: underlay_ip"),
        "{err}"
    );
    assert!(
        err.ends_with("builder: 6 error(s); nothing was built\n"),
        "{err}"
    );
}

#[test]
fn check_accepts_the_shipped_profiles() {
    let out = builder(Path::new("."), &["check", &profiles()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("3 host(s), all valid"));
}

#[test]
fn build_without_key_creates_an_example_key_once_and_is_reproducible_across_runs() {
    let cwd = tempfile::tempdir().unwrap();
    let first = builder(
        cwd.path(),
        &["build", &profiles(), "--out", "a", "--serial", "5"],
    );
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert!(text(&first.stderr).contains("created an UNENCRYPTED example key"));
    let second = builder(
        cwd.path(),
        &["build", &profiles(), "--out", "b", "--serial", "5"],
    );
    assert!(second.status.success());
    assert!(!text(&second.stderr).contains("created"), "key made twice");
    for host in ["gw1", "node1", "node2"] {
        let a = std::fs::read(cwd.path().join(format!("a/{host}.tgz"))).unwrap();
        let b = std::fs::read(cwd.path().join(format!("b/{host}.tgz"))).unwrap();
        assert_eq!(a, b, "{host}: two builds differ");
    }
    use std::os::unix::fs::PermissionsExt;
    for f in ["a/gw1.tgz", "keys/builder.key"] {
        let mode = std::fs::metadata(cwd.path().join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f} holds secrets");
    }
    // Rebuilding into the same directory says nothing changed.
    let again = builder(
        cwd.path(),
        &["build", &profiles(), "--out", "a", "--serial", "5"],
    );
    assert!(
        text(&again.stdout).contains("unchanged"),
        "{}",
        text(&again.stdout)
    );
}

#[test]
fn keygen_refuses_to_overwrite() {
    let cwd = tempfile::tempdir().unwrap();
    let args = [
        "keygen",
        "--secret-key",
        "s.key",
        "--public-key",
        "p.pub",
        "--unencrypted",
    ];
    assert!(builder(cwd.path(), &args).status.success());
    let before = std::fs::read(cwd.path().join("s.key")).unwrap();
    let out = builder(cwd.path(), &args);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("refusing to overwrite"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(std::fs::read(cwd.path().join("s.key")).unwrap(), before);
}

#[test]
fn keygen_with_a_passphrase_file_makes_an_encrypted_key_that_builds() {
    let cwd = tempfile::tempdir().unwrap();
    std::fs::write(cwd.path().join("pass"), "correct horse battery\n").unwrap();
    let args = [
        "keygen",
        "--secret-key",
        "s.key",
        "--public-key",
        "p.pub",
        "--passphrase-file",
        "pass",
    ];
    assert!(builder(cwd.path(), &args).status.success());
    let build = [
        "build",
        &profiles(),
        "--out",
        "o",
        "--key",
        "s.key",
        "--passphrase-file",
        "pass",
    ];
    let out = builder(cwd.path(), &build);
    assert!(out.status.success(), "{}", text(&out.stderr));
    std::fs::write(cwd.path().join("pass"), "wrong\n").unwrap();
    let out = builder(cwd.path(), &build);
    assert_eq!(out.status.code(), Some(1), "wrong passphrase accepted");
}

#[test]
fn inspect_redacts_psks() {
    let cwd = tempfile::tempdir().unwrap();
    assert!(builder(
        cwd.path(),
        &["build", &profiles(), "--out", "o", "--host", "gw1"]
    )
    .status
    .success());
    let out = builder(cwd.path(), &["inspect", "o/gw1.tgz"]);
    assert!(out.status.success());
    let shown = text(&out.stdout);
    assert!(shown.contains("\"psk\": \"<redacted sha256:"), "{shown}");
    assert!(!shown.contains("EXAMPLE-ONLY"), "PSK leaked:\n{shown}");
    assert!(shown.contains("host:      gw1"));
}

#[test]
fn usage_errors_exit_64() {
    let out = builder(Path::new("."), &["build"]);
    assert_eq!(out.status.code(), Some(64));
}
