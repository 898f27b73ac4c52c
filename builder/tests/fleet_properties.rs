//! Property tests over generated fleets: whatever meshes an operator declares, the tunnels the
//! builder generates are symmetric (same PSK both ends) and loop-free; and any ring of three or
//! more plain tunnels is caught as a loop.

use builder::profile::load_fleet;
use bundle::PortRole;
use proptest::prelude::*;
use std::collections::HashMap;

fn write_fleet(
    dir: &std::path::Path,
    hosts: usize,
    meshes: &[(Vec<usize>, bool)],
    ring: Option<usize>,
) {
    std::fs::create_dir_all(dir.join("hosts")).unwrap();
    std::fs::create_dir_all(dir.join("secrets")).unwrap();
    std::fs::write(
        dir.join("secrets/fleet.secret"),
        "property-test-fleet-secret-0123456789\n",
    )
    .unwrap();
    for h in 0..hosts {
        let mut p = format!(
            "[host]\nname = \"h{h}\"\nunderlay_ip = \"10.0.{}.{}\"\n",
            h / 200,
            h % 200 + 1
        );
        for m in 0..meshes.len() {
            p.push_str(&format!("\n[[bridges]]\nname = \"mesh{m}\"\n"));
        }
        if let Some(n) = ring {
            if h < n {
                p.push_str("\n[[bridges]]\nname = \"ring\"\n");
                for peer in [(h + 1) % n, (h + n - 1) % n] {
                    p.push_str(&format!(
                        "\n[[bridges.gre]]\nremote_ip = \"10.0.{}.{}\"\n",
                        peer / 200,
                        peer % 200 + 1
                    ));
                }
            }
        }
        std::fs::write(dir.join(format!("hosts/h{h}.toml")), p).unwrap();
    }
    let mut fleet = String::new();
    for (m, (members, keyed)) in meshes.iter().enumerate() {
        let names: Vec<String> = members.iter().map(|h| format!("\"h{h}\"")).collect();
        fleet.push_str(&format!(
            "[[mesh]]\nbridge = \"mesh{m}\"\nmembers = [{}]\n",
            names.join(", ")
        ));
        if *keyed {
            fleet.push_str("psk_secret_file = \"secrets/fleet.secret\"\n");
        }
    }
    std::fs::write(dir.join("fleet.toml"), fleet).unwrap();
}

/// A fleet of 2-12 hosts with one or two meshes over disjoint host sets (a pair of hosts can be
/// joined from one bridge only).
fn fleets() -> impl Strategy<Value = (usize, Vec<(Vec<usize>, bool)>)> {
    (4usize..12).prop_flat_map(|n| {
        (
            Just(n),
            proptest::collection::vec(0usize..3, n),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(n, side, k1, k2)| {
                let a: Vec<usize> = (0..n).filter(|h| side[*h] == 0).collect();
                let b: Vec<usize> = (0..n).filter(|h| side[*h] == 1).collect();
                let meshes = [(a, k1), (b, k2)]
                    .into_iter()
                    .filter(|(m, _)| m.len() >= 2)
                    .collect();
                (n, meshes)
            })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    fn generated_fleets_are_symmetric_and_loop_free((n, meshes) in fleets()) {
        let dir = tempfile::tempdir().unwrap();
        write_fleet(dir.path(), n, &meshes, None);
        let fleet = load_fleet(dir.path()).map_err(|d| TestCaseError::fail(format!("{d:?}")))?;
        prop_assert!(fleet.notes.is_empty(), "{:?}", fleet.notes);
        let by_ip: HashMap<_, _> = fleet.hosts.iter().map(|h| (h.underlay_ip, h)).collect();
        let mut tunnels = 0;
        for h in &fleet.hosts {
            for g in h.bridges.iter().flat_map(|b| &b.gre) {
                tunnels += 1;
                prop_assert!(g.protected);
                let peer = by_ip[&g.remote_ip];
                let back = peer.bridges.iter().flat_map(|b| &b.gre).find(|b| b.remote_ip == h.underlay_ip);
                prop_assert!(back.is_some_and(|b| b.psk == g.psk), "{} -> {} not symmetric", h.name, peer.name);
            }
            // Rendered state: every tunnel port protected.
            let state = builder::render::ovs_state(h);
            prop_assert!(state.ports().filter(|(_, p)| p.role == PortRole::Gre).all(|(_, p)| p.protected));
        }
        let expected: usize = meshes.iter().map(|(m, _)| m.len() * (m.len() - 1)).sum();
        prop_assert_eq!(tunnels, expected);
    }

    #[test]
    fn every_ring_of_plain_tunnels_is_a_loop(n in 3usize..12) {
        let dir = tempfile::tempdir().unwrap();
        write_fleet(dir.path(), n, &[], Some(n));
        let errors = load_fleet(dir.path()).expect_err("ring accepted");
        prop_assert_eq!(errors.len(), 1, "{:?}", errors);
        prop_assert!(errors[0].message.contains("form a loop"));
        prop_assert_eq!(errors[0].message.matches(" -> ").count(), n, "{}", errors[0].message);
    }
}
