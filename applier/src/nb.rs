//! The OVN northbound database on the central host: the logical switches and ports a bundle's
//! `ovn.json` lists, as rows marked `external_ids:ovs-bundle-owner` like our OVS rows. The live
//! rows ([`NbLive`]), the planner ([`plan`]) that turns them into the wanted ones touching only
//! rows marked as ours, and the plan as one OVSDB transaction ([`transaction`]) on
//! `OVN_Northbound`, through our own OVSDB client.
//!
//! Over 500 lines: the northbound rows' reader, planner and transaction, one format end to end
//! (its tests are in `nb_tests.rs`).

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
    /// The `NB_Global` row (ovn-northd makes it; `None` until then).
    pub global: Option<NbGlobal>,
}

/// What of `NB_Global` ovs-bundle reads: IPsec between all chassis, and whose setting it is.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NbGlobal {
    pub uuid: String,
    pub ipsec: bool,
    pub external_ids: BTreeMap<String, String>,
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
    /// `type`: empty for a VIF, `localnet` for a switch's uplink.
    pub kind: String,
    pub options: BTreeMap<String, String>,
    pub external_ids: BTreeMap<String, String>,
}

/// `type` of a localnet port.
pub const LOCALNET: &str = "localnet";
/// `options` key of a localnet port naming its physical network.
pub const NETWORK_NAME: &str = "network_name";

/// The columns a bundle's port sets: `addresses`, `type` and `options`.
pub fn port_columns(p: &LogicalPort) -> (Vec<String>, &'static str, BTreeMap<String, String>) {
    match &p.network {
        None => (vec![p.address.clone()], "", BTreeMap::new()),
        Some(net) => (
            vec![p.address.clone()],
            LOCALNET,
            BTreeMap::from([(NETWORK_NAME.to_string(), net.clone())]),
        ),
    }
}

impl NbPort {
    /// Whether the row has the columns `p` sets.
    fn is(&self, p: &LogicalPort) -> bool {
        let (addresses, kind, options) = port_columns(p);
        self.addresses == addresses && self.kind == kind && self.options == options
    }

    /// The row as a bundle lists it.
    fn as_logical_port(&self) -> LogicalPort {
        LogicalPort {
            name: self.name.clone(),
            address: self.addresses.first().cloned().unwrap_or_default(),
            network: (self.kind == LOCALNET)
                .then(|| self.options.get(NETWORK_NAME).cloned().unwrap_or_default()),
        }
    }
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
    /// `NB_Global` `ipsec`, marked ours (`bundle::ovn::NB_IPSEC_OWNER`) while true; `uuid`:
    /// the row, `None` if there is none yet (then made).
    Ipsec { uuid: Option<String>, to: bool },
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
            NbChange::AddPort { switch, port, .. } => match &port.network {
                None => format!("+ logical port {switch}/{} {}", port.name, port.address),
                Some(_) => format!("+ logical port {switch}/{} {}", port.name, port_label(port)),
            },
            NbChange::UpdatePort { switch, port, .. } => {
                format!(
                    "~ logical port {switch}/{}: {}",
                    port.name,
                    port_label(port)
                )
            }
            NbChange::DeletePort { switch, name, .. } => format!("- logical port {switch}/{name}"),
            NbChange::Ipsec { to, .. } => format!("~ NB_Global ipsec={to} (IPsec between chassis)"),
        }
    }
}

/// What a port is, for people: its address, or the network a localnet port bridges.
fn port_label(p: &LogicalPort) -> String {
    match &p.network {
        None => format!("addresses {}", p.address),
        Some(net) => format!("localnet to physical network {net}"),
    }
}

fn owned(ids: &BTreeMap<String, String>) -> bool {
    ids.contains_key(OWNER_KEY)
}

impl NbLive {
    /// Whether IPsec between chassis is on (whoever turned it on): what a rollback returns to.
    pub fn ipsec_on(&self) -> bool {
        self.global.as_ref().is_some_and(|g| g.ipsec)
    }

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
                    .map(NbPort::as_logical_port)
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
                   "columns": ["_uuid", "name", "addresses", "type", "options", "external_ids"]}),
            json!({"op": "select", "table": "NB_Global", "where": [],
                   "columns": ["_uuid", "ipsec", "external_ids"]}),
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
            #[serde(rename = "type")]
            kind: String,
            options: StrMap,
            external_ids: StrMap,
        }
        #[derive(Deserialize)]
        struct Global {
            _uuid: crate::ovsdb::value::Uuid,
            ipsec: bool,
            external_ids: StrMap,
        }
        let [sw, lsp, global] = results else {
            return Err(format!(
                "malformed reply to the NB read: {} results, not 3",
                results.len()
            ));
        };
        let global: Rows<Global> = serde_json::from_value(global.clone())
            .map_err(|e| format!("malformed reply to the NB read: NB_Global: {e}"))?;
        let sw: Rows<Sw> = serde_json::from_value(sw.clone())
            .map_err(|e| format!("malformed reply to the NB read: Logical_Switch: {e}"))?;
        let lsp: Rows<Lsp> = serde_json::from_value(lsp.clone())
            .map_err(|e| format!("malformed reply to the NB read: Logical_Switch_Port: {e}"))?;
        Ok(NbLive {
            present: true,
            global: global.rows.into_iter().next().map(|g| NbGlobal {
                uuid: g._uuid.0,
                ipsec: g.ipsec,
                external_ids: g.external_ids.0,
            }),
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
                            kind: p.kind,
                            options: p.options.0,
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
pub fn plan(
    desired: &[LogicalSwitch],
    ipsec: bool,
    live: &NbLive,
) -> Result<Vec<NbChange>, Vec<PlanError>> {
    if desired.is_empty() && !ipsec && !live.present {
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
                    if !lp.is(p) {
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
    // IPsec between chassis: turned on (and marked ours) when wanted and off; turned off only
    // if ovs-bundle turned it on. Already on by someone else's hand: left as it is, unmarked,
    // so that neither a rollback nor a bundle without IPsec ever turns off what they set.
    let global = live.global.as_ref();
    let on = global.is_some_and(|g| g.ipsec);
    let marked = global.is_some_and(|g| g.external_ids.contains_key(bundle::ovn::NB_IPSEC_OWNER));
    if (ipsec && !on) || (!ipsec && marked) {
        changes.push(NbChange::Ipsec {
            uuid: global.map(|g| g.uuid.clone()),
            to: ipsec,
        });
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
                        "where": at(uuid), "columns": ["name", "addresses", "type", "options", "external_ids"], "until": "==",
                        "rows": [{"name": p.name, "addresses": ["set", p.addresses], "type": p.kind,
                            "options": encode_map(&p.options), "external_ids": encode_map(&p.external_ids)}]})
                }),
            ),
            NbChange::Ipsec { uuid: Some(uuid), .. } => (
                format!("global {uuid}"),
                base.global.as_ref().map(|g| {
                    json!({"op": "wait", "timeout": 0, "table": "NB_Global",
                        "where": at(uuid), "columns": ["ipsec", "external_ids"], "until": "==",
                        "rows": [{"ipsec": g.ipsec, "external_ids": encode_map(&g.external_ids)}]})
                }),
            ),
            NbChange::AddSwitch { .. } | NbChange::Ipsec { uuid: None, .. } => continue,
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
        let (addresses, kind, options) = port_columns(p);
        ops.push(
            json!({"op": "insert", "table": "Logical_Switch_Port", "uuid-name": name,
            "row": {"name": p.name, "addresses": ["set", addresses], "type": kind,
                "options": encode_map(&options), "external_ids": ids(None)}}),
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
                let (addresses, kind, options) = port_columns(port);
                ops.push(
                    json!({"op": "update", "table": "Logical_Switch_Port", "where": at(uuid),
                    "row": {"addresses": ["set", addresses], "type": kind,
                        "options": encode_map(&options)}}),
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
            NbChange::Ipsec { uuid: None, to } => {
                let ids = if *to {
                    encode_map(&BTreeMap::from([(
                        bundle::ovn::NB_IPSEC_OWNER.to_string(),
                        owner.to_string(),
                    )]))
                } else {
                    encode_map(&BTreeMap::new())
                };
                ops.push(json!({"op": "insert", "table": "NB_Global",
                    "row": {"ipsec": to, "external_ids": ids}}));
            }
            NbChange::Ipsec {
                uuid: Some(uuid),
                to,
            } => {
                let mut mutations = vec![json!([
                    "external_ids",
                    "delete",
                    ["set", [bundle::ovn::NB_IPSEC_OWNER]]
                ])];
                if *to {
                    mutations.push(json!([
                        "external_ids",
                        "insert",
                        ["map", [[bundle::ovn::NB_IPSEC_OWNER, owner]]]
                    ]));
                }
                ops.push(
                    json!({"op": "update", "table": "NB_Global", "where": at(uuid),
                    "row": {"ipsec": to}}),
                );
                ops.push(
                    json!({"op": "mutate", "table": "NB_Global", "where": at(uuid),
                    "mutations": mutations}),
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
#[path = "nb_tests.rs"]
mod tests;
