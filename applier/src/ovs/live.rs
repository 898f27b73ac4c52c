//! The OVS rows this tool reads (`Open_vSwitch`, `Bridge`, `Port`, `Interface`), as they are now:
//! [`Live`] is one database read, with the UUIDs a transaction refers to. The reply is decoded
//! straight into typed rows (no `serde_json::Value` per row); a transaction's guards re-encode
//! the columns they compare from those rows ([`LiveBridge::guard_row`] and the like).

use crate::ovsdb::value::{encode_map, encode_uuid_set, StrMap, Uuid, UuidSet};
use bundle::state::{Bridge, Interface, OvsState, Port, PortRole, OWNER_KEY};
use serde::de::{self, Deserializer};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The rows of the four tables this tool reads, as they are now.
#[derive(Debug, Clone, Default)]
pub struct Live {
    pub root: String,
    /// The root row's `bridges` (its guard when bridges are added or removed).
    pub root_bridges: Vec<String>,
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
}

#[derive(Debug, Clone)]
pub struct LivePort {
    pub uuid: String,
    pub name: String,
    pub interfaces: Vec<String>,
    pub protected: bool,
    pub external_ids: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct LiveIface {
    pub uuid: String,
    pub name: String,
    pub kind: String,
    pub options: BTreeMap<String, String>,
    pub external_ids: BTreeMap<String, String>,
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
const ROOT_COLS: [&str; 5] = [
    "bridges",
    "next_cfg",
    "cur_cfg",
    "other_config",
    "external_ids",
];

/// The `select` operations that read everything [`Live::from_raw`] needs, in one transaction.
pub fn read_ops() -> Vec<Value> {
    let sel = |table: &str, cols: &[&str]| {
        let mut cols: Vec<&str> = cols.to_vec();
        cols.push("_uuid");
        json!({"op": "select", "table": table, "where": [], "columns": cols})
    };
    vec![
        sel("Open_vSwitch", &ROOT_COLS),
        sel("Bridge", &BRIDGE_COLS),
        sel("Port", &PORT_COLS),
        sel("Interface", &IFACE_COLS),
    ]
}

// The rows as the reply encodes them: the columns [`read_ops`] selects. A column missing from
// a row reads as empty (as the `Value` decoding before did); a column of the wrong type is an
// error naming the table.

/// A table's name, for errors.
trait Table {
    const NAME: &'static str;
}

/// The rows of one `select` result. An operation that failed, or a result without rows, is an
/// error naming the table.
struct Rows<R>(Vec<R>);

impl<'de, R: Deserialize<'de> + Table> Deserialize<'de> for Rows<R> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(bound = "R: Deserialize<'de>")]
        struct OpResult<R> {
            rows: Option<Vec<R>>,
            #[serde(default)]
            error: Option<String>,
            #[serde(default)]
            details: Option<String>,
        }
        let name = R::NAME;
        // serde_json keeps the position at the end of the inner message.
        let r = Option::<OpResult<R>>::deserialize(d)
            .map_err(|e| de::Error::custom(format_args!("the {name} table: {e}")))?;
        match r {
            Some(OpResult {
                error: Some(error),
                details,
                ..
            }) => Err(de::Error::custom(format_args!(
                "the select of the {name} table failed: {error}{}",
                details.map(|d| format!(": {d}")).unwrap_or_default()
            ))),
            Some(OpResult {
                rows: Some(rows), ..
            }) => Ok(Rows(rows)),
            _ => Err(de::Error::custom(format_args!(
                "the result for the {name} table has no rows"
            ))),
        }
    }
}

/// The whole reply to [`read_ops`], decoded in one pass (with the JSON-RPC envelope, by
/// `Connection::reply_as`).
#[derive(Deserialize)]
pub struct ReadReply(
    Rows<RootRow>,
    Rows<BridgeRow>,
    Rows<PortRow>,
    Rows<IfaceRow>,
);

#[derive(Deserialize)]
struct RootRow {
    _uuid: Uuid,
    #[serde(default)]
    bridges: UuidSet,
    #[serde(default)]
    next_cfg: i64,
    #[serde(default)]
    cur_cfg: i64,
    #[serde(default)]
    other_config: StrMap,
    #[serde(default)]
    external_ids: StrMap,
}

#[derive(Deserialize)]
struct BridgeRow {
    _uuid: Uuid,
    #[serde(default)]
    name: String,
    #[serde(default)]
    datapath_type: String,
    #[serde(default)]
    rstp_enable: bool,
    #[serde(default)]
    external_ids: StrMap,
    #[serde(default)]
    ports: UuidSet,
}

#[derive(Deserialize)]
struct PortRow {
    _uuid: Uuid,
    #[serde(default)]
    name: String,
    #[serde(default)]
    interfaces: UuidSet,
    #[serde(default)]
    protected: bool,
    #[serde(default)]
    external_ids: StrMap,
}

#[derive(Deserialize)]
struct IfaceRow {
    _uuid: Uuid,
    #[serde(default)]
    name: String,
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    options: StrMap,
    #[serde(default)]
    external_ids: StrMap,
}

impl Table for RootRow {
    const NAME: &'static str = "Open_vSwitch";
}
impl Table for BridgeRow {
    const NAME: &'static str = "Bridge";
}
impl Table for PortRow {
    const NAME: &'static str = "Port";
}
impl Table for IfaceRow {
    const NAME: &'static str = "Interface";
}

impl Live {
    /// The values of the `Open_vSwitch` column that holds the OVN keys of `set`.
    pub fn ovn_key_values(&self, set: super::OvnKeys) -> &BTreeMap<String, String> {
        match set {
            super::OvnKeys::Chassis => &self.root_external_ids,
            super::OvnKeys::Ipsec => &self.root_other_config,
        }
    }

    /// [`Live::ovn_key_values`], to change (the in-memory host applies changes to it).
    pub fn ovn_key_values_mut(&mut self, set: super::OvnKeys) -> &mut BTreeMap<String, String> {
        match set {
            super::OvnKeys::Chassis => &mut self.root_external_ids,
            super::OvnKeys::Ipsec => &mut self.root_other_config,
        }
    }

    /// From the reply to [`read_ops`], as text: decoded straight into typed rows, in one pass
    /// (tests; the connection decodes it with its envelope, see [`Live::from_reply`]).
    #[cfg(test)]
    pub fn from_raw(results: &str) -> Result<Live, String> {
        Live::from_reply(serde_json::from_str(results))
    }

    /// From the reply to [`read_ops`], decoded (or not) into its rows.
    pub fn from_reply(reply: Result<ReadReply, serde_json::Error>) -> Result<Live, String> {
        let reply = reply.map_err(|e| format!("malformed reply to the OVSDB read: {e}"))?;
        Live::from_rows(reply)
    }

    /// From the reply to [`read_ops`] as `Value`s (tests).
    pub fn from_results(results: &[Value]) -> Result<Live, String> {
        let reply = ReadReply::deserialize(Value::Array(results.to_vec()))
            .map_err(|e| format!("malformed reply to the OVSDB read: {e}"))?;
        Live::from_rows(reply)
    }

    fn from_rows(reply: ReadReply) -> Result<Live, String> {
        let ReadReply(Rows(root), Rows(bridges), Rows(ports), Rows(ifaces)) = reply;
        let root = root.into_iter().next().ok_or(
            "the Open_vSwitch table is empty: run `ovs-vsctl init` (or start openvswitch-switch)",
        )?;
        Ok(Live {
            root: root._uuid.0,
            root_bridges: root.bridges.0,
            root_other_config: root.other_config.0,
            root_external_ids: root.external_ids.0,
            next_cfg: root.next_cfg,
            cur_cfg: root.cur_cfg,
            bridges: bridges
                .into_iter()
                .map(|r| LiveBridge {
                    uuid: r._uuid.0,
                    name: r.name,
                    datapath_type: r.datapath_type,
                    rstp: r.rstp_enable,
                    external_ids: r.external_ids.0,
                    ports: r.ports.0,
                })
                .collect(),
            ports: ports
                .into_iter()
                .map(|r| {
                    let p = LivePort {
                        uuid: r._uuid.0,
                        name: r.name,
                        interfaces: r.interfaces.0,
                        protected: r.protected,
                        external_ids: r.external_ids.0,
                    };
                    (p.uuid.clone(), p)
                })
                .collect(),
            ifaces: ifaces
                .into_iter()
                .map(|r| {
                    let i = LiveIface {
                        uuid: r._uuid.0,
                        name: r.name,
                        kind: r.kind,
                        options: r.options.0,
                        external_ids: r.external_ids.0,
                    };
                    (i.uuid.clone(), i)
                })
                .collect(),
        })
    }

    /// The root row's guarded columns (`bridges`, `other_config`, `external_ids`), encoded.
    pub fn root_guard_row(&self) -> Value {
        json!({
            "bridges": uuid_refs(&self.root_bridges),
            "other_config": encode_map(&self.root_other_config),
            "external_ids": encode_map(&self.root_external_ids),
        })
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
                external_ids: bundle::state::our_keys(&b.external_ids),
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
                                k if bundle::tunnel::TunnelKind::from_ovs_type(k).is_some() => {
                                    PortRole::Gre
                                }
                                _ => PortRole::Physical,
                            },
                            protected: p.protected,
                            external_ids: bundle::state::our_keys(&p.external_ids),
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

/// `["set", [["uuid", u], ...]]`.
fn uuid_refs(uuids: &[String]) -> Value {
    encode_uuid_set(uuids.iter().map(|u| json!(["uuid", u])))
}

impl LiveBridge {
    /// [`BRIDGE_COLS`] as read, encoded: what a `wait` guard on this row compares.
    pub fn guard_row(&self) -> Value {
        json!({
            "name": self.name,
            "datapath_type": self.datapath_type,
            "rstp_enable": self.rstp,
            "external_ids": encode_map(&self.external_ids),
            "ports": uuid_refs(&self.ports),
        })
    }
}

impl LivePort {
    /// [`PORT_COLS`] as read, encoded.
    pub fn guard_row(&self) -> Value {
        json!({
            "name": self.name,
            "interfaces": uuid_refs(&self.interfaces),
            "protected": self.protected,
            "external_ids": encode_map(&self.external_ids),
        })
    }
}

impl LiveIface {
    /// [`IFACE_COLS`] as read, encoded.
    pub fn guard_row(&self) -> Value {
        json!({
            "name": self.name,
            "type": self.kind,
            "options": encode_map(&self.options),
            "external_ids": encode_map(&self.external_ids),
        })
    }
}
