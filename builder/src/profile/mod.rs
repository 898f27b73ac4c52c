//! Profiles: TOML in, validated [`Fleet`] out.
//!
//! Parsing and validation are separate steps: the shape check ([`crate::shape`]) reports every
//! unknown, missing or mistyped key, serde turns each file into raw values that keep their source
//! spans ([`raw`]), then validation ([`validate`]) checks every rule and collects
//! every problem, each with the `file:line:col` it is about and a hint, before anything is
//! rendered. Reading the files the profiles name (PSKs, verbatim interfaces files) is the only I/O
//! here. Once every host is valid on its own, [`crate::fleet`] adds meshes and checks the hosts
//! against each other; that dependency runs one way only (fleet never looks at profiles).

mod dhcp;
mod raw;
mod validate;

use crate::diag::{Diagnostic, Severity, SourceMap, Sources};
use crate::fleet::{check_fleet, expand_meshes};
use crate::model::{Fleet, Host};
use std::path::{Path, PathBuf};

/// A tunnel's `type` and `key` as a `[[bridges.gre]]` entry or a `[[mesh]]` gives them, checked:
/// the type (gre when omitted) and the key, or the span at fault with the error and its hint.
#[allow(clippy::type_complexity)]
pub(crate) fn tunnel_type(
    kind: Option<&toml::Spanned<String>>,
    key: Option<&toml::Spanned<i64>>,
) -> Result<(bundle::tunnel::TunnelKind, Option<u32>), (std::ops::Range<usize>, String, String)> {
    use bundle::tunnel::{TunnelKind, MAX_KEY};
    let kind = match kind {
        None => TunnelKind::Gre,
        Some(t) => TunnelKind::parse(t.get_ref()).ok_or_else(|| {
            let names: Vec<&str> = TunnelKind::ALL.iter().map(|k| k.as_str()).collect();
            (
                t.span(),
                format!("tunnel type {:?} is not one ovs-bundle makes", t.get_ref()),
                format!("write one of {} (gre when omitted)", names.join(", ")),
            )
        })?,
    };
    let key = match key {
        None => None,
        Some(k) => match u32::try_from(*k.get_ref()) {
            Ok(v) if v <= MAX_KEY => Some(v),
            _ => {
                return Err((
                    k.span(),
                    format!("tunnel key {} is out of range", k.get_ref()),
                    format!("a key (GRE key or VXLAN/Geneve VNI) is 0 to {MAX_KEY}"),
                ))
            }
        },
    };
    Ok((kind, key))
}

/// Loads and validates every `hosts/*.toml` under `dir`. On failure, returns every problem found.
pub fn load_fleet(dir: &Path) -> Result<Fleet, Vec<Diagnostic>> {
    let hosts_dir = dir.join("hosts");
    let mut paths: Vec<PathBuf> = match std::fs::read_dir(&hosts_dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect(),
        Err(e) => {
            return Err(vec![Diagnostic::error(
                None,
                format!(
                    "cannot read profiles directory {}: {e}",
                    hosts_dir.display()
                ),
            )
            .hint(
                "pass the directory that holds hosts/<host>.toml, e.g. `profiles`",
            )]);
        }
    };
    paths.sort();
    if paths.is_empty() {
        return Err(vec![Diagnostic::error(
            None,
            format!("no host profiles (*.toml) in {}", hosts_dir.display()),
        )
        .hint(format!("create hosts/<host>.toml; {KEYS_HELP}"))]);
    }
    let mut diags = Vec::new();
    let mut sources = Sources::default();
    let mut hosts = Vec::new();
    for path in &paths {
        let rel = path
            .strip_prefix(dir)
            .unwrap_or(path)
            .to_string_lossy()
            .into_owned();
        match std::fs::read_to_string(path) {
            Ok(text) => {
                if let Some(host) = parse_host_with(path, &rel, &text, &mut sources, &mut diags) {
                    hosts.push(host);
                }
            }
            Err(e) => diags.push(Diagnostic::error(
                None,
                format!("cannot read {}: {e}", path.display()),
            )),
        }
    }
    hosts.sort_by(|a, b| a.name.cmp(&b.name));
    // Meshes and cross-host checks only once every host is valid on its own: a host dropped for
    // a typo would otherwise also be reported as missing by every mesh and link that names it.
    if diags.is_empty() {
        expand_meshes(dir, &mut hosts, &mut sources, &mut diags);
    }
    if diags.is_empty() {
        check_fleet(&hosts, &mut diags);
    }
    // Stable: a file's problems in the order they appear in it, files in name order.
    diags.sort_by(|a, b| a.loc.cmp(&b.loc));
    sources.attach(&mut diags);
    let (errors, notes): (Vec<_>, Vec<_>) = diags
        .into_iter()
        .partition(|d| d.severity == Severity::Error);
    if errors.is_empty() {
        Ok(Fleet { hosts, notes })
    } else {
        Err(errors.into_iter().chain(notes).collect())
    }
}

/// Where every key a profile and fleet.toml may have is documented, for hints: the man page,
/// which an installed builder has (docs/ is in the source tree only).
pub const KEYS_HELP: &str =
    "every key is listed by `builder help check` and in the builder-check(1) man page";

/// Parses and validates one host profile. `path` is where it is read from (for messages and to
/// resolve relative paths); `rel` is its path relative to the profiles directory. Its
/// diagnostics have no snippets (the fuzz target calls this).
pub fn parse_host(path: &Path, rel: &str, text: &str, diags: &mut Vec<Diagnostic>) -> Option<Host> {
    parse_host_with(path, rel, text, &mut Sources::default(), diags)
}

/// [`parse_host`], its text put into `sources` for the snippets of its diagnostics.
fn parse_host_with(
    path: &Path,
    rel: &str,
    text: &str,
    sources: &mut Sources,
    diags: &mut Vec<Diagnostic>,
) -> Option<Host> {
    let file = path.display().to_string();
    let map = SourceMap::new(file.clone(), text);
    let doc = match toml_edit::ImDocument::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            sources.add_unparsed(&file, text);
            let loc = e.span().map(|s| map.span_loc(&s));
            diags.push(
                Diagnostic::error(loc, e.message().trim_end().to_string())
                    .hint("this is not valid TOML there; fix the syntax, then run check again"),
            );
            return None;
        }
    };
    let shape = crate::shape::check(doc.as_table(), raw::PROFILE, &map, KEYS_HELP);
    sources.add(&file, text, shape.secret_spans);
    let shape_ok = shape.diags.is_empty();
    diags.extend(shape.diags);
    let raw: raw::RawProfile = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            // What serde stops at, the shape check has already reported at its own place (and
            // with everything else): serde's word is needed only where the two disagree.
            if shape_ok {
                let loc = e.span().map(|s| map.span_loc(&s));
                diags.push(
                    Diagnostic::error(loc, e.message().trim_end().to_string()).hint(KEYS_HELP),
                );
            }
            return None;
        }
    };
    let before = diags.len();
    let host = validate::host(&raw, &map, path, rel, diags);
    (diags.len() == before && shape_ok)
        .then_some(host)
        .flatten()
}
