//! `ovs-bundle-bench`: our figures beside the baselines our users know, measured in the same run
//! on the same machine, so ratios hold across machines while absolute figures do not.
//!
//! For N = 10, 100 and 1,000 GRE tunnels on one userspace bridge in a private OVS: `applier
//! apply` onto an empty bridge, one `ovs-vsctl` process per tunnel (the original tool's way), one
//! batched `ovs-vsctl` transaction, a no-op re-apply, a GRE-only change of one peer, and `applier
//! verify`. For the builder: full-mesh fleets of 10, 100 and 1,000 hosts. Each measured several
//! times (median and spread), wall time and peak memory (GNU time).

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
    for &n in &sizes {
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
    drop(h);
    let work = tempfile_dir()?;
    let mut builds = vec![];
    for &n in sizes.iter().filter(|_| !quick()) {
        eprintln!("bench: builder, {n}-host full mesh");
        builds.push(bench_builder(&builder_bin, &work, n, runs)?);
    }
    let _ = std::fs::remove_dir_all(&work);
    let size = std::fs::metadata(&applier_bin)?.len();
    let result = json!({
        "machine": machine(),
        "applier_binary_bytes": size,
        "boot_noop": stats(&boot),
        "tunnels": tunnels,
        "builder": builds,
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
    println!(
        "\napplier binary: {} bytes; boot-time no-op run: {}",
        r["applier_binary_bytes"],
        ms(&r["boot_noop"])
    );
}
