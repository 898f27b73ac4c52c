//! The test fleet: the shipped example profiles (gateway and two nodes, GRE with PSKs, a NAT
//! forwarder), adapted to the guests' NICs, plus the variants the scenarios need, all built by the
//! real `builder` binary and packed with the applier's Debian package onto a payload disk; and the
//! apt repository (apt-ftparchive, signed with a throwaway key) the cloud-init guest installs the
//! package from.
//!
//! Over 500 lines: every bundle the scenarios boot is made here, from the one copy of the example
//! profiles, so that a change to them is one change.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Clone)]
pub struct Fleet {
    pub payload: PathBuf,
    /// The signed flat apt repository holding ovs-bundle-applier, served to the cloud-init guest.
    pub repo: PathBuf,
    /// `builder cloud-init` output for the cloud-init scenario.
    pub ci_user_data: PathBuf,
    /// The shipped example's bundles, each profile with an interfaces file that gives its
    /// underlay address (scenario 11's hosts boot from their images with nothing else).
    pub img_bundles: PathBuf,
    /// The fleet's public key, and the builder.
    pub fleet_pub: PathBuf,
    pub builder: PathBuf,
}

/// Scenario 9's OVN hosts: name, underlay address, address on the logical switch (ovn0). The
/// first three are chassis from the start (gw1 also the central); node3 joins.
/// The end date of scenario 9's renewed certificates (ovn3).
pub const OVN_RENEWED_UNTIL: &str = "2031-06-30";

pub const OVN_HOSTS: [(&str, &str, &str); 4] = [
    ("gw1", "192.0.2.1", "10.40.0.1"),
    ("node1", "192.0.2.2", "10.40.0.2"),
    ("node2", "192.0.2.3", "10.40.0.3"),
    ("node3", "192.0.2.4", "10.40.0.4"),
];

/// The environment variable of the applier's kill hook (feature test-hooks).
pub const KILL_HOOK: &str = "OVS_BUNDLE_TEST_KILL_AT";

/// How the cloud-init guest sees the test repository (QEMU's guestfwd address, see guest.rs).
const APT_SOURCE: &str = "deb [signed-by=$KEY_FILE] http://10.0.2.100/ ./";

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let dest = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &dest)?;
        } else {
            std::fs::copy(e.path(), dest)?;
        }
    }
    Ok(())
}

const NODE3: &str = r#"# Joins the private network in the GRE-only scenario.
[host]
name = "node3"
underlay_ip = "192.0.2.4"

[[bridges]]
name = "private-br0"
host_interfaces = [{ name = "priv0", address = "10.20.20.4/24" }]

[[bridges.gre]]
remote_ip = "192.0.2.1"
psk_file = "../secrets/example-gw1-node3.psk"
"#;

const GW1_TO_NODE3: &str = r#"
[[bridges.gre]]
remote_ip = "192.0.2.4"
psk_file = "../secrets/example-gw1-node3.psk"
"#;

const CI1: &str = r#"# Configured on first boot through cloud-init user data.
[host]
name = "ci1"
underlay_ip = "192.0.2.50"

[[bridges]]
name = "private-br0"
host_interfaces = [{ name = "priv0", address = "10.30.30.1/24" }]

[[bridges.gre]]
remote_ip = "192.0.2.51"
external = true

[bridges.forwarder]
from = "priv0"
via = "eth0"
source = "10.30.30.0/24"
"#;

impl Fleet {
    pub fn prepare(shipped: &Path, work: &Path, bins: &Path, debs: &Path) -> Result<Fleet> {
        let builder = bins.join("builder");
        anyhow::ensure!(
            builder.exists(),
            "{} missing: build with cargo build --release",
            builder.display()
        );
        let deb = std::fs::read_dir(debs)
            .with_context(|| {
                format!(
                    "{}: run vm-tests/run (it builds the packages)",
                    debs.display()
                )
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("ovs-bundle-applier_") && n.ends_with(".deb"))
            })
            .with_context(|| format!("no ovs-bundle-applier .deb in {}", debs.display()))?;
        let keys = work.join("keys");
        std::fs::create_dir_all(&keys)?;
        let (sk, pk) = (keys.join("fleet.key"), keys.join("fleet.pub"));
        if !sk.exists() {
            run(Command::new(&builder)
                .args(["keygen", "--unencrypted", "--secret-key"])
                .arg(&sk)
                .arg("--public-key")
                .arg(&pk))?;
        }
        let payload = work.join("payload");
        let _ = std::fs::remove_dir_all(&payload);
        std::fs::create_dir_all(&payload)?;
        let build = |profiles: &Path, out: &str, serial: u64, host: Option<&str>| -> Result<()> {
            let mut cmd = Command::new(&builder);
            cmd.arg("build")
                .arg(profiles)
                .arg("--out")
                .arg(payload.join(out))
                .arg("--key")
                .arg(&sk);
            cmd.args(["--serial", &serial.to_string()]);
            if let Some(h) = host {
                cmd.args(["--host", h]);
            }
            run(&mut cmd).map(drop)
        };
        // v1: the shipped example, its gateway NATing out of a second NIC (eth1, the uplink).
        let v1 = work.join("profiles-v1");
        let _ = std::fs::remove_dir_all(&v1);
        copy_dir(shipped, &v1)?;
        let gw1 = v1.join("hosts/gw1.toml");
        let text = std::fs::read_to_string(&gw1)?;
        anyhow::ensure!(
            text.contains("via = \"eth0\""),
            "shipped gw1 profile changed: update vm-tests/src/fleet.rs"
        );
        std::fs::write(&gw1, text.replace("via = \"eth0\"", "via = \"eth1\""))?;
        build(&v1, "v1", 1, None)?;
        // v2: node3 joins; gw1 gains a tunnel to it.
        let v2 = work.join("profiles-v2");
        let _ = std::fs::remove_dir_all(&v2);
        copy_dir(&v1, &v2)?;
        std::fs::write(
            v2.join("secrets/example-gw1-node3.psk"),
            "EXAMPLE-ONLY-not-a-secret-gw1-node3\n",
        )?;
        std::fs::write(v2.join("hosts/node3.toml"), NODE3)?;
        let gw1 = v2.join("hosts/gw1.toml");
        let text = std::fs::read_to_string(&gw1)?;
        let (head, forwarder) = text
            .split_once("[bridges.forwarder]")
            .context("gw1 has a forwarder")?;
        std::fs::write(
            &gw1,
            format!("{head}{GW1_TO_NODE3}\n[bridges.forwarder]{forwarder}"),
        )?;
        build(&v2, "v2", 2, None)?;
        // v3: node2 gains a second internal port (for the crash scenario).
        let v3 = work.join("profiles-v3");
        let _ = std::fs::remove_dir_all(&v3);
        copy_dir(&v2, &v3)?;
        let node2 = v3.join("hosts/node2.toml");
        let text = std::fs::read_to_string(&node2)?;
        std::fs::write(
            &node2,
            text.replace(
                "host_interfaces = [{ name = \"priv0\", address = \"10.20.20.3/24\" }]",
                "host_interfaces = [{ name = \"priv0\", address = \"10.20.20.3/24\" }, { name = \"aux0\", address = \"10.20.20.103/24\" }]",
            ),
        )?;
        build(&v3, "v3", 3, Some("node2"))?;
        // A tampered copy of gw1's v2 bundle.
        let mut bytes = std::fs::read(payload.join("v2/gw1.tgz"))?;
        let n = bytes.len();
        bytes[n / 2] ^= 0x20;
        std::fs::write(payload.join("tampered.tgz"), bytes)?;
        // v4: the three original hosts in one full mesh with per-pair keys, from fleet.toml.
        let v4 = work.join("profiles-v4");
        let _ = std::fs::remove_dir_all(&v4);
        copy_dir(&v1, &v4)?;
        for h in ["gw1", "node1", "node2"] {
            let path = v4.join(format!("hosts/{h}.toml"));
            let text = std::fs::read_to_string(&path)?;
            let kept: Vec<&str> = text.split("\n[[bridges.gre]]").collect();
            let forwarder = text
                .split_once("[bridges.forwarder]")
                .map(|(_, f)| format!("\n[bridges.forwarder]{f}"))
                .unwrap_or_default();
            std::fs::write(&path, format!("{}\n{forwarder}", kept[0].trim_end()))?;
        }
        std::fs::write(
            v4.join("secrets/fleet.secret"),
            "EXAMPLE-ONLY-vm-test-fleet-secret-0123456789\n",
        )?;
        std::fs::write(
            v4.join("fleet.toml"),
            "[[mesh]]\nbridge = \"private-br0\"\nmembers = [\"gw1\", \"node1\", \"node2\"]\npsk_secret_file = \"secrets/fleet.secret\"\n",
        )?;
        build(&v4, "v4", 4, None)?;
        // v5: for `applier try`. A good change (gw1 and node2 gain a second internal port), and
        // for node1 a bad one (below).
        let v5 = work.join("profiles-v5");
        let _ = std::fs::remove_dir_all(&v5);
        copy_dir(&v4, &v5)?;
        for (h, addr, aux) in [
            ("gw1", "10.20.20.1/24", "10.20.20.111/24"),
            ("node2", "10.20.20.3/24", "10.20.20.113/24"),
        ] {
            let path = v5.join(format!("hosts/{h}.toml"));
            let text = std::fs::read_to_string(&path)?;
            let from = format!("host_interfaces = [{{ name = \"priv0\", address = \"{addr}\" }}]");
            anyhow::ensure!(
                text.contains(&from),
                "{h}'s profile changed: update vm-tests/src/fleet.rs"
            );
            let to = format!(
                "host_interfaces = [{{ name = \"priv0\", address = \"{addr}\" }}, {{ name = \"aux1\", address = \"{aux}\" }}]"
            );
            std::fs::write(&path, text.replace(&from, &to))?;
        }
        build(&v5, "v5", 5, None)?;
        // node1's bad bundle: its tunnel leads to an underlay address nobody has (the peer
        // "moved away"), so the overlay to node1 is cut; alone in its directory, the tunnel is
        // external to the fleet.
        let v5_bad = work.join("profiles-v5-bad");
        let _ = std::fs::remove_dir_all(&v5_bad);
        copy_dir(&v1, &v5_bad)?;
        for h in ["gw1", "node2"] {
            std::fs::remove_file(v5_bad.join(format!("hosts/{h}.toml")))?;
        }
        let node1 = v5_bad.join("hosts/node1.toml");
        let text = std::fs::read_to_string(&node1)?;
        anyhow::ensure!(
            text.contains("remote_ip = \"192.0.2.1\""),
            "node1's profile changed: update vm-tests/src/fleet.rs"
        );
        std::fs::write(
            &node1,
            text.replace(
                "remote_ip = \"192.0.2.1\"",
                "remote_ip = \"192.0.2.201\"\nexternal = true",
            ),
        )?;
        build(&v5_bad, "v5-bad", 5, Some("node1"))?;
        // v6: the shipped example over VXLAN (with its PSKs: IPsec) instead of GRE.
        let v6 = work.join("profiles-v6");
        let _ = std::fs::remove_dir_all(&v6);
        copy_dir(&v1, &v6)?;
        for h in ["gw1", "node1", "node2"] {
            let path = v6.join(format!("hosts/{h}.toml"));
            let text = std::fs::read_to_string(&path)?;
            std::fs::write(
                &path,
                text.replace("[[bridges.gre]]\n", "[[bridges.gre]]\ntype = \"vxlan\"\n"),
            )?;
        }
        build(&v6, "v6", 6, None)?;
        // ovn1: scenario 9's OVN fleet on the tiny guests, nothing else in their profiles (the
        // mesh goes: a host with IPsec certificates can have no PSK tunnel): gw1 the central and
        // a chassis, node1 and node2 chassis, IPsec between them with certificates of a fleet
        // CA. ovn2: node3 joins, built as an operator would, with a new serial into the
        // directory of ovn1's bundles: the builder's verdict per host goes to ovn2-build.txt for
        // the scenario. ovn2-same-serial: the same at ovn1's serial, whose bytes show that a
        // join changes no other host's bundle. ovn3: the renewal, the four hosts' certificates
        // (and the CA's, from the same key) reissued with an end date.
        let pki = work.join("ovn-pki");
        let _ = std::fs::remove_dir_all(&pki);
        run(Command::new(&builder).args(["ovn-ca", "--pki"]).arg(&pki))?;
        let ovn_profiles = |name: &str,
                            chassis: &[(&str, &str, &str)],
                            expiry: Option<&str>|
         -> Result<PathBuf> {
            let dir = work.join(format!("profiles-{name}"));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(dir.join("hosts"))?;
            let mut fleet = format!(
                "[ovn]\ncentral = \"gw1\"\nipsec_pki = {:?}\n{}\n\
                 [[ovn.switches]]\nname = \"ls0\"\nsubnet = \"10.40.0.0/24\"\n",
                pki.display().to_string(),
                expiry.map_or(String::new(), |e| format!("ipsec_expiry = {e:?}\n"))
            );
            for (host, underlay, address) in chassis {
                std::fs::write(
                    dir.join(format!("hosts/{host}.toml")),
                    format!("[host]\nname = \"{host}\"\nunderlay_ip = \"{underlay}\"\n"),
                )?;
                fleet.push_str(&format!(
                    "\n[[ovn.chassis]]\nhost = \"{host}\"\nswitch = \"ls0\"\naddress = \"{address}/24\"\n"
                ));
            }
            std::fs::write(dir.join("fleet.toml"), fleet)?;
            Ok(dir)
        };
        build(
            &ovn_profiles("ovn1", &OVN_HOSTS[..3], None)?,
            "ovn1",
            20,
            None,
        )?;
        let ovn2 = ovn_profiles("ovn2", &OVN_HOSTS, None)?;
        build(&ovn2, "ovn2-same-serial", 20, None)?;
        copy_dir(&payload.join("ovn1"), &payload.join("ovn2"))?;
        let verdict = run(Command::new(&builder)
            .arg("build")
            .arg(&ovn2)
            .arg("--out")
            .arg(payload.join("ovn2"))
            .arg("--key")
            .arg(&sk)
            .args(["--serial", "21"]))?;
        std::fs::write(work.join("ovn2-build.txt"), verdict)?;
        build(
            &ovn_profiles("ovn3", &OVN_HOSTS, Some(OVN_RENEWED_UNTIL))?,
            "ovn3",
            22,
            None,
        )?;
        // img: the shipped example over VXLAN (as v6: scenario 11 also proves the example over
        // VXLAN with IPsec, on the product image), each host's underlay address in its interfaces
        // file (a per-host image has no other source for it: no kernel command line, no DHCP).
        let img = work.join("profiles-img");
        let _ = std::fs::remove_dir_all(&img);
        copy_dir(shipped, &img)?;
        std::fs::create_dir_all(img.join("files"))?;
        for (h, ip) in [
            ("gw1", "192.0.2.1"),
            ("node1", "192.0.2.2"),
            ("node2", "192.0.2.3"),
        ] {
            std::fs::write(
                img.join(format!("files/{h}.interfaces")),
                format!("auto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet static\n    address {ip}/24\n"),
            )?;
            let path = img.join(format!("hosts/{h}.toml"));
            let text = std::fs::read_to_string(&path)?;
            let marker = format!("underlay_ip = \"{ip}\"\n");
            anyhow::ensure!(
                text.contains(&marker),
                "{h}'s profile changed: update vm-tests/src/fleet.rs"
            );
            std::fs::write(
                &path,
                text.replace(
                    &marker,
                    &format!("{marker}interfaces_file = \"../files/{h}.interfaces\"\n"),
                )
                .replace("[[bridges.gre]]\n", "[[bridges.gre]]\ntype = \"vxlan\"\n"),
            )?;
        }
        // OVN beside the mesh, on br-int (docs/ovn.md's way from one to the other): the three are
        // chassis of a central that is never booted. On Debian's packaged services this proves
        // the chassis side: ovs-ctl's system-id taken over and kept across a reboot. Without
        // IPsec certificates: ovs-monitor-ipsec refuses every PSK tunnel of a host that has them
        // (this scenario found that; the builder refuses the combination now).
        std::fs::write(
            img.join("hosts/central1.toml"),
            "[host]\nname = \"central1\"\nunderlay_ip = \"192.0.2.10\"\n",
        )?;
        std::fs::write(img.join("fleet.toml"), IMG_OVN)?;
        let img_bundles = work.join("img-bundles");
        let _ = std::fs::remove_dir_all(&img_bundles);
        run(Command::new(&builder)
            .arg("build")
            .arg(&img)
            .arg("--out")
            .arg(&img_bundles)
            .arg("--key")
            .arg(&sk)
            .args(["--serial", "1"]))?;
        // ci1's user data, from `builder cloud-init`: its image has no applier; cloud-init adds
        // the test repository and installs the package from it.
        let repo = apt_repository(work, &deb)?;
        let ci = work.join("profiles-ci");
        std::fs::create_dir_all(ci.join("hosts"))?;
        std::fs::write(ci.join("hosts/ci1.toml"), CI1)?;
        run(Command::new(&builder)
            .args(["cloud-init", "ci1", "--profiles"])
            .arg(&ci)
            .arg("--key")
            .arg(&sk)
            .args(["--serial", "1", "--apt-source", APT_SOURCE, "--apt-key"])
            .arg(work.join("repo.asc"))
            .arg("--out")
            .arg(work.join("ci1-user-data")))?;
        // ci1's next bundle (a second internal port), for `applier try` on a systemd host.
        let ci2 = work.join("profiles-ci2");
        let _ = std::fs::remove_dir_all(&ci2);
        std::fs::create_dir_all(ci2.join("hosts"))?;
        std::fs::write(
            ci2.join("hosts/ci1.toml"),
            CI1.replace(
                "host_interfaces = [{ name = \"priv0\", address = \"10.30.30.1/24\" }]",
                "host_interfaces = [{ name = \"priv0\", address = \"10.30.30.1/24\" }, { name = \"aux1\", address = \"10.30.30.5/24\" }]",
            ),
        )?;
        build(&ci2, "ci2", 2, None)?;
        // The tiny guests install the same package from the payload disk (guest/init-tiny).
        std::fs::copy(&deb, payload.join("ovs-bundle-applier.deb"))?;
        // Scenario 6 kills an apply half-way with the applier's kill hook, which the package (a
        // release build) does not have: the harness's own debug applier, built with the hook
        // (feature test-hooks), does that one apply; the package's applier recovers at boot.
        let hooked = bins.join("applier");
        let bytes = std::fs::read(&hooked).with_context(|| {
            format!(
                "{}: build it with cargo build -p ovs-bundle-applier --features test-hooks",
                hooked.display()
            )
        })?;
        if !bytes
            .windows(KILL_HOOK.len())
            .any(|w| w == KILL_HOOK.as_bytes())
        {
            bail!(
                "{} has no kill hook: build it with cargo build -p ovs-bundle-applier --features test-hooks",
                hooked.display()
            );
        }
        let copy = payload.join("applier-test-hooks");
        std::fs::write(&copy, bytes)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755))?;
        std::fs::copy(&pk, payload.join("test.pub"))?;
        let img = work.join("payload.img");
        let _ = std::fs::remove_file(&img);
        run(Command::new("mke2fs")
            .args(["-q", "-t", "ext4", "-d"])
            .arg(&payload)
            .arg(&img)
            .arg("64M"))?;
        Ok(Fleet {
            payload: img,
            repo,
            ci_user_data: work.join("ci1-user-data"),
            img_bundles,
            fleet_pub: pk,
            builder,
        })
    }
}

/// A flat apt repository (`deb URL ./`) in WORK/repo holding `deb`, its Release file signed with
/// a key made for this run (public half: WORK/repo.asc; the GnuPG home is removed afterwards).
fn apt_repository(work: &Path, deb: &Path) -> Result<PathBuf> {
    let repo = work.join("repo");
    let _ = std::fs::remove_dir_all(&repo);
    std::fs::create_dir_all(&repo)?;
    std::fs::copy(deb, repo.join("ovs-bundle-applier.deb"))?;
    let packages = run(Command::new("apt-ftparchive")
        .args(["packages", "."])
        .current_dir(&repo))?;
    std::fs::write(repo.join("Packages"), packages)?;
    let release = run(Command::new("apt-ftparchive")
        .args(["release", "."])
        .current_dir(&repo))?;
    std::fs::write(repo.join("Release"), release)?;
    let home = work.join("gnupg");
    let _ = std::fs::remove_dir_all(&home);
    std::fs::create_dir_all(&home)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700))?;
    let gpg = |args: &[&str]| -> Result<String> {
        run(Command::new("gpg")
            .env("GNUPGHOME", &home)
            .args([
                "--batch",
                "--yes",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
            ])
            .args(args)
            .current_dir(&repo))
    };
    let signed = (|| -> Result<()> {
        gpg(&[
            "--quick-gen-key",
            "ovs-bundle vm-tests repository",
            "ed25519",
            "sign",
            "never",
        ])?;
        std::fs::write(work.join("repo.asc"), gpg(&["--armor", "--export"])?)?;
        gpg(&["--clearsign", "--output", "InRelease", "Release"])?;
        Ok(())
    })();
    let _ = Command::new("gpgconf")
        .env("GNUPGHOME", &home)
        .args(["--kill", "gpg-agent"])
        .output();
    let _ = std::fs::remove_dir_all(&home);
    signed.context("signing the test apt repository (install gpg)")?;
    Ok(repo)
}

/// The image fleet's `[ovn]`: gw1, node1 and node2 are chassis of ls0.
const IMG_OVN: &str = "[ovn]\ncentral = \"central1\"\n\n\
    [[ovn.switches]]\nname = \"ls0\"\nsubnet = \"10.30.0.0/24\"\n\n\
    [[ovn.chassis]]\nhost = \"gw1\"\nswitch = \"ls0\"\naddress = \"10.30.0.1/24\"\n\n\
    [[ovn.chassis]]\nhost = \"node1\"\nswitch = \"ls0\"\naddress = \"10.30.0.2/24\"\n\n\
    [[ovn.chassis]]\nhost = \"node2\"\nswitch = \"ls0\"\naddress = \"10.30.0.3/24\"\n";
