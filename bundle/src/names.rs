//! Names that reach the host: Linux interface (and OVS port) names.
//!
//! Both sides use the same rule: the builder refuses a profile naming an interface this rule
//! refuses, and the applier refuses a bundle that does. Names end up on command lines (`ifup`,
//! `ifdown`), in `/etc/network/interfaces` and in OVSDB rows, so the rule is stricter than the
//! kernel's: a name can never be read as an option, a path, a stanza keyword's argument list or
//! an `ifupdown` `iface=logical` mapping.

/// Longest interface name Linux accepts (IFNAMSIZ - 1).
pub const MAX_IFNAME: usize = 15;

/// Why `name` cannot be an interface or port name, or `None` if it can.
///
/// Refused: the empty name, more than [`MAX_IFNAME`] bytes, `.` and `..`, a leading `-`, and any
/// byte other than ASCII letters, digits, `-`, `_` and `.` (so no `/`, `:`, `=`, whitespace,
/// quotes, control characters or non-ASCII). The reason is a short phrase to follow the name,
/// e.g. `"-a" starts with '-' ...`.
pub fn ifname_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("is empty");
    }
    if name.len() > MAX_IFNAME {
        return Some("is longer than 15 bytes, the most Linux allows");
    }
    if name == "." || name == ".." {
        return Some("is \".\" or \"..\", which Linux refuses as an interface name");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Some("contains a character other than ASCII letters, digits, '-', '_' and '.'");
    }
    if name.starts_with('-') {
        return Some(
            "starts with '-', so commands such as ifup and ifdown would read it as an option",
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_names_are_accepted() {
        for name in [
            "eth0",
            "priv0",
            "br-int",
            "gre-0a630002",
            "enp0s31f6",
            "bond0.100",
            "a_b",
            "a-",
            "x",
            "a23456789012345",
        ] {
            assert_eq!(ifname_problem(name), None, "{name:?}");
        }
    }

    #[test]
    fn each_kind_of_bad_name_is_refused_with_its_reason() {
        let cases = [
            ("", "empty"),
            ("a234567890123456", "longer than 15"),
            (".", "\".\" or \"..\""),
            ("..", "\".\" or \"..\""),
            ("-a", "starts with '-'"),
            ("--help", "starts with '-'"),
            ("-", "starts with '-'"),
            ("a/b", "other than ASCII"),
            ("eth0:1", "other than ASCII"),
            ("a=b", "other than ASCII"),
            ("eth 0", "other than ASCII"),
            ("eth\t0", "other than ASCII"),
            ("eth\n0", "other than ASCII"),
            ("eth\u{0}0", "other than ASCII"),
            ("\u{7f}", "other than ASCII"),
            ("a\"b", "other than ASCII"),
            ("a'b", "other than ASCII"),
            ("a`b", "other than ASCII"),
            ("a$b", "other than ASCII"),
            ("a;b", "other than ASCII"),
            ("a\\b", "other than ASCII"),
            ("eth\u{e9}", "other than ASCII"),
            ("\u{ff10}", "other than ASCII"),
        ];
        for (name, want) in cases {
            let got = ifname_problem(name).unwrap_or_else(|| panic!("{name:?} accepted"));
            assert!(got.contains(want), "{name:?}: {got}");
        }
    }

    #[test]
    fn the_length_limit_counts_bytes_not_characters() {
        // 8 two-byte characters: 8 characters, 16 bytes. Refused either way, but for the
        // right reason.
        let name = "\u{e9}".repeat(8);
        assert_eq!(
            ifname_problem(&name),
            Some("is longer than 15 bytes, the most Linux allows")
        );
        assert_eq!(ifname_problem(&"a".repeat(15)), None);
        assert!(ifname_problem(&"a".repeat(16)).is_some());
    }

    /// Every single byte, alone and inside a name: only the allowed ones pass.
    #[test]
    fn every_ascii_byte_is_decided_by_the_allowed_set() {
        for b in 0u8..128 {
            let c = b as char;
            let allowed = c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
            let inside = format!("a{c}b");
            assert_eq!(ifname_problem(&inside).is_none(), allowed, "{inside:?}");
        }
    }
}
