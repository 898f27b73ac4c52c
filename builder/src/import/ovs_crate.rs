//! The ovs-crate environment map, read from its EDN tree into hosts, bridges, tunnels and
//! forwarders, every problem collected with its place in the EDN file. Keys are those of the
//! original tool's README, plus `:ovs-config`, which its code actually read instead of the
//! README's `:ovs-info`. Host names become file names, so they are checked here, before anything
//! is written; everything else is left to `builder check` on the result, which names the line of
//! the generated profile.

use super::edn::{Kind, Val};
use crate::diag::{Diagnostic, Loc};
use crate::net::Ipv4Cidr;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// One host of the map.
#[derive(Debug)]
pub struct IHost {
    pub name: String,
    /// Where the host's key is in the EDN file.
    pub loc: Loc,
    pub interfaces_file: Option<IfSource>,
    pub bridges: Vec<IBridge>,
}

/// What `:interfaces-file` said.
#[derive(Debug)]
pub enum IfSource {
    /// A plain path string.
    Path(String, Loc),
    /// `(utils/resource-path "name")`: a classpath resource.
    Resource(String, Loc),
    /// Any other form (a function call the importer cannot evaluate).
    Unknown(Loc),
}

#[derive(Debug)]
pub struct IBridge {
    pub name: String,
    pub host_interfaces: Vec<String>,
    pub gre: Vec<IGre>,
    pub forwarder: Option<IForwarder>,
}

#[derive(Debug)]
pub struct IGre {
    pub remote_ip: Ipv4Addr,
    pub psk: Option<String>,
    pub loc: Loc,
}

#[derive(Debug)]
pub struct IForwarder {
    pub from: String,
    pub via: String,
    /// Always `a.b.c.d/len`: the netmask form is converted.
    pub source: String,
}

/// Reads the hosts of `root`. Errors go to `diags` (nothing should be written if any), notes
/// too (what was ignored or renamed).
pub fn hosts(root: &Val, diags: &mut Vec<Diagnostic>) -> Vec<IHost> {
    let mut r = Reader { diags };
    r.root(root)
}

struct Reader<'a> {
    diags: &'a mut Vec<Diagnostic>,
}

const HOST_KEYS: &[&str] = &["ovs-info", "ovs-config"];
const OVS_KEYS: &[&str] = &["interfaces-file", "bridges"];
const BRIDGE_KEYS: &[&str] = &[
    "name",
    "host-interfaces-to-connect",
    "gre-connections",
    "act-as-forwarder",
];
const GRE_KEYS: &[&str] = &["remote-ip", "psk"];
const FORWARDER_KEYS: &[&str] = &["from", "via", "source"];

impl Reader<'_> {
    fn err(&mut self, loc: &Loc, msg: impl Into<String>, hint: impl Into<String>) {
        self.diags
            .push(Diagnostic::error(Some(loc.clone()), msg).hint(hint));
    }

    fn note(&mut self, loc: &Loc, msg: impl Into<String>) {
        self.diags.push(Diagnostic::note(Some(loc.clone()), msg));
    }

    fn root(&mut self, root: &Val) -> Vec<IHost> {
        // Other keys of a pallet environment belong to other crates: ignored, said so.
        let Some(top) = self.map(root, "the file", &["host-config"], false) else {
            return Vec::new();
        };
        let Some(hc) = top.get("host-config") else {
            self.err(
                &root.loc,
                "no :host-config in the map",
                "the file must hold ovs-crate's environment: {:host-config {\"host\" {:ovs-config {...}}}}",
            );
            return Vec::new();
        };
        let Kind::Map(entries) = &hc.kind else {
            self.wrong(
                hc,
                ":host-config",
                "a map from host name to its configuration",
            );
            return Vec::new();
        };
        let mut hosts: Vec<IHost> = Vec::new();
        for (k, v) in entries {
            let Kind::Str(key) = &k.kind else {
                self.wrong(k, "a :host-config key", "a host name in double quotes");
                continue;
            };
            let Some(name) = self.host_name(key, &k.loc) else {
                continue;
            };
            if let Some(first) = hosts.iter().find(|h| h.name == name) {
                let msg = format!(
                    "host {key:?} is named {name}, like the host at {}",
                    first.loc
                );
                self.err(
                    &k.loc,
                    msg,
                    "each host needs its own name: rename one of them",
                );
                continue;
            }
            if let Some(h) = self.host(name, &k.loc, v) {
                hosts.push(h);
            }
        }
        if hosts.is_empty() && entries.is_empty() {
            self.err(
                &hc.loc,
                ":host-config has no hosts",
                "add the hosts to import",
            );
        }
        hosts
    }

    /// The profile name of host key `key`: a DNS label, which is also a safe file name. A fully
    /// qualified name is shortened to its first label, which is what `hostname` prints.
    fn host_name(&mut self, key: &str, loc: &Loc) -> Option<String> {
        if key.parse::<Ipv4Addr>().is_ok() {
            self.err(
                loc,
                format!("host {key:?} is an address, not a host name"),
                "key the host by the name `hostname` prints on it: bundles are bound to that name",
            );
            return None;
        }
        if key.contains(['/', '\\', '\0']) || key.starts_with('.') || key.contains("..") {
            self.err(
                loc,
                format!("host {key:?} cannot be a file name (it holds '/', '\\\\', NUL or '..', or starts with '.')"),
                "host names are DNS labels: letters, digits and '-'",
            );
            return None;
        }
        let label = key.split('.').next().unwrap_or_default();
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !ok {
            self.err(
                loc,
                format!("host {key:?} is not a host name"),
                "host names are DNS labels: 1 to 63 letters, digits and '-', not starting or ending with '-'",
            );
            return None;
        }
        if label != key {
            self.note(
                loc,
                format!("host {key:?} is imported as {label} (its first label, which is what `hostname` prints)"),
            );
        }
        Some(label.to_string())
    }

    fn host(&mut self, name: String, loc: &Loc, v: &Val) -> Option<IHost> {
        let m = self.map(v, &format!("host {name}"), HOST_KEYS, false)?;
        let ovs = match (m.get("ovs-config"), m.get("ovs-info")) {
            (Some(a), Some(b)) => {
                let msg = format!(
                    "host {name} has both :ovs-config and :ovs-info (at {})",
                    a.loc
                );
                self.err(&b.loc, msg, "keep one: ovs-crate read :ovs-config");
                return None;
            }
            (Some(o), None) | (None, Some(o)) => o,
            (None, None) => {
                self.err(
                    loc,
                    format!("host {name} has neither :ovs-config nor :ovs-info"),
                    "its OVS configuration goes in {:ovs-config {:bridges [...]}}",
                );
                return None;
            }
        };
        let o = self.map(
            ovs,
            &format!("the OVS configuration of {name}"),
            OVS_KEYS,
            true,
        )?;
        let interfaces_file = o.get("interfaces-file").map(|f| match &f.kind {
            Kind::Str(p) => IfSource::Path(p.clone(), f.loc.clone()),
            Kind::List(items) => match items.as_slice() {
                [Val {
                    kind: Kind::Symbol(s),
                    ..
                }, Val {
                    kind: Kind::Str(r), ..
                }] if s.ends_with("resource-path") || s.ends_with("resource") => {
                    IfSource::Resource(r.clone(), f.loc.clone())
                }
                _ => IfSource::Unknown(f.loc.clone()),
            },
            _ => IfSource::Unknown(f.loc.clone()),
        });
        let mut bridges = Vec::new();
        if let Some(b) = o.get("bridges") {
            for bv in self.seq(b, ":bridges") {
                bridges.extend(self.bridge(&name, bv));
            }
        }
        Some(IHost {
            name,
            loc: loc.clone(),
            interfaces_file,
            bridges,
        })
    }

    fn bridge(&mut self, host: &str, v: &Val) -> Option<IBridge> {
        let m = self.map(v, &format!("a bridge of {host}"), BRIDGE_KEYS, true)?;
        let name = match m.get("name") {
            Some(n) => self.string(n, ":name")?,
            None => {
                self.err(
                    &v.loc,
                    format!("a bridge of {host} has no :name"),
                    "add :name \"br0\"",
                );
                return None;
            }
        };
        let mut host_interfaces = Vec::new();
        if let Some(h) = m.get("host-interfaces-to-connect") {
            for i in self.seq(h, ":host-interfaces-to-connect") {
                host_interfaces.extend(self.string(i, "an interface name"));
            }
        }
        let mut gre = Vec::new();
        if let Some(g) = m.get("gre-connections") {
            for c in self.seq(g, ":gre-connections") {
                gre.extend(self.gre(&name, c));
            }
        }
        let forwarder = m
            .get("act-as-forwarder")
            .and_then(|f| self.forwarder(&name, f));
        Some(IBridge {
            name,
            host_interfaces,
            gre,
            forwarder,
        })
    }

    fn gre(&mut self, bridge: &str, v: &Val) -> Option<IGre> {
        let m = self.map(
            v,
            &format!("a GRE connection of bridge {bridge:?}"),
            GRE_KEYS,
            true,
        )?;
        let psk = match m.get("psk") {
            // Never quoted in a message: only its place is named.
            Some(p) => match &p.kind {
                Kind::Str(s) => Some(s.clone()),
                _ => {
                    self.err(
                        &p.loc,
                        format!(":psk is {}, not a string", p.what()),
                        "write the key in double quotes",
                    );
                    return None;
                }
            },
            None => None,
        };
        let Some(ip) = m.get("remote-ip") else {
            self.err(
                &v.loc,
                format!("a GRE connection of bridge {bridge:?} has no :remote-ip"),
                "add :remote-ip \"192.0.2.2\"",
            );
            return None;
        };
        let text = self.string(ip, ":remote-ip")?;
        let Ok(remote_ip) = text.parse::<Ipv4Addr>() else {
            self.err(
                &ip.loc,
                format!(":remote-ip {text:?} is not an IPv4 address"),
                "write a dotted quad such as 192.0.2.1",
            );
            return None;
        };
        Some(IGre {
            remote_ip,
            psk,
            loc: v.loc.clone(),
        })
    }

    fn forwarder(&mut self, bridge: &str, v: &Val) -> Option<IForwarder> {
        let m = self.map(
            v,
            &format!(":act-as-forwarder of bridge {bridge:?}"),
            FORWARDER_KEYS,
            true,
        )?;
        let mut get = |key: &str| match m.get(key) {
            Some(x) => self.string(x, &format!(":{key}")),
            None => {
                self.err(
                    &v.loc,
                    format!(":act-as-forwarder of bridge {bridge:?} has no :{key}"),
                    "it needs :from, :via and :source",
                );
                None
            }
        };
        let (from, via, source) = (get("from"), get("via"), get("source"));
        // Checked even when another key is missing: every problem in one run.
        let source = source.and_then(|text| match Ipv4Cidr::parse(&text) {
            Ok(c) => Some(c.to_string()),
            Err(e) => {
                let loc = m.get("source").map_or(&v.loc, |s| &s.loc).clone();
                self.err(
                    &loc,
                    format!(":source: {e}"),
                    "write it as 10.20.20.0/255.255.255.0 or 10.20.20.0/24",
                );
                None
            }
        });
        Some(IForwarder {
            from: from?,
            via: via?,
            source: source?,
        })
    }

    /// The entries of map `v` by keyword name. Unknown keys are errors with a suggestion, or
    /// (`strict` false: levels other crates share) notes saying they were ignored; a key given
    /// twice is an error naming both places.
    fn map<'v>(
        &mut self,
        v: &'v Val,
        what: &str,
        known: &[&'static str],
        strict: bool,
    ) -> Option<BTreeMap<&'static str, &'v Val>> {
        let Kind::Map(entries) = &v.kind else {
            self.wrong(v, what, "a map {...}");
            return None;
        };
        let mut out: BTreeMap<&'static str, &Val> = BTreeMap::new();
        for (k, val) in entries {
            let name = match &k.kind {
                Kind::Keyword(s) => s.trim_start_matches(':'),
                _ => {
                    self.wrong(k, &format!("a key of {what}"), "a keyword such as :name");
                    continue;
                }
            };
            let Some(&key) = known.iter().find(|&&n| n == name) else {
                if strict {
                    let hint = match suggest(name, known) {
                        Some(s) => format!("did you mean :{s}?"),
                        None => format!("{what} takes {}", list(known)),
                    };
                    self.err(
                        &k.loc,
                        format!("unknown key :{} in {what}", name.escape_debug()),
                        hint,
                    );
                } else {
                    self.note(
                        &k.loc,
                        format!(
                            ":{} in {what} is not ovs-crate's: ignored",
                            name.escape_debug()
                        ),
                    );
                }
                continue;
            };
            if let Some(first) = out.get(key) {
                let msg = format!(":{key} is given twice in {what} (first at {})", first.loc);
                self.err(&k.loc, msg, "keep one of them");
                continue;
            }
            out.insert(key, val);
        }
        Some(out)
    }

    fn seq<'v>(&mut self, v: &'v Val, what: &str) -> &'v [Val] {
        match &v.kind {
            Kind::Vector(items) | Kind::List(items) => items,
            _ => {
                self.wrong(v, what, "a vector [...]");
                &[]
            }
        }
    }

    fn string(&mut self, v: &Val, what: &str) -> Option<String> {
        match &v.kind {
            Kind::Str(s) => Some(s.clone()),
            _ => {
                self.wrong(v, what, "a string in double quotes");
                None
            }
        }
    }

    fn wrong(&mut self, v: &Val, what: &str, expected: &str) {
        let msg = format!("{what} is {}; it must be {expected}", v.what());
        self.err(
            &v.loc,
            msg,
            "see ovs-crate's README for the shape of the map",
        );
    }
}

fn list(known: &[&str]) -> String {
    known
        .iter()
        .map(|k| format!(":{k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The known key `key` is probably a misspelling of (as for profiles: Jaro-Winkler >= 0.8).
fn suggest(key: &str, known: &[&'static str]) -> Option<&'static str> {
    known
        .iter()
        .map(|k| (strsim::jaro_winkler(key, k), *k))
        .filter(|(s, _)| *s >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}
