//! Shared by the namespace tests: test hosts that run this package's applier binary.

#![allow(dead_code)]

pub use nshost::{check, text, TestHost};

/// A new test host (namespace, private OVS) whose `applier` methods run this package's binary.
pub fn host(name: &str) -> TestHost {
    TestHost::new(name, env!("CARGO_BIN_EXE_applier"))
}
