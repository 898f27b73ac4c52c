//! Desired state, current state, and the plan between them, as explicit values: the plan is what
//! `plan` and `--dry-run` print, what tests assert on, and what `apply` executes.

use crate::firewall::Chains;
use crate::ovs::{self, Live, OvsChange, PlanError, Scope};
use crate::paths::Paths;
use crate::store::Snapshot;
use crate::system::{SysError, System};
use bundle::{OvsState, VerifiedBundle};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The only kernel setting a bundle may carry.
pub const IP_FORWARD: &str = "net.ipv4.ip_forward";

/// What a bundle (or generation) wants the host to be.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    pub host: String,
    pub serial: u64,
    pub ovs: OvsState,
    pub chains: Chains,
    pub interfaces: Vec<u8>,
    pub sysctl: Option<Vec<u8>>,
}

impl Desired {
    pub fn from_bundle(b: &VerifiedBundle) -> Result<Desired, String> {
        let file = |name: &str| b.file(name).ok_or_else(|| format!("bundle has no {name}"));
        let ovs = OvsState::from_bytes(file(bundle::OVS_NAME)?)
            .map_err(|e| format!("{}: {e}", bundle::OVS_NAME))?;
        let rules = std::str::from_utf8(file(bundle::IPTABLES_NAME)?)
            .map_err(|_| format!("{} is not text", bundle::IPTABLES_NAME))?;
        let chains = Chains::from_bundle(rules).map_err(|e| e.to_string())?;
        let sysctl = b.file(bundle::SYSCTL_NAME).map(<[u8]>::to_vec);
        if let Some(s) = &sysctl {
            sysctl_values(s)?;
        }
        Ok(Desired {
            host: b.manifest.host.clone(),
            serial: b.manifest.serial,
            ovs,
            chains,
            interfaces: file(bundle::INTERFACES_NAME)?.to_vec(),
            sysctl,
        })
    }

    /// A `--gre-only` generation on top of `base`: everything from `base`, but on each of this
    /// bundle's bridges the GRE ports are this bundle's.
    pub fn compose_gre_only(base: &Desired, gre: &Desired) -> Desired {
        let mut out = base.clone();
        out.serial = gre.serial;
        for b in out.ovs.bridges.iter_mut() {
            if let Some(g) = gre.ovs.bridges.iter().find(|g| g.name == b.name) {
                b.ports.retain(|p| p.role != bundle::PortRole::Gre);
                b.ports.extend(
                    g.ports
                        .iter()
                        .filter(|p| p.role == bundle::PortRole::Gre)
                        .cloned(),
                );
            }
        }
        out
    }
}

/// `key = value` lines of a sysctl file; only [`IP_FORWARD`] is accepted.
pub fn sysctl_values(data: &[u8]) -> Result<BTreeMap<String, String>, String> {
    let text = std::str::from_utf8(data).map_err(|_| "sysctl.conf is not text".to_string())?;
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| format!("sysctl.conf: {line:?} is not key = value"))?;
        let (k, v) = (k.trim(), v.trim());
        if k != IP_FORWARD {
            return Err(format!(
                "sysctl.conf sets {k}; the applier only sets {IP_FORWARD}"
            ));
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

/// The host as it is now, in the parts a bundle describes.
#[derive(Debug, Clone)]
pub struct Current {
    pub live: Live,
    pub chains: Chains,
    pub interfaces: Option<Vec<u8>>,
    pub sysctl: Option<Vec<u8>>,
    pub ip_forward: Option<Vec<u8>>,
}

/// Where the applier finds things on this host.
#[derive(Debug, Clone)]
pub struct Locations {
    pub paths: Paths,
    /// `/proc`, for sysctl values (per network namespace).
    pub proc_dir: PathBuf,
}

impl Locations {
    pub fn ip_forward(&self) -> PathBuf {
        self.proc_dir.join("sys/net/ipv4/ip_forward")
    }
}

pub fn read_current(
    sys: &mut dyn System,
    loc: &Locations,
    scope: Scope,
) -> Result<Current, SysError> {
    let live = sys.ovs_read()?;
    if scope == Scope::GreOnly {
        return Ok(Current {
            live,
            chains: Chains::default(),
            interfaces: None,
            sysctl: None,
            ip_forward: None,
        });
    }
    let files = read_host_files(sys, loc)?;
    Ok(Current {
        live,
        chains: files.chains,
        interfaces: files.interfaces,
        sysctl: files.sysctl,
        ip_forward: files.ip_forward,
    })
}

/// Everything but OVS: the chains, the interfaces file, the sysctl drop-in and value.
pub fn read_host_files(sys: &mut dyn System, loc: &Locations) -> Result<Snapshot, SysError> {
    Ok(Snapshot {
        ovs: OvsState::default(),
        chains: Chains::from_save(&sys.iptables_save()?),
        interfaces: sys.read_file(&loc.paths.interfaces_file())?,
        sysctl: sys.read_file(&loc.paths.sysctl_dropin())?,
        ip_forward: sys.read_file(&loc.ip_forward())?,
    })
}

impl Current {
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            ovs: self.live.owned_state(),
            chains: self.chains.clone(),
            interfaces: self.interfaces.clone(),
            sysctl: self.sysctl.clone(),
            ip_forward: self.ip_forward.clone(),
        }
    }
}

/// Everything an apply would change.
#[derive(Debug, Clone, Default)]
pub struct HostPlan {
    pub ovs: Vec<OvsChange>,
    /// The transaction for `ovs`, if any.
    pub ovs_ops: Vec<Value>,
    pub firewall: Vec<String>,
    pub firewall_input: Option<String>,
    /// New interfaces file content, and its diff against the current one.
    pub interfaces: Option<(Vec<u8>, String)>,
    /// Interfaces whose stanza changed: cycled with ifdown/ifup on demand.
    pub cycle: Vec<String>,
    /// New sysctl drop-in content (`Some(None)`: remove it).
    pub sysctl: Option<Option<Vec<u8>>>,
    /// Kernel values to set now.
    pub ip_forward: Option<String>,
}

impl HostPlan {
    pub fn is_empty(&self) -> bool {
        self.ovs.is_empty()
            && self.firewall.is_empty()
            && self.interfaces.is_none()
            && self.sysctl.is_none()
            && self.ip_forward.is_none()
    }

    pub fn change_count(&self) -> usize {
        self.ovs.len()
            + self.firewall.len()
            + usize::from(self.interfaces.is_some())
            + usize::from(self.sysctl.is_some())
            + usize::from(self.ip_forward.is_some())
    }

    /// OVSDB operations that write (zero for a no-op).
    pub fn ovs_write_ops(&self) -> usize {
        if self.ovs.is_empty() {
            0
        } else {
            ovs::write_ops(&self.ovs_ops)
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
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
        if !self.firewall.is_empty() {
            out.push_str("iptables:\n");
            for l in &self.firewall {
                out.push_str(&format!("  {l}\n"));
            }
        }
        if let Some((_, diff)) = &self.interfaces {
            out.push_str("interfaces file:\n");
            for l in diff.lines() {
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
        out.push_str(&format!("{} change(s)\n", self.change_count()));
        out
    }

    pub fn to_json(&self) -> Value {
        json!({
            "changes": self.change_count(),
            "ovs": self.ovs.iter().map(OvsChange::describe).collect::<Vec<_>>(),
            "ovs_write_ops": self.ovs_write_ops(),
            "iptables": self.firewall,
            "interfaces_diff": self.interfaces.as_ref().map(|(_, d)| d),
            "cycle": self.cycle,
            "sysctl_dropin": self.sysctl.as_ref().map(|s| if s.is_some() { "write" } else { "remove" }),
            "ip_forward": self.ip_forward,
        })
    }
}

/// The plan from `current` to `desired`; in `GreOnly` scope, GRE ports only.
pub fn make_plan(
    desired: &Desired,
    current: &Current,
    scope: Scope,
    comment: &str,
) -> Result<HostPlan, Vec<PlanError>> {
    let changes = ovs::plan(&desired.ovs, &current.live, scope)?;
    let mut plan = HostPlan {
        ovs_ops: if changes.is_empty() {
            Vec::new()
        } else {
            ovs::transaction(&changes, &current.live, comment)
        },
        ovs: changes,
        ..HostPlan::default()
    };
    if scope == Scope::GreOnly {
        return Ok(plan);
    }
    plan.firewall = desired.chains.diff(&current.chains);
    if !plan.firewall.is_empty() {
        plan.firewall_input = Some(desired.chains.restore_input(&current.chains));
    }
    if current.interfaces.as_deref() != Some(desired.interfaces.as_slice()) {
        let old = current.interfaces.as_deref().unwrap_or_default();
        plan.interfaces = Some((
            desired.interfaces.clone(),
            line_diff(old, &desired.interfaces),
        ));
        plan.cycle = changed_stanzas(old, &desired.interfaces);
    }
    if current.sysctl != desired.sysctl {
        plan.sysctl = Some(desired.sysctl.clone());
    }
    if let Some(values) = desired
        .sysctl
        .as_deref()
        .and_then(|s| sysctl_values(s).ok())
    {
        if let Some(v) = values.get(IP_FORWARD) {
            let now = current
                .ip_forward
                .as_deref()
                .map(|d| String::from_utf8_lossy(d).trim().to_string());
            if now.as_deref() != Some(v.as_str()) {
                plan.ip_forward = Some(v.clone());
            }
        }
    }
    Ok(plan)
}

/// Per interface, its stanzas (`iface NAME ...` with their option lines, and `auto`/`allow-`
/// lines naming it), for finding which interfaces a new file changes.
fn stanzas(text: &[u8]) -> BTreeMap<String, String> {
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
            "mapping" | "source" | "source-directory" if top_level => current = None,
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
    fn diff_shows_removed_and_added_lines() {
        assert_eq!(line_diff(b"a\nb\nc\n", b"a\nx\nc\n"), "-b\n+x\n");
        assert_eq!(line_diff(b"", b"a\n"), "+a\n");
    }

    #[test]
    fn sysctl_files_may_only_set_ip_forward() {
        assert_eq!(
            sysctl_values(b"# c\nnet.ipv4.ip_forward = 1\n").unwrap()[IP_FORWARD],
            "1"
        );
        assert!(sysctl_values(b"kernel.modprobe = /tmp/x\n").is_err());
    }
}
