//! Diagnostics: one error or note about a profile, with the place it is about and a hint saying
//! what to do. Validation collects all of them before reporting, so an operator fixes a fleet in
//! one pass instead of one error per run.

use std::fmt;
use std::ops::Range;

/// A place in a file, 1-based as editors show it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Loc {
    pub file: String,
    pub line: usize,
    pub col: usize,
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
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn error(loc: Option<Loc>, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            loc,
            message: message.into(),
            hint: None,
        }
    }

    pub fn note(loc: Option<Loc>, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Note,
            loc,
            message: message.into(),
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
        }
    }

    pub fn span(&self, span: &Range<usize>) -> Option<Loc> {
        Some(self.loc(span.start))
    }

    /// The location of the start of 1-based `line`.
    pub fn line(&self, line: usize) -> Loc {
        Loc {
            file: self.file.clone(),
            line,
            col: 1,
        }
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
}
