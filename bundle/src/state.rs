//! The desired state of the OVS rows this tool owns, as carried in `ovs.json`.
//!
//! Only rows listed here are ever created, changed or deleted by the applier; every row it writes
//! carries [`OWNER_KEY`] in `external_ids`, so rows made by hand or by other tools are never touched.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `external_ids` key marking a row as owned by ovs-bundle; its value is the host name.
pub const OWNER_KEY: &str = "ovs-bundle-owner";
/// The `external_ids` key by which ovn-controller binds an interface to its logical port.
pub const IFACE_ID_KEY: &str = "iface-id";

/// Whether an `external_ids` key of a bridge, port or interface row is one ovs-bundle writes:
/// its own (`ovs-bundle-*`) and `iface-id`. Others' keys on our rows (ovn-controller's
/// `ct-zone-*` on `br-int`, `ovn-installed` on a bound interface) are left as they are.
pub fn is_our_key(key: &str) -> bool {
    key.starts_with("ovs-bundle") || key == IFACE_ID_KEY
}

/// The keys of `ids` that ovs-bundle writes ([`is_our_key`]).
pub fn our_keys(ids: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    ids.iter()
        .filter(|(k, _)| is_our_key(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Whether the keys of `ids` that ovs-bundle writes are exactly `want`: [`our_keys`] compared,
/// without building it (a no-op compares two maps per port).
pub fn our_keys_are(ids: &BTreeMap<String, String>, want: &BTreeMap<String, String>) -> bool {
    ids.iter().filter(|(k, _)| is_our_key(k)).eq(want.iter())
}

/// `ours` with every key of `live` that is not ovs-bundle's: what a row's `external_ids` become
/// when ovs-bundle writes `ours` to it.
pub fn merged_ids(
    ours: &BTreeMap<String, String>,
    live: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = live
        .iter()
        .filter(|(k, _)| !is_our_key(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    out.extend(ours.clone());
    out
}

/// The OVS interface option that carries an IPsec pre-shared key.
pub const PSK_OPTION: &str = "psk";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct OvsState {
    pub bridges: Vec<Bridge>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bridge {
    pub name: String,
    /// OVS `datapath_type`: `system` (kernel) or `netdev` (userspace).
    pub datapath_type: String,
    /// Whether RSTP is enabled on the bridge.
    #[serde(default)]
    pub rstp: bool,
    pub external_ids: BTreeMap<String, String>,
    pub ports: Vec<Port>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum PortRole {
    /// An OVS internal port that appears on the host as a network device.
    Internal,
    /// An existing device attached to the bridge.
    Physical,
    /// A tunnel to a peer host: GRE, VXLAN or Geneve (the interface's `type`; see
    /// `crate::tunnel`). Serialized as `gre`, its first and default type.
    Gre,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Port {
    pub name: String,
    pub role: PortRole,
    /// OVS Port `protected`: no forwarding between two protected ports (split horizon).
    #[serde(default)]
    pub protected: bool,
    pub external_ids: BTreeMap<String, String>,
    pub interface: Interface,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interface {
    /// OVS interface `type`: `internal`, `gre` or empty for a system device.
    #[serde(rename = "type")]
    pub kind: String,
    pub options: BTreeMap<String, String>,
}

impl OvsState {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).expect("state serializes");
        out.push(b'\n');
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The same state with every PSK replaced by its fingerprint, for display.
    pub fn redacted(&self) -> Self {
        let mut copy = self.clone();
        for port in copy.bridges.iter_mut().flat_map(|b| b.ports.iter_mut()) {
            if let Some(psk) = port.interface.options.get_mut(PSK_OPTION) {
                *psk = redact(psk);
            }
        }
        copy
    }

    /// Each bridge with its GRE ports only: the part of the state `--gre-only` reconciles.
    pub fn gre_only(&self) -> OvsState {
        self.filter_ports(|p| p.role == PortRole::Gre)
    }

    /// Everything but the GRE ports: what two states must share for `--gre-only` to suffice.
    pub fn without_gre(&self) -> OvsState {
        self.filter_ports(|p| p.role != PortRole::Gre)
    }

    /// This state with, on each bridge that `gre` also has, `gre`'s GRE ports instead of its own:
    /// a `--gre-only` apply of `gre` on top of `self`.
    pub fn with_gre_of(&self, gre: &OvsState) -> OvsState {
        let mut out = self.clone();
        for b in out.bridges.iter_mut() {
            if let Some(g) = gre.bridges.iter().find(|g| g.name == b.name) {
                b.ports.retain(|p| p.role != PortRole::Gre);
                b.ports
                    .extend(g.ports.iter().filter(|p| p.role == PortRole::Gre).cloned());
            }
        }
        out
    }

    fn filter_ports(&self, keep: impl Fn(&Port) -> bool) -> OvsState {
        let mut out = self.clone();
        for b in out.bridges.iter_mut() {
            b.ports.retain(&keep);
        }
        out
    }

    pub fn ports(&self) -> impl Iterator<Item = (&Bridge, &Port)> {
        self.bridges
            .iter()
            .flat_map(|b| b.ports.iter().map(move |p| (b, p)))
    }
}

/// How a secret is shown to people: never the value, only a short fingerprint, so that two ends
/// holding different keys are still visibly different.
pub fn redact(secret: &str) -> String {
    format!(
        "<redacted sha256:{}>",
        &crate::sha256_hex(secret.as_bytes())[..8]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_keys_are_compares_as_our_keys_does() {
        let m = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let live = m(&[
            ("a-foreign-key", "x"),
            (OWNER_KEY, "h1"),
            (IFACE_ID_KEY, "p1"),
            ("zz", "y"),
        ]);
        for want in [
            m(&[(OWNER_KEY, "h1"), (IFACE_ID_KEY, "p1")]),
            m(&[(OWNER_KEY, "h1")]),
            m(&[(OWNER_KEY, "h2"), (IFACE_ID_KEY, "p1")]),
            m(&[(OWNER_KEY, "h1"), (IFACE_ID_KEY, "p1"), ("zz", "y")]),
            m(&[]),
        ] {
            assert_eq!(
                our_keys_are(&live, &want),
                our_keys(&live) == want,
                "{want:?}"
            );
        }
        assert!(our_keys_are(
            &live,
            &m(&[(OWNER_KEY, "h1"), (IFACE_ID_KEY, "p1")])
        ));
    }
}
