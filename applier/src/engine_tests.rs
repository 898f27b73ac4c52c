//! The engine on the in-memory host: apply, rollback and crash recovery at every step, without
//! root or OVS. Bundles are real: built and signed by the builder library.
//!
//! Over 500 lines on purpose: one test per behaviour of the engine, each its own story.

use super::*;
use crate::paths::Paths;
use crate::system::fake::{FakeSystem, View};
use builder::sign::{keygen, load_secret_key, Passphrase, Protection, SecretKey};
use std::path::PathBuf;

const PSK_A: &str = "engine-test-psk-aaaaaaaaaaaa";

/// What `applier apply` does: everything, cycling changed interfaces, no downgrade.
pub(crate) const FULL: ApplyOpts = ApplyOpts {
    scope: Scope::Full,
    cycle: true,
    allow_downgrade: false,
};

pub(crate) struct Fixture {
    pub(crate) dir: tempfile::TempDir,
    key: SecretKey,
    trusted: TrustedKey,
}

impl Fixture {
    pub(crate) fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let (sk, pk) = (dir.path().join("k.key"), dir.path().join("k.pub"));
        keygen(&sk, &pk, Protection::Unencrypted).unwrap();
        let key = load_secret_key(&sk, Passphrase::None).unwrap();
        let text = std::fs::read_to_string(&pk).unwrap();
        let trusted = TrustedKey::parse(&text, "k.pub").unwrap();
        Fixture { dir, key, trusted }
    }

    /// Host `t1`'s bundle from `profile`.
    pub(crate) fn bundle(&self, profile: &str, serial: u64) -> Vec<u8> {
        let d = self.dir.path().join(format!("p{serial}-{}", profile.len()));
        std::fs::create_dir_all(d.join("hosts")).unwrap();
        std::fs::write(d.join("hosts/t1.toml"), profile).unwrap();
        let fleet = builder::profile::load_fleet(&d).unwrap_or_else(|e| {
            panic!(
                "{}",
                e.iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        });
        let params = builder::build::BuildParams {
            serial,
            expires: None,
        };
        builder::build::build_host(&fleet.hosts[0], &self.key, params)
    }

    /// Host `host`'s bundle from a fleet: `files` (path, text) under the profiles directory.
    pub(crate) fn fleet_bundle(&self, files: &[(&str, &str)], host: &str, serial: u64) -> Vec<u8> {
        self.fleet_bundle_with(files, host, serial, None)
    }

    /// [`Fixture::fleet_bundle`] with member `replace.0` replaced by `replace.1`, signed.
    pub(crate) fn fleet_bundle_with(
        &self,
        files: &[(&str, &str)],
        host: &str,
        serial: u64,
        replace: Option<(&str, &str)>,
    ) -> Vec<u8> {
        let d = self
            .dir
            .path()
            .join(format!("fleet{serial}-{host}-{}", files.len()));
        for (path, text) in files {
            let path = d.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let fleet = builder::profile::load_fleet(&d).unwrap_or_else(|e| {
            panic!(
                "{}",
                e.iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        });
        let h = fleet.hosts.iter().find(|h| h.name == host).unwrap();
        // OVN IPsec credentials, as `builder build` fills them in.
        let (mut hosts, _) = builder::fleet::ovn::with_credentials(&[h]).unwrap();
        let h = &hosts.remove(0);
        let params = builder::build::BuildParams {
            serial,
            expires: None,
        };
        let mut rendered = builder::render::render_host(h);
        // A member replaced (or added) after rendering: what the builder would never make.
        if let Some((member, content)) = replace {
            rendered.files.retain(|f| f.0 != member);
            rendered
                .files
                .push((member.to_string(), 0o644, content.as_bytes().to_vec()));
            rendered.files.sort_by(|a, b| a.0.cmp(&b.0));
        }
        builder::build::assemble(host, rendered, &self.key, params)
    }

    pub(crate) fn trusted(&self) -> TrustedKey {
        self.trusted.clone()
    }

    /// Host `t1`'s bundle from `profile`, with `file` edited by `edit`, signed: content the
    /// builder never makes.
    pub(crate) fn bundle_edited(
        &self,
        profile: &str,
        serial: u64,
        file: &str,
        edit: impl Fn(&str) -> String,
    ) -> Vec<u8> {
        let d = self.dir.path().join(format!("e{serial}-{}", profile.len()));
        std::fs::create_dir_all(d.join("hosts")).unwrap();
        std::fs::write(d.join("hosts/t1.toml"), profile).unwrap();
        let fleet = builder::profile::load_fleet(&d).unwrap_or_else(|_| panic!("profile"));
        let mut rendered = builder::render::render_host(&fleet.hosts[0]);
        for f in &mut rendered.files {
            if f.0 == file {
                f.2 = edit(std::str::from_utf8(&f.2).unwrap()).into_bytes();
            }
        }
        let params = builder::build::BuildParams {
            serial,
            expires: None,
        };
        builder::build::assemble("t1", rendered, &self.key, params)
    }

    pub(crate) fn applier<'a>(&self, sys: &'a mut FakeSystem) -> Applier<'a> {
        Applier {
            sys,
            loc: Locations {
                paths: Paths::new("/"),
                proc_dir: PathBuf::from("/proc"),
            },
            store: Store::new("/var/lib/ovs-bundle"),
            trust: Trust {
                keys: vec![self.trusted.clone()],
                revoked: Vec::new(),
            },
            host: "t1".into(),
            now: 1_700_000_000,
            log: Box::new(|_| {}),
            nb_optional: false,
        }
    }
}

/// Host t1 with a bridge, an addressed internal port, GRE peers and (optionally) a forwarder.
pub(crate) fn profile(peers: &[(&str, Option<&str>)], address: &str, forwarder: bool) -> String {
    let mut p = format!(
        "[host]\nname = \"t1\"\nunderlay_ip = \"10.99.0.1\"\n\n[[bridges]]\nname = \"br-t\"\ndatapath = \"netdev\"\n\
         host_interfaces = [{{ name = \"priv0\", address = \"{address}\" }}]\n"
    );
    for (ip, psk) in peers {
        p.push_str(&format!(
            "\n[[bridges.gre]]\nremote_ip = \"{ip}\"\nexternal = true\n"
        ));
        if let Some(psk) = psk {
            p.push_str(&format!("psk = \"{psk}\"\n"));
        }
    }
    if forwarder {
        p.push_str(
            "\n[bridges.forwarder]\nfrom = \"priv0\"\nvia = \"eth0\"\nsource = \"10.20.0.0/24\"\n",
        );
    }
    p
}

pub(crate) fn v1() -> String {
    profile(
        &[("10.99.0.2", Some(PSK_A)), ("10.99.0.3", None)],
        "10.20.0.1/24",
        true,
    ) + DHCP_V1
}

/// DHCP on priv0: v1's, and v2's with another range and lease (so dnsmasq is restarted).
const DHCP_V1: &str =
    "\n[bridges.dhcp]\nrange_start = \"10.20.0.100\"\nrange_end = \"10.20.0.199\"\n\
    [[bridges.dhcp.leases]]\nmac = \"52:54:00:00:00:01\"\nip = \"10.20.0.10\"\n";
const DHCP_V2: &str = "\n[bridges.dhcp]\nrange_start = \"10.20.0.100\"\nrange_end = \"10.20.0.150\"\n\
    lease_time = \"12h\"\n[[bridges.dhcp.leases]]\nmac = \"52:54:00:00:00:01\"\nip = \"10.20.0.11\"\nname = \"n1\"\n";

/// Changes every part: a PSK, a peer added and one removed, the address, the forwarder gone.
pub(crate) fn v2() -> String {
    profile(
        &[
            ("10.99.0.2", Some("another-psk-bbbbbbbbbbbb")),
            ("10.99.0.7", Some("a-third-psk-cccccccccccc")),
        ],
        "10.20.0.8/24",
        false,
    ) + DHCP_V2
}

fn apply(app: &mut Applier, bytes: &[u8]) -> Result<Outcome, ApplyError> {
    app.apply_bundle(bytes, FULL)
}

/// Applies `bundle` on a copy of `base` once per step, failing that step, then once per step
/// crashing at it and recovering: a failure leaves the host as `before`, a crash as `before` or
/// `after`; and a failure at some step starting with `step` (the subsystem under test) is among
/// them.
pub(crate) fn assert_atomic_at_every_step(
    fx: &Fixture,
    base: &FakeSystem,
    bundle: &[u8],
    (before, after): (&View, &View),
    step: &str,
) {
    let mut failed_there = 0;
    for n in 0.. {
        let mut sys = base.clone();
        sys.fail_at = Some(n);
        let result = fx.applier(&mut sys).apply_bundle(bundle, FULL);
        if n >= sys.calls.len() {
            break;
        }
        if result.is_ok() {
            continue;
        }
        failed_there += usize::from(sys.calls[n].starts_with(step));
        assert_eq!(&sys.view(), before, "failure at {n} ({})", sys.calls[n]);
    }
    assert!(failed_there >= 1, "no failure at a {step} step");
    for n in 0.. {
        let mut sys = base.clone();
        sys.crash_at = Some(n);
        if fx.applier(&mut sys).apply_bundle(bundle, FULL).is_ok() && !sys.crashed() {
            break;
        }
        let step = sys.calls[n].clone();
        sys.restart();
        fx.applier(&mut sys).recover().unwrap();
        let view = sys.view();
        assert!(&view == before || &view == after, "crash at {n} ({step})");
    }
}

/// A fake host on generation 1 (v1), and its view.
pub(crate) fn on_v1(fx: &Fixture) -> (FakeSystem, View) {
    let mut sys = FakeSystem::new();
    sys.add_foreign_port("br-ext", "manual");
    apply(&mut fx.applier(&mut sys), &fx.bundle(&v1(), 1)).unwrap();
    let view = sys.view();
    sys.calls.clear();
    (sys, view)
}

/// An applier from before the IPsec guard chains recorded 4 owned chains in its in-progress
/// marker; after an upgrade, the next run still undoes that interrupted apply.
#[test]
fn an_older_appliers_interrupted_apply_is_undone_after_an_upgrade() {
    let fx = Fixture::new();
    let (mut sys, before) = on_v1(&fx);
    // Crash right after the first firewall change: the marker is there, the host half-changed.
    let calls = {
        let mut probe = sys.clone();
        apply(&mut fx.applier(&mut probe), &fx.bundle(&v2(), 2)).unwrap();
        probe.calls
    };
    let marker = calls
        .iter()
        .position(|c| c.contains("in-progress.json"))
        .expect("the apply writes a marker");
    let firewall = marker
        + calls[marker..]
            .iter()
            .position(|c| c.starts_with("firewall_write"))
            .unwrap_or_else(|| panic!("no firewall change after the marker: {calls:#?}"));
    sys.crash_at = Some(firewall + 1);
    let _ = apply(&mut fx.applier(&mut sys), &fx.bundle(&v2(), 2));
    assert!(sys.crashed());
    sys.restart();
    // Rewrite the marker as the older applier wrote it: no guard chains at all.
    let (path, data) = sys
        .files
        .iter()
        .find(|(p, _)| p.ends_with("in-progress.json"))
        .map(|(p, d)| (p.clone(), d.clone()))
        .expect("an in-progress marker");
    let mut marker: serde_json::Value = serde_json::from_slice(&data).unwrap();
    let mut removed = 0;
    for chains in find_key(&mut marker, "chains") {
        if let Some(map) = chains.as_object_mut() {
            for guard in ["OVSB-GUARD-GRE", "OVSB-GUARD-VXLAN", "OVSB-GUARD-GENEVE"] {
                removed += usize::from(map.remove(guard).is_some());
            }
        }
    }
    assert!(
        removed >= 3,
        "the marker records the guard chains: {marker}"
    );
    sys.files.insert(path, serde_json::to_vec(&marker).unwrap());
    fx.applier(&mut sys).recover().unwrap();
    assert_eq!(sys.view(), before);
}

/// Every value under a key named `key`, at any depth.
fn find_key<'a>(v: &'a mut serde_json::Value, key: &str) -> Vec<&'a mut serde_json::Value> {
    let mut out = Vec::new();
    match v {
        serde_json::Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                if k == key {
                    out.push(child);
                } else {
                    out.extend(find_key(child, key));
                }
            }
        }
        serde_json::Value::Array(items) => {
            for child in items {
                out.extend(find_key(child, key));
            }
        }
        _ => {}
    }
    out
}

#[test]
fn an_apply_changes_every_part_and_records_a_generation() {
    let fx = Fixture::new();
    let (mut sys, before) = on_v1(&fx);
    assert_eq!(before.owned.bridges[0].ports.len(), 3);
    assert_eq!(
        before.files[&PathBuf::from("/proc/sys/net/ipv4/ip_forward")],
        "1\n"
    );
    assert!(before.up.contains("priv0"));
    assert_eq!(before.foreign, ["manual"]);
    let out = apply(&mut fx.applier(&mut sys), &fx.bundle(&v2(), 2)).unwrap();
    assert_eq!(out.generation(), 2);
    let after = sys.view();
    let ports: Vec<&str> = after.owned.bridges[0]
        .ports
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(ports, ["gre-0a630002", "gre-0a630007", "priv0"]);
    assert!(!after
        .files
        .contains_key(&PathBuf::from("/etc/sysctl.d/60-ovs-bundle.conf")));
    assert!(after.chains.chains["OVSB-POSTROUTING"].rules.is_empty());
    assert!(after.files[&PathBuf::from("/etc/network/interfaces")].contains("10.20.0.8/24"));
    let dnsmasq = after.dnsmasq.as_deref().expect("dnsmasq runs");
    assert!(
        dnsmasq.contains("dhcp-host=52:54:00:00:00:01,10.20.0.11,n1\n"),
        "{dnsmasq}"
    );
    assert_eq!(
        after.files[&PathBuf::from("/etc/ovs-bundle/dnsmasq.conf")],
        dnsmasq
    );
    assert_eq!(after.foreign, ["manual"], "a foreign port was touched");
    // The last calls: verify read, then the commit; and the marker is gone.
    assert!(!after
        .files
        .contains_key(&PathBuf::from("/var/lib/ovs-bundle/in-progress.json")));
    assert_eq!(
        after.files[&PathBuf::from("/var/lib/ovs-bundle/current")],
        "2\n"
    );
}

#[test]
fn a_failure_at_every_step_leaves_the_host_exactly_as_it_was() {
    let fx = Fixture::new();
    let (base, before) = on_v1(&fx);
    let b2 = fx.bundle(&v2(), 2);
    let mut failed_steps = 0;
    for n in 0.. {
        let mut sys = base.clone();
        sys.fail_at = Some(n);
        let result = apply(&mut fx.applier(&mut sys), &b2);
        if n >= sys.calls.len() {
            break; // every call was given its failure
        }
        // A failed optional read (the route table, for a warning) is no failure of the apply.
        let Err(e) = result else {
            continue;
        };
        failed_steps += 1;
        assert!(
            matches!(e, ApplyError::Unchanged(_) | ApplyError::RolledBack { .. }),
            "step {n} ({}): {e}",
            sys.calls[n]
        );
        assert_eq!(
            sys.view(),
            before,
            "step {n} ({}): host changed: {e}",
            sys.calls[n]
        );
    }
    assert!(failed_steps > 20, "only {failed_steps} steps");
}

#[test]
fn a_crash_at_every_step_is_undone_or_finished_by_the_next_run() {
    let fx = Fixture::new();
    let (base, before) = on_v1(&fx);
    let b2 = fx.bundle(&v2(), 2);
    let after = {
        let mut sys = base.clone();
        apply(&mut fx.applier(&mut sys), &b2).unwrap();
        sys.view()
    };
    let (mut undone, mut finished) = (0, 0);
    for n in 0.. {
        let mut sys = base.clone();
        sys.crash_at = Some(n);
        // A crash after the commit (removing the marker) still reports success.
        if apply(&mut fx.applier(&mut sys), &b2).is_ok() && !sys.crashed() {
            break;
        }
        let step = sys.calls[n].clone();
        sys.restart();
        let recovered = fx.applier(&mut sys).recover();
        assert!(
            recovered.is_ok(),
            "step {n} ({step}): {}",
            recovered.unwrap_err()
        );
        let view = sys.view();
        if view == before {
            undone += 1;
        } else {
            assert_eq!(
                view, after,
                "step {n} ({step}): neither the old nor the new state"
            );
            finished += 1;
        }
        // Either way the host matches its current generation.
        let (_, drift) = fx.applier(&mut sys).status().unwrap();
        assert!(
            drift.is_empty(),
            "step {n} ({step}): drift {}",
            drift.render()
        );
    }
    assert!(
        undone > 20 && finished >= 1,
        "undone {undone}, finished {finished}"
    );
}

#[test]
fn apply_ends_with_a_verify_read_and_reverts_what_did_not_take() {
    let fx = Fixture::new();
    let (mut sys, before) = on_v1(&fx);
    sys.firewall_ignores_writes = true;
    let e = apply(&mut fx.applier(&mut sys), &fx.bundle(&v2(), 2)).unwrap_err();
    assert!(matches!(e, ApplyError::RolledBack { .. }), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("verifying the result") && text.contains("OVSB-"),
        "{text}"
    );
    sys.firewall_ignores_writes = false;
    assert_eq!(sys.view(), before);
}

#[test]
fn an_interface_error_rolls_everything_back() {
    let fx = Fixture::new();
    let (mut sys, before) = on_v1(&fx);
    sys.iface_errors.insert(
        "gre-0a630007".into(),
        "could not open network device".into(),
    );
    let e = apply(&mut fx.applier(&mut sys), &fx.bundle(&v2(), 2)).unwrap_err();
    assert!(
        e.to_string()
            .contains("interface gre-0a630007: could not open"),
        "{e}"
    );
    assert_eq!(sys.view(), before);
}

#[test]
fn a_stopped_vswitchd_is_found_before_any_change() {
    let fx = Fixture::new();
    let (mut sys, before) = on_v1(&fx);
    sys.vswitchd_running = false;
    sys.ovs.next_cfg += 1;
    let e = apply(&mut fx.applier(&mut sys), &fx.bundle(&v2(), 2)).unwrap_err();
    assert!(matches!(e, ApplyError::Unchanged(_)), "{e}");
    sys.ovs.next_cfg -= 1;
    assert_eq!(sys.view(), before);
}

#[test]
fn an_interrupted_rollback_to_an_old_generation_keeps_that_generation() {
    let fx = Fixture::new();
    let (mut sys, _) = on_v1(&fx);
    apply(&mut fx.applier(&mut sys), &fx.bundle(&v2(), 2)).unwrap();
    let opts = ApplyOpts {
        scope: Scope::Full,
        cycle: true,
        allow_downgrade: true,
    };
    let start = sys.calls.len();
    // Crash at the first OVS change of the rollback to generation 1.
    let mut probe = sys.clone();
    fx.applier(&mut probe).apply_generation(1, opts).unwrap();
    let n = (start..probe.calls.len())
        .find(|i| probe.calls[*i].starts_with("ovs_apply"))
        .unwrap();
    sys.crash_at = Some(n);
    assert!(fx.applier(&mut sys).apply_generation(1, opts).is_err());
    sys.restart();
    fx.applier(&mut sys).recover().unwrap();
    let gens = Store::new("/var/lib/ovs-bundle")
        .generations(&mut sys)
        .unwrap();
    assert_eq!(gens, [1, 2], "a generation was lost");
}

#[test]
fn a_no_op_reapply_reads_and_writes_nothing_but_what_it_must() {
    let fx = Fixture::new();
    let (mut sys, before) = on_v1(&fx);
    let out = apply(&mut fx.applier(&mut sys), &fx.bundle(&v1(), 1)).unwrap();
    assert!(matches!(out, Outcome::Unchanged { generation: 1 }));
    assert_eq!(sys.view(), before);
    let writes: Vec<&String> = sys
        .calls
        .iter()
        .filter(|c| {
            !c.starts_with("read_file")
                && !c.starts_with("list_dir")
                && !c.ends_with("_read")
                && !c.starts_with("dhcp_running")
        })
        .collect();
    assert!(writes.is_empty(), "{writes:?}");
}

#[test]
fn boot_installs_deliveries_sets_aside_refusals_and_restores_lost_rules() {
    let fx = Fixture::new();
    let mut sys = FakeSystem::new();
    sys.put("/var/lib/ovs-bundle/incoming/t1.tgz", &fx.bundle(&v1(), 1));
    assert_eq!(
        crate::boot::boot(&mut fx.applier(&mut sys), false),
        bundle::Exit::Ok
    );
    let installed = sys.view();
    assert!(!installed
        .files
        .contains_key(&PathBuf::from("/var/lib/ovs-bundle/incoming/t1.tgz")));
    assert_eq!(
        installed.files[&PathBuf::from("/var/lib/ovs-bundle/current")],
        "1\n"
    );
    assert!(installed.up.is_empty(), "boot does not cycle interfaces");
    // A reboot loses every iptables rule; boot puts them back from the current generation.
    sys.chains = bundle::Chains::from_save("");
    assert_eq!(
        crate::boot::boot(&mut fx.applier(&mut sys), false),
        bundle::Exit::Ok
    );
    assert_eq!(sys.view(), installed);
    // A tampered delivery is set aside and the host keeps its generation.
    let mut bad = fx.bundle(&v2(), 2);
    let n = bad.len();
    bad[n - 20] ^= 1;
    sys.put("/var/lib/ovs-bundle/incoming/t1.tgz", &bad);
    let code = crate::boot::boot(&mut fx.applier(&mut sys), false);
    assert_ne!(code, bundle::Exit::Ok);
    let after = sys.view();
    assert!(after
        .files
        .contains_key(&PathBuf::from("/var/lib/ovs-bundle/incoming/failed/t1.tgz")));
    assert_eq!(after.owned, installed.owned);
    assert_eq!(
        after.files[&PathBuf::from("/var/lib/ovs-bundle/current")],
        "1\n"
    );
}

#[test]
fn store_lists_only_complete_generations_and_records_serials_upwards() {
    let mut sys = FakeSystem::new();
    let store = Store::new("/s");
    store.init(&mut sys).unwrap();
    let meta = GenMeta {
        host: "t1".into(),
        serial: 5,
        sha256: "x".into(),
        applied_at: 0,
        gre_only_base: None,
        ip_forward_before: None,
        ip6_forward_before: None,
    };
    store.write_generation(&mut sys, 1, b"b", &meta).unwrap();
    // A generation whose meta.json was never written (a crash) does not count.
    sys.put("/s/generations/2/bundle.tgz", b"b");
    assert_eq!(store.generations(&mut sys).unwrap(), [1]);
    assert_eq!(store.next_number(&mut sys).unwrap(), 2);
    store.switch(&mut sys, 1, 5).unwrap();
    store.switch(&mut sys, 1, 3).unwrap();
    assert_eq!(store.highest_serial(&mut sys).unwrap(), Some(5));
    assert_eq!(store.current(&mut sys).unwrap(), Some(1));
    sys.put("/s/current", b"garbage");
    assert!(store.current(&mut sys).is_err());
}

#[test]
fn the_first_apply_leaves_up_an_uplink_the_hosts_own_file_configured() {
    let fx = Fixture::new();
    let mut sys = FakeSystem::new();
    sys.put(
        "/etc/network/interfaces",
        b"auto lo\niface lo inet loopback\n\nauto up0\niface up0 inet dhcp\n",
    );
    sys.up.insert("up0".into());
    sys.put(
        "/proc/net/route",
        b"Iface\tDestination\tGateway\nup0\t00000000\t0102A8C0\n",
    );
    let plan = fx
        .applier(&mut sys)
        .plan_bundle(&fx.bundle(&v1(), 1), FULL)
        .unwrap();
    assert!(
        plan.render().contains("WARNING: leaving up0 up"),
        "{}",
        plan.render()
    );
    apply(&mut fx.applier(&mut sys), &fx.bundle(&v1(), 1)).unwrap();
    assert!(sys.up.contains("up0"), "the uplink was taken down");
    assert!(
        !sys.calls.iter().any(|c| c == "Down up0"),
        "{:?}",
        sys.calls
    );
}

#[test]
fn cycling_the_interface_of_the_default_route_is_warned_about() {
    let fx = Fixture::new();
    let (mut sys, _) = on_v1(&fx);
    // /proc/net/route: priv0 has the default route, up0 the underlay (10.99.0.0/24).
    sys.put(
        "/proc/net/route",
        b"Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n\
          priv0\t00000000\t0100140A\t0003\t0\t0\t0\t00000000\n\
          up0\t0000630A\t00000000\t0001\t0\t0\t0\t00FFFFFF\n",
    );
    let plan = fx
        .applier(&mut sys)
        .plan_bundle(&fx.bundle(&v2(), 2), FULL)
        .unwrap();
    assert!(
        plan.render()
            .contains("WARNING: priv0 carries this host's default route"),
        "{}",
        plan.render()
    );
    assert!(!plan.render().contains("underlay"), "{}", plan.render());
}

#[test]
fn cycling_the_underlay_interface_is_warned_about() {
    let fx = Fixture::new();
    let (mut sys, _) = on_v1(&fx);
    // The tunnels' peers (10.99.0.x) are reached through priv0 here, the default through up0.
    sys.put(
        "/proc/net/route",
        b"Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n\
          up0\t00000000\t0100140A\t0003\t0\t0\t0\t00000000\n\
          priv0\t0000630A\t00000000\t0001\t0\t0\t0\t00FFFFFF\n",
    );
    let opts = FULL;
    let plan = fx
        .applier(&mut sys)
        .plan_bundle(&fx.bundle(&v2(), 2), opts)
        .unwrap();
    let shown = plan.render();
    assert!(
        shown
            .contains("WARNING: priv0 carries the underlay to tunnel peer(s) 10.99.0.2, 10.99.0.7"),
        "{shown}"
    );
    assert!(!shown.contains("default route"), "{shown}");
}

#[test]
fn removing_the_forwarder_puts_ip_forward_back_as_it_was() {
    let fx = Fixture::new();
    let (mut sys, _) = on_v1(&fx); // v1 has a forwarder: ip_forward went from 0 to 1
    let forward = PathBuf::from("/proc/sys/net/ipv4/ip_forward");
    assert_eq!(sys.files[&forward], b"1\n");
    let no_forwarder = profile(
        &[("10.99.0.2", Some(PSK_A)), ("10.99.0.3", None)],
        "10.20.0.1/24",
        false,
    );
    let out = apply(&mut fx.applier(&mut sys), &fx.bundle(&no_forwarder, 2)).unwrap();
    let Outcome::Applied { plan, .. } = out else {
        panic!("nothing applied")
    };
    assert_eq!(plan.ip_forward.as_deref(), Some("0"), "{}", plan.render());
    assert_eq!(sys.files[&forward], b"0\n");
    // Rolling back to the forwarder turns it on again, and back off when leaving it.
    let opts = ApplyOpts {
        scope: Scope::Full,
        cycle: true,
        allow_downgrade: true,
    };
    fx.applier(&mut sys).apply_generation(1, opts).unwrap();
    assert_eq!(sys.files[&forward], b"1\n");
    fx.applier(&mut sys).apply_generation(2, opts).unwrap();
    assert_eq!(sys.files[&forward], b"0\n");
    // Once it is back, it is the host's again: a change by hand is no drift of ours.
    sys.files.insert(forward, b"1\n".to_vec());
    let (_, drift) = fx.applier(&mut sys).status().unwrap();
    assert!(drift.is_empty(), "{}", drift.render());
}

#[test]
fn boot_brings_up_the_newest_generation_that_verifies_when_the_state_is_damaged() {
    let fx = Fixture::new();
    let (mut base, _) = on_v1(&fx);
    apply(&mut fx.applier(&mut base), &fx.bundle(&v2(), 2)).unwrap();
    let on_v2 = base.view();
    let lose_rules = |sys: &mut FakeSystem| sys.chains = bundle::Chains::from_save("");
    let boot = |sys: &mut FakeSystem| {
        let log = std::rc::Rc::new(std::cell::RefCell::new(String::new()));
        let sink = log.clone();
        let mut app = fx.applier(sys);
        app.log = Box::new(move |m| sink.borrow_mut().push_str(&format!("{m}\n")));
        let code = crate::boot::boot(&mut app, false);
        drop(app);
        let text = log.borrow().clone();
        (code, text)
    };
    // A garbage `current`: the newest generation (2) comes back, with a warning.
    let mut sys = base.clone();
    sys.put("/var/lib/ovs-bundle/current", b"garbage\n");
    lose_rules(&mut sys);
    let (code, log) = boot(&mut sys);
    assert_eq!(code, bundle::Exit::Ok, "{log}");
    assert!(
        log.contains("WARNING") && log.contains("restored generation 2"),
        "{log}"
    );
    assert_eq!(sys.view().chains, on_v2.chains);
    // Generation 2's meta damaged: generation 1 comes back, loudly, and boot says it failed.
    let mut sys = base.clone();
    sys.put("/var/lib/ovs-bundle/generations/2/meta.json", b"{");
    lose_rules(&mut sys);
    let (code, log) = boot(&mut sys);
    assert_eq!(code, bundle::Exit::Failed, "{log}");
    assert!(log.contains("restored generation 1 instead"), "{log}");
    assert!(
        !sys.view().chains.chains["OVSB-POSTROUTING"]
            .rules
            .is_empty(),
        "v1's NAT is back"
    );
    // A damaged highest-serial does not stop a restore.
    let mut sys = base.clone();
    sys.put("/var/lib/ovs-bundle/highest-serial", b"garbage\n");
    lose_rules(&mut sys);
    let (code, log) = boot(&mut sys);
    assert_eq!(code, bundle::Exit::Ok, "{log}");
    assert_eq!(sys.view().chains, on_v2.chains);
    // A sound generation that fails to apply is not replaced by an older one: it stays
    // current (falling back would make old PSKs stick).
    let mut sys = base.clone();
    lose_rules(&mut sys);
    sys.firewall_ignores_writes = true;
    let (code, log) = boot(&mut sys);
    assert_ne!(code, bundle::Exit::Ok, "{log}");
    assert!(!log.contains("instead"), "{log}");
    assert_eq!(
        sys.files[&PathBuf::from("/var/lib/ovs-bundle/current")],
        b"2\n"
    );
    // A damaged in-progress marker does not stop boot either.
    let mut sys = base.clone();
    sys.put("/var/lib/ovs-bundle/in-progress.json", b"not json");
    lose_rules(&mut sys);
    let (code, log) = boot(&mut sys);
    assert_eq!(code, bundle::Exit::Ok, "{log}");
    assert_eq!(sys.view().chains, on_v2.chains);
    assert!(!sys
        .files
        .contains_key(&PathBuf::from("/var/lib/ovs-bundle/in-progress.json")));
}

#[test]
fn ipsec_skb_mark_is_set_where_every_tunnel_is_ipsec_and_only_ours_is_removed() {
    use crate::ovs::change::{SKB_MARK, SKB_MARK_OWNER};
    let fx = Fixture::new();
    let (mut sys, _) = on_v1(&fx); // one PSK tunnel, one plain: no mark
    assert!(!sys.ovs.root_other_config.contains_key(SKB_MARK));
    apply(&mut fx.applier(&mut sys), &fx.bundle(&v2(), 2)).unwrap();
    assert_eq!(
        sys.ovs.root_other_config.get(SKB_MARK).map(String::as_str),
        Some("0/1")
    );
    assert!(sys.ovs.root_external_ids.contains_key(SKB_MARK_OWNER));
    // A plain tunnel again: the mark would drop it, so ours goes.
    apply(&mut fx.applier(&mut sys), &fx.bundle(&v1(), 3)).unwrap();
    assert!(!sys.ovs.root_other_config.contains_key(SKB_MARK));
    // Someone else's mark is neither removed nor overwritten.
    sys.ovs
        .root_other_config
        .insert(SKB_MARK.into(), "1/1".into());
    apply(&mut fx.applier(&mut sys), &fx.bundle(&v1(), 4)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        sys.ovs.root_other_config.get(SKB_MARK).map(String::as_str),
        Some("1/1")
    );
    let e = apply(&mut fx.applier(&mut sys), &fx.bundle(&v2(), 5)).unwrap_err();
    assert!(
        e.to_string()
            .contains("ipsec_skb_mark is \"1/1\", set by someone else"),
        "{e}"
    );
}

#[test]
fn old_generations_are_pruned_but_never_the_current_one_or_its_gre_only_base() {
    let fx = Fixture::new();
    let mut sys = FakeSystem::new();
    let store = Store::new("/var/lib/ovs-bundle");
    for serial in 1..=12 {
        let addr = format!("10.20.0.{serial}/24");
        let p = profile(&[("10.99.0.2", Some(PSK_A))], &addr, false);
        apply(&mut fx.applier(&mut sys), &fx.bundle(&p, serial)).unwrap();
    }
    // Every apply keeps the newest ten (old bundles hold old PSKs).
    assert_eq!(
        store.generations(&mut sys).unwrap(),
        (3..=12).collect::<Vec<_>>()
    );
    // A GRE-only generation keeps its base, however old.
    let gre = profile(
        &[("10.99.0.2", Some("rotated-psk-dddddddddddd"))],
        "10.20.0.12/24",
        false,
    );
    fx.applier(&mut sys)
        .apply_bundle(
            &fx.bundle(&gre, 13),
            ApplyOpts {
                scope: Scope::GreOnly,
                cycle: true,
                allow_downgrade: false,
            },
        )
        .unwrap();
    let gone = fx.applier(&mut sys).gc(1).unwrap();
    assert_eq!(gone, (4..=11).collect::<Vec<_>>());
    assert_eq!(store.generations(&mut sys).unwrap(), [12, 13]);
    let (_, drift) = fx.applier(&mut sys).status().unwrap();
    assert!(drift.is_empty(), "{}", drift.render());
}

#[test]
fn a_removed_tunnels_ipsec_guard_goes_only_after_the_tunnel() {
    let fx = Fixture::new();
    let (mut sys, _) = on_v1(&fx); // PSK tunnel to 10.99.0.2 (guarded), plain one to .3
    let plain_only = profile(&[("10.99.0.3", None)], "10.20.0.1/24", true);
    apply(&mut fx.applier(&mut sys), &fx.bundle(&plain_only, 2)).unwrap();
    let order: Vec<&str> = sys
        .calls
        .iter()
        .map(String::as_str)
        .filter(|c| *c == "firewall_write" || c.starts_with("ovs_apply"))
        .collect();
    assert_eq!(
        order,
        ["ovs_apply 1 change(s)", "firewall_write"],
        "{:?}",
        sys.calls
    );
    assert!(sys.chains.chains["OVSB-OUTPUT"].rules.is_empty());
    // And a new PSK tunnel's guard comes before the tunnel.
    sys.calls.clear();
    apply(&mut fx.applier(&mut sys), &fx.bundle(&v1(), 3)).unwrap();
    let order: Vec<&str> = sys
        .calls
        .iter()
        .map(String::as_str)
        .filter(|c| *c == "firewall_write" || c.starts_with("ovs_apply"))
        .collect();
    assert_eq!(
        order,
        ["firewall_write", "ovs_apply 1 change(s)"],
        "{:?}",
        sys.calls
    );
}

/// A failed apply whose revert cannot remove the new PSK tunnel from OVS keeps the tunnel's
/// guard: the revert goes on past the failure, but not to the step that removes guards.
#[test]
fn a_revert_that_cannot_remove_a_tunnel_keeps_its_guard() {
    let fx = Fixture::new();
    let (mut sys, _) = on_v1(&fx); // PSK tunnel to 10.99.0.2 (guarded), plain one to .3
    let plain_only = profile(&[("10.99.0.3", None)], "10.20.0.1/24", true);
    apply(&mut fx.applier(&mut sys), &fx.bundle(&plain_only, 2)).unwrap();
    let guard = "-A OVSB-OUTPUT -d 10.99.0.2/32 -j OVSB-GUARD-GRE";
    assert!(!sys.chains.chains["OVSB-OUTPUT"]
        .rules
        .iter()
        .any(|r| r == guard));
    let v3 = fx.bundle(&v1(), 3);
    sys.calls.clear();
    // The step after OVS took the tunnel fails; then the revert's own OVS change fails.
    let calls = {
        let mut probe = sys.clone();
        apply(&mut fx.applier(&mut probe), &v3).unwrap();
        probe.calls
    };
    let ovs = calls
        .iter()
        .position(|c| c.starts_with("ovs_apply"))
        .unwrap();
    // The DHCP step, after OVS took the tunnel.
    let late = ovs
        + calls[ovs..]
            .iter()
            .position(|c| c.starts_with("dhcp_restart"))
            .unwrap();
    let mut probe = sys.clone();
    probe.fail_at = Some(late);
    assert!(apply(&mut fx.applier(&mut probe), &v3).is_err());
    let revert_ovs = late
        + probe.calls[late..]
            .iter()
            .position(|c| c.starts_with("ovs_apply"))
            .expect("the revert changes OVS back");
    sys.fail_at = Some(late);
    sys.also_fail_at.insert(revert_ovs);
    let err = apply(&mut fx.applier(&mut sys), &v3).unwrap_err();
    assert!(
        sys.ovs.ports.values().any(|p| p.name == "gre-0a630002"),
        "the tunnel stays (its removal failed)"
    );
    assert!(
        sys.chains.chains["OVSB-OUTPUT"]
            .rules
            .iter()
            .any(|r| r == guard),
        "and so does its guard: {:?}",
        sys.chains
    );
    assert!(err.to_string().contains("IPsec guards"), "{err}");
}

/// A signed bundle whose PSK tunnel has no IPsec guard, or whose guard chain does not drop, is
/// refused before any change; the guard as older bundles wrote it is accepted.
#[test]
fn a_bundle_without_a_psk_tunnels_guard_is_refused() {
    let fx = Fixture::new();
    let (mut sys, before) = on_v1(&fx); // PSK tunnel to 10.99.0.2
    let guard = "-A OVSB-OUTPUT -d 10.99.0.2/32 -j OVSB-GUARD-GRE";
    let drop = "-A OVSB-GUARD-GRE -p gre -m policy --dir out --pol none -j DROP";
    for (what, edit) in [
        ("no guard rule", guard),
        ("a guard chain without its drop", drop),
    ] {
        let b = fx.bundle_edited(&v1(), 5, bundle::IPTABLES_NAME, |t| {
            t.replace(&format!("{edit}\n"), "")
        });
        let err = apply(&mut fx.applier(&mut sys), &b).unwrap_err();
        assert!(
            err.to_string().contains("has no IPsec guard"),
            "{what}: {err}"
        );
        assert_eq!(sys.view(), before, "{what}");
    }
    let legacy = bundle::firewall::legacy_guard_rule("10.99.0.2", bundle::tunnel::TunnelKind::Gre);
    let b = fx.bundle_edited(&v1(), 6, bundle::IPTABLES_NAME, |t| {
        t.replace(guard, &legacy)
    });
    apply(&mut fx.applier(&mut sys), &b).unwrap();
    assert!(sys.chains.chains["OVSB-OUTPUT"].rules.contains(&legacy));
}

/// Reads started early (while the bundle is verified) show the host as it was when they
/// started; any change the applier makes drops them, and an apply that ends early leaves none
/// for the next one to find.
#[test]
fn reads_started_early_never_outlive_a_change_or_the_apply_that_started_them() {
    use crate::system::System;
    let fx = Fixture::new();
    let (mut sys, _) = on_v1(&fx);
    let drift = |sys: &mut FakeSystem| {
        let c = sys.chains.chains.get_mut("OVSB-POSTROUTING").unwrap();
        assert!(!c.rules.is_empty());
        c.rules.clear();
    };
    // On the seam: what the read returns is the host at read_begin.
    let (chains, ports) = (sys.chains.clone(), sys.ovs.ports.len());
    sys.read_begin();
    drift(&mut sys);
    sys.ovs.ports.clear();
    assert_eq!(
        sys.firewall_read(bundle::firewall::Family::V4).unwrap(),
        chains
    );
    assert_eq!(sys.ovs_read().unwrap().ports.len(), ports);
    // A change drops what is pending: the next read is of now.
    sys.read_begin();
    sys.ovs_apply(&[], &Live::default(), "t").unwrap();
    assert!(sys.ovs_read().unwrap().ports.is_empty());
    assert_ne!(
        sys.firewall_read(bundle::firewall::Family::V4).unwrap(),
        chains
    );

    let (mut sys, _) = on_v1(&fx);
    let v1 = fx.bundle(&v1(), 1);
    // A refused apply started the reads, then stopped before them.
    assert!(apply(&mut fx.applier(&mut sys), b"not a bundle").is_err());
    drift(&mut sys);
    // The re-apply sees the drift (a read left pending by the refusal would not) and repairs it.
    let out = apply(&mut fx.applier(&mut sys), &v1).unwrap();
    assert!(matches!(out, Outcome::Applied { .. }), "{out:?}");
    assert!(!sys.chains.chains["OVSB-POSTROUTING"].rules.is_empty());
}
