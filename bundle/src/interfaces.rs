//! `/etc/network/interfaces` (interfaces(5)), as far as both sides need to understand it: which
//! interfaces a file defines, and which of them a new file changes.

use std::collections::BTreeMap;

/// Per interface, its stanzas (`iface NAME ...` with their option lines, and `auto`/`allow-`
/// lines naming it), normalised for comparison.
pub fn stanzas(text: &[u8]) -> BTreeMap<String, String> {
    let text = String::from_utf8_lossy(text);
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let mut words = trimmed.split_whitespace();
        let first = words.next().unwrap_or_default();
        let top_level = !line.starts_with(char::is_whitespace);
        match first {
            "iface" if top_level => {
                current = words.next().map(str::to_string);
                if let Some(name) = &current {
                    out.entry(name.clone())
                        .or_default()
                        .push_str(&format!("{trimmed}\n"));
                }
            }
            "auto" | "allow-hotplug" | "allow-auto" if top_level => {
                current = None;
                for name in words {
                    out.entry(name.to_string())
                        .or_default()
                        .push_str(&format!("{first}\n"));
                }
            }
            _ if top_level => current = None,
            _ => {
                if let Some(name) = &current {
                    out.entry(name.clone())
                        .or_default()
                        .push_str(&format!("  {trimmed}\n"));
                }
            }
        }
    }
    out
}

/// Every `iface NAME` line of the file, as (name, 1-based line), in file order. Indented ones
/// count too: ifupdown reads the keyword wherever the line starts.
pub fn defined(text: &str) -> Vec<(String, usize)> {
    text.lines()
        .enumerate()
        .filter_map(|(i, line)| {
            let mut words = line.split_whitespace();
            (words.next() == Some("iface"))
                .then(|| words.next())
                .flatten()
                .map(|name| (name.to_string(), i + 1))
        })
        .collect()
}

/// Interfaces (other than `lo`) whose stanzas differ between two interfaces files.
pub fn changed_stanzas(old: &[u8], new: &[u8]) -> Vec<String> {
    let (a, b) = (stanzas(old), stanzas(new));
    let mut names: Vec<String> = a
        .keys()
        .chain(b.keys())
        .filter(|n| *n != "lo")
        .cloned()
        .collect();
    names.sort();
    names.dedup();
    names.retain(|n| a.get(n) != b.get(n));
    names
}

/// Whether the file has a stanza for `name`.
pub fn has_stanza(text: &[u8], name: &str) -> bool {
    stanzas(text).contains_key(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_interfaces_whose_stanza_changed_are_cycled() {
        let old = b"auto lo\niface lo inet loopback\n\nauto priv0\niface priv0 inet static\n    address 10.0.0.1/24\n\nauto priv1\niface priv1 inet manual\n";
        let new = b"auto lo\niface lo inet loopback\n\nauto priv0\niface priv0 inet static\n    address 10.0.0.2/24\n\nauto priv1\niface priv1 inet manual\n\nauto priv2\niface priv2 inet manual\n";
        assert_eq!(changed_stanzas(old, new), ["priv0", "priv2"]);
        assert!(changed_stanzas(old, old).is_empty());
    }

    #[test]
    fn defined_names_carry_their_line() {
        let text = "auto lo\niface lo inet loopback\n# iface x\n  iface y\niface lo inet dhcp\n";
        assert_eq!(
            defined(text),
            [
                ("lo".to_string(), 2),
                ("y".to_string(), 4),
                ("lo".to_string(), 5)
            ]
        );
    }
}
