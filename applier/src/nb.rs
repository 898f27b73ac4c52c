//! The OVN northbound database on the central host: the logical switches and ports a bundle's
//! `ovn.json` lists, as rows marked `external_ids:ovs-bundle-owner` like our OVS rows. The live
//! rows ([`NbLive`]), the planner ([`plan`]) that turns them into the wanted ones touching only
//! rows marked as ours, and the plan as one OVSDB transaction ([`transaction`]) on
//! `OVN_Northbound`, through our own OVSDB client.

use crate::ovs::PlanError;
use crate::ovsdb::value::{encode_map, encode_uuid_set, StrMap, UuidSet};
use bundle::ovn::{LogicalPort, LogicalSwitch};
use bundle::state::OWNER_KEY;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The database's name in OVSDB requests.
pub const NB_DB: &str = "OVN_Northbound";
/// `Logical_Switch` `external_ids` key holding the switch's subnet (for people; an
/// `other_config:subnet` would turn on OVN's address management).
pub const SUBNET_KEY: &str = "ovs-bundle-subnet";

/// The NB rows as read: every logical switch and port (ours or not).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NbLive {
    /// Whether there is a NB database at all (a chassis has none: nothing of ours there).
    pub present: bool,
    pub switches: Vec<NbSwitch>,
    pub ports: BTreeMap<String, NbPort>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NbSwitch {
    pub uuid: String,
    pub name: String,
    pub ports: Vec<String>,
    pub external_ids: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NbPort {
    pub uuid: String,
    pub name: String,
    pub addresses: Vec<String>,
    pub external_ids: BTreeMap<String, String>,
}

/// One change to NB rows.
#[derive(Debug, Clone, PartialEq)]
pub enum NbChange {
    /// A switch with its ports.
    AddSwitch { switch: LogicalSwitch },
    UpdateSwitch {
        uuid: String,
        name: String,
        subnet: String,
    },
    /// Its ports (not referenced by any other row) go with it.
    DeleteSwitch { uuid: String, name: String },
    AddPort {
        switch_uuid: String,
        switch: String,
        port: LogicalPort,
    },
    UpdatePort {
        uuid: String,
        switch: String,
        port: LogicalPort,
    },
    DeletePort {
        switch_uuid: String,
        switch: String,
        uuid: String,
        name: String,
    },
}

impl NbChange {
    pub fn describe(&self) -> String {
        match self {
            NbChange::AddSwitch { switch } => format!(
                "+ logical switch {} ({}, {} ports)",
                switch.name,
                switch.subnet,
                switch.ports.len()
            ),
            NbChange::UpdateSwitch { name, subnet, .. } => {
                format!("~ logical switch {name}: subnet {subnet}")
            }
            NbChange::DeleteSwitch { name, .. } => {
                format!("- logical switch {name} (and its ports)")
            }
            NbChange::AddPort { switch, port, .. } => {
                format!("+ logical port {switch}/{} {}", port.name, port.address)
            }
            NbChange::UpdatePort { switch, port, .. } => {
                format!(
                    "~ logical port {switch}/{}: addresses {}",
                    port.name, port.address
                )
            }
            NbChange::DeletePort { switch, name, .. } => format!("- logical port {switch}/{name}"),
        }
    }
}

fn owned(ids: &BTreeMap<String, String>) -> bool {
    ids.contains_key(OWNER_KEY)
}

impl NbLive {
    /// The rows marked as ours, as a bundle lists them: what a rollback returns to.
    pub fn owned_state(&self) -> Vec<LogicalSwitch> {
        let mut out: Vec<LogicalSwitch> = self
            .switches
            .iter()
            .filter(|s| owned(&s.external_ids))
            .map(|s| {
                let mut ports: Vec<LogicalPort> = s
                    .ports
                    .iter()
                    .filter_map(|u| self.ports.get(u))
                    .filter(|p| owned(&p.external_ids))
                    .map(|p| LogicalPort {
                        name: p.name.clone(),
                        address: p.addresses.first().cloned().unwrap_or_default(),
                    })
                    .collect();
                ports.sort_by(|a, b| a.name.cmp(&b.name));
                LogicalSwitch {
                    name: s.name.clone(),
                    subnet: s.external_ids.get(SUBNET_KEY).cloned().unwrap_or_default(),
                    ports,
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// The two selects of [`NbLive::from_results`], as transaction operations.
    pub fn read_ops() -> Vec<Value> {
        vec![
            json!({"op": "select", "table": "Logical_Switch", "where": [],
                   "columns": ["_uuid", "name", "ports", "external_ids"]}),
            json!({"op": "select", "table": "Logical_Switch_Port", "where": [],
                   "columns": ["_uuid", "name", "addresses", "external_ids"]}),
        ]
    }

    /// Decodes the reply to [`NbLive::read_ops`].
    pub fn from_results(results: &[Value]) -> Result<NbLive, String> {
        #[derive(Deserialize)]
        struct Rows<T> {
            rows: Vec<T>,
        }
        #[derive(Deserialize)]
        struct Sw {
            _uuid: crate::ovsdb::value::Uuid,
            name: String,
            ports: UuidSet,
            external_ids: StrMap,
        }
        #[derive(Deserialize)]
        struct Lsp {
            _uuid: crate::ovsdb::value::Uuid,
            name: String,
            addresses: StrSet,
            external_ids: StrMap,
        }
        let [sw, lsp] = results else {
            return Err(format!(
                "malformed reply to the NB read: {} results, not 2",
                results.len()
            ));
        };
        let sw: Rows<Sw> = serde_json::from_value(sw.clone())
            .map_err(|e| format!("malformed reply to the NB read: Logical_Switch: {e}"))?;
        let lsp: Rows<Lsp> = serde_json::from_value(lsp.clone())
            .map_err(|e| format!("malformed reply to the NB read: Logical_Switch_Port: {e}"))?;
        Ok(NbLive {
            present: true,
            switches: sw
                .rows
                .into_iter()
                .map(|s| NbSwitch {
                    uuid: s._uuid.0,
                    name: s.name,
                    ports: s.ports.0,
                    external_ids: s.external_ids.0,
                })
                .collect(),
            ports: lsp
                .rows
                .into_iter()
                .map(|p| {
                    (
                        p._uuid.0.clone(),
                        NbPort {
                            uuid: p._uuid.0,
                            name: p.name,
                            addresses: p.addresses.0,
                            external_ids: p.external_ids.0,
                        },
                    )
                })
                .collect(),
        })
    }
}

/// A set of strings: `["set", ["a", "b"]]`, or a bare `"a"` for one.
#[derive(Debug, Default)]
struct StrSet(Vec<String>);

impl<'de> Deserialize<'de> for StrSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            Set(String, Vec<String>),
        }
        match Raw::deserialize(d)? {
            Raw::One(s) => Ok(StrSet(vec![s])),
            Raw::Set(tag, v) if tag == "set" => Ok(StrSet(v)),
            Raw::Set(tag, _) => Err(serde::de::Error::custom(format!(
                "expected an OVSDB set of strings, not {tag:?}"
            ))),
        }
    }
}

/// The changes that turn the live NB rows into `desired`. Rows not marked as ours are never
/// changed; a wanted switch or port whose name someone else's row holds is an error.
pub fn plan(desired: &[LogicalSwitch], live: &NbLive) -> Result<Vec<NbChange>, Vec<PlanError>> {
    if desired.is_empty() && !live.present {
        return Ok(Vec::new());
    }
    if !live.present {
        return Err(vec![PlanError::NoNorthbound]);
    }
    let mut changes = Vec::new();
    let mut errors = Vec::new();
    let port_by_name: BTreeMap<&str, &NbPort> =
        live.ports.values().map(|p| (p.name.as_str(), p)).collect();
    let switch_of_port: BTreeMap<&str, &NbSwitch> = live
        .switches
        .iter()
        .flat_map(|s| s.ports.iter().map(move |p| (p.as_str(), s)))
        .collect();
    // Owned switches no longer wanted: deleted with their ports.
    for s in live.switches.iter().filter(|s| owned(&s.external_ids)) {
        if !desired.iter().any(|d| d.name == s.name) {
            changes.push(NbChange::DeleteSwitch {
                uuid: s.uuid.clone(),
                name: s.name.clone(),
            });
        }
    }
    for d in desired {
        let Some(ls) = live.switches.iter().find(|s| s.name == d.name) else {
            // A name someone else's port holds; one of ours moves here (see `transaction`).
            for p in &d.ports {
                if port_by_name
                    .get(p.name.as_str())
                    .is_some_and(|lp| !owned(&lp.external_ids))
                {
                    errors.push(PlanError::ForeignLogicalPort(p.name.clone()));
                }
            }
            changes.push(NbChange::AddSwitch { switch: d.clone() });
            continue;
        };
        if !owned(&ls.external_ids) {
            errors.push(PlanError::ForeignLogicalSwitch(d.name.clone()));
            continue;
        }
        if ls.external_ids.get(SUBNET_KEY) != Some(&d.subnet) {
            changes.push(NbChange::UpdateSwitch {
                uuid: ls.uuid.clone(),
                name: d.name.clone(),
                subnet: d.subnet.clone(),
            });
        }
        // Our ports of this switch no longer wanted here.
        for u in &ls.ports {
            let Some(lp) = live.ports.get(u) else {
                continue;
            };
            if owned(&lp.external_ids) && !d.ports.iter().any(|p| p.name == lp.name) {
                changes.push(NbChange::DeletePort {
                    switch_uuid: ls.uuid.clone(),
                    switch: d.name.clone(),
                    uuid: lp.uuid.clone(),
                    name: lp.name.clone(),
                });
            }
        }
        for p in &d.ports {
            match port_by_name.get(p.name.as_str()) {
                None => changes.push(NbChange::AddPort {
                    switch_uuid: ls.uuid.clone(),
                    switch: d.name.clone(),
                    port: p.clone(),
                }),
                Some(lp) if !owned(&lp.external_ids) => {
                    errors.push(PlanError::ForeignLogicalPort(p.name.clone()))
                }
                Some(lp)
                    if switch_of_port
                        .get(lp.uuid.as_str())
                        .map(|s| s.uuid.as_str())
                        == Some(ls.uuid.as_str()) =>
                {
                    if lp.addresses != [p.address.clone()] {
                        changes.push(NbChange::UpdatePort {
                            uuid: lp.uuid.clone(),
                            switch: d.name.clone(),
                            port: p.clone(),
                        });
                    }
                }
                // Ours, on another switch: that switch's pass (or its deletion) removes it.
                Some(_) => changes.push(NbChange::AddPort {
                    switch_uuid: ls.uuid.clone(),
                    switch: d.name.clone(),
                    port: p.clone(),
                }),
            }
        }
    }
    if errors.is_empty() {
        Ok(changes)
    } else {
        Err(errors)
    }
}

/// The changes as one transaction on `OVN_Northbound`, every row written marked with
/// `owner` (the central's host name). Every existing row it changes is guarded by a `wait` on
/// the values `base` read, so a concurrent change by another client fails the transaction
/// instead of being overwritten.
pub fn transaction(changes: &[NbChange], base: &NbLive, owner: &str, comment: &str) -> Vec<Value> {
    let mut waits: BTreeMap<String, Value> = BTreeMap::new();
    let at = |uuid: &str| json!([["_uuid", "==", ["uuid", uuid]]]);
    let switch_guard = |uuid: &str| {
        base.switches.iter().find(|s| s.uuid == uuid).map(|s| {
            let refs = s.ports.iter().map(|p| json!(["uuid", p]));
            json!({"op": "wait", "timeout": 0, "table": "Logical_Switch",
                "where": at(uuid), "columns": ["name", "ports", "external_ids"], "until": "==",
                "rows": [{"name": s.name, "ports": encode_uuid_set(refs), "external_ids": encode_map(&s.external_ids)}]})
        })
    };
    for c in changes {
        let (key, guard) = match c {
            NbChange::UpdateSwitch { uuid, .. }
            | NbChange::DeleteSwitch { uuid, .. }
            | NbChange::AddPort {
                switch_uuid: uuid, ..
            }
            | NbChange::DeletePort {
                switch_uuid: uuid, ..
            } => (format!("ls {uuid}"), switch_guard(uuid)),
            NbChange::UpdatePort { uuid, .. } => (
                format!("lsp {uuid}"),
                base.ports.get(uuid).map(|p| {
                    json!({"op": "wait", "timeout": 0, "table": "Logical_Switch_Port",
                        "where": at(uuid), "columns": ["name", "addresses", "external_ids"], "until": "==",
                        "rows": [{"name": p.name, "addresses": ["set", p.addresses], "external_ids": encode_map(&p.external_ids)}]})
                }),
            ),
            NbChange::AddSwitch { .. } => continue,
        };
        if let Some(g) = guard {
            waits.insert(key, g);
        }
    }
    let ids = |extra: Option<(&str, &str)>| {
        let mut m = BTreeMap::from([(OWNER_KEY.to_string(), owner.to_string())]);
        if let Some((k, v)) = extra {
            m.insert(k.to_string(), v.to_string());
        }
        encode_map(&m)
    };
    let mut ops: Vec<Value> = waits.into_values().collect();
    let mut seq = 0;
    let mut insert_port = |ops: &mut Vec<Value>, p: &LogicalPort| {
        seq += 1;
        let name = format!("lsp{seq}");
        ops.push(
            json!({"op": "insert", "table": "Logical_Switch_Port", "uuid-name": name,
            "row": {"name": p.name, "addresses": ["set", [p.address]], "external_ids": ids(None)}}),
        );
        json!(["named-uuid", name])
    };
    for c in changes {
        match c {
            NbChange::AddSwitch { switch } => {
                let refs: Vec<Value> = switch
                    .ports
                    .iter()
                    .map(|p| insert_port(&mut ops, p))
                    .collect();
                ops.push(json!({"op": "insert", "table": "Logical_Switch", "row": {
                    "name": switch.name, "ports": encode_uuid_set(refs),
                    "external_ids": ids(Some((SUBNET_KEY, &switch.subnet)))}}));
            }
            NbChange::UpdateSwitch { uuid, subnet, .. } => {
                ops.push(
                    json!({"op": "mutate", "table": "Logical_Switch", "where": at(uuid),
                    "mutations": [["external_ids", "delete", ["set", [SUBNET_KEY]]],
                                  ["external_ids", "insert", ["map", [[SUBNET_KEY, subnet]]]]]}),
                );
            }
            NbChange::DeleteSwitch { uuid, .. } => {
                ops.push(json!({"op": "delete", "table": "Logical_Switch", "where": at(uuid)}));
            }
            NbChange::AddPort {
                switch_uuid, port, ..
            } => {
                let r = insert_port(&mut ops, port);
                ops.push(
                    json!({"op": "mutate", "table": "Logical_Switch", "where": at(switch_uuid),
                    "mutations": [["ports", "insert", encode_uuid_set([r])]]}),
                );
            }
            NbChange::UpdatePort { uuid, port, .. } => {
                ops.push(
                    json!({"op": "update", "table": "Logical_Switch_Port", "where": at(uuid),
                    "row": {"addresses": ["set", [port.address]]}}),
                );
            }
            NbChange::DeletePort {
                switch_uuid, uuid, ..
            } => {
                // Logical_Switch_Port is not a root table: the row goes with its last reference.
                ops.push(
                    json!({"op": "mutate", "table": "Logical_Switch", "where": at(switch_uuid),
                    "mutations": [["ports", "delete", encode_uuid_set([json!(["uuid", uuid])])]]}),
                );
            }
        }
    }
    // A port moved between our switches is a DeletePort on the old one and an AddPort (same
    // name) on the new one: the old row is collected before the name index is checked, at
    // commit.
    ops.push(json!({"op": "comment", "comment": comment}));
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ls(name: &str, ports: &[(&str, &str)]) -> LogicalSwitch {
        LogicalSwitch {
            name: name.into(),
            subnet: "10.30.0.0/24".into(),
            ports: ports
                .iter()
                .map(|(n, a)| LogicalPort {
                    name: n.to_string(),
                    address: a.to_string(),
                })
                .collect(),
        }
    }

    fn live() -> NbLive {
        let reply = vec![
            json!({"rows": [
                {"_uuid": ["uuid", "s1"], "name": "ls0", "ports": ["set", [["uuid", "p1"], ["uuid", "p2"], ["uuid", "p9"]]],
                 "external_ids": ["map", [[OWNER_KEY, "c1"], [SUBNET_KEY, "10.30.0.0/24"]]]},
                {"_uuid": ["uuid", "s2"], "name": "theirs", "ports": ["uuid", "p3"], "external_ids": ["map", []]},
                {"_uuid": ["uuid", "s3"], "name": "old", "ports": ["set", []], "external_ids": ["map", [[OWNER_KEY, "c1"]]]}]}),
            json!({"rows": [
                {"_uuid": ["uuid", "p1"], "name": "ovsb-h1", "addresses": "0a:00:00:00:00:01 10.30.0.1", "external_ids": ["map", [[OWNER_KEY, "c1"]]]},
                {"_uuid": ["uuid", "p2"], "name": "ovsb-h2", "addresses": ["set", ["0a:00:00:00:00:02 10.30.0.2"]], "external_ids": ["map", [[OWNER_KEY, "c1"]]]},
                {"_uuid": ["uuid", "p9"], "name": "vm9", "addresses": ["set", []], "external_ids": ["map", []]},
                {"_uuid": ["uuid", "p3"], "name": "lsp-theirs", "addresses": ["set", []], "external_ids": ["map", []]}]}),
        ];
        NbLive::from_results(&reply).unwrap()
    }

    #[test]
    fn plans_only_our_rows_and_refuses_names_of_others() {
        let l = live();
        assert_eq!(
            l.owned_state(),
            vec![
                ls(
                    "ls0",
                    &[
                        ("ovsb-h1", "0a:00:00:00:00:01 10.30.0.1"),
                        ("ovsb-h2", "0a:00:00:00:00:02 10.30.0.2")
                    ]
                ),
                LogicalSwitch {
                    name: "old".into(),
                    subnet: String::new(),
                    ports: vec![]
                },
            ]
        );
        // h2 goes, h3 comes, h1 moves address; "old" goes; vm9 (not ours) stays.
        let want = [ls(
            "ls0",
            &[
                ("ovsb-h1", "0a:00:00:00:00:01 10.30.0.11"),
                ("ovsb-h3", "0a:00:00:00:00:03 10.30.0.3"),
            ],
        )];
        let got: Vec<String> = plan(&want, &l)
            .unwrap()
            .iter()
            .map(NbChange::describe)
            .collect();
        assert_eq!(
            got,
            [
                "- logical switch old (and its ports)",
                "- logical port ls0/ovsb-h2",
                "~ logical port ls0/ovsb-h1: addresses 0a:00:00:00:00:01 10.30.0.11",
                "+ logical port ls0/ovsb-h3 0a:00:00:00:00:03 10.30.0.3",
            ]
        );
        // h2 moves to a new switch ls1: off ls0, onto ls1 (one transaction, see `transaction`).
        let moved = [
            ls("ls0", &[("ovsb-h1", "0a:00:00:00:00:01 10.30.0.1")]),
            LogicalSwitch {
                name: "ls1".into(),
                ..ls("ls1", &[("ovsb-h2", "0a:00:00:00:00:02 10.30.0.2")])
            },
            ls("old", &[]),
        ];
        let got: Vec<String> = plan(&moved, &l)
            .unwrap()
            .iter()
            .map(NbChange::describe)
            .collect();
        assert_eq!(
            got,
            [
                "- logical port ls0/ovsb-h2",
                "+ logical switch ls1 (10.30.0.0/24, 1 ports)",
                "~ logical switch old: subnet 10.30.0.0/24",
            ]
        );
        let errs = plan(&[ls("theirs", &[])], &l).unwrap_err();
        assert_eq!(errs, [PlanError::ForeignLogicalSwitch("theirs".into())]);
        let errs = plan(&[ls("ls0", &[("vm9", "0a:00:00:00:00:09 10.30.0.9")])], &l).unwrap_err();
        assert_eq!(errs, [PlanError::ForeignLogicalPort("vm9".into())]);
        // No NB database: nothing of ours to remove, but nothing can be added either.
        assert_eq!(plan(&[], &NbLive::default()), Ok(vec![]));
        assert_eq!(
            plan(&want, &NbLive::default()),
            Err(vec![PlanError::NoNorthbound])
        );
    }

    #[test]
    fn the_transaction_marks_every_row_it_writes() {
        let t = transaction(
            &[NbChange::AddSwitch {
                switch: ls("ls0", &[("ovsb-h1", "0a:00:00:00:00:01 10.30.0.1")]),
            }],
            &NbLive::default(),
            "c1",
            "test",
        );
        assert_eq!(t[0]["table"], "Logical_Switch_Port");
        assert_eq!(
            t[0]["row"]["external_ids"],
            json!(["map", [[OWNER_KEY, "c1"]]])
        );
        assert_eq!(
            t[1]["row"]["ports"],
            json!(["set", [["named-uuid", "lsp1"]]])
        );
        assert_eq!(
            t[1]["row"]["external_ids"],
            json!(["map", [[OWNER_KEY, "c1"], [SUBNET_KEY, "10.30.0.0/24"]]])
        );
        // Changes to existing rows wait for them to be as read first.
        let l = live();
        let changes = plan(
            &[ls("ls0", &[("ovsb-h1", "0a:00:00:00:00:01 10.30.0.11")])],
            &l,
        )
        .unwrap();
        let t = transaction(&changes, &l, "c1", "test");
        let waits: Vec<&Value> = t.iter().filter(|o| o["op"] == "wait").collect();
        assert_eq!(waits.len(), 3, "{t:#?}");
        assert!(t.iter().position(|o| o["op"] == "wait").unwrap() == 0);
        assert!(waits.iter().any(|w| w["table"] == "Logical_Switch_Port"
            && w["rows"][0]["addresses"] == json!(["set", ["0a:00:00:00:00:01 10.30.0.1"]])));
    }
}
