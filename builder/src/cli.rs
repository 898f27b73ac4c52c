//! The command line: what `builder` accepts, as clap types. Kept in the library (like the
//! applier's) so the man pages and shell completions are generated from the same definitions
//! (`packaging/docgen`).

use crate::cmd::{build, check, cloud_init, inspect, keygen};
use clap::{Parser, Subcommand};

/// Compiles per-host TOML profiles into signed, reproducible ovs-bundle bundles.
///
/// Exit codes: 0 success; 1 invalid profiles or any other failure; 64 bad usage (including an
/// --expires-in of zero or past the largest Unix time, and a --serial more than 10 years ahead
/// without --allow-far-serial).
#[derive(Parser)]
#[command(name = "builder", version)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Create a minisign signing key pair (refuses to overwrite).
    Keygen(keygen::KeygenArgs),
    /// Validate every profile under DIR and print every problem found.
    Check(check::CheckArgs),
    /// Build one signed bundle per host: OUTDIR/<host>.tgz.
    Build(build::BuildArgs),
    /// Show a bundle's manifest and contents, PSKs redacted.
    Inspect(inspect::InspectArgs),
    /// Write #cloud-config user data that configures HOST on first boot.
    CloudInit(cloud_init::CloudInitArgs),
}
