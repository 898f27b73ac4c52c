//! journald-friendly stderr: when stderr is connected to the journal (systemd sets
//! `JOURNAL_STREAM=DEV:INODE` for the unit's stream, and it matches stderr's own device and inode
//! only while stderr really is that stream, not after a redirect), each line gets the sd-daemon
//! priority prefix (`<3>` error, `<4>` warning, `<6>` info) so `journalctl -p err` finds failures;
//! anywhere else lines stay plain text. See sd-daemon(3) and systemd.exec(5).

use std::io::Write;
use std::sync::OnceLock;

/// Syslog priorities, as sd-daemon(3) spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    Error = 3,
    Warning = 4,
    Info = 6,
}

impl Priority {
    /// The priority a log line means by how it starts (`error:`, `warning:`, any case); the
    /// applier's messages already say so, which keeps the call sites as they are.
    pub fn of(msg: &str) -> Priority {
        let lower: String = msg
            .trim_start()
            .chars()
            .take(8)
            .collect::<String>()
            .to_ascii_lowercase();
        if lower.starts_with("error:") {
            Priority::Error
        } else if lower.starts_with("warning:") {
            Priority::Warning
        } else {
            Priority::Info
        }
    }
}

/// Whether `journal_stream` (the value of `JOURNAL_STREAM`) names the file whose device and inode
/// are `dev` and `ino`.
pub fn matches_stream(journal_stream: &str, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = journal_stream.trim().split_once(':') else {
        return false;
    };
    matches!((d.parse::<u64>(), i.parse::<u64>()), (Ok(d), Ok(i)) if d == dev && i == ino)
}

/// Whether this process's stderr is the journal (looked up once).
pub fn stderr_is_journal() -> bool {
    static IS: OnceLock<bool> = OnceLock::new();
    *IS.get_or_init(|| {
        use std::os::fd::AsFd;
        use std::os::unix::fs::MetadataExt;
        let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
            return false;
        };
        let meta = std::io::stderr()
            .as_fd()
            .try_clone_to_owned()
            .and_then(|fd| std::fs::File::from(fd).metadata());
        match (stream.to_str(), meta) {
            (Some(s), Ok(m)) => matches_stream(s, m.dev(), m.ino()),
            _ => false,
        }
    })
}

/// `msg` as written to stderr: `prefix: ` before it, and each line prefixed with the priority
/// when `journal` (a multi-line message stays at one priority in the journal).
pub fn format(prefix: &str, priority: Priority, msg: &str, journal: bool) -> String {
    let mut out = String::new();
    for (n, line) in msg.lines().enumerate() {
        if journal {
            out.push_str(&format!("<{}>", priority as u8));
        }
        if n == 0 {
            out.push_str(prefix);
            out.push_str(": ");
        }
        out.push_str(line);
        out.push('\n');
    }
    if out.is_empty() {
        out = format!("{prefix}:\n");
    }
    out
}

/// Writes `prefix: msg` to stderr at the priority `msg` states by how it starts.
pub fn log(prefix: &str, msg: &str) {
    let text = format(prefix, Priority::of(msg), msg, stderr_is_journal());
    let _ = std::io::stderr().write_all(text.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_from_the_message() {
        assert_eq!(Priority::of("error: bad"), Priority::Error);
        assert_eq!(Priority::of("ERROR: revocations"), Priority::Error);
        assert_eq!(Priority::of("warning: key"), Priority::Warning);
        assert_eq!(Priority::of("WARNING: downgrade"), Priority::Warning);
        assert_eq!(Priority::of("generation 3 restored"), Priority::Info);
        assert_eq!(Priority::of("err"), Priority::Info);
        assert_eq!(Priority::of("error:"), Priority::Error);
        assert_eq!(Priority::of("ünïcödé: x"), Priority::Info);
    }

    #[test]
    fn journal_stream_must_name_stderr_itself() {
        assert!(matches_stream("8:12345", 8, 12345));
        assert!(matches_stream("8:12345\n", 8, 12345));
        assert!(!matches_stream("8:12346", 8, 12345));
        assert!(!matches_stream("9:12345", 8, 12345));
        assert!(!matches_stream("", 8, 12345));
        assert!(!matches_stream("8", 8, 12345));
        assert!(!matches_stream("x:y", 8, 12345));
    }

    #[test]
    fn prefixes_only_for_the_journal() {
        assert_eq!(
            format("applier", Priority::Error, "error: no", true),
            "<3>applier: error: no\n"
        );
        assert_eq!(
            format("applier", Priority::Error, "error: no", false),
            "applier: error: no\n"
        );
        assert_eq!(
            format("applier", Priority::Warning, "warning: a\nb", true),
            "<4>applier: warning: a\n<4>b\n"
        );
        assert_eq!(
            format("applier", Priority::Info, "restored", true),
            "<6>applier: restored\n"
        );
    }

    #[test]
    fn stderr_redirected_to_a_file_is_not_the_journal() {
        // The test harness's stderr is a pipe or terminal whose inode no JOURNAL_STREAM names
        // unless the tests themselves run under systemd; either way the answer is consistent
        // with matches_stream on stderr's own metadata.
        use std::os::fd::AsFd;
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::File::from(std::io::stderr().as_fd().try_clone_to_owned().unwrap())
            .metadata()
            .unwrap();
        let expected = std::env::var("JOURNAL_STREAM")
            .map(|s| matches_stream(&s, m.dev(), m.ino()))
            .unwrap_or(false);
        assert_eq!(stderr_is_journal(), expected);
    }
}
