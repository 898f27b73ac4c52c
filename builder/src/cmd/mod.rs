//! The subcommands, one module each: what `builder <command>` does once its arguments are parsed.
//! `main.rs` only parses and dispatches, so every command can also be called (and tested) as a
//! library function. Each returns the [`Exit`] it ends with; an `Err` is a failure that `main`
//! prints and exits [`Exit::Failed`] for, or [`Exit::Usage`] if it is a [`UsageError`].
//!
//! Errors get `.with_context()` naming what was being done and to which file, unless the error
//! already says so itself (the key and bundle errors of [`crate::sign`] and [`crate::cloudinit`]
//! name their file and what to do): wrapping those would only repeat the path, and would change
//! messages operators and scripts already match on.

pub mod build;
pub mod check;
pub mod cloud_init;
pub mod image;
pub mod import;
pub mod inspect;
mod key;
pub mod keygen;
pub mod ovn_ca;

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

/// `hosts` with their OVN IPsec credentials (see [`crate::fleet::ovn::with_credentials`]),
/// saying on stderr which keys were made.
fn ovn_credentials(hosts: &[&crate::model::Host]) -> Result<Vec<crate::model::Host>> {
    let (hosts, made) = crate::fleet::ovn::with_credentials(hosts)
        .map_err(|e| anyhow::anyhow!("OVN IPsec PKI: {e}\n  hint: {}", e.hint()))?;
    for m in &made {
        eprintln!("builder: {m}");
    }
    Ok(hosts)
}

fn report(diags: &[Diagnostic]) -> Exit {
    for d in diags {
        eprintln!("{d}");
    }
    eprintln!("builder: {} error(s); nothing was built", diags.len());
    Exit::Failed
}

/// A command line that cannot mean what it says: `main` prints it and exits [`Exit::Usage`] (64),
/// like clap's own usage errors. The message names the option and says what to write instead.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// How far ahead of the current Unix time (the default serial) `--serial` may be without
/// `--allow-far-serial`: ten years.
pub const FAR_SERIAL_SECS: u64 = 10 * 365 * 86_400 + 2 * 86_400;

/// Serial and expiry of a build from the command line: the serial defaults to now, so later
/// builds supersede earlier ones without anyone counting.
///
/// Refused ([`UsageError`]): an expiry of zero (the bundle would be expired when built), one
/// that does not fit in a Unix time (it would wrap into the past), and a serial more than
/// [`FAR_SERIAL_SECS`] ahead of now unless `allow_far_serial`: once a host has applied it, every
/// bundle built later with the default serial is a downgrade there.
pub fn build_params(
    serial: Option<u64>,
    allow_far_serial: bool,
    expires_in: Option<&str>,
) -> Result<BuildParams, UsageError> {
    params_at(unix_now(), serial, allow_far_serial, expires_in)
}

fn params_at(
    now: u64,
    serial: Option<u64>,
    allow_far_serial: bool,
    expires_in: Option<&str>,
) -> Result<BuildParams, UsageError> {
    let expires = match expires_in {
        None => None,
        Some(d) => {
            // parse_duration's message already quotes the value and says what to write.
            let secs = parse_duration(d).map_err(|e| UsageError(format!("--expires-in {e}")))?;
            if secs == 0 {
                return Err(UsageError(format!(
                    "--expires-in {d:?} would make a bundle that is expired when it is built, \
                     which no host installs; give a positive duration such as 30d"
                )));
            }
            Some(now.checked_add(secs).ok_or_else(|| {
                UsageError(format!(
                    "--expires-in {d:?} ends past the largest Unix time (it would wrap into the \
                     past); give a shorter duration such as 365d"
                ))
            })?)
        }
    };
    let serial = serial.unwrap_or(now);
    if serial > now.saturating_add(FAR_SERIAL_SECS) && !allow_far_serial {
        return Err(UsageError(format!(
            "--serial {serial} is more than 10 years ahead of the default serial (the current \
             Unix time, {now}): once a host applies it, it refuses every bundle built later with \
             the default serial as a downgrade. Use a smaller serial, or pass --allow-far-serial \
             if the whole fleet is to stay on explicit serials above it"
        )));
    }
    Ok(BuildParams { serial, expires })
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_750_000_000;

    #[test]
    fn serial_defaults_to_now_and_expiry_is_relative_to_it() {
        let p = params_at(NOW, None, false, Some("1d")).unwrap();
        assert_eq!(p.serial, NOW);
        assert_eq!(p.expires, Some(NOW + 86_400));
        assert_eq!(params_at(NOW, Some(7), false, None).unwrap().expires, None);
    }

    #[test]
    fn zero_and_wrapping_expiries_are_refused() {
        for d in ["0s", "0d", "0h"] {
            let e = params_at(NOW, None, false, Some(d)).unwrap_err().0;
            assert!(e.contains("expired when it is built"), "{d}: {e}");
        }
        let e = params_at(NOW, None, false, Some("18446744073709551615s"))
            .unwrap_err()
            .0;
        assert!(e.contains("wrap into the past"), "{e}");
        // The largest that fits is still accepted: it does not wrap.
        let fits = format!("{}s", u64::MAX - NOW);
        assert_eq!(
            params_at(NOW, None, false, Some(&fits)).unwrap().expires,
            Some(u64::MAX)
        );
        // Weeks and compound durations are durations; a bare number is not.
        assert_eq!(
            params_at(NOW, None, false, Some("1w")).unwrap().expires,
            Some(NOW + 7 * 86_400)
        );
        let e = params_at(NOW, None, false, Some("0")).unwrap_err().0;
        assert!(e.contains("has no unit"), "{e}");
    }

    #[test]
    fn far_serials_need_the_force_flag() {
        let limit = NOW + FAR_SERIAL_SECS;
        assert_eq!(
            params_at(NOW, Some(limit), false, None).unwrap().serial,
            limit
        );
        for far in [limit + 1, u64::MAX] {
            let e = params_at(NOW, Some(far), false, None).unwrap_err().0;
            assert!(e.contains("--allow-far-serial"), "{e}");
            assert_eq!(params_at(NOW, Some(far), true, None).unwrap().serial, far);
        }
    }
}
