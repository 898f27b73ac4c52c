//! The builder: compiles per-host TOML profiles into signed, reproducible bundles.
//!
//! Everything here is pure except reading the inputs (profiles, the files they name, the signing
//! key) and `build::write_bundle`. The builder never links the code that changes a host.

pub mod build;
pub mod cloudinit;
pub mod diag;
pub mod fleet;
pub mod inspect;
pub mod model;
pub mod net;
pub mod profile;
pub mod render;
pub mod sign;
