//! The builder: compiles per-host TOML profiles into signed, reproducible bundles.
//!
//! Everything here is pure except reading the inputs (profiles, the files they name, the signing
//! key, an import's EDN map), `build::write_bundle`, `import::write`, and the command layer in [`cmd`], which is what the `builder`
//! binary runs. The builder never links the code that changes a host.
//!
//! Layers, each using only those listed before it: [`diag`], [`shape`], [`net`], [`model`] and
//! [`psk`] (values and rules); [`fleet`] (cross-host checks on valid hosts) and [`profile`] (TOML to a
//! validated fleet, using `fleet`); [`import`] (profiles from the original tool's EDN map);
//! [`render`], [`sign`], [`build`], [`inspect`], [`cloudinit`] (bundles); [`cmd`] (the
//! subcommands) and [`cli`] (their command line).

pub mod build;
pub mod cli;
pub mod cloudinit;
pub mod cmd;
pub mod diag;
pub mod fleet;
pub mod harden;
pub mod import;
pub mod inspect;
pub mod model;
pub mod net;
pub mod ovn_pki;
pub mod profile;
pub mod psk;
pub mod render;
pub mod shape;
pub mod sign;
