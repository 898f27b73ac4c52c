//! Open vSwitch: the live rows read from OVSDB, the minimal plan that turns them into the desired
//! rows of a bundle, and that plan as one guarded OVSDB transaction.
//!
//! Only rows marked with [`OWNER_KEY`] are ever changed. Bridges and ports are added to and removed
//! from their parents with `mutate`, so ports others added to our bridges survive. Every existing
//! row the transaction changes (and each parent whose set it mutates) is guarded by a `wait` on
//! the values read, so a concurrent change fails the transaction instead of being overwritten.

use crate::ovsdb::value::{encode_map, encode_uuid_set, optional, string_map, uuid, uuid_set};
use bundle::state::{redact, Bridge, Interface, OvsState, Port, PortRole, OWNER_KEY, PSK_OPTION};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

/// The rows of the four tables this tool reads, as they are now.
#[derive(Debug, Clone, Default)]
pub struct Live {
    pub root: String,
    pub root_raw: Value,
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
    pub ofport: Option<i64>,
    pub error: Option<String>,
    pub raw: Value,
}

const BRIDGE_COLS: [&str; 5] = [
    "name",
    "datapath_type",
    "rstp_enable",
    "external_ids",
    "ports",
];
const PORT_COLS: [&str; 4] = ["name", "interfaces", "protected", "external_ids"];
const IFACE_COLS: [&str; 4] = ["name", "type", "options", "external_ids"];

/// The `select` operations that read everything [`Live::from_results`] needs, in one transaction.
pub fn read_ops() -> Vec<Value> {
    let sel = |table: &str, cols: &[&str]| {
        let mut cols: Vec<&str> = cols.to_vec();
        cols.push("_uuid");
        json!({"op": "select", "table": table, "where": [], "columns": cols})
    };
    let mut iface_cols = IFACE_COLS.to_vec();
    iface_cols.extend(["ofport", "error"]);
    vec![
        sel("Open_vSwitch", &["bridges", "next_cfg", "cur_cfg"]),
        sel("Bridge", &BRIDGE_COLS),
        sel("Port", &PORT_COLS),
        sel("Interface", &iface_cols),
    ]
}

fn rows(v: &Value) -> &[Value] {
    v["rows"].as_array().map(Vec::as_slice).unwrap_or(&[])
}

impl Live {
    pub fn from_results(results: &[Value]) -> Result<Live, String> {
        if results.len() < 4 {
            return Err("short reply to the read transaction".into());
        }
        let root_row = rows(&results[0]).first().ok_or(
            "the Open_vSwitch table is empty: run `ovs-vsctl init` (or start openvswitch-switch)",
        )?;
        let id = |r: &Value| uuid(&r["_uuid"]).unwrap_or_default();
        let mut live = Live {
            root: id(root_row),
            root_raw: root_row.clone(),
            next_cfg: root_row["next_cfg"].as_i64().unwrap_or(0),
            cur_cfg: root_row["cur_cfg"].as_i64().unwrap_or(0),
            ..Live::default()
        };
        for r in rows(&results[1]) {
            live.bridges.push(LiveBridge {
                uuid: id(r),
                name: r["name"].as_str().unwrap_or_default().into(),
                datapath_type: r["datapath_type"].as_str().unwrap_or_default().into(),
                rstp: r["rstp_enable"].as_bool().unwrap_or(false),
                external_ids: string_map(&r["external_ids"]),
                ports: uuid_set(&r["ports"]),
                raw: r.clone(),
            });
        }
        for r in rows(&results[2]) {
            live.ports.insert(
                id(r),
                LivePort {
                    uuid: id(r),
                    name: r["name"].as_str().unwrap_or_default().into(),
                    interfaces: uuid_set(&r["interfaces"]),
                    protected: r["protected"].as_bool().unwrap_or(false),
                    external_ids: string_map(&r["external_ids"]),
                    raw: r.clone(),
                },
            );
        }
        for r in rows(&results[3]) {
            live.ifaces.insert(
                id(r),
                LiveIface {
                    uuid: id(r),
                    name: r["name"].as_str().unwrap_or_default().into(),
                    kind: r["type"].as_str().unwrap_or_default().into(),
                    options: string_map(&r["options"]),
                    external_ids: string_map(&r["external_ids"]),
                    ofport: optional(&r["ofport"]).and_then(|v| v.as_i64()),
                    error: optional(&r["error"]).and_then(|v| v.as_str().map(str::to_string)),
                    raw: r.clone(),
                },
            );
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
                                "gre" => PortRole::Gre,
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
    DeletePort {
        bridge: String,
        bridge_uuid: String,
        name: String,
        uuid: String,
    },
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
        }
    }
}

fn show_value(key: &str, value: &str) -> String {
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
    #[error("--gre-only: bridge {0} is not on this host yet; run a full apply first")]
    MissingBridge(String),
}

/// The changes that turn `live` into `desired` within `scope`. Unchanged rows are not touched.
pub fn plan(
    desired: &OvsState,
    live: &Live,
    scope: Scope,
) -> Result<Vec<OvsChange>, Vec<PlanError>> {
    let mut changes = Vec::new();
    let mut errors = Vec::new();
    let owned = |ids: &BTreeMap<String, String>| ids.contains_key(OWNER_KEY);
    let in_scope = |role: PortRole| scope == Scope::Full || role == PortRole::Gre;
    let desired_ports: BTreeMap<&str, (&Bridge, &Port)> = desired
        .ports()
        .filter(|(_, p)| in_scope(p.role))
        .map(|(b, p)| (p.name.as_str(), (b, p)))
        .collect();

    for b in &desired.bridges {
        match live.bridge(&b.name) {
            None if scope == Scope::GreOnly => {
                errors.push(PlanError::MissingBridge(b.name.clone()))
            }
            None => changes.push(OvsChange::AddBridge {
                bridge: Bridge {
                    ports: Vec::new(),
                    ..b.clone()
                },
            }),
            Some(lb) if !owned(&lb.external_ids) => {
                errors.push(PlanError::ForeignBridge(b.name.clone()))
            }
            Some(lb) if scope == Scope::Full => {
                let dp = (lb.datapath_type != b.datapath_type
                    && !(lb.datapath_type.is_empty() && b.datapath_type == "system"))
                    .then(|| (lb.datapath_type.clone(), b.datapath_type.clone()));
                let rstp = (lb.rstp != b.rstp).then_some((lb.rstp, b.rstp));
                let ids = (lb.external_ids != b.external_ids).then(|| b.external_ids.clone());
                if dp.is_some() || rstp.is_some() || ids.is_some() {
                    changes.push(OvsChange::UpdateBridge {
                        name: b.name.clone(),
                        uuid: lb.uuid.clone(),
                        datapath_type: dp,
                        rstp,
                        external_ids: ids,
                    });
                }
            }
            Some(_) => {}
        }
    }
    let mut deleted_bridges: BTreeSet<&str> = BTreeSet::new();
    if scope == Scope::Full {
        for lb in live.bridges.iter().filter(|lb| owned(&lb.external_ids)) {
            if !desired.bridges.iter().any(|b| b.name == lb.name) {
                deleted_bridges.insert(&lb.name);
                changes.push(OvsChange::DeleteBridge {
                    name: lb.name.clone(),
                    uuid: lb.uuid.clone(),
                });
            }
        }
    }

    // Owned ports no longer wanted (or wanted on another bridge, or of another kind).
    let mut deleted_ports: BTreeSet<&String> = BTreeSet::new();
    for lb in live
        .bridges
        .iter()
        .filter(|lb| !deleted_bridges.contains(lb.name.as_str()))
    {
        for pu in &lb.ports {
            let Some(lp) = live.ports.get(pu) else {
                continue;
            };
            if !owned(&lp.external_ids) || lp.name == lb.name {
                continue;
            }
            let kind = lp
                .interfaces
                .first()
                .and_then(|u| live.ifaces.get(u))
                .map(|i| i.kind.as_str());
            let live_role_in_scope = scope == Scope::Full || kind == Some("gre");
            if !live_role_in_scope
                || (scope == Scope::GreOnly && !desired.bridges.iter().any(|b| b.name == lb.name))
            {
                continue;
            }
            let keep = desired_ports.get(lp.name.as_str()).is_some_and(|(b, p)| {
                b.name == lb.name
                    && kind == Some(p.interface.kind.as_str())
                    && lp.interfaces.len() == 1
            });
            if !keep {
                deleted_ports.insert(&lp.uuid);
                changes.push(OvsChange::DeletePort {
                    bridge: lb.name.clone(),
                    bridge_uuid: lb.uuid.clone(),
                    name: lp.name.clone(),
                    uuid: lp.uuid.clone(),
                });
            }
        }
    }

    for (name, (b, p)) in &desired_ports {
        match live.port(name) {
            Some((lp, _, _)) if !owned(&lp.external_ids) => {
                errors.push(PlanError::ForeignPort(name.to_string()))
            }
            Some((lp, Some(lb), Some(li)))
                if !deleted_ports.contains(&lp.uuid) && lb.name == b.name =>
            {
                let mut what = Vec::new();
                let mut union: BTreeSet<&String> = li.options.keys().collect();
                union.extend(p.interface.options.keys());
                for k in union {
                    let (old, new) = (li.options.get(k), p.interface.options.get(k));
                    if old != new {
                        let show = |v: Option<&String>| {
                            v.map_or("(none)".to_string(), |v| show_value(k, v))
                        };
                        what.push((format!("options:{k}"), show(old), show(new)));
                    }
                }
                if lp.protected != p.protected {
                    what.push((
                        "protected".into(),
                        lp.protected.to_string(),
                        p.protected.to_string(),
                    ));
                }
                if lp.external_ids != p.external_ids || li.external_ids != p.external_ids {
                    what.push(("external_ids".into(), "…".into(), "…".into()));
                }
                if !what.is_empty() {
                    changes.push(OvsChange::UpdatePort {
                        bridge: b.name.clone(),
                        port: (*p).clone(),
                        port_uuid: lp.uuid.clone(),
                        iface_uuid: li.uuid.clone(),
                        what,
                    });
                }
            }
            _ => {
                if let Some(li) = live.iface_by_name(name) {
                    // An interface row with this name but no port of ours: someone else's.
                    let held = live.ports.values().any(|p| {
                        p.interfaces.contains(&li.uuid) && !deleted_ports.contains(&p.uuid)
                    });
                    if held && !owned(&li.external_ids) {
                        errors.push(PlanError::ForeignPort(name.to_string()));
                        continue;
                    }
                }
                changes.push(OvsChange::AddPort {
                    bridge: b.name.clone(),
                    port: (*p).clone(),
                });
            }
        }
    }
    if errors.is_empty() {
        Ok(changes)
    } else {
        Err(errors)
    }
}

/// The plan as one OVSDB transaction: guards, changes, and a `next_cfg` bump whose new value the
/// last operation selects.
pub fn transaction(changes: &[OvsChange], live: &Live, comment: &str) -> Vec<Value> {
    let mut waits: BTreeMap<(String, String), Value> = BTreeMap::new();
    let mut ops: Vec<Value> = Vec::new();
    let mut wait = |table: &str, uuid: &str, raw: &Value, cols: &[&str]| {
        let row: serde_json::Map<String, Value> = cols
            .iter()
            .map(|c| (c.to_string(), raw[c].clone()))
            .collect();
        waits.insert(
            (table.to_string(), uuid.to_string()),
            json!({"op": "wait", "timeout": 0, "table": table, "where": [["_uuid", "==", ["uuid", uuid]]],
                   "columns": cols, "until": "==", "rows": [row]}),
        );
    };
    let mut seq = 0;
    let mut named = |prefix: &str| {
        seq += 1;
        format!("{prefix}{seq}")
    };
    let mut root_insert = Vec::new();
    let mut root_delete = Vec::new();
    // Ports to add, per bridge: named-uuid references for new bridges, mutations for existing.
    let mut new_port_refs: BTreeMap<String, Vec<Value>> = BTreeMap::new();

    let insert_port = |ops: &mut Vec<Value>,
                       port: &Port,
                       named: &mut dyn FnMut(&str) -> String|
     -> Value {
        let (i, p) = (named("iface"), named("port"));
        ops.push(json!({"op": "insert", "table": "Interface", "uuid-name": i, "row": {
            "name": port.name, "type": port.interface.kind,
            "options": encode_map(&port.interface.options), "external_ids": encode_map(&port.external_ids)}}));
        ops.push(
            json!({"op": "insert", "table": "Port", "uuid-name": p, "row": {
            "name": port.name, "interfaces": ["named-uuid", i], "protected": port.protected,
            "external_ids": encode_map(&port.external_ids)}}),
        );
        json!(["named-uuid", p])
    };

    for c in changes {
        match c {
            OvsChange::AddBridge { bridge } => {
                // The bridge's own internal port, as `ovs-vsctl add-br` creates it.
                let local = Port {
                    name: bridge.name.clone(),
                    role: PortRole::Internal,
                    protected: false,
                    external_ids: bridge.external_ids.clone(),
                    interface: Interface {
                        kind: "internal".into(),
                        options: BTreeMap::new(),
                    },
                };
                let r = insert_port(&mut ops, &local, &mut named);
                new_port_refs
                    .entry(bridge.name.clone())
                    .or_default()
                    .push(r);
            }
            OvsChange::AddPort { bridge, port } => {
                let r = insert_port(&mut ops, port, &mut named);
                new_port_refs.entry(bridge.clone()).or_default().push(r);
            }
            OvsChange::UpdateBridge {
                uuid,
                datapath_type,
                rstp,
                external_ids,
                ..
            } => {
                let lb = live
                    .bridges
                    .iter()
                    .find(|b| &b.uuid == uuid)
                    .expect("planned from live");
                wait("Bridge", uuid, &lb.raw, &BRIDGE_COLS);
                let mut row = serde_json::Map::new();
                if let Some((_, d)) = datapath_type {
                    row.insert("datapath_type".into(), json!(d));
                }
                if let Some((_, r)) = rstp {
                    row.insert("rstp_enable".into(), json!(r));
                }
                if let Some(ids) = external_ids {
                    row.insert("external_ids".into(), encode_map(ids));
                }
                ops.push(json!({"op": "update", "table": "Bridge", "where": [["_uuid", "==", ["uuid", uuid]]], "row": row}));
            }
            OvsChange::DeleteBridge { uuid, .. } => {
                let lb = live
                    .bridges
                    .iter()
                    .find(|b| &b.uuid == uuid)
                    .expect("planned from live");
                wait("Bridge", uuid, &lb.raw, &BRIDGE_COLS);
                root_delete.push(json!(["uuid", uuid]));
            }
            OvsChange::UpdatePort {
                port,
                port_uuid,
                iface_uuid,
                ..
            } => {
                let lp = &live.ports[port_uuid];
                let li = &live.ifaces[iface_uuid];
                wait("Port", port_uuid, &lp.raw, &PORT_COLS);
                wait("Interface", iface_uuid, &li.raw, &IFACE_COLS);
                ops.push(json!({"op": "update", "table": "Interface", "where": [["_uuid", "==", ["uuid", iface_uuid]]],
                    "row": {"options": encode_map(&port.interface.options), "external_ids": encode_map(&port.external_ids)}}));
                ops.push(json!({"op": "update", "table": "Port", "where": [["_uuid", "==", ["uuid", port_uuid]]],
                    "row": {"protected": port.protected, "external_ids": encode_map(&port.external_ids)}}));
            }
            OvsChange::DeletePort {
                bridge_uuid, uuid, ..
            } => {
                let lb = live
                    .bridges
                    .iter()
                    .find(|b| &b.uuid == bridge_uuid)
                    .expect("planned from live");
                wait("Bridge", bridge_uuid, &lb.raw, &BRIDGE_COLS);
                wait("Port", uuid, &live.ports[uuid].raw, &PORT_COLS);
                ops.push(json!({"op": "mutate", "table": "Bridge", "where": [["_uuid", "==", ["uuid", bridge_uuid]]],
                    "mutations": [["ports", "delete", encode_uuid_set([json!(["uuid", uuid])])]]}));
            }
        }
    }
    for c in changes {
        if let OvsChange::AddBridge { bridge } = c {
            let b = named("bridge");
            let refs = new_port_refs.remove(&bridge.name).unwrap_or_default();
            ops.push(json!({"op": "insert", "table": "Bridge", "uuid-name": b, "row": {
                "name": bridge.name, "datapath_type": bridge.datapath_type, "rstp_enable": bridge.rstp,
                "external_ids": encode_map(&bridge.external_ids), "ports": encode_uuid_set(refs)}}));
            root_insert.push(json!(["named-uuid", b]));
        }
    }
    for (bridge, refs) in new_port_refs {
        let lb = live
            .bridge(&bridge)
            .expect("ports are added to new or existing bridges");
        wait("Bridge", &lb.uuid, &lb.raw, &BRIDGE_COLS);
        ops.push(
            json!({"op": "mutate", "table": "Bridge", "where": [["_uuid", "==", ["uuid", lb.uuid]]],
            "mutations": [["ports", "insert", encode_uuid_set(refs)]]}),
        );
    }
    let root_where = json!([["_uuid", "==", ["uuid", live.root]]]);
    if !root_insert.is_empty() || !root_delete.is_empty() {
        wait("Open_vSwitch", &live.root, &live.root_raw, &["bridges"]);
        let mut mutations = Vec::new();
        if !root_insert.is_empty() {
            mutations.push(json!(["bridges", "insert", encode_uuid_set(root_insert)]));
        }
        if !root_delete.is_empty() {
            mutations.push(json!(["bridges", "delete", encode_uuid_set(root_delete)]));
        }
        ops.push(json!({"op": "mutate", "table": "Open_vSwitch", "where": root_where, "mutations": mutations}));
    }
    let mut all: Vec<Value> = waits.into_values().collect();
    all.extend(ops);
    all.push(json!({"op": "mutate", "table": "Open_vSwitch", "where": root_where, "mutations": [["next_cfg", "+=", 1]]}));
    all.push(json!({"op": "comment", "comment": comment}));
    all.push(json!({"op": "select", "table": "Open_vSwitch", "where": root_where, "columns": ["next_cfg"]}));
    all
}

/// `select` operations reading the `error` column of the named interfaces.
pub fn error_ops(names: &[&str]) -> Vec<Value> {
    names
        .iter()
        .map(|n| json!({"op": "select", "table": "Interface", "where": [["name", "==", n]], "columns": ["error"]}))
        .collect()
}

/// `interface NAME: ERROR` for each interface ovs-vswitchd reports an error on.
pub fn interface_errors(names: &[&str], results: &[Value]) -> Vec<String> {
    names
        .iter()
        .zip(results)
        .filter_map(|(n, r)| {
            let e = optional(&r["rows"][0]["error"])?;
            Some(format!("interface {n}: {}", e.as_str()?))
        })
        .collect()
}

/// The `next_cfg` the transaction's last operation read back.
pub fn committed_cfg(results: &[Value]) -> Option<i64> {
    results.last()?["rows"][0]["next_cfg"].as_i64()
}

/// How many operations of a transaction write (everything but waits, selects and comments).
pub fn write_ops(ops: &[Value]) -> usize {
    ops.iter()
        .filter(|o| !matches!(o["op"].as_str(), Some("wait" | "select" | "comment")))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ids() -> Value {
        json!(["map", [[OWNER_KEY, "h"]]])
    }

    /// A live database: bridge br0 (owned) with ports priv0 (internal), gre-1 (gre), and a
    /// hand-made port "manual" (not owned).
    fn live() -> Live {
        let port = |u: &str, name: &str, iface: &str, owned: bool| {
            json!({"_uuid": ["uuid", u], "name": name, "interfaces": ["uuid", iface], "protected": false,
                   "external_ids": if owned { ids() } else { json!(["map", []]) }})
        };
        let iface = |u: &str, name: &str, kind: &str, opts: Value, owned: bool| {
            json!({"_uuid": ["uuid", u], "name": name, "type": kind, "options": opts, "ofport": 1, "error": ["set", []],
                   "external_ids": if owned { ids() } else { json!(["map", []]) }})
        };
        let results = vec![
            json!({"rows": [{"_uuid": ["uuid", "root"], "bridges": ["uuid", "b0"], "next_cfg": 5, "cur_cfg": 5}]}),
            json!({"rows": [{"_uuid": ["uuid", "b0"], "name": "br0", "datapath_type": "netdev", "rstp_enable": false,
                             "external_ids": ids(), "ports": ["set", [["uuid", "p0"], ["uuid", "p1"], ["uuid", "p2"], ["uuid", "p3"]]]}]}),
            json!({"rows": [port("p0", "br0", "i0", true), port("p1", "priv0", "i1", true), port("p2", "gre-1", "i2", true),
                            port("p3", "manual", "i3", false)]}),
            json!({"rows": [iface("i0", "br0", "internal", json!(["map", []]), true),
                            iface("i1", "priv0", "internal", json!(["map", []]), true),
                            iface("i2", "gre-1", "gre", json!(["map", [["remote_ip", "192.0.2.2"]]]), true),
                            iface("i3", "manual", "internal", json!(["map", []]), false)]}),
        ];
        Live::from_results(&results).unwrap()
    }

    fn port(name: &str, role: PortRole, kind: &str, opts: &[(&str, &str)]) -> Port {
        Port {
            name: name.into(),
            role,
            protected: false,
            external_ids: BTreeMap::from([(OWNER_KEY.to_string(), "h".to_string())]),
            interface: Interface {
                kind: kind.into(),
                options: opts
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            },
        }
    }

    fn desired(gre: Vec<Port>) -> OvsState {
        let mut ports = vec![port("priv0", PortRole::Internal, "internal", &[])];
        ports.extend(gre);
        OvsState {
            bridges: vec![Bridge {
                name: "br0".into(),
                datapath_type: "netdev".into(),
                rstp: false,
                external_ids: BTreeMap::from([(OWNER_KEY.to_string(), "h".to_string())]),
                ports,
            }],
        }
    }

    fn gre(name: &str, ip: &str) -> Port {
        port(name, PortRole::Gre, "gre", &[("remote_ip", ip)])
    }

    #[test]
    fn matching_state_plans_nothing_and_leaves_foreign_ports_alone() {
        let plan = plan(
            &desired(vec![gre("gre-1", "192.0.2.2")]),
            &live(),
            Scope::Full,
        )
        .unwrap();
        assert!(plan.is_empty(), "{plan:?}");
    }

    #[test]
    fn a_changed_option_is_an_in_place_update_guarded_by_waits() {
        let l = live();
        let changes = plan(&desired(vec![gre("gre-1", "192.0.2.9")]), &l, Scope::Full).unwrap();
        assert_eq!(changes.len(), 1);
        assert_eq!(
            changes[0].describe(),
            "~ port br0/gre-1: options:remote_ip 192.0.2.2 -> 192.0.2.9"
        );
        let ops = transaction(&changes, &l, "t");
        let kinds: Vec<&str> = ops.iter().map(|o| o["op"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            ["wait", "wait", "update", "update", "mutate", "comment", "select"]
        );
        assert_eq!(write_ops(&ops), 3);
        assert!(ops
            .iter()
            .all(|o| o["op"] != "insert" && o["op"] != "delete"));
    }

    #[test]
    fn removing_a_peer_mutates_it_out_of_its_bridge_only() {
        let l = live();
        let changes = plan(&desired(vec![]), &l, Scope::Full).unwrap();
        assert_eq!(
            changes.iter().map(OvsChange::describe).collect::<Vec<_>>(),
            ["- port br0/gre-1"]
        );
        let ops = transaction(&changes, &l, "t");
        let mutate = ops
            .iter()
            .find(|o| o["op"] == "mutate" && o["table"] == "Bridge")
            .unwrap();
        assert_eq!(
            mutate["mutations"][0],
            json!(["ports", "delete", ["set", [["uuid", "p2"]]]])
        );
    }

    #[test]
    fn a_new_bridge_gets_its_local_port_and_joins_the_root() {
        let mut d = desired(vec![gre("gre-2", "192.0.2.3")]);
        d.bridges[0].name = "br1".into();
        d.bridges[0].ports.retain(|p| p.name != "priv0");
        let mut l = live();
        l.bridges.clear();
        l.ports.clear();
        l.ifaces.clear();
        let changes = plan(&d, &l, Scope::Full).unwrap();
        let ops = transaction(&changes, &l, "t");
        let names: Vec<&str> = ops
            .iter()
            .filter_map(|o| o["row"]["name"].as_str())
            .collect();
        assert_eq!(names, ["br1", "br1", "gre-2", "gre-2", "br1"]);
        let root = ops
            .iter()
            .find(|o| o["table"] == "Open_vSwitch" && o["op"] == "mutate")
            .unwrap();
        assert_eq!(root["mutations"][0][1], "insert");
    }

    #[test]
    fn foreign_rows_with_our_names_are_refused_not_taken_over() {
        let mut d = desired(vec![]);
        d.bridges[0]
            .ports
            .push(port("manual", PortRole::Internal, "internal", &[]));
        let errors = plan(&d, &live(), Scope::Full).unwrap_err();
        assert_eq!(errors, [PlanError::ForeignPort("manual".into())]);
    }

    #[test]
    fn gre_only_ignores_everything_but_tunnels() {
        let mut d = desired(vec![gre("gre-3", "192.0.2.4")]);
        d.bridges[0].ports.retain(|p| p.role == PortRole::Gre);
        d.bridges[0].datapath_type = "system".into();
        let changes = plan(&d, &live(), Scope::GreOnly).unwrap();
        let shown: Vec<String> = changes.iter().map(OvsChange::describe).collect();
        assert_eq!(
            shown,
            [
                "- port br0/gre-1",
                "+ port br0/gre-3 gre remote_ip=192.0.2.4"
            ]
        );
        let mut other = d.clone();
        other.bridges[0].name = "nope".into();
        assert_eq!(
            plan(&other, &live(), Scope::GreOnly).unwrap_err(),
            [PlanError::MissingBridge("nope".into())]
        );
    }

    #[test]
    fn psks_only_appear_as_fingerprints() {
        let l = live();
        let secret = "super-secret-psk-123456";
        let mut g = gre("gre-1", "192.0.2.2");
        g.interface.options.insert(PSK_OPTION.into(), secret.into());
        let changes = plan(
            &desired(vec![g, gre("gre-9", "192.0.2.9")]),
            &l,
            Scope::Full,
        )
        .unwrap();
        for c in &changes {
            assert!(!c.describe().contains(secret), "{}", c.describe());
        }
        assert!(changes[0].describe().contains("<redacted sha256:"));
    }
}
