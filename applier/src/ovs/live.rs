//! The OVS rows this tool reads (`Open_vSwitch`, `Bridge`, `Port`, `Interface`), as they are now:
//! [`Live`] is one database read, with the UUIDs a transaction refers to and the raw rows its
//! guards compare against.

use crate::ovsdb::value::{string_map, uuid, uuid_set};
use bundle::state::{Bridge, Interface, OvsState, Port, PortRole, OWNER_KEY};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The rows of the four tables this tool reads, as they are now.
#[derive(Debug, Clone, Default)]
pub struct Live {
    pub root: String,
    pub root_raw: Value,
    /// `Open_vSwitch` `other_config` and `external_ids` (for `ipsec_skb_mark` and whether it is ours).
    pub root_other_config: BTreeMap<String, String>,
    pub root_external_ids: BTreeMap<String, String>,
    pub next_cfg: i64,
    pub cur_cfg: i64,
    pub bridges: Vec<LiveBridge>,
    pub ports: BTreeMap<String, LivePort>,
    pub ifaces: BTreeMap<String, LiveIface>,
}

#[derive(Debug, Clone)]
pub struct LiveBridge {
    pub uuid: String,
    pub name: String,
    pub datapath_type: String,
    pub rstp: bool,
    pub external_ids: BTreeMap<String, String>,
    pub ports: Vec<String>,
    pub raw: Value,
}

#[derive(Debug, Clone)]
pub struct LivePort {
    pub uuid: String,
    pub name: String,
    pub interfaces: Vec<String>,
    pub protected: bool,
    pub external_ids: BTreeMap<String, String>,
    pub raw: Value,
}

#[derive(Debug, Clone)]
pub struct LiveIface {
    pub uuid: String,
    pub name: String,
    pub kind: String,
    pub options: BTreeMap<String, String>,
    pub external_ids: BTreeMap<String, String>,
    pub raw: Value,
}

pub(crate) const BRIDGE_COLS: [&str; 5] = [
    "name",
    "datapath_type",
    "rstp_enable",
    "external_ids",
    "ports",
];
pub(crate) const PORT_COLS: [&str; 4] = ["name", "interfaces", "protected", "external_ids"];
pub(crate) const IFACE_COLS: [&str; 4] = ["name", "type", "options", "external_ids"];

/// The `select` operations that read everything [`Live::from_results`] needs, in one transaction.
pub fn read_ops() -> Vec<Value> {
    let sel = |table: &str, cols: &[&str]| {
        let mut cols: Vec<&str> = cols.to_vec();
        cols.push("_uuid");
        json!({"op": "select", "table": table, "where": [], "columns": cols})
    };
    vec![
        sel(
            "Open_vSwitch",
            &[
                "bridges",
                "next_cfg",
                "cur_cfg",
                "other_config",
                "external_ids",
            ],
        ),
        sel("Bridge", &BRIDGE_COLS),
        sel("Port", &PORT_COLS),
        sel("Interface", &IFACE_COLS),
    ]
}

/// The rows of one `select` result, taken out of it.
fn take_rows(v: &mut Value) -> Vec<Value> {
    match v.get_mut("rows").map(Value::take) {
        Some(Value::Array(rows)) => rows,
        _ => Vec::new(),
    }
}

impl Live {
    /// From the reply to [`read_ops`] (copied; see [`Live::from_reply`]).
    pub fn from_results(results: &[Value]) -> Result<Live, String> {
        Live::from_reply(results.to_vec())
    }

    /// From the reply to [`read_ops`], taken by value: each row's JSON moves into the `raw`
    /// that transaction guards compare against, instead of being copied (a read of 1,000
    /// tunnels spent a third of a no-op apply copying rows).
    pub fn from_reply(mut results: Vec<Value>) -> Result<Live, String> {
        if results.len() < 4 {
            return Err("short reply to the read transaction".into());
        }
        let root_row = take_rows(&mut results[0]).into_iter().next().ok_or(
            "the Open_vSwitch table is empty: run `ovs-vsctl init` (or start openvswitch-switch)",
        )?;
        let id = |r: &Value| uuid(&r["_uuid"]).unwrap_or_default();
        let mut live = Live {
            root: id(&root_row),
            next_cfg: root_row["next_cfg"].as_i64().unwrap_or(0),
            root_other_config: string_map(&root_row["other_config"]),
            root_external_ids: string_map(&root_row["external_ids"]),
            cur_cfg: root_row["cur_cfg"].as_i64().unwrap_or(0),
            root_raw: root_row,
            ..Live::default()
        };
        for r in take_rows(&mut results[1]) {
            live.bridges.push(LiveBridge {
                uuid: id(&r),
                name: r["name"].as_str().unwrap_or_default().into(),
                datapath_type: r["datapath_type"].as_str().unwrap_or_default().into(),
                rstp: r["rstp_enable"].as_bool().unwrap_or(false),
                external_ids: string_map(&r["external_ids"]),
                ports: uuid_set(&r["ports"]),
                raw: r,
            });
        }
        for r in take_rows(&mut results[2]) {
            let uuid = id(&r);
            let port = LivePort {
                uuid: uuid.clone(),
                name: r["name"].as_str().unwrap_or_default().into(),
                interfaces: uuid_set(&r["interfaces"]),
                protected: r["protected"].as_bool().unwrap_or(false),
                external_ids: string_map(&r["external_ids"]),
                raw: r,
            };
            live.ports.insert(uuid, port);
        }
        for r in take_rows(&mut results[3]) {
            let uuid = id(&r);
            let iface = LiveIface {
                uuid: uuid.clone(),
                name: r["name"].as_str().unwrap_or_default().into(),
                kind: r["type"].as_str().unwrap_or_default().into(),
                options: string_map(&r["options"]),
                external_ids: string_map(&r["external_ids"]),
                raw: r,
            };
            live.ifaces.insert(uuid, iface);
        }
        Ok(live)
    }

    pub fn bridge(&self, name: &str) -> Option<&LiveBridge> {
        self.bridges.iter().find(|b| b.name == name)
    }

    /// A port by name, with its bridge (if any bridge holds it) and its first interface.
    pub fn port(&self, name: &str) -> Option<(&LivePort, Option<&LiveBridge>, Option<&LiveIface>)> {
        let p = self.ports.values().find(|p| p.name == name)?;
        let b = self.bridges.iter().find(|b| b.ports.contains(&p.uuid));
        let i = p.interfaces.first().and_then(|u| self.ifaces.get(u));
        Some((p, b, i))
    }

    pub fn iface_by_name(&self, name: &str) -> Option<&LiveIface> {
        self.ifaces.values().find(|i| i.name == name)
    }

    /// The owned rows, as desired state: what a rollback restores.
    pub fn owned_state(&self) -> OvsState {
        let bridges = self
            .bridges
            .iter()
            .filter(|b| b.external_ids.contains_key(OWNER_KEY))
            .map(|b| Bridge {
                name: b.name.clone(),
                datapath_type: b.datapath_type.clone(),
                rstp: b.rstp,
                external_ids: b.external_ids.clone(),
                ports: b
                    .ports
                    .iter()
                    .filter_map(|u| self.ports.get(u))
                    .filter(|p| p.external_ids.contains_key(OWNER_KEY) && p.name != b.name)
                    .filter_map(|p| {
                        let i = self.ifaces.get(p.interfaces.first()?)?;
                        Some(Port {
                            name: p.name.clone(),
                            role: match i.kind.as_str() {
                                "internal" => PortRole::Internal,
                                k if bundle::tunnel::TunnelKind::parse(k).is_some() => {
                                    PortRole::Gre
                                }
                                _ => PortRole::Physical,
                            },
                            protected: p.protected,
                            external_ids: p.external_ids.clone(),
                            interface: Interface {
                                kind: i.kind.clone(),
                                options: i.options.clone(),
                            },
                        })
                    })
                    .collect(),
            })
            .collect();
        OvsState { bridges }
    }
}
