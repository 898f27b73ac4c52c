//! The scenarios, run in order on one fleet of tiny guests (gateway, three nodes, an uplink
//! host), then on systemd guests of their own (the per-host images); the cloud-init boot's in a
//! second lane beside them ([`SECOND_LANE`]).
//!
//! Over 500 lines on purpose: one scenario per function, each a story of its own; splitting
//! them by size would only separate steps that belong together.

use crate::fleet::Fleet;
use crate::guest::{Guest, Images, Spec};
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub struct Ctx {
    fleet: Fleet,
    images: Images,
    work: PathBuf,
    artifacts: PathBuf,
    guests: BTreeMap<String, Guest>,
    hub: u16,
}

const BOOT_TIMEOUT: Duration = Duration::from_secs(240);
/// What a tiny guest needs before it accepts the test fleet's bundles.
const TRUST_TEST_KEY: &str = "mkdir -p /etc/ovs-bundle/trusted.d && \
    cp /payload/test.pub /etc/ovs-bundle/trusted.d/fleet.pub && sync";
const PRIV: [(&str, &str); 4] = [
    ("gw1", "10.20.20.1"),
    ("node1", "10.20.20.2"),
    ("node2", "10.20.20.3"),
    ("node3", "10.20.20.4"),
];

impl Ctx {
    pub fn new(fleet: Fleet, images: Images, work: PathBuf, artifacts: PathBuf) -> Ctx {
        let hub = 20000 + (std::process::id() % 15000) as u16 * 3;
        Ctx {
            fleet,
            images,
            work,
            artifacts,
            guests: BTreeMap::new(),
            hub,
        }
    }

    fn g(&mut self, name: &str) -> Result<&mut Guest> {
        self.guests
            .get_mut(name)
            .with_context(|| format!("guest {name} is not running"))
    }

    fn boot_all(&mut self, specs: Vec<Spec>) -> Result<()> {
        for (i, spec) in specs.iter().enumerate() {
            let dir = self.work.join("guests").join(&spec.name);
            let g = Guest::boot(
                spec,
                &self.images,
                &self.fleet.payload,
                &dir,
                16 + i as u8 + self.guests.len() as u8,
            )?;
            self.guests.insert(spec.name.clone(), g);
        }
        for spec in &specs {
            let g = self.g(&spec.name)?;
            g.wait_ready(BOOT_TIMEOUT)?;
        }
        Ok(())
    }

    fn boot_fleet(&mut self) -> Result<()> {
        if self.guests.contains_key("gw1") {
            return Ok(());
        }
        let (under, uplink) = (self.hub, self.hub + 1);
        let node = |name: &str, ip: &str| self.tiny_guest(name, ip);
        let specs = vec![
            tiny_spec(
                "gw1",
                vec![
                    (under, Some("192.0.2.1/24".into())),
                    (uplink, Some("198.51.100.1/24".into())),
                ],
            ),
            node("node1", "192.0.2.2"),
            node("node2", "192.0.2.3"),
            node("node3", "192.0.2.4"),
            tiny_spec("up1", vec![(uplink, Some("198.51.100.2/24".into()))]),
        ];
        self.boot_all(specs)?;
        for name in ["gw1", "node1", "node2", "node3"] {
            self.g(name)?.ok(TRUST_TEST_KEY)?;
        }
        Ok(())
    }

    /// A tiny guest on the underlay at `ip`.
    fn tiny_guest(&self, name: &str, ip: &str) -> Spec {
        tiny_spec(name, vec![(self.hub, Some(format!("{ip}/24")))])
    }

    /// Keeps what a person needs to see why a scenario failed.
    fn collect(&mut self, scenario: &str) {
        let dir = self.artifacts.join(scenario);
        let _ = std::fs::create_dir_all(&dir);
        let names: Vec<String> = self.guests.keys().cloned().collect();
        for name in names {
            let Some(g) = self.guests.get_mut(&name) else {
                continue;
            };
            let _ = std::fs::copy(
                g.dir.join("console.log"),
                dir.join(format!("{name}-console.log")),
            );
            let cmd = "for f in /var/log/charon.log /var/log/applier-boot.log /var/log/ovs-ctl.log /var/log/openvswitch/ovs-vswitchd.log /var/log/openvswitch/ovs-monitor-ipsec.log; do echo \"== $f\"; tail -n 200 $f 2>/dev/null; done; echo '== state'; ovs-vsctl show; ipsec statusall; ip xfrm policy; ip xfrm state; iptables-save; ip addr; ip route; applier generations; echo '== processes'; ps -eo pid,lstart,args | grep -E 'charon|starter|ovs|ipsec' | grep -v grep; echo '== ifup'; cat /var/log/ifup.log; echo '== dmesg'; dmesg | tail -n 30; echo '== cloud-init'; grep -B3 -A14 Traceback /var/log/cloud-init.log 2>/dev/null | tail -n 80; tail -n 40 /var/log/cloud-init-output.log 2>/dev/null; echo '== dpkg'; cat /var/log/dpkg-applier.log 2>/dev/null; if [ -d /run/systemd/system ]; then echo '== failed units'; systemctl --failed --no-pager; echo '== IPsec units'; journalctl -b --no-pager -u openvswitch-ipsec -u strongswan-starter | tail -n 60; echo '== ovs-bundle units'; journalctl -b --no-pager -u ovs-bundle -u ovs-bundle-incoming | tail -n 60; fi";
            if let Ok((_, out)) = g.run_timeout(cmd, Duration::from_secs(20)) {
                let _ = std::fs::write(dir.join(format!("{name}-logs.txt")), out);
            }
        }
    }

    /// Stops the named guests, if running. Idle TCG guests still take CPU time, and a reboot
    /// competing with five of them on two cores took several times as long.
    fn stop(&mut self, names: &[&str]) {
        for name in names {
            if let Some(mut g) = self.guests.remove(*name) {
                g.stop();
            }
        }
    }

    /// A context for a second lane of scenarios: the same fleet, images and directories, no
    /// guests yet. Its guests have names and networks of their own.
    fn lane(&self) -> Ctx {
        Ctx {
            fleet: self.fleet.clone(),
            images: self.images.clone(),
            work: self.work.clone(),
            artifacts: self.artifacts.clone(),
            guests: BTreeMap::new(),
            hub: self.hub,
        }
    }

    pub fn shutdown(&mut self) {
        for g in self.guests.values_mut() {
            g.stop();
        }
        self.guests.clear();
    }
}

/// A tiny guest (the test kernel and init) with these NICs (hub port, address).
fn tiny_spec(name: &str, nics: Vec<(u16, Option<String>)>) -> Spec {
    Spec {
        name: name.into(),
        nics,
        systemd: false,
        extra_disks: vec![],
        http_cmd: None,
        disk: None,
        dump_nic0: false,
        uefi: false,
    }
}

/// Runs `script` on `guest` until it exits 0, up to `tries` times a second apart. A lost agent
/// connection is re-established and counts as a failed try.
fn until_ok(g: &mut Guest, script: &str, tries: u32) -> Result<String> {
    let mut last = String::new();
    for i in 0..tries {
        if i > 0 && std::env::var_os("OVSB_VM_TRACE").is_some() {
            eprintln!("  {}: try {} of `{script}`", g.name, i + 1);
        }
        let (rc, out) = match g.run(script) {
            Ok(r) => r,
            Err(e) => {
                g.disconnect();
                g.wait_ready(Duration::from_secs(30))?;
                (-1, e.to_string())
            }
        };
        if rc == 0 {
            return Ok(out);
        }
        last = out;
        std::thread::sleep(Duration::from_secs(1));
    }
    bail!(
        "{}: `{script}` never succeeded; last output:\n{last}",
        g.name
    )
}

fn apply(g: &mut Guest, args: &str) -> Result<String> {
    g.ok(&format!("applier apply {args} 2>&1"))
}

type Scenario = fn(&mut Ctx) -> Result<()>;

const SCENARIOS: [(u32, &str, Scenario); 12] = [
    (
        1,
        "original example: gateway + two nodes, GRE over IPsec",
        original_example,
    ),
    (2, "NAT forwarder", nat_forwarder),
    (3, "GRE-only update while traffic flows", gre_only_update),
    (5, "refusals on a live host", refusals),
    (6, "crash mid-apply, then reboot", crash_and_reboot),
    (7, "three-host full mesh from fleet.toml", full_mesh),
    (8, "applier try: revert, confirm, power loss", try_scenarios),
    (
        9,
        "OVN with IPsec: a central and three chassis, then a fourth joins",
        ovn_fleet,
    ),
    (
        11,
        "per-host images (the example over VXLAN with IPsec): built, refused, reproducible, booted by BIOS and UEFI firmware, rebooted",
        per_host_images,
    ),
    (
        12,
        "the base image built twice: the same bytes",
        base_built_twice,
    ),
    (4, "boot via cloud-init from a stock image", cloud_init_boot),
    (10, "package removed, then purged", remove_and_purge),
];

/// Scenarios 4 and 10 run on a guest of their own (ci1, on a network of its own), in a second
/// lane beside the tiny fleet's scenarios 2 to 9. Those mostly wait (IKE, timers, polls): in a
/// sequential run they left 59% of the two cores idle, and scenarios 4 and 10 left 51% idle,
/// ci1 being one emulated CPU. The lane starts once the first scenario of the main lane has
/// ended (scenario 1: five guests booting, 7% idle, the busiest stretch). Whole scenarios in a
/// second lane beside the systemd boots of scenario 11 were tried before and lost: those are
/// bound by the CPUs.
const SECOND_LANE: [u32; 2] = [4, 10];

/// Runs the selected scenarios (all when `only` is empty): the main lane in order, one at a
/// time, and the [`SECOND_LANE`] in order beside it. Returns one result per scenario run.
pub fn run_all(ctx: &mut Ctx, only: &[u32]) -> Result<Vec<bool>> {
    let selected = |n: &u32| only.is_empty() || only.contains(n);
    let (second, main): (Vec<_>, Vec<_>) = SCENARIOS
        .into_iter()
        .filter(|(n, _, _)| selected(n))
        .partition(|(n, _, _)| SECOND_LANE.contains(n));
    let mut lane = Some(ctx.lane());
    let results = std::thread::scope(|s| {
        let mut results = Vec::new();
        let mut beside = None;
        for (i, scenario) in main.iter().enumerate() {
            if i == 1 {
                if let Some(lane) = lane.take() {
                    let second = &second;
                    beside = Some(s.spawn(move || run_lane(lane, second)));
                }
            }
            results.push(run_one(ctx, *scenario));
        }
        match (beside, lane) {
            (Some(h), _) => results.extend(h.join().unwrap_or_else(|_| vec![false])),
            (None, Some(lane)) => results.extend(run_lane(lane, &second)),
            (None, None) => {}
        }
        results
    });
    Ok(results)
}

fn run_lane(mut ctx: Ctx, scenarios: &[(u32, &str, Scenario)]) -> Vec<bool> {
    let results = scenarios.iter().map(|s| run_one(&mut ctx, *s)).collect();
    ctx.shutdown();
    results
}

/// Runs one scenario, prints its line (and where its logs are, on a failure).
fn run_one(ctx: &mut Ctx, (n, name, f): (u32, &str, Scenario)) -> bool {
    let start = Instant::now();
    let r = f(ctx);
    let secs = start.elapsed().as_secs_f64();
    match &r {
        Ok(()) => println!("scenario {n} ({name}): PASS in {secs:.0} s"),
        Err(e) => {
            println!("scenario {n} ({name}): FAIL in {secs:.0} s: {e:#}");
            ctx.collect(&format!("scenario-{n}"));
            println!(
                "  logs: {}",
                ctx.artifacts.join(format!("scenario-{n}")).display()
            );
        }
    }
    r.is_ok()
}

fn wait_for_sas(ctx: &mut Ctx, name: &str, want: usize) -> Result<()> {
    let g = ctx.g(name)?;
    until_ok(
        g,
        &format!("[ \"$(ipsec status | grep -c INSTALLED)\" -ge {want} ]"),
        90,
    )
    .with_context(|| format!("{name}: IPsec SAs not installed"))
    .map(drop)
}

/// Open vSwitch 3.1.0 starts without upcall handlers, and never forwards on that datapath, when
/// vswitchd comes up within 10 s of boot; the shipped ovs-vswitchd drop-in holds it back. A reboot
/// must not have brought up such a vswitchd.
fn vswitchd_forwards(g: &mut Guest) -> Result<()> {
    let (rc, out) = g.run(
        "echo uptime $(cut -d' ' -f1 /proc/uptime); \
         awk '/opened log file/ { zero = 0; n = 0 } /n-handler-threads to 0,/ { zero = 1 } \
         /n-handler-threads to/ { n++ } END { print n \" handler settings, zero: \" zero; exit zero }' \
         /var/log/openvswitch/ovs-vswitchd.log",
    )?;
    if rc != 0 {
        bail!(
            "{}: ovs-vswitchd started with no upcall handler threads (before the drop-in's wait?):\n{out}",
            g.name
        );
    }
    Ok(())
}

fn ping_all(ctx: &mut Ctx, hosts: &[&str]) -> Result<()> {
    ping_among(ctx, hosts, &PRIV)
}

/// Every one of `hosts` reaches every other at its address in `addrs`.
fn ping_among(ctx: &mut Ctx, hosts: &[&str], addrs: &[(&str, &str)]) -> Result<()> {
    for from in hosts {
        for (to, addr) in addrs.iter().filter(|(h, _)| hosts.contains(h) && h != from) {
            let g = ctx.g(from)?;
            until_ok(g, &format!("ping -c 1 -W 2 {addr}"), 30)
                .with_context(|| format!("{from} cannot reach {to} ({addr})"))?;
        }
    }
    Ok(())
}

/// Plain GRE (IP protocol 47): the hand-declared mesh's tunnels.
const PLAIN_GRE: Plain = Plain {
    what: "GRE",
    filter: "ip proto 47",
};
/// Plain Geneve (UDP port 6081): OVN's tunnels.
const PLAIN_GENEVE: Plain = Plain {
    what: "Geneve",
    filter: "udp port 6081",
};

/// Tunnel packets that must never be seen on the underlay outside ESP.
#[derive(Clone, Copy)]
struct Plain {
    what: &'static str,
    filter: &'static str,
}

fn watch_for_plain_gre(ctx: &mut Ctx, hosts: &[&str]) -> Result<()> {
    watch_for_plain(ctx, &ring(hosts, &PRIV)?, PLAIN_GRE)
}

fn no_plain_gre(ctx: &mut Ctx, hosts: &[&str], during: &str) -> Result<()> {
    no_plain(ctx, hosts, PLAIN_GRE, during)
}

/// Each of `hosts` with the address (in `addrs`) of the next one, the last with the first's.
fn ring<'a>(hosts: &[&'a str], addrs: &[(&str, &'a str)]) -> Result<Vec<(&'a str, &'a str)>> {
    let mut pairs = Vec::new();
    for (i, name) in hosts.iter().enumerate() {
        let next = hosts[(i + 1) % hosts.len()];
        let addr = addrs
            .iter()
            .find(|(h, _)| *h == next)
            .map(|(_, a)| *a)
            .with_context(|| format!("no overlay address for {next}"))?;
        pairs.push((*name, addr));
    }
    Ok(pairs)
}

/// Starts, on each host of `pairs`, a capture of `plain` tunnel packets on the underlay and a
/// ping offering overlay traffic to the pair's address five times a second, both running
/// until [`no_plain`]. One ping process, restarted only while it cannot start (no overlay
/// address before the first apply): a new process per packet cost each guest most of its
/// emulated CPU. The loop's shell is stopped by its pid: the agent runs scripts from standard
/// input, so no command line holds the loop's text for `pkill -f` to find (the loop this
/// replaces was never stopped, and pinged on through every later scenario).
fn watch_for_plain(ctx: &mut Ctx, pairs: &[(&str, &str)], plain: Plain) -> Result<()> {
    for (name, addr) in pairs {
        ctx.g(name)?.ok(&format!(
            "(tcpdump -lni eth0 -Q out '{}' >/tmp/plain.cap 2>/tmp/plain.err &); \
             ( (echo $BASHPID >/tmp/offer.pid; while :; do ping -q -i 0.2 {addr}; sleep 0.5; done) >/dev/null 2>&1 & ); sleep 2",
            plain.filter
        ))?;
    }
    Ok(())
}

/// Stops what [`watch_for_plain`] started and fails if any `plain` tunnel packet left any of
/// `hosts` (the capture sees outgoing packets only: each is counted once, by its sender).
fn no_plain(ctx: &mut Ctx, hosts: &[&str], plain: Plain, during: &str) -> Result<()> {
    let mut seen = Vec::new();
    for name in hosts {
        let out = ctx.g(name)?.ok(
            "kill $(cat /tmp/offer.pid) && pkill -f 'ping -q -i 0.2'; pkill -x tcpdump; sleep 1; \
             echo plain=$(grep -c ' > ' /tmp/plain.cap); head -n 5 /tmp/plain.cap; \
             echo == tcpdump; cat /tmp/plain.err",
        )?;
        let n: usize = out
            .split_whitespace()
            .find_map(|w| w.strip_prefix("plain="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(usize::MAX);
        if n != 0 {
            seen.push(format!(
                "{name}: {n} plain {} packet(s):\n{out}",
                plain.what
            ));
        }
    }
    if !seen.is_empty() {
        bail!(
            "plain {} on the underlay during {during}:\n{}",
            plain.what,
            seen.join("\n")
        );
    }
    Ok(())
}

/// Restarts ovs-monitor-ipsec, then strongSwan, on each host, and waits for the SAs again.
fn restart_ipsec_daemons(ctx: &mut Ctx, hosts: &[(&str, usize)]) -> Result<()> {
    let ctl = "/usr/share/openvswitch/scripts/ovs-ctl --ike-daemon=strongswan";
    for (name, _) in hosts {
        ctx.g(name)?.ok(&format!(
            "{ctl} stop-ovs-ipsec >>/var/log/ovs-ctl.log 2>&1; {ctl} start-ovs-ipsec >>/var/log/ovs-ctl.log 2>&1"
        ))?;
    }
    for (name, sas) in hosts {
        wait_for_sas(ctx, name, *sas)?;
    }
    for (name, _) in hosts {
        ctx.g(name)?.ok("ipsec restart >/dev/null 2>&1")?;
    }
    for (name, sas) in hosts {
        wait_for_sas(ctx, name, *sas)?;
    }
    Ok(())
}

fn original_example(ctx: &mut Ctx) -> Result<()> {
    ctx.boot_fleet()?;
    // No tunnel packet may leave in plaintext, from before the first apply on: the IPsec guard
    // (OVSB-OUTPUT) drops GRE to a PSK peer that no IPsec policy covers yet.
    watch_for_plain_gre(ctx, &["gw1", "node1", "node2"])?;
    for name in ["gw1", "node1", "node2"] {
        let out = apply(ctx.g(name)?, &format!("/payload/v1/{name}.tgz"))?;
        if !out.contains("generation 1 is current") {
            bail!("{name}: unexpected apply output:\n{out}");
        }
    }
    wait_for_sas(ctx, "gw1", 2)?;
    wait_for_sas(ctx, "node1", 1)?;
    wait_for_sas(ctx, "node2", 1)?;
    // The shipped strongSwan settings are in force (see applier/strongswan.d).
    let acq = ctx
        .g("gw1")?
        .ok("cat /proc/sys/net/core/xfrm_acq_expires")?;
    if acq.trim() != "30" {
        bail!(
            "gw1: xfrm_acq_expires is {}, not the shipped 30",
            acq.trim()
        );
    }
    ping_all(ctx, &["gw1", "node1", "node2"])?;
    // On the underlay, the tunnels carry only ESP: never plain GRE.
    ctx.g("gw1")?.ok("(timeout 10 tcpdump -lni eth0 'ip proto 47 or ip proto 50' >/tmp/cap 2>/dev/null &); sleep 2")?;
    ctx.g("node1")?
        .ok("ping -c 5 -i 0.3 10.20.20.1 >/dev/null")?;
    ctx.g("node2")?
        .ok("ping -c 5 -i 0.3 10.20.20.2 >/dev/null")?;
    let out = ctx
        .g("gw1")?
        .ok("while pgrep -f 'timeout 10 tcpdump' >/dev/null; do sleep 0.5; done; echo esp=$(grep -c ESP /tmp/cap) gre=$(grep -c GRE /tmp/cap)")?;
    let count = |k: &str| -> usize {
        out.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    if count("esp=") < 10 || count("gre=") != 0 {
        bail!("underlay capture on gw1: {out}");
    }
    for name in ["gw1", "node1", "node2"] {
        let (rc, out) = ctx.g(name)?.run("applier status")?;
        if rc != 0 {
            bail!("{name}: status reports drift after apply:\n{out}");
        }
    }
    restart_ipsec_daemons(ctx, &[("gw1", 2), ("node1", 1), ("node2", 1)])?;
    ping_all(ctx, &["gw1", "node1", "node2"])?;
    no_plain_gre(
        ctx,
        &["gw1", "node1", "node2"],
        "the first apply and restarts of ovs-monitor-ipsec and strongSwan",
    )
}

fn nat_forwarder(ctx: &mut Ctx) -> Result<()> {
    ctx.boot_fleet()?;
    let rules = ctx.g("gw1")?.ok("iptables -t nat -S OVSB-POSTROUTING")?;
    if !rules.contains("-A OVSB-POSTROUTING -s 10.20.20.0/24 -o eth1 -j MASQUERADE") {
        bail!("gw1 NAT rules:\n{rules}");
    }
    // node1 has no route of its own to the uplink network: only through gw1's private address.
    let n1 = ctx.g("node1")?;
    let (rc, _) = n1.run("ping -c 1 -W 1 198.51.100.2")?;
    if rc == 0 {
        bail!("node1 reached the uplink without the forwarder");
    }
    n1.ok("ip route replace default via 10.20.20.1")?;
    ctx.g("up1")?
        .ok("(timeout 20 tcpdump -lni eth0 icmp >/tmp/icmp 2>/dev/null &); sleep 2")?;
    until_ok(ctx.g("node1")?, "ping -c 1 -W 2 198.51.100.2", 20)?;
    let seen = ctx.g("up1")?.ok("sleep 1; cat /tmp/icmp")?;
    if !seen.contains("198.51.100.1 > 198.51.100.2: ICMP echo request")
        || seen.contains("10.20.20.")
    {
        bail!("the uplink should see only gw1's address as the source:\n{seen}");
    }
    ctx.g("node1")?.ok("ip route del default")?;
    Ok(())
}

fn gre_only_update(ctx: &mut Ctx) -> Result<()> {
    ctx.boot_fleet()?;
    apply(ctx.g("node3")?, "/payload/v2/node3.tgz")?;
    let ofports = "for p in gre-c0000202 gre-c0000203; do ovs-vsctl get Interface $p ofport; done";
    let before = ctx.g("gw1")?.ok(ofports)?;
    // Traffic between two existing hosts (through gw1) while every host takes the update.
    ctx.g("node1")?
        .ok("(ping -i 0.2 -c 75 -W 1 10.20.20.3 >/tmp/during.log 2>&1 &); sleep 1")?;
    let out = apply(ctx.g("gw1")?, "--gre-only /payload/v2/gw1.tgz")?;
    // Exactly the tunnel to node3, and its IPsec guard (which follows the tunnels).
    let guard = "+ -A OVSB-OUTPUT -d 192.0.2.4/32 -j OVSB-GUARD-GRE";
    if !out.contains("+ port private-br0/gre-c0000204")
        || !out.contains(guard)
        || out.lines().filter(|l| l.starts_with("  ")).count() != 2
    {
        bail!("gw1's GRE-only plan should add exactly the tunnel to node3 and its guard:\n{out}");
    }
    for n in ["node1", "node2"] {
        apply(ctx.g(n)?, &format!("--gre-only /payload/v2/{n}.tgz"))?;
    }
    let log = until_ok(
        ctx.g("node1")?,
        "! pgrep -x ping >/dev/null && cat /tmp/during.log",
        40,
    )?;
    if !log.contains(" 0% packet loss") {
        bail!("packets lost between node1 and node2 during the GRE-only update:\n{log}");
    }
    let after = ctx.g("gw1")?.ok(ofports)?;
    if before != after {
        bail!("unchanged tunnels changed ofport: {before:?} -> {after:?}");
    }
    wait_for_sas(ctx, "node3", 1)?;
    ping_all(ctx, &["gw1", "node1", "node2", "node3"])?;
    let (rc, out) = ctx.g("gw1")?.run("applier status")?;
    if rc != 0 {
        bail!("gw1 drift after the GRE-only update:\n{out}");
    }
    Ok(())
}

fn refusals(ctx: &mut Ctx) -> Result<()> {
    ctx.boot_fleet()?;
    let g = ctx.g("gw1")?;
    let snapshot = "ovs-vsctl show; iptables-save | grep -v '^#'; cat /etc/network/interfaces; applier generations";
    let before = g.ok(snapshot)?;
    for (bundle, codes, what) in [
        ("/payload/tampered.tgz", &[10, 11][..], "tampered"),
        ("/payload/v1/node1.tgz", &[12][..], "another host's"),
        ("/payload/v1/gw1.tgz", &[15][..], "older serial"),
    ] {
        let (rc, out) = g.run(&format!("applier apply {bundle}"))?;
        if !codes.contains(&rc) {
            bail!("{what} bundle: exit {rc}, expected {codes:?}:\n{out}");
        }
    }
    let after = g.ok(snapshot)?;
    if before != after {
        bail!("state changed by refused bundles:\n--- before\n{before}\n--- after\n{after}");
    }
    let (rc, out) = g.run("applier status")?;
    if rc != 0 {
        bail!("status after refusals:\n{out}");
    }
    Ok(())
}

fn crash_and_reboot(ctx: &mut Ctx) -> Result<()> {
    ctx.boot_fleet()?;
    // Scenarios 6 and 7 need only the three original hosts.
    ctx.stop(&["node3", "up1"]);
    let g = ctx.g("node2")?;
    // The harness's applier with the kill hook (the package has none): killed after the
    // interfaces step, before the marker is cleared. The package's applier recovers at boot.
    let (rc, out) = g.run(&format!(
        "{}=interfaces /payload/applier-test-hooks apply /payload/v3/node2.tgz",
        crate::fleet::KILL_HOOK
    ))?;
    if rc != 137 {
        bail!("apply was not killed half-way (exit {rc}):\n{out}");
    }
    let half = g.ok("ovs-vsctl list-ports private-br0; test -f /var/lib/ovs-bundle/in-progress.json && echo marker")?;
    if !half.contains("aux0") || !half.contains("marker") {
        bail!("expected a half-applied host with its marker:\n{half}");
    }
    // Power loss: reboot at once, no sync.
    g.reboot("echo b > /proc/sysrq-trigger", BOOT_TIMEOUT)?;
    let log = g.ok("cat /var/log/applier-boot.log")?;
    if !log.contains("undid an interrupted apply of generation") {
        bail!("boot did not recover the interrupted apply:\n{log}");
    }
    let state = g.ok("ovs-vsctl list-ports private-br0; applier generations; applier status")?;
    if state.contains("aux0") {
        bail!("half-applied port survived recovery:\n{state}");
    }
    // gw1 still holds SAs from before the power loss: node2's first packets start a new IKE
    // exchange (auto=route), which replaces them.
    vswitchd_forwards(ctx.g("node2")?)?;
    ping_all(ctx, &["node2", "gw1", "node1"])?;
    wait_for_sas(ctx, "node2", 1)?;
    Ok(())
}

/// ci1 is configured as its profile says (and has a current generation).
fn ci1_configured() -> String {
    format!("applier generations | grep -q '^\\*' && {CI1_NETWORK}")
}
/// ci1's network as its bundle configured it, without asking the applier.
const CI1_NETWORK: &str = "ip -4 addr show priv0 | grep -q 10.30.30.1/24 && \
    iptables -t nat -S OVSB-POSTROUTING | grep -q MASQUERADE && ovs-vsctl list-ports private-br0 | grep -q gre-c0000233";

fn cloud_init_boot(ctx: &mut Ctx) -> Result<()> {
    let seed = crate_seed(ctx)?;
    // The guest reaches the test apt repository through QEMU, which runs this program per
    // connection (nothing listens on the host).
    let me = std::env::current_exe().context("the vm-tests binary")?;
    let spec = Spec {
        name: "ci1".into(),
        nics: vec![(ctx.hub + 2, None)],
        systemd: true,
        extra_disks: vec![seed],
        http_cmd: Some(format!(
            "{} --serve-http {}",
            me.display(),
            ctx.fleet.repo.display()
        )),
        disk: None,
        dump_nic0: false,
        uefi: false,
    };
    ctx.boot_all(vec![spec])?;
    let g = ctx.g("ci1")?;
    // The image never had the applier: cloud-init installed it from the repository.
    until_ok(
        g,
        "dpkg-query -W -f='${Status}' ovs-bundle-applier | grep -q 'install ok installed'",
        400,
    )
    .context("cloud-init did not install ovs-bundle-applier from the test repository")?;
    let (rc, out) = g.run(
        "apt-cache policy ovs-bundle-applier; ls /usr/local/sbin; test -x /usr/sbin/applier && \
         apt-cache policy ovs-bundle-applier | grep -q 'http://10.0.2.100 ./'",
    )?;
    if rc != 0 {
        bail!("ci1: the applier did not come from the test repository:\n{out}");
    }
    until_ok(g, &ci1_configured(), 180)
        .context("ci1 not configured by its cloud-init user data")?;
    // cloud-init may still be in the package's postinst (starting the path unit): wait for it
    // to finish before the try and scenario 10's apt runs. (`status --wait` exits 1 here: the
    // test image lacks what some modules want, resize2fs and ssh-keygen among them.) A reboot of
    // a host with the package is scenario 11's (its images have the package installed).
    until_ok(g, "cloud-init status --wait >/dev/null 2>&1; test -f /var/lib/cloud/instance/boot-finished && \
                 dpkg-query -W -f='${Status}' ovs-bundle-applier | grep -q 'install ok installed'", 300)
        .context("cloud-init did not finish on ci1")?;
    // `applier try` on a systemd host: the watcher is a transient unit (outside any login
    // session's scope), logging to the journal, and reverts when nobody confirms.
    let out = g.ok(
        "mkdir -p /payload && (mountpoint -q /payload || mount -o ro /dev/vdb /payload) && \
         applier try /payload/ci2/ci1.tgz --timeout 20s 2>&1 && ip -4 addr show aux1",
    )?;
    if !out.contains("systemd unit ovs-bundle-try-") || !out.contains("10.30.30.5/24") {
        bail!("ci1: applier try:\n{out}");
    }
    until_ok(g, "applier try --status | grep ' reverted at '", 120)
        .context("ci1: the try was not reverted by its transient unit")?;
    let (rc, out) = g.run(
        "journalctl --no-pager -u 'ovs-bundle-try-*' | grep 'reverted to generation 1' && \
         ! ip link show aux1 2>/dev/null && applier status",
    )?;
    if rc != 0 {
        bail!("ci1: after the try's revert:\n{out}");
    }
    Ok(())
}

/// On ci1 (configured by scenario 4, booted for it when run alone): `apt-get remove` stops the
/// units (no unit is left enabled or loaded) and leaves nothing of the package but its
/// configuration (/etc/ovs-bundle with the trusted key, the strongSwan setting, the enablement
/// symlinks: Debian keeps configuration until a purge) and the state in /var/lib/ovs-bundle; `apt-get purge` leaves nothing at all. The host's network stays
/// as the bundle configured it throughout.
fn remove_and_purge(ctx: &mut Ctx) -> Result<()> {
    if !ctx.guests.contains_key("ci1") {
        cloud_init_boot(ctx)?;
    }
    let g = ctx.g("ci1")?;
    let files = g.ok("dpkg -L ovs-bundle-applier | sort")?;
    let ours = "systemctl list-unit-files 'ovs-bundle*' --no-legend; \
                ls -d /etc/ovs-bundle /etc/strongswan.d/ovs-bundle.conf /var/lib/ovs-bundle \
                /usr/sbin/applier /usr/lib/systemd/system/ovs-vswitchd.service.d/ovs-bundle.conf \
                /etc/systemd/system/multi-user.target.wants/ovs-bundle* 2>/dev/null; true";
    g.ok("DEBIAN_FRONTEND=noninteractive apt-get remove -y -q ovs-bundle-applier >/tmp/remove.log 2>&1 || { cat /tmp/remove.log; false; }")?;
    let (rc, out) = g.run("systemctl is-active ovs-bundle.service ovs-bundle-incoming.path")?;
    if rc == 0 || out.lines().any(|l| l.trim() == "active") {
        bail!("ci1: units still active after apt-get remove:\n{out}");
    }
    let left = g.ok(ours)?;
    // Debian keeps a removed package's enablement symlinks (dangling, no unit behind them) until
    // the purge, as it keeps conffiles, so that a reinstall keeps the administrator's choice.
    let expected = "/etc/ovs-bundle\n/etc/strongswan.d/ovs-bundle.conf\n\
        /etc/systemd/system/multi-user.target.wants/ovs-bundle-incoming.path\n\
        /etc/systemd/system/multi-user.target.wants/ovs-bundle.service\n/var/lib/ovs-bundle\n";
    if left.split_whitespace().ne(expected.split_whitespace()) {
        bail!("ci1: after apt-get remove, expected only configuration and state:\n{expected}got:\n{left}\n(package files were:\n{files})");
    }
    let (rc, out) = g.run("systemctl is-enabled ovs-bundle.service ovs-bundle-incoming.path")?;
    if rc == 0 {
        bail!("ci1: units still enabled after apt-get remove:\n{out}");
    }
    until_ok(g, CI1_NETWORK, 5).context("ci1's network changed when the package was removed")?;
    g.ok("DEBIAN_FRONTEND=noninteractive apt-get purge -y -q ovs-bundle-applier >/tmp/purge.log 2>&1 || { cat /tmp/purge.log; false; }")?;
    let left = g.ok(&format!("{ours}; dpkg -l ovs-bundle-applier 2>/dev/null | grep '^[a-z][a-z] '; ls /var/lib/systemd/deb-systemd-helper-enabled | grep ovs-bundle; true"))?;
    if !left.trim().is_empty() {
        bail!("ci1: left after apt-get purge:\n{left}");
    }
    until_ok(g, CI1_NETWORK, 5).context("ci1's network changed when the package was purged")?;
    Ok(())
}

/// A NoCloud seed (a vfat volume labelled CIDATA): network config, and the user data
/// `builder cloud-init` wrote, which delivers ci1's bundle and trusted key through write_files.
fn crate_seed(ctx: &Ctx) -> Result<PathBuf> {
    let dir = ctx.work.join("seed");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("meta-data"),
        "instance-id: ci1-test\nlocal-hostname: ci1\n",
    )?;
    std::fs::write(
        dir.join("network-config"),
        "version: 2\nethernets:\n  eth0:\n    match:\n      name: eth0\n    addresses: [192.0.2.50/24]\n  \
         eth1:\n    match:\n      name: eth1\n    addresses: [10.0.2.15/24]\n",
    )?;
    std::fs::copy(&ctx.fleet.ci_user_data, dir.join("user-data"))?;
    let img = ctx.work.join("seed.img");
    let _ = std::fs::remove_file(&img);
    let run = |cmd: &mut std::process::Command| -> Result<()> {
        let out = cmd
            .output()
            .with_context(|| format!("{cmd:?} (install dosfstools and mtools)"))?;
        anyhow::ensure!(
            out.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    };
    run(std::process::Command::new("mkfs.vfat")
        .args(["-n", "CIDATA", "-C"])
        .arg(&img)
        .arg("4096"))?;
    for f in ["meta-data", "user-data", "network-config"] {
        run(std::process::Command::new("mcopy")
            .arg("-i")
            .arg(&img)
            .arg(dir.join(f))
            .arg(format!("::{f}")))?;
    }
    Ok(img)
}

fn full_mesh(ctx: &mut Ctx) -> Result<()> {
    ctx.boot_fleet()?;
    ctx.stop(&["node3", "up1"]);
    // The mesh's per-pair PSKs replace the example's: a PSK rotation, host after host.
    watch_for_plain_gre(ctx, &["gw1", "node1", "node2"])?;
    for name in ["gw1", "node1", "node2"] {
        let out = apply(ctx.g(name)?, &format!("/payload/v4/{name}.tgz"))?;
        if !out.contains("is current") {
            bail!("{name}: {out}");
        }
        let ports = ctx.g(name)?.ok("for p in $(ovs-vsctl list-ports private-br0 | grep gre-); do echo $p $(ovs-vsctl get Port $p protected); done")?;
        if ports.lines().count() != 2 || ports.lines().any(|l| !l.ends_with(" true")) {
            bail!("{name}: expected two protected tunnels:\n{ports}");
        }
    }
    // The hosts took their new per-pair PSKs one after another, so each tunnel's IKE attempts
    // failed authentication for a while; the kernel's placeholder states from those attempts must
    // expire soon enough for the tunnels to come up (the shipped xfrm_acq_expires).
    // Every guest reaches every other directly; with split horizon the mesh is no loop.
    ping_all(ctx, &["gw1", "node1", "node2"])?;
    for name in ["gw1", "node1", "node2"] {
        wait_for_sas(ctx, name, 2)?;
        let (rc, out) = ctx.g(name)?.run("applier status")?;
        if rc != 0 {
            bail!("{name}: drift:\n{out}");
        }
    }
    // A broadcast storm would show as a flood of ARP on the underlay; count a quiet second.
    let (rc, out) = ctx
        .g("gw1")?
        .run("timeout 3 tcpdump -ni eth0 -c 500 'ip proto 50' 2>/dev/null | wc -l")?;
    if rc > 1 || out.trim().parse::<u32>().unwrap_or(500) >= 500 {
        bail!("underlay busy without traffic (a loop?): {out}");
    }
    no_plain_gre(ctx, &["gw1", "node1", "node2"], "a PSK rotation")
}

/// `applier try`, three ways (on the mesh of scenario 7):
/// 1. node1 tries a bundle whose tunnel leads to an underlay address nobody has, from a session
///    that is then killed: gw1 loses node1 on the overlay, and node1 comes back by itself when
///    the built-in IPsec check fails.
/// 2. node2 tries a good bundle, its --check passes, and it is confirmed.
/// 3. node2 tries another bundle and loses power before confirming: it boots the confirmed
///    generation of 2, without the unconfirmed one.
fn try_scenarios(ctx: &mut Ctx) -> Result<()> {
    ctx.boot_fleet()?;
    ctx.stop(&["node3", "up1"]);
    let hosts = ["gw1", "node1", "node2"];
    for name in hosts {
        apply(ctx.g(name)?, &format!("/payload/v4/{name}.tgz"))?;
    }
    ping_all(ctx, &hosts)?;

    let current = |g: &mut Guest| g.ok("cat /var/lib/ovs-bundle/current");
    let n1_before = current(ctx.g("node1")?)?;
    // 1. Tried from a shell in a session of its own, which is killed as a dropped SSH
    //    connection would be; the watcher is not part of it. The bundle's tunnel leads to an
    //    underlay address nobody has: gw1 loses node1 on the overlay, the built-in IPsec check
    //    never passes, and node1 goes back by itself once the check has had its 20 s.
    let n1 = ctx.g("node1")?;
    n1.ok("setsid sh -c 'echo $$ >/tmp/session.pid; applier try /payload/v5-bad/node1.tgz --timeout 5m --settle 20s >/tmp/try.out 2>&1; sleep 600' </dev/null >/dev/null 2>&1 & sleep 1")?;
    until_ok(n1, "applier try --status | grep 'is on trial'", 60)
        .context("node1: the bad bundle was not put on trial")?;
    n1.ok("kill -9 -- -$(cat /tmp/session.pid); cat /tmp/try.out")?;
    until_ok(ctx.g("gw1")?, "! ping -c 1 -W 1 10.20.20.2", 15)
        .context("the bad bundle did not cut node1 off the overlay")?;
    // Back by itself: node1 reaches gw1 over the overlay again, then gw1 node1. In that order:
    // gw1 may still hold the SA node1 dropped with its tunnel (the IKE delete lost under load;
    // ovs-monitor-ipsec's connections have no dead peer detection), and only node1's own
    // traffic starts the exchange that replaces it (seen once with scenario 4 beside this one).
    until_ok(ctx.g("node1")?, "ping -c 1 -W 1 10.20.20.1", 120)
        .context("node1 did not come back by itself after its try failed its checks")?;
    until_ok(ctx.g("gw1")?, "ping -c 1 -W 1 10.20.20.2", 30)
        .context("gw1 does not reach node1 after node1's try was reverted")?;
    let n1 = ctx.g("node1")?;
    let status = n1.ok("applier try --status; ovs-vsctl list-ports private-br0")?;
    if !status.contains(" reverted at ")
        || !status.contains("IPsec SA to 192.0.2.201 has not passed within 20 s")
        || status.contains("gre-c00002c9")
        || current(n1)? != n1_before
    {
        bail!("node1 after its try:\n{status}");
    }
    ping_all(ctx, &hosts)?;

    // 2. A good bundle: checked and confirmed. 3. Another on trial when the power goes: one
    //    power loss shows both, the confirmed generation kept and the unconfirmed one gone.
    let n2 = ctx.g("node2")?;
    let out = n2.ok(
        "applier try /payload/v5/node2.tgz --timeout 10m --check 'ping -c 1 -W 2 10.20.20.1' 2>&1",
    )?;
    if !out.contains("applied on trial") {
        bail!("node2: try:\n{out}");
    }
    until_ok(n2, "grep 'check(s) passed' /var/lib/ovs-bundle/try.log", 90)
        .context("node2: the try's checks did not pass")?;
    let out = n2.ok("applier confirm 2>&1")?;
    let confirmed = current(n2)?;
    if !out.contains(&format!("confirmed: generation {} stays", confirmed.trim())) {
        bail!("node2: confirm:\n{out}");
    }
    // node2 tries the example's VXLAN bundle (v6), and loses power before confirming. (Not gw1:
    // after a reset, its kernel sits in soft lockups for minutes before init under TCG, a
    // guest-side stall unrelated to ovs-bundle.)
    n2.ok("applier try /payload/v6/node2.tgz --timeout 10m 2>&1 && ovs-vsctl list-ports private-br0 | grep -q vxl-")?;
    n2.reboot("echo b > /proc/sysrq-trigger", BOOT_TIMEOUT)?;
    let state = n2.ok(
        "applier generations; applier try --status; ovs-vsctl list-ports private-br0; ip -4 addr show aux1",
    )?;
    if current(n2)? != confirmed
        || !state.contains(" reverted at ")
        || !state.contains("the host restarted before the try was confirmed")
        || state.contains("vxl-")
        || !state.contains("10.20.20.113/24")
    {
        bail!("node2 after a power loss: not on its confirmed generation:\n{state}");
    }
    vswitchd_forwards(ctx.g("node2")?)?;
    ping_all(ctx, &hosts)?;
    for name in hosts {
        let (rc, out) = ctx.g(name)?.run("applier status")?;
        if rc != 0 {
            bail!("{name}: drift after the tries:\n{out}");
        }
    }
    Ok(())
}

/// OVN's packaged scripts, as Debian's ovn-central and ovn-host units run them.
const OVN_CTL: &str = "/usr/share/ovn/scripts/ovn-ctl";

/// Scenario 9: the tiny fleet moves from the mesh to OVN with IPsec (docs/ovn.md: with PSKs in
/// the mesh, a cut-over). gw1 runs ovn-central (Debian's packages, started as their units do)
/// and is a chassis; node1 and node2 are chassis. Each host's `ovn0` address reaches the others
/// through OVN's Geneve tunnels, which leave only inside ESP: plain Geneve is captured on every
/// host from before the first OVN apply on. Then node3 joins by applying only its own bundle,
/// and gw1 the central's (its logical port); node1's and node2's bundles are byte for byte the
/// ones they have. Last, node1 and node2 renew their certificates by applying a rebuild, with
/// ovs-monitor-ipsec running and no restart: strongSwan loads the new ones, and the chassis
/// still reach each other (renewed and not) inside ESP.
fn ovn_fleet(ctx: &mut Ctx) -> Result<()> {
    use crate::fleet::OVN_HOSTS;
    ctx.boot_fleet()?;
    // node3 joins later, on a fresh disk.
    ctx.stop(&["node3", "up1"]);
    let three = ["gw1", "node1", "node2"];
    let addrs: Vec<(&str, &str)> = OVN_HOSTS.iter().map(|(h, _, a)| (*h, *a)).collect();
    watch_for_plain(ctx, &ring(&three, &addrs)?, PLAIN_GENEVE)?;
    // The central first: its databases, the southbound one listening on the underlay (the
    // operator's step, docs/ovn.md), then its bundle (logical switch and ports, NB_Global
    // ipsec, and its own chassis keys), then its ovn-controller.
    ctx.g("gw1")?.ok(&format!(
        "{OVN_CTL} start_northd >/var/log/ovn-ctl.log 2>&1 && \
         ovn-sbctl --timeout=30 set-connection ptcp:6642:192.0.2.1"
    ))?;
    for name in three {
        let out = apply(ctx.g(name)?, &format!("/payload/ovn1/{name}.tgz"))?;
        if !out.contains("is current") {
            bail!("{name}: unexpected apply output:\n{out}");
        }
        ctx.g(name)?.ok(&format!(
            "{OVN_CTL} start_controller >>/var/log/ovn-ctl.log 2>&1"
        ))?;
    }
    let ipsec = ctx
        .g("gw1")?
        .ok("ovn-nbctl --timeout=10 get NB_Global . ipsec")?;
    if ipsec.trim() != "true" {
        bail!("gw1: NB_Global ipsec is {ipsec:?}, not true");
    }
    ovn_connected(ctx, &three, &addrs)?;
    // The join: node3's bundle on a fresh node3, the central's on gw1; nothing on the others.
    // The builder says so when the join is built (a new serial, into ovn1's directory), and at
    // ovn1's serial their bundles are the same bytes.
    let verdict = std::fs::read_to_string(ctx.work.join("ovn2-build.txt"))?;
    for (name, want) in [
        ("gw1", "changed: needs a full `applier apply`"),
        ("node1", "contents unchanged"),
        ("node2", "contents unchanged"),
        ("node3", "new"),
    ] {
        let line = verdict
            .lines()
            .find(|l| l.starts_with(&format!("{name}: ")))
            .unwrap_or_default();
        if !line.ends_with(want) {
            bail!("builder build of node3's join, {name}: expected {want:?}:\n{verdict}");
        }
    }
    let payload = ctx.work.join("payload");
    for name in ["node1", "node2"] {
        let (a, b) = (
            std::fs::read(payload.join(format!("ovn1/{name}.tgz")))?,
            std::fs::read(payload.join(format!("ovn2-same-serial/{name}.tgz")))?,
        );
        if a != b {
            bail!("{name}'s bundle changed when node3 joined (same serial, other bytes)");
        }
    }
    let spec = ctx.tiny_guest("node3", "192.0.2.4");
    ctx.boot_all(vec![spec])?;
    ctx.g("node3")?.ok(TRUST_TEST_KEY)?;
    let four = ["gw1", "node1", "node2", "node3"];
    let out = apply(ctx.g("gw1")?, "/payload/ovn2/gw1.tgz")?;
    if !out.contains("is current") {
        bail!("gw1: unexpected apply output:\n{out}");
    }
    // node3's own capture, from before its first OVN apply.
    watch_for_plain(ctx, &[("node3", "10.40.0.1")], PLAIN_GENEVE)?;
    let out = apply(ctx.g("node3")?, "/payload/ovn2/node3.tgz")?;
    if !out.contains("is current") {
        bail!("node3: unexpected apply output:\n{out}");
    }
    ctx.g("node3")?.ok(&format!(
        "{OVN_CTL} start_controller >>/var/log/ovn-ctl.log 2>&1"
    ))?;
    ovn_connected(ctx, &four, &addrs)?;
    // Renewal is a rebuild (and an apply). The files are named after their content, so
    // other_config names new ones and ovs-monitor-ipsec re-keys its tunnels with them; the old
    // files go.
    let until = crate::fleet::OVN_RENEWED_UNTIL;
    for name in ["node1", "node2"] {
        let out = apply(ctx.g(name)?, &format!("/payload/ovn3/{name}.tgz"))?;
        if !out.contains("is current") {
            bail!("{name}: unexpected apply output (renewal):\n{out}");
        }
    }
    let year = &until[..4];
    for name in ["node1", "node2"] {
        until_ok(
            ctx.g(name)?,
            &format!(
                "ipsec listcerts | grep -q 'not after .* {year}' && \
                 test $(ls /etc/ipsec.d/certs | grep -c '^ovs-bundle-ovn') = 1 && \
                 test $(ls /etc/ipsec.d/cacerts | grep -c '^ovs-bundle-ovn') = 1"
            ),
            60,
        )
        .with_context(|| {
            format!("{name}: strongSwan did not load the certificate renewed until {until}, or the old files stayed")
        })?;
    }
    // Renewed and not renewed chassis reach each other (the same CA key issued both), only
    // through IPsec (the guard drops plain Geneve; none left, checked below), and the renewed
    // ones have no drift.
    ping_among(ctx, &["node1", "node2", "node3"], &addrs)?;
    for name in ["node1", "node2"] {
        let (rc, out) = ctx.g(name)?.run("applier status")?;
        if rc != 0 {
            bail!("{name}: status reports drift after the renewal:\n{out}");
        }
    }
    no_plain(
        ctx,
        &four,
        PLAIN_GENEVE,
        "the move to OVN with IPsec, node3's join and the renewal",
    )
}

/// `hosts` are chassis of the central (gw1's southbound database lists each), every `ovn0`
/// address reaches every other, each host has an IPsec SA with every other, the tunnels
/// carry ESP, and no host's `applier status` reports drift.
fn ovn_connected(ctx: &mut Ctx, hosts: &[&str], addrs: &[(&str, &str)]) -> Result<()> {
    let names = hosts.join(" ");
    until_ok(
        ctx.g("gw1")?,
        &format!(
            "c=$(ovn-sbctl --timeout=5 --bare --columns=name list Chassis); \
             for h in {names}; do echo \"$c\" | grep -qx \"$h\" || exit 1; done"
        ),
        60,
    )
    .context("gw1: not every chassis registered in the southbound database")?;
    ping_among(ctx, hosts, addrs)?;
    for name in hosts {
        wait_for_sas(ctx, name, hosts.len() - 1)?;
    }
    ctx.g("gw1")?.ok(
        "(timeout 10 tcpdump -lni eth0 'ip proto 50 or udp port 6081' >/tmp/ovn.cap 2>/dev/null &); sleep 2",
    )?;
    for name in &hosts[1..] {
        ctx.g(name)?.ok("ping -c 5 -i 0.3 10.40.0.1 >/dev/null")?;
    }
    let out = ctx.g("gw1")?.ok(
        "while pgrep -f 'timeout 10 tcpdump' >/dev/null; do sleep 0.5; done; \
         echo esp=$(grep -c ESP /tmp/ovn.cap) geneve=$(grep -c '\\.6081: ' /tmp/ovn.cap)",
    )?;
    let count = |k: &str| -> usize {
        out.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .and_then(|v| v.parse().ok())
            .unwrap_or(usize::MAX)
    };
    if count("esp=") < 5 * (hosts.len() - 1) || count("geneve=") != 0 {
        bail!("underlay capture on gw1 (OVN): {out}");
    }
    for name in hosts {
        let (rc, out) = ctx.g(name)?.run("applier status")?;
        if rc != 0 {
            bail!("{name}: status reports drift:\n{out}");
        }
        // The firewall's guard against plaintext Geneve.
        let (rc, out) = ctx.g(name)?.run(
            "iptables -S OVSB-OUTPUT; \
             iptables -S OVSB-OUTPUT | grep -qx -- '-A OVSB-OUTPUT -j OVSB-GUARD-GENEVE'",
        )?;
        if rc != 0 {
            bail!("{name}: no guard against plaintext Geneve:\n{out}");
        }
    }
    Ok(())
}

/// Booting a per-host image takes longer than the test kernel: firmware, GRUB, an initramfs and
/// all of systemd, three guests at once on two cores.
const IMAGE_BOOT_TIMEOUT: Duration = Duration::from_secs(600);
const IMAGE_HOSTS: [&str; 3] = ["gw1", "node1", "node2"];

/// Every image host is configured from its image alone: its name, generation 1 current and
/// restored by the boot unit, the tunnels up over IPsec, every bridge address reachable, no drift.
fn image_hosts_configured(ctx: &mut Ctx) -> Result<()> {
    for name in IMAGE_HOSTS {
        let g = ctx.g(name)?;
        until_ok(g, "systemctl is-active ovs-bundle.service", 120)
            .with_context(|| format!("{name}: the boot unit did not finish"))?;
        let out = g.ok("hostname; applier generations; cat /etc/ovs-bundle/trusted.d/fleet.pub")?;
        if !out.starts_with(&format!("{name}\n")) || !out.contains("* ") {
            bail!("{name}: not its own host, or no current generation:\n{out}");
        }
        // The firmware it booted from: node2 UEFI, the others BIOS (the kernel shows EFI
        // runtime services only when UEFI started it).
        let efi = g.run("test -d /sys/firmware/efi")?.0 == 0;
        if efi != (name == "node2") {
            bail!(
                "{name}: booted by {} firmware, expected {}",
                if efi { "UEFI" } else { "BIOS" },
                if name == "node2" {
                    "UEFI (OVMF)"
                } else {
                    "BIOS (SeaBIOS)"
                }
            );
        }
        // strongSwan's starter has one owner, ovs-monitor-ipsec: the package's drop-in kept
        // strongswan-starter.service from racing it (a race that left hosts without SAs).
        let (rc, out) = g.run(
            "systemctl show -p ConditionResult -p DropInPaths strongswan-starter.service; \
             systemctl show -p ConditionResult --value strongswan-starter.service | grep -qx no",
        )?;
        if rc != 0 {
            bail!("{name}: strongswan-starter.service was not kept off:\n{out}");
        }
    }
    // Traffic first: after gw1 restarts, its peers still hold SAs from before, and only a packet
    // gw1 sends starts the IKE exchange that replaces them (auto=route).
    ping_all(ctx, &IMAGE_HOSTS)?;
    wait_for_sas(ctx, "gw1", 2)?;
    wait_for_sas(ctx, "node1", 1)?;
    wait_for_sas(ctx, "node2", 1)?;
    for name in IMAGE_HOSTS {
        let g = ctx.g(name)?;
        vswitchd_forwards(g)?;
        // The starter ovs-monitor-ipsec runs is the one its pid file names: `ipsec update`
        // (what ovs-monitor-ipsec runs at every tunnel change) reaches it.
        let (rc, out) =
            g.run("pid=$(cat /var/run/starter.charon.pid) && ps -o args= -p \"$pid\"")?;
        if rc != 0 || !out.contains("starter") {
            bail!("{name}: the IPsec starter's pid file names no running starter:\n{out}");
        }
        // The shipped drop-in is what holds vswitchd back on a fast boot: systemd must have
        // used it. And systemd breaks ordering cycles by dropping jobs: the shipped units must
        // cause none.
        let (rc, out) = g.run(
            "show=$(systemctl show -p DropInPaths -p ExecStartPre ovs-vswitchd.service); echo \"$show\"; \
             echo \"$show\" | grep -q '^DropInPaths=.*ovs-vswitchd.service.d/ovs-bundle.conf' && \
             echo \"$show\" | grep -q '^ExecStartPre=.*awk.* status=0 ' && \
             ! journalctl -b --no-pager | grep -i 'ordering cycle'",
        )?;
        if rc != 0 {
            bail!("{name}: the ovs-vswitchd drop-in was not loaded or its wait failed, or the units cause an ordering cycle:\n{out}");
        }
        let (rc, out) = g.run("applier status")?;
        if rc != 0 {
            bail!("{name}: applier status reports drift:\n{out}");
        }
        // An OVN chassis too (on br-int, beside the mesh): the system-id is its own, in
        // ovs-ctl's system-id.conf as well (so every Open vSwitch start keeps it: gw1's reboot
        // proves it), and ovn0 has its address.
        let (rc, out) = g.run(&format!(
            "id=$(ovs-vsctl get Open_vSwitch . external_ids:system-id | tr -d '\"'); \
             conf=$(cat /etc/openvswitch/system-id.conf); \
             echo \"system-id=$id system-id.conf=$conf\"; ip -br addr show ovn0; \
             [ \"$id\" = {name} ] && [ \"$conf\" = {name} ] && \
             ip -br addr show ovn0 | grep -q ' 10\\.30\\.0\\.'"
        ))?;
        if rc != 0 {
            bail!("{name}: not the OVN chassis its bundle makes it:\n{out}");
        }
    }
    Ok(())
}

/// On gw1's underlay, seen by QEMU from the guest's first frame on: ESP, never a plain tunnel
/// packet (VXLAN, UDP 4789, which the image fleet uses; or GRE).
fn image_underlay_esp_only(ctx: &mut Ctx, at_least: usize) -> Result<usize> {
    ctx.g("node1")?
        .ok("ping -c 5 -i 0.3 10.20.20.1 >/dev/null")?;
    ctx.g("node2")?
        .ok("ping -c 5 -i 0.3 10.20.20.1 >/dev/null")?;
    let pcap = ctx.g("gw1")?.dir.join("nic0.pcap");
    let (esp, gre, vxlan) = crate::image::underlay_counts(&pcap)?;
    if gre != 0 || vxlan != 0 || esp < at_least {
        bail!(
            "gw1's underlay ({}): {esp} ESP, {vxlan} plain VXLAN and {gre} plain GRE packets",
            pcap.display()
        );
    }
    Ok(esp)
}

/// The base `vm-tests/run` built (`builder image base`): OVSB_IMAGE_BASE, or its cache.
/// Waits for a base build `vm-tests/run` started in the background into `dir`: its status file
/// (`dir.status`, the exit status, written whole when the build ends), then fails with the end
/// of its log (`dir.log`) unless it is 0.
fn wait_for_build(dir: &std::path::Path, what: &str) -> Result<()> {
    let status = dir.with_extension("status");
    let log = dir.with_extension("log");
    let start = Instant::now();
    while !status.exists() {
        if start.elapsed() > Duration::from_secs(900) {
            bail!(
                "{what} did not finish within 15 minutes; see {}",
                log.display()
            );
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    if std::env::var_os("OVSB_VM_TRACE").is_some() {
        eprintln!("  {what}: waited {:.0} s", start.elapsed().as_secs_f64());
    }
    let rc = std::fs::read_to_string(&status)?;
    if rc.trim() != "0" {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        bail!(
            "{what} (`builder image base`) failed (exit {}):\n{}",
            rc.trim(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    Ok(())
}

fn image_base(here: &std::path::Path) -> PathBuf {
    std::env::var_os("OVSB_IMAGE_BASE")
        .map(PathBuf::from)
        .unwrap_or_else(|| here.join(".cache/image-base"))
}

/// Per-host images (`builder image host`) from the base `vm-tests/run` built (`builder image
/// base`): refused for another host's bundle and for an untrusted key before anything is
/// written; byte-for-byte the same when built again; the three example hosts boot from them
/// alone (SeaBIOS, GRUB, systemd; no -kernel, no payload; the test agent comes from a test-only
/// package given with --deb), reach each other over IPsec with only ESP on the underlay, show no
/// drift, and do so again after gw1 reboots.
fn per_host_images(ctx: &mut Ctx) -> Result<()> {
    ctx.shutdown();
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let base = image_base(&here);
    // Built in the background by vm-tests/run while the first scenarios ran, when not cached.
    if std::env::var_os("OVSB_IMAGE_BASE_STATUS").is_some() {
        wait_for_build(&base, "the base build")?;
    }
    anyhow::ensure!(
        base.join("base.json").exists(),
        "no base image in {}: vm-tests/run builds it",
        base.display()
    );
    let dir = ctx.work.join("images");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let agent = crate::image::agent_deb(&here.join("guest/agent"), &ctx.work)?;
    let builder = ctx.fleet.builder.clone();
    let bundles = ctx.fleet.img_bundles.clone();
    let key = ctx.fleet.fleet_pub.clone();
    let os = |p: &PathBuf| p.as_os_str().to_owned();
    // Refused before anything is written: another host's bundle, and an untrusted key.
    let other = ctx.work.join("other-keys");
    std::fs::create_dir_all(&other)?;
    let out = std::process::Command::new(&builder)
        .args(["keygen", "--unencrypted", "--secret-key"])
        .arg(other.join("k"))
        .arg("--public-key")
        .arg(other.join("k.pub"))
        .output()?;
    anyhow::ensure!(out.status.success(), "keygen: {:?}", out);
    let refused = dir.join("refused.qcow2");
    for (host, k, want, what) in [
        ("gw1", key.clone(), 12, "node1's bundle as gw1's"),
        (
            "node1",
            other.join("k.pub"),
            10,
            "a bundle not signed by --key",
        ),
    ] {
        let args = [
            "--base".into(),
            os(&base),
            "--bundle".into(),
            os(&bundles.join("node1.tgz")),
            "--host".into(),
            host.into(),
            "--key".into(),
            os(&k),
            "--out".into(),
            os(&refused),
        ];
        let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        let (rc, err) = crate::image::image_host(&builder, &refs)?;
        let left: Vec<_> = std::fs::read_dir(&dir)?.collect();
        if rc != want || !left.is_empty() || !err.contains("nothing was written") {
            bail!(
                "{what}: exit {rc} (expected {want}), {} file(s) written:\n{err}",
                left.len()
            );
        }
    }
    // Every host's image, with the test agent as a second layer; node1's again, for the bytes.
    let started = Instant::now();
    let args = [
        "--base".into(),
        os(&base),
        "--all".into(),
        os(&bundles),
        "--key".into(),
        os(&key),
        "--out".into(),
        os(&dir),
        "--format".into(),
        "qcow2".into(),
        "--deb".into(),
        os(&agent),
    ];
    let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let (rc, err) = crate::image::image_host(&builder, &refs)?;
    if rc != 0 || !err.contains("PSKs") {
        bail!("builder image host --all: exit {rc}:\n{err}");
    }
    let all_secs = started.elapsed().as_secs_f64();
    let again = ctx.work.join("node1-again.qcow2");
    let args = [
        "--base".into(),
        os(&base),
        "--bundle".into(),
        os(&bundles.join("node1.tgz")),
        "--key".into(),
        os(&key),
        "--out".into(),
        os(&again),
        "--format".into(),
        "qcow2".into(),
        "--deb".into(),
        os(&agent),
    ];
    let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let (rc, err) = crate::image::image_host(&builder, &refs)?;
    anyhow::ensure!(
        rc == 0,
        "builder image host (node1 again): exit {rc}:\n{err}"
    );
    if std::fs::read(&again)? != std::fs::read(dir.join("node1.qcow2"))? {
        bail!("node1's image differs when built again from the same base, bundle and key");
    }
    use std::os::unix::fs::PermissionsExt;
    for name in IMAGE_HOSTS {
        let mode = std::fs::metadata(dir.join(format!("{name}.qcow2")))?
            .permissions()
            .mode();
        anyhow::ensure!(
            mode & 0o777 == 0o600,
            "{name}'s image has mode {mode:o}, not 0600"
        );
    }
    let trace = std::env::var_os("OVSB_VM_TRACE").is_some();
    let mut lap = Instant::now();
    let mut phase = |what: &str| {
        if trace {
            eprintln!("  {what}: {:.0} s", lap.elapsed().as_secs_f64());
        }
        lap = Instant::now();
    };
    if trace {
        eprintln!("  three host images (qcow2, with the agent) in {all_secs:.1} s");
    }
    // Boot them: the firmware, GRUB and systemd; nothing else.
    for (i, name) in IMAGE_HOSTS.iter().enumerate() {
        let spec = Spec {
            name: name.to_string(),
            nics: vec![(ctx.hub, None)],
            systemd: true,
            extra_disks: vec![],
            http_cmd: None,
            disk: Some(dir.join(format!("{name}.qcow2"))),
            dump_nic0: *name == "gw1",
            // One image, both firmwares: node2 boots it under UEFI (OVMF), the others SeaBIOS.
            uefi: *name == "node2",
        };
        let gdir = ctx.work.join("guests").join(format!("img-{name}"));
        let g = Guest::boot(&spec, &ctx.images, &ctx.fleet.payload, &gdir, 40 + i as u8)?;
        ctx.guests.insert(name.to_string(), g);
    }
    for name in IMAGE_HOSTS {
        ctx.g(name)?.wait_ready(IMAGE_BOOT_TIMEOUT)?;
    }
    phase("booted to the agent");
    image_hosts_configured(ctx)?;
    let esp = image_underlay_esp_only(ctx, 10)?;
    phase("configured, checked");
    // gw1, the hub, reboots: its boot unit restores the same generation, both tunnels come back
    // (the peers' IKE meets a restarted gw1). One host rather than three: three systemd guests
    // shutting down and booting at once on two cores took 206 s against 99 s for the first boot.
    ctx.g("gw1")?
        .reboot("systemctl reboot", IMAGE_BOOT_TIMEOUT)?;
    phase("rebooted to the agent");
    image_hosts_configured(ctx)?;
    image_underlay_esp_only(ctx, esp + 10)?;
    phase("configured, checked");
    if trace {
        for name in ["gw1", "node1"] {
            let (_, out) = ctx.g(name)?.run(
                "systemd-analyze time; systemd-analyze blame --no-pager | head -n 25; \
                 systemd-analyze critical-chain --no-pager multi-user.target",
            )?;
            eprintln!("== {name}\n{out}");
        }
    }
    ctx.shutdown();
    Ok(())
}

/// The base built twice from the same inputs (the applier package, SOURCE_DATE_EPOCH, the apt
/// cache) gives the same disk, byte for byte; `vm-tests/run` makes the second build in the
/// background while the first scenarios run. On a difference, `scripts/image-base-diff` says
/// where (metadata, contents, package versions).
fn base_built_twice(_ctx: &mut Ctx) -> Result<()> {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let base = image_base(&here);
    let again = std::env::var_os("OVSB_IMAGE_BASE_AGAIN")
        .map(PathBuf::from)
        .context("no second base build: run this scenario through vm-tests/run, which starts it")?;
    wait_for_build(&again, "the second base build")?;
    let versions = |d: &PathBuf| std::fs::read_to_string(d.join("packages.txt"));
    if versions(&base)? != versions(&again)? {
        bail!(
            "the cached base {} was built from other package versions than the mirror serves now: \
             remove it and run again (vm-tests/run builds both from the same apt cache)",
            base.display()
        );
    }
    let out = std::process::Command::new(here.join("../scripts/image-base-diff"))
        .arg(&base)
        .arg(&again)
        .output()
        .context("running scripts/image-base-diff")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "the base differs when built again from the same inputs:\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if std::env::var_os("OVSB_VM_TRACE").is_some() {
        eprint!("  {text}");
    }
    let _ = std::fs::remove_dir_all(&again);
    Ok(())
}
