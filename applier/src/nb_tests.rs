//! The northbound planner and transaction on read replies: only our rows, guards, IPsec.

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
                network: None,
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
            {"_uuid": ["uuid", "p1"], "name": "ovsb-h1", "addresses": "0a:00:00:00:00:01 10.30.0.1", "type": "", "options": ["map", []], "external_ids": ["map", [[OWNER_KEY, "c1"]]]},
            {"_uuid": ["uuid", "p2"], "name": "ovsb-h2", "addresses": ["set", ["0a:00:00:00:00:02 10.30.0.2"]], "type": "", "options": ["map", []], "external_ids": ["map", [[OWNER_KEY, "c1"]]]},
            {"_uuid": ["uuid", "p9"], "name": "vm9", "addresses": ["set", []], "type": "", "options": ["map", []], "external_ids": ["map", []]},
            {"_uuid": ["uuid", "p3"], "name": "lsp-theirs", "addresses": ["set", []], "type": "", "options": ["map", []], "external_ids": ["map", []]}]}),
        json!({"rows": [{"_uuid": ["uuid", "g1"], "ipsec": false, "external_ids": ["map", []]}]}),
    ];
    NbLive::from_results(&reply).unwrap()
}

#[test]
fn ipsec_is_turned_on_marked_and_off_only_when_ours() {
    let mut l = live();
    let owned = l.owned_state();
    let ipsec = |l: &NbLive, want: bool| -> Vec<NbChange> {
        plan(&owned, want, l)
            .unwrap()
            .into_iter()
            .filter(|c| matches!(c, NbChange::Ipsec { .. }))
            .collect()
    };
    let on = ipsec(&l, true);
    assert_eq!(
        on,
        [NbChange::Ipsec {
            uuid: Some("g1".into()),
            to: true
        }]
    );
    let ops = transaction(&on, &l, "c1", "test");
    // Guarded on what was read, then set and marked.
    assert!(
        ops.iter().any(|o| o["op"] == "wait"
            && o["table"] == "NB_Global"
            && o["rows"][0]["ipsec"] == false),
        "{ops:#?}"
    );
    let text = serde_json::to_string(&ops).unwrap();
    assert!(text.contains(r#""row":{"ipsec":true}"#), "{text}");
    assert!(
        text.contains(r#"["external_ids","insert",["map",[["ovs-bundle-ipsec","c1"]]]]"#),
        "{text}"
    );
    // Someone else's ipsec=true: left as it is (unmarked) whether wanted or not.
    l.global.as_mut().unwrap().ipsec = true;
    assert_eq!(ipsec(&l, true), []);
    assert_eq!(ipsec(&l, false), []);
    assert!(l.ipsec_on());
    // Ours: turned off when no longer wanted.
    l.global
        .as_mut()
        .unwrap()
        .external_ids
        .insert(bundle::ovn::NB_IPSEC_OWNER.into(), "c1".into());
    assert!(l.ipsec_on());
    assert_eq!(
        ipsec(&l, false),
        [NbChange::Ipsec {
            uuid: Some("g1".into()),
            to: false
        }]
    );
    // No NB_Global row yet (ovn-northd makes it): inserted.
    l.global = None;
    let ops = transaction(&ipsec(&l, true), &l, "c1", "test");
    let text = serde_json::to_string(&ops).unwrap();
    assert!(text.contains(r#""op":"insert","row":{"external_ids":["map",[["ovs-bundle-ipsec","c1"]]],"ipsec":true},"table":"NB_Global""#), "{text}");
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
    let got: Vec<String> = plan(&want, false, &l)
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
    let got: Vec<String> = plan(&moved, false, &l)
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
    let errs = plan(&[ls("theirs", &[])], false, &l).unwrap_err();
    assert_eq!(errs, [PlanError::ForeignLogicalSwitch("theirs".into())]);
    let errs = plan(
        &[ls("ls0", &[("vm9", "0a:00:00:00:00:09 10.30.0.9")])],
        false,
        &l,
    )
    .unwrap_err();
    assert_eq!(errs, [PlanError::ForeignLogicalPort("vm9".into())]);
    // No NB database: nothing of ours to remove, but nothing can be added either.
    assert_eq!(plan(&[], false, &NbLive::default()), Ok(vec![]));
    assert_eq!(
        plan(&want, false, &NbLive::default()),
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
        false,
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

#[test]
fn a_localnet_port_is_written_read_back_and_changed_like_our_other_ports() {
    let localnet = |net: &str| LogicalPort {
        name: bundle::ovn::localnet_port_name("ls0"),
        address: bundle::ovn::LOCALNET_ADDRESS.into(),
        network: Some(net.into()),
    };
    let mut want = ls("ls0", &[("ovsb-h1", "0a:00:00:00:00:01 10.30.0.1")]);
    // In name order, as the builder writes them.
    want.ports.push(localnet("physnet"));
    // Added beside h1's: a port of type localnet naming its network.
    let l = live();
    let changes = plan(std::slice::from_ref(&want), false, &l).unwrap();
    let got: Vec<String> = changes.iter().map(NbChange::describe).collect();
    assert!(
        got.contains(&"+ logical port ls0/ovsb-ln-ls0 localnet to physical network physnet".into()),
        "{got:?}"
    );
    let t = transaction(&changes, &l, "c1", "test");
    let insert = t
        .iter()
        .find(|o| o["op"] == "insert" && o["table"] == "Logical_Switch_Port")
        .unwrap();
    assert_eq!(
        insert["row"],
        json!({"name": "ovsb-ln-ls0", "addresses": ["set", ["unknown"]], "type": "localnet",
               "options": ["map", [["network_name", "physnet"]]],
               "external_ids": ["map", [[OWNER_KEY, "c1"]]]})
    );
    // As the database has it after that transaction: read back as the bundle lists it, and
    // nothing more to do.
    let mut reply = vec![
        json!({"rows": [{"_uuid": ["uuid", "s1"], "name": "ls0", "ports": ["set", [["uuid", "p1"], ["uuid", "pl"]]],
            "external_ids": ["map", [[OWNER_KEY, "c1"], [SUBNET_KEY, "10.30.0.0/24"]]]}]}),
        json!({"rows": [
            {"_uuid": ["uuid", "p1"], "name": "ovsb-h1", "addresses": "0a:00:00:00:00:01 10.30.0.1", "type": "", "options": ["map", []], "external_ids": ["map", [[OWNER_KEY, "c1"]]]},
            {"_uuid": ["uuid", "pl"], "name": "ovsb-ln-ls0", "addresses": "unknown", "type": "localnet", "options": ["map", [["network_name", "physnet"]]], "external_ids": ["map", [[OWNER_KEY, "c1"]]]}]}),
        json!({"rows": []}),
    ];
    let l = NbLive::from_results(&reply).unwrap();
    assert_eq!(l.owned_state(), [want.clone()]);
    assert_eq!(plan(std::slice::from_ref(&want), false, &l), Ok(vec![]));
    // Another network, or the row's type changed by hand: one update of all three columns,
    // guarded on the row as read.
    let mut moved = want.clone();
    moved.ports[1] = localnet("dc2");
    let changes = plan(std::slice::from_ref(&moved), false, &l).unwrap();
    assert_eq!(
        changes.iter().map(NbChange::describe).collect::<Vec<_>>(),
        ["~ logical port ls0/ovsb-ln-ls0: localnet to physical network dc2"]
    );
    let t = transaction(&changes, &l, "c1", "test");
    assert_eq!(t[0]["op"], "wait");
    assert_eq!(t[0]["rows"][0]["type"], "localnet");
    assert_eq!(
        t[1]["row"],
        json!({"addresses": ["set", ["unknown"]], "type": "localnet",
               "options": ["map", [["network_name", "dc2"]]]})
    );
    reply[1]["rows"][1]["type"] = json!("");
    let l = NbLive::from_results(&reply).unwrap();
    let changes = plan(std::slice::from_ref(&want), false, &l).unwrap();
    assert_eq!(
        changes.iter().map(NbChange::describe).collect::<Vec<_>>(),
        ["~ logical port ls0/ovsb-ln-ls0: localnet to physical network physnet"]
    );
    // A VIF's row keeps no options: an update of h1 clears what someone added.
    let t = transaction(
        &plan(
            &[ls("ls0", &[("ovsb-h1", "0a:00:00:00:00:01 10.30.0.9")])],
            false,
            &l,
        )
        .unwrap(),
        &l,
        "c1",
        "test",
    );
    assert!(t.iter().any(|o| o["op"] == "update"
        && o["row"]
            == json!({"addresses": ["set", ["0a:00:00:00:00:01 10.30.0.9"]], "type": "",
                      "options": ["map", []]})));
}
