//! `builder inspect`: show a bundle file to a person, PSKs redacted.

use anyhow::{Context, Result};
use bundle::Exit;
use clap::Args;
use std::path::PathBuf;

// No doc comment here: clap would take it as the subcommand's help, which `main.rs` sets.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A bundle file (<host>.tgz) as written by `builder build`. Its signature is not checked
    /// here: `applier verify` on a host does that.
    pub bundle: PathBuf,
}

pub fn run(args: InspectArgs) -> Result<Exit> {
    let path = &args.bundle;
    let bytes =
        std::fs::read(path).with_context(|| format!("reading bundle {}", path.display()))?;
    let shown =
        crate::inspect::inspect(&bytes).with_context(|| format!("bundle {}", path.display()))?;
    print!("{shown}");
    Ok(Exit::Ok)
}
