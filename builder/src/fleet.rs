//! The fleet as a whole: meshes declared in `fleet.toml`, and the checks that need every host at
//! once: links symmetric with matching PSKs, peers known, underlay addresses unique, addresses
//! unique on each L2 network and networks disjoint, forwarders covering their networks, and no
//! forwarding loop through unprotected tunnels unless RSTP runs on every bridge of it.

use crate::diag::{Diagnostic, Loc, SourceMap};
use crate::model::{gre_port_name, Gre, Host, Psk};
use crate::net::Ipv4Cidr;
use crate::profile::{check_psk, psk_file_text};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::Path;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFleet {
    #[serde(default)]
    mesh: Vec<Spanned<RawMesh>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMesh {
    bridge: Spanned<String>,
    members: Vec<Spanned<String>>,
    psk_file: Option<Spanned<String>>,
    /// One fleet secret from which each pair's PSK is derived.
    psk_secret_file: Option<Spanned<String>>,
}

/// How a mesh keys its tunnels.
enum MeshKey {
    Plain,
    Shared(Psk),
    Derived(Vec<u8>),
}

/// The PSK for the link between `a` and `b` of a mesh on `bridge`: HMAC-SHA256 of the pair under
/// the fleet secret, so each pair has its own key and both ends compute the same one.
pub fn derive_psk(secret: &[u8], bridge: &str, a: &str, b: &str) -> String {
    use base64::Engine;
    use hmac::Mac;
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(format!("ovs-bundle mesh psk v1\0{bridge}\0{lo}\0{hi}").as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Reads `dir/fleet.toml` (if any) and adds each mesh's tunnels to its members' bridges.
pub fn expand_meshes(dir: &Path, hosts: &mut [Host], diags: &mut Vec<Diagnostic>) {
    let path = dir.join("fleet.toml");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return;
    };
    let map = SourceMap::new(path.display().to_string(), &text);
    let raw: RawFleet = match toml::from_str(&text) {
        Ok(r) => r,
        Err(e) => {
            let loc = e.span().map(|s| map.loc(s.start));
            diags.push(
                Diagnostic::error(loc, e.message().trim_end().to_string())
                    .hint("see docs/profiles.md for fleet.toml"),
            );
            return;
        }
    };
    let at = |span: std::ops::Range<usize>| Some(map.loc(span.start));
    let index: HashMap<String, usize> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| (h.name.clone(), i))
        .collect();
    for mesh in &raw.mesh {
        let m = mesh.get_ref();
        let mesh_loc = map.loc(mesh.span().start);
        let bridge = m.bridge.get_ref();
        let before = diags.len();
        let key = match (&m.psk_file, &m.psk_secret_file) {
            (Some(_), Some(b)) => {
                diags.push(
                    Diagnostic::error(at(b.span()), "both psk_file and psk_secret_file are set")
                        .hint("keep one of them"),
                );
                continue;
            }
            (None, None) => MeshKey::Plain,
            (Some(f), None) | (None, Some(f)) => {
                let file = dir.join(f.get_ref());
                let what = format!("key in {:?}", f.get_ref());
                let value = std::fs::read(&file)
                    .map_err(|e| {
                        (
                            format!("{}: {e}", file.display()),
                            "paths are relative to fleet.toml".to_string(),
                        )
                    })
                    .and_then(|b| psk_file_text(b, &what))
                    .and_then(|v| check_psk(v, &what));
                match value {
                    Err((msg, hint)) => {
                        diags.push(Diagnostic::error(at(f.span()), msg).hint(hint));
                        continue;
                    }
                    Ok(psk) if m.psk_file.is_some() => MeshKey::Shared(psk),
                    Ok(secret) => MeshKey::Derived(secret.expose().as_bytes().to_vec()),
                }
            }
        };
        let mut members: Vec<(usize, usize)> = Vec::new();
        let mut seen = HashSet::new();
        for member in &m.members {
            let name = member.get_ref();
            let Some(&h) = index.get(name) else {
                diags.push(
                    Diagnostic::error(
                        at(member.span()),
                        format!("mesh member {name:?} has no profile"),
                    )
                    .hint(format!(
                        "create hosts/{name}.toml or remove it from members"
                    )),
                );
                continue;
            };
            if !seen.insert(name.clone()) {
                diags.push(
                    Diagnostic::error(
                        at(member.span()),
                        format!("mesh member {name:?} is listed twice"),
                    )
                    .hint("list each host once"),
                );
                continue;
            }
            match hosts[h].bridges.iter().position(|b| &b.name == bridge) {
                Some(b) => members.push((h, b)),
                None => diags.push(
                    Diagnostic::error(
                        at(member.span()),
                        format!(
                            "host {name} ({}) has no bridge {bridge} for this mesh",
                            hosts[h].loc.file
                        ),
                    )
                    .hint(format!(
                        "add a [[bridges]] named {bridge} to {}",
                        hosts[h].loc.file
                    )),
                ),
            }
        }
        if m.members.len() < 2 {
            diags.push(
                Diagnostic::error(Some(mesh_loc.clone()), "a mesh needs at least two members")
                    .hint("list the hosts to join"),
            );
        }
        if diags.len() > before {
            continue;
        }
        // Every port name each member already has, so a mesh never doubles a tunnel.
        let mut existing: Vec<HashMap<String, Loc>> = members
            .iter()
            .map(|&(h, _)| {
                hosts[h]
                    .bridges
                    .iter()
                    .flat_map(|b| b.gre.iter().map(|g| (g.port.clone(), g.loc.clone())))
                    .collect()
            })
            .collect();
        let before_mesh: Vec<HashSet<String>> = existing
            .iter()
            .map(|e| e.keys().cloned().collect())
            .collect();
        let peers: Vec<(Ipv4Addr, String)> = members
            .iter()
            .map(|&(h, _)| (hosts[h].underlay_ip, hosts[h].name.clone()))
            .collect();
        let mut pair_keys: HashMap<(usize, usize), Psk> = HashMap::new();
        for (i, &(h, b)) in members.iter().enumerate() {
            let me = hosts[h].name.clone();
            let mut added = Vec::with_capacity(members.len());
            for (j, (ip, peer)) in peers.iter().enumerate() {
                if i == j {
                    continue;
                }
                let port = gre_port_name(*ip);
                if let Some(first) = existing[i].get(&port) {
                    if i > j && before_mesh[j].contains(&gre_port_name(peers[i].0)) {
                        continue; // reported from the other end already
                    }
                    diags.push(
                        Diagnostic::error(
                            Some(mesh_loc.clone()),
                            format!("the mesh on {bridge} would connect {me} to {peer}, but {me} already has a GRE connection to {peer} at {first}"),
                        )
                        .hint("remove the [[bridges.gre]] entry or take the host out of the mesh"),
                    );
                    continue;
                }
                existing[i].insert(port.clone(), mesh_loc.clone());
                let psk = match &key {
                    MeshKey::Plain => None,
                    MeshKey::Shared(p) => Some(p.clone()),
                    // Each pair's key is derived once and used at both ends.
                    MeshKey::Derived(secret) if i < j => {
                        let k = Psk::new(derive_psk(secret, bridge, &me, peer));
                        pair_keys.insert((i, j), k.clone());
                        Some(k)
                    }
                    MeshKey::Derived(secret) => Some(
                        pair_keys
                            .remove(&(j, i))
                            .unwrap_or_else(|| Psk::new(derive_psk(secret, bridge, &me, peer))),
                    ),
                };
                added.push(Gre {
                    port,
                    remote_ip: *ip,
                    psk,
                    loc: mesh_loc.clone(),
                    protected: true,
                    external: false,
                });
            }
            hosts[h].bridges[b].gre.extend(added);
        }
    }
}

/// One end of a link: host, bridge, and whether its tunnel port is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct End {
    host: usize,
    bridge: usize,
    protected: bool,
}

/// Cross-host checks on fully expanded hosts. Errors and notes go to `diags`.
pub fn check_fleet(hosts: &[Host], diags: &mut Vec<Diagnostic>) {
    let mut by_ip: HashMap<Ipv4Addr, usize> = HashMap::new();
    for (i, host) in hosts.iter().enumerate() {
        if let Some(&first) = by_ip.get(&host.underlay_ip) {
            let first = &hosts[first];
            diags.push(
                Diagnostic::error(
                    Some(host.loc.clone()),
                    format!(
                        "underlay_ip {} of host {:?} is also host {:?}'s ({})",
                        host.underlay_ip, host.name, first.name, first.loc
                    ),
                )
                .hint("every host needs its own underlay address"),
            );
        } else {
            by_ip.insert(host.underlay_ip, i);
        }
    }
    // Each host's tunnels by peer address.
    let tunnels: Vec<HashMap<Ipv4Addr, (usize, &Gre)>> = hosts
        .iter()
        .map(|h| {
            h.bridges
                .iter()
                .enumerate()
                .flat_map(|(b, br)| br.gre.iter().map(move |g| (g.remote_ip, (b, g))))
                .collect()
        })
        .collect();
    let mut links: Vec<(End, End)> = Vec::new();
    for (h, host) in hosts.iter().enumerate() {
        for (b, bridge) in host.bridges.iter().enumerate() {
            for g in bridge.gre.iter().filter(|g| !g.external) {
                let Some(&r) = by_ip.get(&g.remote_ip) else {
                    diags.push(
                        Diagnostic::error(
                            Some(g.loc.clone()),
                            format!("host {}: remote_ip {} is not the underlay_ip of any host in the fleet", host.name, g.remote_ip),
                        )
                        .hint("fix the address, or mark the connection `external = true` if the peer is outside this fleet"),
                    );
                    continue;
                };
                let Some(&(rb, back)) = tunnels[r].get(&host.underlay_ip) else {
                    let peer = &hosts[r];
                    diags.push(
                        Diagnostic::error(
                            Some(g.loc.clone()),
                            format!(
                                "host {} has a GRE connection to {} ({}), but {} has none back to {} ({})",
                                host.name, peer.name, g.remote_ip, peer.name, host.underlay_ip, peer.loc
                            ),
                        )
                        .hint(format!("add a [[bridges.gre]] with remote_ip = \"{}\" to {}", host.underlay_ip, peer.loc.file)),
                    );
                    continue;
                };
                if h > r {
                    continue; // each link once, from its lower end
                }
                if g.psk != back.psk {
                    let how = match (&g.psk, &back.psk) {
                        (Some(_), None) | (None, Some(_)) => "one end has a PSK and the other none",
                        _ => "the two ends have different PSKs",
                    };
                    diags.push(
                        Diagnostic::error(
                            Some(g.loc.clone()),
                            format!(
                                "link {} <-> {}: {how} (other end at {})",
                                host.name, hosts[r].name, back.loc
                            ),
                        )
                        .hint("both ends of a tunnel need the same psk or psk_file, or neither"),
                    );
                }
                links.push((
                    End {
                        host: h,
                        bridge: b,
                        protected: g.protected,
                    },
                    End {
                        host: r,
                        bridge: rb,
                        protected: back.protected,
                    },
                ));
            }
        }
    }
    check_addresses(hosts, &links, diags);
    check_loops(hosts, &links, diags);
}

/// Union-find over (host, bridge): the L2 networks.
fn networks(hosts: &[Host], links: &[(End, End)]) -> HashMap<(usize, usize), usize> {
    let ids: Vec<(usize, usize)> = hosts
        .iter()
        .enumerate()
        .flat_map(|(h, host)| (0..host.bridges.len()).map(move |b| (h, b)))
        .collect();
    let index: HashMap<(usize, usize), usize> =
        ids.iter().enumerate().map(|(i, k)| (*k, i)).collect();
    let mut parent: Vec<usize> = (0..ids.len()).collect();
    fn find(p: &mut [usize], mut x: usize) -> usize {
        while p[x] != x {
            p[x] = p[p[x]];
            x = p[x];
        }
        x
    }
    for (a, b) in links {
        let (x, y) = (index[&(a.host, a.bridge)], index[&(b.host, b.bridge)]);
        let (rx, ry) = (find(&mut parent, x), find(&mut parent, y));
        parent[rx] = ry;
    }
    ids.iter()
        .enumerate()
        .map(|(i, k)| (*k, find(&mut parent, i)))
        .collect()
}

fn check_addresses(hosts: &[Host], links: &[(End, End)], diags: &mut Vec<Diagnostic>) {
    let net_of = networks(hosts, links);
    // Per network: addresses, and the subnets they are on.
    let mut addrs: BTreeMap<usize, Vec<(Ipv4Cidr, &str, &Loc)>> = BTreeMap::new();
    for (h, host) in hosts.iter().enumerate() {
        for (b, bridge) in host.bridges.iter().enumerate() {
            for hi in &bridge.host_interfaces {
                if let Some(a) = hi.address {
                    addrs
                        .entry(net_of[&(h, b)])
                        .or_default()
                        .push((a, &host.name, &hi.loc));
                }
            }
        }
    }
    let mut subnets: Vec<(u32, u32, usize, Ipv4Cidr, &Loc)> = Vec::new();
    for (net, list) in &addrs {
        let mut seen: HashMap<Ipv4Addr, (&str, &Loc)> = HashMap::new();
        let mut nets: HashSet<Ipv4Cidr> = HashSet::new();
        for (a, host, loc) in list {
            if let Some((other, first)) = seen.insert(a.addr, (host, loc)) {
                diags.push(
                    Diagnostic::error(Some((*loc).clone()), format!("address {} of host {host} is also host {other}'s ({first}), on the same L2 network", a.addr))
                        .hint("give every interface on a network its own address"),
                );
            }
            if nets.insert(a.network()) {
                let n = a.network();
                let start = u32::from(n.addr);
                subnets.push((start, start | !n.mask(), *net, n, loc));
            }
        }
    }
    subnets.sort_by_key(|s| (s.0, s.1));
    for (i, a) in subnets.iter().enumerate() {
        for b in subnets[i + 1..].iter().take_while(|b| b.0 <= a.1) {
            if a.2 != b.2 {
                diags.push(
                    Diagnostic::error(
                        Some(b.4.clone()),
                        format!(
                            "subnet {} overlaps {} ({}) of another L2 network",
                            b.3, a.3, a.4
                        ),
                    )
                    .hint("separate networks need separate subnets, or NAT and routing break"),
                );
            }
        }
    }
    for (h, host) in hosts.iter().enumerate() {
        for (b, bridge) in host.bridges.iter().enumerate() {
            let Some(f) = &bridge.forwarder else { continue };
            for (a, other, loc) in addrs.get(&net_of[&(h, b)]).into_iter().flatten() {
                if !f.source.contains(a.addr) {
                    diags.push(
                        Diagnostic::error(
                            Some(f.loc.clone()),
                            format!("forwarder of {} on {} has source {}, which does not contain {} of host {other} ({loc}) behind it", host.name, bridge.name, f.source, a.addr),
                        )
                        .hint("widen source to the whole network behind the forwarder"),
                    );
                }
            }
        }
    }
}

/// Finds forwarding loops. A frame crosses a bridge from one tunnel to another unless both are
/// protected (split horizon), so loops are cycles in the graph whose vertices are directed link
/// traversals and whose edges are such crossings. Tarjan's algorithm finds the strongly connected
/// parts in linear time; a crossing inside one lies on a cycle.
fn check_loops(hosts: &[Host], links: &[(End, End)], diags: &mut Vec<Diagnostic>) {
    // Arc 2i goes links[i].0 -> links[i].1, arc 2i+1 back.
    let arc_ends = |a: usize| -> (End, End) {
        let (x, y) = links[a / 2];
        if a.is_multiple_of(2) {
            (x, y)
        } else {
            (y, x)
        }
    };
    // Per bridge, the arcs leaving it: all of them, and those leaving by an unprotected port
    // (the only ones a frame that came in by a protected port may take). Keeping both lists
    // makes a full mesh, where every port is protected, cost nothing here.
    let mut leaving: HashMap<(usize, usize), (Vec<usize>, Vec<usize>)> = HashMap::new();
    for a in 0..links.len() * 2 {
        let (from, _) = arc_ends(a);
        let entry = leaving.entry((from.host, from.bridge)).or_default();
        entry.0.push(a);
        if !from.protected {
            entry.1.push(a);
        }
    }
    let next = |a: usize| -> Vec<usize> {
        let (_, at) = arc_ends(a);
        let Some((all, unprotected)) = leaving.get(&(at.host, at.bridge)) else {
            return Vec::new();
        };
        let candidates = if at.protected { unprotected } else { all };
        candidates
            .iter()
            .copied()
            .filter(|&b| b / 2 != a / 2)
            .collect()
    };
    let n = links.len() * 2;
    let (mut index, mut low, mut on_stack) = (vec![usize::MAX; n], vec![0; n], vec![false; n]);
    let mut comp = vec![usize::MAX; n];
    let (mut counter, mut comps, mut stack) = (0, 0, Vec::new());
    for root in 0..n {
        if index[root] != usize::MAX {
            continue;
        }
        let mut work: Vec<(usize, Vec<usize>, usize)> = vec![(root, next(root), 0)];
        index[root] = counter;
        low[root] = counter;
        counter += 1;
        stack.push(root);
        on_stack[root] = true;
        while let Some((v, succ, i)) = work.last_mut() {
            let v = *v;
            if *i < succ.len() {
                let w = succ[*i];
                *i += 1;
                if index[w] == usize::MAX {
                    index[w] = counter;
                    low[w] = counter;
                    counter += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    let s = next(w);
                    work.push((w, s, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
            } else {
                work.pop();
                if let Some((parent, _, _)) = work.last() {
                    low[*parent] = low[*parent].min(low[v]);
                }
                if low[v] == index[v] {
                    while let Some(w) = stack.pop() {
                        on_stack[w] = false;
                        comp[w] = comps;
                        if w == v {
                            break;
                        }
                    }
                    comps += 1;
                }
            }
        }
    }
    // One report per strongly connected part that holds a crossing; a loop is found once in each
    // direction, so report each set of bridges once.
    let mut reported = HashSet::new();
    let mut named = HashSet::new();
    for a in 0..n {
        for b in next(a) {
            if comp[a] != comp[b] || !reported.insert(comp[a]) {
                continue;
            }
            let cycle = cycle_through(a, b, &comp, &next);
            let bridges: Vec<(usize, usize)> = cycle
                .iter()
                .map(|&x| (arc_ends(x).0.host, arc_ends(x).0.bridge))
                .collect();
            let mut key = bridges.clone();
            key.sort_unstable();
            if !named.insert(key) {
                continue;
            }
            let names: Vec<String> = bridges
                .iter()
                .map(|&(h, br)| format!("{}/{}", hosts[h].name, hosts[h].bridges[br].name))
                .collect();
            let all_rstp = bridges.iter().all(|&(h, br)| hosts[h].bridges[br].rstp);
            let (h0, b0) = bridges[0];
            let loc = Some(hosts[h0].bridges[b0].loc.clone());
            let text = format!(
                "GRE tunnels form a loop: {} -> {}",
                names.join(" -> "),
                names[0]
            );
            diags.push(if all_rstp {
                Diagnostic::note(loc, format!("{text}; RSTP on every bridge of it breaks the loop"))
            } else {
                Diagnostic::error(loc, format!("{text}: broadcasts would circulate forever"))
                    .hint("use a [[mesh]] in fleet.toml (its tunnels are protected), remove a link, or set rstp = true on every bridge of the loop")
            });
        }
    }
}

/// A cycle of arcs starting `a -> b`, within their strongly connected part (breadth-first from
/// `b` back to `a`, so the named loop is a shortest one).
fn cycle_through(
    a: usize,
    b: usize,
    comp: &[usize],
    next: &dyn Fn(usize) -> Vec<usize>,
) -> Vec<usize> {
    let mut prev: HashMap<usize, usize> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([b]);
    prev.insert(b, b);
    while let Some(x) = queue.pop_front() {
        if x == a {
            break;
        }
        for y in next(x) {
            if comp[y] == comp[a] && !prev.contains_key(&y) {
                prev.insert(y, x);
                queue.push_back(y);
            }
        }
    }
    let mut path = vec![a];
    let mut x = a;
    while x != b {
        x = prev[&x];
        path.push(x);
    }
    path.reverse();
    // path runs b .. a; the cycle is a, b, ..., (back to a)
    path.rotate_right(1);
    path
}
