//! The applier: verifies bundles and applies them to a host.
//!
//! `trust` loads the keys a host accepts; `verify` wraps the shared format's verification with
//! the host's view (its name, the time, its trusted keys).

pub mod exit;
pub mod paths;
pub mod trust;
