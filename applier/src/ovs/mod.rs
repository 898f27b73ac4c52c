//! Open vSwitch: the live rows ([`live`]), the change model ([`change`]), the planner that turns
//! live rows into desired ones ([`planner`]), and a plan as one guarded OVSDB transaction
//! ([`txn`]). Only rows marked with `external_ids:ovs-bundle-owner` are ever changed.

pub mod change;
pub mod live;
pub mod planner;
pub mod txn;

pub use change::{OvnKeys, OvsChange, PlanError, Scope};
pub use live::{Live, LiveBridge, LiveIface, LivePort};
pub use planner::plan;

#[cfg(test)]
mod tests {
    use super::txn::{transaction, write_count, write_ops};
    use super::*;
    use bundle::state::{Bridge, Interface, OvsState, Port, PortRole, OWNER_KEY, PSK_OPTION};
    use serde_json::{json, Value};
    use std::collections::BTreeMap;

    fn ids() -> Value {
        json!(["map", [[OWNER_KEY, "h"]]])
    }

    /// A live database: bridge br0 (owned) with ports priv0 (internal), gre-1 (gre), and a
    /// hand-made port "manual" (not owned).
    fn live() -> Live {
        Live::from_results(&reply()).unwrap()
    }

    /// The reply to the read of [`live`]'s database.
    fn reply() -> Vec<Value> {
        let port = |u: &str, name: &str, iface: &str, owned: bool| {
            json!({"_uuid": ["uuid", u], "name": name, "interfaces": ["uuid", iface], "protected": false,
                   "external_ids": if owned { ids() } else { json!(["map", []]) }})
        };
        let iface = |u: &str, name: &str, kind: &str, opts: Value, owned: bool| {
            json!({"_uuid": ["uuid", u], "name": name, "type": kind, "options": opts, "ofport": 1, "error": ["set", []],
                   "external_ids": if owned { ids() } else { json!(["map", []]) }})
        };
        vec![
            json!({"rows": [{"_uuid": ["uuid", "root"], "bridges": ["uuid", "b0"], "next_cfg": 5, "cur_cfg": 5}]}),
            json!({"rows": [{"_uuid": ["uuid", "b0"], "name": "br0", "datapath_type": "netdev", "rstp_enable": false,
                             "external_ids": ids(), "ports": ["set", [["uuid", "p0"], ["uuid", "p1"], ["uuid", "p2"], ["uuid", "p3"]]]}]}),
            json!({"rows": [port("p0", "br0", "i0", true), port("p1", "priv0", "i1", true), port("p2", "gre-1", "i2", true),
                            port("p3", "manual", "i3", false)]}),
            json!({"rows": [iface("i0", "br0", "internal", json!(["map", []]), true),
                            iface("i1", "priv0", "internal", json!(["map", []]), true),
                            iface("i2", "gre-1", "gre", json!(["map", [["remote_ip", "192.0.2.2"]]]), true),
                            iface("i3", "manual", "internal", json!(["map", []]), false)]}),
        ]
    }

    fn raw(results: &[Value]) -> String {
        serde_json::to_string(results).unwrap()
    }

    #[test]
    fn the_read_decodes_from_text_as_from_values() {
        let (a, b) = (Live::from_raw(&raw(&reply())).unwrap(), live());
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        assert_eq!(a.root_bridges, ["b0"]);
        assert_eq!(a.ports["p2"].interfaces, ["i2"]);
        assert_eq!(a.ifaces["i2"].options["remote_ip"], "192.0.2.2");
        assert_eq!((a.next_cfg, a.cur_cfg), (5, 5));
    }

    #[test]
    fn a_malformed_read_is_an_error_naming_the_table_not_a_panic() {
        let with = |i: usize, f: &dyn Fn(&mut Value)| {
            let mut r = reply();
            f(&mut r[i]);
            let text = Live::from_raw(&raw(&r)).unwrap_err();
            let value = Live::from_results(&r).unwrap_err();
            // The same message from text and from values, but for the position in the text.
            assert!(text.starts_with(&value), "{text} / {value}");
            text
        };
        let e = with(3, &|v| v["rows"][2]["options"] = json!("remote_ip=1"));
        assert!(
            e.starts_with(
                "malformed reply to the OVSDB read: the Interface table: invalid type: string"
            ),
            "{e}"
        );
        assert!(
            e.contains("expected an OVSDB map") && e.contains(" at line 1 column "),
            "{e}"
        );
        let e = with(2, &|v| {
            v["rows"][0]["interfaces"] = json!(["set", [["uuid", 7]]])
        });
        assert!(e.contains("the Port table: invalid type: integer"), "{e}");
        let e = with(1, &|v| v["rows"][0]["_uuid"] = json!(null));
        assert!(e.contains("the Bridge table: invalid type: null"), "{e}");
        let e = with(1, &|v| {
            v["rows"][0].as_object_mut().unwrap().remove("_uuid");
        });
        assert!(e.contains("the Bridge table: missing field `_uuid`"), "{e}");
        let e = with(1, &|v| *v = json!({"count": 1}));
        assert!(
            e.contains("the result for the Bridge table has no rows"),
            "{e}"
        );
        let e = with(2, &|v| {
            *v = json!({"error": "unknown column", "details": "no col x"})
        });
        assert!(
            e.contains("the select of the Port table failed: unknown column: no col x"),
            "{e}"
        );
        let e = with(3, &|v| *v = json!(null));
        assert!(e.contains("Interface table has no rows"), "{e}");
        let e = with(0, &|v| v["rows"][0]["next_cfg"] = json!("5"));
        assert!(
            e.contains("the Open_vSwitch table: invalid type: string"),
            "{e}"
        );
        let e = Live::from_raw(&raw(&reply()[..3])).unwrap_err();
        assert!(e.contains("invalid length 3"), "{e}");
        let e = Live::from_raw("{\"rows\": []}").unwrap_err();
        assert!(
            e.contains("malformed reply to the OVSDB read: invalid type: map"),
            "{e}"
        );
        let e = Live::from_raw("[{\"rows\": [").unwrap_err();
        assert!(e.contains("EOF"), "{e}");
        // An empty root table: the hint to initialise the database.
        let mut r = reply();
        r[0]["rows"] = json!([]);
        let e = Live::from_raw(&raw(&r)).unwrap_err();
        assert!(e.contains("Open_vSwitch table is empty"), "{e}");
        // Columns this tool does not read are skipped; a missing one reads as empty.
        let mut r = reply();
        r[3]["rows"][0]["mtu"] = json!(["set", [1500]]);
        r[3]["rows"][0]
            .as_object_mut()
            .unwrap()
            .remove("external_ids");
        let l = Live::from_raw(&raw(&r)).unwrap();
        assert!(l.ifaces["i0"].external_ids.is_empty());
    }

    /// A guard compares the columns as read: re-encoded from the typed rows, each decodes to
    /// what the server sent (a one-element set may come back as `["set", [x]]` for a bare `x`:
    /// the same OVSDB value).
    #[test]
    fn guard_rows_are_the_columns_as_read() {
        use crate::ovsdb::value::{StrMap, UuidSet};
        fn same(col: &str, sent: &Value, guard: &Value) {
            if sent == guard {
                return;
            }
            let sets = serde_json::from_value::<UuidSet>(sent.clone()).ok()
                == serde_json::from_value::<UuidSet>(guard.clone()).ok();
            let maps = serde_json::from_value::<StrMap>(sent.clone()).ok()
                == serde_json::from_value::<StrMap>(guard.clone()).ok();
            let decoded = serde_json::from_value::<UuidSet>(guard.clone()).is_ok()
                || serde_json::from_value::<StrMap>(guard.clone()).is_ok();
            assert!(sets && maps && decoded, "{col}: sent {sent}, guard {guard}");
        }
        let (r, l) = (reply(), live());
        let check = |sent: &Value, guard: Value, cols: &[&str]| {
            assert_eq!(guard.as_object().unwrap().len(), cols.len(), "{guard}");
            for c in cols {
                same(c, &sent[c], &guard[c]);
            }
        };
        check(
            &r[1]["rows"][0],
            l.bridges[0].guard_row(),
            &live::BRIDGE_COLS,
        );
        for (i, uuid) in ["p0", "p1", "p2", "p3"].iter().enumerate() {
            check(
                &r[2]["rows"][i],
                l.ports[*uuid].guard_row(),
                &live::PORT_COLS,
            );
        }
        for (i, uuid) in ["i0", "i1", "i2", "i3"].iter().enumerate() {
            check(
                &r[3]["rows"][i],
                l.ifaces[*uuid].guard_row(),
                &live::IFACE_COLS,
            );
        }
        let root = l.root_guard_row();
        same("bridges", &r[0]["rows"][0]["bridges"], &root["bridges"]);
        assert_eq!(root["other_config"], json!(["map", []]));
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

    #[test]
    fn the_write_count_of_a_plan_is_what_its_transaction_writes() {
        let l = live();
        let mut new_bridge = desired(vec![gre("gre-2", "192.0.2.3")]);
        new_bridge.bridges[0].name = "br1".into();
        let cases = [
            desired(vec![gre("gre-1", "192.0.2.9")]),
            desired(vec![]),
            desired(vec![
                gre("gre-1", "192.0.2.2"),
                gre("gre-3", "192.0.2.4"),
                gre("gre-4", "192.0.2.5"),
            ]),
            new_bridge,
            OvsState::default(),
        ];
        for d in cases {
            let changes = plan(&d, &l, Scope::Full).unwrap();
            assert_eq!(
                write_count(&changes),
                write_ops(&transaction(&changes, &l, "t")),
                "{changes:?}"
            );
        }
    }
}
