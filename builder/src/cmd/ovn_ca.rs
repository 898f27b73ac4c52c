//! `builder ovn-ca`: a new PKI directory for OVN IPsec between chassis (`[ovn] ipsec_pki`).

use crate::ovn_pki;
use anyhow::{anyhow, Result};
use bundle::Exit;
use clap::Args;
use std::path::PathBuf;

// No doc comment here: clap would take it as the subcommand's help, which `cli.rs` sets.
#[derive(Debug, Args)]
pub struct OvnCaArgs {
    /// The PKI directory to create (mode 0700), or an existing one without a CA: its ca.key
    /// (mode 0600) is made here, the chassis keys by the builds that need them. An existing CA
    /// is never replaced.
    #[arg(long, value_name = "DIR")]
    pub pki: PathBuf,
}

pub fn run(args: OvnCaArgs) -> Result<Exit> {
    ovn_pki::init(&args.pki).map_err(|e| anyhow!("{e}\n  hint: {}", e.hint()))?;
    println!(
        "OVN IPsec CA: {} (mode 0600; keep it and the chassis keys beside it like the signing key). \
         Name the directory in fleet.toml: [ovn] ipsec_pki = \"…\"",
        args.pki.join(ovn_pki::CA_KEY).display()
    );
    Ok(Exit::Ok)
}
