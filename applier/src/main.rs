//! `applier`: command-line front end. Parses arguments and dispatches; the work is in the library.

use anyhow::{Context, Result};
use applier::apply::{Applier, ApplyError, ApplyOpts, Outcome};
use applier::exit;
use applier::ovs::Scope;
use applier::paths::Paths;
use applier::plan::{HostPlan, Locations};
use applier::store::Store;
use applier::system::RealSystem;
use applier::trust::load_trusted;
use bundle::{verify_bundle, VerifyOptions};
use clap::{Args, Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// Verifies ovs-bundle bundles and applies them to this host.
///
/// Exit codes: 0 success / no changes; 1 failure (host unchanged or rolled back); 2 changes
/// pending (plan, status); 3 rollback failed; 4 another apply is running; 10 not authentic;
/// 11 malformed; 12 for another host; 13 expired; 14 no trusted keys; 15 refused (serial,
/// content); 64 bad usage.
#[derive(Parser)]
#[command(name = "applier", version)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args)]
struct Global {
    /// Prefix for every host path (/etc, /var/lib, /run): for tests and images.
    #[arg(long, global = true, value_name = "DIR", default_value = "/")]
    root: PathBuf,
    /// The OVSDB server socket.
    #[arg(
        long,
        global = true,
        value_name = "unix:PATH",
        default_value = "unix:/var/run/openvswitch/db.sock"
    )]
    ovsdb: String,
    /// Where /proc is (sysctl values are per network namespace).
    #[arg(long, global = true, value_name = "DIR", default_value = "/proc")]
    proc: PathBuf,
    /// Seconds to wait for ovsdb-server and ovs-vswitchd.
    #[arg(long, global = true, value_name = "SECS", default_value_t = 30)]
    timeout: u64,
    /// Seconds to wait for another apply to finish.
    #[arg(long, global = true, value_name = "SECS", default_value_t = 10)]
    lock_timeout: u64,
    /// Trust this public key (repeatable) instead of ROOT/etc/ovs-bundle/trusted.d/*.pub.
    #[arg(long, global = true, value_name = "PUB")]
    trusted_key: Vec<PathBuf>,
    /// The host bundles must be for (default: this host's name).
    #[arg(long, global = true, value_name = "NAME")]
    host: Option<String>,
    /// Machine-readable output (plan, apply, status).
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Args, Clone, Copy)]
struct ApplyFlags {
    /// Reconcile only the GRE tunnels on the bundle's bridges; leave everything else alone.
    #[arg(long)]
    gre_only: bool,
    /// Accept a bundle whose serial is lower than the highest applied (logged loudly).
    #[arg(long)]
    allow_downgrade: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// Check a bundle's signature, contents and binding without changing anything.
    Verify { bundle: PathBuf },
    /// Print what applying a bundle would change (exit 0: nothing, 2: something).
    Plan {
        bundle: PathBuf,
        #[command(flatten)]
        flags: ApplyFlags,
    },
    /// Verify a bundle and apply it atomically, as a new generation.
    Apply {
        bundle: PathBuf,
        #[command(flatten)]
        flags: ApplyFlags,
        /// Print the plan and change nothing (same as `plan`).
        #[arg(long)]
        dry_run: bool,
    },
    /// Compare the host with the current generation (exit 0: no drift, 2: drift).
    Status,
    /// Switch back to the previous generation.
    Rollback,
    /// List the generations.
    Generations,
    /// List the trusted and revoked keys with their key ids.
    Keys,
    /// At boot: finish an interrupted apply, install bundles from the incoming directory, and
    /// otherwise restore the current generation (iptables rules do not survive a reboot).
    Boot {
        /// Cycle interfaces whose stanza changes (when networking is already up).
        #[arg(long)]
        cycle: bool,
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
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("applier: error: {e:#}");
            ExitCode::from(exit::FAILED)
        }
    }
}

fn log(msg: &str) {
    eprintln!("applier: {msg}");
}

fn run(cli: Cli) -> Result<u8> {
    let g = &cli.global;
    let paths = Paths::new(&g.root);
    let (keys, warnings) = load_trusted(&paths.trusted_dir(), &g.trusted_key)?;
    let (revoked_keys, more) = applier::trust::load_revoked(&paths.revoked_dir())?;
    for w in warnings.iter().chain(&more) {
        log(&format!("warning: {w}"));
    }
    let revoked: Vec<bundle::KeyId> = revoked_keys.iter().map(|k| k.id).collect();
    if let Cmd::Keys = cli.cmd {
        for k in &keys {
            let state = if revoked.contains(&k.id) {
                "revoked"
            } else {
                "trusted"
            };
            println!("{}  {state:<8} {}", k.id, k.source);
        }
        for k in revoked_keys
            .iter()
            .filter(|r| !keys.iter().any(|k| k.id == r.id))
        {
            println!("{}  {:<8} {}", k.id, "revoked", k.source);
        }
        if keys.is_empty() {
            println!("no trusted keys in {}", paths.trusted_dir().display());
        }
        return Ok(exit::OK);
    }
    let host = match &g.host {
        Some(h) => h.clone(),
        None => this_host()?,
    };
    if let Cmd::Verify { bundle } = &cli.cmd {
        let bytes = read_bundle(bundle)?;
        let opts = VerifyOptions {
            host: Some(host),
            now: Some(unix_now()),
            revoked: revoked.clone(),
            ..VerifyOptions::default()
        };
        return Ok(match verify_bundle(&bytes, &keys, &opts) {
            Ok(b) => {
                println!(
                    "{}: OK: host {}, serial {}, signed by key {}, {} file(s)",
                    bundle.display(),
                    b.manifest.host,
                    b.manifest.serial,
                    b.signed_by,
                    b.files.len()
                );
                exit::OK
            }
            Err(e) => {
                let also = match e {
                    bundle::VerifyError::NoTrustedKeys => {
                        format!(" (none in {})", paths.trusted_dir().display())
                    }
                    _ => String::new(),
                };
                eprintln!("applier: {}: refused: {e}{also}", bundle.display());
                e.exit_code()
            }
        });
    }
    let socket = g
        .ovsdb
        .strip_prefix("unix:")
        .with_context(|| format!("--ovsdb {}: only unix:PATH sockets are supported", g.ovsdb))?;
    let store = Store::new(paths.state_dir());
    let mut sys = RealSystem::new(
        PathBuf::from(socket),
        Duration::from_secs(g.timeout),
        paths.host("/run/network"),
    );
    let loc = Locations {
        paths: paths.clone(),
        proc_dir: g.proc.clone(),
    };
    if let Cmd::Generations = cli.cmd {
        return generations(&mut sys, &store);
    }
    store
        .init()
        .with_context(|| format!("creating the state directory {}", store.dir().display()))?;
    let _lock =
        match applier::lock::acquire(&store.lock_path(), Duration::from_secs(g.lock_timeout)) {
            Ok(l) => l,
            Err(e @ applier::lock::LockError::Busy { .. }) => {
                eprintln!("applier: {e}");
                return Ok(exit::LOCKED);
            }
            Err(e) => return Err(e.into()),
        };
    let mut app = Applier {
        sys: &mut sys,
        loc,
        store: store.clone(),
        keys,
        revoked,
        host,
        now: unix_now(),
        log: Box::new(log),
    };
    let plan_only = matches!(
        cli.cmd,
        Cmd::Plan { .. } | Cmd::Status | Cmd::Apply { dry_run: true, .. }
    );
    if !plan_only {
        match app.recover() {
            Ok(Some(msg)) => log(&msg),
            Ok(None) => {}
            Err(e) => return Ok(report(&e)),
        }
    }
    match cli.cmd {
        Cmd::Verify { .. } | Cmd::Generations | Cmd::Keys => unreachable!("handled above"),
        Cmd::Plan { bundle, flags }
        | Cmd::Apply {
            bundle,
            flags,
            dry_run: true,
        } => {
            let bytes = read_bundle(&bundle)?;
            match app.plan_bundle(&bytes, opts(flags, true)) {
                Ok(plan) => Ok(show_plan(&plan, g.json, None)),
                Err(e) => Ok(report(&e)),
            }
        }
        Cmd::Apply { bundle, flags, .. } => {
            let bytes = read_bundle(&bundle)?;
            let result = app.apply_bundle(&bytes, opts(flags, true));
            Ok(show_outcome(result, g.json))
        }
        Cmd::Status => match app.status() {
            Ok((None, _)) => {
                println!("no generation applied yet");
                Ok(exit::OK)
            }
            Ok((Some(n), plan)) => Ok(show_plan(&plan, g.json, Some(n))),
            Err(e) => Ok(report(&e)),
        },
        Cmd::Rollback => {
            let current = app.store.current(app.sys)?;
            let previous =
                current.and_then(|c| app.store.generations().into_iter().filter(|n| *n < c).max());
            let Some(previous) = previous else {
                eprintln!("applier: no earlier generation to roll back to");
                return Ok(exit::FAILED);
            };
            let result = app.apply_generation(
                previous,
                opts(
                    ApplyFlags {
                        gre_only: false,
                        allow_downgrade: true,
                    },
                    true,
                ),
            );
            Ok(show_outcome(result, g.json))
        }
        Cmd::Boot { cycle } => Ok(boot(&mut app, cycle)),
    }
}

fn opts(flags: ApplyFlags, cycle: bool) -> ApplyOpts {
    ApplyOpts {
        scope: if flags.gre_only {
            Scope::GreOnly
        } else {
            Scope::Full
        },
        cycle,
        allow_downgrade: flags.allow_downgrade,
    }
}

fn report(e: &ApplyError) -> u8 {
    eprintln!("applier: {e}");
    e.exit_code()
}

fn show_plan(plan: &HostPlan, json: bool, generation: Option<u64>) -> u8 {
    if json {
        let mut v = plan.to_json();
        v["generation"] = serde_json::json!(generation);
        println!("{v}");
    } else {
        if let Some(n) = generation {
            println!("current generation {n}; drift:");
        }
        print!("{}", plan.render());
    }
    if plan.is_empty() {
        exit::OK
    } else {
        exit::CHANGES
    }
}

fn show_outcome(result: Result<Outcome, ApplyError>, json: bool) -> u8 {
    match result {
        Ok(Outcome::Unchanged { generation }) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"result": "unchanged", "generation": generation, "changes": 0, "ovs_write_ops": 0})
                );
            } else {
                println!("no changes: generation {generation} is current and the host matches it");
            }
            exit::OK
        }
        Ok(Outcome::Applied { generation, plan }) => {
            if json {
                let mut v = plan.to_json();
                v["result"] = "applied".into();
                v["generation"] = generation.into();
                println!("{v}");
            } else {
                print!("{}", plan.render());
                println!("applied: generation {generation} is current");
            }
            exit::OK
        }
        Err(e) => report(&e),
    }
}

fn boot(app: &mut Applier, cycle: bool) -> u8 {
    let incoming = app.store.incoming_dir();
    let mut bundles: Vec<PathBuf> = std::fs::read_dir(&incoming)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "tgz"))
        .collect();
    bundles.sort();
    let boot_opts = ApplyOpts {
        scope: Scope::Full,
        cycle,
        allow_downgrade: false,
    };
    let mut installed = false;
    let mut code = exit::OK;
    for path in bundles {
        let result = std::fs::read(&path)
            .map_err(|e| format!("{}: {e}", path.display()))
            .and_then(|bytes| {
                app.apply_bundle(&bytes, boot_opts).map_err(|e| {
                    code = e.exit_code();
                    e.to_string()
                })
            });
        match result {
            Ok(outcome) => {
                let n = match outcome {
                    Outcome::Unchanged { generation } | Outcome::Applied { generation, .. } => {
                        generation
                    }
                };
                log(&format!("{}: installed as generation {n}", path.display()));
                let _ = std::fs::remove_file(&path);
                installed = true;
            }
            Err(e) => {
                log(&format!(
                    "{}: not installed, keeping the current generation: {e}",
                    path.display()
                ));
                let failed = incoming.join("failed");
                let _ = std::fs::create_dir_all(&failed);
                let _ = std::fs::rename(&path, failed.join(path.file_name().unwrap_or_default()));
            }
        }
    }
    if installed {
        return exit::OK;
    }
    match app.store.current(app.sys) {
        Ok(Some(n)) => match app.apply_generation(n, boot_opts) {
            Ok(_) => {
                log(&format!("restored generation {n}"));
                code
            }
            Err(e) => report(&e),
        },
        Ok(None) => {
            log("no generation to restore and no bundle in the incoming directory");
            code
        }
        Err(e) => {
            log(&e.to_string());
            exit::FAILED
        }
    }
}

fn generations(sys: &mut RealSystem, store: &Store) -> Result<u8> {
    let current = store.current(sys)?;
    let gens = store.generations();
    if gens.is_empty() {
        println!("no generations");
    }
    for n in gens {
        let m = store.meta(sys, n)?;
        println!(
            "{} {:>4}  serial {:<12} host {:<16} applied {}{}",
            if Some(n) == current { "*" } else { " " },
            n,
            m.serial,
            m.host,
            bundle::time::format_utc(m.applied_at),
            m.gre_only_base
                .map(|b| format!("  (gre-only on {b})"))
                .unwrap_or_default()
        );
    }
    Ok(exit::OK)
}

fn read_bundle(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading bundle {}", path.display()))
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
