//! Meshes: `fleet.toml` read, and each `[[mesh]]` expanded into tunnels (GRE, or the mesh's
//! `type` and `key`) between every pair of its members, on the named bridge of each. Mesh tunnels
//! are protected (split horizon), so a full mesh never forms a forwarding loop; their PSKs are
//! none, one shared key, or one per pair derived from a fleet secret.

use crate::diag::{Diagnostic, Loc, SourceMap, Sources};
use crate::model::{Gre, Host};
use crate::psk::{self, PskError};
use crate::shape::{Field, Kind};
use bundle::psk::Psk;
use bundle::tunnel::port_name;
use serde::Deserialize;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::Path;
use toml::Spanned;

/// Every key of fleet.toml, for the shape check (see `profile::raw` for why serde refuses unknown
/// keys only in tests).
const FLEET: &[Field] = &[
    Field::opt("mesh", Kind::Tables(MESH)),
    Field::opt("dhcp_leases", Kind::Tables(super::dhcp::FLEET_LEASE)),
    Field::opt("ovn", Kind::Table(super::ovn::OVN)),
];
const MESH: &[Field] = &[
    Field::req("bridge", Kind::Str),
    Field::req("members", Kind::Array(&Kind::Str)),
    Field::opt("psk_file", Kind::Str),
    Field::opt("psk_secret_file", Kind::Str),
    Field::opt("type", Kind::Str),
    Field::opt("key", Kind::Int),
];

/// Where the keys of fleet.toml are documented, for hints.
const FLEET_HELP: &str = "fleet.toml is described by `builder help check` and in builder-check(1)";

#[derive(Debug, Deserialize)]
#[cfg_attr(test, serde(deny_unknown_fields))]
struct RawFleet {
    #[serde(default)]
    mesh: Vec<Spanned<RawMesh>>,
    #[serde(default)]
    dhcp_leases: Vec<Spanned<super::dhcp::RawFleetLease>>,
    ovn: Option<Spanned<super::ovn::RawOvn>>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(test, serde(deny_unknown_fields))]
struct RawMesh {
    bridge: Spanned<String>,
    members: Vec<Spanned<String>>,
    psk_file: Option<Spanned<String>>,
    /// One fleet secret from which each pair's PSK is derived.
    psk_secret_file: Option<Spanned<String>>,
    /// The tunnels' type (gre when omitted) and key, as in `[[bridges.gre]]`.
    #[serde(rename = "type")]
    kind: Option<Spanned<String>>,
    key: Option<Spanned<i64>>,
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

/// Reads `dir/fleet.toml` (if any) and adds each mesh's tunnels to its members' bridges. Its
/// text goes into `sources` for the snippets of its diagnostics.
pub fn expand_meshes(
    dir: &Path,
    hosts: &mut [Host],
    sources: &mut Sources,
    diags: &mut Vec<Diagnostic>,
) {
    let path = dir.join("fleet.toml");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return;
    };
    let file = path.display().to_string();
    let map = SourceMap::new(file.clone(), &text);
    let doc = match toml_edit::ImDocument::parse(text.as_str()) {
        Ok(doc) => doc,
        Err(e) => {
            sources.add_unparsed(&file, &text);
            let loc = e.span().map(|s| map.span_loc(&s));
            diags.push(
                Diagnostic::error(loc, e.message().trim_end().to_string())
                    .hint("this is not valid TOML there; fix the syntax, then run check again"),
            );
            return;
        }
    };
    let shape = crate::shape::check(doc.as_table(), FLEET, &map, FLEET_HELP);
    sources.add(&file, &text, shape.secret_spans);
    let shape_ok = shape.diags.is_empty();
    diags.extend(shape.diags);
    let raw: RawFleet = match toml::from_str(&text) {
        Ok(r) if shape_ok => r,
        Ok(_) => return,
        Err(e) => {
            // Reported by the shape check already unless the two disagree.
            if shape_ok {
                let loc = e.span().map(|s| map.span_loc(&s));
                diags.push(
                    Diagnostic::error(loc, e.message().trim_end().to_string()).hint(FLEET_HELP),
                );
            }
            return;
        }
    };
    let at = |span: std::ops::Range<usize>| Some(map.span_loc(&span));
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
        let (kind, tunnel_key) = match crate::profile::tunnel_type(m.kind.as_ref(), m.key.as_ref())
        {
            Ok(t) => t,
            Err((span, msg, hint)) => {
                diags.push(Diagnostic::error(at(span), msg).hint(hint));
                continue;
            }
        };
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
                        PskError::new(
                            format!("{}: {e}", file.display()),
                            "paths are relative to fleet.toml",
                        )
                    })
                    .and_then(|b| psk::from_file(b, &what));
                match value {
                    Err(e) => {
                        diags.push(Diagnostic::error(at(f.span()), e.message).hint(e.hint));
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
        // A tunnel joins two underlays of one family: a mesh over IPv4 and IPv6 hosts would
        // make tunnels no peer can answer.
        let families: Vec<(bool, &str)> = members
            .iter()
            .map(|&(h, _)| (hosts[h].underlay_ip.is_ipv4(), hosts[h].name.as_str()))
            .collect();
        if let (Some(v4), Some(v6)) = (
            families.iter().find(|f| f.0),
            families.iter().find(|f| !f.0),
        ) {
            diags.push(
                Diagnostic::error(
                    Some(mesh_loc.clone()),
                    format!(
                        "the mesh on {bridge} joins {} (IPv4 underlay) and {} (IPv6 underlay); a tunnel's ends must be of one address family",
                        v4.1, v6.1
                    ),
                )
                .hint("make one mesh per address family"),
            );
            continue;
        }
        // As for a [[bridges.gre]] entry: ovs-monitor-ipsec leaves ip6gre alone.
        let keyed = !matches!(key, MeshKey::Plain);
        if let Some(&(h, _)) = members.first() {
            let ip = hosts[h].underlay_ip;
            if keyed && !kind.ipsec_supported(ip) {
                diags.push(
                    Diagnostic::error(
                        Some(mesh_loc.clone()),
                        format!("the mesh on {bridge} is GRE over IPv6 (OVS type {}) with PSKs: ovs-monitor-ipsec does not protect that type, so its tunnels would carry their traffic in plaintext", kind.ovs_type(ip)),
                    )
                    .hint("set type = \"vxlan\" or \"geneve\" in this [[mesh]], or drop its psk_file/psk_secret_file"),
                );
                continue;
            }
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
        let peers: Vec<(IpAddr, String)> = members
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
                let port = port_name(kind, *ip, tunnel_key);
                if let Some(first) = existing[i].get(&port) {
                    if i > j && before_mesh[j].contains(&port_name(kind, peers[i].0, tunnel_key)) {
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
                    kind,
                    key: tunnel_key,
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
    super::dhcp::add_fleet_leases(&raw.dhcp_leases, hosts, &map, diags);
    if let Some(ovn) = &raw.ovn {
        super::ovn::expand(dir, ovn, hosts, &map, diags);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape check's keys of fleet.toml and serde's (refusing unknown keys in tests) agree.
    #[test]
    fn every_schema_key_is_read() {
        let text = "[[mesh]]\nbridge = \"br0\"\nmembers = [\"a\", \"b\"]\npsk_file = \"f\"\n\
                    psk_secret_file = \"g\"\ntype = \"vxlan\"\nkey = 7\n\
                    [[dhcp_leases]]\nbridge = \"br0\"\nmac = \"52:54:00:00:00:01\"\n\
                    ip = \"10.0.0.5\"\nname = \"n1\"\n\
                    [ovn]\ncentral = \"c\"\ndatapath = \"netdev\"\n\
                    [[ovn.switches]]\nname = \"ls0\"\nsubnet = \"10.30.0.0/24\"\n\
                    [[ovn.chassis]]\nhost = \"a\"\nsystem_id = \"a\"\nswitch = \"ls0\"\n\
                    interface = \"ovn0\"\naddress = \"10.30.0.1/24\"\n";
        let doc = toml_edit::ImDocument::parse(text).unwrap();
        let checked = crate::shape::check(doc.as_table(), FLEET, &SourceMap::new("f", text), "");
        assert!(checked.diags.is_empty(), "{:#?}", checked.diags);
        let raw: RawFleet = toml::from_str(text).unwrap();
        assert_eq!(raw.mesh.len(), 1);
    }
}
