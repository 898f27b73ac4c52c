//! `builder keygen`: a new minisign key pair for signing bundles.

use super::key::{read_passphrase, require_terminal};
use crate::sign::{keygen, Protection};
use anyhow::Result;
use bundle::Exit;
use clap::Args;
use std::path::PathBuf;

// No doc comment here: clap would take it as the subcommand's help, which `main.rs` sets.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write the new secret (signing) key, mode 0600; encrypted with a passphrase unless
    /// --unencrypted. Keep it on the build machine only. An existing file is never overwritten.
    #[arg(long, value_name = "FILE")]
    pub secret_key: PathBuf,
    /// Where to write the public key, which hosts trust: install it on each host as
    /// /etc/ovs-bundle/trusted.d/<name>.pub. An existing file is never overwritten.
    #[arg(long, value_name = "FILE")]
    pub public_key: PathBuf,
    /// Store the secret key unencrypted (mode 0600): for CI and examples only.
    #[arg(long)]
    pub unencrypted: bool,
    /// Read the new key's passphrase from this file instead of asking.
    #[arg(long, value_name = "FILE", conflicts_with = "unencrypted")]
    pub passphrase_file: Option<PathBuf>,
}

pub fn run(args: KeygenArgs) -> Result<Exit> {
    let protection = if args.unencrypted {
        Protection::Unencrypted
    } else if let Some(f) = &args.passphrase_file {
        Protection::Passphrase(read_passphrase(f)?)
    } else {
        require_terminal()?;
        Protection::Prompt
    };
    // KeyError names the file and says what to do ("refusing to overwrite ..."): no context.
    let id = keygen(&args.secret_key, &args.public_key, protection)?;
    println!(
        "key {id}: secret key {} (mode 0600), public key {}",
        args.secret_key.display(),
        args.public_key.display()
    );
    Ok(Exit::Ok)
}
