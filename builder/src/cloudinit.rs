//! `#cloud-config` user data that configures a new host on first boot: the packages it needs,
//! the trusted public key and the signed bundle written where the applier's units look, and the
//! units started. Pure: bundle and key in, bytes out.

use crate::model::Host;
use std::io::Write;

/// EC2's limit on user data.
pub const EC2_USER_DATA_LIMIT: usize = 16 * 1024;

#[derive(Debug, Clone)]
pub struct CloudInitOpts {
    /// Install packages (off for images that have them and no package mirror).
    pub packages: bool,
    /// Commands run early at boot (cloud-init `bootcmd`), e.g. to install the applier.
    pub bootcmd: Vec<String>,
    /// Size limit; the output is gzip-compressed when plain text would not fit.
    pub max_size: usize,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "user data for {host} is {size} bytes even gzip-compressed, over the limit of {limit} bytes \
     (the bundle alone is {bundle} bytes): deliver the bundle another way (e.g. fetch it in a \
     bootcmd), or raise --max-size where the cloud allows more"
)]
pub struct TooLarge {
    pub host: String,
    pub size: usize,
    pub limit: usize,
    pub bundle: usize,
}

/// Debian packages `host` needs.
pub fn packages(host: &Host) -> Vec<&'static str> {
    let mut p = vec!["openvswitch-switch", "iptables", "ifupdown"];
    if host
        .bridges
        .iter()
        .flat_map(|b| &b.gre)
        .any(|g| g.psk.is_some())
    {
        p.extend([
            "openvswitch-ipsec",
            "strongswan",
            "libstrongswan-standard-plugins",
        ]);
    }
    // The applier's own dnsmasq instance: the binary only, not the `dnsmasq` service package.
    if host.bridges.iter().any(|b| b.dhcp.is_some()) {
        p.push("dnsmasq-base");
    }
    p
}

/// The user data, plain or gzip-compressed (cloud-init accepts both), within `opts.max_size`.
pub fn user_data(
    host: &Host,
    bundle: &[u8],
    serial: u64,
    public_key: &str,
    key_id: &str,
    opts: &CloudInitOpts,
) -> Result<(Vec<u8>, bool), TooLarge> {
    let q = |s: &str| serde_json::to_string(s).expect("strings serialize");
    let mut y = format!(
        "#cloud-config\n# ovs-bundle user data for host {} (bundle serial {serial}), made by {}.\n\
         # The applier and its systemd units must be in the image, or installed by a bootcmd.\n",
        host.name,
        crate::build::BUILDER_ID
    );
    if !opts.bootcmd.is_empty() {
        y.push_str("bootcmd:\n");
        for c in &opts.bootcmd {
            y.push_str(&format!("  - {}\n", q(c)));
        }
    }
    if opts.packages {
        y.push_str(&format!("packages: [{}]\n", packages(host).join(", ")));
    }
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(bundle);
    y.push_str("write_files:\n");
    y.push_str(&format!(
        "  - path: /etc/ovs-bundle/trusted.d/{key_id}.pub\n    permissions: '0644'\n    content: |\n"
    ));
    for line in public_key.lines() {
        y.push_str(&format!("      {line}\n"));
    }
    y.push_str(&format!(
        "  - path: /var/lib/ovs-bundle/incoming/{}.tgz\n    permissions: '0600'\n    encoding: b64\n    content: {b64}\n",
        host.name
    ));
    // The boot unit is only enabled (it runs before networking at later boots); the path unit
    // installs the waiting bundle now, bringing up the interfaces it configures.
    y.push_str(
        "runcmd:\n  - [systemctl, daemon-reload]\n  - [systemctl, enable, ovs-bundle.service]\n  - [systemctl, enable, --now, ovs-bundle-incoming.path]\n",
    );
    if y.len() <= opts.max_size {
        return Ok((y.into_bytes(), false));
    }
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::best());
    gz.write_all(y.as_bytes()).expect("in memory");
    let compressed = gz.finish().expect("in memory");
    if compressed.len() <= opts.max_size {
        return Ok((compressed, true));
    }
    Err(TooLarge {
        host: host.name.clone(),
        size: compressed.len(),
        limit: opts.max_size,
        bundle: bundle.len(),
    })
}
