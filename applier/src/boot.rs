//! Boot-time policy: install bundles delivered to the incoming directory, otherwise restore the
//! current generation (iptables rules do not survive a reboot; OVSDB and files do).

use crate::engine::{Applier, ApplyOpts, Outcome};
use crate::ovs::Scope;
use bundle::Exit;
use std::path::PathBuf;

/// What a boot run did, for the log and the exit code.
pub fn boot(app: &mut Applier, cycle: bool) -> Exit {
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
    let opts = ApplyOpts {
        scope: Scope::Full,
        cycle,
        allow_downgrade: false,
    };
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
    match app.store.current(app.sys) {
        Ok(Some(n)) => match app.apply_generation(n, opts) {
            Ok(Outcome::Unchanged { .. } | Outcome::Applied { .. }) => {
                (app.log)(&format!("restored generation {n}"));
                code
            }
            Err(e) => {
                (app.log)(&e.to_string());
                e.exit()
            }
        },
        Ok(None) => {
            (app.log)("no generation to restore and no bundle in the incoming directory");
            code
        }
        Err(e) => {
            (app.log)(&e.to_string());
            Exit::Failed
        }
    }
}

/// Moves a refused delivery to `incoming/failed/`, so it is not retried at every boot.
fn set_aside(app: &mut Applier, path: &std::path::Path) {
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
