//! The install step of `test.sh` and `vm-tests/run` (`scripts/ensure-tools`), run against a fake
//! `apt-get`/`apt-cache` on a PATH of stub tools. Making the real apt remove a package on this
//! machine is what a test must not do, so apt is the one thing faked here: what it "installs" and
//! "removes" is a stub executable appearing in or vanishing from the fake PATH, which is exactly
//! what the script looks at.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A fake machine: `bin/` is the whole PATH.
struct Fake {
    dir: tempfile::TempDir,
}

const FAKE_APT_GET: &str = r#"#!/bin/bash
# fake apt-get: logs its arguments; `-s` prints $FAKE/sim; `install` creates the tools listed in
# $FAKE/pkgs/<package> and deletes those in $FAKE/removes ("package tool" lines) unless that
# package is itself named in the transaction.
echo "apt-get $*" >> "$FAKE/log"
[[ $1 == update ]] && exit 0
named=()
sim=0
for a in "$@"; do
  case $a in -s) sim=1 ;; -*|install) ;; *) named+=("${a%%=*}") ;; esac
done
if ((sim)); then cat "$FAKE/sim" 2>/dev/null; exit 0; fi
for p in "${named[@]}"; do
  [[ -f $FAKE/pkgs/$p ]] || continue
  while read -r t; do printf '#!/bin/sh\n' > "$FAKE/bin/$t"; chmod +x "$FAKE/bin/$t"; done < "$FAKE/pkgs/$p"
done
while read -r p t; do
  keep=0
  for n in "${named[@]}"; do [[ $n == "$p" ]] && keep=1; done
  ((keep)) || rm -f "$FAKE/bin/$t"
done < "$FAKE/removes"
"#;

const FAKE_APT_CACHE: &str = r#"#!/bin/bash
echo "apt-cache $*" >> "$FAKE/log"
[[ $1 == madison ]] && echo " $2 | 1:7.2+dfsg-7 | repo bookworm/main amd64 Packages"
"#;

impl Fake {
    fn new() -> Fake {
        let dir = tempfile::tempdir().unwrap();
        let f = Fake { dir };
        fs::create_dir(f.path("bin")).unwrap();
        fs::create_dir(f.path("pkgs")).unwrap();
        fs::write(f.path("removes"), "").unwrap();
        fs::write(f.path("log"), "").unwrap();
        f.script("apt-get", FAKE_APT_GET);
        f.script("apt-cache", FAKE_APT_CACHE);
        // What the scripts themselves run, from the real machine.
        for t in [
            "bash", "env", "grep", "awk", "dirname", "cat", "rm", "chmod", "mktemp", "nice", "git",
        ] {
            let real = ["/usr/bin", "/bin"]
                .iter()
                .map(|d| Path::new(d).join(t))
                .find(|p| p.exists())
                .unwrap_or_else(|| panic!("{t} is not installed"));
            std::os::unix::fs::symlink(real, f.path("bin").join(t)).unwrap();
        }
        f
    }
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
    fn script(&self, name: &str, text: &str) {
        let p = self.path("bin").join(name);
        fs::write(&p, text).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    }
    fn tool(&self, name: &str) {
        self.script(name, "#!/bin/sh\n");
    }
    fn package(&self, pkg: &str, tools: &[&str]) {
        fs::write(self.path("pkgs").join(pkg), tools.join("\n") + "\n").unwrap();
    }
    /// The transaction removes `pkg`, and with it `tool`, unless `pkg` is named in it.
    fn removes(&self, pkg: &str, tool: &str) {
        fs::write(self.path("removes"), format!("{pkg} {tool}\n")).unwrap();
    }
    fn simulation(&self, text: &str) {
        fs::write(self.path("sim"), text).unwrap();
    }
    fn log(&self) -> String {
        fs::read_to_string(self.path("log")).unwrap()
    }
    fn run(&self, program: &Path, args: &[&str]) -> Output {
        Command::new(program)
            .args(args)
            .env_clear()
            .env("PATH", self.path("bin"))
            .env("FAKE", self.dir.path())
            .output()
            .unwrap()
    }
    fn ensure(&self, args: &[&str]) -> Output {
        let mut all = vec!["label"];
        all.extend_from_slice(args);
        self.run(&root().join("scripts/ensure-tools"), &all)
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn nothing_missing_calls_no_apt() {
    let f = Fake::new();
    f.tool("qemu-img");
    f.tool("mmdebstrap");
    let out = f.ensure(&["qemu-img:qemu-utils", "mmdebstrap:mmdebstrap"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(f.log(), "", "apt was called although nothing was missing");
    assert_eq!(text(&out.stdout), "");
}

#[test]
fn an_absolute_path_need_only_exist() {
    // Firmware and boot loader files (OVMF's code, GRUB's EFI kernel) are not commands: present
    // but not executable is present; absent is missing.
    let f = Fake::new();
    let firmware = f.path("OVMF_CODE_4M.fd");
    fs::write(&firmware, "").unwrap();
    let spec = format!("{}:ovmf", firmware.display());
    let out = f.ensure(&[&spec]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(f.log(), "", "apt was called for a file that is there");
    fs::remove_file(&firmware).unwrap();
    let out = f.ensure(&[&spec]);
    assert!(!out.status.success());
    assert!(
        f.log().contains("install") && f.log().contains("ovmf"),
        "a missing file's package was not installed:\n{}",
        f.log()
    );
}

#[test]
fn missing_tools_are_installed_in_one_transaction() {
    let f = Fake::new();
    f.package("mmdebstrap", &["mmdebstrap"]);
    f.package("e2fsprogs", &["mke2fs", "e2fsck"]);
    let out = f.ensure(&[
        "mmdebstrap:mmdebstrap",
        "mke2fs:e2fsprogs",
        "e2fsck:e2fsprogs",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let installs: Vec<_> = f
        .log()
        .lines()
        .filter(|l| l.starts_with("apt-get") && l.contains("install") && !l.contains(" -s "))
        .map(str::to_string)
        .collect();
    assert_eq!(installs.len(), 1, "{installs:?}");
    assert!(
        installs[0].ends_with("mmdebstrap e2fsprogs"),
        "{installs:?}"
    );
}

#[test]
fn a_tool_the_transaction_removed_is_named_and_the_run_fails() {
    let f = Fake::new();
    f.tool("qemu-img");
    f.package("qemu-system-x86", &["qemu-system-x86_64"]);
    f.removes("qemu-utils", "qemu-img");
    let out = f.ensure(&["qemu-system-x86_64:qemu-system-x86", "qemu-img:qemu-utils"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(
        err.contains("qemu-img is still missing after installing (package qemu-utils)"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one line per missing tool: {err}");
}

#[test]
fn a_package_apt_would_remove_is_kept_at_the_repositories_version() {
    let f = Fake::new();
    f.tool("qemu-img");
    f.package("qemu-system-x86", &["qemu-system-x86_64"]);
    f.package("qemu-utils", &["qemu-img"]);
    f.removes("qemu-utils", "qemu-img");
    f.simulation("Remv qemu-utils [1:10.0.2+ds-2~bpo12+1]\nInst qemu-system-x86 (1:7.2+dfsg-7)\n");
    let out = f.ensure(&["qemu-system-x86_64:qemu-system-x86", "qemu-img:qemu-utils"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        f.log()
            .contains("--allow-downgrades qemu-system-x86 qemu-utils=1:7.2+dfsg-7"),
        "{}",
        f.log()
    );
    assert!(f.path("bin/qemu-img").exists());
}

/// The README's test command stops before its first test when the install step fails.
#[test]
fn test_sh_stops_before_any_test() {
    let f = Fake::new();
    let needs = fs::read_to_string(root().join("scripts/test-needs")).unwrap()
        + &fs::read_to_string(root().join("vm-tests/needs")).unwrap();
    for line in needs.lines().filter(|l| !l.starts_with('#')) {
        let (tool, _) = line.split_once(':').unwrap();
        // A tool named by its path (not looked up on PATH) is checked on the real machine.
        if tool.starts_with('/') {
            continue;
        }
        if tool != "mmdebstrap" && !f.path("bin").join(tool).exists() {
            f.tool(tool);
        }
    }
    f.package("mmdebstrap", &["mmdebstrap"]);
    f.removes("qemu-utils", "qemu-img");
    let out = f.run(&root().join("test.sh"), &[]);
    assert_eq!(out.status.code(), Some(1));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        stdout.contains("test.sh: installing mmdebstrap"),
        "{stdout}"
    );
    assert!(
        stderr.contains("test.sh: qemu-img is still missing after installing (package qemu-utils)"),
        "{stderr}"
    );
    assert!(!stdout.contains("rustfmt"), "tests ran: {stdout}");
}
