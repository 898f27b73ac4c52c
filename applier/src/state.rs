//! What this tool owns on a host, as one value: [`HostState`] is what a bundle wants (desired), what
//! an apply records before its first change (the snapshot a rollback returns to), and the
//! non-OVS part of what is there now ([`Current`], which adds the live OVS rows).

use crate::ovs::{Live, Scope};
use crate::paths::Paths;
use crate::system::{SysError, System};
use bundle::state::PSK_OPTION;
use bundle::tunnel::TunnelKind;
use bundle::{sysctl, Chains, OvsState, PortRole, VerifiedBundle};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The parts of a host a bundle describes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct HostState {
    /// The OVS rows marked as ours.
    pub ovs: OvsState,
    pub chains: Chains,
    /// `/etc/network/interfaces` (`None`: no such file).
    pub interfaces: Option<Vec<u8>>,
    /// The sysctl drop-in (`None`: no drop-in).
    pub sysctl: Option<Vec<u8>>,
    /// `net.ipv4.ip_forward`: as read, or the value to set (`None`: leave it as it is).
    pub ip_forward: Option<String>,
    /// `Open_vSwitch` `other_config:ipsec_skb_mark` as ovs-bundle sets it (`None`: not ours to
    /// set, or unset): `0/1`, so ovs-monitor-ipsec drops tunnel packets no IPsec policy covers.
    #[serde(default)]
    pub ipsec_skb_mark: Option<String>,
    /// This tool's dnsmasq configuration file (`None`: no such file); see `bundle::dhcp`.
    #[serde(default)]
    pub dhcp: Option<Vec<u8>>,
    /// Whether its dnsmasq instance runs (wanted: whenever there is a configuration).
    #[serde(default)]
    pub dhcp_running: bool,
}

impl HostState {
    /// What a verified bundle wants.
    pub fn from_bundle(b: &VerifiedBundle) -> Result<HostState, String> {
        let file = |name: &str| b.file(name).ok_or_else(|| format!("bundle has no {name}"));
        let ovs = OvsState::from_bytes(file(bundle::OVS_NAME)?)
            .map_err(|e| format!("{}: {e}", bundle::OVS_NAME))?;
        let rules = std::str::from_utf8(file(bundle::IPTABLES_NAME)?)
            .map_err(|_| format!("{} is not text", bundle::IPTABLES_NAME))?;
        let chains = Chains::from_bundle(rules).map_err(|e| e.to_string())?;
        let sysctl = b.file(bundle::SYSCTL_NAME).map(<[u8]>::to_vec);
        let ip_forward = match &sysctl {
            Some(s) => sysctl::parse(s)
                .map_err(|e| e.to_string())?
                .remove(sysctl::IP_FORWARD),
            None => None,
        };
        let interfaces = file(bundle::INTERFACES_NAME)?;
        check_names(&ovs, interfaces)?;
        let ipsec_skb_mark = skb_mark_for(&ovs);
        // Re-validated although signed: every line of it is an option dnsmasq obeys.
        let dhcp = b.file(bundle::DHCP_NAME).map(<[u8]>::to_vec);
        if let Some(d) = &dhcp {
            bundle::dhcp::parse(d).map_err(|e| e.to_string())?;
        }
        Ok(HostState {
            ovs,
            chains,
            interfaces: Some(interfaces.to_vec()),
            sysctl,
            ip_forward,
            ipsec_skb_mark,
            dhcp_running: dhcp.is_some(),
            dhcp,
        })
    }

    /// A `--gre-only` generation on top of `self`: everything from `self`, but on each of `gre`'s
    /// bridges the GRE ports are `gre`'s, and so is the IPsec guard chain that follows them.
    pub fn with_gre_of(&self, gre: &HostState) -> HostState {
        // The mark and the guard chain follow the tunnels of the combined state: a bridge the
        // GRE-only bundle does not name keeps its tunnels, and their guards.
        let ovs = self.ovs.with_gre_of(&gre.ovs);
        let chains = self.chains.with_guard(psk_peers(&ovs));
        HostState {
            ipsec_skb_mark: skb_mark_for(&ovs),
            ovs,
            chains,
            ..self.clone()
        }
    }
}

/// `ipsec_skb_mark` for these tunnels: `0/1` only where every tunnel is an IPsec one, as the
/// mark drops every unencrypted tunnel packet of the host, a plain tunnel's included.
fn skb_mark_for(ovs: &OvsState) -> Option<String> {
    let gre: Vec<_> = ovs
        .ports()
        .filter(|(_, p)| p.role == PortRole::Gre)
        .collect();
    let all_ipsec = !gre.is_empty()
        && gre
            .iter()
            .all(|(_, p)| p.interface.options.contains_key(PSK_OPTION));
    all_ipsec.then(|| "0/1".to_string())
}

/// The remote addresses of the tunnels with a PSK.
fn psk_peers(ovs: &OvsState) -> impl Iterator<Item = (&str, TunnelKind)> {
    ovs.ports()
        .filter(|(_, p)| p.role == PortRole::Gre && p.interface.options.contains_key(PSK_OPTION))
        .filter_map(|(_, p)| {
            let kind = TunnelKind::parse(&p.interface.kind)?;
            Some((p.interface.options.get("remote_ip")?.as_str(), kind))
        })
}

/// Every name that reaches OVS, ifup/ifdown or the kernel must be one they cannot misread (a
/// leading `-` is an option to ifdown; `-a` took down every interface). The builder refuses such
/// names already; a signed bundle is no reason to trust them here.
fn check_names(ovs: &OvsState, interfaces: &[u8]) -> Result<(), String> {
    let ovs_names = ovs.bridges.iter().flat_map(|b| {
        std::iter::once(("bridge", &b.name)).chain(b.ports.iter().map(|p| ("port", &p.name)))
    });
    for (what, name) in ovs_names {
        if let Some(why) = bundle::names::ifname_problem(name) {
            return Err(format!("{}: {what} name {name:?} {why}", bundle::OVS_NAME));
        }
    }
    let text = String::from_utf8_lossy(interfaces);
    for (name, line) in bundle::interfaces::defined(&text) {
        if let Some(why) = bundle::names::ifname_problem(&name) {
            return Err(format!(
                "{}:{line}: interface name {name:?} {why}",
                bundle::INTERFACES_NAME
            ));
        }
    }
    // Names on `auto`/`allow-*` lines are cycled too.
    for name in bundle::interfaces::stanzas(interfaces).keys() {
        if let Some(why) = bundle::names::ifname_problem(name) {
            return Err(format!(
                "{}: interface name {name:?} (on an auto or allow- line) {why}",
                bundle::INTERFACES_NAME
            ));
        }
    }
    Ok(())
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
        self.proc_dir.join(sysctl::IP_FORWARD_PROC)
    }
}

/// The host as it is now: the live OVS rows, and the rest of [`HostState`] (whose `ovs` is left
/// empty: the live rows are the truth, see [`Current::snapshot`]).
#[derive(Debug, Clone)]
pub struct Current {
    pub live: Live,
    pub state: HostState,
}

impl Current {
    /// Reads what `scope` needs: for `GreOnly` the OVS rows alone.
    pub fn read(sys: &mut dyn System, loc: &Locations, scope: Scope) -> Result<Current, SysError> {
        // OVSDB and iptables-save work at the same time (both scopes read the chains).
        sys.read_begin();
        let live = sys.ovs_read().inspect_err(|_| sys.read_cancel())?;
        let state = match scope {
            // The tunnels, and the IPsec guard chain that follows them.
            Scope::GreOnly => HostState {
                chains: sys.firewall_read()?,
                ..HostState::default()
            },
            Scope::Full => read_rest(sys, loc)?,
        };
        Ok(Current { live, state })
    }

    /// The whole state, OVS rows included: what a rollback returns to.
    pub fn snapshot(&self) -> HostState {
        HostState {
            ovs: self.live.owned_state(),
            ipsec_skb_mark: owned_skb_mark(&self.live),
            ..self.state.clone()
        }
    }
}

/// `ipsec_skb_mark` if ovs-bundle set it.
pub fn owned_skb_mark(live: &Live) -> Option<String> {
    use crate::ovs::change::{SKB_MARK, SKB_MARK_OWNER};
    live.root_external_ids
        .contains_key(SKB_MARK_OWNER)
        .then(|| live.root_other_config.get(SKB_MARK).cloned())
        .flatten()
}

/// Everything but OVS: the chains, the interfaces file, the sysctl drop-in and value.
pub fn read_rest(sys: &mut dyn System, loc: &Locations) -> Result<HostState, SysError> {
    Ok(HostState {
        ovs: OvsState::default(),
        chains: sys.firewall_read()?,
        interfaces: sys.read_file(&loc.paths.interfaces_file())?,
        sysctl: sys.read_file(&loc.paths.sysctl_dropin())?,
        ip_forward: sys
            .read_file(&loc.ip_forward())?
            .map(|v| String::from_utf8_lossy(&v).trim().to_string()),
        ipsec_skb_mark: None,
        dhcp: sys.read_file(&loc.paths.dhcp_conf())?,
        dhcp_running: sys.dhcp_running(&loc.paths.dhcp_instance())?,
    })
}
