//! The change model: what may be touched ([`Scope`]), one change to OVS rows ([`OvsChange`]) and
//! why a plan cannot be made ([`PlanError`]). Changes are typed values: the planner makes them, the
//! system seam turns them into an OVSDB transaction (or, in tests, into changes of a fake).

use bundle::state::{redact, Bridge, Port, OWNER_KEY, PSK_OPTION};
use std::collections::BTreeMap;

/// `Open_vSwitch` `other_config` key that makes ovs-monitor-ipsec drop tunnel packets no IPsec
/// policy covers (Open vSwitch's IPsec how-to).
pub const SKB_MARK: &str = "ipsec_skb_mark";
/// `Open_vSwitch` `external_ids` key saying [`SKB_MARK`] was set by ovs-bundle.
pub const SKB_MARK_OWNER: &str = "ovs-bundle-ipsec-skb-mark";

/// Which rows a plan may touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every owned bridge, port and interface.
    Full,
    /// Only GRE ports of the desired bridges (the original tool's "recreate all GRE connections").
    GreOnly,
}

/// One change to OVS rows.
#[derive(Debug, Clone, PartialEq)]
pub enum OvsChange {
    AddBridge {
        bridge: Bridge,
    },
    UpdateBridge {
        name: String,
        uuid: String,
        datapath_type: Option<(String, String)>,
        rstp: Option<(bool, bool)>,
        external_ids: Option<BTreeMap<String, String>>,
    },
    DeleteBridge {
        name: String,
        uuid: String,
    },
    AddPort {
        bridge: String,
        port: Port,
    },
    UpdatePort {
        bridge: String,
        port: Port,
        port_uuid: String,
        iface_uuid: String,
        /// What differs, for display: (field, old, new), secrets redacted.
        what: Vec<(String, String, String)>,
    },
    /// `Open_vSwitch` `other_config:ipsec_skb_mark`, set (and marked ours) or removed.
    SkbMark {
        from: Option<String>,
        to: Option<String>,
    },
    DeletePort {
        bridge: String,
        bridge_uuid: String,
        name: String,
        uuid: String,
    },
    /// OVN keys of the `Open_vSwitch` row, one [`OvnKeys`] set: `from` those ovs-bundle set
    /// (with their values now), `to` those it sets; the set's mark follows `to`'s keys.
    OvnKeys {
        set: OvnKeys,
        from: BTreeMap<String, String>,
        to: BTreeMap<String, String>,
        /// Values someone else had set before ovs-bundle took the key over, put back (not
        /// marked ours) when a rollback gives the key up again.
        restore: BTreeMap<String, String>,
    },
}

/// The keys of the `Open_vSwitch` row ovs-bundle sets for OVN, each set in its column, with a
/// mark in `external_ids` listing the keys that are ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OvnKeys {
    /// `external_ids` ovn-controller reads (`bundle::ovn::CHASSIS_KEYS`).
    Chassis,
    /// `other_config` naming the IPsec files ovs-monitor-ipsec reads (`bundle::ovn::IPSEC_FILES`).
    Ipsec,
}

impl OvnKeys {
    pub fn column(self) -> &'static str {
        match self {
            OvnKeys::Chassis => "external_ids",
            OvnKeys::Ipsec => "other_config",
        }
    }

    /// The `external_ids` key listing the keys ours.
    pub fn owner(self) -> &'static str {
        match self {
            OvnKeys::Chassis => bundle::ovn::CHASSIS_OWNER,
            OvnKeys::Ipsec => bundle::ovn::IPSEC_OWNER,
        }
    }

    /// Every key of the set: a mark edited by hand cannot name another.
    pub fn known(self) -> Vec<&'static str> {
        match self {
            OvnKeys::Chassis => bundle::ovn::CHASSIS_KEYS.to_vec(),
            OvnKeys::Ipsec => bundle::ovn::IPSEC_FILES.iter().map(|(k, _)| *k).collect(),
        }
    }

    fn label(self) -> &'static str {
        match self {
            OvnKeys::Chassis => "OVN chassis",
            OvnKeys::Ipsec => "OVN IPsec",
        }
    }
}

impl OvsChange {
    /// One line for people; PSKs appear only as fingerprints.
    pub fn describe(&self) -> String {
        match self {
            OvsChange::AddBridge { bridge } => format!(
                "+ bridge {} (datapath {}{})",
                bridge.name,
                bridge.datapath_type,
                if bridge.rstp { ", rstp" } else { "" }
            ),
            OvsChange::UpdateBridge {
                name,
                datapath_type,
                rstp,
                external_ids,
                ..
            } => {
                let mut parts = Vec::new();
                if let Some((a, b)) = datapath_type {
                    parts.push(format!("datapath {a} -> {b}"));
                }
                if let Some((a, b)) = rstp {
                    parts.push(format!("rstp {a} -> {b}"));
                }
                if external_ids.is_some() {
                    parts.push("external_ids".into());
                }
                format!("~ bridge {name}: {}", parts.join(", "))
            }
            OvsChange::DeleteBridge { name, .. } => format!("- bridge {name} (and its ports)"),
            OvsChange::AddPort { bridge, port } => {
                format!("+ port {bridge}/{} {}", port.name, port_summary(port))
            }
            OvsChange::UpdatePort {
                bridge, port, what, ..
            } => format!(
                "~ port {bridge}/{}: {}",
                port.name,
                what.iter()
                    .map(|(f, a, b)| format!("{f} {a} -> {b}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            OvsChange::DeletePort { bridge, name, .. } => format!("- port {bridge}/{name}"),
            OvsChange::OvnKeys {
                set,
                from,
                to,
                restore,
            } => {
                let mut parts = Vec::new();
                for (k, v) in to {
                    match from.get(k) {
                        Some(old) if old == v => {}
                        Some(old) => parts.push(format!("{k} {old} -> {v}")),
                        None => parts.push(format!("+{k}={v}")),
                    }
                }
                for k in from.keys().filter(|k| !to.contains_key(*k)) {
                    match restore.get(k) {
                        Some(v) => parts.push(format!("{k} back to {v} (not ours)")),
                        None => parts.push(format!("-{k}")),
                    }
                }
                if parts.is_empty() {
                    parts.push("mark as ovs-bundle's".into());
                }
                format!(
                    "~ Open_vSwitch {} ({}): {}",
                    set.column(),
                    set.label(),
                    parts.join(", ")
                )
            }
            OvsChange::SkbMark { from, to } => format!(
                "~ Open_vSwitch other_config:ipsec_skb_mark {} -> {}",
                from.as_deref().unwrap_or("(none)"),
                to.as_deref().unwrap_or("(none)")
            ),
        }
    }
}

pub(crate) fn show_value(key: &str, value: &str) -> String {
    if key == PSK_OPTION {
        redact(value)
    } else {
        value.to_string()
    }
}

fn port_summary(port: &Port) -> String {
    let mut s = if port.interface.kind.is_empty() {
        "system".to_string()
    } else {
        port.interface.kind.clone()
    };
    for (k, v) in &port.interface.options {
        s.push_str(&format!(" {k}={}", show_value(k, v)));
    }
    if port.protected {
        s.push_str(" protected");
    }
    s
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("bridge {0} exists but is not managed by ovs-bundle (no external_ids:{OWNER_KEY}); remove it, or rename the bridge in the profile")]
    ForeignBridge(String),
    #[error("port {0} exists but is not managed by ovs-bundle (no external_ids:{OWNER_KEY}); remove it (ovs-vsctl del-port {0}) or rename it in the profile")]
    ForeignPort(String),
    #[error("other_config:ipsec_skb_mark is {0:?}, set by someone else; ovs-bundle would set it to {1:?} for its IPsec tunnels: remove it (ovs-vsctl remove Open_vSwitch . other_config ipsec_skb_mark) or set it to that value")]
    ForeignSkbMark(String, String),
    #[error("Open_vSwitch external_ids:{0} is {1:?}, set by someone else; this host's bundle sets it to {2:?} for OVN: remove it (ovs-vsctl remove Open_vSwitch . external_ids {0}) or, for system-id, set system_id in fleet.toml's [[ovn.chassis]] to that value")]
    ForeignOvnKey(String, String, String),
    #[error("Open_vSwitch other_config:{0} is {1:?}, set by someone else; this host's bundle sets it to {2:?} for OVN IPsec: remove it (ovs-vsctl remove Open_vSwitch . other_config {0}) if the host's IPsec certificates are to be ovs-bundle's")]
    ForeignOvnIpsecKey(String, String, String),
    #[error("logical switch {0} exists in the OVN northbound database but is not managed by ovs-bundle (no external_ids:{OWNER_KEY}); remove it (ovn-nbctl ls-del {0}) or rename the switch in fleet.toml")]
    ForeignLogicalSwitch(String),
    #[error("logical switch port {0} exists in the OVN northbound database but is not managed by ovs-bundle (no external_ids:{OWNER_KEY}); remove it (ovn-nbctl lsp-del {0})")]
    ForeignLogicalPort(String),
    #[error("this host's bundle carries OVN northbound state (it is the fleet's OVN central) but there is no northbound database: start ovn-central (ovsdb-server with OVN_Northbound), or pass its socket with --ovn-nb unix:PATH")]
    NoNorthbound,
    #[error("--gre-only: bridge {0} is not on this host yet; run a full apply first")]
    MissingBridge(String),
}
