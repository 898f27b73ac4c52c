//! `builder cloud-init --apt-source --apt-key`: user data that installs the applier package from
//! the operator's apt repository on a stock image. Every variant (plain, gzip-compressed, without
//! a repository) is checked with `cloud-init schema` (Debian's cloud-init package, which
//! scripts/test-needs installs); hostile values are refused naming their flag.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Output};

const KEY: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmDMEZQAAABYJKwYBBAHaRw8BAQdAexample\ntGFvdnMtYnVuZGxl\n=abcd\n-----END PGP PUBLIC KEY BLOCK-----\n";
const SOURCE: &str = "deb [signed-by=$KEY_FILE] http://10.0.2.100/ovs-bundle bookworm main";

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

/// `builder cloud-init gw1` with `extra` arguments, in a fresh directory holding `key.asc`.
fn cloud_init(key: &str, extra: &[&str]) -> (tempfile::TempDir, Output) {
    let cwd = tempfile::tempdir().unwrap();
    std::fs::write(cwd.path().join("key.asc"), key).unwrap();
    let p = profiles();
    let mut args = vec!["cloud-init", "gw1", "--profiles", &p, "--out", "gw1.yaml"];
    args.extend_from_slice(extra);
    let out = builder(cwd.path(), &args);
    (cwd, out)
}

/// `cloud-init schema` on `yaml` (plain text); panics with its report when it is not valid.
fn schema_valid(yaml: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("user-data");
    std::fs::write(&file, yaml).unwrap();
    let out = Command::new("cloud-init")
        .args(["schema", "--config-file"])
        .arg(&file)
        .output()
        .expect("cloud-init is missing: install Debian's cloud-init package (scripts/test-needs)");
    assert!(
        out.status.success(),
        "cloud-init schema refused the user data:\n{}{}\n{}",
        text(&out.stdout),
        text(&out.stderr),
        text(yaml)
    );
}

#[test]
fn apt_repository_user_data_installs_the_applier_package_and_is_valid() {
    let (cwd, out) = cloud_init(KEY, &["--apt-source", SOURCE, "--apt-key", "key.asc"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let yaml = std::fs::read_to_string(cwd.path().join("gw1.yaml")).unwrap();
    assert!(
        yaml.contains("apt:\n  preserve_sources_list: true\n  sources:\n    ovs-bundle.list:\n")
    );
    assert!(
        yaml.contains("      source: \"deb [signed-by=/etc/apt/keyrings/ovs-bundle.asc] http://10.0.2.100/ovs-bundle bookworm main\"\n"),
        "{yaml}"
    );
    assert!(yaml.contains("  - path: /etc/apt/keyrings/ovs-bundle.asc\n    permissions: '0644'\n    content: \"-----BEGIN PGP PUBLIC KEY BLOCK-----\\n\\nmDMEZ"), "{yaml}");
    assert!(yaml.contains(
        "packages: [openvswitch-switch, iptables, ifupdown, openvswitch-ipsec, strongswan, libstrongswan-standard-plugins, ovs-bundle-applier]\n"
    ));
    schema_valid(yaml.as_bytes());
}

#[test]
fn image_carried_applier_user_data_stays_valid() {
    let (cwd, out) = cloud_init(KEY, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let yaml = std::fs::read(cwd.path().join("gw1.yaml")).unwrap();
    assert!(!text(&yaml).contains("ovs-bundle-applier"));
    assert!(!text(&yaml).contains("\napt:"));
    schema_valid(&yaml);
}

#[test]
fn compressed_user_data_is_valid_once_decompressed() {
    // A limit below the plain text's size forces gzip (each run signs with its own example key,
    // so sizes vary by a few bytes between runs).
    let apt = [
        "--apt-source",
        SOURCE,
        "--apt-key",
        "key.asc",
        "--serial",
        "3",
    ];
    let (cwd, out) = cloud_init(KEY, &apt);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let plain = std::fs::read(cwd.path().join("gw1.yaml")).unwrap();
    let limit = (plain.len() - 200).to_string();
    let mut args = apt.to_vec();
    args.extend(["--max-size", &limit]);
    let (cwd, out) = cloud_init(KEY, &args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("gzip-compressed"),
        "{}",
        text(&out.stdout)
    );
    let gz = std::fs::read(cwd.path().join("gw1.yaml")).unwrap();
    assert!(gz.len() < plain.len());
    let mut yaml = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut yaml)
        .unwrap();
    // (Each run makes its own example signing key, so the bytes differ from `plain`.)
    assert!(text(&yaml).starts_with("#cloud-config\n"));
    schema_valid(&yaml);
}

#[test]
fn hostile_apt_source_is_refused_naming_the_flag() {
    for source in [
        "deb http://x/ bookworm main\npackages: [evil]",
        "deb http://x/ bookworm main\r",
        "deb http://x/\tbookworm main",
        "deb-src http://x/ bookworm main",
        "http://x/ bookworm main",
        "deb http://x/",
        "deb http://x/ bookworm main\u{2028}runcmd: [reboot]",
    ] {
        let (cwd, out) = cloud_init(KEY, &["--apt-source", source, "--apt-key", "key.asc"]);
        assert_eq!(
            out.status.code(),
            Some(64),
            "{source:?}: {}",
            text(&out.stderr)
        );
        let err = text(&out.stderr);
        assert!(err.contains("--apt-source"), "{err}");
        assert!(err.contains("is not one apt source line"), "{err}");
        assert!(!cwd.path().join("gw1.yaml").exists(), "nothing written");
    }
}

#[test]
fn hostile_or_wrong_apt_key_is_refused_naming_the_flag() {
    for key in [
        "not a key",
        "-----BEGIN PGP PUBLIC KEY BLOCK-----\nabc\u{1b}[0m\n-----END PGP PUBLIC KEY BLOCK-----\n",
        "-----BEGIN PGP PRIVATE KEY BLOCK-----\nabc\n-----END PGP PRIVATE KEY BLOCK-----\n",
    ] {
        let (_cwd, out) = cloud_init(key, &["--apt-source", SOURCE, "--apt-key", "key.asc"]);
        assert_eq!(
            out.status.code(),
            Some(64),
            "{key:?}: {}",
            text(&out.stderr)
        );
        let err = text(&out.stderr);
        assert!(
            err.contains("--apt-key key.asc: not an ASCII-armored"),
            "{err}"
        );
    }
    // Binary (non-UTF-8) keyrings too.
    let cwd = tempfile::tempdir().unwrap();
    std::fs::write(cwd.path().join("key.gpg"), [0x99u8, 0x01, 0xff, 0xfe]).unwrap();
    let p = profiles();
    let out = builder(
        cwd.path(),
        &[
            "cloud-init",
            "gw1",
            "--profiles",
            &p,
            "--out",
            "o",
            "--apt-source",
            SOURCE,
            "--apt-key",
            "key.gpg",
        ],
    );
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--apt-key key.gpg"));
}

#[test]
fn yaml_inside_the_key_stays_inside_its_string() {
    let key = "-----BEGIN PGP PUBLIC KEY BLOCK-----\nruncmd: [\"reboot\"]\n\"quoted\" 'and' #comment\n-----END PGP PUBLIC KEY BLOCK-----\n";
    let (cwd, out) = cloud_init(key, &["--apt-source", SOURCE, "--apt-key", "key.asc"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let yaml = std::fs::read_to_string(cwd.path().join("gw1.yaml")).unwrap();
    assert!(
        !yaml.lines().any(|l| l.starts_with("runcmd: [\"reboot\"]")),
        "{yaml}"
    );
    assert!(yaml.contains(r#"content: "-----BEGIN PGP PUBLIC KEY BLOCK-----\nruncmd: [\"reboot\"]\n\"quoted\" 'and' #comment\n-----END"#), "{yaml}");
    schema_valid(yaml.as_bytes());
}

#[test]
fn signed_by_is_the_apt_key_whatever_the_source_says() {
    let key = "/etc/apt/keyrings/ovs-bundle.asc";
    for (given, written) in [
        (
            "deb http://r/ bookworm main",
            format!("deb [signed-by={key}] http://r/ bookworm main"),
        ),
        (
            "deb [arch=amd64] http://r/ ./",
            format!("deb [signed-by={key} arch=amd64] http://r/ ./"),
        ),
        (
            "deb  [signed-by=$KEY_FILE]   http://r/ ./",
            format!("deb [signed-by={key}] http://r/ ./"),
        ),
    ] {
        let (cwd, out) = cloud_init(KEY, &["--apt-source", given, "--apt-key", "key.asc"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let yaml = std::fs::read_to_string(cwd.path().join("gw1.yaml")).unwrap();
        assert!(
            yaml.contains(&format!("source: \"{written}\"\n")),
            "{given}: {yaml}"
        );
    }
    let (_c, out) = cloud_init(
        KEY,
        &[
            "--apt-source",
            "deb [signed-by=/usr/share/keyrings/x.gpg] http://r/ ./",
            "--apt-key",
            "key.asc",
        ],
    );
    assert_eq!(out.status.code(), Some(64));
    assert!(text(&out.stderr).contains("signed-by key other than the --apt-key"));
}

#[test]
fn the_flags_go_together_and_not_with_no_packages() {
    let (_c, out) = cloud_init(KEY, &["--apt-source", SOURCE]);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--apt-key"));
    let (_c, out) = cloud_init(KEY, &["--apt-key", "key.asc"]);
    assert_eq!(out.status.code(), Some(64));
    let (_c, out) = cloud_init(
        KEY,
        &[
            "--apt-source",
            SOURCE,
            "--apt-key",
            "key.asc",
            "--no-packages",
        ],
    );
    assert_eq!(out.status.code(), Some(64));
    assert!(
        text(&out.stderr).contains("--no-packages"),
        "{}",
        text(&out.stderr)
    );
}
