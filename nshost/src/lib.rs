//! Test and benchmark hosts: a network namespace with its own ovsdb-server and ovs-vswitchd (userspace
//! datapath), a root directory standing in for `/`, and bundles built by the real builder.
//! Nothing here touches the machine outside the namespace and the temporary directory.

use builder::build::{build_host, BuildParams};
use builder::sign::{keygen, load_secret_key, Passphrase, Protection, SecretKey};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static SEQ: AtomicUsize = AtomicUsize::new(0);

pub struct TestHost {
    pub name: String,
    /// The applier binary to run.
    pub applier_bin: PathBuf,
    pub ns: String,
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    pub ovs: PathBuf,
    pub key: SecretKey,
    pub key_dir: PathBuf,
}

fn ovs_env(cmd: &mut Command, ovs: &Path) {
    for var in ["OVS_RUNDIR", "OVS_DBDIR", "OVS_LOGDIR", "OVS_SYSCONFDIR"] {
        cmd.env(var, ovs);
    }
}

pub fn check(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl TestHost {
    /// A new namespace with OVS running in it. `name` is the host name bundles are built for;
    /// `applier_bin` the applier binary its `applier` methods run.
    pub fn new(name: &str, applier_bin: impl Into<PathBuf>) -> TestHost {
        let dir = tempfile::tempdir().unwrap();
        let ns = format!(
            "ovsb{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        let root = dir.path().join("root");
        let ovs = dir.path().join("ovs");
        std::fs::create_dir_all(root.join("etc/ovs-bundle/trusted.d")).unwrap();
        std::fs::create_dir_all(root.join("etc/network")).unwrap();
        // strongSwan's directories (its package makes them): an OVN chassis' IPsec files go there.
        for d in ["cacerts", "certs", "private"] {
            std::fs::create_dir_all(root.join("etc/ipsec.d").join(d)).unwrap();
        }
        std::fs::create_dir_all(&ovs).unwrap();
        check(
            Command::new("ip")
                .args(["netns", "add", &ns])
                .output()
                .unwrap(),
            "ip netns add",
        );
        let key_dir = dir.path().join("keys");
        std::fs::create_dir_all(&key_dir).unwrap();
        keygen(
            &key_dir.join("k.key"),
            &root.join("etc/ovs-bundle/trusted.d/test.pub"),
            Protection::Unencrypted,
        )
        .unwrap();
        let key = load_secret_key(&key_dir.join("k.key"), Passphrase::None).unwrap();
        let host = TestHost {
            name: name.into(),
            applier_bin: applier_bin.into(),
            ns,
            dir,
            root,
            ovs,
            key,
            key_dir,
        };
        host.start_ovs();
        host
    }

    pub fn sock(&self) -> PathBuf {
        self.ovs.join("db.sock")
    }

    fn in_ns(&self, program: &str) -> Command {
        // By absolute path: tests may give the command a PATH without it.
        let mut cmd = Command::new("/bin/ip");
        cmd.args(["netns", "exec", &self.ns, program]);
        ovs_env(&mut cmd, &self.ovs);
        cmd
    }

    fn start_ovs(&self) {
        let db = self.ovs.join("conf.db");
        if !db.exists() {
            check(
                Command::new("ovsdb-tool")
                    .args(["create"])
                    .arg(&db)
                    .arg("/usr/share/openvswitch/vswitch.ovsschema")
                    .output()
                    .unwrap(),
                "ovsdb-tool create",
            );
        }
        let remote = format!("--remote=punix:{}", self.ovs.join("db.sock").display());
        self.start_daemon("ovsdb-server", &[db.display().to_string(), remote]);
        check(self.vsctl(&["--no-wait", "init"]), "ovs-vsctl init");
        self.start_vswitchd();
    }

    pub fn start_vswitchd(&self) {
        let db = format!("unix:{}", self.ovs.join("db.sock").display());
        self.start_daemon("ovs-vswitchd", &[db]);
    }

    /// Starts an OVS daemon in the namespace, detached, with its pid file, log and control
    /// socket named after it in this host's own OVS directory.
    fn start_daemon(&self, name: &str, args: &[String]) {
        let o = |ext: &str| self.ovs.join(format!("{name}.{ext}")).display().to_string();
        check(
            self.in_ns(name)
                .args(args)
                .arg(format!("--pidfile={}", o("pid")))
                .arg(format!("--log-file={}", o("log")))
                .arg(format!("--unixctl={}", o("ctl")))
                .args(["--detach", "--no-chdir"])
                .output()
                .unwrap(),
            name,
        );
    }

    pub fn stop(&self, daemon: &str) {
        if let Ok(pid) = std::fs::read_to_string(self.ovs.join(format!("{daemon}.pid"))) {
            let pid = pid.trim().parse::<i32>().unwrap();
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(5);
            while nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = std::fs::remove_file(self.ovs.join(format!("{daemon}.pid")));
        }
    }

    /// `ovs-vsctl` against this host's database: the independent reader.
    pub fn vsctl(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new("ovs-vsctl");
        cmd.arg(format!("--db=unix:{}", self.sock().display()))
            .arg("--timeout=20")
            .args(args);
        ovs_env(&mut cmd, &self.ovs);
        cmd.output().unwrap()
    }

    pub fn vsctl_ok(&self, args: &[&str]) -> String {
        check(self.vsctl(args), &format!("ovs-vsctl {args:?}"))
            .trim()
            .to_string()
    }

    /// A command run inside the namespace.
    pub fn exec(&self, program: &str, args: &[&str]) -> Output {
        self.in_ns(program).args(args).output().unwrap()
    }

    /// The applier binary, inside the namespace, pointed at this host's root and OVS.
    pub fn applier(&self, args: &[&str]) -> Output {
        self.applier_env(args, &[])
    }

    pub fn applier_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let bin = self.applier_bin.display().to_string();
        let mut cmd = self.in_ns(&bin);
        cmd.arg("--root")
            .arg(&self.root)
            .arg("--ovsdb")
            .arg(format!("unix:{}", self.sock().display()))
            .args(["--host", &self.name]);
        if !args.contains(&"--ovs-timeout") {
            cmd.args(["--ovs-timeout", "20"]);
        }
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }

    /// Writes `profile` as this host's profile (plus any extra files) and builds its bundle.
    pub fn bundle(&self, tag: &str, profile: &str, serial: u64) -> PathBuf {
        let host = self.load_profile(tag, profile);
        self.write_bundle(tag, build_host(&host, &self.key, Self::params(serial)))
    }

    /// A bundle with one rendered file replaced, signed with the trusted key: for injecting
    /// content the builder would never produce.
    pub fn bundle_with(
        &self,
        tag: &str,
        profile: &str,
        serial: u64,
        file: &str,
        content: &str,
    ) -> PathBuf {
        let host = self.load_profile(tag, profile);
        let mut rendered = builder::render::render_host(&host);
        for f in &mut rendered.files {
            if f.0 == file {
                f.2 = content.as_bytes().to_vec();
            }
        }
        let bytes = builder::build::assemble(&self.name, rendered, &self.key, Self::params(serial));
        self.write_bundle(tag, bytes)
    }

    fn params(serial: u64) -> BuildParams {
        BuildParams {
            serial,
            expires: None,
        }
    }

    /// This host's profile `profile`, written under `profiles/<tag>/` and validated.
    fn load_profile(&self, tag: &str, profile: &str) -> builder::model::Host {
        let dir = self.dir.path().join("profiles").join(tag);
        std::fs::create_dir_all(dir.join("hosts")).unwrap();
        std::fs::write(dir.join(format!("hosts/{}.toml", self.name)), profile).unwrap();
        let fleet = builder::profile::load_fleet(&dir).unwrap_or_else(|d| {
            panic!(
                "test profile invalid: {}",
                d.iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        });
        fleet.hosts.into_iter().next().expect("one host")
    }

    fn write_bundle(&self, tag: &str, bytes: Vec<u8>) -> PathBuf {
        let path = self.dir.path().join(format!("{tag}.tgz"));
        std::fs::write(&path, bytes).unwrap();
        path
    }

    pub fn iptables_save(&self) -> String {
        let out = check(self.exec("iptables-save", &[]), "iptables-save");
        out.lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn interfaces(&self) -> Option<String> {
        std::fs::read_to_string(self.root.join("etc/network/interfaces")).ok()
    }

    /// `column` of interface `name`, as ovs-vsctl prints it.
    pub fn iface(&self, name: &str, column: &str) -> String {
        self.vsctl_ok(&["get", "Interface", name, column])
    }

    pub fn port_uuid(&self, name: &str) -> String {
        self.vsctl_ok(&["get", "Port", name, "_uuid"])
    }

    pub fn ports(&self, bridge: &str) -> Vec<String> {
        self.vsctl_ok(&["list-ports", bridge])
            .lines()
            .map(str::to_string)
            .collect()
    }

    pub fn next_cfg(&self) -> i64 {
        self.vsctl_ok(&["get", "Open_vSwitch", ".", "next_cfg"])
            .parse()
            .unwrap()
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        self.stop("ovs-vswitchd");
        self.stop("ovsdb-server");
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}

/// A veth pair between the namespaces of `a` and `b`, its ends named `<prefix>a<pid>` and
/// `<prefix>b<pid>` (unique per test process): the two names.
pub fn veth_pair(a: &TestHost, b: &TestHost, prefix: &str) -> (String, String) {
    let id = std::process::id() % 100000;
    let (va, vb) = (format!("{prefix}a{id}"), format!("{prefix}b{id}"));
    check(
        Command::new("ip")
            .args([
                "link", "add", &va, "netns", &a.ns, "type", "veth", "peer", "name", &vb, "netns",
                &b.ns,
            ])
            .output()
            .unwrap(),
        "veth",
    );
    (va, vb)
}

impl TestHost {
    /// Pings `addr` (IPv4 or IPv6, by its form) until it answers, at most `tries` one-second
    /// tries (the first packets wait for OVS's tunnel neighbour resolution); panics with the
    /// last answer and the tail of ovs-vswitchd's log otherwise.
    pub fn ping_until_answered(&self, addr: &str, tries: u32) {
        let mut last = String::new();
        for _ in 0..tries {
            let out = self.exec("ping", &["-c", "1", "-W", "1", addr]);
            if out.status.success() {
                return;
            }
            last = format!("{}{}", text(&out.stdout), text(&out.stderr));
        }
        let log = std::fs::read_to_string(self.ovs.join("ovs-vswitchd.log")).unwrap_or_default();
        panic!(
            "no reply from {addr}:\n{last}\nvswitchd log tail:\n{}",
            log.lines().rev().take(20).collect::<Vec<_>>().join("\n")
        );
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
