//! The shape of a TOML input: which keys each table may have, of which kind, and which are
//! required. Checked by walking the parsed document (with its spans) before serde reads it, so
//! every unknown key, wrong kind and missing key of a file is reported at once, each at its own
//! place and with "did you mean" for a near miss. serde's `deny_unknown_fields` stops at the first
//! one, which made a profile with two typos take two runs.
//!
//! The walk also returns the spans of values that must never be shown (PSKs, and the values of
//! unknown keys, which may be a misspelt `psk`), so caret snippets can hide them.

use crate::diag::{Diagnostic, SourceMap};
use std::ops::Range;
use toml_edit::{Item, Table, Value};

/// What a key's value must be.
#[derive(Debug)]
pub enum Kind {
    Str,
    Bool,
    /// An integer (range checks are validation's).
    Int,
    /// An array whose elements are of the inner kind.
    Array(&'static Kind),
    /// A table: `[name]`, a dotted key, or an inline `{ … }`.
    Table(&'static [Field]),
    /// An array of tables: `[[name]]`, or an array of inline tables.
    Tables(&'static [Field]),
    /// A string, or a table with these fields (`"priv0"` or `{ name = "priv0", … }`).
    StrOrTable(&'static [Field]),
}

/// One key of a table.
#[derive(Debug)]
pub struct Field {
    pub name: &'static str,
    pub kind: Kind,
    pub required: bool,
    /// Its value is a secret: never shown in a snippet.
    pub secret: bool,
}

impl Field {
    pub const fn req(name: &'static str, kind: Kind) -> Self {
        Field {
            name,
            kind,
            required: true,
            secret: false,
        }
    }
    pub const fn opt(name: &'static str, kind: Kind) -> Self {
        Field {
            name,
            kind,
            required: false,
            secret: false,
        }
    }
    pub const fn secret(name: &'static str) -> Self {
        Field {
            name,
            kind: Kind::Str,
            required: false,
            secret: true,
        }
    }
}

/// Keys of the original tool (ovs-crate, EDN) and what they are called here: a profile written
/// from its README gets the new name at once instead of a guess by spelling.
const OVS_CRATE_NAMES: &[(&str, &str)] = &[
    (
        "host-config",
        "a file per host: hosts/<host>.toml with [host]",
    ),
    ("ovs-info", "[[bridges]] (there is no ovs-info level)"),
    ("ovs-config", "[[bridges]] (there is no ovs-config level)"),
    ("interfaces-file", "interfaces_file, in [host]"),
    ("host-interfaces-to-connect", "host_interfaces"),
    ("gre-connections", "[[bridges.gre]]"),
    ("remote-ip", "remote_ip"),
    ("act-as-forwarder", "[bridges.forwarder]"),
];

/// What a walk found: every problem, and the spans never to show.
#[derive(Debug, Default)]
pub struct Checked {
    pub diags: Vec<Diagnostic>,
    pub secret_spans: Vec<Range<usize>>,
}

/// Checks `root` against `fields`. `help` ends hints: where the keys are documented.
pub fn check(root: &Table, fields: &'static [Field], map: &SourceMap, help: &str) -> Checked {
    let mut w = Walker {
        map,
        help,
        out: Checked::default(),
    };
    w.table(root, fields, "the top level", root.span());
    w.out
}

struct Walker<'a> {
    map: &'a SourceMap,
    help: &'a str,
    out: Checked,
}

impl Walker<'_> {
    fn err(&mut self, span: Option<Range<usize>>, msg: String, hint: String) {
        let loc = span.map(|s| self.map.span_loc(&s));
        self.out.diags.push(Diagnostic::error(loc, msg).hint(hint));
    }

    fn table(
        &mut self,
        t: &Table,
        fields: &'static [Field],
        ctx: &str,
        span: Option<Range<usize>>,
    ) {
        let entries: Vec<_> = t
            .iter()
            .map(|(k, item)| {
                let key_span = t.key(k).and_then(|k| k.span());
                (k.to_string(), key_span, item)
            })
            .collect();
        self.entries(&entries, fields, ctx, span);
    }

    fn entries(
        &mut self,
        entries: &[(String, Option<Range<usize>>, &Item)],
        fields: &'static [Field],
        ctx: &str,
        span: Option<Range<usize>>,
    ) {
        // Required keys a misspelt key is taken for: their absence is already reported.
        let mut meant = Vec::new();
        for (key, key_span, item) in entries {
            let key_span = key_span.clone().or_else(|| item.span());
            match fields.iter().find(|f| f.name == key) {
                Some(f) => {
                    if f.secret {
                        self.out.secret_spans.extend(item.span());
                    }
                    let inner = child_ctx(ctx, key, &f.kind);
                    self.item(item, &f.kind, key, &inner, key_span);
                }
                None => {
                    // Never shown: a misspelt `psk` is still a PSK. Only a value: the span of
                    // a table is its header (`[[bridge]]`), which holds the key, not a secret.
                    if let Item::Value(v) = item {
                        self.out.secret_spans.extend(v.span());
                    }
                    let suggestion = suggest(key, fields);
                    if let Some(s) = suggestion {
                        meant.push(s);
                    }
                    let hint = match (ovs_crate_name(key), suggestion) {
                        (Some(ours), _) => format!(
                            "this is ovs-crate's :{key}; here it is {ours} (`builder import \
                             ovs-crate` converts a whole EDN map)"
                        ),
                        (None, Some(s)) => format!("did you mean `{s}`?"),
                        (None, None) => format!(
                            "{ctx} takes {}; {}",
                            fields
                                .iter()
                                .map(|f| format!("`{}`", f.name))
                                .collect::<Vec<_>>()
                                .join(", "),
                            self.help
                        ),
                    };
                    self.err(key_span, format!("unknown key `{key}` in {ctx}"), hint);
                }
            }
        }
        for f in fields.iter().filter(|f| f.required) {
            if entries.iter().any(|(k, _, _)| k == f.name) || meant.contains(&f.name) {
                continue;
            }
            self.err(
                span.clone(),
                format!("{ctx} has no `{}`, which is required", f.name),
                format!("add {} = …; {}", f.name, self.help),
            );
        }
    }

    fn item(
        &mut self,
        item: &Item,
        kind: &'static Kind,
        key: &str,
        ctx: &str,
        key_span: Option<Range<usize>>,
    ) {
        match (kind, item) {
            (Kind::Table(fields), Item::Table(t)) => {
                self.table(t, fields, ctx, t.span().or(key_span))
            }
            (Kind::Tables(fields), Item::ArrayOfTables(a)) => {
                for t in a.iter() {
                    self.table(t, fields, ctx, t.span().or(key_span.clone()));
                }
            }
            (_, Item::Value(v)) => self.value(v, kind, key, ctx),
            _ => {
                let span = item.span().or(key_span);
                self.wrong_kind(span, key, kind, describe_item(item));
            }
        }
    }

    fn value(&mut self, v: &Value, kind: &'static Kind, key: &str, ctx: &str) {
        match (kind, v) {
            (Kind::Str | Kind::StrOrTable(_), Value::String(_))
            | (Kind::Bool, Value::Boolean(_))
            | (Kind::Int, Value::Integer(_)) => {}
            (Kind::Array(inner), Value::Array(a)) => {
                for el in a.iter() {
                    self.value(el, inner, key, ctx);
                }
            }
            (Kind::Tables(fields), Value::Array(a)) => {
                for el in a.iter() {
                    match el {
                        Value::InlineTable(t) => self.inline(t, fields, ctx),
                        other => self.wrong_kind(other.span(), key, kind, describe(other)),
                    }
                }
            }
            (Kind::Table(fields) | Kind::StrOrTable(fields), Value::InlineTable(t)) => {
                self.inline(t, fields, ctx)
            }
            _ => self.wrong_kind(v.span(), key, kind, describe(v)),
        }
    }

    fn inline(&mut self, t: &toml_edit::InlineTable, fields: &'static [Field], ctx: &str) {
        let entries: Vec<_> = t
            .iter()
            .filter_map(|(k, _)| {
                let (key, item) = t.get_key_value(k)?;
                Some((k.to_string(), key.span(), item))
            })
            .collect();
        self.entries(&entries, fields, ctx, t.span());
    }

    fn wrong_kind(&mut self, span: Option<Range<usize>>, key: &str, kind: &Kind, found: &str) {
        self.err(
            span,
            format!("`{key}` must be {}, not {found}", expected(kind)),
            format!("write it as in {}", self.help_example(kind)),
        );
    }

    fn help_example(&self, kind: &Kind) -> String {
        let ex = match kind {
            Kind::Str => "name = \"value\"",
            Kind::Bool => "rstp = true",
            Kind::Int => "key = 100",
            Kind::Array(_) => "members = [\"a\", \"b\"]",
            Kind::Table(_) => "[bridges.forwarder] with its keys below it",
            Kind::Tables(_) => "[[bridges.gre]] with its keys below it, once per entry",
            Kind::StrOrTable(_) => "\"priv0\" or { name = \"priv0\", address = \"10.20.20.1/24\" }",
        };
        format!("`{ex}`; {}", self.help)
    }
}

/// How a nested table is named in messages: `[[bridges.gre]]`, `[bridges.forwarder]`.
fn child_ctx(ctx: &str, key: &str, kind: &Kind) -> String {
    let path = ctx
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let path = if ctx == "the top level" {
        key.to_string()
    } else {
        format!("{path}.{key}")
    };
    match kind {
        Kind::Tables(_) => format!("[[{path}]]"),
        Kind::StrOrTable(_) | Kind::Array(_) => format!("an entry of {path}"),
        _ => format!("[{path}]"),
    }
}

fn expected(kind: &Kind) -> &'static str {
    match kind {
        Kind::Str => "a string",
        Kind::Bool => "true or false",
        Kind::Int => "an integer",
        Kind::Array(_) => "an array",
        Kind::Table(_) => "a table",
        Kind::Tables(_) => "an array of tables",
        Kind::StrOrTable(_) => "a string or an inline table",
    }
}

fn describe_item(item: &Item) -> &'static str {
    match item {
        Item::None => "nothing",
        Item::Value(v) => describe(v),
        Item::Table(_) => "a table",
        Item::ArrayOfTables(_) => "an array of tables",
    }
}

fn describe(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a date-time",
        Value::Array(_) => "an array",
        Value::InlineTable(_) => "an inline table",
    }
}

/// The known key `key` is most likely a misspelling of, if any is close enough. Jaro-Winkler
/// favours a shared beginning, which is how keys are misspelt (`psk_fil`, `remote_ipp`,
/// `host_interface`); 0.8 is the threshold below which suggestions stop being plausible. `-` is
/// read as `_` first: the original tool's keys were kebab-case.
fn suggest(key: &str, fields: &'static [Field]) -> Option<&'static str> {
    let key = key.replace('-', "_");
    fields
        .iter()
        .map(|f| (strsim::jaro_winkler(&key, f.name), f.name))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, name)| name)
}

fn ovs_crate_name(key: &str) -> Option<&'static str> {
    OVS_CRATE_NAMES
        .iter()
        .find(|(k, _)| *k == key.trim_start_matches(':'))
        .map(|(_, ours)| *ours)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEAF: &[Field] = &[
        Field::req("remote_ip", Kind::Str),
        Field::opt("psk_file", Kind::Str),
        Field::secret("psk"),
        Field::opt("external", Kind::Bool),
    ];
    const ROOT: &[Field] = &[Field::opt("gre", Kind::Tables(LEAF))];

    fn run(text: &str) -> Checked {
        let doc = toml_edit::ImDocument::parse(text).unwrap();
        let map = SourceMap::new("f.toml", text);
        check(doc.as_table(), ROOT, &map, "see `man x`")
    }

    #[test]
    fn every_unknown_key_is_reported_with_a_suggestion_and_the_misspelt_required_key_once() {
        let c = run("[[gre]]\nremote_ipp = \"1.2.3.4\"\npsk_fil = \"x\"\nexternal = 1\n");
        let got: Vec<String> = c.diags.iter().map(|d| d.to_string()).collect();
        assert_eq!(got.len(), 3, "{got:#?}");
        assert!(got[0].starts_with("f.toml:2:1: error: unknown key `remote_ipp` in [[gre]]"));
        assert!(got[0].contains("did you mean `remote_ip`?"), "{}", got[0]);
        assert!(got[1].contains("did you mean `psk_file`?"), "{}", got[1]);
        assert!(got[2]
            .starts_with("f.toml:4:12: error: `external` must be true or false, not an integer"));
    }

    #[test]
    fn an_unknown_table_header_is_not_masked() {
        let c = run("[[gree]]\nremote_ip = \"1.2.3.4\"\n");
        assert!(c.secret_spans.is_empty(), "{:?}", c.secret_spans);
        assert!(
            c.diags[0].to_string().contains("did you mean `gre`?"),
            "{}",
            c.diags[0]
        );
    }

    #[test]
    fn psk_values_and_unknown_values_are_secret() {
        let text = "gre = [{ remote_ip = \"1.2.3.4\", psk = \"sekrit-sekrit-sekrit\", pks = \"other\" }]\n";
        let c = run(text);
        let shown: Vec<&str> = c.secret_spans.iter().map(|s| &text[s.clone()]).collect();
        assert_eq!(shown, ["\"sekrit-sekrit-sekrit\"", "\"other\""]);
    }

    #[test]
    fn ovs_crate_keys_get_their_new_names_and_missing_keys_are_named() {
        let c = run("[[gre]]\nremote-ip = \"1.2.3.4\"\n[[gre]]\n");
        let got: Vec<String> = c.diags.iter().map(|d| d.to_string()).collect();
        assert_eq!(got.len(), 2, "{got:#?}");
        assert!(
            got[0].contains("ovs-crate's :remote-ip; here it is remote_ip"),
            "{}",
            got[0]
        );
        assert!(
            got[1].starts_with("f.toml:3:1: error: [[gre]] has no `remote_ip`"),
            "{}",
            got[1]
        );
    }
}
