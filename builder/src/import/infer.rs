//! Each host's `underlay_ip`, which ovs-crate never needed, inferred from the fleet where it is
//! unambiguous: an address other hosts tunnel to is some host's own, and tunnels are symmetric
//! (the owner has a tunnel back to each of them, with the same PSK or none).
//!
//! The candidates for the owner of address R are the hosts that do not tunnel to R themselves and
//! have a tunnel with each PSK used towards R. Once some host's address is known, the owner of any
//! R that host tunnels to must tunnel back to it, which narrows other candidate sets; and a host
//! has one address. This repeats until nothing changes. An address with one candidate that no
//! other address also claims is that host's; one with no candidate belongs to no host of the map
//! (an external peer); anything else is left for the operator, with the candidates named.

use super::ovs_crate::IHost;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

/// What was inferred.
#[derive(Debug, Default)]
pub struct Underlays {
    /// Per host (same order as the input): its address, if unambiguous.
    pub known: Vec<Option<Ipv4Addr>>,
    /// Per host: the addresses it could have, where it is not known.
    pub candidates: Vec<Vec<Ipv4Addr>>,
    /// Addresses tunnelled to that no host of the map can have.
    pub external: BTreeSet<Ipv4Addr>,
}

pub fn underlays(hosts: &[IHost]) -> Underlays {
    let n = hosts.len();
    // Per host: (remote, psk) of every tunnel.
    let tunnels: Vec<Vec<(Ipv4Addr, Option<&str>)>> = hosts
        .iter()
        .map(|h| {
            h.bridges
                .iter()
                .flat_map(|b| &b.gre)
                .map(|g| (g.remote_ip, g.psk.as_deref()))
                .collect()
        })
        .collect();
    let lists = |h: usize, r: Ipv4Addr| tunnels[h].iter().any(|t| t.0 == r);
    let mut cand: BTreeMap<Ipv4Addr, BTreeSet<usize>> = BTreeMap::new();
    for r in tunnels.iter().flatten().map(|t| t.0) {
        if cand.contains_key(&r) {
            continue;
        }
        let psks: BTreeSet<Option<&str>> = tunnels
            .iter()
            .flatten()
            .filter(|t| t.0 == r)
            .map(|t| t.1)
            .collect();
        let set = (0..n)
            .filter(|&h| !lists(h, r))
            .filter(|&h| psks.iter().all(|p| tunnels[h].iter().any(|t| t.1 == *p)))
            .collect();
        cand.insert(r, set);
    }
    let mut known: Vec<Option<Ipv4Addr>> = vec![None; n];
    loop {
        let mut changed = false;
        // An address with one candidate, claimed by no other such address, is that host's.
        let singles: Vec<(Ipv4Addr, usize)> = cand
            .iter()
            .filter(|(_, c)| c.len() == 1)
            .filter_map(|(r, c)| c.first().map(|&h| (*r, h)))
            .collect();
        for &(r, h) in &singles {
            let claims = singles.iter().filter(|s| s.1 == h).count();
            if claims == 1 && known[h].is_none() {
                known[h] = Some(r);
                changed = true;
            }
        }
        // A host has one address: it is no candidate for any other.
        for (r, c) in cand.iter_mut() {
            for (h, k) in known.iter().enumerate() {
                if k.is_some_and(|k| k != *r) && c.remove(&h) {
                    changed = true;
                }
            }
        }
        // The owner of an address a known host tunnels to tunnels back to that host.
        for (l, k) in known.iter().enumerate() {
            let Some(lu) = k else { continue };
            for &(r, _) in &tunnels[l] {
                if let Some(c) = cand.get_mut(&r) {
                    let before = c.len();
                    c.retain(|&h| lists(h, *lu));
                    changed |= c.len() != before;
                }
            }
        }
        if !changed {
            break;
        }
    }
    let mut candidates = vec![Vec::new(); n];
    for (r, c) in &cand {
        for &h in c {
            if known[h].is_none() {
                candidates[h].push(*r);
            }
        }
    }
    let external = cand
        .iter()
        .filter(|(_, c)| c.is_empty())
        .map(|(r, _)| *r)
        .collect();
    Underlays {
        known,
        candidates,
        external,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::Loc;
    use crate::import::ovs_crate::{IBridge, IGre};

    fn host(name: &str, remotes: &[(&str, Option<&str>)]) -> IHost {
        let loc = Loc {
            file: "f".into(),
            line: 1,
            col: 1,
            width: 1,
        };
        IHost {
            name: name.into(),
            loc: loc.clone(),
            interfaces_file: None,
            bridges: vec![IBridge {
                name: "br0".into(),
                host_interfaces: vec![],
                forwarder: None,
                gre: remotes
                    .iter()
                    .map(|(r, p)| IGre {
                        remote_ip: r.parse().unwrap(),
                        psk: p.map(str::to_string),
                        loc: loc.clone(),
                    })
                    .collect(),
            }],
        }
    }

    fn ip(s: &str) -> Option<Ipv4Addr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn a_full_mesh_and_a_pair_are_unambiguous() {
        let u = underlays(&[
            host("a", &[("10.0.0.2", None), ("10.0.0.3", None)]),
            host("b", &[("10.0.0.1", None), ("10.0.0.3", None)]),
            host("c", &[("10.0.0.1", None), ("10.0.0.2", None)]),
        ]);
        assert_eq!(u.known, [ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.3")]);
        let u = underlays(&[
            host("a", &[("10.0.0.2", None)]),
            host("b", &[("10.0.0.1", None)]),
        ]);
        assert_eq!(u.known, [ip("10.0.0.1"), ip("10.0.0.2")]);
    }

    #[test]
    fn a_star_needs_the_psks_to_tell_the_leaves_apart() {
        let star = |p1, p2| {
            underlays(&[
                host("gw", &[("10.0.0.2", p1), ("10.0.0.3", p2)]),
                host("n1", &[("10.0.0.1", p1)]),
                host("n2", &[("10.0.0.1", p2)]),
            ])
        };
        let u = star(Some("k1"), Some("k2"));
        assert_eq!(u.known, [ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.3")]);
        // Plain GRE to both: the gateway is known, the leaves could be either address.
        let u = star(None, None);
        assert_eq!(u.known, [ip("10.0.0.1"), None, None]);
        assert_eq!(
            u.candidates[1],
            [ip("10.0.0.2").unwrap(), ip("10.0.0.3").unwrap()]
        );
    }

    #[test]
    fn an_address_no_host_can_have_is_external() {
        let u = underlays(&[host("a", &[("5.5.5.5", Some("k"))])]);
        assert_eq!(u.known, [None]);
        assert!(u.external.contains(&"5.5.5.5".parse().unwrap()));
    }
}
