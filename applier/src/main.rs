//! `applier`: command-line front end. Parses arguments and dispatches; the work is in the library.

use anyhow::{Context, Result};
use applier::exit;
use applier::paths::Paths;
use applier::trust::load_trusted;
use bundle::{verify_bundle, VerifyOptions};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Verifies ovs-bundle bundles and applies them to this host.
///
/// Exit codes: 0 success; 1 failure (host unchanged); 2 changes pending (plan/status); 3 rollback
/// failed; 4 another apply is running; 10 not authentic; 11 malformed; 12 for another host;
/// 13 expired; 14 no trusted keys; 64 bad usage.
#[derive(Parser)]
#[command(name = "applier", version)]
struct Cli {
    /// Prefix for every host path (/etc, /var/lib): for tests and images.
    #[arg(long, global = true, value_name = "DIR", default_value = "/")]
    root: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Check a bundle's signature, contents and binding without changing anything.
    Verify {
        bundle: PathBuf,
        /// Trust this public key (repeatable) instead of ROOT/etc/ovs-bundle/trusted.d/*.pub.
        #[arg(long, value_name = "PUB")]
        trusted_key: Vec<PathBuf>,
        /// The host the bundle must be for (default: this host's name).
        #[arg(long, value_name = "NAME")]
        host: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    let paths = Paths::new(&cli.root);
    match cli.cmd {
        Cmd::Verify {
            bundle,
            trusted_key,
            host,
        } => verify(&paths, &bundle, &trusted_key, host),
    }
}

fn verify(paths: &Paths, bundle: &PathBuf, keys: &[PathBuf], host: Option<String>) -> ExitCode {
    let run = || -> Result<Result<bundle::VerifiedBundle, bundle::VerifyError>> {
        let keys = load_trusted(&paths.trusted_dir(), keys)?;
        let bytes = std::fs::read(bundle)
            .with_context(|| format!("reading bundle {}", bundle.display()))?;
        let opts = VerifyOptions {
            host: Some(host.map_or_else(this_host, Ok)?),
            now: Some(unix_now()),
            ..VerifyOptions::default()
        };
        Ok(verify_bundle(&bytes, &keys, &opts))
    };
    match run() {
        Ok(Ok(b)) => {
            println!(
                "{}: OK: host {}, serial {}, signed by key {}, {} file(s)",
                bundle.display(),
                b.manifest.host,
                b.manifest.serial,
                b.signed_by,
                b.files.len()
            );
            ExitCode::from(exit::OK)
        }
        Ok(Err(e)) => {
            let also = match e {
                bundle::VerifyError::NoTrustedKeys => {
                    format!(" (none in {})", paths.trusted_dir().display())
                }
                _ => String::new(),
            };
            eprintln!("applier: {}: refused: {e}{also}", bundle.display());
            ExitCode::from(e.exit_code())
        }
        Err(e) => {
            eprintln!("applier: error: {e:#}");
            ExitCode::from(exit::FAILED)
        }
    }
}

/// This host's name as profiles spell it: the first label of the kernel's host name.
fn this_host() -> Result<String> {
    let name = nix::unistd::gethostname().context("reading this host's name")?;
    let name = name.to_string_lossy();
    Ok(name.split('.').next().unwrap_or_default().to_string())
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
