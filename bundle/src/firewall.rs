//! iptables: this tool's chains as a bundle's `iptables.rules` states them (written by the builder,
//! read by the applier), as read from `iptables-save`, and the `iptables-restore --noflush` input
//! that turns one into the other, one atomic commit per table. Rules outside the `OVSB-*` chains
//! are never written, apart from one jump into each.
//!
//! IPv4 (`iptables`, the bundle's `iptables.rules`) and IPv6 (`ip6tables`, `ip6tables.rules`)
//! are two [`Chains`] of the same chain names, told apart by their [`Family`]: the rule shapes
//! are the same, only the addresses (and the guard's host prefix, /32 or /128) differ.
//!
//! Over 500 lines with its tests: parse, render, diff and `*-restore` input of one format, for
//! both families.

use crate::tunnel::TunnelKind;
use crate::IPTABLES_CHAINS;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};

/// Which netfilter family a set of chains is in: `iptables` or `ip6tables`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    #[default]
    V4,
    V6,
}

impl Family {
    /// The command prefix: `iptables` or `ip6tables` (`-save`, `-restore` follow).
    pub fn command(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }

    /// The prefix length of one host address.
    pub fn host_prefix(self) -> u32 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }

    pub fn of(ip: std::net::IpAddr) -> Family {
        if ip.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }

    /// `addr/len` as a network of this family with no host bits (as iptables-save prints it).
    fn network_problem(self, s: &str) -> Option<String> {
        let ok = s.split_once('/').is_some_and(|(ip, len)| {
            let Ok(len) = len.parse::<u32>() else {
                return false;
            };
            match (self, ip.parse::<std::net::IpAddr>()) {
                (Family::V4, Ok(std::net::IpAddr::V4(ip))) if len <= 32 => {
                    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
                    u32::from(ip) & !mask == 0
                }
                // iptables-save prints IPv6 addresses in canonical (RFC 5952) form; any other
                // spelling would never compare equal with what the kernel reports.
                (Family::V6, Ok(std::net::IpAddr::V6(ip))) if len <= 128 => {
                    let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
                    u128::from(ip) & !mask == 0
                        && ip.to_string() == s.split('/').next().unwrap_or("")
                }
                _ => false,
            }
        });
        let what = match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        };
        (!ok).then(|| format!("{s:?} is not an {what} network (address/prefix, no host bits)"))
    }
}

/// The state of the owned chains: per chain, whether it exists, its rules, and whether its
/// built-in chain jumps to it.
///
/// Read back (a generation's snapshot, an in-progress marker), every owned chain is there: a
/// record written before a chain was owned (the guard chains) has it as absent, which is what
/// it was on that host.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(from = "RecordedChains")]
pub struct Chains {
    pub chains: BTreeMap<String, Chain>,
    /// iptables or ip6tables (absent in snapshots written before IPv6: IPv4).
    #[serde(default, skip_serializing_if = "is_v4")]
    pub family: Family,
}

/// [`Chains`] as recorded, perhaps by an older applier that owned fewer chains.
#[derive(Deserialize)]
struct RecordedChains {
    chains: BTreeMap<String, Chain>,
    #[serde(default)]
    family: Family,
}

impl From<RecordedChains> for Chains {
    fn from(r: RecordedChains) -> Chains {
        let mut out = Chains {
            chains: r.chains,
            family: r.family,
        };
        for (_, _, chain) in IPTABLES_CHAINS {
            out.chains.entry(chain.to_string()).or_default();
        }
        out
    }
}

/// An owned chain a state does not mention: absent.
static ABSENT: Chain = Chain {
    exists: false,
    rules: Vec::new(),
    jump: false,
};

fn is_v4(f: &Family) -> bool {
    *f == Family::V4
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Chain {
    pub exists: bool,
    /// Rule lines exactly as `iptables-save` prints them (`-A OVSB-... ...`).
    pub rules: Vec<String>,
    pub jump: bool,
}

fn jump_rule(builtin: &str, chain: &str) -> String {
    format!("-A {builtin} -j {chain}")
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("iptables.rules line {line}: {reason}")]
pub struct RulesError {
    pub line: usize,
    pub reason: String,
}

/// Why `rule` is not one of the four shapes the builder generates for a forwarder (`None`: it is):
///
/// - `-A OVSB-POSTROUTING -s CIDR -o VIA -j MASQUERADE`
/// - `-A OVSB-FORWARD -s CIDR -i FROM -o VIA -j ACCEPT`
/// - `-A OVSB-FORWARD -d CIDR -i VIA -o FROM -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`
/// - `-A OVSB-INPUT -i FROM -j ACCEPT`
/// - `-A OVSB-OUTPUT -d PEER/32 -j OVSB-GUARD-GRE` (a PSK tunnel's plaintext guard; `-VXLAN`,
///   `-GENEVE` for those types; `/128` in ip6tables), and the guard chains' own rule,
///   `-A OVSB-GUARD-GRE -p gre -m policy --dir out --pol none -j DROP` (the type's match)
/// - `-A OVSB-OUTPUT -d PEER/32 -p gre -m policy --dir out --pol none -j DROP`: the guard as
///   bundles before the guard chains wrote it, still accepted so that those generations apply
/// - `-A OVSB-OUTPUT -j OVSB-GUARD-GENEVE`: an OVN chassis' guard with IPsec, every destination
///   (Geneve only: OVN's tunnel type)
///
/// A signed bundle is no reason to open the host's firewall wider than that (`-j ACCEPT` alone
/// in `OVSB-INPUT` would accept everything, ahead of the operator's own rules).
pub fn rule_shape_problem(rule: &str) -> Option<String> {
    rule_shape_problem_in(Family::V4, rule)
}

/// [`rule_shape_problem`] for chains of `family`: the same shapes, with that family's addresses.
pub fn rule_shape_problem_in(family: Family, rule: &str) -> Option<String> {
    let w: Vec<&str> = rule.split_whitespace().collect();
    // A network as iptables-save prints it: no host bits (iptables would normalise them, and
    // the rule would never match what the bundle says).
    let cidr = |s: &str| family.network_problem(s);
    let ifname = |s: &str| crate::names::ifname_problem(s).map(|p| format!("interface {s:?}: {p}"));
    let one_peer = |peer: &str| {
        let one = peer
            .strip_suffix(&format!("/{}", family.host_prefix()))
            .is_some();
        match family.network_problem(peer) {
            None if one => None,
            _ => Some(format!(
                "{peer:?} is not one {} address",
                match family {
                    Family::V4 => "IPv4",
                    Family::V6 => "IPv6",
                }
            )),
        }
    };
    match w.as_slice() {
        ["-A", "OVSB-POSTROUTING", "-s", src, "-o", via, "-j", "MASQUERADE"] => {
            cidr(src).or_else(|| ifname(via))
        }
        ["-A", "OVSB-FORWARD", "-s", src, "-i", from, "-o", via, "-j", "ACCEPT"]
        | ["-A", "OVSB-FORWARD", "-d", src, "-i", via, "-o", from, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"] => {
            cidr(src).or_else(|| ifname(from)).or_else(|| ifname(via))
        }
        ["-A", "OVSB-INPUT", "-i", from, "-j", "ACCEPT"] => ifname(from),
        ["-A", "OVSB-OUTPUT", "-d", peer, "-p", "gre", "-m", "policy", "--dir", "out", "--pol", "none", "-j", "DROP"]
        | ["-A", "OVSB-OUTPUT", "-d", peer, "-p", "udp", "-m", "udp", "--dport", "4789" | "6081", "-m", "policy", "--dir", "out", "--pol", "none", "-j", "DROP"] => {
            one_peer(peer)
        }
        ["-A", "OVSB-OUTPUT", "-d", peer, "-j", target]
            if TunnelKind::ALL.iter().any(|k| k.guard_chain() == *target) =>
        {
            one_peer(peer)
        }
        ["-A", "OVSB-OUTPUT", "-j", _] if rule == guard_all_geneve_rule() => None,
        ["-A", chain, ..] if TunnelKind::ALL.iter().any(|k| k.guard_chain() == *chain) => {
            let kind = TunnelKind::ALL
                .into_iter()
                .find(|k| k.guard_chain() == *chain)
                .expect("matched above");
            (rule != guard_drop_rule(kind)).then(|| {
                format!(
                    "{chain} holds only its one rule, {:?}",
                    guard_drop_rule(kind)
                )
            })
        }
        _ => Some("not one of the forwarder's or the IPsec guard's rule shapes".into()),
    }
}

/// The chain of the IPsec guard's per-peer rules.
pub const GUARD_CHAIN: &str = "OVSB-OUTPUT";

/// Every chain of the IPsec guard: `OVSB-OUTPUT`, whose rules follow the PSK tunnels, and one
/// chain per tunnel type with one fixed rule (see `crate::IPTABLES_CHAINS` for why). All of them
/// are part of what `--gre-only` reconciles, as they follow the tunnels.
pub const GUARD_CHAINS: [&str; 4] = [
    GUARD_CHAIN,
    "OVSB-GUARD-GRE",
    "OVSB-GUARD-VXLAN",
    "OVSB-GUARD-GENEVE",
];

/// The IPsec guard rule for a PSK tunnel of type `kind` to `peer` (an IPv4 or IPv6 address, in
/// canonical form): its packets to that peer go through the type's guard chain. An IPv6 peer's
/// rule (`/128`) belongs in the ip6tables chains.
pub fn guard_rule(peer: &str, kind: TunnelKind) -> String {
    let len = if peer.contains(':') { 128 } else { 32 };
    format!("-A {GUARD_CHAIN} -d {peer}/{len} -j {}", kind.guard_chain())
}

/// The IPsec guard rule of an OVN chassis with IPsec: every Geneve packet the host sends goes
/// through Geneve's guard chain, whatever its destination. OVN makes the tunnels, to chassis
/// that join later too, so no list of peers in the bundle could name them (and naming them would
/// change every chassis' bundle at every join); the builder refuses a plain Geneve tunnel of the
/// host's own beside it.
pub fn guard_all_geneve_rule() -> String {
    format!("-A {GUARD_CHAIN} -j {}", TunnelKind::Geneve.guard_chain())
}

/// The guard rule for `peer` as bundles made before the guard chains wrote it (the type's match
/// and the policy in the one `OVSB-OUTPUT` rule): still applied as it is.
pub fn legacy_guard_rule(peer: &str, kind: TunnelKind) -> String {
    let len = if peer.contains(':') { 128 } else { 32 };
    format!(
        "-A {GUARD_CHAIN} -d {peer}/{len} {} -m policy --dir out --pol none -j DROP",
        kind.underlay_match()
    )
}

/// The one rule of `kind`'s guard chain: the type's tunnel packets that no IPsec policy covers
/// are dropped.
pub fn guard_drop_rule(kind: TunnelKind) -> String {
    format!(
        "-A {} {} -m policy --dir out --pol none -j DROP",
        kind.guard_chain(),
        kind.underlay_match()
    )
}

/// The per-peer guard chain (`OVSB-OUTPUT`) for these PSK tunnels (peer, type): every tunnel
/// with a PSK gets its rule, once per peer and type (keyed tunnels to one peer share it).
pub fn guard_chain<'a>(psk_tunnels: impl IntoIterator<Item = (&'a str, TunnelKind)>) -> Chain {
    let mut rules: Vec<String> = Vec::new();
    let mut seen = HashSet::new();
    for (peer, kind) in psk_tunnels {
        if seen.insert((peer, kind)) {
            rules.push(guard_rule(peer, kind));
        }
    }
    Chain {
        exists: true,
        rules,
        jump: true,
    }
}

/// Every rule of the guard for these PSK tunnels: [`guard_chain`]'s, then each type's drop
/// (present in every bundle, so that the per-type chains never depend on which tunnels exist).
pub fn guard_rules<'a>(
    psk_tunnels: impl IntoIterator<Item = (&'a str, TunnelKind)>,
) -> Vec<String> {
    let mut rules = guard_chain(psk_tunnels).rules;
    rules.extend(TunnelKind::ALL.into_iter().map(guard_drop_rule));
    rules
}

impl Chains {
    /// The owned chains of `family` as `<family>-save` shows them.
    pub fn from_save_in(family: Family, save: &str) -> Chains {
        let mut out = Chains::from_save(save);
        out.family = family;
        out
    }

    /// What a bundle's `ip6tables.rules` (`family` V6) or `iptables.rules` asks for.
    pub fn from_bundle_in(family: Family, rules: &str) -> Result<Chains, RulesError> {
        let mut out = Chains::from_bundle_checked(family, rules)?;
        out.family = family;
        Ok(out)
    }

    /// [`Chains::wanted`] for `family`.
    pub fn wanted_in<'a>(
        family: Family,
        rules: impl IntoIterator<Item = &'a str>,
    ) -> Result<Chains, RulesError> {
        let text = Chains::wanted_text(rules)?;
        Chains::from_bundle_in(family, &text)
    }

    /// This state, with the IPsec guard's chains as `other` has them.
    pub fn with_guard_of(&self, other: &Chains) -> Chains {
        let mut out = self.clone();
        for chain in GUARD_CHAINS {
            match other.chains.get(chain) {
                Some(c) => out.chains.insert(chain.to_string(), c.clone()),
                None => out.chains.remove(chain),
            };
        }
        out
    }

    /// This state with `guard` (see [`guard_chain`]) as its per-peer guard chain, and every
    /// type's guard chain holding its drop.
    pub fn with_guard(&self, guard: Chain) -> Chains {
        let mut out = self.clone();
        out.chains.insert(GUARD_CHAIN.to_string(), guard);
        for kind in TunnelKind::ALL {
            let chain = Chain {
                exists: true,
                rules: vec![guard_drop_rule(kind)],
                jump: false,
            };
            out.chains.insert(kind.guard_chain().to_string(), chain);
        }
        out
    }

    /// This state without the IPsec guard: what must be equal for a change to be GRE-only.
    pub fn without_guard(&self) -> Chains {
        let mut out = self.clone();
        for chain in GUARD_CHAINS {
            out.chains.remove(chain);
        }
        out
    }

    /// The owned chains as `iptables-save` shows them.
    pub fn from_save(save: &str) -> Chains {
        let mut out = Chains::default();
        for (_, _, chain) in IPTABLES_CHAINS {
            out.chains.entry(chain.to_string()).or_default();
        }
        // What each owned chain's lines start with, made once, not once per line.
        let marks: Vec<(String, String, String)> = IPTABLES_CHAINS
            .iter()
            .map(|(_, builtin, chain)| {
                (
                    format!(":{chain} "),
                    format!("-A {chain} "),
                    // No built-in chain jumps to a guard chain; nothing can match this.
                    if builtin.is_empty() {
                        String::from("\n")
                    } else {
                        jump_rule(builtin, chain)
                    },
                )
            })
            .collect();
        let mut table = "";
        for line in save.lines() {
            if let Some(t) = line.strip_prefix('*') {
                table = t;
                continue;
            }
            for ((t, _, chain), (declared, rule, jump)) in IPTABLES_CHAINS.iter().zip(&marks) {
                if *t != table {
                    continue;
                }
                let Some(c) = out.chains.get_mut(*chain) else {
                    continue;
                };
                if line.starts_with(declared.as_str()) {
                    c.exists = true;
                } else if line.starts_with(rule.as_str()) {
                    c.rules.push(line.to_string());
                } else if line == jump {
                    c.jump = true;
                }
            }
        }
        out
    }

    /// What a bundle's `iptables.rules` asks for: every owned chain, with its jump. Refuses any
    /// line that would touch a chain this tool does not own.
    pub fn from_bundle(rules: &str) -> Result<Chains, RulesError> {
        Chains::from_bundle_checked(Family::V4, rules)
    }

    fn from_bundle_checked(family: Family, rules: &str) -> Result<Chains, RulesError> {
        let mut out = Chains::default();
        for (_, builtin, chain) in IPTABLES_CHAINS {
            out.chains.insert(
                chain.to_string(),
                Chain {
                    exists: true,
                    rules: Vec::new(),
                    jump: !builtin.is_empty(),
                },
            );
        }
        let mut table = String::new();
        for (i, line) in rules.lines().enumerate() {
            let err = |reason: String| RulesError {
                line: i + 1,
                reason,
            };
            let line = line.trim_end();
            if line.is_empty() || line.starts_with('#') || line == "COMMIT" {
                continue;
            }
            if let Some(t) = line.strip_prefix('*') {
                table = t.to_string();
                continue;
            }
            let owner = |name: &str| {
                IPTABLES_CHAINS
                    .iter()
                    .find(|(t, _, c)| *c == name && *t == table)
                    .map(|(_, _, c)| *c)
            };
            if let Some(decl) = line.strip_prefix(':') {
                let name = decl.split_whitespace().next().unwrap_or_default();
                owner(name).ok_or_else(|| {
                    err(format!(
                        "declares chain {name} in table {table}, which ovs-bundle does not own"
                    ))
                })?;
                continue;
            }
            let mut words = line.split_whitespace();
            match (words.next(), words.next()) {
                (Some("-A"), Some(name)) => {
                    let chain = owner(name).ok_or_else(|| {
                        err(format!("appends to chain {name} in table {table}, which ovs-bundle does not own"))
                    })?;
                    if let Some(why) = rule_shape_problem_in(family, line) {
                        return Err(err(format!(
                            "{line:?} is not a rule ovs-bundle makes ({why}); the applier applies only \
                             a NAT forwarder's rules (MASQUERADE of its source out of its uplink, \
                             FORWARD both ways with replies by conntrack, INPUT from its private \
                             interface) and the IPsec guard (drop GRE to a PSK peer outside IPsec)"
                        )));
                    }
                    out.chains
                        .get_mut(chain)
                        .expect("owned")
                        .rules
                        .push(line.to_string());
                }
                _ => {
                    return Err(err(format!(
                        "{line:?} is not a chain declaration or an -A rule"
                    )))
                }
            }
        }
        Ok(out)
    }

    /// Every owned chain, existing and jumped to, holding `rules` (`-A OVSB-... ...` lines, in
    /// order): what a bundle wants. Refuses a rule for a chain this tool does not own.
    pub fn wanted<'a>(rules: impl IntoIterator<Item = &'a str>) -> Result<Chains, RulesError> {
        Chains::from_bundle(&Chains::wanted_text(rules)?)
    }

    fn wanted_text<'a>(rules: impl IntoIterator<Item = &'a str>) -> Result<String, RulesError> {
        let mut text = String::new();
        let mut by_table: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (n, rule) in rules.into_iter().enumerate() {
            let chain = rule.split_whitespace().nth(1).unwrap_or_default();
            let (table, _, _) = IPTABLES_CHAINS
                .iter()
                .find(|(_, _, c)| *c == chain)
                .ok_or_else(|| RulesError {
                    line: n + 1,
                    reason: format!("{rule:?} is not a rule of a chain ovs-bundle owns"),
                })?;
            by_table.entry(table).or_default().push(rule);
        }
        for (table, rules) in by_table {
            text.push_str(&format!("*{table}\n"));
            for r in rules {
                text.push_str(r);
                text.push('\n');
            }
            text.push_str("COMMIT\n");
        }
        Ok(text)
    }

    /// The bundle's `iptables.rules`: `header` as comment lines, then per table every owned chain
    /// declared (so applying empties it) and filled.
    pub fn bundle_text(&self, header: &str) -> String {
        let mut out = String::new();
        for line in header.lines() {
            out.push_str(&format!("# {line}\n"));
        }
        let mut tables: Vec<&str> = IPTABLES_CHAINS.iter().map(|c| c.0).collect();
        tables.dedup();
        for table in tables {
            out.push_str(&format!("*{table}\n"));
            let chains = IPTABLES_CHAINS.iter().filter(|c| c.0 == table);
            for (_, _, chain) in chains.clone() {
                out.push_str(&format!(":{chain} - [0:0]\n"));
            }
            for (_, _, chain) in chains {
                for rule in self
                    .chains
                    .get(*chain)
                    .map(|c| &c.rules)
                    .into_iter()
                    .flatten()
                {
                    out.push_str(rule);
                    out.push('\n');
                }
            }
            out.push_str("COMMIT\n");
        }
        out
    }

    /// The owned chain `name` as this state has it (absent if it does not mention it).
    pub fn chain(&self, name: &str) -> &Chain {
        self.chains.get(name).unwrap_or(&ABSENT)
    }

    /// Rules that differ from `other`, as `(chain, change)` lines for people.
    pub fn diff(&self, current: &Chains) -> Vec<String> {
        let mut out = Vec::new();
        for (_, builtin, chain) in IPTABLES_CHAINS {
            let (want, have) = (self.chain(chain), current.chain(chain));
            if want.exists && !have.exists {
                out.push(format!("+ chain {chain}"));
            }
            // Equal rules (every no-op) are one comparison; otherwise set lookups, not a search
            // of one list per rule of the other (a million comparisons at 1,000 guard rules).
            if want.rules != have.rules {
                let wanted: HashSet<&String> = want.rules.iter().collect();
                let had: HashSet<&String> = have.rules.iter().collect();
                for r in have.rules.iter().filter(|r| !wanted.contains(r)) {
                    out.push(format!("- {r}"));
                }
                for r in want.rules.iter().filter(|r| !had.contains(r)) {
                    out.push(format!("+ {r}"));
                }
            }
            if want.rules != have.rules && out.is_empty() {
                out.push(format!("~ {chain}: rule order"));
            }
            if want.jump != have.jump {
                out.push(format!(
                    "{} {}",
                    if want.jump { "+" } else { "-" },
                    jump_rule(builtin, chain)
                ));
            }
            if !want.exists && have.exists {
                out.push(format!("- chain {chain}"));
            }
        }
        out
    }

    /// `iptables-restore --noflush` input turning `current` into `self`.
    pub fn restore_input(&self, current: &Chains) -> String {
        let mut out = String::new();
        let mut tables: Vec<&str> = IPTABLES_CHAINS.iter().map(|c| c.0).collect();
        tables.dedup();
        for table in tables {
            out.push_str(&format!("*{table}\n"));
            let chains: Vec<_> = IPTABLES_CHAINS.iter().filter(|c| c.0 == table).collect();
            // Declaring a chain creates it, or empties it if it exists.
            for (_, _, chain) in &chains {
                if self.chain(chain).exists || current.chain(chain).exists {
                    out.push_str(&format!(":{chain} - [0:0]\n"));
                }
            }
            for (_, _, chain) in &chains {
                for r in &self.chain(chain).rules {
                    out.push_str(r);
                    out.push('\n');
                }
            }
            for (_, builtin, chain) in &chains {
                let (want, have) = (self.chain(chain), current.chain(chain));
                if want.jump && !have.jump {
                    out.push_str(&format!("-I {builtin} 1 -j {chain}\n"));
                }
                if !want.jump && have.jump {
                    out.push_str(&format!("-D {builtin} -j {chain}\n"));
                }
                if !want.exists && have.exists {
                    out.push_str(&format!("-X {chain}\n"));
                }
            }
            out.push_str("COMMIT\n");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tunnel::TunnelKind;

    const SAVE: &str =
        "# Generated by iptables-save\n*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n\
        :OVSB-FORWARD - [0:0]\n-A FORWARD -j OVSB-FORWARD\n-A FORWARD -i x -j DROP\n\
        -A OVSB-FORWARD -i priv0 -j ACCEPT\nCOMMIT\n*nat\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n";

    #[test]
    fn the_ovn_guard_covers_geneve_to_every_destination_and_nothing_else() {
        assert_eq!(
            guard_all_geneve_rule(),
            "-A OVSB-OUTPUT -j OVSB-GUARD-GENEVE"
        );
        assert_eq!(rule_shape_problem(&guard_all_geneve_rule()), None);
        for other in [
            "-A OVSB-OUTPUT -j OVSB-GUARD-GRE",
            "-A OVSB-OUTPUT -j OVSB-GUARD-VXLAN",
            "-A OVSB-OUTPUT -j DROP",
            "-A OVSB-OUTPUT -j ACCEPT",
        ] {
            assert!(rule_shape_problem(other).is_some(), "{other}");
        }
    }

    #[test]
    fn guard_rules_of_every_tunnel_type_have_an_accepted_shape() {
        let rules: Vec<String> = TunnelKind::ALL
            .iter()
            .map(|k| super::guard_rule("192.0.2.2", *k))
            .collect();
        assert_eq!(
            rules[1],
            "-A OVSB-OUTPUT -d 192.0.2.2/32 -j OVSB-GUARD-VXLAN"
        );
        assert_eq!(
            super::guard_drop_rule(TunnelKind::Vxlan),
            "-A OVSB-GUARD-VXLAN -p udp -m udp --dport 4789 -m policy --dir out --pol none -j DROP"
        );
        for r in rules
            .iter()
            .chain(&TunnelKind::ALL.map(super::guard_drop_rule))
        {
            assert_eq!(super::rule_shape_problem(r), None, "{r}");
        }
        // The guard as older bundles wrote it still applies.
        let old = "-A OVSB-OUTPUT -d 192.0.2.2/32 -p gre -m policy --dir out --pol none -j DROP";
        assert_eq!(super::rule_shape_problem(old), None);
        // A guard chain holds its own type's drop and nothing else.
        let other_port = super::guard_drop_rule(TunnelKind::Vxlan).replace("4789", "53");
        assert!(super::rule_shape_problem(&other_port).is_some());
        let accept = "-A OVSB-GUARD-GRE -j ACCEPT";
        assert!(super::rule_shape_problem(accept).is_some());
        let to_input = "-A OVSB-OUTPUT -d 192.0.2.2/32 -j OVSB-INPUT";
        assert!(super::rule_shape_problem(to_input).is_some());
        // Keyed tunnels of one type to one peer share one rule; every guard chain gets its drop.
        let rules = super::guard_rules([
            ("192.0.2.2", TunnelKind::Gre),
            ("192.0.2.2", TunnelKind::Gre),
            ("192.0.2.2", TunnelKind::Geneve),
        ]);
        assert_eq!(rules.len(), 2 + 3);
        let chains = Chains::wanted(rules.iter().map(String::as_str)).unwrap();
        assert_eq!(chains.chains["OVSB-OUTPUT"].rules.len(), 2);
        assert!(!chains.chains["OVSB-GUARD-GRE"].jump && chains.chains["OVSB-OUTPUT"].jump);
        // What the builder writes is what the applier derives for the same tunnels.
        let derived = Chains::from_bundle("")
            .unwrap()
            .with_guard(super::guard_chain([
                ("192.0.2.2", TunnelKind::Gre),
                ("192.0.2.2", TunnelKind::Geneve),
            ]));
        assert_eq!(derived, chains);
        // Read back from iptables-save, the guard chains are no different from what was wanted.
        let save = chains.bundle_text("");
        assert_eq!(
            Chains::from_save(&save).chains["OVSB-GUARD-GRE"],
            chains.chains["OVSB-GUARD-GRE"]
        );
    }

    #[test]
    fn a_record_of_fewer_owned_chains_reads_as_all_of_them() {
        // As an applier from before the guard chains recorded a snapshot.
        let old = r#"{"chains":{"OVSB-FORWARD":{"exists":true,"rules":[],"jump":true},
            "OVSB-INPUT":{"exists":false,"rules":[],"jump":false},
            "OVSB-OUTPUT":{"exists":true,"rules":["-A OVSB-OUTPUT -d 192.0.2.2/32 -p gre -m policy --dir out --pol none -j DROP"],"jump":true},
            "OVSB-POSTROUTING":{"exists":false,"rules":[],"jump":false}}}"#;
        let c: Chains = serde_json::from_str(old).unwrap();
        assert_eq!(c.chains.len(), IPTABLES_CHAINS.len());
        assert!(!c.chains["OVSB-GUARD-GRE"].exists);
        // Going back to it from today's state removes the guard chains, after emptying the
        // chain that jumps to them.
        let now = Chains::from_bundle("")
            .unwrap()
            .with_guard(guard_chain([("192.0.2.2", TunnelKind::Gre)]));
        let input = c.restore_input(&now);
        let jump_gone = input.find(":OVSB-OUTPUT").unwrap();
        let deleted = input.find("-X OVSB-GUARD-GRE").unwrap();
        assert!(jump_gone < deleted, "{input}");
        assert!(c.diff(&now).contains(&"- chain OVSB-GUARD-GRE".to_string()));
        // A state that mentions no chain at all is no reason to panic.
        assert!(Chains::default().diff(&Chains::default()).is_empty());
    }

    #[test]
    fn save_output_is_read_for_owned_chains_only() {
        let c = Chains::from_save(SAVE);
        let f = &c.chains["OVSB-FORWARD"];
        assert!(f.exists && f.jump);
        assert_eq!(f.rules, ["-A OVSB-FORWARD -i priv0 -j ACCEPT"]);
        assert!(!c.chains["OVSB-POSTROUTING"].exists);
    }

    #[test]
    fn diff_names_removed_then_added_rules_and_a_reordering() {
        let now = Chains::from_save(SAVE);
        assert!(now.diff(&now).is_empty());
        let mut want = now.clone();
        let f = want.chains.get_mut("OVSB-FORWARD").unwrap();
        f.rules = vec![
            "-A OVSB-FORWARD -i a -j ACCEPT".into(),
            "-A OVSB-FORWARD -i b -j ACCEPT".into(),
        ];
        assert_eq!(
            want.diff(&now),
            [
                "- -A OVSB-FORWARD -i priv0 -j ACCEPT",
                "+ -A OVSB-FORWARD -i a -j ACCEPT",
                "+ -A OVSB-FORWARD -i b -j ACCEPT"
            ]
        );
        let mut reordered = want.clone();
        reordered
            .chains
            .get_mut("OVSB-FORWARD")
            .unwrap()
            .rules
            .reverse();
        assert_eq!(reordered.diff(&want), ["~ OVSB-FORWARD: rule order"]);
        // A duplicated rule is no new rule: the lists differ in order (count) only.
        let mut twice = now.clone();
        let f = twice.chains.get_mut("OVSB-FORWARD").unwrap();
        f.rules.push(f.rules[0].clone());
        assert_eq!(twice.diff(&now), ["~ OVSB-FORWARD: rule order"]);
    }

    #[test]
    fn restore_input_adds_missing_jumps_once_and_replaces_rules() {
        let current = Chains::from_save(SAVE);
        let want = Chains::from_bundle("*filter\n:OVSB-FORWARD - [0:0]\n:OVSB-INPUT - [0:0]\n-A OVSB-INPUT -i priv0 -j ACCEPT\nCOMMIT\n*nat\n:OVSB-POSTROUTING - [0:0]\nCOMMIT\n").unwrap();
        let input = want.restore_input(&current);
        assert!(
            !input.contains("-I FORWARD"),
            "jump exists already:\n{input}"
        );
        assert!(input.contains("-I INPUT 1 -j OVSB-INPUT"));
        assert!(input.contains("-I POSTROUTING 1 -j OVSB-POSTROUTING"));
        assert!(!input.contains("priv0 -j ACCEPT\n-A OVSB-FORWARD"));
        // And back: chains that did not exist are removed with their jumps.
        let back = current.restore_input(&want);
        assert!(
            back.contains("-D INPUT -j OVSB-INPUT\n-X OVSB-INPUT"),
            "{back}"
        );
        assert!(back.contains("-A OVSB-FORWARD -i priv0 -j ACCEPT"));
    }

    #[test]
    fn bundles_cannot_touch_chains_they_do_not_own() {
        let err = Chains::from_bundle("*filter\n-A INPUT -j ACCEPT\nCOMMIT\n").unwrap_err();
        assert_eq!(err.line, 2);
        let err = Chains::from_bundle("*filter\n:OVSB-POSTROUTING - [0:0]\nCOMMIT\n").unwrap_err();
        assert!(err.reason.contains("does not own"), "{err}");
        assert!(Chains::from_bundle("*filter\n-F FORWARD\n").is_err());
    }

    #[test]
    fn only_the_forwarder_rule_shapes_are_accepted() {
        let ok = [
            "-A OVSB-POSTROUTING -s 10.0.0.0/24 -o up0 -j MASQUERADE",
            "-A OVSB-FORWARD -s 10.0.0.0/24 -i priv0 -o up0 -j ACCEPT",
            "-A OVSB-FORWARD -d 10.0.0.0/24 -i up0 -o priv0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
            "-A OVSB-INPUT -i priv0 -j ACCEPT",
            "-A OVSB-OUTPUT -d 192.0.2.2/32 -p gre -m policy --dir out --pol none -j DROP",
        ];
        for r in ok {
            assert_eq!(rule_shape_problem(r), None, "{r}");
        }
        let refused = [
            "-A OVSB-INPUT -j ACCEPT",
            "-A OVSB-INPUT -p tcp --dport 22 -j ACCEPT",
            "-A OVSB-FORWARD -j ACCEPT",
            "-A OVSB-POSTROUTING -s 0.0.0.0/0 -o -a -j MASQUERADE",
            "-A OVSB-INPUT -i priv0 -j ACCEPT -m comment --comment x",
            "-A OVSB-POSTROUTING -s 10.0.0.0/33 -o up0 -j MASQUERADE",
            "-A OVSB-POSTROUTING -s 10.0.0.5/24 -o up0 -j MASQUERADE",
            "-A OVSB-OUTPUT -d 0.0.0.0/0 -p gre -m policy --dir out --pol none -j DROP",
            "-A OVSB-OUTPUT -j DROP",
        ];
        for r in refused {
            assert!(rule_shape_problem(r).is_some(), "{r}");
        }
        let err =
            Chains::from_bundle("*filter\n:OVSB-INPUT - [0:0]\n-A OVSB-INPUT -j ACCEPT\nCOMMIT\n")
                .unwrap_err();
        assert_eq!(err.line, 3);
        assert!(err.reason.contains("not a rule ovs-bundle makes"), "{err}");
    }

    #[test]
    fn v6_chains_take_v6_addresses_only() {
        let ok = [
            "-A OVSB-POSTROUTING -s fd20::/64 -o up0 -j MASQUERADE",
            "-A OVSB-FORWARD -d fd20::/64 -i up0 -o priv0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
            "-A OVSB-OUTPUT -d 2001:db8::2/128 -p udp -m udp --dport 4789 -m policy --dir out --pol none -j DROP",
            "-A OVSB-OUTPUT -d 2001:db8::2/128 -j OVSB-GUARD-VXLAN",
        ];
        for r in ok {
            assert_eq!(rule_shape_problem_in(Family::V6, r), None, "{r}");
            assert!(rule_shape_problem_in(Family::V4, r).is_some(), "{r}");
        }
        for r in [
            "-A OVSB-POSTROUTING -s fd20::1/64 -o up0 -j MASQUERADE",
            "-A OVSB-POSTROUTING -s fd20:0::/64 -o up0 -j MASQUERADE",
            "-A OVSB-OUTPUT -d 2001:db8::2/64 -p gre -m policy --dir out --pol none -j DROP",
            "-A OVSB-OUTPUT -d 2001:db8::2/64 -j OVSB-GUARD-GRE",
            "-A OVSB-POSTROUTING -s 10.0.0.0/24 -o up0 -j MASQUERADE",
        ] {
            assert!(rule_shape_problem_in(Family::V6, r).is_some(), "{r}");
        }
        assert_eq!(
            guard_rule("2001:db8::2", TunnelKind::Gre),
            "-A OVSB-OUTPUT -d 2001:db8::2/128 -j OVSB-GUARD-GRE"
        );
        let want = Chains::wanted_in(Family::V6, ok).unwrap();
        assert_eq!(want.family, Family::V6);
        let text = want.bundle_text("v6");
        assert_eq!(Chains::from_bundle_in(Family::V6, &text).unwrap(), want);
        assert!(Chains::from_bundle(&text).is_err());
        // Snapshots from before IPv6 read as IPv4.
        let old: Chains = serde_json::from_str(r#"{"chains":{}}"#).unwrap();
        assert_eq!(old.family, Family::V4);
    }

    #[test]
    fn bundle_text_reads_back_as_the_same_chains() {
        let rules = [
            "-A OVSB-POSTROUTING -s 10.0.0.0/24 -o up0 -j MASQUERADE",
            "-A OVSB-FORWARD -s 10.0.0.0/24 -i priv0 -o up0 -j ACCEPT",
        ];
        let want = Chains::wanted(rules).unwrap();
        let text = want.bundle_text("made by a test");
        assert!(
            text.starts_with("# made by a test\n*filter\n:OVSB-FORWARD - [0:0]\n"),
            "{text}"
        );
        assert_eq!(Chains::from_bundle(&text).unwrap(), want);
        assert!(Chains::wanted(["-A INPUT -j ACCEPT"]).is_err());
    }
}
