//! `builder build`: one signed bundle per host, written atomically, each reported with how it
//! differs from the bundle it replaces so the operator knows how to roll it out.

use super::key::signing_key;
use super::{build_params, load_or_report};
use crate::build::{build_all, classify, write_bundle};
use anyhow::{bail, Context, Result};
use bundle::Exit;
use clap::Args;
use std::path::PathBuf;

// No doc comment here: clap would take it as the subcommand's help, which `main.rs` sets.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The profiles directory: DIR/hosts/<host>.toml, one per host, and optionally DIR/fleet.toml.
    pub dir: PathBuf,
    /// Directory to write the bundles to, OUTDIR/<host>.tgz (mode 0600: they hold PSKs); created
    /// if missing. A bundle already there is replaced atomically and compared with the new one.
    #[arg(long, value_name = "OUTDIR")]
    pub out: PathBuf,
    /// Secret key to sign with. Without it, ./keys/builder.key is used, created on first use.
    #[arg(long, value_name = "SECRET")]
    pub key: Option<PathBuf>,
    /// File holding the passphrase of an encrypted --key (otherwise it is asked for on the
    /// terminal). Never give a passphrase on the command line.
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// Build only this host.
    #[arg(long, value_name = "NAME")]
    pub host: Option<String>,
    /// Bundle serial (default: the current Unix time).
    #[arg(long, value_name = "N")]
    pub serial: Option<u64>,
    /// Accept a --serial more than 10 years ahead of the current Unix time (hosts that apply it
    /// then refuse bundles with default serials as downgrades).
    #[arg(long)]
    pub allow_far_serial: bool,
    /// Refuse installation after this long: a duration with units, e.g. 30d, 2w, 2d12h, 90m.
    #[arg(long, value_name = "DURATION")]
    pub expires_in: Option<String>,
}

pub fn run(args: BuildArgs) -> Result<Exit> {
    let fleet = match load_or_report(&args.dir) {
        Ok(f) => f,
        Err(exit) => return Ok(exit),
    };
    let hosts: Vec<_> = match &args.host {
        Some(name) => {
            let h: Vec<_> = fleet.hosts.iter().filter(|h| &h.name == name).collect();
            if h.is_empty() {
                bail!("no host {name:?} under {}", args.dir.display());
            }
            h
        }
        None => fleet.hosts.iter().collect(),
    };
    // Parameters and key first: a bad duration or passphrase leaves no output directory behind,
    // and a bad command line is reported before any passphrase is asked for.
    let params = build_params(
        args.serial,
        args.allow_far_serial,
        args.expires_in.as_deref(),
    )?;
    let sk = signing_key(args.key, args.passphrase_file)?;
    // OVN IPsec credentials of the hosts built (and only theirs: a key is made for a chassis
    // the first time its bundle is built).
    let hosts = super::ovn_credentials(&hosts)?;
    let out = &args.out;
    std::fs::create_dir_all(out)
        .with_context(|| format!("creating output directory {}", out.display()))?;
    for n in &fleet.notes {
        eprintln!("{n}");
    }
    let hosts: Vec<&crate::model::Host> = hosts.iter().collect();
    let built = build_all(&hosts, &sk, params);
    for (h, bytes) in hosts.iter().zip(built) {
        let path = out.join(format!("{}.tgz", h.name));
        // A missing or unreadable old bundle is not an error: the host is then "new".
        let change = classify(std::fs::read(&path).ok().as_deref(), &bytes);
        write_bundle(&path, &bytes)
            .with_context(|| format!("writing bundle {}", path.display()))?;
        println!(
            "{}: {} ({} bytes, serial {}, signed by key {}): {}",
            h.name,
            path.display(),
            bytes.len(),
            params.serial,
            sk.id(),
            change.describe()
        );
    }
    Ok(Exit::Ok)
}
