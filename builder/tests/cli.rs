//! The `builder` binary as an operator runs it.
//!
//! Over 500 lines on purpose: one test per command and refusal, each as an operator would type it.

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

/// Two misspelt keys in one file (`psk_fil`, `remote_ipp`) took two runs: both show in one, each
/// with its place, the line with carets under the key, and the key it was meant to be; the
/// value of an unknown key (it may be a misspelt `psk`) is never shown.
#[test]
fn check_shows_every_unknown_key_at_once_with_carets_and_a_suggestion() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/errors/unknown-keys-at-once");
    let out = builder(&dir, &["check", "."]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    for want in [
        "./hosts/h1.toml:13:1: error: unknown key `remote_ipp` in [[bridges.gre]]\n  \
         13 | remote_ipp = \"*********\"\n     | ^^^^^^^^^^\n  hint: did you mean `remote_ip`?\n",
        "./hosts/h1.toml:14:1: error: unknown key `psk_fil` in [[bridges.gre]]\n  \
         14 | psk_fil = \"****************\"\n     | ^^^^^^^\n  hint: did you mean `psk_file`?\n",
        "./hosts/h2.toml:4:15: error: underlay_ip \"192.0.2.300\" is not an IPv4 or IPv6 address\n",
    ] {
        assert!(err.contains(want), "missing:\n{want}\nin:\n{err}");
    }
    assert!(!err.contains("never-shown"), "{err}");
    assert!(!err.contains("docs/profiles.md"), "{err}");
    assert!(
        err.ends_with("builder: 9 error(s); nothing was built\n"),
        "{err}"
    );
}

/// Every argument and option of every subcommand has a help text, and the hints of errors point
/// at what an installed builder has (its help and man pages), not at the source tree's docs/.
#[test]
fn every_argument_has_help_text() {
    for cmd in [
        "keygen",
        "check",
        "build",
        "inspect",
        "cloud-init",
        "import",
        "import ovs-crate",
    ] {
        let mut args: Vec<&str> = cmd.split(' ').collect();
        args.push("--help");
        let out = builder(Path::new("."), &args);
        assert!(out.status.success());
        let help = text(&out.stdout);
        let lines: Vec<&str> = help.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let item =
                line.starts_with("  <") || line.starts_with("  -") || line.starts_with("      --");
            if !item {
                continue;
            }
            // Long help puts the text on the next line, short help beside the name.
            let beside = line.trim().split_once("  ").is_some();
            let below = lines
                .get(i + 1)
                .is_some_and(|n| n.starts_with("          "));
            assert!(
                beside || below,
                "builder {cmd}: {line:?} has no help text:\n{help}"
            );
        }
    }
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
fn build_says_which_hosts_changed_and_whether_gre_only_suffices() {
    let cwd = tempfile::tempdir().unwrap();
    let p = cwd.path().join("p");
    let copy = |from: &Path, to: &Path| {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    };
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles");
    copy(&shipped.join("hosts"), &p.join("hosts"));
    copy(&shipped.join("secrets"), &p.join("secrets"));
    let build = |serial: &str| {
        let out = builder(
            cwd.path(),
            &[
                "build",
                p.to_str().unwrap(),
                "--out",
                "o",
                "--serial",
                serial,
            ],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    assert_eq!(build("1").matches(": new").count(), 3);
    // The gw1-node2 key is rotated: both ends change tunnels only; node1 is untouched.
    std::fs::write(
        p.join("secrets/example-gw1-node2.psk"),
        "EXAMPLE-ONLY-rotated-key-0123456789\n",
    )
    .unwrap();
    let n2 = p.join("hosts/node2.toml");
    let out = build("2");
    assert!(
        out.lines()
            .any(|l| l.starts_with("gw1:") && l.ends_with("`applier apply --gre-only` suffices")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("node2:") && l.ends_with("`applier apply --gre-only` suffices")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("node1:") && l.ends_with("contents unchanged")),
        "{out}"
    );
    // Same contents with an expiry now: not "contents unchanged" as if nothing happened.
    let out = builder(
        cwd.path(),
        &[
            "build",
            p.to_str().unwrap(),
            "--out",
            "o",
            "--serial",
            "3",
            "--expires-in",
            "30d",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = text(&out.stdout);
    assert!(
        out.lines().any(|l| l.starts_with("node1:")
            && l.ends_with(
                "signed by another key or with another expiry: hosts must trust the key"
            )),
        "{out}"
    );
    // An address change needs a full apply.
    let t = std::fs::read_to_string(&n2).unwrap();
    std::fs::write(&n2, t.replace("10.20.20.3/24", "10.20.20.33/24")).unwrap();
    let out = build("4");
    assert!(
        out.lines()
            .any(|l| l.starts_with("node2:") && l.ends_with("needs a full `applier apply`")),
        "{out}"
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

fn big_profile(dir: &Path, tunnels: usize) {
    std::fs::create_dir_all(dir.join("hosts")).unwrap();
    let mut p = String::from(
        "[host]\nname = \"big\"\nunderlay_ip = \"192.0.2.1\"\n\n[[bridges]]\nname = \"br0\"\n",
    );
    for i in 0..tunnels {
        p.push_str(&format!(
            "\n[[bridges.gre]]\nremote_ip = \"10.{}.{}.{}\"\nexternal = true\npsk = \"{}\"\n",
            i / 65536,
            i / 256 % 256,
            i % 256,
            // Keys as random as real ones, so they do not compress away.
            &bundle::sha256_hex(format!("key {i}").as_bytes())[..40]
        ));
    }
    std::fs::write(dir.join("hosts/big.toml"), p).unwrap();
}

#[test]
fn cloud_init_user_data_carries_a_verifiable_bundle_and_fits_or_fails_clearly() {
    let cwd = tempfile::tempdir().unwrap();
    let out = builder(
        cwd.path(),
        &[
            "cloud-init",
            "gw1",
            "--profiles",
            &profiles(),
            "--out",
            "gw1.yaml",
            "--serial",
            "3",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let yaml = std::fs::read_to_string(cwd.path().join("gw1.yaml")).unwrap();
    assert!(yaml.starts_with("#cloud-config\n"), "{yaml}");
    assert!(yaml.contains("packages: [openvswitch-switch, iptables, ifupdown, openvswitch-ipsec, strongswan, libstrongswan-standard-plugins]"));
    assert!(yaml.contains("  - path: /var/lib/ovs-bundle/incoming/gw1.tgz\n    permissions: '0600'\n    encoding: b64\n"));
    assert!(yaml.contains(
        "  - [systemctl, enable, ovs-bundle.service]\n  - [systemctl, enable, --now, ovs-bundle-incoming.path]\n"
    ));
    assert!(yaml.len() <= 16384);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(cwd.path().join("gw1.yaml"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "user data holds PSKs");
    // The key and the bundle it carries verify against each other.
    let key_text: String = yaml
        .split("content: |\n")
        .nth(1)
        .unwrap()
        .lines()
        .take(2)
        .map(|l| format!("{}\n", l.trim()))
        .collect();
    let key = bundle::TrustedKey::parse(&key_text, "user-data").unwrap();
    let b64 = yaml
        .split("encoding: b64\n    content: ")
        .nth(1)
        .unwrap()
        .lines()
        .next()
        .unwrap();
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    let opts = bundle::VerifyOptions {
        host: Some("gw1".into()),
        ..Default::default()
    };
    let verified = bundle::verify_bundle(&bytes, &[key], &opts).unwrap();
    assert_eq!(verified.manifest.serial, 3);

    // Over the limit as plain text, but compressible: compressed to fit.
    big_profile(&cwd.path().join("mid"), 60);
    let mut args: Vec<String> = [
        "cloud-init",
        "big",
        "--profiles",
        "mid",
        "--out",
        "mid.gz",
        "--no-packages",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for i in 0..200 {
        args.push("--bootcmd".into());
        args.push(format!(
            "echo preparing step {i} of the image for ovs-bundle >> /var/log/first-boot.log"
        ));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = builder(cwd.path(), &args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("gzip-compressed"),
        "{}",
        text(&out.stdout)
    );
    let data = std::fs::read(cwd.path().join("mid.gz")).unwrap();
    assert_eq!(&data[..2], &[0x1f, 0x8b]);
    assert!(data.len() <= 16384);
    // Too big even compressed: one clear error, nothing written.
    big_profile(&cwd.path().join("huge"), 1000);
    let out = builder(
        cwd.path(),
        &[
            "cloud-init",
            "big",
            "--profiles",
            "huge",
            "--out",
            "huge.yaml",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("over the limit of 16384 bytes")
            && err.contains("deliver the bundle another way"),
        "{err}"
    );
    assert!(!cwd.path().join("huge.yaml").exists());
}

/// A name that `ifdown` would read as an option, and others that mean something to a shell or
/// to interfaces(5): refused with their place, nothing built.
#[test]
fn check_refuses_interface_names_a_command_would_misread() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("hosts")).unwrap();
    std::fs::write(
        dir.path().join("hosts/h1.toml"),
        "[host]\nname = \"h1\"\nunderlay_ip = \"192.0.2.1\"\n\n[[bridges]]\nname = \"br0\"\n\
         host_interfaces = [\"-a\"]\nphysical_interfaces = [\"eth0:1\"]\n",
    )
    .unwrap();
    let out = builder(dir.path(), &["check", "."]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("hosts/h1.toml:7:20: error: host interface name \"-a\" starts with '-'"),
        "{err}"
    );
    assert!(
        err.contains("hosts/h1.toml:8:24: error: physical interface name \"eth0:1\" contains ':'"),
        "{err}"
    );
    assert!(
        err.contains("hint: interface names are Linux device names"),
        "{err}"
    );
    let out = builder(dir.path(), &["build", ".", "--out", "o"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!dir.path().join("o").exists());
}

/// `--expires-in` that would make an expired bundle (0) or wrap into the past (u64::MAX
/// seconds), and a serial no later default serial could follow: bad usage (64), nothing built,
/// no key made.
#[test]
fn build_refuses_expiries_that_cannot_work_and_far_serials_unless_forced() {
    let cwd = tempfile::tempdir().unwrap();
    let p = profiles();
    let cases: [(&[&str], &str); 6] = [
        (&["--expires-in", "0s"], "expired when it is built"),
        (
            &["--expires-in", "18446744073709551615s"],
            "wrap into the past",
        ),
        (&["--serial", "18446744073709551615"], "--allow-far-serial"),
        (&["--expires-in", "30"], "has no unit"),
        (&["--expires-in", "30x"], "is not a duration"),
        (&["--expires-in", "2x"], "write e.g. 30d, 2w, 2d12h"),
    ];
    for (extra, want) in cases {
        let mut args = vec!["build", &p, "--out", "o"];
        args.extend_from_slice(extra);
        let out = builder(cwd.path(), &args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{extra:?}: {err}");
        assert!(err.contains(want), "{extra:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(!cwd.path().join("o").exists(), "{extra:?}");
        assert!(
            !cwd.path().join("keys").exists(),
            "{extra:?}: a key was made"
        );
    }
    let out = builder(
        cwd.path(),
        &[
            "cloud-init",
            "gw1",
            "--profiles",
            &p,
            "--out",
            "u",
            "--expires-in",
            "0",
        ],
    );
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));
    // Forced, the far serial is built; a near one needs nothing.
    let out = builder(
        cwd.path(),
        &[
            "build",
            &p,
            "--out",
            "o",
            "--host",
            "gw1",
            "--serial",
            "18446744073709551615",
            "--allow-far-serial",
            "--expires-in",
            "1d",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("serial 18446744073709551615"));
}

/// The builder holds the signing key and every PSK: shown on the real binary, run as nobody when
/// the tests run as root (root's privileges would hide the difference) while it waits for its
/// passphrase on a FIFO, next to a `sleep` of the same user that did not ask for it.
#[test]
fn the_builder_cannot_dump_core_or_be_read_by_its_own_user() {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    use std::os::unix::process::CommandExt;
    let root = nix::unistd::geteuid().is_root();
    let uid = if root {
        65534
    } else {
        nix::unistd::getuid().as_raw()
    };
    // Children inherit a core limit as high as allowed: whatever the builder shows, it set
    // itself. (Without root, a hard limit of 0 leaves only the dumpable checks to tell.)
    let (_, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_CORE).unwrap();
    let high = if root { 1 << 30 } else { hard };
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, high, high).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("p/hosts")).unwrap();
    std::fs::write(
        d.join("p/hosts/h1.toml"),
        "[host]\nname = \"h1\"\nunderlay_ip = \"192.0.2.1\"\n\n[[bridges]]\nname = \"br0\"\n",
    )
    .unwrap();
    builder::sign::keygen(
        &d.join("k.key"),
        &d.join("k.pub"),
        builder::sign::Protection::Passphrase("pw".into()),
    )
    .unwrap();
    let fifo = d.join("pass");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let bin = d.join("builder");
    std::fs::copy(env!("CARGO_BIN_EXE_builder"), &bin).unwrap();
    for e in [
        "",
        "p",
        "p/hosts",
        "p/hosts/h1.toml",
        "k.key",
        "pass",
        "builder",
    ] {
        std::os::unix::fs::chown(d.join(e), Some(uid), Some(uid)).unwrap();
    }
    let spawn = |cmd: &mut Command| {
        cmd.uid(uid)
            .gid(uid)
            .current_dir(d)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut control = spawn(Command::new("sleep").arg("60"));
    let mut b = spawn(Command::new(&bin).args([
        "build",
        "p",
        "--out",
        "o",
        "--key",
        "k.key",
        "--passphrase-file",
        "pass",
    ]));
    // Opening the FIFO for writing without blocking succeeds once the builder has it open for
    // reading: it is past main's first lines, and waits for the passphrase.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut writer = loop {
        match std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
            .open(&fifo)
        {
            Ok(w) => break w,
            Err(e) => {
                if let Ok(Some(status)) = b.try_wait() {
                    panic!("the builder exited ({status}) before reading the passphrase: {e}");
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "the builder never opened {e}"
                );
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    };
    let limits = |pid: u32| {
        let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max core file size"))
            .unwrap()
            .to_string();
        line.split_whitespace()
            .skip(4)
            .take(2)
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let owner = |pid: u32| {
        std::fs::metadata(format!("/proc/{pid}/status"))
            .unwrap()
            .uid()
    };
    let (pid, cpid) = (b.id(), control.id());
    let seen = (limits(pid), owner(pid), limits(cpid), owner(cpid));
    use std::io::Write;
    writer.write_all(b"pw\n").unwrap();
    drop(writer);
    let out = b.wait_with_output().unwrap();
    let _ = control.kill();
    let _ = control.wait();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (limits, owner, control_limits, control_owner) = seen;
    assert_eq!(
        control_owner, uid,
        "the check cannot tell: the control is not its user's"
    );
    if high != 0 {
        assert_ne!(control_limits, ["0", "0"]);
    }
    assert_eq!(limits, ["0", "0"], "the builder may dump core");
    assert_eq!(
        owner, 0,
        "/proc/{pid}/status is not root's: the builder is dumpable"
    );
}
