//! The executor: runs a [`HostPlan`] on the host through the [`System`] seam, one driver per
//! subsystem (OVS, firewall, sysctl, interfaces file, DHCP), for an apply and a revert alike.

use crate::engine::Applier;
use crate::ovs::{Live, OvsChange};
use crate::plan::HostPlan;
use crate::system::{IfAction, SysError};
use bundle::firewall::GUARD_CHAINS;
use bundle::Chains;

/// How the executor treats a failed step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Stop at the first failure (the caller then reverts).
    Apply,
    /// Do every step that can be done and report every failure: going back must not give up on
    /// the firewall because OVS failed.
    Revert,
}

/// The subsystems a plan touches, each applied (and reverted) by its own driver, in this order:
/// the firewall first (a PSK tunnel's plaintext guard must be in place before OVS creates the
/// tunnel), then OVS (the bridges the interfaces file brings up must exist), the interfaces file
/// last.
#[derive(Debug, Clone, Copy)]
enum Driver {
    /// The firewall as wanted, but keeping every IPsec guard rule of now as well: a guard
    /// goes only after OVS removed its tunnel (and comes before OVS creates one).
    Firewall,
    Ovs,
    /// The OVN northbound rows (the central host only): after OVS, before anything that could
    /// fail for a reason of the host's own.
    Nb,
    /// The guard rules of tunnels OVS has just removed.
    FirewallGuards,
    /// A chassis' OVN IPsec files: written before OVS points `other_config` at them.
    OvnIpsecFiles,
    /// The OVN IPsec files no longer wanted: removed after OVS stopped naming them.
    OvnIpsecCleanup,
    Sysctl,
    Interfaces,
    /// Last: dnsmasq binds to an interface the interfaces file brings up (and addresses).
    Dhcp,
}

impl Driver {
    const ORDER: [Driver; 9] = [
        Driver::Firewall,
        Driver::OvnIpsecFiles,
        Driver::Ovs,
        Driver::Nb,
        Driver::FirewallGuards,
        Driver::OvnIpsecCleanup,
        Driver::Sysctl,
        Driver::Interfaces,
        Driver::Dhcp,
    ];
}

/// A failed step: what was being done, and why it failed.
pub(crate) type StepError = (String, SysError);

/// Where the real binary can be killed, for the kill tests of the namespace and VM suites. Only
/// in builds with the `test-hooks` feature; release builds have no such hook.
#[cfg(feature = "test-hooks")]
pub(crate) fn kill_point(name: &str) {
    if std::env::var("OVS_BUNDLE_TEST_KILL_AT").is_ok_and(|s| s == name) {
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}

#[cfg(not(feature = "test-hooks"))]
pub(crate) fn kill_point(_name: &str) {}

impl Applier<'_> {
    /// Runs `plan` (made from `base`) on the host, one subsystem after the other.
    pub fn execute(
        &mut self,
        plan: &HostPlan,
        base: &Live,
        comment: &str,
        mode: Mode,
    ) -> Result<(), Vec<StepError>> {
        let mut errors = Vec::new();
        let mut ovs_failed = false;
        for driver in Driver::ORDER {
            let done = match driver {
                Driver::Ovs => {
                    let r = self.ovs_driver(plan, base, comment, mode);
                    ovs_failed = r.is_err();
                    r
                }
                Driver::Nb => self.nb_driver(plan, comment),
                Driver::Firewall => self.firewall_driver(plan),
                // A revert goes on past a failed step, but a tunnel OVS did not remove may still
                // be there: its guard stays (a packet of it must not leave in plaintext).
                Driver::FirewallGuards if ovs_failed => Err((
                    "iptables (IPsec guards of removed tunnels)".to_string(),
                    SysError::Ovs(
                        "kept: the OVS step failed, so the tunnels they guard may still exist"
                            .into(),
                    ),
                )),
                Driver::FirewallGuards => self.guards_driver(plan),
                Driver::OvnIpsecFiles => self
                    .ovs_system_id_driver(plan)
                    .and_then(|()| self.ovn_ipsec_files_driver(plan)),
                Driver::OvnIpsecCleanup => self.ovn_ipsec_cleanup_driver(plan),
                Driver::Sysctl => self.sysctl_driver(plan),
                Driver::Interfaces => self.interfaces_driver(plan, mode),
                Driver::Dhcp => self.dhcp_driver(plan),
            };
            if let Err(e) = done {
                errors.push(e);
                if mode == Mode::Apply {
                    break;
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    fn nb_driver(&mut self, plan: &HostPlan, comment: &str) -> Result<(), StepError> {
        if plan.nb.is_empty() {
            return Ok(());
        }
        kill_point("nb-transact");
        let owner = self.host.clone();
        self.sys
            .nb_apply(&plan.nb, &plan.nb_base, &owner, comment)
            .map_err(|e| ("the OVN northbound transaction".to_string(), e))
    }

    fn ovs_driver(
        &mut self,
        plan: &HostPlan,
        base: &Live,
        comment: &str,
        mode: Mode,
    ) -> Result<(), StepError> {
        if plan.ovs.is_empty() {
            return Ok(());
        }
        kill_point("ovs-transact");
        let cfg = self
            .sys
            .ovs_apply(&plan.ovs, base, comment)
            .map_err(|e| ("the OVS transaction".to_string(), e))?;
        kill_point("ovs-wait");
        let waited = self.sys.ovs_wait_applied(cfg);
        if mode == Mode::Revert {
            // The database holds the old rows again; an ovs-vswitchd that is down reads them when
            // it starts, so not hearing back is no failure of the revert.
            if let Err(e) = waited {
                (self.log)(&format!("warning: OVS rows restored, but {e}"));
            }
            return Ok(());
        }
        let wait_step = |e| ("waiting for ovs-vswitchd".to_string(), e);
        waited.map_err(wait_step)?;
        // Only the interfaces this apply added or changed, not the whole table; a new bridge's
        // own interface and ports included (a bridge vswitchd cannot create shows up there).
        let names: Vec<&str> = plan
            .ovs
            .iter()
            .flat_map(|c| match c {
                OvsChange::AddPort { port, .. } | OvsChange::UpdatePort { port, .. } => {
                    vec![port.name.as_str()]
                }
                OvsChange::AddBridge { bridge } => std::iter::once(bridge.name.as_str())
                    .chain(bridge.ports.iter().map(|p| p.name.as_str()))
                    .collect(),
                _ => Vec::new(),
            })
            .collect();
        let errors = self.sys.ovs_interface_errors(&names).map_err(wait_step)?;
        if !errors.is_empty() {
            return Err(("ovs-vswitchd".into(), SysError::Ovs(errors.join("; "))));
        }
        Ok(())
    }

    /// iptables, then ip6tables: each family's owned chains in one commit per table, the IPsec
    /// guards of removed tunnels kept until the tunnels are gone ([`Self::guards_driver`]).
    fn firewall_driver(&mut self, plan: &HostPlan) -> Result<(), StepError> {
        for (chains, what) in [(&plan.chains, "iptables"), (&plan.chains6, "ip6tables")] {
            let Some((want, now)) = chains else {
                continue;
            };
            kill_point(what);
            let first = keep_guards(want, now);
            if &first == now {
                continue;
            }
            self.sys
                .firewall_write(&first, now, false)
                .map_err(|e| (what.to_string(), e))?;
        }
        Ok(())
    }

    fn guards_driver(&mut self, plan: &HostPlan) -> Result<(), StepError> {
        for (chains, what) in [(&plan.chains, "iptables"), (&plan.chains6, "ip6tables")] {
            let Some((want, now)) = chains else {
                continue;
            };
            let first = keep_guards(want, now);
            if &first == want {
                continue;
            }
            self.sys
                .firewall_write(want, &first, false)
                .map_err(|e| (format!("{what} (IPsec guards of removed tunnels)"), e))?;
        }
        Ok(())
    }

    /// Writes (or restores) `system-id.conf`, which `ovs-ctl` reads at the next start.
    fn ovs_system_id_driver(&mut self, plan: &HostPlan) -> Result<(), StepError> {
        use crate::state::FileWant;
        let Some(want) = &plan.ovs_system_id else {
            return Ok(());
        };
        let step = |e| ("/etc/openvswitch/system-id.conf".to_string(), e);
        kill_point("ovs-system-id");
        let path = self.loc.paths.ovs_system_id_conf();
        match want {
            // Open vSwitch's package makes the directory; a test root may not have it.
            FileWant::Content(c) => match path.parent() {
                Some(dir) => self.sys.create_dir(dir, 0o755),
                None => Ok(()),
            }
            .and_then(|()| self.sys.write_file(&path, c, 0o644)),
            FileWant::Absent => self.sys.remove_file(&path),
            FileWant::Ignore => Ok(()),
        }
        .map_err(step)
    }

    /// Writes the wanted OVN IPsec files (each 0600: one is a key) into strongSwan's
    /// directories, which must be there: they are its package's (a host without them has no
    /// strongSwan for ovs-monitor-ipsec to configure), and a directory made here would be left
    /// behind by a rollback, the only thing not put back.
    fn ovn_ipsec_files_driver(&mut self, plan: &HostPlan) -> Result<(), StepError> {
        let Some(files) = plan.ovn_ipsec.as_ref().and_then(|c| c.files.as_ref()) else {
            return Ok(());
        };
        let step = |e| ("the OVN IPsec files".to_string(), e);
        kill_point("ovn-ipsec-files");
        for (path, data) in files.iter() {
            let file = self.loc.paths.ovn_ipsec_file(path);
            if let (Some(dir), Some(parent)) =
                (file.parent(), file.parent().and_then(|d| d.parent()))
            {
                let name = dir.file_name().unwrap_or_default().to_string_lossy();
                if !self
                    .sys
                    .list_dir(parent)
                    .map_err(step)?
                    .iter()
                    .any(|n| *n == name)
                {
                    return Err(step(SysError::file(
                        dir,
                        std::io::Error::new(
                            std::io::ErrorKind::NotFound,
                            "strongSwan's directory is missing: install openvswitch-ipsec (it \
                             brings strongSwan, which ovs-monitor-ipsec configures), then apply again",
                        ),
                    )));
                }
            }
            self.sys.write_file(&file, data, 0o600).map_err(step)?;
        }
        // A new or changed CA: told now that it is there (beside the old one, if any, until
        // the cleanup: chassis renewed with either are trusted meanwhile).
        if files.keys().any(|p| bundle::ovn::is_ipsec_ca_path(p)) {
            self.ipsec_reread_cacerts(plan).map_err(step)?;
        }
        Ok(())
    }

    /// When the plan writes, changes or removes the CA file: a running charon loads CA
    /// certificates only when it starts or is told to, and trusts no chassis without it. Only
    /// on the live host (not an image's root).
    fn ipsec_reread_cacerts(&mut self, plan: &HostPlan) -> Result<(), SysError> {
        let changed = plan.ovn_ipsec.as_ref().is_some_and(|c| c.ca_changed);
        if changed && self.loc.paths.root() == std::path::Path::new("/") {
            self.sys.ipsec_reread_cacerts()?;
        }
        Ok(())
    }

    /// Removes ovs-bundle's OVN IPsec files no longer wanted (never strongSwan's directories):
    /// a renewed credential's old file, all of them without IPsec, and what a write that was
    /// cut short left (key bytes, maybe).
    fn ovn_ipsec_cleanup_driver(&mut self, plan: &HostPlan) -> Result<(), StepError> {
        let Some(change) = &plan.ovn_ipsec else {
            return Ok(());
        };
        let step = |e| ("the OVN IPsec files".to_string(), e);
        for path in &change.remove {
            let file = self.loc.paths.ovn_ipsec_file(path);
            self.sys.remove_file(&file).map_err(step)?;
        }
        // A removed or replaced CA: told once it is gone.
        if change
            .remove
            .iter()
            .any(|p| bundle::ovn::is_ipsec_ca_path(p))
        {
            self.ipsec_reread_cacerts(plan).map_err(step)?;
        }
        Ok(())
    }

    fn sysctl_driver(&mut self, plan: &HostPlan) -> Result<(), StepError> {
        let step = |e| ("sysctl".to_string(), e);
        if plan.sysctl.is_some() || plan.ip_forward.is_some() || plan.ip6_forward.is_some() {
            kill_point("sysctl");
        }
        if let Some(dropin) = &plan.sysctl {
            let path = self.loc.paths.sysctl_dropin();
            match dropin {
                Some(data) => self.sys.write_file(&path, data, 0o644),
                None => self.sys.remove_file(&path),
            }
            .map_err(step)?;
        }
        if let Some(v) = &plan.ip_forward {
            let path = self.loc.ip_forward();
            self.sys
                .write_sysctl(&path, format!("{v}\n").as_bytes())
                .map_err(step)?;
        }
        if let Some(v) = &plan.ip6_forward {
            let path = self.loc.ip6_forward();
            self.sys
                .write_sysctl(&path, format!("{v}\n").as_bytes())
                .map_err(step)?;
        }
        Ok(())
    }

    fn interfaces_driver(&mut self, plan: &HostPlan, mode: Mode) -> Result<(), StepError> {
        let Some(change) = &plan.interfaces else {
            return Ok(());
        };
        let path = self.loc.paths.interfaces_file();
        let cycle_step = |e| ("ifdown/ifup".to_string(), e);
        kill_point("interfaces");
        for iface in &change.down {
            let down = self.sys.ifupdown(IfAction::Down, iface, &path);
            // Going back, an interface that will not go down must not stop the old file from
            // being put back.
            if mode == Mode::Apply {
                down.map_err(cycle_step)?;
            }
        }
        match &change.new {
            Some(data) => self.sys.write_file(&path, data, 0o644),
            None => self.sys.remove_file(&path),
        }
        .map_err(|e| ("the interfaces file".to_string(), e))?;
        kill_point("ifupdown");
        let mut failed = None;
        for iface in &change.up {
            if let Err(e) = self.sys.ifupdown(IfAction::Up, iface, &path) {
                if mode == Mode::Apply {
                    return Err(cycle_step(e));
                }
                failed.get_or_insert((format!("bringing {iface} back up"), e));
            }
        }
        failed.map_or(Ok(()), Err)
    }
}

impl Applier<'_> {
    /// dnsmasq: the configuration written, then the instance restarted (or stopped, then the
    /// configuration removed), only when the plan changes either.
    fn dhcp_driver(&mut self, plan: &HostPlan) -> Result<(), StepError> {
        let Some(change) = &plan.dhcp else {
            return Ok(());
        };
        kill_point("dhcp");
        let inst = self.loc.paths.dhcp_instance();
        let file_step = |e| ("the dnsmasq configuration".to_string(), e);
        let run_step = |e| ("dnsmasq".to_string(), e);
        match &change.conf {
            Some(data) => {
                self.sys
                    .write_file(&inst.conf, data, 0o644)
                    .map_err(file_step)?;
                self.sys.dhcp_restart(&inst, change.run).map_err(run_step)
            }
            None => {
                self.sys.dhcp_restart(&inst, false).map_err(run_step)?;
                self.sys.remove_file(&inst.conf).map_err(file_step)
            }
        }
    }
}

/// `want`, with the IPsec guard rules of `now` that `want` drops kept for now (in every guard
/// chain: a kept per-peer rule needs its type's chain to still drop).
pub(crate) fn keep_guards(want: &Chains, now: &Chains) -> Chains {
    let mut out = want.clone();
    for chain in GUARD_CHAINS {
        let (Some(w), Some(n)) = (want.chains.get(chain), now.chains.get(chain)) else {
            continue;
        };
        let mut both = w.clone();
        both.exists |= n.exists;
        both.jump |= n.jump;
        for r in &n.rules {
            if !both.rules.contains(r) {
                both.rules.push(r.clone());
            }
        }
        out.chains.insert(chain.to_string(), both);
    }
    out
}
