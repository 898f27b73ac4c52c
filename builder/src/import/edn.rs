//! EDN in, a tree of located values out: every form keeps the line and column it starts at, so
//! each error of the importer names its place in the EDN file. The input is hostile until shown
//! otherwise: its size and nesting depth are bounded before anything recursive touches it, and
//! only the forms an ovs-crate map can hold are kept apart (others are "something else").

use crate::diag::{Diagnostic, Loc};
use clojure_reader::edn::Edn;
use clojure_reader::parse::{parse, Node, NodeKind, SourceReader, Span};

/// Larger EDN files are refused: an ovs-crate fleet map is kilobytes.
pub const MAX_BYTES: usize = 4 << 20;
/// Deeper nesting is refused: an ovs-crate map is 6 levels deep; the tree is converted and
/// dropped recursively, so depth must be bounded before parsing.
pub const MAX_DEPTH: usize = 64;

/// One EDN form and where it starts.
#[derive(Debug, Clone)]
pub struct Val {
    pub kind: Kind,
    pub loc: Loc,
}

#[derive(Debug, Clone)]
pub enum Kind {
    /// Entries in file order; duplicate keys are kept (and reported by the reader of the map).
    Map(Vec<(Val, Val)>),
    Vector(Vec<Val>),
    List(Vec<Val>),
    Str(String),
    Keyword(String),
    Symbol(String),
    Int(i64),
    Bool(bool),
    Nil,
    /// Any other form (set, tagged value, character, ratio); the text names it.
    Other(&'static str),
}

impl Val {
    /// What the form is, for messages: "a string", "a map".
    pub fn what(&self) -> &'static str {
        match &self.kind {
            Kind::Map(_) => "a map",
            Kind::Vector(_) => "a vector",
            Kind::List(_) => "a list",
            Kind::Str(_) => "a string",
            Kind::Keyword(_) => "a keyword",
            Kind::Symbol(_) => "a symbol",
            Kind::Int(_) => "an integer",
            Kind::Bool(_) => "a boolean",
            Kind::Nil => "nil",
            Kind::Other(what) => what,
        }
    }
}

/// Reads the one form of `text` (from `file`). The one error that stops the reader is located;
/// boxed, as diagnostics are large and errors rare.
pub fn read(file: &str, text: &str) -> Result<Val, Box<Diagnostic>> {
    let at = |line: usize, col: usize| Loc {
        file: file.to_string(),
        line,
        col,
        width: 1,
    };
    if text.len() > MAX_BYTES {
        return Err(Box::new(
            Diagnostic::error(
                None,
                format!(
                    "{file} is {} bytes; EDN files over {MAX_BYTES} are refused",
                    text.len()
                ),
            )
            .hint("an ovs-crate fleet map is a few kilobytes: pass the map itself"),
        ));
    }
    if let Some((line, col)) = too_deep(text) {
        return Err(Box::new(
            Diagnostic::error(
                Some(at(line, col)),
                format!("forms nested more than {MAX_DEPTH} deep"),
            )
            .hint("an ovs-crate map is 6 levels deep: pass the :host-config map itself"),
        ));
    }
    let mut reader = SourceReader::new(text);
    let node = parse(&mut reader).map_err(|e| {
        let loc = e.line.map(|l| at(l, e.column.unwrap_or(1)));
        Box::new(
            Diagnostic::error(loc, format!("not valid EDN: {}", describe(&e.code))).hint(
                "fix the EDN there (the map must read in Clojure as it is), then import again",
            ),
        )
    })?;
    let rest = reader.remaining();
    if !only_comments(rest) {
        let (pos, _) = reader.finish();
        return Err(Box::new(
            Diagnostic::error(
                Some(at(pos.line, pos.column)),
                "more than one form: the file must hold the one fleet map",
            )
            .hint("keep only the {:host-config {...}} map in the file"),
        ));
    }
    Ok(convert(file, node))
}

fn convert(file: &str, node: Node<'_>) -> Val {
    let loc = span_loc(file, node.span);
    let kind = match node.kind {
        NodeKind::Map(entries, _) => Kind::Map(
            entries
                .into_iter()
                .map(|(k, v)| (convert(file, k), convert(file, v)))
                .collect(),
        ),
        NodeKind::Vector(items, _) => {
            Kind::Vector(items.into_iter().map(|n| convert(file, n)).collect())
        }
        NodeKind::List(items, _) => {
            Kind::List(items.into_iter().map(|n| convert(file, n)).collect())
        }
        NodeKind::Key(k) => Kind::Keyword(k.to_string()),
        NodeKind::Symbol(s) => Kind::Symbol(s.to_string()),
        NodeKind::Int(i) => Kind::Int(i),
        NodeKind::Bool(b) => Kind::Bool(b),
        NodeKind::Nil => Kind::Nil,
        kind @ NodeKind::Str(_) => {
            // The reader's own decoding of escapes, through its Edn conversion of the leaf.
            let edn = Edn::try_from(Node::no_discards(kind, node.span));
            match &edn {
                Ok(Edn::Str(s)) => Kind::Str(s.to_string()),
                _ => Kind::Other("a string with an escape EDN does not have"),
            }
        }
        NodeKind::Set(..) => Kind::Other("a set"),
        NodeKind::Tagged(..) => Kind::Other("a tagged value"),
        NodeKind::Char(_) => Kind::Other("a character"),
        NodeKind::Rational(_) => Kind::Other("a ratio"),
        _ => Kind::Other("a number of a kind the map does not use"),
    };
    Val { kind, loc }
}

fn span_loc(file: &str, span: Span) -> Loc {
    Loc {
        file: file.to_string(),
        line: span.0.line,
        col: span.0.column,
        width: span.1.ptr.saturating_sub(span.0.ptr).max(1),
    }
}

fn describe(code: &clojure_reader::error::Code) -> String {
    use clojure_reader::error::Code;
    match code {
        Code::UnexpectedEOF => {
            "the file ends inside a form (a missing closing bracket or quote)".into()
        }
        Code::UnmatchedDelimiter(c) => format!("{c:?} closes nothing that is open"),
        Code::InvalidEscape => "an escape in a string that EDN does not have".into(),
        Code::NoFloatFeature => "a floating-point number (an ovs-crate map has none)".into(),
        other => format!("{other:?}"),
    }
}

/// Whether `rest` holds only whitespace, commas and `;` comments.
fn only_comments(rest: &str) -> bool {
    rest.lines().all(|l| {
        let l = l.trim_matches(|c: char| c.is_whitespace() || c == ',');
        l.is_empty() || l.starts_with(';')
    })
}

/// Where nesting first goes past [`MAX_DEPTH`], if it does: brackets are counted outside
/// strings, comments and character literals.
fn too_deep(text: &str) -> Option<(usize, usize)> {
    let (mut depth, mut line, mut col) = (0usize, 1usize, 0usize);
    let mut chars = text.chars();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        col += 1;
        if c == '\n' {
            line += 1;
            col = 0;
        }
        if in_string {
            match c {
                '\\' => {
                    chars.next();
                    col += 1;
                }
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            ';' => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        line += 1;
                        col = 0;
                        break;
                    }
                }
            }
            '\\' => {
                chars.next();
                col += 1;
            }
            '(' | '[' | '{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Some((line, col));
                }
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_keep_their_places_and_strings_are_decoded() {
        let v = read("f.edn", "; fleet\n{:a [\"x\\ty\" 3]\n :b (f \"p\")}\n").unwrap();
        let Kind::Map(entries) = &v.kind else {
            panic!("{v:?}")
        };
        assert_eq!(entries.len(), 2);
        let Kind::Vector(items) = &entries[0].1.kind else {
            panic!()
        };
        assert!(matches!(&items[0].kind, Kind::Str(s) if s == "x\ty"));
        assert_eq!(entries[1].0.loc.to_string(), "f.edn:3:2");
        assert!(matches!(&entries[1].1.kind, Kind::List(l) if l.len() == 2));
    }

    #[test]
    fn bad_input_is_refused_with_a_place() {
        let e = read("f.edn", "{:a \"x}\n").unwrap_err();
        assert!(e.message.contains("ends inside a form"), "{e}");
        let e = read("f.edn", "{} {}").unwrap_err();
        assert_eq!(e.loc.unwrap().to_string(), "f.edn:1:3");
        let deep = "[".repeat(10_000);
        let e = read("f.edn", &deep).unwrap_err();
        assert!(e.message.contains("nested more than 64"), "{e}");
        assert!(read("f.edn", "{:a 1} ; end\n").is_ok());
    }
}
