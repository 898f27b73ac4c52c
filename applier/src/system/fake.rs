//! An in-memory host for tests: an OVS database (typed rows), the owned iptables chains, files and
//! directories, kernel settings (files under `/proc`), the set of interfaces ifup brought up and
//! the configuration this tool's dnsmasq instance runs with.
//! Every call is recorded; `fail_at(n)` makes call `n` fail, `crash_at(n)` makes call `n` and
//! every later one fail (the process died there) until [`FakeSystem::restart`].
//! One file past 500 lines: it implements the whole `System` trait, every part of it on the one
//! recorded sequence of calls that failures and crashes are injected into.
//!
//! One file over 500 lines on purpose: the fake host is one type implementing the whole seam,
//! and splitting its trait impl would scatter it.

use super::{IfAction, SysError, System};
use crate::ovs::{Live, LiveBridge, LiveIface, LivePort, OvsChange};
use bundle::firewall::Family;
use bundle::state::OvsState;
use bundle::Chains;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct FakeSystem {
    pub ovs: Live,
    /// The OVN northbound database (`present: false`: none, as on a chassis).
    pub nb: crate::nb::NbLive,
    pub chains: Chains,
    /// The owned ip6tables chains.
    pub chains6: Chains,
    pub files: BTreeMap<PathBuf, Vec<u8>>,
    pub dirs: BTreeSet<PathBuf>,
    /// The mode each file and directory was last written or made with (where it was).
    pub modes: BTreeMap<PathBuf, u32>,
    /// Interfaces ifup brought up (and ifdown did not take down since).
    pub up: BTreeSet<String>,
    /// Interface name -> the error ovs-vswitchd reports on it.
    pub iface_errors: BTreeMap<String, String>,
    /// When false, ovs-vswitchd never catches up with the database.
    pub vswitchd_running: bool,
    /// When true, iptables-restore "succeeds" without changing anything.
    pub firewall_ignores_writes: bool,
    /// The configuration this tool's dnsmasq instance runs with (`None`: it does not run).
    pub dnsmasq: Option<Vec<u8>>,
    /// Every call, in order: `name path-or-detail`.
    pub calls: Vec<String>,
    pub fail_at: Option<usize>,
    /// More steps that fail, for a failure during the revert of a failed apply.
    pub also_fail_at: BTreeSet<usize>,
    pub crash_at: Option<usize>,
    crashed: bool,
    seq: u64,
    /// The rows and chains as `read_begin` saw them, for the next `ovs_read`/`firewall_read`.
    ovs_pending: Option<Live>,
    firewall_pending: Option<Chains>,
}

/// A northbound port as seen: (name, addresses, ours, type, options).
pub type NbPortView = (String, Vec<String>, bool, String, BTreeMap<String, String>);

/// What a person could observe on the host (row UUIDs aside): what tests compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    pub owned: OvsState,
    /// Every northbound switch: (name, ours, its ports), sorted.
    pub nb: Vec<(String, bool, Vec<NbPortView>)>,
    /// `NB_Global`: `ipsec` and `external_ids`.
    pub nb_global: Option<(bool, BTreeMap<String, String>)>,
    /// `Open_vSwitch` `other_config` and `external_ids`.
    pub root: (BTreeMap<String, String>, BTreeMap<String, String>),
    pub foreign: Vec<String>,
    pub chains: Chains,
    pub chains6: Chains,
    /// Text files as text, others as their SHA-256.
    pub files: BTreeMap<PathBuf, String>,
    pub dirs: BTreeSet<PathBuf>,
    pub up: BTreeSet<String>,
    /// The configuration the dnsmasq instance runs with, if it runs.
    pub dnsmasq: Option<String>,
}

impl Default for FakeSystem {
    fn default() -> Self {
        FakeSystem {
            ovs: Live {
                root: "root".into(),
                ..Live::default()
            },
            nb: crate::nb::NbLive::default(),
            chains: Chains::from_save(""),
            chains6: Chains::from_save_in(Family::V6, ""),
            files: BTreeMap::new(),
            dirs: BTreeSet::new(),
            modes: BTreeMap::new(),
            up: BTreeSet::new(),
            iface_errors: BTreeMap::new(),
            vswitchd_running: true,
            firewall_ignores_writes: false,
            dnsmasq: None,
            calls: Vec::new(),
            fail_at: None,
            also_fail_at: BTreeSet::new(),
            crash_at: None,
            crashed: false,
            seq: 0,
            ovs_pending: None,
            firewall_pending: None,
        }
    }
}

impl FakeSystem {
    /// A host with IPv4 and IPv6 forwarding at 0, and Open vSwitch's configuration directory.
    pub fn new() -> FakeSystem {
        let mut f = FakeSystem::default();
        f.put("/proc/sys/net/ipv4/ip_forward", b"0\n");
        f.put("/proc/sys/net/ipv6/conf/all/forwarding", b"0\n");
        f.add_parents(Path::new("/etc/openvswitch/x"));
        f
    }

    /// Puts a file in place without recording a call.
    pub fn put(&mut self, path: &str, data: &[u8]) {
        let p = PathBuf::from(path);
        self.add_parents(&p);
        self.files.insert(p, data.to_vec());
    }

    /// A port someone else made (no owner mark) on bridge `bridge`, created if missing.
    pub fn add_foreign_port(&mut self, bridge: &str, name: &str) {
        if self.ovs.bridge(bridge).is_none() {
            let b = self.uuid();
            self.ovs.bridges.push(LiveBridge {
                uuid: b,
                name: bridge.into(),
                datapath_type: String::new(),
                rstp: false,
                external_ids: BTreeMap::new(),
                ports: Vec::new(),
            });
        }
        let p = self.insert_port(name, "internal", BTreeMap::new(), BTreeMap::new(), false);
        let lb = self
            .ovs
            .bridges
            .iter_mut()
            .find(|b| b.name == bridge)
            .expect("made above");
        lb.ports.push(p);
    }

    /// Whether the process "died" (a `crash_at` step was reached).
    pub fn crashed(&self) -> bool {
        self.crashed
    }

    /// The process "restarts" after a crash: calls work again.
    pub fn restart(&mut self) {
        self.crashed = false;
        self.crash_at = None;
        self.fail_at = None;
        self.also_fail_at.clear();
        self.read_cancel();
    }

    pub fn view(&self) -> View {
        let mut foreign: Vec<String> = self
            .ovs
            .ports
            .values()
            .filter(|p| !p.external_ids.contains_key(bundle::state::OWNER_KEY))
            .map(|p| p.name.clone())
            .collect();
        foreign.sort();
        // OVSDB sets have no order: compare ports by name.
        let mut owned = self.ovs.owned_state();
        for b in &mut owned.bridges {
            b.ports.sort_by(|a, b| a.name.cmp(&b.name));
        }
        owned.bridges.sort_by(|a, b| a.name.cmp(&b.name));
        let files = self
            .files
            .iter()
            .map(|(p, d)| {
                let shown = match std::str::from_utf8(d) {
                    Ok(t) => t.to_string(),
                    Err(_) => format!("sha256:{}", bundle::sha256_hex(d)),
                };
                (p.clone(), shown)
            })
            .collect();
        let ours = |ids: &BTreeMap<String, String>| ids.contains_key(bundle::state::OWNER_KEY);
        let mut nb: Vec<_> = self
            .nb
            .switches
            .iter()
            .map(|s| {
                let mut ports: Vec<_> = s
                    .ports
                    .iter()
                    .filter_map(|u| self.nb.ports.get(u))
                    .map(|p| {
                        (
                            p.name.clone(),
                            p.addresses.clone(),
                            ours(&p.external_ids),
                            p.kind.clone(),
                            p.options.clone(),
                        )
                    })
                    .collect();
                ports.sort();
                (s.name.clone(), ours(&s.external_ids), ports)
            })
            .collect();
        nb.sort();
        View {
            nb,
            nb_global: self
                .nb
                .global
                .as_ref()
                .map(|g| (g.ipsec, g.external_ids.clone())),
            root: (
                self.ovs.root_other_config.clone(),
                self.ovs.root_external_ids.clone(),
            ),
            owned,
            foreign,
            chains: self.chains.clone(),
            chains6: self.chains6.clone(),
            files,
            dirs: self.dirs.clone(),
            up: self.up.clone(),
            dnsmasq: self
                .dnsmasq
                .as_ref()
                .map(|c| String::from_utf8_lossy(c).into_owned()),
        }
    }

    fn tick(&mut self, call: String) -> Result<(), SysError> {
        let n = self.calls.len();
        self.calls.push(call.clone());
        if self.crashed {
            return Err(SysError::Injected(format!(
                "{n} ({call}): the process is dead"
            )));
        }
        if self.crash_at == Some(n) {
            self.crashed = true;
            return Err(SysError::Injected(format!("{n} ({call}): crash")));
        }
        if self.fail_at == Some(n) || self.also_fail_at.contains(&n) {
            return Err(SysError::Injected(format!("{n} ({call})")));
        }
        Ok(())
    }

    fn uuid(&mut self) -> String {
        self.seq += 1;
        format!("u{}", self.seq)
    }

    fn add_parents(&mut self, path: &Path) {
        let mut p = path.parent();
        while let Some(d) = p {
            if d.as_os_str().is_empty() || d == Path::new("/") {
                break;
            }
            self.dirs.insert(d.to_path_buf());
            p = d.parent();
        }
    }

    fn insert_port(
        &mut self,
        name: &str,
        kind: &str,
        options: BTreeMap<String, String>,
        ids: BTreeMap<String, String>,
        protected: bool,
    ) -> String {
        let (p, i) = (self.uuid(), self.uuid());
        self.ovs.ifaces.insert(
            i.clone(),
            LiveIface {
                uuid: i.clone(),
                name: name.into(),
                kind: kind.into(),
                options,
                external_ids: ids.clone(),
            },
        );
        self.ovs.ports.insert(
            p.clone(),
            LivePort {
                uuid: p.clone(),
                name: name.into(),
                interfaces: vec![i],
                protected,
                external_ids: ids,
            },
        );
        p
    }

    /// Rows no longer referenced go, as OVSDB's garbage collection does for non-root tables.
    fn collect_garbage(&mut self) {
        let held: BTreeSet<String> = self
            .ovs
            .bridges
            .iter()
            .flat_map(|b| b.ports.clone())
            .collect();
        self.ovs.ports.retain(|u, _| held.contains(u));
        let held: BTreeSet<String> = self
            .ovs
            .ports
            .values()
            .flat_map(|p| p.interfaces.clone())
            .collect();
        self.ovs.ifaces.retain(|u, _| held.contains(u));
    }

    fn exists(&self, uuid: &str) -> bool {
        self.ovs.bridges.iter().any(|b| b.uuid == uuid)
            || self.ovs.ports.contains_key(uuid)
            || self.ovs.ifaces.contains_key(uuid)
    }
}

impl System for FakeSystem {
    fn ovs_read(&mut self) -> Result<Live, SysError> {
        let pending = self.ovs_pending.take();
        self.tick("ovs_read".into())?;
        Ok(pending.unwrap_or_else(|| self.ovs.clone()))
    }

    fn ovs_apply(&mut self, changes: &[OvsChange], _base: &Live, _: &str) -> Result<i64, SysError> {
        self.read_cancel();
        self.tick(format!("ovs_apply {} change(s)", changes.len()))?;
        // The guards: every row the changes name must still be there.
        for c in changes {
            let named: Vec<&String> = match c {
                OvsChange::UpdateBridge { uuid, .. } | OvsChange::DeleteBridge { uuid, .. } => {
                    vec![uuid]
                }
                OvsChange::UpdatePort {
                    port_uuid,
                    iface_uuid,
                    ..
                } => vec![port_uuid, iface_uuid],
                OvsChange::DeletePort {
                    bridge_uuid, uuid, ..
                } => vec![bridge_uuid, uuid],
                _ => vec![],
            };
            if let Some(u) = named.into_iter().find(|u| !self.exists(u)) {
                return Err(SysError::Ovs(format!("wait failed: row {u} changed")));
            }
        }
        for c in changes {
            match c {
                OvsChange::AddBridge { bridge } => {
                    let p = self.insert_port(
                        &bridge.name,
                        "internal",
                        BTreeMap::new(),
                        bridge.external_ids.clone(),
                        false,
                    );
                    let uuid = self.uuid();
                    self.ovs.bridges.push(LiveBridge {
                        uuid,
                        name: bridge.name.clone(),
                        datapath_type: bridge.datapath_type.clone(),
                        rstp: bridge.rstp,
                        external_ids: bridge.external_ids.clone(),
                        ports: vec![p],
                    });
                }
                OvsChange::AddPort { bridge, port } => {
                    let p = self.insert_port(
                        &port.name,
                        &port.interface.kind,
                        port.interface.options.clone(),
                        port.external_ids.clone(),
                        port.protected,
                    );
                    let b = self.ovs.bridges.iter_mut().find(|b| &b.name == bridge);
                    b.ok_or_else(|| SysError::Ovs(format!("no bridge {bridge}")))?
                        .ports
                        .push(p);
                }
                OvsChange::UpdateBridge {
                    uuid,
                    datapath_type,
                    rstp,
                    external_ids,
                    ..
                } => {
                    let b = self
                        .ovs
                        .bridges
                        .iter_mut()
                        .find(|b| &b.uuid == uuid)
                        .expect("guarded");
                    if let Some((_, d)) = datapath_type {
                        b.datapath_type = d.clone();
                    }
                    if let Some((_, r)) = rstp {
                        b.rstp = *r;
                    }
                    if let Some(ids) = external_ids {
                        b.external_ids = ids.clone();
                    }
                }
                OvsChange::DeleteBridge { uuid, .. } => {
                    self.ovs.bridges.retain(|b| &b.uuid != uuid)
                }
                OvsChange::UpdatePort {
                    port,
                    port_uuid,
                    iface_uuid,
                    ..
                } => {
                    let i = self.ovs.ifaces.get_mut(iface_uuid).expect("guarded");
                    i.options = port.interface.options.clone();
                    i.external_ids = bundle::state::merged_ids(&port.external_ids, &i.external_ids);
                    let p = self.ovs.ports.get_mut(port_uuid).expect("guarded");
                    p.protected = port.protected;
                    p.external_ids = bundle::state::merged_ids(&port.external_ids, &p.external_ids);
                }
                OvsChange::OvnKeys {
                    set,
                    from,
                    to,
                    restore,
                } => {
                    let values = self.ovs.ovn_key_values_mut(*set);
                    for k in from.keys().chain(to.keys()) {
                        values.remove(k);
                    }
                    values.extend(to.clone());
                    values.extend(restore.clone());
                    let ids = &mut self.ovs.root_external_ids;
                    ids.remove(set.owner());
                    if !to.is_empty() {
                        ids.insert(set.owner().into(), crate::ovs::planner::ovn_mark(to));
                    }
                }
                OvsChange::SkbMark { to, .. } => {
                    use crate::ovs::change::{SKB_MARK, SKB_MARK_OWNER};
                    self.ovs.root_other_config.remove(SKB_MARK);
                    self.ovs.root_external_ids.remove(SKB_MARK_OWNER);
                    if let Some(v) = to {
                        self.ovs
                            .root_other_config
                            .insert(SKB_MARK.into(), v.clone());
                        self.ovs
                            .root_external_ids
                            .insert(SKB_MARK_OWNER.into(), "owned".into());
                    }
                }
                OvsChange::DeletePort {
                    bridge_uuid, uuid, ..
                } => {
                    let b = self
                        .ovs
                        .bridges
                        .iter_mut()
                        .find(|b| &b.uuid == bridge_uuid)
                        .expect("guarded");
                    b.ports.retain(|p| p != uuid);
                }
            }
        }
        self.collect_garbage();
        self.ovs.next_cfg += 1;
        if self.vswitchd_running {
            self.ovs.cur_cfg = self.ovs.next_cfg;
        }
        Ok(self.ovs.next_cfg)
    }

    fn nb_read(&mut self) -> Result<crate::nb::NbLive, SysError> {
        self.tick("nb_read".into())?;
        Ok(self.nb.clone())
    }

    fn nb_apply(
        &mut self,
        changes: &[crate::nb::NbChange],
        _base: &crate::nb::NbLive,
        owner: &str,
        _: &str,
    ) -> Result<(), SysError> {
        use crate::nb::{NbChange, NbPort, NbSwitch, SUBNET_KEY};
        self.tick(format!("nb_apply {} change(s)", changes.len()))?;
        if !self.nb.present {
            return Err(SysError::Ovs("no northbound database".into()));
        }
        let ours = BTreeMap::from([(bundle::state::OWNER_KEY.to_string(), owner.to_string())]);
        let add_port = |nb: &mut crate::nb::NbLive, seq: &mut u64, p: &bundle::ovn::LogicalPort| {
            *seq += 1;
            let uuid = format!("nb{seq}");
            let (addresses, kind, options) = crate::nb::port_columns(p);
            nb.ports.insert(
                uuid.clone(),
                NbPort {
                    uuid: uuid.clone(),
                    name: p.name.clone(),
                    addresses,
                    kind: kind.into(),
                    options,
                    external_ids: ours.clone(),
                },
            );
            uuid
        };
        for c in changes {
            let nb = &mut self.nb;
            match c {
                NbChange::AddSwitch { switch } => {
                    let ports = switch
                        .ports
                        .iter()
                        .map(|p| add_port(nb, &mut self.seq, p))
                        .collect();
                    let mut ids = ours.clone();
                    ids.insert(SUBNET_KEY.into(), switch.subnet.clone());
                    self.seq += 1;
                    let uuid = format!("nbs{}", self.seq);
                    nb.switches.push(NbSwitch {
                        uuid,
                        name: switch.name.clone(),
                        ports,
                        external_ids: ids,
                    });
                }
                NbChange::UpdateSwitch { uuid, subnet, .. } => {
                    let s = nb
                        .switches
                        .iter_mut()
                        .find(|s| &s.uuid == uuid)
                        .expect("read");
                    s.external_ids.insert(SUBNET_KEY.into(), subnet.clone());
                }
                NbChange::DeleteSwitch { uuid, .. } => {
                    if let Some(i) = nb.switches.iter().position(|s| &s.uuid == uuid) {
                        for p in nb.switches.remove(i).ports {
                            nb.ports.remove(&p);
                        }
                    }
                }
                NbChange::AddPort {
                    switch_uuid, port, ..
                } => {
                    let u = add_port(nb, &mut self.seq, port);
                    let s = nb
                        .switches
                        .iter_mut()
                        .find(|s| &s.uuid == switch_uuid)
                        .expect("read");
                    s.ports.push(u);
                }
                NbChange::UpdatePort { uuid, port, .. } => {
                    let (addresses, kind, options) = crate::nb::port_columns(port);
                    let p = nb.ports.get_mut(uuid).expect("read");
                    p.addresses = addresses;
                    p.kind = kind.into();
                    p.options = options;
                }
                NbChange::Ipsec { to, .. } => {
                    let g = nb.global.get_or_insert_with(|| crate::nb::NbGlobal {
                        uuid: "nbg".into(),
                        ..Default::default()
                    });
                    g.ipsec = *to;
                    g.external_ids.remove(bundle::ovn::NB_IPSEC_OWNER);
                    if *to {
                        g.external_ids
                            .insert(bundle::ovn::NB_IPSEC_OWNER.into(), owner.into());
                    }
                }
                NbChange::DeletePort {
                    switch_uuid, uuid, ..
                } => {
                    let s = nb
                        .switches
                        .iter_mut()
                        .find(|s| &s.uuid == switch_uuid)
                        .expect("read");
                    s.ports.retain(|p| p != uuid);
                    nb.ports.remove(uuid);
                }
            }
        }
        Ok(())
    }

    fn ovs_wait_applied(&mut self, cfg: i64) -> Result<(), SysError> {
        self.tick(format!("ovs_wait_applied {cfg}"))?;
        if self.ovs.cur_cfg >= cfg {
            Ok(())
        } else {
            Err(SysError::Ovs(format!(
                "ovs-vswitchd did not apply configuration {cfg}"
            )))
        }
    }

    fn ovs_interface_errors(&mut self, names: &[&str]) -> Result<Vec<String>, SysError> {
        self.tick("ovs_interface_errors".into())?;
        Ok(names
            .iter()
            .filter_map(|n| Some(format!("interface {n}: {}", self.iface_errors.get(*n)?)))
            .collect())
    }

    /// Not a step of its own (the real one only sends a request and starts a process): the
    /// reads it starts are `ovs_read`'s and `firewall_read`'s steps, and return the host as it
    /// was here.
    fn read_begin(&mut self) {
        if self.ovs_pending.is_none() {
            self.ovs_pending = Some(self.ovs.clone());
        }
        if self.firewall_pending.is_none() {
            self.firewall_pending = Some(self.chains.clone());
        }
    }

    fn read_cancel(&mut self) {
        self.ovs_pending = None;
        self.firewall_pending = None;
    }

    fn firewall_read(&mut self, family: Family) -> Result<Chains, SysError> {
        if family == Family::V6 {
            self.tick("firewall6_read".into())?;
            return Ok(self.chains6.clone());
        }
        let pending = self.firewall_pending.take();
        self.tick("firewall_read".into())?;
        Ok(pending.unwrap_or_else(|| self.chains.clone()))
    }

    fn firewall_write(
        &mut self,
        want: &Chains,
        current: &Chains,
        test_only: bool,
    ) -> Result<(), SysError> {
        self.read_cancel();
        self.tick(format!(
            "firewall{}_write{}",
            if want.family == Family::V6 { "6" } else { "" },
            if test_only { " --test" } else { "" }
        ))?;
        // As the real one: the restore input made from what the caller believes is there,
        // run against what is there.
        let input = want.restore_input(current);
        let host = match want.family {
            Family::V4 => &self.chains,
            Family::V6 => &self.chains6,
        };
        let after = restore_noflush(host, &input)?;
        if !test_only && !self.firewall_ignores_writes {
            match want.family {
                Family::V4 => self.chains = after,
                Family::V6 => self.chains6 = after,
            }
        }
        Ok(())
    }

    fn read_file(&mut self, path: &Path) -> Result<Option<Vec<u8>>, SysError> {
        self.tick(format!("read_file {}", path.display()))?;
        Ok(self.files.get(path).cloned())
    }

    fn write_file(&mut self, path: &Path, data: &[u8], mode: u32) -> Result<(), SysError> {
        self.tick(format!("write_file {}", path.display()))?;
        self.add_parents(path);
        self.files.insert(path.to_path_buf(), data.to_vec());
        self.modes.insert(path.to_path_buf(), mode);
        Ok(())
    }

    fn remove_file(&mut self, path: &Path) -> Result<(), SysError> {
        self.tick(format!("remove_file {}", path.display()))?;
        self.files.remove(path);
        Ok(())
    }

    fn rename(&mut self, from: &Path, to: &Path) -> Result<(), SysError> {
        self.tick(format!("rename {} {}", from.display(), to.display()))?;
        let data = self
            .files
            .remove(from)
            .ok_or_else(|| SysError::file(from, std::io::ErrorKind::NotFound.into()))?;
        self.add_parents(to);
        self.files.insert(to.to_path_buf(), data);
        Ok(())
    }

    fn list_dir(&mut self, path: &Path) -> Result<Vec<String>, SysError> {
        self.tick(format!("list_dir {}", path.display()))?;
        let mut names: BTreeSet<String> = BTreeSet::new();
        for p in self.files.keys().chain(self.dirs.iter()) {
            if p.parent() == Some(path) {
                names.insert(
                    p.file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
        Ok(names.into_iter().collect())
    }

    fn create_dir(&mut self, path: &Path, mode: u32) -> Result<(), SysError> {
        self.tick(format!("create_dir {}", path.display()))?;
        self.add_parents(path);
        if self.dirs.insert(path.to_path_buf()) {
            self.modes.insert(path.to_path_buf(), mode);
        }
        Ok(())
    }

    fn remove_dir(&mut self, path: &Path) -> Result<(), SysError> {
        self.tick(format!("remove_dir {}", path.display()))?;
        let busy = self
            .files
            .keys()
            .chain(self.dirs.iter())
            .any(|p| p.parent() == Some(path));
        if !busy {
            self.dirs.remove(path);
        }
        Ok(())
    }

    fn write_sysctl(&mut self, path: &Path, value: &[u8]) -> Result<(), SysError> {
        self.read_cancel();
        self.tick(format!("write_sysctl {}", path.display()))?;
        match self.files.get_mut(path) {
            Some(v) => {
                *v = value.to_vec();
                Ok(())
            }
            None => Err(SysError::file(path, std::io::ErrorKind::NotFound.into())),
        }
    }

    fn ifupdown(
        &mut self,
        action: IfAction,
        iface: &str,
        interfaces: &Path,
    ) -> Result<(), SysError> {
        self.read_cancel();
        self.tick(format!("{action:?} {iface}"))?;
        match action {
            IfAction::Down => {
                self.up.remove(iface);
            }
            IfAction::Up => {
                let file = self.files.get(interfaces).cloned().unwrap_or_default();
                if !bundle::interfaces::has_stanza(&file, iface) {
                    return Err(SysError::Command {
                        command: format!("ifup {iface}"),
                        detail: format!("unknown interface {iface}"),
                    });
                }
                self.up.insert(iface.to_string());
            }
        }
        Ok(())
    }

    fn dhcp_running(&mut self, inst: &super::DhcpInstance) -> Result<bool, SysError> {
        self.tick(format!("dhcp_running {}", inst.pid_file.display()))?;
        Ok(self.dnsmasq.is_some())
    }

    /// Like dnsmasq: stops, then starts only with a configuration file it accepts.
    fn ipsec_reread_cacerts(&mut self) -> Result<(), SysError> {
        self.tick("ipsec_reread_cacerts".into())
    }

    fn dhcp_restart(&mut self, inst: &super::DhcpInstance, start: bool) -> Result<(), SysError> {
        self.tick(format!("dhcp_restart {start}"))?;
        self.dnsmasq = None;
        if start {
            let conf =
                self.files.get(&inst.conf).cloned().ok_or_else(|| {
                    SysError::file(&inst.conf, std::io::ErrorKind::NotFound.into())
                })?;
            bundle::dhcp::parse(&conf).map_err(|e| SysError::Command {
                command: "dnsmasq".into(),
                detail: e.to_string(),
            })?;
            self.dnsmasq = Some(conf);
        }
        Ok(())
    }
}

/// `iptables-restore --noflush` of `input` on the owned chains `host`, all or nothing: declaring
/// a chain creates or empties it, `-A` appends, `-I`/`-D` add and delete a built-in chain's jump,
/// `-X` deletes a chain nothing refers to; a rule that jumps to a chain that does not exist
/// fails the whole commit, as a missing target does in iptables.
fn restore_noflush(host: &Chains, input: &str) -> Result<Chains, SysError> {
    let fail = |detail: String| SysError::Command {
        command: "iptables-restore --noflush".into(),
        detail,
    };
    let mut out = host.clone();
    for line in input.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            [] | ["COMMIT"] => {}
            [t] if t.starts_with('*') => {}
            [decl, "-", _] if decl.starts_with(':') => {
                let c = out.chains.entry(decl[1..].to_string()).or_default();
                c.exists = true;
                c.rules.clear();
            }
            ["-A", chain, ..] => match out.chains.get_mut(*chain) {
                Some(c) if c.exists => c.rules.push(line.to_string()),
                _ => return Err(fail(format!("{line}: chain {chain} does not exist"))),
            },
            ["-I", _, "1", "-j", chain] => {
                out.chains.entry(chain.to_string()).or_default().jump = true;
            }
            ["-D", _, "-j", chain] => match out.chains.get_mut(*chain) {
                Some(c) if c.jump => c.jump = false,
                _ => return Err(fail(format!("{line}: no such rule"))),
            },
            ["-X", chain] => {
                let target = format!("-j {chain}");
                let referred = out
                    .chains
                    .values()
                    .any(|c| c.rules.iter().any(|r| r.ends_with(&target)))
                    || out.chains.get(*chain).is_some_and(|c| c.jump);
                match out.chains.get_mut(*chain) {
                    Some(c) if c.exists && !referred => *c = Default::default(),
                    _ => return Err(fail(format!("{line}: missing or still referred to"))),
                }
            }
            _ => return Err(fail(format!("{line}: not a line the fake knows"))),
        }
    }
    for c in out.chains.values() {
        for r in &c.rules {
            if let Some(target) = r.split(" -j ").nth(1) {
                let owned = target.starts_with("OVSB-");
                if owned && !out.chains.get(target).is_some_and(|t| t.exists) {
                    return Err(fail(format!("{r}: target {target} does not exist")));
                }
            }
        }
    }
    for c in out.chains.values_mut().filter(|c| !c.exists) {
        c.rules.clear();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::restore_noflush;
    use bundle::Chains;

    /// The fake's iptables-restore refuses what the real one does, so tests that pass on it
    /// mean something: a jump to a missing chain, deleting a chain still jumped to, a stale base.
    #[test]
    fn restore_refuses_what_iptables_refuses() {
        let none = Chains::from_save("");
        let guard = Chains::from_bundle(
            "*filter\n:OVSB-OUTPUT - [0:0]\n:OVSB-GUARD-GRE - [0:0]\n\
             -A OVSB-OUTPUT -d 192.0.2.2/32 -j OVSB-GUARD-GRE\n\
             -A OVSB-GUARD-GRE -p gre -m policy --dir out --pol none -j DROP\nCOMMIT\n",
        )
        .unwrap();
        let host = restore_noflush(&none, &guard.restore_input(&none)).unwrap();
        assert_eq!(host.diff(&guard), Vec::<String>::new());
        let dangling = "*filter\n:OVSB-OUTPUT - [0:0]\n-A OVSB-OUTPUT -d 192.0.2.2/32 -j OVSB-GUARD-VXLAN\nCOMMIT\n";
        assert!(restore_noflush(&none, dangling).is_err());
        assert!(restore_noflush(&host, "*filter\n-X OVSB-GUARD-GRE\nCOMMIT\n").is_err());
        // Input made from a stale idea of the host fails where the real one would: here it
        // deletes jumps that are not there.
        assert!(restore_noflush(&none, &none.restore_input(&host)).is_err());
    }
}
