//! `builder check`: validate a profiles directory without building anything.

use anyhow::Result;
use bundle::Exit;
use clap::Args;
use std::path::PathBuf;

// No doc comment here: clap would take it as the subcommand's help, which `main.rs` sets.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The profiles directory: DIR/hosts/<host>.toml, one per host, and optionally DIR/fleet.toml.
    pub dir: PathBuf,
}

pub fn run(args: CheckArgs) -> Result<Exit> {
    let fleet = match super::load_or_report(&args.dir) {
        Ok(f) => f,
        Err(exit) => return Ok(exit),
    };
    for n in &fleet.notes {
        eprintln!("{n}");
    }
    println!(
        "{}: {} host(s), all valid",
        args.dir.display(),
        fleet.hosts.len()
    );
    Ok(Exit::Ok)
}
