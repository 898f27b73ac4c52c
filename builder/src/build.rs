//! Assembling bundles: rendered files, a manifest naming each by size and hash, its signature,
//! and the deterministic archive around them.

use crate::model::Host;
use crate::render::{render_host, Rendered};
use crate::sign::SecretKey;
use bundle::{sha256_hex, write_archive, ArchiveMember, FileEntry, Manifest, FORMAT_VERSION};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Name and version recorded in every manifest.
pub const BUILDER_ID: &str = concat!("ovs-bundle builder ", env!("CARGO_PKG_VERSION"));

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildParams {
    pub serial: u64,
    /// Unix time after which appliers refuse to install the bundle.
    pub expires: Option<u64>,
}

/// The bundle for `host`, as bytes. The same host, key and params always give the same bytes.
pub fn build_host(host: &Host, key: &SecretKey, params: BuildParams) -> Vec<u8> {
    assemble(&host.name, render_host(host), key, params)
}

/// A signed bundle for host `name` holding `rendered`.
pub fn assemble(name: &str, rendered: Rendered, key: &SecretKey, params: BuildParams) -> Vec<u8> {
    let manifest = Manifest {
        format: FORMAT_VERSION,
        host: name.to_string(),
        serial: params.serial,
        expires: params.expires,
        builder: BUILDER_ID.to_string(),
        files: rendered
            .files
            .iter()
            .map(|(path, mode, data)| FileEntry {
                path: path.clone(),
                size: data.len() as u64,
                mode: *mode,
                sha256: sha256_hex(data),
            })
            .collect(),
    };
    let manifest_bytes = manifest.to_bytes();
    let comment = format!(
        "ovs-bundle host={} serial={} manifest-sha256={}",
        name,
        params.serial,
        sha256_hex(&manifest_bytes)
    );
    let signature = key.sign(&manifest_bytes, &comment);
    let mut members = vec![
        ArchiveMember {
            name: bundle::MANIFEST_NAME.into(),
            mode: 0o644,
            data: manifest_bytes,
        },
        ArchiveMember {
            name: bundle::SIGNATURE_NAME.into(),
            mode: 0o644,
            data: signature.into_bytes(),
        },
    ];
    members.extend(
        rendered
            .files
            .into_iter()
            .map(|(name, mode, data)| ArchiveMember { name, mode, data }),
    );
    write_archive(&members)
}

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename), mode 0600: bundles hold
/// PSKs. Returns whether the file's content changed.
pub fn write_bundle(path: &Path, bytes: &[u8]) -> std::io::Result<bool> {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(false);
    }
    let tmp = path.with_extension("tgz.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(true)
}

/// Durations are parsed where both binaries can use them.
pub use bundle::time::parse_duration;

/// How a host's new bundle differs from the one built before it (in the output directory): what
/// an operator needs to know to roll it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// No earlier bundle (or an unreadable one).
    New,
    /// Same contents (perhaps a new serial): applying it changes nothing.
    Unchanged,
    /// Same contents, but signed by another key or with another expiry: applying it changes
    /// nothing on the host, but hosts that do not trust the new key refuse it.
    Resigned,
    /// Only GRE tunnels differ: `applier apply --gre-only` suffices.
    GreOnly,
    /// Anything else differs: a full apply is needed.
    Full,
}

impl Change {
    pub fn describe(self) -> &'static str {
        match self {
            Change::New => "new",
            Change::Unchanged => "contents unchanged",
            Change::Resigned => {
                "contents unchanged, signed by another key or with another expiry: hosts must trust the key"
            }
            Change::GreOnly => "changed: only GRE tunnels, `applier apply --gre-only` suffices",
            Change::Full => "changed: needs a full `applier apply`",
        }
    }
}

/// Compares the files of `new` (a bundle) with those of `old`.
pub fn classify(old: Option<&[u8]>, new: &[u8]) -> Change {
    let limits = bundle::Limits::default();
    let (Some(Ok(old)), Ok(new)) = (
        old.map(|o| bundle::read_unverified(o, &limits)),
        bundle::read_unverified(new, &limits),
    ) else {
        return Change::New;
    };
    if old.files == new.files {
        return if old.signed_by != new.signed_by || old.manifest.expires != new.manifest.expires {
            Change::Resigned
        } else {
            Change::Unchanged
        };
    }
    // The IPsec guard's chains follow the tunnels: they are part of what `--gre-only` reconciles.
    // Both families: the guards of IPv6 peers are in ip6tables.rules, which a bundle without
    // IPv6 rules leaves out (read as no chains, so a first or last IPv6 guard is GRE-only too).
    let rules = |b: &bundle::VerifiedBundle, name: &str| {
        use bundle::firewall::Family;
        let family = if name == bundle::IP6TABLES_NAME {
            Family::V6
        } else {
            Family::V4
        };
        let chains = match b.file(name) {
            Some(d) => std::str::from_utf8(d)
                .ok()
                .and_then(|t| bundle::Chains::from_bundle_in(family, t).ok())?,
            None if family == Family::V6 => bundle::Chains::from_bundle_in(family, "").ok()?,
            None => return None,
        };
        Some(chains.without_guard())
    };
    let firewall = [bundle::IPTABLES_NAME, bundle::IP6TABLES_NAME];
    let others_same = firewall
        .iter()
        .all(|k| rules(&old, k).is_some() && rules(&old, k) == rules(&new, k))
        && old.files.iter().all(|(k, v)| {
            k == bundle::OVS_NAME || firewall.contains(&k.as_str()) || new.files.get(k) == Some(v)
        })
        && new
            .files
            .keys()
            .all(|k| firewall.contains(&k.as_str()) || old.files.contains_key(k));
    // What must be equal for `--gre-only` to suffice is the format's notion
    // (`OvsState::without_gre`), shared with the applier, not one of the builder's own.
    let without_gre = |b: &bundle::VerifiedBundle| {
        b.file(bundle::OVS_NAME)
            .and_then(|d| bundle::OvsState::from_bytes(d).ok())
            .map(|s| s.without_gre())
    };
    if others_same && without_gre(&old).is_some() && without_gre(&old) == without_gre(&new) {
        Change::GreOnly
    } else {
        Change::Full
    }
}

/// Builds every host's bundle, spread over the machine's cores (a 1,000-host full mesh renders
/// and compresses hundreds of megabytes). Results are in `hosts` order and identical to
/// building one by one.
pub fn build_all(hosts: &[&Host], key: &SecretKey, params: BuildParams) -> Vec<Vec<u8>> {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(hosts.len().max(1));
    let chunk = hosts.len().div_ceil(workers).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = hosts
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|h| build_host(h, key, params))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a build thread panicked"))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::{keygen, load_secret_key, Passphrase, Protection};

    /// Host h1 on an IPv6 underlay with a VXLAN tunnel to 2001:db8::2, `psk` or plain, and an
    /// optional IPv6 forwarder.
    fn bundle(dir: &Path, key: &SecretKey, psk: bool, forwarder6: bool) -> Vec<u8> {
        let d = dir.join(format!("p{psk}{forwarder6}"));
        std::fs::create_dir_all(d.join("hosts")).unwrap();
        let mut p = "[host]\nname = \"h1\"\nunderlay_ip = \"2001:db8::1\"\n\n[[bridges]]\nname = \"br0\"\n\
                     host_interfaces = [{ name = \"p0\", address = \"10.0.0.1/24\", address6 = \"fd20::1/64\" }]\n\
                     [[bridges.gre]]\nremote_ip = \"2001:db8::2\"\ntype = \"vxlan\"\nexternal = true\n"
            .to_string();
        if psk {
            p.push_str("psk = \"classify-test-psk-0123456789\"\n");
        }
        if forwarder6 {
            p.push_str("[bridges.forwarder]\nfrom = \"p0\"\nvia = \"eth0\"\nsource = \"10.0.0.0/24\"\nsource6 = \"fd20::/64\"\n");
        }
        std::fs::write(d.join("hosts/h1.toml"), p).unwrap();
        let fleet = crate::profile::load_fleet(&d).unwrap_or_else(|e| panic!("{e:?}"));
        let params = BuildParams {
            serial: 1,
            expires: None,
        };
        build_host(&fleet.hosts[0], key, params)
    }

    /// An IPv6 peer's IPsec guard lives in ip6tables.rules (present only with IPv6 rules): a PSK
    /// added or removed there is a tunnel change `--gre-only` reconciles; a forwarder is not.
    #[test]
    fn the_ipv6_guard_follows_the_tunnels_for_gre_only() {
        let dir = tempfile::tempdir().unwrap();
        let (sk, pk) = (dir.path().join("k.key"), dir.path().join("k.pub"));
        keygen(&sk, &pk, Protection::Unencrypted).unwrap();
        let key = load_secret_key(&sk, Passphrase::None).unwrap();
        let plain = bundle(dir.path(), &key, false, false);
        let psk = bundle(dir.path(), &key, true, false);
        let read = |b: &[u8]| bundle::read_unverified(b, &bundle::Limits::default()).unwrap();
        assert!(read(&plain).file(bundle::IP6TABLES_NAME).is_none());
        assert!(read(&psk).file(bundle::IP6TABLES_NAME).is_some());
        assert_eq!(classify(Some(&plain), &psk), Change::GreOnly);
        assert_eq!(classify(Some(&psk), &plain), Change::GreOnly);
        let fwd = bundle(dir.path(), &key, true, true);
        assert_eq!(classify(Some(&psk), &fwd), Change::Full);
    }
}
