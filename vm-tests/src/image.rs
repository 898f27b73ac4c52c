//! For scenario 11 (per-host images): the test agent as a Debian package of its own, which only
//! the test's images get (`builder image host --deb`); the per-host images built by the real
//! `builder`; and a reader of the pcap files QEMU's filter-dump writes (the underlay as seen from
//! outside the guest, from its first frame on).

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

const AGENT_UNIT: &str = "[Unit]
Description=ovs-bundle VM test agent (test-only package)
After=systemd-udevd.service
[Service]
ExecStart=/usr/local/sbin/ovsb-agent
Restart=always
[Install]
WantedBy=multi-user.target
";

/// `ovsb-test-agent.deb` in `work`: the agent and its unit, enabled (the link is shipped in the
/// package: `image host --deb` runs no systemd, and this package is for test images only).
pub fn agent_deb(agent_script: &Path, work: &Path) -> Result<PathBuf> {
    let root = work.join("agent-deb");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("DEBIAN"))?;
    std::fs::create_dir_all(root.join("usr/local/sbin"))?;
    std::fs::create_dir_all(root.join("usr/lib/systemd/system"))?;
    std::fs::create_dir_all(root.join("etc/systemd/system/multi-user.target.wants"))?;
    std::fs::write(
        root.join("DEBIAN/control"),
        "Package: ovsb-test-agent\nVersion: 1\nArchitecture: all\nMaintainer: ovs-bundle tests <tests@invalid>\n\
         Depends: bash, coreutils\nDescription: ovs-bundle VM test agent (never in a product image)\n",
    )?;
    let agent = root.join("usr/local/sbin/ovsb-agent");
    std::fs::copy(agent_script, &agent)
        .with_context(|| format!("copying {}", agent_script.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755))?;
    std::fs::write(
        root.join("usr/lib/systemd/system/ovsb-agent.service"),
        AGENT_UNIT,
    )?;
    std::os::unix::fs::symlink(
        "/usr/lib/systemd/system/ovsb-agent.service",
        root.join("etc/systemd/system/multi-user.target.wants/ovsb-agent.service"),
    )?;
    let deb = work.join("ovsb-test-agent.deb");
    let out = Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zgzip", "--build"])
        .arg(&root)
        .arg(&deb)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .context("dpkg-deb (install dpkg)")?;
    if !out.status.success() {
        bail!("dpkg-deb: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(deb)
}

/// Runs `builder image host`, returning its exit code and stderr.
pub fn image_host(builder: &Path, args: &[&std::ffi::OsStr]) -> Result<(i32, String)> {
    let out = Command::new(builder)
        .args(["image", "host"])
        .args(args)
        .output()
        .context("running builder image host")?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// Counts of IPv4 packets in a pcap file (Ethernet frames): (ESP, plain GRE, plain VXLAN).
pub fn underlay_counts(pcap: &Path) -> Result<(usize, usize, usize)> {
    let bytes = std::fs::read(pcap).with_context(|| format!("reading {}", pcap.display()))?;
    if bytes.len() < 24 {
        return Ok((0, 0, 0));
    }
    let le = match &bytes[..4] {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        _ => bail!("{}: not a pcap file", pcap.display()),
    };
    let u32_at = |o: usize| {
        let b = [bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]];
        if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    };
    let (mut esp, mut gre, mut vxlan) = (0, 0, 0);
    let mut o = 24;
    while o + 16 <= bytes.len() {
        let caplen = u32_at(o + 8) as usize;
        let f = o + 16;
        o = f + caplen;
        if o > bytes.len() || caplen < 34 {
            continue;
        }
        let frame = &bytes[f..f + caplen];
        if frame[12..14] != [0x08, 0x00] {
            continue;
        }
        let ip = &frame[14..];
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        match ip[9] {
            50 => esp += 1,
            47 => gre += 1,
            17 if ip.len() >= ihl + 4 && ip[ihl + 2..ihl + 4] == [0x12, 0xb5] => vxlan += 1,
            _ => {}
        }
    }
    Ok((esp, gre, vxlan))
}

#[cfg(test)]
mod tests {
    /// A little-endian pcap file of Ethernet frames carrying IPv4 packets of these protocols
    /// (17: UDP to `port`).
    fn pcap(packets: &[(u8, u16)]) -> Vec<u8> {
        let mut out = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0];
        out.extend_from_slice(&[0; 8]);
        out.extend_from_slice(&65535u32.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes());
        for &(proto, port) in packets {
            let mut f = vec![0u8; 12];
            f.extend_from_slice(&[0x08, 0x00]);
            let mut ip = vec![0x45, 0, 0, 28, 0, 0, 0, 0, 64, proto, 0, 0];
            ip.extend_from_slice(&[192, 0, 2, 1, 192, 0, 2, 2]);
            ip.extend_from_slice(&[0x30, 0x39]);
            ip.extend_from_slice(&port.to_be_bytes());
            ip.extend_from_slice(&[0, 8, 0, 0]);
            f.extend_from_slice(&ip);
            out.extend_from_slice(&[0; 8]);
            out.extend_from_slice(&(f.len() as u32).to_le_bytes());
            out.extend_from_slice(&(f.len() as u32).to_le_bytes());
            out.extend_from_slice(&f);
        }
        out
    }

    #[test]
    fn counts_esp_plain_gre_and_plain_vxlan() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.pcap");
        std::fs::write(
            &p,
            pcap(&[(50, 0), (50, 0), (47, 0), (17, 4789), (17, 53), (1, 0)]),
        )
        .unwrap();
        assert_eq!(super::underlay_counts(&p).unwrap(), (2, 1, 1));
        std::fs::write(&p, b"").unwrap();
        assert_eq!(super::underlay_counts(&p).unwrap(), (0, 0, 0));
    }
}
