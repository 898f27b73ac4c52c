//! `builder import ovs-crate`: the original tool's EDN fleet map turned into a profiles
//! directory: one `hosts/<host>.toml` per host, each PSK in a file of its own (mode 0600, never
//! inline), interfaces files copied where they can be found.
//!
//! Steps: [`edn`] reads the file into located forms; [`ovs_crate`] reads the map's keys, every
//! problem collected; [`infer`] finds each host's `underlay_ip` where the fleet makes it
//! unambiguous; [`plan`] renders every output file (TOML through `toml_edit`, never by pasting
//! strings, since every value comes from the input) and the notes about what the operator must
//! still do; [`write`] writes them atomically. Nothing is written if the map has an error.

pub mod edn;
pub mod infer;
pub mod ovs_crate;
pub mod write;

use crate::diag::{Diagnostic, Loc};
use ovs_crate::{IHost, IfSource};
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use toml_edit::{value, Array, ArrayOfTables, DocumentMut, Item, Table};

/// Interfaces files larger than this are not copied: /etc/network/interfaces is kilobytes.
const MAX_INTERFACES_FILE: u64 = 1 << 20;

/// One file to write, relative to the output directory.
#[derive(Debug)]
pub struct OutFile {
    pub rel: PathBuf,
    pub bytes: Vec<u8>,
    /// 0o600 for PSKs, 0o644 otherwise.
    pub mode: u32,
}

/// What an import of a valid map produces: the files, and notes on what was inferred, renamed,
/// ignored, or is left for the operator (each at its place in the EDN file or the new profile).
#[derive(Debug)]
pub struct Plan {
    pub hosts: usize,
    pub files: Vec<OutFile>,
    pub notes: Vec<Diagnostic>,
}

/// Reads `edn_path` and plans the profiles directory `out`. On an error in the map, returns
/// every problem found (notes included) and plans nothing.
pub fn plan(edn_path: &Path, out: &Path) -> Result<Plan, Vec<Diagnostic>> {
    let file = edn_path.display().to_string();
    let text = std::fs::read(edn_path).map_err(|e| {
        vec![Diagnostic::error(None, format!("cannot read {file}: {e}"))
            .hint("pass the .edn file that holds ovs-crate's {:host-config ...} map")]
    })?;
    let text = String::from_utf8(text).map_err(|_| {
        vec![Diagnostic::error(None, format!("{file} is not UTF-8 text"))
            .hint("pass the .edn file that holds ovs-crate's {:host-config ...} map")]
    })?;
    let root = edn::read(&file, &text).map_err(|d| vec![*d])?;
    let mut diags = Vec::new();
    let hosts = ovs_crate::hosts(&root, &mut diags);
    if diags
        .iter()
        .any(|d| d.severity == crate::diag::Severity::Error)
    {
        diags.sort_by(|a, b| a.loc.cmp(&b.loc));
        return Err(diags);
    }
    // Paths in the map are relative to its directory ("" for a bare file name is ".").
    let base = match edn_path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut p = Planner {
        out,
        base,
        notes: diags,
        asks: Vec::new(),
        files: Vec::new(),
        psk_files: BTreeMap::new(),
    };
    let underlays = infer::underlays(&hosts);
    for (i, h) in hosts.iter().enumerate() {
        p.host(h, i, &underlays);
    }
    for r in &underlays.external {
        let at = hosts
            .iter()
            .flat_map(|h| h.bridges.iter().flat_map(|b| &b.gre))
            .find(|g| g.remote_ip == *r)
            .map(|g| g.loc.clone());
        p.notes.push(Diagnostic::note(
            at,
            format!("{r} is no host's address in this map: its tunnels are written with external = true"),
        ));
    }
    // About the map first, in its order; then what to add to the new profiles.
    p.notes.sort_by(|a, b| a.loc.cmp(&b.loc));
    p.notes.append(&mut p.asks);
    Ok(Plan {
        hosts: hosts.len(),
        files: p.files,
        notes: p.notes,
    })
}

struct Planner<'a> {
    out: &'a Path,
    base: &'a Path,
    /// Notes about the map, at their places in it.
    notes: Vec<Diagnostic>,
    /// What the operator must add to the new profiles, at its place there.
    asks: Vec<Diagnostic>,
    files: Vec<OutFile>,
    /// PSK value -> its file, so both ends of a link share one file.
    psk_files: BTreeMap<String, String>,
}

impl Planner<'_> {
    fn host(&mut self, h: &IHost, i: usize, u: &infer::Underlays) {
        let rel = PathBuf::from(format!("hosts/{}.toml", h.name));
        let mut doc = DocumentMut::new();
        let mut host = Table::new();
        host["name"] = value(h.name.as_str());
        let underlay = u.known[i];
        if let Some(ip) = underlay {
            host["underlay_ip"] = value(ip.to_string());
        }
        if let Some(f) = self.interfaces_file(h) {
            host["interfaces_file"] = value(f);
        }
        host.decor_mut().set_prefix(format!(
            "# Imported from ovs-crate's map ({}) by `builder import ovs-crate`.\n",
            loc_comment(&h.loc)
        ));
        doc["host"] = Item::Table(host);
        let mut bridges = ArrayOfTables::new();
        for b in &h.bridges {
            let mut t = Table::new();
            t["name"] = value(b.name.as_str());
            if !b.host_interfaces.is_empty() {
                t["host_interfaces"] = value(b.host_interfaces.iter().collect::<Array>());
            }
            let mut gres = ArrayOfTables::new();
            for g in &b.gre {
                let mut gt = Table::new();
                gt["remote_ip"] = value(g.remote_ip.to_string());
                if let Some(psk) = &g.psk {
                    let file = self.psk_file(&h.name, g.remote_ip, psk);
                    gt["psk_file"] = value(format!("../secrets/{file}"));
                }
                if u.external.contains(&g.remote_ip) {
                    gt["external"] = value(true);
                }
                gres.push(gt);
            }
            if !gres.is_empty() {
                t["gre"] = Item::ArrayOfTables(gres);
            }
            if let Some(f) = &b.forwarder {
                let mut ft = Table::new();
                ft["from"] = value(f.from.as_str());
                ft["via"] = value(f.via.as_str());
                ft["source"] = value(f.source.as_str());
                t["forwarder"] = Item::Table(ft);
            }
            bridges.push(t);
        }
        if !bridges.is_empty() {
            doc["bridges"] = Item::ArrayOfTables(bridges);
        }
        let mut text = doc.to_string();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        if underlay.is_none() {
            let line = text.lines().position(|l| l == "[host]").unwrap_or(0) + 1;
            let loc = Loc {
                file: self.out.join(&rel).display().to_string(),
                line,
                col: 1,
                width: 6,
            };
            let why = match u.candidates[i].as_slice() {
                [] => "no host of the map has a tunnel to it".to_string(),
                c => format!(
                    "it could be {} (each also fits another host)",
                    c.iter()
                        .map(|a| a.to_string())
                        .collect::<Vec<_>>()
                        .join(" or ")
                ),
            };
            self.asks.push(
                Diagnostic::note(
                    Some(loc),
                    format!("underlay_ip of {} is not known: {why}", h.name),
                )
                .hint(format!(
                    "add underlay_ip = \"a.b.c.d\" to [host]: the address the other hosts reach {} at",
                    h.name
                )),
            );
        }
        self.files.push(OutFile {
            rel,
            bytes: text.into_bytes(),
            mode: 0o644,
        });
    }

    /// The file holding `psk`: one per distinct key, named after the first tunnel that uses it
    /// (a host name and an address: safe as a file name).
    fn psk_file(&mut self, host: &str, remote: std::net::Ipv4Addr, psk: &str) -> String {
        if let Some(f) = self.psk_files.get(psk) {
            return f.clone();
        }
        let mut name = format!("{host}-{remote}.psk");
        let mut n = 1;
        while self.psk_files.values().any(|f| *f == name) {
            n += 1;
            name = format!("{host}-{remote}-{n}.psk");
        }
        self.files.push(OutFile {
            rel: PathBuf::from("secrets").join(&name),
            bytes: format!("{psk}\n").into_bytes(),
            mode: 0o600,
        });
        self.psk_files.insert(psk.to_string(), name.clone());
        name
    }

    /// The profile's `interfaces_file` for `h`, once the file is copied into `files/`; or a
    /// note saying why it could not be and what to do.
    fn interfaces_file(&mut self, h: &IHost) -> Option<String> {
        let src = h.interfaces_file.as_ref()?;
        let (tried, loc): (Vec<&str>, &Loc) = match src {
            IfSource::Path(p, loc) => (vec![p.as_str()], loc),
            IfSource::Resource(r, loc) => (vec![r.as_str()], loc),
            IfSource::Unknown(loc) => (vec![], loc),
        };
        let mut candidates: Vec<PathBuf> = Vec::new();
        for t in &tried {
            if matches!(src, IfSource::Resource(..)) {
                candidates.push(Path::new("resources").join(t));
            }
            candidates.push(PathBuf::from(t));
        }
        let target = format!("files/{}.interfaces", h.name);
        let mut problem = match src {
            IfSource::Unknown(_) => "it is a form the importer cannot evaluate".to_string(),
            _ => format!(
                "there is no file {} in the map's directory",
                candidates
                    .iter()
                    .map(|c| format!("{:?}", c.display().to_string()))
                    .collect::<Vec<_>>()
                    .join(" or ")
            ),
        };
        for c in &candidates {
            match self.read_inside(c) {
                Ok(Some(text)) => {
                    self.files.push(OutFile {
                        rel: PathBuf::from(&target),
                        bytes: text,
                        mode: 0o644,
                    });
                    return Some(format!("../{target}"));
                }
                Ok(None) => {}
                Err(why) => problem = why,
            }
        }
        self.notes.push(
            Diagnostic::note(
                Some(loc.clone()),
                format!("the interfaces file of {} is not imported: {problem}", h.name),
            )
            .hint(format!(
                "copy it to {target} in the output directory and add interfaces_file = \"../{target}\" to [host] of hosts/{}.toml",
                h.name
            )),
        );
        None
    }

    /// The bytes of `rel` under the map's directory, if it is a file there. A path that leaves
    /// the directory (absolute, `..`, or through a symbolic link) is refused: the map may come
    /// from someone else, and its paths must not copy the importing user's files.
    fn read_inside(&self, rel: &Path) -> Result<Option<Vec<u8>>, String> {
        if rel
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(format!(
                "{:?} is outside the map's directory (absolute, or through ..), and the importer reads files only inside it",
                rel.display().to_string()
            ));
        }
        let path = self.base.join(rel);
        let (Ok(real), Ok(base)) = (path.canonicalize(), self.base.canonicalize()) else {
            return Ok(None);
        };
        if !real.starts_with(&base) {
            return Err(format!(
                "{:?} is a link out of the map's directory, and the importer reads files only inside it",
                rel.display().to_string()
            ));
        }
        let meta = std::fs::metadata(&real).map_err(|e| e.to_string())?;
        if !meta.is_file() || meta.len() > MAX_INTERFACES_FILE {
            return Err(format!(
                "{:?} is not a regular file of at most {MAX_INTERFACES_FILE} bytes",
                rel.display().to_string()
            ));
        }
        std::fs::read(&real).map(Some).map_err(|e| e.to_string())
    }
}

/// `file:line` for a TOML comment: the file name escaped, so no newline in it can end the
/// comment.
fn loc_comment(loc: &Loc) -> String {
    let name = Path::new(&loc.file)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = name.escape_default().to_string();
    format!("{name}:{}", loc.line)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values come from someone else's file: quotes, newlines and TOML syntax in them stay
    /// values (toml_edit escapes them), and a host name cannot name a path.
    #[test]
    fn hostile_values_stay_values() {
        let dir = tempfile::tempdir().unwrap();
        let edn = dir.path().join("fleet.edn");
        let evil = "br0\\\"\\n[host]\\nname = \\\"x";
        std::fs::write(
            &edn,
            format!(
                "{{:host-config {{\"h1\" {{:ovs-config {{:bridges [{{:name \"{evil}\"}}]}}}}}}}}"
            ),
        )
        .unwrap();
        let planned = plan(&edn, Path::new("out")).unwrap();
        let toml_text = String::from_utf8(planned.files[0].bytes.clone()).unwrap();
        let parsed: toml::Table = toml::from_str(&toml_text).unwrap();
        assert_eq!(parsed["host"]["name"].as_str(), Some("h1"));
        let name = parsed["bridges"][0]["name"].as_str().unwrap();
        assert_eq!(name, "br0\"\n[host]\nname = \"x");

        std::fs::write(
            &edn,
            "{:host-config {\"../../etc/cron.d/x\" {:ovs-config {}}}}",
        )
        .unwrap();
        let e = plan(&edn, Path::new("out")).unwrap_err();
        assert!(e[0].message.contains("cannot be a file name"), "{}", e[0]);
        std::fs::write(&edn, "[1 2]").unwrap();
        let e = plan(&edn, Path::new("out")).unwrap_err();
        assert!(e[0].message.contains("it must be a map"), "{}", e[0]);
        std::fs::write(&edn, "{:user \"x\"}").unwrap();
        let e = plan(&edn, Path::new("out")).unwrap_err();
        assert!(
            e.iter().any(|d| d.message == "no :host-config in the map"),
            "{e:?}"
        );
    }
}
