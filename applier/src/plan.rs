//! The plan between two [`HostState`]s, as an explicit value: what `plan` and `status` print, what
//! tests assert on, and what the engine executes, for an apply and for a rollback alike.
//!
//! Over 500 lines with its tests: planning every subsystem (OVS, chains, files, sysctl, OVN)
//! from one pair of states, and the plan's display, which `plan`, `status` and the tests share.

use crate::ovs::{self, OvnKeys, OvsChange, PlanError, Scope};
use crate::state::{Current, HostState};
use bundle::interfaces::{changed_stanzas, stanzas};
use bundle::sysctl::{IP6_FORWARD, IP_FORWARD};
use bundle::Chains;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Everything an apply would change.
#[derive(Debug, Clone, Default)]
pub struct HostPlan {
    pub ovs: Vec<OvsChange>,
    /// Changes of our rows in the OVN northbound database (the central host only).
    pub nb: Vec<crate::nb::NbChange>,
    /// The northbound rows `nb` was planned from, which its transaction's guards compare.
    pub nb_base: crate::nb::NbLive,
    /// The bundle has northbound state but this host has no northbound database: `nb` is
    /// empty and a warning says so. An apply refuses this, except at boot.
    pub nb_missing: bool,
    /// What changes in the owned chains, for people.
    pub firewall: Vec<String>,
    /// The chains wanted and the chains they replace, when `firewall` is not empty.
    pub chains: Option<(Chains, Chains)>,
    /// What changes in the owned ip6tables chains, for people.
    pub firewall6: Vec<String>,
    /// The ip6tables chains wanted and those they replace, when `firewall6` is not empty.
    pub chains6: Option<(Chains, Chains)>,
    /// The interfaces file, when it changes.
    pub interfaces: Option<InterfacesChange>,
    /// Interfaces whose stanza changed: cycled with ifdown/ifup on demand.
    pub cycle: Vec<String>,
    /// New sysctl drop-in content (`Some(None)`: remove it).
    pub sysctl: Option<Option<Vec<u8>>>,
    /// Kernel values to set now.
    pub ip_forward: Option<String>,
    /// `net.ipv6.conf.all.forwarding` to set now.
    pub ip6_forward: Option<String>,
    /// The DHCP server, when its configuration changes or it should (not) run.
    pub dhcp: Option<DhcpChange>,
    /// The OVN IPsec files, when they change.
    pub ovn_ipsec: Option<OvnIpsecChange>,
    /// `/etc/openvswitch/system-id.conf` as wanted, when it changes.
    pub ovs_system_id: Option<crate::state::FileWant>,
    /// What people must know before this runs (an interface that carries the default route is
    /// cycled, an interface the host configured is left up), shown first.
    pub warnings: Vec<String>,
}

/// This tool's dnsmasq: its configuration as wanted (`None`: remove it), whether it runs, and the
/// configuration's diff for people. The instance is restarted only with such a change.
#[derive(Debug, Clone, Default)]
pub struct DhcpChange {
    pub conf: Option<Vec<u8>>,
    pub run: bool,
    pub diff: String,
}

/// The OVN IPsec files as wanted: written before the OVS step (whose `other_config` names them),
/// the ones no longer wanted removed after it.
#[derive(Debug, Clone, Default)]
pub struct OvnIpsecChange {
    /// By path relative to the root (`bundle::ovn::IPSEC_FILES`); `None`: none of them.
    pub files: Option<crate::state::IpsecFiles>,
    /// ovs-bundle's files there are that are not wanted (paths relative to the root): a
    /// renewed credential's old file, or all of them.
    pub remove: Vec<String>,
    /// For people: `+ PATH`, `~ PATH`, `- PATH` (paths only: one is a private key).
    pub lines: Vec<String>,
    /// The CA certificate is written, changed or removed: a running strongSwan must reload its
    /// CA certificates (it reads them only when it starts or is told to).
    pub ca_changed: bool,
}

/// A new interfaces file, and the interfaces cycled around writing it.
#[derive(Debug, Clone, Default)]
pub struct InterfacesChange {
    /// The new content (`None`: remove the file).
    pub new: Option<Vec<u8>>,
    /// Its diff against the current file, for people.
    pub diff: String,
    /// Taken down with the old file before it is replaced (their stanza changed or went).
    pub down: Vec<String>,
    /// Brought up with the new file (their stanza changed or is new).
    pub up: Vec<String>,
}

impl HostPlan {
    /// Leaves up the interfaces the old file configured, the new one does not, and that were not
    /// ours (not defined by the file of the generation this host is on): taking down an uplink
    /// the host's own interfaces file set up would cut the host off, and nothing would bring it
    /// back. Says so in the warnings.
    pub fn keep_foreign_up(&mut self, ours: &[String]) {
        let Some(change) = &mut self.interfaces else {
            return;
        };
        let new = bundle::interfaces::stanzas(change.new.as_deref().unwrap_or_default());
        let (keep, down): (Vec<String>, Vec<String>) = change
            .down
            .drain(..)
            .partition(|n| !new.contains_key(n) && !ours.contains(n));
        change.down = down;
        for n in keep {
            self.warnings.push(format!(
                "leaving {n} up: this host's interfaces file configured it, the bundle's does not \
                 define it, and ovs-bundle never did; it will not come back after a reboot unless \
                 the profile's interfaces_file defines it"
            ));
            self.cycle.retain(|c| c != &n);
        }
    }

    /// Warns about cycling an interface that carries the default route, or the route to a
    /// tunnel peer (the underlay: cycling it cuts the tunnels). `route` and `route6` are the
    /// texts of `/proc/net/route` and `/proc/net/ipv6_route`; `peers` the tunnels' remote
    /// addresses, of either family.
    pub fn warn_cycled_routes(&mut self, route: &str, route6: &str, peers: &[std::net::IpAddr]) {
        use std::net::IpAddr;
        let routes = crate::routes::Routes::parse(route);
        let routes6 = crate::routes::Routes6::parse(route6);
        for c in self.cycle.clone() {
            let default6 = routes6.0.iter().any(|r| r.is_default() && r.iface == c);
            if routes.0.iter().any(|r| r.is_default() && r.iface == c) || default6 {
                self.warnings.push(format!(
                    "{c} carries this host's default route: taking it down and up may cut this \
                     session off: keep a console at hand"
                ));
            }
            let under: Vec<String> = peers
                .iter()
                .filter(|p| match p {
                    IpAddr::V4(v4) => routes.via(*v4),
                    IpAddr::V6(v6) => routes6.via(*v6),
                } == Some(c.as_str()))
                .map(ToString::to_string)
                .collect();
            if !under.is_empty() {
                self.warnings.push(format!(
                    "{c} carries the underlay to tunnel peer(s) {}: taking it down and up \
                     interrupts those tunnels",
                    under.join(", ")
                ));
            }
        }
    }

    /// The same plan, without taking interfaces down and up (at boot, networking is not up yet).
    pub fn without_cycling(mut self) -> HostPlan {
        self.cycle.clear();
        if let Some(i) = &mut self.interfaces {
            i.down.clear();
            i.up.clear();
        }
        self
    }

    pub fn is_empty(&self) -> bool {
        self.ovs.is_empty()
            && self.nb.is_empty()
            && self.firewall.is_empty()
            && self.firewall6.is_empty()
            && self.interfaces.is_none()
            && self.sysctl.is_none()
            && self.ip_forward.is_none()
            && self.ip6_forward.is_none()
            && self.dhcp.is_none()
            && self.ovn_ipsec.is_none()
            && self.ovs_system_id.is_none()
    }

    pub fn change_count(&self) -> usize {
        self.ovs.len()
            + self.nb.len()
            + self.firewall.len()
            + self.firewall6.len()
            + usize::from(self.interfaces.is_some())
            + usize::from(self.sysctl.is_some())
            + usize::from(self.ip_forward.is_some())
            + usize::from(self.ip6_forward.is_some())
            + usize::from(self.dhcp.is_some())
            + usize::from(self.ovn_ipsec.is_some())
            + usize::from(self.ovs_system_id.is_some())
    }

    /// OVSDB operations that write (zero for a no-op).
    pub fn ovs_write_ops(&self) -> usize {
        ovs::txn::write_count(&self.ovs)
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for w in &self.warnings {
            out.push_str(&format!("WARNING: {w}\n"));
        }
        if self.is_empty() {
            out.push_str("no changes\n");
            return out;
        }
        if !self.ovs.is_empty() {
            out.push_str("ovs:\n");
            for c in &self.ovs {
                out.push_str(&format!("  {}\n", c.describe()));
            }
        }
        if !self.nb.is_empty() {
            out.push_str("ovn northbound:\n");
            for c in &self.nb {
                out.push_str(&format!("  {}\n", c.describe()));
            }
        }
        if !self.firewall.is_empty() {
            out.push_str("iptables:\n");
            for l in &self.firewall {
                out.push_str(&format!("  {l}\n"));
            }
        }
        if !self.firewall6.is_empty() {
            out.push_str("ip6tables:\n");
            for l in &self.firewall6 {
                out.push_str(&format!("  {l}\n"));
            }
        }
        if let Some(i) = &self.interfaces {
            out.push_str("interfaces file:\n");
            for l in i.diff.lines() {
                out.push_str(&format!("  {l}\n"));
            }
            if !self.cycle.is_empty() {
                out.push_str(&format!("  (cycles: {})\n", self.cycle.join(", ")));
            }
        }
        if let Some(s) = &self.sysctl {
            out.push_str(match s {
                Some(_) => "sysctl: write drop-in\n",
                None => "sysctl: remove drop-in\n",
            });
        }
        if let Some(v) = &self.ip_forward {
            out.push_str(&format!("sysctl: {IP_FORWARD} = {v}\n"));
        }
        if let Some(v) = &self.ip6_forward {
            out.push_str(&format!("sysctl: {IP6_FORWARD} = {v}\n"));
        }
        if let Some(d) = &self.dhcp {
            out.push_str(match (&d.conf, d.run) {
                (Some(_), true) => "dhcp: write dnsmasq.conf, (re)start dnsmasq\n",
                (Some(_), false) => "dhcp: write dnsmasq.conf, stop dnsmasq\n",
                (None, _) => "dhcp: stop dnsmasq, remove dnsmasq.conf\n",
            });
            for l in d.diff.lines() {
                out.push_str(&format!("  {l}\n"));
            }
        }
        if let Some(w) = &self.ovs_system_id {
            out.push_str(&format!(
                "open vswitch: system-id.conf {}\n",
                system_id_describe(w)
            ));
        }
        if let Some(c) = &self.ovn_ipsec {
            out.push_str("ovn ipsec files:\n");
            for l in &c.lines {
                out.push_str(&format!("  {l}\n"));
            }
        }
        out.push_str(&format!("{} change(s)\n", self.change_count()));
        out
    }

    pub fn to_json(&self) -> Value {
        json!({
            "changes": self.change_count(),
            "ovs": self.ovs.iter().map(OvsChange::describe).collect::<Vec<_>>(),
            "ovs_write_ops": self.ovs_write_ops(),
            "ovn_nb": self.nb.iter().map(crate::nb::NbChange::describe).collect::<Vec<_>>(),
            "iptables": self.firewall,
            "ip6tables": self.firewall6,
            "interfaces_diff": self.interfaces.as_ref().map(|i| &i.diff),
            "cycle": self.cycle,
            "sysctl_dropin": self.sysctl.as_ref().map(|s| if s.is_some() { "write" } else { "remove" }),
            "ip_forward": self.ip_forward,
            "ip6_forward": self.ip6_forward,
            "warnings": self.warnings,
            "dhcp": self.dhcp.as_ref().map(|d| match (&d.conf, d.run) {
                (Some(_), true) => "restart",
                (Some(_), false) => "stop",
                (None, _) => "remove",
            }),
            "dhcp_diff": self.dhcp.as_ref().map(|d| &d.diff),
            "ovn_ipsec_files": self.ovn_ipsec.as_ref().map(|c| &c.lines),
            "ovs_system_id": self.ovs_system_id.as_ref().map(system_id_describe),
        })
    }
}

/// The plan from `current` to `desired`; in `GreOnly` scope, GRE ports only.
pub fn make_plan(
    desired: &HostState,
    current: &Current,
    scope: Scope,
) -> Result<HostPlan, Vec<PlanError>> {
    let mut changes = ovs::plan(&desired.ovs, &current.live, scope)?;
    changes.extend(
        ovs::planner::skb_mark_change(desired.ipsec_skb_mark.as_deref(), &current.live)
            .map_err(|e| vec![e])?,
    );
    // The chassis keys are no tunnels: a --gre-only apply leaves them as they are.
    if scope == Scope::Full {
        changes.extend(
            ovs::planner::ovn_keys_change(
                OvnKeys::Chassis,
                &desired.ovn_chassis,
                &desired.ovn_chassis_foreign,
                &current.live,
                &|k, have| ovs_ctl_wrote(k, have, &current.state.ovs_system_id, desired),
            )
            .map_err(|e| vec![e])?,
        );
        changes.extend(
            ovs::planner::ovn_keys_change(
                OvnKeys::Ipsec,
                &desired.ovn_ipsec_keys,
                &BTreeMap::new(),
                &current.live,
                &|_, _| false,
            )
            .map_err(|e| vec![e])?,
        );
    }
    // The northbound rows are no tunnels either.
    let nb_wanted = !desired.ovn_nb.is_empty() || desired.ovn_nb_ipsec;
    let nb_missing = scope == Scope::Full && nb_wanted && !current.nb.present;
    let nb = match scope {
        Scope::Full if nb_missing => Vec::new(),
        Scope::Full => crate::nb::plan(&desired.ovn_nb, desired.ovn_nb_ipsec, &current.nb)?,
        Scope::GreOnly => Vec::new(),
    };
    let mut plan = HostPlan {
        ovs: changes,
        nb_base: if nb.is_empty() {
            Default::default()
        } else {
            current.nb.clone()
        },
        nb,
        nb_missing,
        ..HostPlan::default()
    };
    if nb_missing {
        plan.warnings.push(
            "this bundle carries OVN northbound state (the fleet's OVN central), but there is no \
             northbound database here (--ovn-nb): its logical switches are not written"
                .to_string(),
        );
    }
    let now = &current.state;
    // GRE-only: of the firewall, only the IPsec guard's chains, which follow the tunnels.
    let want = match scope {
        Scope::GreOnly => now.chains.with_guard_of(&desired.chains),
        Scope::Full => desired.chains.clone(),
    };
    plan.firewall = want.diff(&now.chains);
    if !plan.firewall.is_empty() {
        plan.chains = Some((want, now.chains.clone()));
    }
    let want6 = match scope {
        Scope::GreOnly => now.chains6.with_guard_of(&desired.chains6),
        Scope::Full => desired.chains6.clone(),
    };
    plan.firewall6 = want6.diff(&now.chains6);
    if !plan.firewall6.is_empty() {
        plan.chains6 = Some((want6, now.chains6.clone()));
    }
    if scope == Scope::GreOnly {
        return Ok(plan);
    }
    if !desired.ovs_system_id.holds(&now.ovs_system_id) {
        plan.ovs_system_id = Some(desired.ovs_system_id.clone());
    }
    if now.ovn_ipsec_files != desired.ovn_ipsec_files {
        let ca = |f: &Option<crate::state::IpsecFiles>| -> Vec<(String, Vec<u8>)> {
            f.iter()
                .flat_map(|f| f.iter())
                .filter(|(p, _)| bundle::ovn::is_ipsec_ca_path(p))
                .map(|(p, c)| (p.clone(), c.clone()))
                .collect()
        };
        let wanted = |p: &String| {
            desired
                .ovn_ipsec_files
                .as_ref()
                .is_some_and(|f| f.contains_key(p))
        };
        plan.ovn_ipsec = Some(OvnIpsecChange {
            ca_changed: ca(&now.ovn_ipsec_files) != ca(&desired.ovn_ipsec_files),
            remove: now
                .ovn_ipsec_files
                .iter()
                .flat_map(|f| f.keys())
                .filter(|p| !wanted(p))
                .cloned()
                .collect(),
            files: desired.ovn_ipsec_files.clone(),
            lines: ovn_ipsec_lines(
                now.ovn_ipsec_files.as_ref(),
                desired.ovn_ipsec_files.as_ref(),
            ),
        });
    }
    if now.interfaces != desired.interfaces {
        let old = now.interfaces.as_deref().unwrap_or_default();
        let new = desired.interfaces.as_deref().unwrap_or_default();
        plan.cycle = changed_stanzas(old, new);
        let (a, b) = (stanzas(old), stanzas(new));
        plan.interfaces = Some(InterfacesChange {
            new: desired.interfaces.clone(),
            diff: line_diff(old, new),
            down: plan
                .cycle
                .iter()
                .filter(|n| a.contains_key(*n))
                .cloned()
                .collect(),
            up: plan
                .cycle
                .iter()
                .filter(|n| b.contains_key(*n))
                .cloned()
                .collect(),
        });
    }
    if now.sysctl != desired.sysctl {
        plan.sysctl = Some(desired.sysctl.clone());
    }
    if let Some(v) = &desired.ip_forward {
        if now.ip_forward.as_ref() != Some(v) {
            plan.ip_forward = Some(v.clone());
        }
    }
    if let Some(v) = &desired.ip6_forward {
        if now.ip6_forward.as_ref() != Some(v) {
            plan.ip6_forward = Some(v.clone());
        }
    }
    if (&now.dhcp, now.dhcp_running) != (&desired.dhcp, desired.dhcp_running) {
        plan.dhcp = Some(DhcpChange {
            conf: desired.dhcp.clone(),
            run: desired.dhcp_running,
            diff: line_diff(
                now.dhcp.as_deref().unwrap_or_default(),
                desired.dhcp.as_deref().unwrap_or_default(),
            ),
        });
    }
    Ok(plan)
}

/// A unified-style line diff (no context) for people.
pub fn line_diff(old: &[u8], new: &[u8]) -> String {
    let (a, b) = (String::from_utf8_lossy(old), String::from_utf8_lossy(new));
    let (a, b): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    // Longest common subsequence table; interfaces files are small.
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            i += 1;
            j += 1;
        } else if j < b.len() && (i == a.len() || lcs[i][j + 1] > lcs[i + 1][j]) {
            out.push_str(&format!("+{}\n", b[j]));
            j += 1;
        } else {
            out.push_str(&format!("-{}\n", a[i]));
            i += 1;
        }
    }
    out
}

#[cfg(test)]
#[path = "plan_golden.rs"]
mod golden;

/// How `system-id.conf` changes, for people.
fn system_id_describe(w: &crate::state::FileWant) -> String {
    match w {
        crate::state::FileWant::Content(c) => {
            format!("= {}", String::from_utf8_lossy(c).trim())
        }
        _ => "removed".into(),
    }
}

/// Whether `have`, someone else's value of chassis key `key`, is what Open vSwitch's start
/// scripts wrote, which an OVN chassis' bundle takes over: Debian's `ovs-ctl` sets `system-id`
/// from `system-id.conf` at every start (the applier then writes the chassis' system-id to that
/// file, so the next start sets it again), and records `hostname` (`hostname -f`, only when it
/// is unset) once: this host's name with its domain.
pub fn ovs_ctl_wrote(
    key: &str,
    have: &str,
    conf: &crate::state::FileWant,
    desired: &HostState,
) -> bool {
    match key {
        "system-id" => matches!(conf, crate::state::FileWant::Content(c)
            if String::from_utf8_lossy(c).trim() == have),
        "hostname" => desired.ovn_chassis.get("hostname").is_some_and(|want| {
            have.strip_prefix(want.as_str())
                .is_some_and(|domain| domain.starts_with('.'))
        }),
        _ => false,
    }
}

/// What changes between two sets of OVN IPsec files, by path (`+`, `~`, `-`).
pub fn ovn_ipsec_lines(
    now: Option<&crate::state::IpsecFiles>,
    want: Option<&crate::state::IpsecFiles>,
) -> Vec<String> {
    let empty = BTreeMap::new();
    let (a, b) = (now.map_or(&empty, |f| &f.0), want.map_or(&empty, |f| &f.0));
    let paths: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let mut out = Vec::new();
    for path in paths {
        match (a.get(path), b.get(path)) {
            (Some(x), Some(y)) if x == y => {}
            (None, Some(_)) => out.push(format!("+ /{path}")),
            (Some(_), Some(_)) => out.push(format!("~ /{path}")),
            (Some(_), None) => out.push(format!("- /{path}")),
            (None, None) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_shows_removed_and_added_lines() {
        assert_eq!(line_diff(b"a\nb\nc\n", b"a\nx\nc\n"), "-b\n+x\n");
        assert_eq!(line_diff(b"", b"a\n"), "+a\n");
    }

    #[test]
    fn cycling_the_ipv6_underlay_or_default_route_is_warned_about() {
        let route6 = "fd980000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001   br-phy\n\
            00000000000000000000000000000000 00 00000000000000000000000000000000 00 fd980000000000000000000000000001 00000400 00000001 00000000 00000003     eth0\n";
        let mut plan = HostPlan {
            cycle: vec!["br-phy".into(), "eth0".into()],
            ..HostPlan::default()
        };
        let peers = ["fd98::2".parse().unwrap(), "192.0.2.2".parse().unwrap()];
        plan.warn_cycled_routes("Iface\tDestination\n", route6, &peers);
        assert_eq!(plan.warnings.len(), 2, "{:?}", plan.warnings);
        assert!(plan.warnings[0].contains("br-phy carries the underlay to tunnel peer(s) fd98::2"));
        assert!(plan.warnings[1].contains("eth0 carries this host's default route"));
    }
}
