//! `builder`: command-line front end. Parses arguments and dispatches; the work is in the library
//! (`builder::cmd`, one module per subcommand).

use builder::cmd::{build, check, cloud_init, inspect, keygen};
use bundle::Exit;
use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Compiles per-host TOML profiles into signed, reproducible ovs-bundle bundles.
///
/// Exit codes: 0 success; 1 invalid profiles or any other failure; 64 bad usage (including an
/// --expires-in of zero or past the largest Unix time, and a --serial more than 10 years ahead
/// without --allow-far-serial).
#[derive(Parser)]
#[command(name = "builder", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
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

fn main() -> ExitCode {
    // First: the signing key and PSKs must never land in a core file.
    if let Err(e) = builder::harden::no_core_dumps() {
        eprintln!("builder: warning: cannot disable core dumps: {e}");
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // --help and --version come here too, on stdout, and are not errors.
            let exit = if e.use_stderr() {
                Exit::Usage
            } else {
                Exit::Ok
            };
            return exit.into();
        }
    };
    let outcome = match cli.cmd {
        Cmd::Keygen(args) => keygen::run(args),
        Cmd::Check(args) => check::run(args),
        Cmd::Build(args) => build::run(args),
        Cmd::Inspect(args) => inspect::run(args),
        Cmd::CloudInit(args) => cloud_init::run(args),
    };
    match outcome {
        Ok(exit) => exit.into(),
        Err(e) => {
            eprintln!("builder: error: {e:#}");
            if e.downcast_ref::<builder::cmd::UsageError>().is_some() {
                Exit::Usage.into()
            } else {
                Exit::Failed.into()
            }
        }
    }
}
