//! The applier: verifies bundles and applies them to a host, atomically.
//!
//! `plan` holds the explicit desired/current/plan types, `apply` the engine that executes a plan
//! with rollback and crash recovery, `system` the one seam through which every side effect goes,
//! `ovs`/`ovsdb` the OVSDB side, `firewall` the iptables side, `store` the generations on disk.

pub mod apply;
pub mod exit;
pub mod firewall;
pub mod lock;
pub mod ovs;
pub mod ovsdb;
pub mod paths;
pub mod plan;
pub mod store;
pub mod system;
pub mod trust;
