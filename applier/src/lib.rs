//! The applier: verifies bundles and applies them to a host, atomically.
//!
//! `state` holds what this tool owns on a host as one value, `plan` the plan between two states,
//! `engine` the engine (apply, rollback, crash recovery), `executor` what runs a plan on the host,
//! `system` the one typed seam through which every side effect goes, `ovs`/`ovsdb` the OVSDB side,
//! `store` the generations on disk, `boot` the boot-time policy and `cmd` the commands.

pub mod boot;
pub mod cli;
pub mod cmd;
#[cfg(test)]
mod dhcp_tests;
pub mod diff;
pub mod engine;
pub mod error;
pub mod executor;
pub mod harden;
pub mod install;
#[cfg(test)]
mod ipv6_tests;
pub mod journal;
pub mod lock;
pub mod nb;
#[cfg(test)]
mod ovn_ipsec_tests;
#[cfg(test)]
pub(crate) mod ovn_tests;
pub mod ovs;
pub mod ovsdb;
pub mod paths;
pub mod plan;
pub mod routes;
pub mod state;
pub mod store;
pub mod system;
pub mod trial;
pub mod trust;
