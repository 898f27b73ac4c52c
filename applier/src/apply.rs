//! Applying: verify, plan, record a marker, change the host step by step, and commit by switching
//! the current generation; or, if any step fails, restore the state recorded before the first
//! change. An interrupted apply is found by its marker and undone by the next run.

use crate::firewall::Chains;
use crate::ovs::{self, PlanError, Scope};
use crate::plan::{make_plan, read_current, Current, Desired, HostPlan, Locations};
use crate::store::{GenMeta, Marker, Snapshot, Store};
use crate::system::{SysError, System};
use bundle::{sha256_hex, TrustedKey, VerifiedBundle, VerifyError, VerifyOptions};
use std::fmt;

#[derive(Debug)]
pub enum ApplyError {
    /// The bundle was refused before anything changed.
    Verify(VerifyError),
    /// Refused before anything changed (serial, content, scope).
    Refused(String),
    /// The desired state conflicts with rows this tool does not own.
    Plan(Vec<PlanError>),
    /// Failed before the first change; nothing was changed.
    Unchanged(SysError),
    /// A step failed and the host was restored to its state before the apply.
    RolledBack { step: String, error: SysError },
    /// A step failed and restoring failed too.
    RollbackFailed {
        step: String,
        error: SysError,
        rollback: Vec<String>,
    },
}

impl ApplyError {
    pub fn exit_code(&self) -> u8 {
        match self {
            ApplyError::Verify(e) => e.exit_code(),
            ApplyError::Refused(_) => 15,
            ApplyError::RollbackFailed { .. } => crate::exit::ROLLBACK_FAILED,
            _ => crate::exit::FAILED,
        }
    }
}

impl fmt::Display for ApplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApplyError::Verify(e) => write!(f, "bundle refused: {e}"),
            ApplyError::Refused(e) => write!(f, "refused: {e}"),
            ApplyError::Plan(errors) => {
                let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
                write!(f, "cannot plan: {}; nothing was changed", list.join("; "))
            }
            ApplyError::Unchanged(e) => write!(f, "{e}; nothing was changed"),
            ApplyError::RolledBack { step, error } => write!(
                f,
                "{step} failed: {error}; the host was rolled back to its state before this apply"
            ),
            ApplyError::RollbackFailed {
                step,
                error,
                rollback,
            } => write!(
                f,
                "{step} failed: {error}; ROLLING BACK FAILED TOO: {}. The host may be half-applied: \
                 the next applier run retries the rollback",
                rollback.join("; ")
            ),
        }
    }
}

/// How to apply.
#[derive(Debug, Clone, Copy)]
pub struct ApplyOpts {
    pub scope: Scope,
    /// Cycle changed interfaces with ifdown/ifup (on demand; not at boot).
    pub cycle: bool,
    pub allow_downgrade: bool,
}

/// What an apply did.
#[derive(Debug)]
pub enum Outcome {
    /// The host already matched and the bundle is the current generation.
    Unchanged { generation: u64 },
    Applied {
        generation: u64,
        plan: Box<HostPlan>,
    },
}

pub struct Applier<'a> {
    pub sys: &'a mut dyn System,
    pub loc: Locations,
    pub store: Store,
    pub keys: Vec<TrustedKey>,
    pub revoked: Vec<bundle::KeyId>,
    pub host: String,
    pub now: u64,
    /// Progress messages for the log (never secrets).
    pub log: Box<dyn FnMut(&str) + 'a>,
}

impl Applier<'_> {
    fn verify(&self, bytes: &[u8], check_expiry: bool) -> Result<VerifiedBundle, VerifyError> {
        let opts = VerifyOptions {
            host: Some(self.host.clone()),
            now: check_expiry.then_some(self.now),
            revoked: self.revoked.clone(),
            ..VerifyOptions::default()
        };
        bundle::verify_bundle(bytes, &self.keys, &opts)
    }

    /// The full desired state of generation `n` (composing `--gre-only` generations on their base).
    pub fn generation_desired(&mut self, n: u64) -> Result<(Desired, GenMeta), ApplyError> {
        let meta = self
            .store
            .meta(self.sys, n)
            .map_err(ApplyError::Unchanged)?;
        let bytes = self
            .store
            .bundle(self.sys, n)
            .map_err(ApplyError::Unchanged)?;
        if sha256_hex(&bytes) != meta.sha256 {
            return Err(ApplyError::Refused(format!(
                "generation {n}'s bundle does not match its recorded hash: the state directory was altered"
            )));
        }
        let verified = self.verify(&bytes, false).map_err(ApplyError::Verify)?;
        if verified.manifest.expires.is_some_and(|e| self.now >= e) {
            (self.log)(&format!(
                "warning: generation {n}'s bundle has expired; restoring it anyway so the host keeps its network. Deliver a new bundle."
            ));
        }
        let desired = Desired::from_bundle(&verified).map_err(ApplyError::Refused)?;
        let desired = match meta.gre_only_base {
            Some(base) if base < n => {
                let (base, _) = self.generation_desired(base)?;
                Desired::compose_gre_only(&base, &desired)
            }
            _ => desired,
        };
        Ok((desired, meta))
    }

    /// Finishes or undoes an apply that was interrupted (crash, power loss, SIGKILL).
    pub fn recover(&mut self) -> Result<Option<String>, ApplyError> {
        let Some(marker) = self.store.marker(self.sys).map_err(ApplyError::Unchanged)? else {
            return Ok(None);
        };
        let current = self
            .store
            .current(self.sys)
            .map_err(ApplyError::Unchanged)?;
        if current == Some(marker.target) {
            self.store
                .remove_marker(self.sys)
                .map_err(ApplyError::Unchanged)?;
            return Ok(Some(format!(
                "an interrupted apply of generation {} had completed; cleaned up",
                marker.target
            )));
        }
        let errors = self.restore(&marker.before, &marker.cycled);
        if !errors.is_empty() {
            return Err(ApplyError::RollbackFailed {
                step: format!(
                    "recovering from the interrupted apply of generation {}",
                    marker.target
                ),
                error: SysError::Injected("interrupted".into()),
                rollback: errors,
            });
        }
        let _ = self.store.remove_generation(self.sys, marker.target);
        self.store
            .remove_marker(self.sys)
            .map_err(ApplyError::Unchanged)?;
        Ok(Some(format!(
            "undid an interrupted apply of generation {}; the host is back on {}",
            marker.target,
            marker
                .previous
                .map_or("its state before it".to_string(), |p| format!(
                    "generation {p}"
                ))
        )))
    }

    /// What applying `bytes` would change, without changing anything.
    pub fn plan_bundle(&mut self, bytes: &[u8], opts: ApplyOpts) -> Result<HostPlan, ApplyError> {
        let verified = self.verify(bytes, true).map_err(ApplyError::Verify)?;
        let desired = Desired::from_bundle(&verified).map_err(ApplyError::Refused)?;
        let current =
            read_current(self.sys, &self.loc, opts.scope).map_err(ApplyError::Unchanged)?;
        make_plan(&desired, &current, opts.scope, "ovs-bundle plan").map_err(ApplyError::Plan)
    }

    /// Drift between the host and its current generation.
    pub fn status(&mut self) -> Result<(Option<u64>, HostPlan), ApplyError> {
        let Some(n) = self
            .store
            .current(self.sys)
            .map_err(ApplyError::Unchanged)?
        else {
            return Ok((None, HostPlan::default()));
        };
        let (desired, _) = self.generation_desired(n)?;
        let current =
            read_current(self.sys, &self.loc, Scope::Full).map_err(ApplyError::Unchanged)?;
        let plan = make_plan(&desired, &current, Scope::Full, "").map_err(ApplyError::Plan)?;
        Ok((Some(n), plan))
    }

    /// Verifies `bytes` and makes it the host's state and a new generation.
    pub fn apply_bundle(&mut self, bytes: &[u8], opts: ApplyOpts) -> Result<Outcome, ApplyError> {
        let verified = self.verify(bytes, true).map_err(ApplyError::Verify)?;
        let serial = verified.manifest.serial;
        let current_gen = self
            .store
            .current(self.sys)
            .map_err(ApplyError::Unchanged)?;
        let sha = sha256_hex(bytes);
        self.check_serial(serial, &sha, opts.allow_downgrade)?;
        let bundle_desired = Desired::from_bundle(&verified).map_err(ApplyError::Refused)?;
        let (desired, base) = match opts.scope {
            Scope::Full => (bundle_desired, None),
            Scope::GreOnly => {
                let Some(cur) = current_gen else {
                    return Err(ApplyError::Refused(
                        "--gre-only needs a generation to keep the rest from; run a full apply first".into(),
                    ));
                };
                let (base, _) = self.generation_desired(cur)?;
                (Desired::compose_gre_only(&base, &bundle_desired), Some(cur))
            }
        };
        if let Some(cur) = current_gen {
            let meta = self
                .store
                .meta(self.sys, cur)
                .map_err(ApplyError::Unchanged)?;
            if meta.sha256 == sha
                && meta.gre_only_base == base.filter(|_| opts.scope == Scope::GreOnly)
            {
                let current =
                    read_current(self.sys, &self.loc, opts.scope).map_err(ApplyError::Unchanged)?;
                let plan =
                    make_plan(&desired, &current, opts.scope, "").map_err(ApplyError::Plan)?;
                if plan.is_empty() {
                    return Ok(Outcome::Unchanged { generation: cur });
                }
            }
        }
        let target = self.store.next_number();
        let meta = GenMeta {
            host: verified.manifest.host.clone(),
            serial,
            sha256: sha,
            applied_at: self.now,
            gre_only_base: base,
        };
        let comment = format!(
            "ovs-bundle: host {} serial {serial} generation {target}",
            self.host
        );
        let plan = self.transition(
            &desired,
            opts,
            target,
            current_gen,
            &comment,
            Some((bytes, &meta)),
        )?;
        Ok(Outcome::Applied {
            generation: target,
            plan: Box::new(plan),
        })
    }

    /// Makes generation `n` the host's state again (boot, rollback).
    pub fn apply_generation(&mut self, n: u64, opts: ApplyOpts) -> Result<Outcome, ApplyError> {
        let (desired, meta) = self.generation_desired(n)?;
        let current_gen = self
            .store
            .current(self.sys)
            .map_err(ApplyError::Unchanged)?;
        let comment = format!(
            "ovs-bundle: host {} serial {} generation {n}",
            self.host, meta.serial
        );
        let plan = self.transition(
            &desired,
            ApplyOpts {
                scope: Scope::Full,
                ..opts
            },
            n,
            current_gen,
            &comment,
            None,
        )?;
        Ok(Outcome::Applied {
            generation: n,
            plan: Box::new(plan),
        })
    }

    fn check_serial(
        &mut self,
        serial: u64,
        sha: &str,
        allow_downgrade: bool,
    ) -> Result<(), ApplyError> {
        let Some(highest) = self
            .store
            .highest_serial(self.sys)
            .map_err(ApplyError::Unchanged)?
        else {
            return Ok(());
        };
        if serial < highest {
            if !allow_downgrade {
                return Err(ApplyError::Refused(format!(
                    "bundle serial {serial} is lower than {highest}, the highest applied here (a replayed old bundle?); \
                     --allow-downgrade overrides"
                )));
            }
            (self.log)(&format!("WARNING: downgrading to serial {serial} below {highest}, as --allow-downgrade asks"));
        }
        for n in self.store.generations() {
            let meta = self
                .store
                .meta(self.sys, n)
                .map_err(ApplyError::Unchanged)?;
            if meta.serial == serial && meta.sha256 != sha {
                return Err(ApplyError::Refused(format!(
                    "generation {n} has serial {serial} with different content; a new bundle needs a new serial"
                )));
            }
        }
        Ok(())
    }

    /// Marker, generation files, host changes, commit; restore on any failure.
    fn transition(
        &mut self,
        desired: &Desired,
        opts: ApplyOpts,
        target: u64,
        previous: Option<u64>,
        comment: &str,
        new_generation: Option<(&[u8], &GenMeta)>,
    ) -> Result<HostPlan, ApplyError> {
        let current =
            read_current(self.sys, &self.loc, opts.scope).map_err(ApplyError::Unchanged)?;
        let mut plan =
            make_plan(desired, &current, opts.scope, comment).map_err(ApplyError::Plan)?;
        if !opts.cycle {
            plan.cycle.clear();
        }
        if plan.is_empty() && new_generation.is_none() {
            if previous != Some(target) {
                self.store
                    .switch(self.sys, target, desired.serial)
                    .map_err(ApplyError::Unchanged)?;
            }
            return Ok(plan);
        }
        if let Some(input) = &plan.firewall_input {
            self.sys
                .iptables_restore(input, true)
                .map_err(ApplyError::Unchanged)?;
        }
        if !plan.ovs.is_empty() && current.live.cur_cfg < current.live.next_cfg {
            // ovs-vswitchd has not applied the last change yet: it is stopped or stuck, and a
            // change now could not be confirmed.
            return Err(ApplyError::Unchanged(SysError::Ovs(format!(
                "ovs-vswitchd has not applied configuration {} (it reports {}): is ovs-vswitchd running?",
                current.live.next_cfg, current.live.cur_cfg
            ))));
        }
        // Restoring needs the full "before" even for a GRE-only apply.
        let before = if opts.scope == Scope::GreOnly {
            let files =
                crate::plan::read_host_files(self.sys, &self.loc).map_err(ApplyError::Unchanged)?;
            Snapshot {
                ovs: current.live.owned_state(),
                ..files
            }
        } else {
            current.snapshot()
        };
        let marker = Marker {
            target,
            previous,
            before,
            cycled: plan.cycle.clone(),
        };
        self.store
            .write_marker(self.sys, &marker)
            .map_err(ApplyError::Unchanged)?;
        let result = (|| -> Result<(), (String, SysError)> {
            if let Some((bytes, meta)) = new_generation {
                self.sys
                    .step("generation")
                    .map_err(|e| ("recording the generation".to_string(), e))?;
                self.store
                    .write_generation(self.sys, target, bytes, meta)
                    .map_err(|e| ("recording the generation".to_string(), e))?;
            }
            self.execute(&plan, &current)?;
            self.sys
                .step("switch")
                .map_err(|e| ("switching generations".to_string(), e))?;
            self.store
                .switch(self.sys, target, desired.serial)
                .map_err(|e| ("switching generations".to_string(), e))
        })();
        if let Err((step, error)) = result {
            let rollback = self.restore(&marker.before, &marker.cycled);
            if !rollback.is_empty() {
                return Err(ApplyError::RollbackFailed {
                    step,
                    error,
                    rollback,
                });
            }
            if new_generation.is_some() {
                let _ = self.store.remove_generation(self.sys, target);
            }
            let _ = self.store.remove_marker(self.sys);
            return Err(ApplyError::RolledBack { step, error });
        }
        if let Err(e) = self.store.remove_marker(self.sys) {
            // The switch happened: the next run sees current == target and only cleans up.
            (self.log)(&format!(
                "warning: could not remove the in-progress marker: {e}"
            ));
        }
        Ok(plan)
    }

    fn execute(&mut self, plan: &HostPlan, current: &Current) -> Result<(), (String, SysError)> {
        let ovs_step = |e| ("the OVS transaction".to_string(), e);
        if !plan.ovs.is_empty() {
            self.sys.step("ovs-transact").map_err(ovs_step)?;
            let results = self.sys.ovs_transact(&plan.ovs_ops).map_err(ovs_step)?;
            let cfg = ovs::committed_cfg(&results).unwrap_or(current.live.next_cfg + 1);
            let wait_step = |e| ("waiting for ovs-vswitchd".to_string(), e);
            self.sys.step("ovs-wait").map_err(wait_step)?;
            self.sys.ovs_wait_applied(cfg).map_err(wait_step)?;
            let names: Vec<&str> = plan
                .ovs
                .iter()
                .filter_map(|c| match c {
                    ovs::OvsChange::AddPort { port, .. }
                    | ovs::OvsChange::UpdatePort { port, .. } => Some(port.name.as_str()),
                    _ => None,
                })
                .collect();
            // Only the interfaces this apply added or changed, not the whole table.
            let results = self
                .sys
                .ovs_transact(&ovs::error_ops(&names))
                .map_err(wait_step)?;
            let errors = ovs::interface_errors(&names, &results);
            if !errors.is_empty() {
                return Err(("ovs-vswitchd".into(), SysError::Ovs(errors.join("; "))));
            }
        }
        if let Some(input) = &plan.firewall_input {
            let fw = |e| ("iptables".to_string(), e);
            self.sys.step("iptables").map_err(fw)?;
            self.sys.iptables_restore(input, false).map_err(fw)?;
        }
        let sysctl_step = |e| ("sysctl".to_string(), e);
        if plan.sysctl.is_some() || plan.ip_forward.is_some() {
            self.sys.step("sysctl").map_err(sysctl_step)?;
        }
        if let Some(dropin) = &plan.sysctl {
            let path = self.loc.paths.sysctl_dropin();
            match dropin {
                Some(data) => self.sys.write_file(&path, data, 0o644),
                None => self.sys.remove_file(&path),
            }
            .map_err(sysctl_step)?;
        }
        if let Some(v) = &plan.ip_forward {
            let path = self.loc.ip_forward();
            self.sys
                .write_sysctl(&path, format!("{v}\n").as_bytes())
                .map_err(sysctl_step)?;
        }
        if let Some((data, _)) = &plan.interfaces {
            let path = self.loc.paths.interfaces_file();
            let step = |e| ("the interfaces file".to_string(), e);
            self.sys.step("interfaces").map_err(step)?;
            let cycle_step = |e| ("ifdown/ifup".to_string(), e);
            for iface in &plan.cycle {
                if current
                    .interfaces
                    .as_deref()
                    .is_some_and(|old| crate::plan::changed_stanzas(old, b"").contains(iface))
                {
                    self.sys.ifupdown(false, iface, &path).map_err(cycle_step)?;
                }
            }
            self.sys.write_file(&path, data, 0o644).map_err(step)?;
            self.sys.step("ifupdown").map_err(cycle_step)?;
            for iface in &plan.cycle {
                if crate::plan::changed_stanzas(b"", data).contains(iface) {
                    self.sys.ifupdown(true, iface, &path).map_err(cycle_step)?;
                }
            }
        }
        Ok(())
    }

    /// Puts back what `before` recorded; returns what could not be restored.
    fn restore(&mut self, before: &Snapshot, cycled: &[String]) -> Vec<String> {
        let mut errors = Vec::new();
        match self.sys.ovs_read() {
            Ok(live) => match ovs::plan(&before.ovs, &live, Scope::Full) {
                Ok(changes) if changes.is_empty() => {}
                Ok(changes) => {
                    let ops = ovs::transaction(&changes, &live, "ovs-bundle: rollback");
                    match self.sys.ovs_transact(&ops) {
                        Ok(results) => {
                            // The database holds the old rows again; an ovs-vswitchd that is
                            // down reads them when it starts, so not hearing back is no failure.
                            if let Some(cfg) = ovs::committed_cfg(&results) {
                                if let Err(e) = self.sys.ovs_wait_applied(cfg) {
                                    (self.log)(&format!("warning: OVS rows restored, but {e}"));
                                }
                            }
                        }
                        Err(e) => errors.push(format!("restoring OVS rows: {e}")),
                    }
                }
                Err(e) => errors.push(format!(
                    "restoring OVS rows: {}",
                    e.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ")
                )),
            },
            Err(e) => errors.push(format!("reading OVS to restore it: {e}")),
        }
        match self.sys.iptables_save() {
            Ok(save) => {
                let now = Chains::from_save(&save);
                if now != before.chains {
                    if let Err(e) = self
                        .sys
                        .iptables_restore(&before.chains.restore_input(&now), false)
                    {
                        errors.push(format!("restoring iptables chains: {e}"));
                    }
                }
            }
            Err(e) => errors.push(format!("reading iptables to restore it: {e}")),
        }
        if let Some(old) = &before.ip_forward {
            let path = self.loc.ip_forward();
            match self.sys.read_file(&path) {
                Ok(Some(now)) if &now == old => {}
                _ => {
                    if let Err(e) = self.sys.write_sysctl(&path, old) {
                        errors.push(format!("restoring {}: {e}", path.display()));
                    }
                }
            }
        }
        let files = [
            (self.loc.paths.sysctl_dropin(), &before.sysctl, false),
            (self.loc.paths.interfaces_file(), &before.interfaces, true),
        ];
        for (path, old, is_interfaces) in files {
            let now = match self.sys.read_file(&path) {
                Ok(now) => now,
                Err(e) => {
                    errors.push(format!("reading {}: {e}", path.display()));
                    continue;
                }
            };
            if &now == old {
                continue;
            }
            if is_interfaces {
                for iface in cycled {
                    let _ = self.sys.ifupdown(false, iface, &path);
                }
            }
            let r = match old {
                Some(data) => self.sys.write_file(&path, data, 0o644),
                None => self.sys.remove_file(&path),
            };
            if let Err(e) = r {
                errors.push(format!("restoring {}: {e}", path.display()));
            }
            if is_interfaces && old.is_some() {
                for iface in cycled {
                    if let Err(e) = self.sys.ifupdown(true, iface, &path) {
                        errors.push(format!("bringing {iface} back up: {e}"));
                    }
                }
            }
        }
        errors
    }
}
