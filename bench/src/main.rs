//! `ovs-bundle-bench`: our figures beside the baselines our users know, measured in the same run
//! on the same machine, so ratios hold across machines while absolute figures do not.
//!
//! For N = 10, 100 and 1,000 GRE tunnels on one userspace bridge in a private OVS: `applier
//! apply` onto an empty bridge, one `ovs-vsctl` process per tunnel (the original tool's way), one
//! batched `ovs-vsctl` transaction, a no-op re-apply, a GRE-only change of one peer, and `applier
//! verify`. For the builder: full-mesh fleets of 10, 100 and 1,000 hosts. Each measured several
//! times (median and spread), wall time and peak memory (GNU time).
//!
//! OVN (issue 17): one host joining a fleet of 10, 100 and 1,000 hosts, as a full mesh and as OVN
//! chassis (bundles whose bytes changed, their size, the rebuild's time); and the central's
//! apply of a 1,000-port logical switch into a private NB ovsdb-server against one batched
//! `ovn-nbctl` transaction, and its no-op re-apply against a batched `--may-exist` no-op.
//! `BENCH_PARTS=tunnels,builder,join,nb` picks parts; `BENCH_OVN=0` leaves out the NB part.
//!
//! Over 500 lines: every part measures against its baseline in the same run and on the same
//! private servers, which this one binary sets up.

use anyhow::{bail, Context, Result};
use nshost::{check, TestHost};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

struct Sample {
    secs: f64,
    max_rss_kb: u64,
}

/// Runs `cmd` under GNU time: wall seconds and peak resident memory of the process.
fn timed(cmd: &mut Command) -> Result<(Sample, String)> {
    let program = cmd.get_program().to_owned();
    let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
    let mut t = Command::new("/usr/bin/time");
    t.arg("-f").arg("OVSB-TIME %e %M").arg(&program).args(&args);
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            t.env(k, v);
        }
    }
    let start = Instant::now();
    let out = t
        .output()
        .context("running /usr/bin/time (install the time package)")?;
    let wall = start.elapsed().as_secs_f64();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let line = err
        .lines()
        .rev()
        .find(|l| l.starts_with("OVSB-TIME"))
        .unwrap_or_default()
        .to_string();
    if !out.status.success() {
        bail!("{program:?} failed: {err}");
    }
    let rss = line
        .split_whitespace()
        .nth(2)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok((
        Sample {
            secs: wall,
            max_rss_kb: rss,
        },
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}

fn stats(samples: &[Sample]) -> Value {
    let mut s: Vec<f64> = samples.iter().map(|x| x.secs).collect();
    s.sort_by(f64::total_cmp);
    let median = s[s.len() / 2];
    json!({
        "median_s": median,
        "min_s": s[0],
        "max_s": s[s.len() - 1],
        "runs": s.len(),
        "max_rss_kb": samples.iter().map(|x| x.max_rss_kb).max().unwrap_or(0),
    })
}

fn median(v: &Value) -> f64 {
    v["median_s"].as_f64().unwrap_or(f64::NAN)
}

fn profile(n: usize, psk: bool, changed: Option<usize>) -> String {
    let mut p = String::from(
        "[host]\nname = \"bench\"\nunderlay_ip = \"10.99.255.254\"\n\n[[bridges]]\nname = \"br-t\"\ndatapath = \"netdev\"\n",
    );
    for i in 0..n {
        p.push_str(&format!(
            "\n[[bridges.gre]]\nremote_ip = \"{}\"\nexternal = true\n",
            peer(i)
        ));
        if psk {
            let key = if changed == Some(i) {
                "a-changed-key-for-one-peer"
            } else {
                "bench-psk-0123456789abcdef"
            };
            p.push_str(&format!("psk = \"{key}\"\n"));
        }
    }
    p
}

fn peer(i: usize) -> String {
    format!("10.{}.{}.{}", 100 + i / 62500, i / 250 % 250, i % 250 + 1)
}

fn reset(h: &TestHost) {
    let _ = h.vsctl(&["--if-exists", "del-br", "br-t"]);
    let _ = std::fs::remove_dir_all(h.root.join("var/lib/ovs-bundle"));
}

fn in_ns(h: &TestHost, program: &str) -> Command {
    let mut c = Command::new("/bin/ip");
    c.args(["netns", "exec", &h.ns, program]);
    for var in ["OVS_RUNDIR", "OVS_DBDIR", "OVS_LOGDIR", "OVS_SYSCONFDIR"] {
        c.env(var, &h.ovs);
    }
    c
}

fn applier(h: &TestHost, bin: &Path, args: &[&str]) -> Command {
    let mut c = in_ns(h, &bin.display().to_string());
    c.arg("--root")
        .arg(&h.root)
        .arg("--ovsdb")
        .arg(format!("unix:{}", h.sock().display()));
    c.args(["--host", "bench"]).args(args);
    c
}

/// `ovs-vsctl` started as the applier is, through `ip netns exec`: it does not need the
/// namespace (it only talks to the socket), but `ip netns exec` costs each process a few
/// milliseconds (a mount namespace, sysfs remounted), which only the applier's figures paid
/// before. The same launcher on both sides of every ratio.
fn vsctl(h: &TestHost, args: &[String]) -> Command {
    let mut c = in_ns(h, "ovs-vsctl");
    c.arg(format!("--db=unix:{}", h.sock().display()))
        .args(args);
    c
}

fn tunnel_args(i: usize, psk: bool) -> Vec<String> {
    let name = format!("gre-b{i}");
    let mut a = vec![
        "add-port".into(),
        "br-t".into(),
        name.clone(),
        "--".into(),
        "set".into(),
        "Interface".into(),
        name,
        "type=gre".into(),
        format!("options:remote_ip={}", peer(i)),
    ];
    if psk {
        a.push("options:psk=bench-psk-0123456789abcdef".into());
    }
    a
}

fn bench_tunnels(h: &TestHost, bin: &Path, n: usize, psk: bool, runs: usize) -> Result<Value> {
    let b1 = h.bundle(&format!("n{n}-{psk}"), &profile(n, psk, None), 1);
    let b2 = h.bundle(
        &format!("n{n}-{psk}-changed"),
        &profile(n, psk, if psk { Some(n / 2) } else { None }),
        2,
    );
    let b2 = if psk {
        b2
    } else {
        // Plain tunnels have no key to change: move one peer instead.
        let mut p = profile(n, false, None);
        p = p.replacen(
            &format!("remote_ip = \"{}\"", peer(n / 2)),
            "remote_ip = \"10.250.0.1\"",
            1,
        );
        h.bundle(&format!("n{n}-plain-moved"), &p, 2)
    };
    let (mut apply, mut noop, mut gre, mut verify, mut per_port, mut batched) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let mut batched_noop = vec![];
    let (mut noop_writes, mut gre_changes) = (0, 0);
    for _ in 0..runs {
        reset(h);
        let (s, _) = timed(&mut applier(h, bin, &["apply", b1.to_str().unwrap()]))?;
        apply.push(s);
        let cfg = h.next_cfg();
        let (s, out) = timed(&mut applier(
            h,
            bin,
            &["apply", "--json", b1.to_str().unwrap()],
        ))?;
        let v: Value = serde_json::from_str(&out)?;
        noop_writes = v["ovs_write_ops"].as_u64().unwrap_or(99) + (h.next_cfg() - cfg) as u64;
        noop.push(s);
        let (s, out) = timed(&mut applier(
            h,
            bin,
            &["apply", "--gre-only", "--json", b2.to_str().unwrap()],
        ))?;
        let v: Value = serde_json::from_str(&out)?;
        gre_changes = v["ovs"].as_array().map_or(0, |a| a.len());
        gre.push(s);
        let (s, _) = timed(&mut applier(h, bin, &["verify", b1.to_str().unwrap()]))?;
        verify.push(s);
        // Baseline: one ovs-vsctl process per tunnel, as the original tool did (minutes at
        // 1,000 tunnels: BENCH_QUICK=1 leaves it out).
        reset(h);
        if quick() {
            per_port.push(Sample {
                secs: f64::NAN,
                max_rss_kb: 0,
            });
        } else {
            check(
                vsctl(
                    h,
                    &[
                        "add-br".into(),
                        "br-t".into(),
                        "--".into(),
                        "set".into(),
                        "Bridge".into(),
                        "br-t".into(),
                        "datapath_type=netdev".into(),
                    ],
                )
                .output()?,
                "add-br",
            );
            let start = Instant::now();
            for i in 0..n {
                check(vsctl(h, &tunnel_args(i, psk)).output()?, "add-port");
            }
            per_port.push(Sample {
                secs: start.elapsed().as_secs_f64(),
                max_rss_kb: 0,
            });
        }
        // Baseline: everything in one ovs-vsctl invocation (one transaction).
        reset(h);
        let mut all: Vec<String> = [
            "add-br",
            "br-t",
            "--",
            "set",
            "Bridge",
            "br-t",
            "datapath_type=netdev",
        ]
        .map(String::from)
        .to_vec();
        for i in 0..n {
            all.push("--".into());
            all.extend(tunnel_args(i, psk));
        }
        let (s, _) = timed(&mut vsctl(h, &all))?;
        batched.push(s);
        // Baseline for the no-op: one batched `--may-exist add-port` per tunnel (and the bridge),
        // everything in place: what a config-management run does to make sure the ports exist.
        let mut again: Vec<String> = ["--may-exist", "add-br", "br-t"].map(String::from).to_vec();
        for i in 0..n {
            again.extend(["--", "--may-exist", "add-port", "br-t"].map(String::from));
            again.push(format!("gre-b{i}"));
        }
        let (s, _) = timed(&mut vsctl(h, &again))?;
        batched_noop.push(s);
    }
    let (apply, batched, per_port) = (stats(&apply), stats(&batched), stats(&per_port));
    Ok(json!({
        "tunnels": n, "psk": psk,
        "apply": apply, "baseline_batched": batched, "baseline_per_port": per_port,
        "noop_reapply": stats(&noop), "noop_write_ops": noop_writes,
        "baseline_batched_noop": stats(&batched_noop),
        "ratio_noop_over_batched_noop": median(&stats(&noop)) / median(&stats(&batched_noop)),
        "gre_only_one_peer": stats(&gre), "gre_only_changes": gre_changes,
        "verify": stats(&verify),
        "ratio_apply_over_batched": median(&apply) / median(&batched),
        "ratio_per_port_over_apply": median(&per_port) / median(&apply),
    }))
}

fn write_fleet(dir: &Path, hosts: usize) -> Result<()> {
    std::fs::create_dir_all(dir.join("hosts"))?;
    std::fs::create_dir_all(dir.join("secrets"))?;
    std::fs::write(
        dir.join("secrets/fleet.secret"),
        "bench-fleet-secret-0123456789abcdef\n",
    )?;
    for h in 0..hosts {
        std::fs::write(
            dir.join(format!("hosts/h{h}.toml")),
            format!(
                "[host]\nname = \"h{h}\"\nunderlay_ip = \"10.1.{}.{}\"\n\n[[bridges]]\nname = \"mesh0\"\nhost_interfaces = [{{ name = \"lan0\", address = \"172.16.{}.{}/16\" }}]\n",
                h / 250, h % 250 + 1, h / 250, h % 250 + 1
            ),
        )?;
    }
    let members: Vec<String> = (0..hosts).map(|h| format!("\"h{h}\"")).collect();
    std::fs::write(
        dir.join("fleet.toml"),
        format!("[[mesh]]\nbridge = \"mesh0\"\nmembers = [{}]\npsk_secret_file = \"secrets/fleet.secret\"\n", members.join(", ")),
    )?;
    Ok(())
}

fn bench_builder(builder: &Path, work: &Path, hosts: usize, runs: usize) -> Result<Value> {
    let dir = work.join(format!("fleet-{hosts}"));
    write_fleet(&dir, hosts)?;
    let key = work.join("bench.key");
    if !key.exists() {
        check(
            Command::new(builder)
                .args(["keygen", "--unencrypted", "--secret-key"])
                .arg(&key)
                .arg("--public-key")
                .arg(work.join("bench.pub"))
                .output()?,
            "keygen",
        );
    }
    let mut samples = vec![];
    let mut bytes = 0;
    for r in 0..runs {
        let out = work.join(format!("out-{hosts}-{r}"));
        let (s, _) = timed(
            Command::new(builder)
                .arg("build")
                .arg(&dir)
                .arg("--out")
                .arg(&out)
                .arg("--key")
                .arg(&key)
                .args(["--serial", "1"]),
        )?;
        samples.push(s);
        bytes = std::fs::read_dir(&out)?
            .flatten()
            .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
            .sum::<u64>();
        // What was built must verify: the last host's bundle, with the applier.
        let last = format!("h{}", hosts - 1);
        check(
            Command::new(builder.with_file_name("applier"))
                .arg("verify")
                .arg(out.join(format!("{last}.tgz")))
                .arg("--trusted-key")
                .arg(work.join("bench.pub"))
                .args(["--host", &last])
                .output()?,
            "verifying a built bundle",
        );
        let _ = std::fs::remove_dir_all(&out);
    }
    Ok(
        json!({"hosts": hosts, "tunnels_per_host": hosts - 1, "build": stats(&samples), "bytes_written": bytes}),
    )
}

/// `BENCH_PARTS=tunnels,builder,join,nb` (default all): which parts to run.
fn part(name: &str) -> bool {
    std::env::var("BENCH_PARTS").map_or(true, |v| v.split(',').any(|p| p.trim() == name))
}

/// What is missing for the northbound part, if anything: OVN's client and NB schema.
fn ovn_missing() -> Option<&'static str> {
    if std::env::var("BENCH_OVN").is_ok_and(|v| v == "0") {
        return Some("BENCH_OVN=0");
    }
    if !Path::new("/usr/share/ovn/ovn-nb.ovsschema").exists() {
        return Some("no /usr/share/ovn/ovn-nb.ovsschema");
    }
    let found = Command::new("ovn-nbctl").arg("--version").output();
    if !found.is_ok_and(|o| o.status.success()) {
        return Some("no ovn-nbctl");
    }
    None
}

/// `BENCH_QUICK=1`: leave out the slow baselines (one ovs-vsctl per tunnel, the builder).
fn quick() -> bool {
    std::env::var_os("BENCH_QUICK").is_some()
}

fn main() -> Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let bins = root.join("target/release");
    let (mut applier_bin, builder_bin) = (bins.join("applier"), bins.join("builder"));
    // Another applier build (say, of an older commit) measured against the same baselines.
    if let Some(other) = std::env::var_os("BENCH_APPLIER") {
        applier_bin = PathBuf::from(other);
    }
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let sizes: Vec<usize> = std::env::var("BENCH_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|| vec![10, 100, 1000]);
    let h = TestHost::new("bench", &applier_bin);
    let mut tunnels = vec![];
    for &n in sizes.iter().filter(|_| part("tunnels")) {
        for psk in [true, false] {
            eprintln!("bench: {n} tunnels, {}", if psk { "PSK" } else { "plain" });
            tunnels.push(bench_tunnels(&h, &applier_bin, n, psk, runs)?);
        }
    }
    // Boot-time no-op: the current generation restored with nothing to change.
    let mut boot = vec![];
    for _ in 0..runs {
        boot.push(timed(&mut applier(&h, &applier_bin, &["boot"]))?.0);
    }
    // The central's northbound apply of a 1,000-port switch (OVN's tools needed).
    let mut nb = vec![];
    if part("nb") {
        if let Some(missing) = ovn_missing() {
            eprintln!("bench: OVN northbound part skipped: {missing} (install ovn-central)");
        } else {
            let ports: usize = std::env::var("BENCH_NB_PORTS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(1000);
            eprintln!("bench: OVN central, a {ports}-port logical switch");
            nb.push(bench_nb(&h, &applier_bin, &builder_bin, ports, runs)?);
        }
    }
    drop(h);
    let work = tempfile_dir()?;
    check(
        Command::new(&builder_bin)
            .args(["keygen", "--unencrypted", "--secret-key"])
            .arg(work.join("bench.key"))
            .arg("--public-key")
            .arg(work.join("bench.pub"))
            .output()?,
        "keygen",
    );
    let mut builds = vec![];
    for &n in sizes.iter().filter(|_| !quick() && part("builder")) {
        eprintln!("bench: builder, {n}-host full mesh");
        builds.push(bench_builder(&builder_bin, &work, n, runs)?);
    }
    let mut joins = vec![];
    for &n in sizes.iter().filter(|_| !quick() && part("join")) {
        for ovn in [false, true] {
            eprintln!(
                "bench: one host joins {n} ({})",
                if ovn { "OVN chassis" } else { "full mesh" }
            );
            joins.push(bench_join(&builder_bin, &work, n, ovn, runs)?);
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    let size = std::fs::metadata(&applier_bin)?.len();
    let result = json!({
        "machine": machine(),
        "applier_binary_bytes": size,
        "boot_noop": stats(&boot),
        "tunnels": tunnels,
        "builder": builds,
        "join": joins,
        "ovn_nb": nb,
    });
    print_table(&result);
    let out = root.join("bench/results");
    std::fs::create_dir_all(&out)?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let file = out.join(format!("{stamp}.json"));
    std::fs::write(&file, serde_json::to_string_pretty(&result)?)?;
    println!("\nwritten to {}", file.display());
    Ok(())
}

fn tempfile_dir() -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("ovsb-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let ovs = Command::new("ovs-vsctl")
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default();
    json!({"cpu": cpu, "cores": cores, "ovs": ovs})
}

fn print_table(r: &Value) {
    let ms = |v: &Value| format!("{:.1} ms", v["median_s"].as_f64().unwrap_or(0.0) * 1000.0);
    let spread = |v: &Value| {
        format!(
            "{:.0}-{:.0}",
            v["min_s"].as_f64().unwrap_or(0.0) * 1000.0,
            v["max_s"].as_f64().unwrap_or(0.0) * 1000.0
        )
    };
    println!("machine: {}", r["machine"]);
    println!(
        "\n{:>6} {:>5} | {:>12} {:>12} {:>12} | {:>9} {:>9} | {:>10} {:>6} | {:>10} {:>4} | {:>8}",
        "tunnels",
        "psk",
        "apply",
        "batched",
        "per-port",
        "apply/bat",
        "port/apply",
        "no-op",
        "writes",
        "gre-only",
        "chg",
        "verify"
    );
    for t in r["tunnels"].as_array().into_iter().flatten() {
        println!("{:>6} {:>5} | {:>12} {:>12} {:>12} | {:>8.2}x {:>8.1}x | {:>10} {:>6} | {:>10} {:>4} | {:>8}",
            t["tunnels"], t["psk"], ms(&t["apply"]), ms(&t["baseline_batched"]), ms(&t["baseline_per_port"]),
            t["ratio_apply_over_batched"].as_f64().unwrap_or(0.0), t["ratio_per_port_over_apply"].as_f64().unwrap_or(0.0),
            ms(&t["noop_reapply"]), t["noop_write_ops"], ms(&t["gre_only_one_peer"]), t["gre_only_changes"], ms(&t["verify"]));
        println!(
            "{:>14} | no-op {} against a batched --may-exist ovs-vsctl no-op {}: {:.2}x",
            "",
            ms(&t["noop_reapply"]),
            ms(&t["baseline_batched_noop"]),
            t["ratio_noop_over_batched_noop"].as_f64().unwrap_or(0.0)
        );
        println!(
            "{:>14} | spread {:>5} {:>12} {:>12} | peak RSS apply {} KiB",
            "",
            spread(&t["apply"]),
            spread(&t["baseline_batched"]),
            spread(&t["baseline_per_port"]),
            t["apply"]["max_rss_kb"]
        );
    }
    println!("\nbuilder (full mesh, per-pair PSKs):");
    for b in r["builder"].as_array().into_iter().flatten() {
        println!(
            "  {:>5} hosts: {} (spread {} ms), peak RSS {} KiB, {} bytes written",
            b["hosts"],
            ms(&b["build"]),
            spread(&b["build"]),
            b["build"]["max_rss_kb"],
            b["bytes_written"]
        );
    }
    println!("\none host joins (rebuild, same serial; bundles whose bytes changed):");
    for j in r["join"].as_array().into_iter().flatten() {
        println!(
            "  {:>5} hosts, {:>4}: {:>5} bundles changed, {:>10} of {:>10} bytes; rebuild {} (spread {} ms; first build {}), peak RSS {} KiB",
            j["hosts"],
            j["kind"].as_str().unwrap_or(""),
            j["bundles_changed"],
            j["bytes_changed"],
            j["bytes_all_bundles"],
            ms(&j["rebuild"]),
            spread(&j["rebuild"]),
            ms(&j["first_build_before_join"]),
            j["rebuild"]["max_rss_kb"]
        );
    }
    for n in r["ovn_nb"].as_array().into_iter().flatten() {
        println!(
            "\nOVN central, {}-port logical switch: apply {} against batched ovn-nbctl {}: {:.2}x",
            n["ports"],
            ms(&n["apply"]),
            ms(&n["baseline_nbctl_batched"]),
            n["ratio_apply_over_batched"].as_f64().unwrap_or(0.0)
        );
        println!(
            "  no-op re-apply {} ({} changes) against a batched --may-exist ovn-nbctl no-op {}: {:.2}x",
            ms(&n["noop_reapply"]),
            n["noop_report"]["changes"],
            ms(&n["baseline_nbctl_batched_noop"]),
            n["ratio_noop_over_batched_noop"].as_f64().unwrap_or(0.0)
        );
        println!(
            "  spread apply {} ms, ovn-nbctl {} ms, no-op {} ms, --may-exist {} ms",
            spread(&n["apply"]),
            spread(&n["baseline_nbctl_batched"]),
            spread(&n["noop_reapply"]),
            spread(&n["baseline_nbctl_batched_noop"])
        );
    }
    println!(
        "\napplier binary: {} bytes; boot-time no-op run: {}",
        r["applier_binary_bytes"],
        ms(&r["boot_noop"])
    );
}

// ---------------------------------------------------------------------------------------------
// OVN (issue 17): per join, mesh against OVN, builder side; and the central's northbound apply
// of a 1,000-port logical switch against `ovn-nbctl` in one batched transaction.

/// A fleet of `hosts` hosts as OVN chassis on one logical switch, `h0` the central (and a
/// chassis too). Host profiles carry only `[host]`: the attachment is the chassis' `ovn0`.
fn write_ovn_fleet(dir: &Path, hosts: usize) -> Result<()> {
    std::fs::create_dir_all(dir.join("hosts"))?;
    let mut fleet = String::from(
        "[ovn]\ncentral = \"h0\"\n\n[[ovn.switches]]\nname = \"ls0\"\nsubnet = \"10.30.0.0/16\"\n",
    );
    for h in 0..hosts {
        std::fs::write(
            dir.join(format!("hosts/h{h}.toml")),
            format!(
                "[host]\nname = \"h{h}\"\nunderlay_ip = \"10.1.{}.{}\"\n",
                h / 250,
                h % 250 + 1
            ),
        )?;
        fleet.push_str(&format!(
            "\n[[ovn.chassis]]\nhost = \"h{h}\"\nswitch = \"ls0\"\naddress = \"10.30.{}.{}/16\"\n",
            h / 250,
            h % 250 + 1
        ));
    }
    std::fs::write(dir.join("fleet.toml"), fleet)?;
    Ok(())
}

/// Every file in `dir` with its bytes.
fn bundles(dir: &Path) -> Result<std::collections::BTreeMap<String, Vec<u8>>> {
    let mut m = std::collections::BTreeMap::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        m.insert(
            e.file_name().to_string_lossy().into_owned(),
            std::fs::read(e.path())?,
        );
    }
    Ok(m)
}

fn build_cmd(builder: &Path, fleet: &Path, out: &Path, key: &Path) -> Command {
    let mut c = Command::new(builder);
    c.arg("build")
        .arg(fleet)
        .arg("--out")
        .arg(out)
        .arg("--key")
        .arg(key)
        .args(["--serial", "1"]);
    c
}

/// One join: a fleet of `hosts` (a full mesh, or OVN chassis) built once; then one host is
/// added and the fleet rebuilt into a copy of that output, `runs` times (each from the same
/// starting output, same serial, so only what the join changes differs). Counts the bundles
/// whose bytes changed (the new one included) and their total size.
fn bench_join(builder: &Path, work: &Path, hosts: usize, ovn: bool, runs: usize) -> Result<Value> {
    let kind = if ovn { "ovn" } else { "mesh" };
    let dir = work.join(format!("join-{kind}-{hosts}"));
    let write = |n: usize| {
        if ovn {
            write_ovn_fleet(&dir, n)
        } else {
            write_fleet(&dir, n)
        }
    };
    let key = work.join("bench.key");
    write(hosts)?;
    let base = work.join(format!("join-{kind}-{hosts}-base"));
    // The first build of the fleet into an empty directory, once: the same run's reference for
    // the rebuild (which also reads and compares every bundle already there).
    let (first, _) = timed(&mut build_cmd(builder, &dir, &base, &key))?;
    let before = bundles(&base)?;
    write(hosts + 1)?;
    let (mut samples, mut changed, mut changed_bytes, mut total_bytes) = (vec![], 0, 0, 0);
    let mut report = String::new();
    for r in 0..runs {
        let out = work.join(format!("join-{kind}-{hosts}-{r}"));
        check(
            Command::new("cp").arg("-a").arg(&base).arg(&out).output()?,
            "cp",
        );
        let (s, stdout) = timed(&mut build_cmd(builder, &dir, &out, &key))?;
        samples.push(s);
        report = stdout;
        let after = bundles(&out)?;
        let diff: Vec<&Vec<u8>> = after
            .iter()
            .filter(|(name, bytes)| before.get(*name) != Some(*bytes))
            .map(|(_, b)| b)
            .collect();
        changed = diff.len();
        changed_bytes = diff.iter().map(|b| b.len()).sum::<usize>();
        total_bytes = after.values().map(|b| b.len()).sum::<usize>();
        let _ = std::fs::remove_dir_all(&out);
    }
    let _ = std::fs::remove_dir_all(&base);
    // The builder's own account of the rebuild, per host: what follows the bundle's path
    // ("contents unchanged", "new", "changed: only GRE tunnels, ...", ...), counted.
    let mut summary = std::collections::BTreeMap::<String, usize>::new();
    for line in report.lines() {
        if let Some((_, what)) = line.rsplit_once("): ") {
            *summary.entry(what.to_string()).or_default() += 1;
        }
    }
    Ok(json!({
        "kind": kind, "hosts": hosts, "hosts_after": hosts + 1,
        "bundles_changed": changed, "bytes_changed": changed_bytes,
        "bytes_all_bundles": total_bytes,
        "rebuild": stats(&samples),
        "first_build_before_join": stats(&[first]),
        "builder_says": summary,
    }))
}

/// A private northbound ovsdb-server, in the bench host's namespace and temporary directory
/// (never the system's): stopped on drop by the pid in its own pid file.
struct NbServer {
    dir: PathBuf,
    sock: PathBuf,
}

impl NbServer {
    fn start(h: &TestHost) -> Result<NbServer> {
        let dir = h.dir.path().join("ovn");
        std::fs::create_dir_all(&dir)?;
        let db = dir.join("nb.db");
        check(
            Command::new("ovsdb-tool")
                .arg("create")
                .arg(&db)
                .arg("/usr/share/ovn/ovn-nb.ovsschema")
                .output()?,
            "ovsdb-tool create (NB)",
        );
        let sock = dir.join("nb.sock");
        let mut c = Command::new("/bin/ip");
        c.args(["netns", "exec", &h.ns, "ovsdb-server"]).arg(&db);
        for var in ["OVN_RUNDIR", "OVN_LOGDIR", "OVN_DBDIR", "OVN_SYSCONFDIR"] {
            c.env(var, &dir);
        }
        c.arg(format!("--remote=punix:{}", sock.display()))
            .arg(format!("--pidfile={}", dir.join("nb.pid").display()))
            .arg(format!("--log-file={}", dir.join("nb.log").display()))
            .arg(format!("--unixctl={}", dir.join("nb.ctl").display()))
            .args(["--detach", "--no-chdir"]);
        check(c.output()?, "ovsdb-server (NB)");
        Ok(NbServer { dir, sock })
    }

    fn remote(&self) -> String {
        format!("unix:{}", self.sock.display())
    }
}

impl Drop for NbServer {
    fn drop(&mut self) {
        let Ok(pid) = std::fs::read_to_string(self.dir.join("nb.pid")) else {
            return;
        };
        let pid = pid.trim().to_string();
        let _ = Command::new("kill").arg(&pid).output();
        let proc = PathBuf::from(format!("/proc/{pid}"));
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        while proc.exists() && Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// `ovn-nbctl` against the private NB server, launched as the applier is (`ip netns exec`).
fn nbctl(h: &TestHost, nb: &NbServer, args: &[String]) -> Command {
    let mut c = in_ns(h, "ovn-nbctl");
    c.arg(format!("--db={}", nb.remote())).args(args);
    c
}

/// The central's bundle for a switch of `ports` chassis: the fleet is built with the builder
/// binary (`--host bench`, the central), signed with the key the bench host trusts.
fn central_bundle(h: &TestHost, builder: &Path, ports: usize) -> Result<PathBuf> {
    let dir = h.dir.path().join(format!("ovn-fleet-{ports}"));
    std::fs::create_dir_all(dir.join("hosts"))?;
    std::fs::write(
        dir.join("hosts/bench.toml"),
        "[host]\nname = \"bench\"\nunderlay_ip = \"10.99.255.254\"\n",
    )?;
    let mut fleet = String::from(
        "[ovn]\ncentral = \"bench\"\n\n[[ovn.switches]]\nname = \"ls0\"\nsubnet = \"10.30.0.0/16\"\n",
    );
    for i in 0..ports {
        std::fs::write(
            dir.join(format!("hosts/c{i}.toml")),
            format!(
                "[host]\nname = \"c{i}\"\nunderlay_ip = \"10.1.{}.{}\"\n",
                i / 250,
                i % 250 + 1
            ),
        )?;
        fleet.push_str(&format!(
            "\n[[ovn.chassis]]\nhost = \"c{i}\"\nswitch = \"ls0\"\naddress = \"10.30.{}.{}/16\"\n",
            i / 250,
            i % 250 + 1
        ));
    }
    std::fs::write(dir.join("fleet.toml"), fleet)?;
    let out = dir.join("out");
    check(
        build_cmd(builder, &dir, &out, &h.key_dir.join("k.key"))
            .args(["--host", "bench"])
            .output()?,
        "builder build (central)",
    );
    Ok(out.join("bench.tgz"))
}

/// A logical switch of the central's bundle: name, subnet, ports (name, "MAC IP").
type NbSwitch = (String, String, Vec<(String, String)>);

/// The switches and ports of the central's bundle (`ovn.json` `northbound`), for the baseline
/// to write the same rows: (switch, subnet, [(port, "MAC IP")]).
fn northbound(bundle: &Path) -> Result<Vec<NbSwitch>> {
    let out = Command::new("tar")
        .arg("-xzOf")
        .arg(bundle)
        .arg("ovn.json")
        .output()?;
    if !out.status.success() {
        bail!(
            "no ovn.json in {}: {}",
            bundle.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: Value = serde_json::from_slice(&out.stdout)?;
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    Ok(v["northbound"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|sw| {
            let ports = sw["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| (s(&p["name"]), s(&p["address"])))
                .collect();
            (s(&sw["name"]), s(&sw["subnet"]), ports)
        })
        .collect())
}

fn bench_nb(h: &TestHost, bin: &Path, builder: &Path, ports: usize, runs: usize) -> Result<Value> {
    let nb = NbServer::start(h)?;
    let bundle = central_bundle(h, builder, ports)?;
    let switches = northbound(&bundle)?;
    let listed: usize = switches.iter().map(|s| s.2.len()).sum();
    if listed != ports {
        bail!("the central's bundle lists {listed} logical ports, not {ports}");
    }
    let bundle = bundle.display().to_string();
    let clear = |h: &TestHost| -> Result<()> {
        let mut args: Vec<String> = vec![];
        for (sw, _, _) in &switches {
            if !args.is_empty() {
                args.push("--".into());
            }
            args.extend(["--if-exists", "ls-del", sw].map(String::from));
        }
        check(nbctl(h, &nb, &args).output()?, "ovn-nbctl ls-del");
        reset(h);
        Ok(())
    };
    let count = |h: &TestHost| -> Result<usize> {
        let out = check(
            nbctl(
                h,
                &nb,
                &["--bare", "--columns=name", "list", "Logical_Switch_Port"].map(String::from),
            )
            .output()?,
            "ovn-nbctl list",
        );
        Ok(out.lines().filter(|l| !l.trim().is_empty()).count())
    };
    let (mut apply, mut noop, mut batched, mut batched_noop) = (vec![], vec![], vec![], vec![]);
    let mut noop_json = Value::Null;
    for _ in 0..runs {
        clear(h)?;
        let (s, _) = timed(&mut applier(
            h,
            bin,
            &["--ovn-nb", &nb.remote(), "apply", &bundle],
        ))?;
        apply.push(s);
        if count(h)? != ports {
            bail!("after the applier's apply the NB has not {ports} ports");
        }
        let (s, out) = timed(&mut applier(
            h,
            bin,
            &["--ovn-nb", &nb.remote(), "apply", "--json", &bundle],
        ))?;
        noop_json = serde_json::from_str(&out).unwrap_or(Value::Null);
        noop.push(s);
        // Baseline: the same rows (switch and ports, addresses, the owner and subnet keys) in
        // one ovn-nbctl invocation, one transaction.
        clear(h)?;
        let mut all: Vec<String> = vec![];
        for (sw, subnet, lsps) in &switches {
            if !all.is_empty() {
                all.push("--".into());
            }
            all.extend(["ls-add".into(), sw.clone()]);
            all.extend(
                [
                    "--",
                    "set",
                    "Logical_Switch",
                    sw,
                    "external_ids:ovs-bundle-owner=bench",
                ]
                .map(String::from),
            );
            all.push(format!("external_ids:ovs-bundle-subnet=\"{subnet}\""));
            for (p, addr) in lsps {
                all.extend(["--", "lsp-add", sw, p].map(String::from));
                all.extend(["--", "lsp-set-addresses", p, addr].map(String::from));
                all.extend(
                    [
                        "--",
                        "set",
                        "Logical_Switch_Port",
                        p,
                        "external_ids:ovs-bundle-owner=bench",
                    ]
                    .map(String::from),
                );
            }
        }
        let (s, _) = timed(&mut nbctl(h, &nb, &all))?;
        batched.push(s);
        if count(h)? != ports {
            bail!("after ovn-nbctl the NB has not {ports} ports");
        }
        // Baseline for the no-op: `--may-exist` for the switch and every port, all in place.
        let mut again: Vec<String> = vec![];
        for (sw, _, lsps) in &switches {
            if !again.is_empty() {
                again.push("--".into());
            }
            again.extend(["--may-exist", "ls-add", sw].map(String::from));
            for (p, _) in lsps {
                again.extend(["--", "--may-exist", "lsp-add", sw, p].map(String::from));
            }
        }
        let (s, _) = timed(&mut nbctl(h, &nb, &again))?;
        batched_noop.push(s);
    }
    clear(h)?;
    let (apply, noop, batched, batched_noop) = (
        stats(&apply),
        stats(&noop),
        stats(&batched),
        stats(&batched_noop),
    );
    Ok(json!({
        "ports": ports,
        "apply": apply, "baseline_nbctl_batched": batched,
        "ratio_apply_over_batched": median(&apply) / median(&batched),
        "noop_reapply": noop, "baseline_nbctl_batched_noop": batched_noop,
        "ratio_noop_over_batched_noop": median(&noop) / median(&batched_noop),
        "noop_report": noop_json,
    }))
}
