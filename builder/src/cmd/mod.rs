//! The subcommands, one module each: what `builder <command>` does once its arguments are parsed.
//! `main.rs` only parses and dispatches, so every command can also be called (and tested) as a
//! library function. Each returns the [`Exit`] it ends with; an `Err` is a failure that `main`
//! prints and exits [`Exit::Failed`] for.
//!
//! Errors get `.with_context()` naming what was being done and to which file, unless the error
//! already says so itself (the key and bundle errors of [`crate::sign`] and [`crate::cloudinit`]
//! name their file and what to do): wrapping those would only repeat the path, and would change
//! messages operators and scripts already match on.

pub mod build;
pub mod check;
pub mod cloud_init;
pub mod inspect;
mod key;
pub mod keygen;

use crate::build::{parse_duration, BuildParams};
use crate::diag::Diagnostic;
use crate::model::Fleet;
use crate::profile::load_fleet;
use anyhow::Result;
use bundle::Exit;
use std::path::Path;

/// The fleet under `dir`, or every problem in it printed to stderr and [`Exit::Failed`]: invalid
/// profiles are an outcome to report, not an error to wrap.
fn load_or_report(dir: &Path) -> Result<Fleet, Exit> {
    load_fleet(dir).map_err(|diags| report(&diags))
}

fn report(diags: &[Diagnostic]) -> Exit {
    for d in diags {
        eprintln!("{d}");
    }
    eprintln!("builder: {} error(s); nothing was built", diags.len());
    Exit::Failed
}

/// Serial and expiry of a build from the command line: the serial defaults to now, so later
/// builds supersede earlier ones without anyone counting.
fn build_params(serial: Option<u64>, expires_in: Option<&str>) -> Result<BuildParams> {
    let now = unix_now();
    Ok(BuildParams {
        serial: serial.unwrap_or(now),
        expires: match expires_in {
            // parse_duration's message already quotes the value and says what to write.
            Some(d) => Some(now + parse_duration(d).map_err(anyhow::Error::msg)?),
            None => None,
        },
    })
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
