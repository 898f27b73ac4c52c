//! `builder`: command-line front end. Parses arguments and dispatches; the work is in the library.

use anyhow::{bail, Context, Result};
use builder::build::{build_all, build_host, classify, parse_duration, write_bundle, BuildParams};
use builder::diag::Diagnostic;
use builder::profile::load_fleet;
use builder::sign::{is_encrypted, keygen, load_secret_key, Passphrase, Protection};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Compiles per-host TOML profiles into signed, reproducible ovs-bundle bundles.
///
/// Exit codes: 0 success; 1 invalid profiles or any other failure; 64 bad usage.
#[derive(Parser)]
#[command(name = "builder", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a minisign signing key pair (refuses to overwrite).
    Keygen {
        #[arg(long, value_name = "FILE")]
        secret_key: PathBuf,
        #[arg(long, value_name = "FILE")]
        public_key: PathBuf,
        /// Store the secret key unencrypted (mode 0600): for CI and examples only.
        #[arg(long)]
        unencrypted: bool,
        /// Read the new key's passphrase from this file instead of asking.
        #[arg(long, value_name = "FILE", conflicts_with = "unencrypted")]
        passphrase_file: Option<PathBuf>,
    },
    /// Validate every profile under DIR and print every problem found.
    Check { dir: PathBuf },
    /// Build one signed bundle per host: OUTDIR/<host>.tgz.
    Build {
        dir: PathBuf,
        #[arg(long, value_name = "OUTDIR")]
        out: PathBuf,
        /// Secret key to sign with. Without it, ./keys/builder.key is used, created on first use.
        #[arg(long, value_name = "SECRET")]
        key: Option<PathBuf>,
        /// Passphrase file for an encrypted key (otherwise it is asked for).
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
        /// Build only this host.
        #[arg(long, value_name = "NAME")]
        host: Option<String>,
        /// Bundle serial (default: the current Unix time).
        #[arg(long, value_name = "N")]
        serial: Option<u64>,
        /// Refuse installation after this long, e.g. 30d, 12h.
        #[arg(long, value_name = "DURATION")]
        expires_in: Option<String>,
    },
    /// Show a bundle's manifest and contents, PSKs redacted.
    Inspect { bundle: PathBuf },
    /// Write #cloud-config user data that configures HOST on first boot.
    CloudInit {
        host: String,
        /// The profiles directory.
        #[arg(long, value_name = "DIR", default_value = "profiles")]
        profiles: PathBuf,
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Secret key to sign with (default: ./keys/builder.key, as for build).
        #[arg(long, value_name = "SECRET")]
        key: Option<PathBuf>,
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
        #[arg(long, value_name = "N")]
        serial: Option<u64>,
        #[arg(long, value_name = "DURATION")]
        expires_in: Option<String>,
        /// Do not install packages (the image has them).
        #[arg(long)]
        no_packages: bool,
        /// A command to run early at boot, e.g. to install the applier (repeatable).
        #[arg(long, value_name = "CMD")]
        bootcmd: Vec<String>,
        /// Largest user data allowed, in bytes (EC2: 16384).
        #[arg(long, value_name = "BYTES", default_value_t = builder::cloudinit::EC2_USER_DATA_LIMIT)]
        max_size: usize,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 64 } else { 0 });
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("builder: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.cmd {
        Cmd::Keygen {
            secret_key,
            public_key,
            unencrypted,
            passphrase_file,
        } => {
            let protection = if unencrypted {
                Protection::Unencrypted
            } else if let Some(f) = passphrase_file {
                Protection::Passphrase(read_passphrase(&f)?)
            } else {
                require_terminal()?;
                Protection::Prompt
            };
            let id = keygen(&secret_key, &public_key, protection)?;
            println!(
                "key {id}: secret key {} (mode 0600), public key {}",
                secret_key.display(),
                public_key.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Check { dir } => match load_fleet(&dir) {
            Ok(fleet) => {
                for n in &fleet.notes {
                    eprintln!("{n}");
                }
                println!(
                    "{}: {} host(s), all valid",
                    dir.display(),
                    fleet.hosts.len()
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(diags) => Ok(report(&diags)),
        },
        Cmd::Build {
            dir,
            out,
            key,
            passphrase_file,
            host,
            serial,
            expires_in,
        } => {
            let fleet = match load_fleet(&dir) {
                Ok(f) => f,
                Err(diags) => return Ok(report(&diags)),
            };
            let hosts: Vec<_> = match &host {
                Some(name) => {
                    let h: Vec<_> = fleet.hosts.iter().filter(|h| &h.name == name).collect();
                    if h.is_empty() {
                        bail!("no host {name:?} under {}", dir.display());
                    }
                    h
                }
                None => fleet.hosts.iter().collect(),
            };
            let sk = signing_key(key, passphrase_file)?;
            let params = build_params(serial, expires_in)?;
            std::fs::create_dir_all(&out)
                .with_context(|| format!("creating output directory {}", out.display()))?;
            for n in &fleet.notes {
                eprintln!("{n}");
            }
            let built = build_all(&hosts, &sk, params);
            for (h, bytes) in hosts.iter().zip(built) {
                let path = out.join(format!("{}.tgz", h.name));
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
            Ok(ExitCode::SUCCESS)
        }
        Cmd::CloudInit {
            host,
            profiles,
            out,
            key,
            passphrase_file,
            serial,
            expires_in,
            no_packages,
            bootcmd,
            max_size,
        } => {
            let fleet = match load_fleet(&profiles) {
                Ok(f) => f,
                Err(diags) => return Ok(report(&diags)),
            };
            let Some(h) = fleet.hosts.iter().find(|h| h.name == host) else {
                bail!("no host {host:?} under {}", profiles.display());
            };
            let sk = signing_key(key, passphrase_file)?;
            let params = build_params(serial, expires_in)?;
            let bytes = build_host(h, &sk, params);
            let opts = builder::cloudinit::CloudInitOpts {
                packages: !no_packages,
                bootcmd,
                max_size,
            };
            let (data, compressed) = builder::cloudinit::user_data(
                h,
                &bytes,
                params.serial,
                &sk.public_key_file(),
                &sk.id().to_string(),
                &opts,
            )?;
            // The user data holds the bundle, and so PSKs.
            write_bundle(&out, &data).with_context(|| format!("writing {}", out.display()))?;
            println!(
                "{host}: {} ({} bytes{}, limit {max_size}; bundle serial {})",
                out.display(),
                data.len(),
                if compressed { ", gzip-compressed" } else { "" },
                params.serial
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Inspect { bundle } => {
            let bytes = std::fs::read(&bundle)
                .with_context(|| format!("reading bundle {}", bundle.display()))?;
            let shown = builder::inspect::inspect(&bytes)
                .with_context(|| format!("bundle {}", bundle.display()))?;
            print!("{shown}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn signing_key(
    key: Option<PathBuf>,
    passphrase_file: Option<PathBuf>,
) -> Result<builder::sign::SecretKey> {
    let key_path = match key {
        Some(k) => k,
        None => default_key()?,
    };
    let passphrase = if is_encrypted(&key_path)? {
        match passphrase_file {
            Some(f) => Passphrase::Given(read_passphrase(&f)?),
            None => {
                require_terminal()?;
                Passphrase::Prompt
            }
        }
    } else {
        Passphrase::None
    };
    Ok(load_secret_key(&key_path, passphrase)?)
}

fn build_params(serial: Option<u64>, expires_in: Option<String>) -> Result<BuildParams> {
    let now = unix_now();
    Ok(BuildParams {
        serial: serial.unwrap_or(now),
        expires: match expires_in {
            Some(d) => Some(now + parse_duration(&d).map_err(anyhow::Error::msg)?),
            None => None,
        },
    })
}

fn report(diags: &[Diagnostic]) -> ExitCode {
    for d in diags {
        eprintln!("{d}");
    }
    eprintln!("builder: {} error(s); nothing was built", diags.len());
    ExitCode::from(1)
}

/// The example key under ./keys/, created unencrypted on first use so the shipped examples build
/// on a fresh clone. Loudly marked: such a key is for trying things out, not for a fleet.
fn default_key() -> Result<PathBuf> {
    let dir = Path::new("keys");
    let sk = dir.join("builder.key");
    if !sk.exists() {
        std::fs::create_dir_all(dir).context("creating ./keys")?;
        let id = keygen(&sk, &dir.join("builder.pub"), Protection::Unencrypted)?;
        eprintln!(
            "builder: warning: no --key given; created an UNENCRYPTED example key {id} in keys/builder.key \
             (public half keys/builder.pub). Use `builder keygen` and --key for real fleets."
        );
    } else {
        eprintln!(
            "builder: warning: no --key given; signing with the example key keys/builder.key"
        );
    }
    Ok(sk)
}

fn read_passphrase(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading passphrase file {}", path.display()))?;
    let p = text.trim_end_matches(['\n', '\r']).to_string();
    if p.is_empty() {
        bail!("passphrase file {} is empty", path.display());
    }
    Ok(p)
}

fn require_terminal() -> Result<()> {
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        bail!("no terminal to ask for a passphrase: pass --passphrase-file FILE, or --unencrypted for a CI key");
    }
    Ok(())
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
