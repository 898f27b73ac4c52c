//! Boot-time policy: install bundles delivered to the incoming directory, otherwise restore the
//! current generation (iptables rules do not survive a reboot; OVSDB and files do).

use crate::engine::{Applier, ApplyOpts};
use crate::ovs::Scope;
use bundle::Exit;
use std::path::PathBuf;

/// What a boot run did, for the log and the exit code.
pub fn boot(app: &mut Applier, cycle: bool) -> Exit {
    // The OVN northbound database starts after the network (after us) and keeps its rows.
    app.nb_optional = true;
    // An interrupted apply is undone first. If that fails (a damaged marker, or the way back
    // fails), boot goes on: restoring a generation below puts the host on a known state anyway.
    let mut stale = None;
    match app.recover() {
        Ok(Some(msg)) => (app.log)(&msg),
        Ok(None) => {}
        Err(e) => {
            (app.log)(&format!("WARNING: {e}; restoring a generation instead"));
            // Kept, if it can be read: the generation it created and the serial it raised
            // must not outlive it once the host is on a known generation again.
            stale = Some(app.store.marker(app.sys).ok().flatten());
        }
    }
    let opts = ApplyOpts {
        scope: Scope::Full,
        cycle,
        allow_downgrade: false,
    };
    let restored = match unconfirmed_try(app, opts) {
        TryAtBoot::Pending => return Exit::Ok,
        TryAtBoot::Reverted => true,
        TryAtBoot::None => false,
    };
    let code = deliver_and_restore(app, opts, restored);
    if let (Some(marker), Exit::Ok) = (stale, code) {
        app.forget_stale(marker.as_ref());
    }
    code
}

enum TryAtBoot {
    None,
    /// A try from an earlier boot was reverted: its previous generation is restored.
    Reverted,
    /// A try of this boot is running (the incoming path unit runs `boot` too): its watcher
    /// decides, and deliveries wait.
    Pending,
}

/// A try found at boot that was started before this boot was never confirmed: the host goes
/// back to the generation before it, as the watcher would have.
fn unconfirmed_try(app: &mut Applier, opts: ApplyOpts) -> TryAtBoot {
    if let Err(e) = app.settle_interrupted_try(opts.cycle) {
        (app.log)(&format!("WARNING: {e}"));
    }
    let t = match app.pending_try() {
        Ok(Some(t)) => t,
        Ok(None) => return TryAtBoot::None,
        Err(e) => {
            (app.log)(&format!("WARNING: cannot read the pending try: {e}"));
            return TryAtBoot::None;
        }
    };
    if !t.boot_id.is_empty() && t.boot_id == crate::trial::boot_id(app) {
        (app.log)(&format!(
            "{}; deliveries in incoming/ wait until it is confirmed or reverted",
            crate::trial::describe(&t, app.now)
        ));
        return TryAtBoot::Pending;
    }
    let reverted = app.revert_try_with(
        &t,
        "the host restarted before the try was confirmed",
        ApplyOpts {
            allow_downgrade: true,
            ..opts
        },
    );
    match reverted {
        Ok(_) => TryAtBoot::Reverted,
        Err(e) => {
            (app.log)(&format!(
                "ERROR: reverting the unconfirmed try failed: {e}; restoring the current \
                 generation instead. Run `applier rollback` once the cause is fixed"
            ));
            TryAtBoot::None
        }
    }
}

fn deliver_and_restore(app: &mut Applier, opts: ApplyOpts, restored: bool) -> Exit {
    let incoming = app.store.incoming_dir();
    let names = match app.sys.list_dir(&incoming) {
        Ok(n) => n,
        Err(e) => {
            (app.log)(&format!("cannot read the incoming directory: {e}"));
            Vec::new()
        }
    };
    let bundles: Vec<PathBuf> = names
        .iter()
        .filter(|n| n.ends_with(".tgz"))
        .map(|n| incoming.join(n))
        .collect();
    let mut installed = false;
    let mut code = Exit::Ok;
    for path in bundles {
        let result = app
            .sys
            .read_file(&path)
            .map_err(|e| e.to_string())
            .and_then(|bytes| bytes.ok_or_else(|| format!("{}: gone", path.display())))
            .and_then(|bytes| {
                app.apply_bundle(&bytes, opts).map_err(|e| {
                    code = e.exit();
                    e.to_string()
                })
            });
        match result {
            Ok(outcome) => {
                (app.log)(&format!(
                    "{}: installed as generation {}",
                    path.display(),
                    outcome.generation()
                ));
                let _ = app.sys.remove_file(&path);
                installed = true;
            }
            Err(e) => {
                (app.log)(&format!(
                    "{}: not installed, keeping the current generation: {e}",
                    path.display()
                ));
                set_aside(app, &path);
            }
        }
    }
    if installed {
        return Exit::Ok;
    }
    if restored {
        return code;
    }
    restore(app, opts, code)
}

/// Brings up the newest generation that verifies: the current one if it can, otherwise (a
/// damaged `current`, generation or key) the next older one, saying loudly what it skipped. A
/// host whose state directory is damaged still gets its OVS rows and iptables rules back.
fn restore(app: &mut Applier, opts: ApplyOpts, code: Exit) -> Exit {
    let current = match app.store.current(app.sys) {
        Ok(c) => c,
        Err(e) => {
            (app.log)(&format!(
                "WARNING: {e}; looking for the newest generation that verifies"
            ));
            None
        }
    };
    let mut candidates: Vec<u64> = match app.store.generations(app.sys) {
        Ok(g) => g.into_iter().rev().collect(),
        Err(e) => {
            (app.log)(&format!("WARNING: cannot list generations: {e}"));
            Vec::new()
        }
    };
    if let Some(c) = current {
        candidates.retain(|n| *n != c);
        candidates.insert(0, c);
    }
    if candidates.is_empty() {
        (app.log)("no generation to restore and no bundle in the incoming directory");
        return code;
    }
    let mut skipped = Vec::new();
    for n in candidates {
        // Only a damaged generation (unreadable, altered, unverifiable) is passed over. A
        // generation that is sound but fails to apply (OVS slow, the xtables lock busy) stays
        // current: falling back would make an old generation, with old PSKs, stick.
        if let Err(e) = app.generation_desired(n) {
            (app.log)(&format!("WARNING: generation {n} is damaged: {e}"));
            skipped.push(format!("generation {n} is damaged ({e})"));
            continue;
        }
        return match app.apply_generation(n, opts) {
            Ok(_) if skipped.is_empty() => {
                (app.log)(&format!("restored generation {n}"));
                code
            }
            Ok(_) => {
                (app.log)(&format!(
                    "WARNING: restored generation {n} instead: {}. Deliver a new bundle or run \
                     `applier rollback`/`apply` once the cause is fixed",
                    skipped.join("; ")
                ));
                Exit::Failed
            }
            Err(e) => {
                (app.log)(&format!("generation {n} not restored: {e}"));
                e.exit()
            }
        };
    }
    (app.log)(
        "ERROR: no generation could be restored; the host runs without ovs-bundle's configuration",
    );
    Exit::Failed
}

/// Moves a refused delivery to `incoming/failed/`, so it is not retried at every boot.
pub(crate) fn set_aside(app: &mut Applier, path: &std::path::Path) {
    let failed = app.store.incoming_dir().join("failed");
    let Some(name) = path.file_name() else { return };
    let moved = app
        .sys
        .create_dir(&failed, 0o700)
        .and_then(|()| app.sys.rename(path, &failed.join(name)));
    if let Err(e) = moved {
        (app.log)(&format!("could not set {} aside: {e}", path.display()));
    }
}
