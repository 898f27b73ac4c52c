//! A plan as one guarded OVSDB transaction (RFC 7047 operations): used by the real system seam.
//!
//! Bridges and ports are added to and removed from their parents with `mutate`, so ports others
//! added to our bridges survive. Every existing row the transaction changes (and each parent whose
//! set it mutates) is guarded by a `wait` on the values read, so a concurrent change fails the
//! transaction instead of being overwritten.

use super::change::OvsChange;
use super::live::{Live, BRIDGE_COLS, IFACE_COLS, PORT_COLS};
use crate::ovsdb::value::{encode_map, encode_uuid_set, optional};
use bundle::state::{Interface, Port, PortRole};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The plan as one OVSDB transaction: guards, changes, and a `next_cfg` bump whose new value the
/// last operation selects.
pub fn transaction(changes: &[OvsChange], live: &Live, comment: &str) -> Vec<Value> {
    let mut waits: BTreeMap<(String, String, String), Value> = BTreeMap::new();
    let mut ops: Vec<Value> = Vec::new();
    let mut wait = |table: &str, uuid: &str, raw: &Value, cols: &[&str]| {
        let row: serde_json::Map<String, Value> = cols
            .iter()
            .map(|c| (c.to_string(), raw[c].clone()))
            .collect();
        waits.insert(
            (table.to_string(), uuid.to_string(), cols.join(",")),
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
                let lb = planned_bridge(live, uuid);
                wait("Bridge", uuid, &lb.guard_row(), &BRIDGE_COLS);
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
                let lb = planned_bridge(live, uuid);
                wait("Bridge", uuid, &lb.guard_row(), &BRIDGE_COLS);
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
                wait("Port", port_uuid, &lp.guard_row(), &PORT_COLS);
                wait("Interface", iface_uuid, &li.guard_row(), &IFACE_COLS);
                // Others' keys on our rows (ovn-controller's `ovn-installed`) are kept.
                let (iface_ids, port_ids) = (
                    bundle::state::merged_ids(&port.external_ids, &li.external_ids),
                    bundle::state::merged_ids(&port.external_ids, &lp.external_ids),
                );
                ops.push(json!({"op": "update", "table": "Interface", "where": [["_uuid", "==", ["uuid", iface_uuid]]],
                    "row": {"options": encode_map(&port.interface.options), "external_ids": encode_map(&iface_ids)}}));
                ops.push(json!({"op": "update", "table": "Port", "where": [["_uuid", "==", ["uuid", port_uuid]]],
                    "row": {"protected": port.protected, "external_ids": encode_map(&port_ids)}}));
            }
            OvsChange::DeletePort {
                bridge_uuid, uuid, ..
            } => {
                let lb = planned_bridge(live, bridge_uuid);
                wait("Bridge", bridge_uuid, &lb.guard_row(), &BRIDGE_COLS);
                wait("Port", uuid, &live.ports[uuid].guard_row(), &PORT_COLS);
                ops.push(json!({"op": "mutate", "table": "Bridge", "where": [["_uuid", "==", ["uuid", bridge_uuid]]],
                    "mutations": [["ports", "delete", encode_uuid_set([json!(["uuid", uuid])])]]}));
            }
            // On the root row, below.
            OvsChange::SkbMark { .. } | OvsChange::OvnKeys { .. } => {}
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
        wait("Bridge", &lb.uuid, &lb.guard_row(), &BRIDGE_COLS);
        ops.push(
            json!({"op": "mutate", "table": "Bridge", "where": [["_uuid", "==", ["uuid", lb.uuid]]],
            "mutations": [["ports", "insert", encode_uuid_set(refs)]]}),
        );
    }
    let root_where = json!([["_uuid", "==", ["uuid", live.root]]]);
    for c in changes {
        if let OvsChange::SkbMark { to, .. } = c {
            use super::change::{SKB_MARK, SKB_MARK_OWNER};
            wait(
                "Open_vSwitch",
                &live.root,
                &live.root_guard_row(),
                &["other_config", "external_ids"],
            );
            let keys = |k: &str| json!(["set", [k]]);
            let mut mutations = vec![
                json!(["other_config", "delete", keys(SKB_MARK)]),
                json!(["external_ids", "delete", keys(SKB_MARK_OWNER)]),
            ];
            if let Some(v) = to {
                mutations.push(json!(["other_config", "insert", ["map", [[SKB_MARK, v]]]]));
                mutations.push(json!([
                    "external_ids",
                    "insert",
                    ["map", [[SKB_MARK_OWNER, "owned"]]]
                ]));
            }
            ops.push(json!({"op": "mutate", "table": "Open_vSwitch", "where": root_where, "mutations": mutations}));
        }
        if let OvsChange::OvnKeys {
            set,
            from,
            to,
            restore,
        } = c
        {
            let (column, owner) = (set.column(), set.owner());
            wait(
                "Open_vSwitch",
                &live.root,
                &live.root_guard_row(),
                &["other_config", "external_ids"],
            );
            // Delete every key ours before and after (and the mark), then insert the wanted
            // ones: OVSDB's map insert never overwrites a key.
            let mut gone: Vec<&str> = from.keys().chain(to.keys()).map(String::as_str).collect();
            gone.sort_unstable();
            gone.dedup();
            let mut mutations = vec![
                json!([column, "delete", ["set", gone]]),
                json!(["external_ids", "delete", ["set", [owner]]]),
            ];
            if !to.is_empty() || !restore.is_empty() {
                let pairs: Vec<Value> = to
                    .iter()
                    .chain(restore)
                    .map(|(k, v)| json!([k, v]))
                    .collect();
                mutations.push(json!([column, "insert", ["map", pairs]]));
            }
            if !to.is_empty() {
                mutations.push(json!([
                    "external_ids",
                    "insert",
                    ["map", [[owner, super::planner::ovn_mark(to)]]]
                ]));
            }
            ops.push(json!({"op": "mutate", "table": "Open_vSwitch", "where": root_where, "mutations": mutations}));
        }
    }
    if !root_insert.is_empty() || !root_delete.is_empty() {
        wait(
            "Open_vSwitch",
            &live.root,
            &live.root_guard_row(),
            &["bridges"],
        );
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

/// The bridge row a change was planned against (the plan was made from this read).
fn planned_bridge<'a>(live: &'a Live, uuid: &str) -> &'a super::live::LiveBridge {
    live.bridges
        .iter()
        .find(|b| b.uuid == uuid)
        .expect("planned from live")
}

/// `select` operations reading the `error` column of the named interfaces.
pub fn error_ops(names: &[&str]) -> Vec<Value> {
    names
        .iter()
        .map(|n| json!({"op": "select", "table": "Interface", "where": [["name", "==", n]], "columns": ["error", "ofport"]}))
        .collect()
}

/// `interface NAME: ERROR` for each interface ovs-vswitchd reports an error on, or did not set
/// up at all: no OpenFlow port once it has caught up (as `ovs-vsctl` judges it; a bridge whose
/// datapath cannot be opened leaves no `error`, only that).
pub fn interface_errors(names: &[&str], results: &[Value]) -> Vec<String> {
    let mut errors = Vec::new();
    let mut not_set_up = Vec::new();
    for (n, r) in names.iter().zip(results) {
        let row = &r["rows"][0];
        if let Some(e) = optional(&row["error"]).and_then(|v| v.as_str().map(str::to_string)) {
            errors.push(format!("interface {n}: {e}"));
            continue;
        }
        let ofport = optional(&row["ofport"]).and_then(|v| v.as_i64());
        if row.is_object() && ofport.is_none_or(|p| p < 0) {
            not_set_up.push(*n);
        }
    }
    match not_set_up.as_slice() {
        [] => {}
        [one] => errors.push(format!(
            "interface {one}: ovs-vswitchd did not set it up (no OpenFlow port)"
        )),
        many => errors.push(format!(
            "interfaces {}: ovs-vswitchd did not set them up (no OpenFlow port)",
            many.join(", ")
        )),
    }
    errors
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

/// How many write operations [`transaction`] makes for `changes` (as [`write_ops`] counts them),
/// without a database read: what a plan reports before it runs.
pub fn write_count(changes: &[OvsChange]) -> usize {
    if changes.is_empty() {
        return 0;
    }
    let mut n = 1; // the next_cfg bump
    let mut bridges_mutated: Vec<&str> = Vec::new();
    let new_bridges: Vec<&str> = changes
        .iter()
        .filter_map(|c| match c {
            OvsChange::AddBridge { bridge } => Some(bridge.name.as_str()),
            _ => None,
        })
        .collect();
    let mut root = false;
    for c in changes {
        n += match c {
            OvsChange::AddBridge { .. } => {
                root = true;
                3
            }
            OvsChange::DeleteBridge { .. } => {
                root = true;
                0
            }
            OvsChange::AddPort { bridge, .. } => {
                if !new_bridges.contains(&bridge.as_str())
                    && !bridges_mutated.contains(&bridge.as_str())
                {
                    bridges_mutated.push(bridge);
                }
                2
            }
            OvsChange::UpdateBridge { .. } | OvsChange::DeletePort { .. } => 1,
            OvsChange::SkbMark { .. } | OvsChange::OvnKeys { .. } => 1,
            OvsChange::UpdatePort { .. } => 2,
        };
    }
    n + bridges_mutated.len() + usize::from(root)
}
