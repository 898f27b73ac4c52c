//! The commands behind `applier`'s subcommands: each takes the parsed command line, does its work
//! through the library, prints what people (or `--json` readers) see, and returns the exit status.
//!
//! Over 500 lines: every subcommand's printing (text and `--json`) and exit status, the one
//! place the CLI's contract with its users is kept (the try commands are in `trial.rs`).

use crate::cli::{ApplyFlags, Cli, Cmd, Global};
use crate::engine::{Applier, ApplyError, ApplyOpts, Outcome, Trust};
use crate::ovs::Scope;
use crate::paths::Paths;
use crate::plan::HostPlan;
use crate::state::Locations;
use crate::store::Store;
use crate::system::RealSystem;
use crate::trust::{load_revoked, load_trusted};
use anyhow::{Context, Result};
use bundle::TrustedKey;
use bundle::{verify_bundle, Exit, VerifyOptions};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Standard output that a closed pipe cannot turn into a panic: `applier apply X | true` must
/// still exit as the apply did (a committed apply exits 0 whatever happens to its output).
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write;
        let _ = write!(std::io::stdout(), $($arg)*);
    }};
}

macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod trial;

/// Whether `--json` was given: every command then prints exactly one JSON document on stdout,
/// errors included (schema version [`JSON_VERSION`], documented in docs/applier.md).
static JSON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The version of the `--json` documents' schema.
pub const JSON_VERSION: u32 = 1;

fn json() -> bool {
    JSON.load(std::sync::atomic::Ordering::Relaxed)
}

/// Prints one JSON document, with the schema version.
fn emit(mut v: serde_json::Value) {
    v["version"] = JSON_VERSION.into();
    outln!("{v}");
}

/// With `--json`, an error is a document too: what went wrong and the exit code it means.
fn emit_error(message: &str, exit: Exit) {
    if json() {
        emit(serde_json::json!({"result": "error", "error": message, "exit": exit.code()}));
    }
}

/// One line on stderr, priority-prefixed when stderr is the journal ([`crate::journal`]).
fn log(msg: &str) {
    crate::journal::log("applier", msg);
}

/// Runs one command line.
pub fn run(cli: Cli) -> Result<Exit> {
    JSON.store(cli.global.json, std::sync::atomic::Ordering::Relaxed);
    match run_command(cli) {
        Err(e) if json() => {
            let exit = crate::harden::exit_for(&e);
            emit_error(&format!("{e:#}"), exit);
            log(&format!("error: {e:#}"));
            Ok(exit)
        }
        other => other,
    }
}

fn run_command(cli: Cli) -> Result<Exit> {
    let g = &cli.global;
    let paths = Paths::new(&g.root);
    let (keys, warnings) = load_trusted(&paths.trusted_dir(), &g.trusted_key)
        .with_context(|| format!("reading trusted keys in {}", paths.trusted_dir().display()))?;
    let (revoked_keys, more) = match load_revoked(&paths.revoked_dir()) {
        Ok(r) => r,
        // At boot the host keeps the network it had: its current generation is restored (it
        // was verified when it was applied), nothing new is installed, and the unit fails.
        Err(e @ crate::trust::TrustError::UnreadableRevocation { .. })
            if matches!(cli.cmd, Cmd::Boot { .. }) =>
        {
            log(&format!("ERROR: {e}"));
            return boot_without_revocations(&cli, &paths, keys);
        }
        Err(e) => {
            log(&e.to_string());
            emit_error(&e.to_string(), e.exit());
            return Ok(e.exit());
        }
    };
    for w in warnings.iter().chain(&more) {
        log(&format!("warning: {w}"));
    }
    let trust = Trust {
        revoked: revoked_keys.iter().map(|k| k.id).collect(),
        keys,
    };
    if let Cmd::Keys = cli.cmd {
        return Ok(list_keys(&trust, &revoked_keys, &paths));
    }
    let host = match (&g.host, &cli.cmd) {
        (Some(h), _) => h.clone(),
        // An offline root is another machine: its own host name, not this one's.
        (None, Cmd::Install { .. }) => root_host(&paths)?,
        (None, _) => this_host()?,
    };
    if let Cmd::Verify { bundle } = &cli.cmd {
        return verify(bundle, host, &trust, &paths);
    }
    let store = Store::new(paths.state_dir());
    let mut sys = real_system(g, &paths)?;
    match cli.cmd {
        Cmd::Generations => {
            return generations(&mut applier(&mut sys, g, &paths, store, trust, host))
        }
        Cmd::Diff { from, to } => {
            return diff(
                &mut applier(&mut sys, g, &paths, store, trust, host),
                from,
                to,
            )
        }
        Cmd::Try { status: true, .. } => return trial::try_status(&mut sys, &store),
        // The watcher takes the lock only to revert: `confirm` must get it meanwhile.
        Cmd::TryWatch => return trial::watch(g, &paths, trust, host),
        _ => {}
    }
    // Read-only commands write nothing: no state directory, no lock file.
    let read_only = matches!(
        cli.cmd,
        Cmd::Plan { .. } | Cmd::Status | Cmd::Apply { dry_run: true, .. }
    );
    let _lock = if read_only {
        None
    } else {
        store
            .init(&mut sys)
            .with_context(|| format!("creating the state directory {}", store.dir().display()))?;
        match crate::lock::acquire(&store.lock_path(), Duration::from_secs(g.lock_timeout)) {
            Ok(l) => Some(l),
            Err(e @ crate::lock::LockError::Busy { .. }) => {
                log(&e.to_string());
                emit_error(&e.to_string(), Exit::Locked);
                return Ok(Exit::Locked);
            }
            Err(e) => return Err(e).context("taking the applier lock"),
        }
    };
    let mut app = applier(&mut sys, g, &paths, store, trust, host);
    on_host(&mut app, cli.cmd, g, &paths)
}

/// This host, as the global options describe it.
fn real_system(g: &Global, paths: &Paths) -> Result<RealSystem> {
    let socket = g
        .ovsdb
        .strip_prefix("unix:")
        .with_context(|| format!("--ovsdb {}: only unix:PATH sockets are supported", g.ovsdb))?;
    let mut sys = RealSystem::new(
        PathBuf::from(socket),
        Duration::from_secs(g.ovs_timeout),
        paths.host("/run/network"),
    );
    sys.ovn_nb = PathBuf::from(g.ovn_nb.strip_prefix("unix:").with_context(|| {
        format!(
            "--ovn-nb {}: only unix:PATH sockets are supported",
            g.ovn_nb
        )
    })?);
    // dnsmasq in a unit of its own, as the try watcher: a daemon started from a service (the
    // incoming unit, the try watcher) would otherwise die with that service's cgroup.
    sys.dhcp_systemd =
        g.root == std::path::Path::new("/") && paths.host("/run/systemd/system").is_dir();
    Ok(sys)
}

fn applier<'a>(
    sys: &'a mut RealSystem,
    g: &Global,
    paths: &Paths,
    store: Store,
    trust: Trust,
    host: String,
) -> Applier<'a> {
    Applier {
        sys,
        loc: Locations {
            paths: paths.clone(),
            proc_dir: g.proc.clone(),
        },
        store,
        trust,
        host,
        now: unix_now(),
        log: Box::new(log),
        nb_optional: false,
    }
}

/// Boot while the revocation list cannot be read: restore the current generation only.
fn boot_without_revocations(cli: &Cli, paths: &Paths, keys: Vec<TrustedKey>) -> Result<Exit> {
    let g = &cli.global;
    let host = match &g.host {
        Some(h) => h.clone(),
        None => this_host()?,
    };
    let mut sys = real_system(g, paths)?;
    let store = Store::new(paths.state_dir());
    let _lock = crate::lock::acquire(&store.lock_path(), Duration::from_secs(g.lock_timeout))
        .context("taking the applier lock")?;
    let trust = Trust {
        keys,
        revoked: Vec::new(),
    };
    let mut app = applier(&mut sys, g, paths, store, trust, host);
    // Nothing new is installed until the revocation list is fixed; deliveries are set aside
    // (`incoming/failed/`) so the incoming path unit does not fire again and again.
    let incoming = app.store.incoming_dir();
    for name in app.sys.list_dir(&incoming).unwrap_or_default() {
        if name.ends_with(".tgz") {
            log(&format!(
                "{name}: not installed while the revocation list cannot be read"
            ));
            crate::boot::set_aside(&mut app, &incoming.join(&name));
        }
    }
    if let Err(e) = app.recover() {
        log(&format!("WARNING: {e}"));
    }
    let current = app.store.current(app.sys).ok().flatten();
    if let Some(n) = current {
        let opts = ApplyOpts {
            scope: Scope::Full,
            cycle: false,
            allow_downgrade: false,
        };
        match app.apply_generation(n, opts) {
            Ok(_) => log(&format!(
                "restored generation {n}, installed nothing new: fix the revocation list"
            )),
            Err(e) => log(&format!("generation {n} not restored: {e}")),
        }
    }
    Ok(Exit::NotAuthentic)
}

/// The commands that work on the host, under the lock.
fn on_host(app: &mut Applier, cmd: Cmd, g: &Global, paths: &Paths) -> Result<Exit> {
    // Boot does its own recovery, and goes on when it fails; an offline root has nothing live
    // to recover.
    let plan_only = matches!(
        cmd,
        Cmd::Plan { .. }
            | Cmd::Status
            | Cmd::Apply { dry_run: true, .. }
            | Cmd::Boot { .. }
            | Cmd::Install { .. }
    );
    if !plan_only {
        match app.recover() {
            Ok(Some(msg)) => log(&msg),
            Ok(None) => {}
            Err(e) => return Ok(report(&e)),
        }
        if let Err(e) = app.settle_interrupted_try(true) {
            return Ok(report(&e));
        }
    }
    Ok(match cmd {
        Cmd::Verify { .. } | Cmd::Generations | Cmd::Diff { .. } | Cmd::Keys | Cmd::TryWatch => {
            unreachable!("handled before")
        }
        Cmd::Plan { bundle, flags }
        | Cmd::Apply {
            bundle,
            flags,
            dry_run: true,
        } => {
            // What apply would do, refusals included: a pending try refuses it.
            let bytes = read_bundle(&bundle)?;
            let planned = app
                .refuse_if_trying()
                .and_then(|()| app.plan_bundle(&bytes, opts(flags)));
            match planned {
                Ok(plan) => show_plan(&plan, g.json, None),
                Err(e) => report(&e),
            }
        }
        Cmd::Apply { bundle, flags, .. } => match app.refuse_if_trying() {
            Err(e) => report(&e),
            Ok(()) => show_outcome(
                app.apply_bundle(&read_bundle(&bundle)?, opts(flags)),
                g.json,
            ),
        },
        Cmd::Try {
            bundle,
            flags,
            timeout,
            settle,
            checks,
            no_builtin_checks,
            status: _,
        } => {
            let args = trial::TryArgs {
                bundle: bundle.context("applier try needs a BUNDLE (or --status)")?,
                flags,
                timeout,
                settle,
                checks,
                builtin_checks: !no_builtin_checks,
            };
            trial::try_bundle(app, args, g, paths)?
        }
        Cmd::Confirm => trial::confirm(app),
        Cmd::Install { bundle } => {
            match app.install_offline(&read_bundle(&bundle)?, install_time()?) {
                Ok(n) => {
                    if json() {
                        emit(
                            serde_json::json!({"result": "installed", "generation": n, "root": g.root}),
                        );
                    } else {
                        outln!(
                            "installed: generation {n} is current in {}; its first boot applies it",
                            g.root.display()
                        );
                    }
                    Exit::Ok
                }
                Err(e) => report(&e),
            }
        }
        Cmd::Status => {
            let pending = app.pending_try().ok().flatten();
            match app.status() {
                Ok((None, _)) => {
                    if json() {
                        emit(serde_json::json!({"result": "nothing-applied", "generation": null}));
                    } else {
                        outln!("no generation applied yet");
                    }
                    Exit::NothingApplied
                }
                Ok((Some(n), plan)) if json() => {
                    let mut v = plan.to_json();
                    v["generation"] = n.into();
                    v["try"] = serde_json::json!(pending);
                    emit(v);
                    if plan.is_empty() {
                        Exit::Ok
                    } else {
                        Exit::Changes
                    }
                }
                Ok((Some(n), plan)) => {
                    if let Some(t) = &pending {
                        outln!("try: {}", crate::trial::describe(t, app.now));
                    }
                    show_plan(&plan, false, Some(n))
                }
                Err(e) => report(&e),
            }
        }
        Cmd::Rollback { generation } => rollback(app, generation, g.json)?,
        Cmd::Gc { keep } => match app.gc(keep) {
            Ok(gone) => {
                if json() {
                    emit(serde_json::json!({"result": "ok", "deleted": gone}));
                } else if gone.is_empty() {
                    outln!("deleted 0 generation(s)");
                } else {
                    outln!("deleted {} generation(s): {gone:?}", gone.len());
                }
                Exit::Ok
            }
            Err(e) => report(&e),
        },
        Cmd::Boot { cycle } => crate::boot::boot(app, cycle),
    })
}

fn rollback(app: &mut Applier, to: Option<u64>, json: bool) -> Result<Exit> {
    let current = app
        .store
        .current(app.sys)
        .context("reading the current generation")?;
    let gens = app
        .store
        .generations(app.sys)
        .context("listing generations")?;
    let pending = app.pending_try().ok().flatten();
    let target = match to {
        Some(n) if gens.contains(&n) => Some(n),
        Some(n) => {
            let message =
                format!("generation {n} is not kept here; `applier generations` lists them");
            return Ok(fail(&message, Exit::Failed));
        }
        // A pending try goes back to where it began.
        None => pending
            .as_ref()
            .map(|t| t.previous)
            .or_else(|| current.and_then(|c| gens.into_iter().filter(|n| *n < c).max())),
    };
    let Some(previous) = target else {
        return Ok(fail("no earlier generation to roll back to", Exit::Failed));
    };
    let flags = ApplyFlags {
        gre_only: false,
        allow_downgrade: true,
    };
    let result = app.apply_generation(previous, opts(flags));
    if let (Ok(_), Some(t)) = (&result, &pending) {
        let why = format!("`applier rollback` to generation {previous}");
        if let Err(e) = app.end_try(t, "rolled-back", &why) {
            log(&format!("warning: the try record stays: {e}"));
        }
    }
    Ok(show_outcome(result, json))
}

fn list_keys(trust: &Trust, revoked: &[TrustedKey], paths: &Paths) -> Exit {
    let mut rows: Vec<(String, &str, String)> = Vec::new();
    for k in &trust.keys {
        let state = if trust.revoked.contains(&k.id) {
            "revoked"
        } else {
            "trusted"
        };
        rows.push((k.id.to_string(), state, k.source.clone()));
    }
    for k in revoked
        .iter()
        .filter(|r| !trust.keys.iter().any(|k| k.id == r.id))
    {
        rows.push((k.id.to_string(), "revoked", k.source.clone()));
    }
    if json() {
        let keys: Vec<_> = rows
            .iter()
            .map(|(id, state, source)| serde_json::json!({"id": id, "state": state, "source": source}))
            .collect();
        emit(serde_json::json!({"result": "ok", "keys": keys, "trusted_dir": paths.trusted_dir()}));
        return Exit::Ok;
    }
    for (id, state, source) in &rows {
        outln!("{id}  {state:<8} {source}");
    }
    if trust.keys.is_empty() {
        outln!("no trusted keys in {}", paths.trusted_dir().display());
    }
    Exit::Ok
}

fn verify(bundle: &Path, host: String, trust: &Trust, paths: &Paths) -> Result<Exit> {
    let bytes = read_bundle(bundle)?;
    let opts = VerifyOptions {
        host: Some(host),
        now: Some(unix_now()),
        revoked: trust.revoked.clone(),
        ..VerifyOptions::default()
    };
    Ok(match verify_bundle(&bytes, &trust.keys, &opts) {
        Ok(b) if json() => {
            emit(serde_json::json!({
                "result": "ok", "bundle": bundle, "host": b.manifest.host,
                "serial": b.manifest.serial, "signed_by": b.signed_by.to_string(),
                "expires": b.manifest.expires, "files": b.files.len(),
            }));
            Exit::Ok
        }
        Ok(b) => {
            outln!(
                "{}: OK: host {}, serial {}, signed by key {}, {} file(s)",
                bundle.display(),
                b.manifest.host,
                b.manifest.serial,
                b.signed_by,
                b.files.len()
            );
            Exit::Ok
        }
        Err(e) => {
            let also = match e {
                bundle::VerifyError::NoTrustedKeys => {
                    format!(" (none in {})", paths.trusted_dir().display())
                }
                _ => String::new(),
            };
            fail(
                &format!("{}: refused: {e}{also}", bundle.display()),
                e.exit(),
            )
        }
    })
}

fn opts(flags: ApplyFlags) -> ApplyOpts {
    ApplyOpts {
        scope: if flags.gre_only {
            Scope::GreOnly
        } else {
            Scope::Full
        },
        cycle: true,
        allow_downgrade: flags.allow_downgrade,
    }
}

fn report(e: &ApplyError) -> Exit {
    fail(&e.to_string(), e.exit())
}

/// A command that ends in `exit` with `message`: said on stderr, and as the JSON error document.
fn fail(message: &str, exit: Exit) -> Exit {
    log(message);
    emit_error(message, exit);
    exit
}

fn show_plan(plan: &HostPlan, json: bool, generation: Option<u64>) -> Exit {
    if json {
        let mut v = plan.to_json();
        v["generation"] = serde_json::json!(generation);
        emit(v);
    } else {
        if let Some(n) = generation {
            outln!("current generation {n}; drift:");
        }
        out!("{}", plan.render());
    }
    if plan.is_empty() {
        Exit::Ok
    } else {
        Exit::Changes
    }
}

fn show_outcome(result: Result<Outcome, ApplyError>, json: bool) -> Exit {
    match result {
        Ok(Outcome::Unchanged { generation }) => {
            if json {
                emit(
                    serde_json::json!({"result": "unchanged", "generation": generation, "changes": 0, "ovs_write_ops": 0}),
                );
            } else {
                outln!("no changes: generation {generation} is current and the host matches it");
            }
            Exit::Ok
        }
        Ok(Outcome::Applied { generation, plan }) => {
            if json {
                let mut v = plan.to_json();
                v["result"] = "applied".into();
                v["generation"] = generation.into();
                emit(v);
            } else {
                out!("{}", plan.render());
                outln!("applied: generation {generation} is current");
            }
            Exit::Ok
        }
        Err(e) => report(&e),
    }
}

fn generations(app: &mut Applier) -> Result<Exit> {
    let current = app
        .store
        .current(app.sys)
        .context("reading the current generation")?;
    let gens = app
        .store
        .generations(app.sys)
        .context("listing generations")?;
    let mut rows = Vec::new();
    let mut before: Option<crate::state::HostState> = None;
    for n in gens {
        let m = app
            .store
            .meta(app.sys, n)
            .with_context(|| format!("reading generation {n}"))?;
        // A damaged generation is listed as such, not a reason to list nothing.
        let (key, changed) = match app.generation_desired(n) {
            Ok((state, _)) => {
                let key = app
                    .generation_signer(n)
                    .map_or_else(|e| format!("? ({e})"), |k| k.to_string());
                let changed = crate::diff::summary(before.as_ref(), &state);
                before = Some(state);
                (key, changed)
            }
            Err(e) => ("?".to_string(), format!("cannot be read: {e}")),
        };
        rows.push((n, m, key, changed));
    }
    if json() {
        let list: Vec<_> = rows
            .iter()
            .map(|(n, m, key, changed)| {
                serde_json::json!({
                    "generation": n, "current": Some(*n) == current, "serial": m.serial,
                    "host": m.host, "applied_at": m.applied_at, "sha256": m.sha256,
                    "gre_only_base": m.gre_only_base, "signed_by": key, "changed": changed,
                })
            })
            .collect();
        emit(serde_json::json!({"result": "ok", "current": current, "generations": list}));
        return Ok(Exit::Ok);
    }
    if rows.is_empty() {
        outln!("no generations");
    }
    for (n, m, key, changed) in rows {
        outln!(
            "{} {:>4}  serial {:<12} key {key}  applied {}{}  {changed}",
            if Some(n) == current { "*" } else { " " },
            n,
            m.serial,
            bundle::time::format_utc(m.applied_at),
            m.gre_only_base
                .map(|b| format!("  (gre-only on {b})"))
                .unwrap_or_default()
        );
    }
    Ok(Exit::Ok)
}

/// `applier diff A [B]`: what differs between two kept generations.
fn diff(app: &mut Applier, from: u64, to: Option<u64>) -> Result<Exit> {
    let to = match to {
        Some(n) => n,
        None => match app
            .store
            .current(app.sys)
            .context("reading the current generation")?
        {
            Some(n) => n,
            None => {
                let message = "no generation is current; name both: applier diff A B";
                return Ok(fail(message, Exit::Failed));
            }
        },
    };
    let mut states = Vec::new();
    for n in [from, to] {
        match app.generation_desired(n) {
            Ok((s, _)) => states.push(s),
            Err(e) => {
                let message =
                    format!("generation {n}: {e}; `applier generations` lists the kept ones");
                return Ok(fail(&message, Exit::Failed));
            }
        }
    }
    let lines = crate::diff::diff(&states[0], &states[1]);
    if json() {
        emit(serde_json::json!({"result": "ok", "from": from, "to": to, "changes": lines}));
    } else if lines.is_empty() {
        outln!("generations {from} and {to} configure the same");
    } else {
        outln!("generation {from} -> {to}:");
        for l in &lines {
            outln!("{l}");
        }
    }
    Ok(if lines.is_empty() {
        Exit::Ok
    } else {
        Exit::Changes
    })
}

/// A bundle file, bounded and never blocking (see `harden::read_bundle_file`).
fn read_bundle(path: &Path) -> Result<Vec<u8>> {
    crate::harden::read_bundle_file(path)
        .with_context(|| format!("reading bundle {}", path.display()))
}

/// The host name of an offline root (`ROOT/etc/hostname`), as profiles spell it.
fn root_host(paths: &Paths) -> Result<String> {
    let path = paths.host("/etc/hostname");
    let name = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {}: give --host NAME, the host the root is for",
            path.display()
        )
    })?;
    match name.trim().split('.').next() {
        Some(h) if !h.is_empty() => Ok(h.to_string()),
        _ => anyhow::bail!("{} is empty: give --host NAME", path.display()),
    }
}

/// This host's name as profiles spell it: the first label of the kernel's host name.
fn this_host() -> Result<String> {
    let name = nix::unistd::gethostname().context("reading this host's name")?;
    let name = name.to_string_lossy();
    Ok(name.split('.').next().unwrap_or_default().to_string())
}

/// When `install` records its generation as applied: SOURCE_DATE_EPOCH when set (an image build,
/// reproducible), otherwise now.
fn install_time() -> Result<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v.trim().parse().with_context(|| {
            format!(
                "SOURCE_DATE_EPOCH={v:?} is not a Unix time in seconds: set it to one, or unset it"
            )
        }),
        Err(_) => Ok(unix_now()),
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
