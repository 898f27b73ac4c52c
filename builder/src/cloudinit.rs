//! `#cloud-config` user data that configures a new host on first boot: the packages it needs,
//! the trusted public key and the signed bundle written where the applier's units look, and the
//! units started. Pure: bundle and key in, bytes out.
//!
//! The applier itself either is in the image already (the default) or comes from the operator's
//! apt repository ([`AptRepo`]: cloud-init's `apt:` module adds it, `packages:` installs
//! `ovs-bundle-applier`). Every value that reaches the YAML is either checked here or written as a
//! JSON string (which YAML reads as a double-quoted scalar), so no value can add YAML of its own.

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
    /// The operator's apt repository carrying `ovs-bundle-applier`, for images without it.
    pub apt: Option<AptRepo>,
}

/// The Debian package of the host side.
pub const APPLIER_PACKAGE: &str = "ovs-bundle-applier";

/// Where the user data writes the repository's key. apt (2.4 and later) reads armored `.asc` keys
/// named by `signed-by` itself, so the host needs no gpg (cloud-init's own `key:` would run
/// `gpg --dearmor`, and stock images need not have gpg).
pub const APT_KEY_PATH: &str = "/etc/apt/keyrings/ovs-bundle.asc";

/// An apt repository, as cloud-init's `apt:` module adds it: one `deb` line and the ASCII-armored
/// OpenPGP public key its Release file is signed with. Built only through [`AptRepo::new`], which
/// makes the line's `signed-by` name [`APT_KEY_PATH`].
#[derive(Debug, Clone)]
pub struct AptRepo {
    source: String,
    key: String,
}

/// Why an apt source or key was refused: each names the flag it came from.
#[derive(Debug, thiserror::Error)]
pub enum AptError {
    #[error(
        "--apt-source {0:?} is not one apt source line: give exactly one line of printable text \
         starting with \"deb \", e.g. \"deb [signed-by=$KEY_FILE] https://apt.example.org/ovs-bundle \
         bookworm main\" ($KEY_FILE becomes the path the user data writes the --apt-key to)"
    )]
    Source(String),
    #[error(
        "--apt-source {0:?} names a signed-by key other than the --apt-key: write \
         signed-by=$KEY_FILE, or leave signed-by out (it is added)"
    )]
    OtherKey(String),
    #[error(
        "--apt-key {0}: not an ASCII-armored OpenPGP public key (printable text from \
         \"-----BEGIN PGP PUBLIC KEY BLOCK-----\" to its END line): export it with \
         `gpg --export --armor KEYID`"
    )]
    Key(String),
}

impl AptRepo {
    /// `source` must be one `deb` line of printable ASCII (no newline, no control character:
    /// nothing that could end the line or the YAML scalar); `key` the armored key text, `key_file`
    /// its file name for the error.
    pub fn new(source: &str, key: &str, key_file: &str) -> Result<AptRepo, AptError> {
        let printable = |s: &str| s.chars().all(|c| c == ' ' || c.is_ascii_graphic());
        let words: Vec<&str> = source.split_whitespace().collect();
        if !printable(source) || words.first() != Some(&"deb") || words.len() < 3 {
            return Err(AptError::Source(source.to_string()));
        }
        let line = words.join(" ");
        let line = if line.contains("signed-by=$KEY_FILE") {
            line.replace("$KEY_FILE", APT_KEY_PATH)
        } else if line.contains("signed-by=") {
            return Err(AptError::OtherKey(source.to_string()));
        } else if let Some(rest) = line.strip_prefix("deb [") {
            format!("deb [signed-by={APT_KEY_PATH} {rest}")
        } else {
            format!("deb [signed-by={APT_KEY_PATH}] {}", &line[4..])
        };
        let key = key.replace("\r\n", "\n");
        let armored = key
            .trim_start()
            .starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----")
            && key
                .trim_end()
                .ends_with("-----END PGP PUBLIC KEY BLOCK-----")
            && key.lines().all(printable);
        if !armored {
            return Err(AptError::Key(key_file.to_string()));
        }
        Ok(AptRepo {
            source: line,
            key: format!("{}\n", key.trim()),
        })
    }
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
        "#cloud-config\n# ovs-bundle user data for host {} (bundle serial {serial}), made by {}.\n",
        host.name,
        crate::build::BUILDER_ID
    );
    y.push_str(match opts.apt {
        Some(_) => {
            "# The applier comes from the apt repository below (package ovs-bundle-applier).\n"
        }
        None => {
            "# The applier and its systemd units must be in the image, or installed by a bootcmd.\n"
        }
    });
    if !opts.bootcmd.is_empty() {
        y.push_str("bootcmd:\n");
        for c in &opts.bootcmd {
            y.push_str(&format!("  - {}\n", q(c)));
        }
    }
    if let Some(apt) = &opts.apt {
        // The image's own sources stay (cloud-init would otherwise rewrite sources.list).
        y.push_str("apt:\n  preserve_sources_list: true\n  sources:\n    ovs-bundle.list:\n");
        y.push_str(&format!("      source: {}\n", q(&apt.source)));
    }
    let mut wanted = if opts.packages {
        packages(host)
    } else {
        Vec::new()
    };
    if opts.apt.is_some() {
        wanted.push(APPLIER_PACKAGE);
    }
    if !wanted.is_empty() {
        y.push_str(&format!("packages: [{}]\n", wanted.join(", ")));
    }
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(bundle);
    y.push_str("write_files:\n");
    // Written in cloud-init's init stage, before its apt stage reads the source that names it.
    if let Some(apt) = &opts.apt {
        y.push_str(&format!(
            "  - path: {APT_KEY_PATH}\n    permissions: '0644'\n    content: {}\n",
            q(&apt.key)
        ));
    }
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
