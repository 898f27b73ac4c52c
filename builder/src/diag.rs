//! Diagnostics: one error or note about a profile, with the place it is about and a hint saying
//! what to do. Validation collects all of them before reporting, so an operator fixes a fleet in
//! one pass instead of one error per run. [`Sources`] adds to each a snippet of the line it is
//! about with carets under the offending text, PSKs hidden.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;

/// A place in a file, 1-based as editors show it; `width` is how many bytes of the line the
/// offending text covers (at least 1), for the carets.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Loc {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub width: usize,
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.col)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Note,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub loc: Option<Loc>,
    pub message: String,
    /// The offending line with carets under it, indented; set by [`Sources::attach`].
    pub snippet: Option<String>,
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn error(loc: Option<Loc>, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            loc,
            message: message.into(),
            snippet: None,
            hint: None,
        }
    }

    pub fn note(loc: Option<Loc>, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Note,
            loc,
            message: message.into(),
            snippet: None,
            hint: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(loc) = &self.loc {
            write!(f, "{loc}: ")?;
        }
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Note => "note",
        };
        write!(f, "{level}: {}", self.message)?;
        if let Some(snippet) = &self.snippet {
            write!(f, "\n{snippet}")?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// Maps byte offsets of one file's text to line and column.
#[derive(Debug, Clone)]
pub struct SourceMap {
    pub file: String,
    line_starts: Vec<usize>,
    text_len: usize,
}

impl SourceMap {
    pub fn new(file: impl Into<String>, text: &str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        SourceMap {
            file: file.into(),
            line_starts,
            text_len: text.len(),
        }
    }

    pub fn loc(&self, offset: usize) -> Loc {
        let offset = offset.min(self.text_len);
        let line = self.line_starts.partition_point(|&s| s <= offset);
        Loc {
            file: self.file.clone(),
            line,
            col: offset - self.line_starts[line - 1] + 1,
            width: 1,
        }
    }

    /// Where `span` starts, its width cut at the end of that line.
    pub fn span_loc(&self, span: &Range<usize>) -> Loc {
        let mut loc = self.loc(span.start);
        let line_end = self
            .line_starts
            .get(loc.line)
            .map(|&next| next - 1)
            .unwrap_or(self.text_len);
        loc.width = span.end.min(line_end).saturating_sub(span.start).max(1);
        loc
    }

    pub fn span(&self, span: &Range<usize>) -> Option<Loc> {
        Some(self.span_loc(span))
    }

    /// The location of the start of 1-based `line`.
    pub fn line(&self, line: usize) -> Loc {
        Loc {
            file: self.file.clone(),
            line,
            col: 1,
            width: 1,
        }
    }
}

/// The text of the files diagnostics are about, to show the offending line. Values that must not
/// be shown are masked with `*` (same width, so the carets stay under the right text): the spans
/// the shape check marked secret (PSKs, values of unknown keys), and in a file that did not parse
/// as TOML every quoted string, since nothing can tell there which one is a PSK.
#[derive(Debug, Default)]
pub struct Sources {
    files: HashMap<String, Source>,
}

#[derive(Debug)]
struct Source {
    text: String,
    secret: Vec<Range<usize>>,
    mask_strings: bool,
}

impl Sources {
    /// A file that parsed: `secret` are the byte ranges never to show.
    pub fn add(&mut self, file: &str, text: &str, secret: Vec<Range<usize>>) {
        self.insert(file, text, secret, false);
    }

    /// A file that did not parse as TOML: every quoted string on a shown line is masked.
    pub fn add_unparsed(&mut self, file: &str, text: &str) {
        self.insert(file, text, Vec::new(), true);
    }

    fn insert(&mut self, file: &str, text: &str, secret: Vec<Range<usize>>, mask_strings: bool) {
        let source = Source {
            text: text.to_string(),
            secret,
            mask_strings,
        };
        self.files.insert(file.to_string(), source);
    }

    /// Sets the snippet of every diagnostic about a known file. A file not added (an interfaces
    /// file) is read now; one that cannot be read gets no snippet. A TOML file read here has not
    /// been through the shape check, so its strings are masked.
    pub fn attach(&mut self, diags: &mut [Diagnostic]) {
        for d in diags {
            let Some(loc) = &d.loc else { continue };
            if !self.files.contains_key(&loc.file) {
                let Ok(text) = std::fs::read_to_string(&loc.file) else {
                    continue;
                };
                let toml = loc.file.ends_with(".toml");
                self.insert(&loc.file, &text, Vec::new(), toml);
            }
            d.snippet = self.files.get(&loc.file).and_then(|s| s.snippet(loc));
        }
    }
}

impl Source {
    fn snippet(&self, loc: &Loc) -> Option<String> {
        let start = self
            .text
            .split_inclusive('\n')
            .take(loc.line - 1)
            .map(str::len)
            .sum::<usize>();
        let line = self.text.get(start..)?.lines().next()?;
        let mut shown = String::with_capacity(line.len());
        let mut quote: Option<char> = None;
        for (i, c) in line.char_indices() {
            let at = start + i;
            let in_string = quote.is_some() && Some(c) != quote;
            // Punctuation stays, so the shape of a hidden value (`["****"]`) still shows.
            let punct = matches!(c, '"' | '\'' | '[' | ']' | '{' | '}' | ',' | '=' | ' ');
            let hidden = (!punct && self.secret.iter().any(|r| r.contains(&at)))
                || (self.mask_strings && in_string);
            shown.push(if hidden { '*' } else { c });
            if self.mask_strings && (c == '"' || c == '\'') {
                quote = match quote {
                    None => Some(c),
                    Some(q) if q == c => None,
                    q => q,
                };
            }
        }
        let col0 = (loc.col - 1).min(line.len());
        let pad = line.get(..col0).map_or(col0, |p| p.chars().count());
        let end = (col0 + loc.width).min(line.len());
        let width = line.get(col0..end).map_or(1, |w| w.chars().count()).max(1);
        let n = loc.line.to_string();
        let gutter = " ".repeat(n.len());
        Some(format!(
            "  {n} | {}\n  {gutter} | {}{}",
            shown.trim_end(),
            " ".repeat(pad),
            "^".repeat(width)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_map_to_one_based_lines_and_columns() {
        let map = SourceMap::new("f.toml", "ab\ncd\n\nx");
        assert_eq!(map.loc(0).to_string(), "f.toml:1:1");
        assert_eq!(map.loc(1).to_string(), "f.toml:1:2");
        assert_eq!(map.loc(3).to_string(), "f.toml:2:1");
        assert_eq!(map.loc(7).to_string(), "f.toml:4:1");
        assert_eq!(map.loc(99).to_string(), "f.toml:4:2");
    }

    #[test]
    fn snippets_put_carets_under_the_span_and_hide_secrets() {
        let text = "[host]\npsk = \"abcdefgh\" # x\nname = \"h\u{e9}llo\"\n";
        let map = SourceMap::new("f.toml", text);
        let psk_value = 13..23;
        let mut sources = Sources::default();
        sources.add("f.toml", text, vec![psk_value.clone()]);
        let mut diags = vec![
            Diagnostic::error(Some(map.span_loc(&psk_value)), "bad psk"),
            Diagnostic::error(Some(map.span_loc(&(35..43))), "bad name"),
        ];
        sources.attach(&mut diags);
        assert_eq!(
            diags[0].to_string(),
            "f.toml:2:7: error: bad psk\n  2 | psk = \"********\" # x\n    |       ^^^^^^^^^^"
        );
        assert_eq!(
            diags[1].snippet.as_deref(),
            Some("  3 | name = \"h\u{e9}llo\"\n    |        ^^^^^^^")
        );
        let mut unparsed = Sources::default();
        unparsed.add_unparsed("f.toml", text);
        let mut d = vec![Diagnostic::error(Some(map.loc(13)), "syntax")];
        unparsed.attach(&mut d);
        assert_eq!(
            d[0].snippet.as_deref(),
            Some("  2 | psk = \"********\" # x\n    |       ^")
        );
    }
}
