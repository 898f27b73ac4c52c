//! OVN on the real thing, in network namespaces: a central (NB and SB ovsdb-servers and
//! ovn-northd, with run directories under the test's temporary directory) and chassis, each
//! with its own ovsdb-server, ovs-vswitchd (userspace datapath) and ovn-controller, joined by a
//! Linux bridge in a hub namespace (the underlay). The applier applies every host's bundle;
//! then the chassis are in the southbound database, their ports are bound, and their
//! attachment addresses ping each other over Geneve. A third chassis joins by applying its own
//! bundle (and the central its new one): no other chassis' bundle changes, and it is reachable.

mod common;
use common::{check, host, text, TestHost};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const CENTRAL_IP: &str = "10.97.0.100";

/// The hub namespace with its Linux bridge: removed (and every veth end in it) on drop.
struct Hub {
    ns: String,
}

impl Hub {
    fn new() -> Hub {
        let ns = format!("ovsbhub{}", std::process::id());
        check(
            Command::new("ip")
                .args(["netns", "add", &ns])
                .output()
                .unwrap(),
            "ip netns add hub",
        );
        let hub = Hub { ns };
        hub.ip(&["link", "add", "hub0", "type", "bridge"]);
        hub.ip(&["link", "set", "hub0", "up"]);
        hub
    }

    fn ip(&self, args: &[&str]) {
        let mut full = vec!["-n", self.ns.as_str()];
        full.extend_from_slice(args);
        check(
            Command::new("ip").args(&full).output().unwrap(),
            &format!("ip {args:?}"),
        );
    }

    /// A veth from the hub to `h`, its host end named `veth` (in the host's namespace).
    fn plug(&self, h: &TestHost, veth: &str, n: usize) {
        let hub_end = format!("hv{n}-{}", std::process::id() % 100000);
        check(
            Command::new("ip")
                .args([
                    "link", "add", &hub_end, "netns", &self.ns, "type", "veth", "peer", "name",
                    veth, "netns", &h.ns,
                ])
                .output()
                .unwrap(),
            "veth to hub",
        );
        self.ip(&["link", "set", &hub_end, "master", "hub0"]);
        self.ip(&["link", "set", &hub_end, "up"]);
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}

/// OVN daemons started in test namespaces, each with its pid file under `dir`: stopped on drop
/// (before the namespaces go).
struct Daemons {
    pids: Vec<PathBuf>,
}

impl Drop for Daemons {
    fn drop(&mut self) {
        use nix::sys::signal::{kill, Signal};
        // All at once, then wait for all: each takes a moment to be gone.
        let pids: Vec<nix::unistd::Pid> = self
            .pids
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok()?.trim().parse::<i32>().ok())
            .map(nix::unistd::Pid::from_raw)
            .collect();
        for &pid in &pids {
            let _ = kill(pid, Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while pids.iter().any(|&p| kill(p, None).is_ok()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Daemons {
    /// Starts `program` detached in `h`'s namespace, its pid file, log and control socket in
    /// `dir` (never the system's run directories).
    fn start(&mut self, h: &TestHost, dir: &Path, name: &str, program: &str, args: &[String]) {
        let o = |ext: &str| dir.join(format!("{name}.{ext}")).display().to_string();
        let mut cmd = Command::new("/bin/ip");
        cmd.args(["netns", "exec", &h.ns, program]).args(args);
        for var in ["OVN_RUNDIR", "OVN_LOGDIR", "OVN_DBDIR", "OVN_SYSCONFDIR"] {
            cmd.env(var, dir);
        }
        // ovn-controller reaches br-int's OpenFlow socket in ovs-vswitchd's run directory.
        cmd.env("OVS_RUNDIR", &h.ovs);
        cmd.arg(format!("--pidfile={}", o("pid")))
            .arg(format!("--log-file={}", o("log")))
            .args(["--detach", "--no-chdir"]);
        // ovn-controller has no --unixctl: its socket goes to OVN_RUNDIR, which is `dir`.
        if program != "ovn-controller" {
            cmd.arg(format!("--unixctl={}", o("ctl")));
        }
        check(cmd.output().unwrap(), name);
        self.pids.push(dir.join(format!("{name}.pid")));
    }
}

/// The underlay address of `h` on an OVS bridge `br-phy` holding its veth, as userspace
/// tunnels need (ovs-vswitchd routes tunnel packets out of an OVS bridge's address).
fn underlay(h: &TestHost, veth: &str, ip: &str) {
    h.vsctl_ok(&[
        "add-br",
        "br-phy",
        "--",
        "set",
        "Bridge",
        "br-phy",
        "datapath_type=netdev",
    ]);
    h.vsctl_ok(&["add-port", "br-phy", veth]);
    check(
        h.exec("ip", &["addr", "add", ip, "dev", "br-phy"]),
        "ip addr",
    );
    check(
        h.exec("ip", &["link", "set", "br-phy", "up"]),
        "ip link br-phy",
    );
    check(h.exec("ip", &["link", "set", veth, "up"]), "ip link veth");
}

/// Writes the fleet's profiles (central c1, chassis `chassis` on ls0, IPsec between them with
/// the PKI in `dir/../pki`) under `dir`.
fn write_fleet(dir: &Path, chassis: &[(&str, &str, &str)]) {
    std::fs::create_dir_all(dir.join("hosts")).unwrap();
    std::fs::write(
        dir.join("hosts/c1.toml"),
        format!("[host]\nname = \"c1\"\nunderlay_ip = \"{CENTRAL_IP}\"\n"),
    )
    .unwrap();
    let mut fleet = "[ovn]\ncentral = \"c1\"\ndatapath = \"netdev\"\nipsec_pki = \"../pki\"\n\n\
                     [[ovn.switches]]\nname = \"ls0\"\nsubnet = \"10.30.0.0/24\"\n"
        .to_string();
    for (name, underlay, addr) in chassis {
        std::fs::write(
            dir.join(format!("hosts/{name}.toml")),
            format!("[host]\nname = \"{name}\"\nunderlay_ip = \"{underlay}\"\n"),
        )
        .unwrap();
        fleet.push_str(&format!(
            "\n[[ovn.chassis]]\nhost = \"{name}\"\nswitch = \"ls0\"\naddress = \"{addr}/24\"\n"
        ));
    }
    std::fs::write(dir.join("fleet.toml"), fleet).unwrap();
}

/// Every host's bundle from the fleet in `dir`, each signed with the key its host trusts.
fn build(dir: &Path, hosts: &[&TestHost], serial: u64) -> BTreeMap<String, Vec<u8>> {
    let fleet = builder::profile::load_fleet(dir).unwrap_or_else(|d| panic!("{d:#?}"));
    // Each chassis' IPsec certificate and key, as `builder build` adds them.
    let members: Vec<&builder::model::Host> = fleet.hosts.iter().collect();
    let (members, _) = builder::fleet::ovn::with_credentials(&members).unwrap();
    hosts
        .iter()
        .map(|h| {
            let m = members.iter().find(|m| m.name == h.name).unwrap();
            let params = builder::build::BuildParams {
                serial,
                expires: None,
            };
            (
                h.name.clone(),
                builder::build::build_host(m, &h.key, params),
            )
        })
        .collect()
}

fn apply(h: &TestHost, bundle: &[u8], tag: &str, nb: &str) {
    let path = h.dir.path().join(format!("{tag}.tgz"));
    std::fs::write(&path, bundle).unwrap();
    check(
        h.applier(&["--ovn-nb", nb, "apply", path.to_str().unwrap()]),
        &format!("apply {}", h.name),
    );
}

/// Polls `f` until it returns `Some`, or fails after `secs` with `what` and the last output.
fn until<T>(secs: u64, what: &str, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match f() {
            Ok(v) => return v,
            Err(last) if Instant::now() > deadline => panic!("{what}: gave up; last: {last}"),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// The tail of every chassis' ovn-controller log, for a failure's message.
fn logs(hs: &[TestHost]) -> String {
    hs.iter()
        .map(|h| {
            let log = std::fs::read_to_string(h.dir.path().join("ovn/ovn-controller.log"))
                .unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            format!(
                "--- {} ovn-controller.log:\n{}",
                h.name,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn out(o: Output) -> String {
    format!("{}{}", text(&o.stdout), text(&o.stderr))
}

#[test]
fn chassis_register_bind_their_ports_and_reach_each_other_over_geneve_and_a_host_joins() {
    let started = Instant::now();
    let hub = Hub::new();
    let c1 = host("c1");
    let hs: Vec<TestHost> = ["h1", "h2", "h3"].iter().map(|n| host(n)).collect();
    let mut daemons = Daemons { pids: Vec::new() };
    // The underlay, every address on a br-phy (the central's too: the kernel sends TCP on a
    // veth with its checksum left to offload, which ovs-vswitchd's userspace datapath passes on
    // unfilled, so the chassis' kernels would drop the SB's replies).
    hub.plug(&c1, "u0", 0);
    underlay(&c1, "u0", &format!("{CENTRAL_IP}/24"));
    for (i, h) in hs.iter().enumerate() {
        hub.plug(h, "u0", i + 1);
        underlay(h, "u0", &format!("10.97.0.{}/24", i + 1));
    }
    // The central: NB and SB databases (SB also on the underlay for ovn-controller), northd.
    let cdir = c1.dir.path().join("ovn");
    std::fs::create_dir_all(&cdir).unwrap();
    let (nb_sock, sb_sock) = (cdir.join("nb.sock"), cdir.join("sb.sock"));
    for (db, schema) in [("nb", "ovn-nb"), ("sb", "ovn-sb")] {
        check(
            Command::new("ovsdb-tool")
                .arg("create")
                .arg(cdir.join(format!("{db}.db")))
                .arg(format!("/usr/share/ovn/{schema}.ovsschema"))
                .output()
                .unwrap(),
            "ovsdb-tool create",
        );
    }
    let db = |n: &str| cdir.join(format!("{n}.db")).display().to_string();
    daemons.start(
        &c1,
        &cdir,
        "ovsdb-nb",
        "ovsdb-server",
        &[db("nb"), format!("--remote=punix:{}", nb_sock.display())],
    );
    daemons.start(
        &c1,
        &cdir,
        "ovsdb-sb",
        "ovsdb-server",
        &[
            db("sb"),
            format!("--remote=punix:{}", sb_sock.display()),
            format!("--remote=ptcp:6642:{CENTRAL_IP}"),
        ],
    );
    daemons.start(
        &c1,
        &cdir,
        "ovn-northd",
        "ovn-northd",
        &[
            format!("--ovnnb-db=unix:{}", nb_sock.display()),
            format!("--ovnsb-db=unix:{}", sb_sock.display()),
        ],
    );
    let nb = format!("unix:{}", nb_sock.display());
    let no_nb = |h: &TestHost| format!("unix:{}", h.dir.path().join("no-nb.sock").display());
    let sbctl = |args: &[&str]| {
        let o = Command::new("ovn-sbctl")
            .arg(format!("--db=unix:{}", sb_sock.display()))
            .arg("--timeout=10")
            .args(args)
            .output()
            .unwrap();
        check(o, &format!("ovn-sbctl {args:?}"))
    };

    // Two chassis and the central, from one fleet, with IPsec between the chassis.
    let fleet_dir = c1.dir.path().join("fleet");
    builder::ovn_pki::init(&c1.dir.path().join("pki")).unwrap();
    let two = [
        ("h1", "10.97.0.1", "10.30.0.1"),
        ("h2", "10.97.0.2", "10.30.0.2"),
    ];
    write_fleet(&fleet_dir, &two);
    let all: Vec<&TestHost> = std::iter::once(&c1).chain(hs.iter()).collect();
    let first = build(&fleet_dir, &all[..3], 1);
    let nbctl = |args: &[&str]| {
        let o = Command::new("ovn-nbctl")
            .arg(format!("--db={nb}"))
            .args(args)
            .output()
            .unwrap();
        check(o, &format!("ovn-nbctl {args:?}"))
    };
    // A switch of someone else's, which the applier leaves alone.
    nbctl(&["ls-add", "theirs"]);
    apply(&c1, &first["c1"], "c1-1", &nb);
    assert_eq!(nbctl(&["get", "NB_Global", ".", "ipsec"]).trim(), "true");
    let lsps = nbctl(&["lsp-list", "ls0"]);
    assert!(
        lsps.contains("ovsb-h1") && lsps.contains("ovsb-h2"),
        "{lsps}"
    );
    let start_controller = |daemons: &mut Daemons, h: &TestHost| {
        let dir = h.dir.path().join("ovn");
        std::fs::create_dir_all(&dir).unwrap();
        daemons.start(
            h,
            &dir,
            "ovn-controller",
            "ovn-controller",
            &[format!("unix:{}", h.sock().display())],
        );
    };
    for h in &hs[..2] {
        apply(h, &first[&h.name], "1", &no_nb(h));
        // The chassis keys, as ovn-controller will read them.
        assert_eq!(
            h.vsctl_ok(&["get", "Open_vSwitch", ".", "external_ids:ovn-remote"]),
            format!("\"tcp:{CENTRAL_IP}:6642\"")
        );
        // The IPsec files, as ovs-monitor-ipsec will read them (the key 0600).
        assert_eq!(
            h.vsctl_ok(&["get", "Open_vSwitch", ".", "other_config:private_key"]),
            "\"/etc/ipsec.d/private/ovs-bundle-ovn.pem\""
        );
        let key = h.root.join("etc/ipsec.d/private/ovs-bundle-ovn.pem");
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", key.display());
        start_controller(&mut daemons, h);
    }

    // What a user sees: both chassis registered, both ports bound, pings over Geneve.
    let registered = |names: &[&str]| {
        until(30, "chassis in the SB", || {
            let show = sbctl(&["show"]);
            match names.iter().all(|n| {
                show.contains(&format!("Chassis {n}")) || show.contains(&format!("Chassis \"{n}\""))
            }) {
                true => Ok(show),
                false => Err(format!("{show}\n{}", logs(&hs))),
            }
        })
    };
    let show = registered(&["h1", "h2"]);
    assert!(
        show.contains("geneve") && show.contains("10.97.0.1"),
        "{show}"
    );
    let bound = |port: &str| {
        until(30, &format!("binding of {port}"), || {
            let c = sbctl(&[
                "--bare",
                "--columns=chassis",
                "find",
                "Port_Binding",
                &format!("logical_port={port}"),
            ]);
            if c.trim().is_empty() {
                Err(format!(
                    "{}\n{}\n{}\n{}",
                    sbctl(&["show"]),
                    sbctl(&["list", "Port_Binding"]),
                    hs[0].vsctl_ok(&["show"]),
                    logs(&hs)
                ))
            } else {
                Ok(())
            }
        })
    };
    bound("ovsb-h1");
    bound("ovsb-h2");
    let ping = |from: &TestHost, to: &str| {
        until(30, &format!("ping {to} from {}", from.name), || {
            let o = from.exec("ping", &["-c", "1", "-W", "1", to]);
            if o.status.success() {
                Ok(())
            } else {
                Err(format!("{}\n{}", out(o), logs(&hs)))
            }
        })
    };
    ping(&hs[0], "10.30.0.2");
    ping(&hs[1], "10.30.0.1");
    // IPsec is on between the chassis: ovn-controller names the peer of each tunnel (the CN
    // ovs-monitor-ipsec requires of its certificate), which it does only with NB_Global ipsec.
    until(30, "remote_name on h1's tunnel", || {
        let o = hs[0].vsctl_ok(&[
            "--bare",
            "--columns=options",
            "find",
            "Interface",
            "type=geneve",
        ]);
        if o.contains("remote_name=h2") {
            Ok(())
        } else {
            Err(o)
        }
    });
    // A second apply of a chassis' own bundle, with ovn-controller running: nothing to do.
    let status = hs[0].applier(&["--ovn-nb", &no_nb(&hs[0]), "status"]);
    assert_eq!(status.status.code(), Some(0), "{}", out(status));

    // h3 joins: only its own bundle and the central's are new; every other bundle is the same.
    let mut three = two.to_vec();
    three.push(("h3", "10.97.0.3", "10.30.0.3"));
    write_fleet(&fleet_dir, &three);
    let second = build(&fleet_dir, &all, 1);
    for h in ["h1", "h2"] {
        assert_eq!(first[h], second[h], "{h}'s bundle changed when h3 joined");
    }
    assert_ne!(first["c1"], second["c1"]);
    let central2 = build(&fleet_dir, &all[..1], 2);
    apply(&c1, &central2["c1"], "c1-2", &nb);
    // h3 has a northbound socket nobody listens on (left by a server that died): no rows of
    // ours there, and its apply goes on.
    let stale = hs[2].dir.path().join("stale-nb.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    apply(
        &hs[2],
        &second["h3"],
        "1",
        &format!("unix:{}", stale.display()),
    );
    start_controller(&mut daemons, &hs[2]);
    registered(&["h1", "h2", "h3"]);
    bound("ovsb-h3");
    ping(&hs[2], "10.30.0.1");
    ping(&hs[0], "10.30.0.3");
    ping(&hs[1], "10.30.0.3");
    // The central and the new chassis, with everything running: no drift; their switch stays.
    for (h, nb) in [(&c1, nb.clone()), (&hs[2], no_nb(&hs[2]))] {
        let status = h.applier(&["--ovn-nb", &nb, "status"]);
        assert_eq!(status.status.code(), Some(0), "{}: {}", h.name, out(status));
    }
    let switches = nbctl(&["ls-list"]);
    assert!(
        switches.contains("(theirs)") && switches.contains("(ls0)"),
        "{switches}"
    );
    eprintln!("ovn_ns: {:.1} s", started.elapsed().as_secs_f64());
}
