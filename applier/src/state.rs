//! What this tool owns on a host, as one value: [`HostState`] is what a bundle wants (desired), what
//! an apply records before its first change (the snapshot a rollback returns to), and the
//! non-OVS part of what is there now ([`Current`], which adds the live OVS rows).
//!
//! Over 500 lines: the one value the applier compares, with how it is read from the host and
//! checked when it comes from a bundle.

use crate::ovs::{Live, Scope};
use crate::paths::Paths;
use crate::system::{SysError, System};
use bundle::firewall::{guard_chain, Family};
use bundle::state::PSK_OPTION;
use bundle::tunnel::TunnelKind;
use bundle::{sysctl, Chains, OvsState, PortRole, VerifiedBundle};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The parts of a host a bundle describes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostState {
    /// The OVS rows marked as ours.
    pub ovs: OvsState,
    pub chains: Chains,
    /// The owned ip6tables chains (family V6): a bundle without `ip6tables.rules` wants none.
    #[serde(default = "no_chains6")]
    pub chains6: Chains,
    /// `/etc/network/interfaces` (`None`: no such file).
    pub interfaces: Option<Vec<u8>>,
    /// The sysctl drop-in (`None`: no drop-in).
    pub sysctl: Option<Vec<u8>>,
    /// `net.ipv4.ip_forward`: as read, or the value to set (`None`: leave it as it is).
    pub ip_forward: Option<String>,
    /// `net.ipv6.conf.all.forwarding`: as read, or the value to set (`None`: leave it).
    #[serde(default)]
    pub ip6_forward: Option<String>,
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
    /// The OVN chassis keys of `Open_vSwitch` `external_ids` that ovs-bundle sets (as read: the
    /// keys its mark lists; empty: none), see `bundle::ovn`.
    #[serde(default)]
    pub ovn_chassis: BTreeMap<String, String>,
    /// Chassis keys someone else had set (a snapshot: Open vSwitch's start scripts' `system-id`
    /// and `hostname`), which a rollback puts back if ovs-bundle took them over since.
    #[serde(default)]
    pub ovn_chassis_foreign: BTreeMap<String, String>,
    /// Our rows of the OVN northbound database: the central's logical switches and ports.
    #[serde(default)]
    pub ovn_nb: Vec<bundle::ovn::LogicalSwitch>,
    /// `NB_Global` `ipsec`: wanted on (the central of a fleet with OVN IPsec), or as found (a
    /// snapshot). Turned off only where ovs-bundle turned it on (`bundle::ovn::NB_IPSEC_OWNER`).
    #[serde(default)]
    pub ovn_nb_ipsec: bool,
    /// `/etc/openvswitch/system-id.conf`, from which Debian's `ovs-ctl` sets
    /// `external_ids:system-id` at every Open vSwitch start: an OVN chassis' system-id (wanted),
    /// or the file as found (a snapshot); not a chassis: left as it is.
    #[serde(default)]
    pub ovs_system_id: FileWant,
    /// The `Open_vSwitch` `other_config` keys naming a chassis' IPsec files that ovs-bundle
    /// sets (as read: the keys its mark lists), see `bundle::ovn::IPSEC_FILES`.
    #[serde(default)]
    pub ovn_ipsec_keys: BTreeMap<String, String>,
    /// ovs-bundle's files in the directories of `bundle::ovn::IPSEC_FILES` there are (a
    /// chassis' certificate, key and CA certificate), by path relative to the root; `None`:
    /// none. They hold a private key: this state is kept 0600, as it holds PSKs.
    #[serde(default)]
    pub ovn_ipsec_files: Option<IpsecFiles>,
}

// By hand, not derived: the IPv6 chains are of their own family, every owned chain listed.
impl Default for HostState {
    fn default() -> HostState {
        HostState {
            ovs: OvsState::default(),
            chains: Chains::default(),
            chains6: no_chains6(),
            interfaces: None,
            sysctl: None,
            ip_forward: None,
            ip6_forward: None,
            ipsec_skb_mark: None,
            dhcp: None,
            dhcp_running: false,
            ovn_chassis: BTreeMap::new(),
            ovn_chassis_foreign: BTreeMap::new(),
            ovn_nb: Vec::new(),
            ovn_ipsec_keys: BTreeMap::new(),
            ovn_ipsec_files: None,
            ovn_nb_ipsec: false,
            ovs_system_id: FileWant::Ignore,
        }
    }
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
        let chains6 = match b.file(bundle::IP6TABLES_NAME) {
            Some(r) => {
                let r = std::str::from_utf8(r)
                    .map_err(|_| format!("{} is not text", bundle::IP6TABLES_NAME))?;
                Chains::from_bundle_in(Family::V6, r)
                    .map_err(|e| format!("{}: {e}", bundle::IP6TABLES_NAME))?
            }
            None => no_chains6(),
        };
        let sysctl = b.file(bundle::SYSCTL_NAME).map(<[u8]>::to_vec);
        let mut values = match &sysctl {
            Some(s) => sysctl::parse(s).map_err(|e| e.to_string())?,
            None => Default::default(),
        };
        // Written to /proc as they are: only 0 or 1, whatever the (signed) bundle says.
        for (k, v) in &values {
            if v != "0" && v != "1" {
                return Err(format!(
                    "{}: {k} = {v:?}; the applier sets it to 0 or 1 only",
                    bundle::SYSCTL_NAME
                ));
            }
        }
        let ip_forward = values.remove(sysctl::IP_FORWARD);
        let ip6_forward = values.remove(sysctl::IP6_FORWARD);
        let interfaces = file(bundle::INTERFACES_NAME)?;
        check_names(&ovs, interfaces)?;
        check_guards(&ovs, &chains, &chains6)?;
        // Re-validated although signed: every line of it is an option dnsmasq obeys.
        let dhcp = b.file(bundle::DHCP_NAME).map(<[u8]>::to_vec);
        if let Some(d) = &dhcp {
            bundle::dhcp::parse(d).map_err(|e| e.to_string())?;
        }
        let ovn = match b.file(bundle::OVN_NAME) {
            Some(o) => bundle::ovn::OvnState::from_bytes(o).map_err(|e| e.to_string())?,
            None => Default::default(),
        };
        // ovs-monitor-ipsec refuses every PSK tunnel of a host with certificates configured.
        if ovn.ipsec.is_some() {
            if let Some(p) = ovs
                .bridges
                .iter()
                .flat_map(|b| &b.ports)
                .find(|p| p.interface.options.contains_key(PSK_OPTION))
            {
                return Err(format!(
                    "{}: OVN IPsec certificates on a host with PSK tunnel {}: ovs-monitor-ipsec takes PSKs or certificates, not both (rebuild: the builder refuses this)",
                    bundle::OVN_NAME,
                    p.name
                ));
            }
        }
        // Its Geneve guard drops every Geneve packet outside IPsec: a plain Geneve tunnel of the
        // bundle's own would be cut off by it. Nor does a chassis with IPsec go without that
        // guard (signed or not, a bundle that would let OVN's tunnels leave in plaintext before
        // their SAs is refused).
        if ovn.ipsec.is_some() {
            if let Some(p) = ovs
                .ports()
                .map(|(_, p)| p)
                .find(|p| p.role == PortRole::Gre && p.interface.kind == "geneve")
            {
                return Err(format!(
                    "{}: OVN IPsec certificates on a host with plain Geneve tunnel {}: the chassis' guard drops all Geneve outside IPsec (rebuild: the builder refuses this)",
                    bundle::OVN_NAME,
                    p.name
                ));
            }
            let guard = bundle::firewall::guard_all_geneve_rule();
            let drop = bundle::firewall::guard_drop_rule(TunnelKind::Geneve);
            let has = |chain: &str, rule: &String| chains.chain(chain).rules.contains(rule);
            if !has(bundle::firewall::GUARD_CHAIN, &guard)
                || !has(TunnelKind::Geneve.guard_chain(), &drop)
            {
                return Err(format!(
                    "{}: an OVN chassis with IPsec but without the rule {guard:?}: its Geneve tunnels could leave in plaintext (rebuild: the builder writes it)",
                    bundle::IPTABLES_NAME
                ));
            }
        }
        // Each bridge a chassis maps a physical network to is one of the bundle's own (so it is
        // made before ovn-controller patches it to br-int, and removed with the mapping), and
        // not OVN's integration bridge, which it would patch to itself.
        if let Some(m) = ovn.chassis.get("ovn-bridge-mappings") {
            let ovn_bridge = ovs
                .ports()
                .find(|(_, p)| p.external_ids.contains_key(bundle::state::IFACE_ID_KEY))
                .map(|(b, _)| b.name.as_str());
            for (net, bridge) in bundle::ovn::parse_bridge_mappings(m).unwrap_or_default() {
                if !ovs.bridges.iter().any(|b| b.name == bridge) || ovn_bridge == Some(bridge) {
                    return Err(format!(
                        "{}: ovn-bridge-mappings maps physical network {net} to bridge {bridge}, which is not an uplink bridge of this bundle's (rebuild: the builder maps only bridges the profile declares)",
                        bundle::OVN_NAME
                    ));
                }
            }
        }
        let ipsec_skb_mark = skb_mark_for(&ovs);
        let (ovn_ipsec_keys, ovn_ipsec_files) = ovn_ipsec_wanted(ovn.ipsec.as_ref());
        let ovs_system_id = match ovn.chassis.get("system-id") {
            Some(id) => FileWant::Content(format!("{id}\n").into_bytes()),
            None => FileWant::Ignore,
        };
        Ok(HostState {
            ovn_chassis: ovn.chassis,
            ovn_chassis_foreign: BTreeMap::new(),
            ovn_nb: ovn.northbound,
            ovn_nb_ipsec: ovn.northbound_ipsec,
            ovs_system_id,
            ovn_ipsec_keys,
            ovn_ipsec_files,
            ovs,
            chains,
            chains6,
            interfaces: Some(interfaces.to_vec()),
            sysctl,
            ip_forward,
            ip6_forward,
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
        // OVN's IPsec (not a GRE-only matter) keeps its Geneve guard.
        let mut guard = guard_chain(psk_peers(&ovs, Family::V4));
        if !self.ovn_ipsec_keys.is_empty() {
            guard.rules.push(bundle::firewall::guard_all_geneve_rule());
        }
        let chains = self.chains.with_guard(guard);
        // IPv6 peers' guards live in ip6tables; a host with none keeps its (absent) chains, and
        // one that gets its first IPv6 guard this way gets the guard's chains only (what the
        // GRE-only plan makes: the generation must record no more than that).
        let mut chains6 = self.chains6.clone();
        let guard6 = guard_chain(psk_peers(&ovs, Family::V6));
        let has6 = chains6.chains.values().any(|c| c.exists);
        if !guard6.rules.is_empty() || has6 {
            chains6 = chains6.with_guard(guard6);
        }
        HostState {
            ipsec_skb_mark: skb_mark_for(&ovs),
            ovs,
            chains,
            chains6,
            ..self.clone()
        }
    }
}

/// `ipsec_skb_mark` for these tunnels: `0/1` only where every tunnel is an IPsec one, as the
/// mark drops every unencrypted tunnel packet of the host, a plain tunnel's included. Never for
/// OVN's tunnels alone: with the mark, ovs-monitor-ipsec 3.1 writes its drop shunts as `conn`
/// sections that strongSwan then picks as peer configurations for chassis authenticating with
/// certificates, and the SAs it makes under them carry no traffic (VM scenario 9 found this).
/// The firewall's guard covers OVN's Geneve instead.
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

/// The remote addresses of the tunnels with a PSK to peers of `family`.
fn psk_peers(ovs: &OvsState, family: Family) -> impl Iterator<Item = (&str, TunnelKind)> {
    ovs.ports()
        .filter(|(_, p)| p.role == PortRole::Gre && p.interface.options.contains_key(PSK_OPTION))
        .filter_map(move |(_, p)| {
            let kind = TunnelKind::from_ovs_type(&p.interface.kind)?;
            let peer = p.interface.options.get("remote_ip")?.as_str();
            let ip: std::net::IpAddr = peer.parse().ok()?;
            (Family::of(ip) == family).then_some((peer, kind))
        })
}

/// Every tunnel's `remote_ip` is one address in canonical form, and every PSK tunnel has its
/// IPsec guard in the bundle's rules (today's shape, whose guard chain holds its drop, or the
/// older one-rule shape). The builder makes them so; a signed bundle that does not is refused
/// rather than applied with a PSK tunnel unguarded.
fn check_guards(ovs: &OvsState, chains: &Chains, chains6: &Chains) -> Result<(), String> {
    for (_, p) in ovs.ports().filter(|(_, p)| p.role == PortRole::Gre) {
        let remote = p.interface.options.get("remote_ip").map(String::as_str);
        let canonical = remote
            .and_then(|r| r.parse::<std::net::IpAddr>().ok())
            .map(|ip| ip.to_string());
        if canonical.is_none() || canonical.as_deref() != remote {
            return Err(format!(
                "{}: tunnel port {} has remote_ip {remote:?}, not one IP address in canonical form",
                bundle::OVS_NAME,
                p.name
            ));
        }
    }
    for (family, chains, name) in [
        (Family::V4, chains, bundle::IPTABLES_NAME),
        (Family::V6, chains6, bundle::IP6TABLES_NAME),
    ] {
        // A set: looked up once per PSK peer (a list searched per peer was a tenth of a
        // 1,000-tunnel no-op's instructions).
        let output: std::collections::HashSet<&str> = chains
            .chain(bundle::firewall::GUARD_CHAIN)
            .rules
            .iter()
            .map(String::as_str)
            .collect();
        for (peer, kind) in psk_peers(ovs, family) {
            let rule = bundle::firewall::guard_rule(peer, kind);
            let guarded = if output.contains(rule.as_str()) {
                chains
                    .chain(kind.guard_chain())
                    .rules
                    .contains(&bundle::firewall::guard_drop_rule(kind))
            } else {
                output.contains(bundle::firewall::legacy_guard_rule(peer, kind).as_str())
            };
            if !guarded {
                return Err(format!(
                    "{name}: the PSK tunnel to {peer} ({}) has no IPsec guard; a bundle the builder made always has one",
                    kind.as_str()
                ));
            }
        }
    }
    Ok(())
}

/// No owned ip6tables chain: what a bundle without `ip6tables.rules` wants, and what a state
/// recorded before IPv6 support had.
pub fn no_chains6() -> Chains {
    Chains::from_save_in(Family::V6, "")
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

    pub fn ip6_forward(&self) -> PathBuf {
        self.proc_dir.join(sysctl::IP6_FORWARD_PROC)
    }
}

/// The host as it is now: the live OVS rows, and the rest of [`HostState`] (whose `ovs` is left
/// empty: the live rows are the truth, see [`Current::snapshot`]).
#[derive(Debug, Clone)]
pub struct Current {
    pub live: Live,
    /// The OVN northbound rows (none read for `--gre-only`, or where there is no database).
    pub nb: crate::nb::NbLive,
    pub state: HostState,
}

impl Current {
    /// Reads what `scope` needs: for `GreOnly` the OVS rows alone.
    pub fn read(sys: &mut dyn System, loc: &Locations, scope: Scope) -> Result<Current, SysError> {
        // OVSDB and the *tables-save work at the same time (both scopes read the chains);
        // the threads that collect the saves parse them too. The files are read while
        // ovsdb-server works, the chains taken after its reply: on a no-op neither waits for
        // the other.
        sys.read_begin();
        let files = match scope {
            Scope::GreOnly => Ok(HostState::default()),
            Scope::Full => read_files(sys, loc),
        };
        let files = files.inspect_err(|_| sys.read_cancel())?;
        let live = sys.ovs_read().inspect_err(|_| sys.read_cancel())?;
        let state = HostState {
            chains: sys.firewall_read(Family::V4)?,
            chains6: sys.firewall_read(Family::V6)?,
            ..files
        };
        let nb = match scope {
            Scope::Full => sys.nb_read()?,
            Scope::GreOnly => crate::nb::NbLive::default(),
        };
        Ok(Current { live, nb, state })
    }

    /// The whole state, OVS rows included: what a rollback returns to.
    pub fn snapshot(&self) -> HostState {
        HostState {
            ovs: self.live.owned_state(),
            ipsec_skb_mark: owned_skb_mark(&self.live),
            ovn_chassis: owned_ovn_chassis(&self.live),
            ovn_chassis_foreign: foreign_ovn_chassis(&self.live),
            ovn_ipsec_keys: owned_ovn_keys(crate::ovs::OvnKeys::Ipsec, &self.live),
            ovn_nb: self.nb.owned_state(),
            ovn_nb_ipsec: self.nb.ipsec_on(),
            ..self.state.clone()
        }
    }
}

/// A file ovs-bundle sets on some hosts only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileWant {
    /// Not ours to set: left as it is (and no drift).
    #[default]
    Ignore,
    Absent,
    Content(Vec<u8>),
}

impl FileWant {
    /// A file as read.
    pub fn found(data: Option<Vec<u8>>) -> FileWant {
        data.map_or(FileWant::Absent, FileWant::Content)
    }

    /// Whether a host whose file is `now` has it as this wants.
    pub fn holds(&self, now: &FileWant) -> bool {
        matches!(self, FileWant::Ignore) || self == now
    }
}

/// A chassis' OVN IPsec files by path (see [`HostState::ovn_ipsec_files`]).
/// One is a private key: `Debug` shows names and sizes only (a failed assertion or a log line
/// of a state or plan never shows key bytes).
#[derive(Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct IpsecFiles(pub BTreeMap<String, Vec<u8>>);

/// As stored in generations and snapshots: every path one of ovs-bundle's IPsec files (a
/// state file edited by hand names no other file to write), and the form before the files
/// were named after their content (by `other_config` key, at fixed paths) read as those paths,
/// so that a rollback to such a generation puts back what it had.
impl<'de> Deserialize<'de> for IpsecFiles {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = BTreeMap::<String, Vec<u8>>::deserialize(d)?;
        let mut out = BTreeMap::new();
        for (key, data) in raw {
            let path = match key.as_str() {
                "ca_cert" => "etc/ipsec.d/cacerts/ovs-bundle-ovn-ca.pem".to_string(),
                "certificate" => "etc/ipsec.d/certs/ovs-bundle-ovn.pem".to_string(),
                "private_key" => "etc/ipsec.d/private/ovs-bundle-ovn.pem".to_string(),
                p if bundle::ovn::ipsec_dir_entry(p).is_some_and(ovn_ipsec_owned) => key,
                p => {
                    return Err(serde::de::Error::custom(format!(
                        "{p:?} is not an OVN IPsec file of ovs-bundle's"
                    )))
                }
            };
            out.insert(path, data);
        }
        Ok(IpsecFiles(out))
    }
}

impl std::fmt::Debug for IpsecFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(
                self.0
                    .iter()
                    .map(|(k, v)| (k, format!("<{} bytes>", v.len()))),
            )
            .finish()
    }
}

impl std::ops::Deref for IpsecFiles {
    type Target = BTreeMap<String, Vec<u8>>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

/// The `other_config` keys and the files a chassis' IPsec credentials want (none without),
/// the files by path relative to the root (named after their content,
/// `bundle::ovn::ipsec_file_name`). The keys name the files where the host has them,
/// `/etc/ipsec.d/…`, also when the applier works on another root (an image being built).
pub fn ovn_ipsec_wanted(
    ipsec: Option<&bundle::ovn::ChassisIpsec>,
) -> (BTreeMap<String, String>, Option<IpsecFiles>) {
    let Some(i) = ipsec else {
        return (BTreeMap::new(), None);
    };
    let mut keys = BTreeMap::new();
    let mut files = BTreeMap::new();
    for (key, path, content) in bundle::ovn::ipsec_files(i) {
        keys.insert(key.to_string(), format!("/{path}"));
        files.insert(path, content.as_bytes().to_vec());
    }
    (keys, Some(IpsecFiles(files)))
}

/// Whether `name`, in one of strongSwan's directories, is ovs-bundle's: one of its IPsec files,
/// or what a write of one that was cut short left (its temporary file, key bytes maybe).
fn ovn_ipsec_owned(name: &str) -> bool {
    bundle::ovn::is_ipsec_file_name(name)
        || crate::system::temp_of(name).is_some_and(bundle::ovn::is_ipsec_file_name)
}

/// The IPsec files of ovs-bundle's there are (in the directories of
/// `bundle::ovn::IPSEC_FILES`), by path relative to the root; `None` when there is none.
pub fn read_ovn_ipsec_files(
    sys: &mut dyn System,
    paths: &Paths,
) -> Result<Option<IpsecFiles>, SysError> {
    let mut out = BTreeMap::new();
    for (_, dir) in bundle::ovn::IPSEC_FILES {
        for name in sys.list_dir(&paths.ovn_ipsec_file(dir))? {
            if !ovn_ipsec_owned(&name) {
                continue;
            }
            let path = format!("{dir}/{name}");
            if let Some(data) = sys.read_file(&paths.ovn_ipsec_file(&path))? {
                out.insert(path, data);
            }
        }
    }
    Ok((!out.is_empty()).then_some(IpsecFiles(out)))
}

/// `ipsec_skb_mark` if ovs-bundle set it.
pub fn owned_skb_mark(live: &Live) -> Option<String> {
    use crate::ovs::change::{SKB_MARK, SKB_MARK_OWNER};
    live.root_external_ids
        .contains_key(SKB_MARK_OWNER)
        .then(|| live.root_other_config.get(SKB_MARK).cloned())
        .flatten()
}

/// The OVN chassis keys ovs-bundle set: those its mark lists, with their values now.
pub fn owned_ovn_chassis(live: &Live) -> BTreeMap<String, String> {
    owned_ovn_keys(crate::ovs::OvnKeys::Chassis, live)
}

/// The chassis keys there are that ovs-bundle did not set, with their values.
pub fn foreign_ovn_chassis(live: &Live) -> BTreeMap<String, String> {
    let owned = crate::ovs::planner::ovn_owned_keys(crate::ovs::OvnKeys::Chassis, live);
    bundle::ovn::CHASSIS_KEYS
        .iter()
        .filter(|k| !owned.iter().any(|o| o == *k))
        .filter_map(|k| Some((k.to_string(), live.root_external_ids.get(*k)?.clone())))
        .collect()
}

/// The keys of `set` ovs-bundle set: those its mark lists, with their values now.
pub fn owned_ovn_keys(set: crate::ovs::OvnKeys, live: &Live) -> BTreeMap<String, String> {
    let values = live.ovn_key_values(set);
    crate::ovs::planner::ovn_owned_keys(set, live)
        .into_iter()
        .filter_map(|k| Some((k.clone(), values.get(&k)?.clone())))
        .collect()
}

/// Everything but OVS: the chains, the interfaces file, the sysctl drop-in and value.
pub fn read_rest(sys: &mut dyn System, loc: &Locations) -> Result<HostState, SysError> {
    Ok(HostState {
        chains: sys.firewall_read(Family::V4)?,
        chains6: sys.firewall_read(Family::V6)?,
        ..read_files(sys, loc)?
    })
}

/// What [`read_rest`] reads but the chains: the files (and whether dnsmasq runs).
fn read_files(sys: &mut dyn System, loc: &Locations) -> Result<HostState, SysError> {
    Ok(HostState {
        ovs: OvsState::default(),
        chains: Chains::default(),
        chains6: Chains::default(),
        interfaces: sys.read_file(&loc.paths.interfaces_file())?,
        sysctl: sys.read_file(&loc.paths.sysctl_dropin())?,
        ip_forward: sys
            .read_file(&loc.ip_forward())?
            .map(|v| String::from_utf8_lossy(&v).trim().to_string()),
        ip6_forward: sys
            .read_file(&loc.ip6_forward())?
            .map(|v| String::from_utf8_lossy(&v).trim().to_string()),
        ipsec_skb_mark: None,
        ovn_chassis: BTreeMap::new(),
        ovn_chassis_foreign: BTreeMap::new(),
        ovn_nb: Vec::new(),
        ovn_nb_ipsec: false,
        ovs_system_id: FileWant::found(sys.read_file(&loc.paths.ovs_system_id_conf())?),
        ovn_ipsec_keys: BTreeMap::new(),
        ovn_ipsec_files: read_ovn_ipsec_files(sys, &loc.paths)?,
        dhcp: sys.read_file(&loc.paths.dhcp_conf())?,
        dhcp_running: sys.dhcp_running(&loc.paths.dhcp_instance())?,
    })
}
