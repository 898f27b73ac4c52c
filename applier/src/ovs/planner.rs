//! The planner: the minimal list of [`OvsChange`]s that turns the live rows into the desired ones,
//! touching only rows marked as ours and refusing to take over rows of others.

use super::change::{show_value, OvnKeys, OvsChange, PlanError, Scope};
use super::live::Live;
use bundle::state::{Bridge, OvsState, Port, PortRole, OWNER_KEY};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Name lookups over one read, built once per plan: a linear search per desired port made the
/// planner quadratic (a fifth of a no-op apply at 1,000 tunnels).
struct Index<'a> {
    port: HashMap<&'a str, &'a super::live::LivePort>,
    bridge_of_port: HashMap<&'a str, &'a super::live::LiveBridge>,
    iface: HashMap<&'a str, &'a super::live::LiveIface>,
    /// Interface UUIDs held by some port.
    held: HashMap<&'a str, Vec<&'a str>>,
}

impl<'a> Index<'a> {
    fn new(live: &'a Live) -> Index<'a> {
        // Sized once: growing them row by row rehashed each a dozen times.
        let ports = live.ports.len();
        let mut ix = Index {
            port: HashMap::with_capacity(ports),
            bridge_of_port: HashMap::with_capacity(ports),
            iface: HashMap::with_capacity(live.ifaces.len()),
            held: HashMap::with_capacity(live.ifaces.len()),
        };
        // First match wins, as the linear searches did.
        for p in live.ports.values() {
            ix.port.entry(p.name.as_str()).or_insert(p);
            for i in &p.interfaces {
                ix.held.entry(i.as_str()).or_default().push(p.uuid.as_str());
            }
        }
        for b in &live.bridges {
            for p in &b.ports {
                ix.bridge_of_port.entry(p.as_str()).or_insert(b);
            }
        }
        for i in live.ifaces.values() {
            ix.iface.entry(i.name.as_str()).or_insert(i);
        }
        ix
    }
}

/// The changes that turn `live` into `desired` within `scope`. Unchanged rows are not touched.
pub fn plan(
    desired: &OvsState,
    live: &Live,
    scope: Scope,
) -> Result<Vec<OvsChange>, Vec<PlanError>> {
    let mut changes = Vec::new();
    let mut errors = Vec::new();
    let ix = Index::new(live);
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
                // Only our keys are compared and written: others' on our bridge stay.
                let ids = (!bundle::state::our_keys_are(&lb.external_ids, &b.external_ids))
                    .then(|| bundle::state::merged_ids(&b.external_ids, &lb.external_ids));
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
            // Tunnels of every type are what --gre-only reconciles.
            let live_role_in_scope = scope == Scope::Full
                || kind.is_some_and(|k| bundle::tunnel::TunnelKind::from_ovs_type(k).is_some());
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
        let found = ix.port.get(name).map(|p| {
            let b = ix.bridge_of_port.get(p.uuid.as_str()).copied();
            let i = p.interfaces.first().and_then(|u| live.ifaces.get(u));
            (*p, b, i)
        });
        match found {
            Some((lp, _, _)) if !owned(&lp.external_ids) => {
                errors.push(PlanError::ForeignPort(name.to_string()))
            }
            Some((lp, Some(lb), Some(li)))
                if !deleted_ports.contains(&lp.uuid) && lb.name == b.name =>
            {
                let mut what = Vec::new();
                // Equal options (every no-op's case) need no walk over their keys.
                let union: BTreeSet<&String> = if li.options == p.interface.options {
                    BTreeSet::new()
                } else {
                    li.options
                        .keys()
                        .chain(p.interface.options.keys())
                        .collect()
                };
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
                let ours = bundle::state::our_keys_are;
                if !ours(&lp.external_ids, &p.external_ids)
                    || !ours(&li.external_ids, &p.external_ids)
                {
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
                if let Some(li) = ix.iface.get(name) {
                    // An interface row with this name but no port of ours: someone else's.
                    let held = ix.held.get(li.uuid.as_str()).is_some_and(|ports| {
                        ports
                            .iter()
                            .any(|p| !deleted_ports.contains(&p.to_string()))
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

/// The change of `other_config:ipsec_skb_mark` that `desired` asks for: set where ovs-bundle wants
/// it, removed where it no longer does and it was ours; a value someone else set is not taken over.
pub fn skb_mark_change(desired: Option<&str>, live: &Live) -> Result<Option<OvsChange>, PlanError> {
    use super::change::{SKB_MARK, SKB_MARK_OWNER};
    let now = live.root_other_config.get(SKB_MARK).cloned();
    let ours = live.root_external_ids.contains_key(SKB_MARK_OWNER);
    match (desired, &now) {
        (Some(want), Some(have)) if want == have => Ok(None),
        (Some(want), Some(have)) if !ours => {
            Err(PlanError::ForeignSkbMark(have.clone(), want.to_string()))
        }
        (Some(want), _) => Ok(Some(OvsChange::SkbMark {
            from: now,
            to: Some(want.to_string()),
        })),
        (None, Some(_)) if ours => Ok(Some(OvsChange::SkbMark {
            from: now,
            to: None,
        })),
        (None, _) => Ok(None),
    }
}

/// The keys of `set` ovs-bundle set on this host: those its mark lists (only known keys: a
/// mark edited by hand cannot make the applier delete anything else).
pub fn ovn_owned_keys(set: OvnKeys, live: &Live) -> Vec<String> {
    let known = set.known();
    live.root_external_ids
        .get(set.owner())
        .map(|m| {
            m.split(',')
                .filter(|k| known.contains(k))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The change of `set`'s keys that `desired` asks for: keys set (and marked ours), keys ours
/// but no longer wanted removed, keys of others left alone. A key someone else set to another
/// value is not taken over, unless `takeover` says that value is one ovs-bundle may replace
/// (what Open vSwitch's own start scripts wrote: see [`crate::plan::make_plan`]); one already
/// holding the wanted value is adopted.
pub fn ovn_keys_change(
    set: OvnKeys,
    desired: &BTreeMap<String, String>,
    restore: &BTreeMap<String, String>,
    live: &Live,
    takeover: &dyn Fn(&str, &str) -> bool,
) -> Result<Option<OvsChange>, PlanError> {
    let owned = ovn_owned_keys(set, live);
    let values = live.ovn_key_values(set);
    for (k, want) in desired {
        if let Some(have) = values.get(k) {
            if have != want && !owned.contains(k) && !takeover(k, have) {
                let (k, have, want) = (k.clone(), have.clone(), want.clone());
                return Err(match set {
                    OvnKeys::Chassis => PlanError::ForeignOvnKey(k, have, want),
                    OvnKeys::Ipsec => PlanError::ForeignOvnIpsecKey(k, have, want),
                });
            }
        }
    }
    let from: BTreeMap<String, String> = owned
        .iter()
        .filter_map(|k| Some((k.clone(), values.get(k)?.clone())))
        .collect();
    let marked: BTreeSet<&str> = owned.iter().map(String::as_str).collect();
    let wanted: BTreeSet<&str> = desired.keys().map(String::as_str).collect();
    let values_ok = desired.iter().all(|(k, v)| values.get(k) == Some(v));
    // Only keys ours now, which the wanted state gives up: anything else stays as it is.
    let restore: BTreeMap<String, String> = restore
        .iter()
        .filter(|(k, _)| owned.contains(k) && !desired.contains_key(*k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if values_ok && marked == wanted && from.len() == owned.len() && restore.is_empty() {
        return Ok(None);
    }
    Ok(Some(OvsChange::OvnKeys {
        set,
        from,
        to: desired.clone(),
        restore,
    }))
}

/// The value of an OVN mark for these keys: sorted, comma-separated.
pub fn ovn_mark(keys: &BTreeMap<String, String>) -> String {
    keys.keys().cloned().collect::<Vec<_>>().join(",")
}
