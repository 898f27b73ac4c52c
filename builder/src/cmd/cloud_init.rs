//! `builder cloud-init`: `#cloud-config` user data that installs one host's signed bundle and the
//! trusted key on first boot.

use super::key::signing_key;
use super::{build_params, load_or_report};
use crate::build::{build_host, write_bundle};
use crate::cloudinit::{user_data, AptRepo, CloudInitOpts, EC2_USER_DATA_LIMIT};
use anyhow::{bail, Context, Result};
use bundle::Exit;
use clap::Args;
use std::path::PathBuf;

// No doc comment here: clap would take it as the subcommand's help, which `main.rs` sets.
#[derive(Debug, Args)]
pub struct CloudInitArgs {
    /// The host to write user data for: the name of one of the profiles (hosts/HOST.toml).
    pub host: String,
    /// The profiles directory.
    #[arg(long, value_name = "DIR", default_value = "profiles")]
    pub profiles: PathBuf,
    /// Where to write the #cloud-config user data (mode 0600: it holds the bundle and so its
    /// PSKs); replaced atomically if it exists.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Secret key to sign with (default: ./keys/builder.key, as for build).
    #[arg(long, value_name = "SECRET")]
    pub key: Option<PathBuf>,
    /// File holding the passphrase of an encrypted --key (otherwise it is asked for).
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// Bundle serial (default: the current Unix time).
    #[arg(long, value_name = "N")]
    pub serial: Option<u64>,
    /// Accept a --serial more than 10 years ahead of the current Unix time.
    #[arg(long)]
    pub allow_far_serial: bool,
    /// Refuse installation after this long: a duration with units, e.g. 30d, 2w, 2d12h, 90m.
    #[arg(long, value_name = "DURATION")]
    pub expires_in: Option<String>,
    /// Do not install packages (the image has them, the applier included).
    #[arg(long, conflicts_with = "apt_source")]
    pub no_packages: bool,
    /// Install the applier from this apt repository (one "deb [signed-by=$KEY_FILE] URL SUITE
    /// COMPONENT" line), for images without it; without it the image must carry the applier.
    #[arg(long, value_name = "LINE", requires = "apt_key")]
    pub apt_source: Option<String>,
    /// The ASCII-armored public key the --apt-source repository is signed with.
    #[arg(long, value_name = "FILE", requires = "apt_source")]
    pub apt_key: Option<PathBuf>,
    /// A command to run early at boot, e.g. to install the applier (repeatable).
    #[arg(long, value_name = "CMD")]
    pub bootcmd: Vec<String>,
    /// Largest user data allowed, in bytes (EC2: 16384).
    #[arg(long, value_name = "BYTES", default_value_t = EC2_USER_DATA_LIMIT)]
    pub max_size: usize,
}

pub fn run(args: CloudInitArgs) -> Result<Exit> {
    let fleet = match load_or_report(&args.profiles) {
        Ok(f) => f,
        Err(exit) => return Ok(exit),
    };
    let host = &args.host;
    let Some(h) = fleet.hosts.iter().find(|h| &h.name == host) else {
        bail!("no host {host:?} under {}", args.profiles.display());
    };
    // Checked before the key is read (it may ask for a passphrase) and anything is built.
    let apt = match (&args.apt_source, &args.apt_key) {
        (Some(source), Some(key_file)) => {
            let key = std::fs::read(key_file)
                .with_context(|| format!("--apt-key: reading {}", key_file.display()))?;
            let name = key_file.display().to_string();
            // A value that cannot mean a repository is a usage error (exit 64), like clap's.
            let usage = |e: crate::cloudinit::AptError| super::UsageError(e.to_string());
            let key = String::from_utf8(key)
                .map_err(|_| usage(crate::cloudinit::AptError::Key(name.clone())))?;
            Some(AptRepo::new(source, &key, &name).map_err(usage)?)
        }
        _ => None,
    };
    let params = build_params(
        args.serial,
        args.allow_far_serial,
        args.expires_in.as_deref(),
    )?;
    let sk = signing_key(args.key, args.passphrase_file)?;
    let h = super::ovn_credentials(&[h])?.remove(0);
    let bytes = build_host(&h, &sk, params);
    let max_size = args.max_size;
    let opts = CloudInitOpts {
        packages: !args.no_packages,
        bootcmd: args.bootcmd,
        max_size,
        apt,
    };
    // TooLarge names the host, both sizes and what to do instead: no context.
    let (data, compressed) = user_data(
        &h,
        &bytes,
        params.serial,
        &sk.public_key_file(),
        &sk.id().to_string(),
        &opts,
    )?;
    // The user data holds the bundle, and so PSKs: written like a bundle (mode 0600).
    let out = &args.out;
    write_bundle(out, &data).with_context(|| format!("writing {}", out.display()))?;
    println!(
        "{host}: {} ({} bytes{}, limit {max_size}; bundle serial {})",
        out.display(),
        data.len(),
        if compressed { ", gzip-compressed" } else { "" },
        params.serial
    );
    Ok(Exit::Ok)
}
