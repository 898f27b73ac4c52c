//! Pre-shared keys for IPsec GRE tunnels, as a type that cannot leak by accident.
//!
//! The builder reads PSKs from profiles and writes them into `ovs.json`; everything that shows a
//! key to a person (logs, `inspect`, plans, errors) must show its fingerprint instead. Keeping the
//! value behind [`Psk::expose`] makes every place that needs the secret itself easy to find.

use std::fmt;

/// A pre-shared key. Its `Debug` and `Display` show only [`Psk::fingerprint`], never the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Psk(String);

impl Psk {
    /// Wraps a key. Deciding whether a value is usable as a PSK is the caller's job (the builder
    /// checks length and characters against its profile rules).
    pub fn new(value: String) -> Self {
        Psk(value)
    }

    /// The key itself, for the one place that needs it: the OVS option that carries it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What people see instead of the key: the same text as [`crate::state::redact`], so a key
    /// shown by the builder matches the same key shown by the applier.
    pub fn fingerprint(&self) -> String {
        crate::state::redact(&self.0)
    }
}

impl fmt::Debug for Psk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.fingerprint())
    }
}

impl fmt::Display for Psk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.fingerprint())
    }
}

#[cfg(test)]
mod tests {
    use super::Psk;

    #[test]
    fn the_value_never_shows() {
        let psk = Psk::new("EXAMPLE-ONLY-secret-0123456789".into());
        for shown in [
            format!("{psk}"),
            format!("{psk:?}"),
            format!("{:?}", Some(&psk)),
        ] {
            assert!(!shown.contains("EXAMPLE"), "{shown}");
            assert!(shown.starts_with("<redacted sha256:") || shown.starts_with("Some(<"));
        }
        assert_eq!(psk.fingerprint(), crate::state::redact(psk.expose()));
    }
}
