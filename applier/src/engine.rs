//! The engine: verify, plan, record a marker, change the host, verify the result, and commit by
//! switching the current generation. If any step fails, the host goes back to the state recorded
//! before the first change; an interrupted apply is found by its marker and undone by the next run.
//!
//! Going back is not a second code path: it is a plan from the host as it is now to the recorded
//! [`HostState`], run by the same executor (`crate::executor`) in [`Mode::Revert`], which does
//! every step it can instead of stopping at the first failure.
//!
//! Over 500 lines: the transaction's steps (verify, prepare, transition, verify read, revert,
//! recovery, the forwarding and GC rules) are methods of one `Applier` and share its state; the
//! executor and the error type already live in `executor.rs` and `error.rs`. Splitting the rest
//! by size would separate a step from the undo it pairs with.

pub use crate::error::ApplyError;
use crate::executor::{kill_point, Mode, StepError};
use crate::ovs::{Live, Scope};
use crate::plan::{make_plan, HostPlan, InterfacesChange};
use crate::state::{read_rest, Current, HostState, Locations};
use crate::store::{GenMeta, Marker, Store};
use crate::system::{SysError, System};
use bundle::firewall::Family;
use bundle::{sha256_hex, TrustedKey, VerifiedBundle, VerifyError, VerifyOptions};

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

impl Outcome {
    pub fn generation(&self) -> u64 {
        match self {
            Outcome::Unchanged { generation } | Outcome::Applied { generation, .. } => *generation,
        }
    }
}

/// A verified bundle, ready to apply.
struct Prepared {
    meta: GenMeta,
    desired: HostState,
    current_gen: Option<u64>,
}

/// The keys bundles are checked against.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    pub keys: Vec<TrustedKey>,
    pub revoked: Vec<bundle::KeyId>,
}

pub struct Applier<'a> {
    pub sys: &'a mut dyn System,
    pub loc: Locations,
    pub store: Store,
    pub trust: Trust,
    pub host: String,
    pub now: u64,
    /// Progress messages for the log (never secrets).
    pub log: Box<dyn FnMut(&str) + 'a>,
    /// A bundle's OVN northbound state may be skipped, with a warning, where there is no
    /// northbound database: at boot (ovn-central starts after the network, after us, and its
    /// database keeps the rows of the last apply by itself). Otherwise that is a refusal.
    pub nb_optional: bool,
}

impl Applier<'_> {
    pub(crate) fn verify(
        &self,
        bytes: &[u8],
        check_expiry: bool,
    ) -> Result<VerifiedBundle, VerifyError> {
        let opts = VerifyOptions {
            host: Some(self.host.clone()),
            now: check_expiry.then_some(self.now),
            revoked: self.trust.revoked.clone(),
            ..VerifyOptions::default()
        };
        bundle::verify_bundle(bytes, &self.trust.keys, &opts)
    }

    /// The full desired state of generation `n` (composing `--gre-only` generations on their base).
    pub fn generation_desired(&mut self, n: u64) -> Result<(HostState, GenMeta), ApplyError> {
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
        let desired = HostState::from_bundle(&verified).map_err(ApplyError::Refused)?;
        let desired = match meta.gre_only_base {
            Some(base) if base < n => self.generation_desired(base)?.0.with_gre_of(&desired),
            _ => desired,
        };
        Ok((desired, meta))
    }

    /// The key that signed generation `n`'s bundle (verified again, expiry aside).
    pub fn generation_signer(&mut self, n: u64) -> Result<bundle::KeyId, ApplyError> {
        let bytes = self
            .store
            .bundle(self.sys, n)
            .map_err(ApplyError::Unchanged)?;
        Ok(self
            .verify(&bytes, false)
            .map_err(ApplyError::Verify)?
            .signed_by)
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
        // A restore of the generation that was current already (boot, `rollback` to itself):
        // `current` says nothing about how far it got, so it runs again.
        if marker.previous == Some(marker.target) && !marker.created {
            self.store
                .remove_marker(self.sys)
                .map_err(ApplyError::Unchanged)?;
            let opts = ApplyOpts {
                scope: Scope::Full,
                cycle: !marker.cycled.is_empty(),
                allow_downgrade: true,
            };
            self.apply_generation(marker.target, opts)?;
            return Ok(Some(format!(
                "an interrupted restore of generation {} was run again",
                marker.target
            )));
        }
        if current == Some(marker.target) {
            self.store
                .remove_marker(self.sys)
                .map_err(ApplyError::Unchanged)?;
            return Ok(Some(format!(
                "an interrupted apply of generation {} had completed; cleaned up",
                marker.target
            )));
        }
        let rollback = self.revert(&marker);
        if !rollback.is_empty() {
            return Err(ApplyError::RecoveryFailed {
                target: marker.target,
                rollback,
            });
        }
        self.forget(&marker);
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

    /// What applying `bytes` would change, without changing anything: the same checks and
    /// refusals as [`Applier::apply_bundle`], then the plan.
    pub fn plan_bundle(&mut self, bytes: &[u8], opts: ApplyOpts) -> Result<HostPlan, ApplyError> {
        let p = self.prepare(bytes, opts)?;
        let current =
            Current::read(self.sys, &self.loc, opts.scope).map_err(ApplyError::Unchanged)?;
        let mut plan = make_plan(&p.desired, &current, opts.scope).map_err(ApplyError::Plan)?;
        self.review_cycling(&mut plan, &p.desired);
        Ok(plan)
    }

    /// What must not be cycled, and what is dangerous to: an interface the host's own file
    /// configured and the new file drops stays up unless a generation of ours defined it; one
    /// that carries the default route is warned about.
    fn review_cycling(&mut self, plan: &mut HostPlan, desired: &HostState) {
        let Some(change) = &plan.interfaces else {
            return;
        };
        let new = bundle::interfaces::stanzas(change.new.as_deref().unwrap_or_default());
        if change.down.iter().any(|n| !new.contains_key(n)) {
            let current = self.store.current(self.sys).ok().flatten();
            let ours: Vec<String> = current
                .and_then(|n| self.generation_desired(n).ok())
                .and_then(|(d, _)| d.interfaces)
                .map(|f| bundle::interfaces::stanzas(&f).into_keys().collect())
                .unwrap_or_default();
            plan.keep_foreign_up(&ours);
        }
        if !plan.cycle.is_empty() {
            if let Ok(Some(route)) = self.sys.read_file(&self.loc.proc_dir.join("net/route")) {
                // Without IPv6 in the kernel there is no table: no IPv6 warnings, nothing else.
                let route6 = self
                    .sys
                    .read_file(&self.loc.proc_dir.join("net/ipv6_route"))
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                let peers: Vec<std::net::IpAddr> = desired
                    .ovs
                    .ports()
                    .filter_map(|(_, p)| p.interface.options.get("remote_ip")?.parse().ok())
                    .collect();
                plan.warn_cycled_routes(
                    &String::from_utf8_lossy(&route),
                    &String::from_utf8_lossy(&route6),
                    &peers,
                );
            }
        }
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
            Current::read(self.sys, &self.loc, Scope::Full).map_err(ApplyError::Unchanged)?;
        let plan = make_plan(&desired, &current, Scope::Full).map_err(ApplyError::Plan)?;
        Ok((Some(n), plan))
    }

    /// Everything an apply decides before it looks at the host: verification, the serial
    /// checks, the desired state (composed on the current generation for `--gre-only`).
    fn prepare(&mut self, bytes: &[u8], opts: ApplyOpts) -> Result<Prepared, ApplyError> {
        let verified = self.verify(bytes, true).map_err(ApplyError::Verify)?;
        let serial = verified.manifest.serial;
        let current_gen = self
            .store
            .current(self.sys)
            .map_err(ApplyError::Unchanged)?;
        let sha = sha256_hex(bytes);
        self.check_serial(serial, &sha, opts.allow_downgrade)?;
        let bundle_desired = HostState::from_bundle(&verified).map_err(ApplyError::Refused)?;
        let (mut desired, base) = match opts.scope {
            Scope::Full => (bundle_desired, None),
            Scope::GreOnly => {
                let Some(cur) = current_gen else {
                    return Err(ApplyError::Refused(
                        "--gre-only needs a generation to keep the rest from; run a full apply first".into(),
                    ));
                };
                let (base, _) = self.generation_desired(cur)?;
                (base.with_gre_of(&bundle_desired), Some(cur))
            }
        };
        let (ip_forward_before, ip6_forward_before) = self.forwarding(&mut desired, current_gen)?;
        Ok(Prepared {
            meta: GenMeta {
                host: verified.manifest.host.clone(),
                serial,
                sha256: sha,
                applied_at: self.now,
                gre_only_base: base,
                ip_forward_before,
                ip6_forward_before,
            },
            desired,
            current_gen,
        })
    }

    /// Verifies `bytes` and makes it the host's state and a new generation.
    pub fn apply_bundle(&mut self, bytes: &[u8], opts: ApplyOpts) -> Result<Outcome, ApplyError> {
        // Every apply reads the host before it changes anything: ovsdb-server and iptables-save
        // produce the state while the bundle is verified (a no-op re-apply spent most of its
        // time waiting for them, one after the other). A refusal before the read drops it.
        self.sys.read_begin();
        let outcome = self.apply_bundle_now(bytes, opts);
        self.sys.read_cancel();
        outcome
    }

    fn apply_bundle_now(&mut self, bytes: &[u8], opts: ApplyOpts) -> Result<Outcome, ApplyError> {
        let Prepared {
            meta,
            desired,
            current_gen,
        } = self.prepare(bytes, opts)?;
        if let Some(cur) = current_gen {
            let recorded = self
                .store
                .meta(self.sys, cur)
                .map_err(ApplyError::Unchanged)?;
            if recorded.sha256 == meta.sha256 && recorded.gre_only_base == meta.gre_only_base {
                let current = Current::read(self.sys, &self.loc, opts.scope)
                    .map_err(ApplyError::Unchanged)?;
                let plan = make_plan(&desired, &current, opts.scope).map_err(ApplyError::Plan)?;
                if plan.is_empty() {
                    drop_beside((current, desired, plan));
                    return Ok(Outcome::Unchanged { generation: cur });
                }
            }
        }
        let target = self
            .store
            .next_number(self.sys)
            .map_err(ApplyError::Unchanged)?;
        let plan = self.transition(&desired, opts, target, current_gen, Some((bytes, &meta)))?;
        // Old generations hold old PSKs: keep a bounded number.
        match self.gc(crate::store::DEFAULT_KEEP) {
            Ok(gone) if !gone.is_empty() => (self.log)(&format!(
                "deleted old generation(s) {gone:?} (keeping {})",
                crate::store::DEFAULT_KEEP
            )),
            Ok(_) => {}
            Err(e) => (self.log)(&format!("warning: could not delete old generations: {e}")),
        }
        Ok(Outcome::Applied {
            generation: target,
            plan: Box::new(plan),
        })
    }

    /// Makes generation `n` the host's state again (boot, rollback).
    pub fn apply_generation(&mut self, n: u64, opts: ApplyOpts) -> Result<Outcome, ApplyError> {
        let (mut desired, _) = self.generation_desired(n)?;
        // A damaged `current` must not stop a restore: making `n` current repairs it.
        let current_gen = self.store.current(self.sys).unwrap_or_else(|e| {
            (self.log)(&format!("WARNING: {e}; making generation {n} current"));
            None
        });
        self.forwarding(&mut desired, current_gen)?;
        let opts = ApplyOpts {
            scope: Scope::Full,
            ..opts
        };
        let plan = self.transition(&desired, opts, n, current_gen, None)?;
        Ok(Outcome::Applied {
            generation: n,
            plan: Box::new(plan),
        })
    }

    /// IPv4 and IPv6 forwarding belong to the host until a forwarder needs them. While one does,
    /// the value found before ovs-bundle first set it is kept with each generation (returned
    /// here, IPv4 then IPv6, for the new generation's meta); leaving a generation that kept it
    /// for one that wants no forwarding of that family puts it back (set in `desired`).
    fn forwarding(
        &mut self,
        desired: &mut HostState,
        leaving: Option<u64>,
    ) -> Result<(Option<String>, Option<String>), ApplyError> {
        let (kept4, kept6) = match leaving.map(|n| self.store.meta(self.sys, n)) {
            Some(Ok(meta)) => (meta.ip_forward_before, meta.ip6_forward_before),
            Some(Err(e)) => {
                (self.log)(&format!(
                    "WARNING: {e}; the forwarding values it kept are lost"
                ));
                (None, None)
            }
            None => (None, None),
        };
        let path4 = self.loc.ip_forward();
        let path6 = self.loc.ip6_forward();
        let v4 = self.keep_before(&mut desired.ip_forward, kept4, &path4)?;
        let v6 = self.keep_before(&mut desired.ip6_forward, kept6, &path6)?;
        Ok((v4, v6))
    }

    /// One family of [`Self::forwarding`]: `wanted` is the bundle's value, `kept` the value
    /// from before that the generation being left kept, `path` the `/proc` file.
    fn keep_before(
        &mut self,
        wanted: &mut Option<String>,
        kept: Option<String>,
        path: &std::path::Path,
    ) -> Result<Option<String>, ApplyError> {
        if wanted.is_none() {
            *wanted = kept;
            return Ok(None);
        }
        if kept.is_some() {
            return Ok(kept);
        }
        let now = self.sys.read_file(path).map_err(ApplyError::Unchanged)?;
        Ok(now.map(|v| String::from_utf8_lossy(&v).trim().to_string()))
    }

    pub(crate) fn check_serial(
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
        for n in self
            .store
            .generations(self.sys)
            .map_err(ApplyError::Unchanged)?
        {
            // One damaged old generation must not block every install.
            let meta = match self.store.meta(self.sys, n) {
                Ok(m) => m,
                Err(e) => {
                    (self.log)(&format!("warning: skipping generation {n}: {e}"));
                    continue;
                }
            };
            if meta.serial == serial && meta.sha256 != sha {
                return Err(ApplyError::Refused(format!(
                    "generation {n} has serial {serial} with different content; a new bundle needs a new serial"
                )));
            }
        }
        Ok(())
    }

    /// Marker, generation files, host changes, verification, commit; revert on any failure.
    fn transition(
        &mut self,
        desired: &HostState,
        opts: ApplyOpts,
        target: u64,
        previous: Option<u64>,
        new_generation: Option<(&[u8], &GenMeta)>,
    ) -> Result<HostPlan, ApplyError> {
        let current =
            Current::read(self.sys, &self.loc, opts.scope).map_err(ApplyError::Unchanged)?;
        let mut plan = make_plan(desired, &current, opts.scope).map_err(ApplyError::Plan)?;
        if plan.nb_missing && !self.nb_optional {
            return Err(ApplyError::Plan(vec![crate::ovs::PlanError::NoNorthbound]));
        }
        if plan.nb_missing && !opts.cycle {
            // Said below with the other warnings when cycling; boot says it here.
            (self.log)(&format!("WARNING: {}", crate::ovs::PlanError::NoNorthbound));
        }
        if opts.cycle {
            self.review_cycling(&mut plan, desired);
            for w in &plan.warnings {
                (self.log)(&format!("WARNING: {w}"));
            }
        } else {
            plan = plan.without_cycling();
        }
        if plan.is_empty() && new_generation.is_none() {
            if previous != Some(target) {
                let serial = self.serial_of(target)?;
                self.store
                    .switch(self.sys, target, serial)
                    .map_err(ApplyError::Unchanged)?;
            }
            return Ok(plan);
        }
        // Both families are tried before anything changes: a rule ip6tables refuses (or no
        // ip6tables at all) stops the apply here, not after the IPv4 half was applied.
        for (want, now) in [&plan.chains, &plan.chains6].into_iter().flatten() {
            self.sys
                .firewall_write(want, now, true)
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
        // Going back needs the full "before", even for a GRE-only apply.
        let before = match opts.scope {
            Scope::GreOnly => HostState {
                ovs: current.live.owned_state(),
                ipsec_skb_mark: crate::state::owned_skb_mark(&current.live),
                ovn_chassis: crate::state::owned_ovn_chassis(&current.live),
                ovn_chassis_foreign: crate::state::foreign_ovn_chassis(&current.live),
                ovn_ipsec_keys: crate::state::owned_ovn_keys(
                    crate::ovs::OvnKeys::Ipsec,
                    &current.live,
                ),
                ..read_rest(self.sys, &self.loc).map_err(ApplyError::Unchanged)?
            },
            Scope::Full => current.snapshot(),
        };
        let marker = Marker {
            target,
            previous,
            before,
            cycled: plan.cycle.clone(),
            created: new_generation.is_some(),
            highest_before: self
                .store
                .highest_serial(self.sys)
                .map_err(ApplyError::Unchanged)?,
        };
        self.store
            .write_marker(self.sys, &marker)
            .map_err(ApplyError::Unchanged)?;
        let serial = match new_generation {
            Some((_, meta)) => meta.serial,
            None => self.serial_of(target)?,
        };
        let comment = format!(
            "ovs-bundle: host {} serial {serial} generation {target}",
            self.host
        );
        let result = (|| -> Result<(), StepError> {
            if let Some((bytes, meta)) = new_generation {
                kill_point("generation");
                self.store
                    .write_generation(self.sys, target, bytes, meta)
                    .map_err(|e| ("recording the generation".to_string(), e))?;
            }
            self.execute(&plan, &current.live, &comment, Mode::Apply)
                .map_err(|mut errors| errors.remove(0))?;
            self.verify_result(desired, opts.scope)?;
            kill_point("switch");
            self.store
                .switch(self.sys, target, serial)
                .map_err(|e| ("switching generations".to_string(), e))
        })();
        if let Err((step, error)) = result {
            let rollback = self.revert(&marker);
            if !rollback.is_empty() {
                return Err(ApplyError::RollbackFailed {
                    step,
                    error,
                    rollback,
                });
            }
            self.forget(&marker);
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

    /// Deletes all but the newest `keep` generations, keeping the current one, every
    /// generation a `--gre-only` current one builds on, and the one a pending try reverts to. Returns what it deleted.
    pub fn gc(&mut self, keep: usize) -> Result<Vec<u64>, ApplyError> {
        let mut protect = Vec::new();
        let mut next = self
            .store
            .current(self.sys)
            .map_err(ApplyError::Unchanged)?;
        while let Some(n) = next {
            if protect.contains(&n) {
                break;
            }
            protect.push(n);
            next = self
                .store
                .meta(self.sys, n)
                .map_err(ApplyError::Unchanged)?
                .gre_only_base;
        }
        // A pending try goes back to its previous generation: that one must stay.
        if let Some(t) = self
            .store
            .pending_try(self.sys)
            .map_err(ApplyError::Unchanged)?
        {
            protect.push(t.previous);
        }
        self.store
            .prune(self.sys, keep, &protect)
            .map_err(ApplyError::Unchanged)
    }

    fn serial_of(&mut self, n: u64) -> Result<u64, ApplyError> {
        Ok(self
            .store
            .meta(self.sys, n)
            .map_err(ApplyError::Unchanged)?
            .serial)
    }

    /// The read that ends an apply: the host must now match what was asked for.
    fn verify_result(&mut self, desired: &HostState, scope: Scope) -> Result<(), StepError> {
        let step = |e| ("verifying the result".to_string(), e);
        let current = Current::read(self.sys, &self.loc, scope).map_err(step)?;
        let left = make_plan(desired, &current, scope).map_err(|e| {
            step(SysError::Ovs(
                e.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            ))
        })?;
        if left.is_empty() {
            return Ok(());
        }
        Err(step(SysError::Ovs(format!(
            "the host does not match the bundle after applying it: {}",
            left.render().trim_end().replace('\n', " / ")
        ))))
    }

    /// Takes the host back to what `marker` recorded: a plan from now to then, run in revert
    /// mode, and the recorded serial as it was. Returns what could not be restored.
    fn revert(&mut self, marker: &Marker) -> Vec<String> {
        let mut errors = self.revert_host(marker);
        let serial = self.store.highest_serial(self.sys);
        if serial.as_ref().ok() != Some(&marker.highest_before) {
            if let Err(e) = self
                .store
                .set_highest_serial(self.sys, marker.highest_before)
            {
                errors.push(format!("restoring the highest serial: {e}"));
            }
        }
        errors
    }

    fn revert_host(&mut self, marker: &Marker) -> Vec<String> {
        let (current, mut errors, ovs_read) = self.read_for_revert(&marker.before);
        let mut plan = match make_plan(&marker.before, &current, Scope::Full) {
            Ok(p) if marker.cycled.is_empty() => p.without_cycling(),
            Ok(p) => p,
            Err(e) => {
                errors.extend(e.iter().map(|e| format!("planning the way back: {e}")));
                return errors;
            }
        };
        if !ovs_read {
            // Planned against no rows at all: nothing of it is true.
            plan.ovs.clear();
            // Nor is it known which tunnels exist: every IPsec guard of now stays.
            for (want, now) in [&mut plan.chains, &mut plan.chains6].into_iter().flatten() {
                *want = crate::executor::keep_guards(want, now);
            }
            errors.push(
                "kept every IPsec guard rule: OVS could not be read, so the tunnels they guard may still exist"
                    .into(),
            );
        }
        // The apply may have taken interfaces down before it failed to replace the file: the
        // file is as it was, but those interfaces must come up again (ifup of an interface that
        // is up already does nothing).
        if plan.interfaces.is_none() && !marker.cycled.is_empty() {
            if let Some(file) = &marker.before.interfaces {
                let defined = bundle::interfaces::stanzas(file);
                plan.interfaces = Some(InterfacesChange {
                    new: Some(file.clone()),
                    up: marker
                        .cycled
                        .iter()
                        .filter(|n| defined.contains_key(*n))
                        .cloned()
                        .collect(),
                    ..InterfacesChange::default()
                });
            }
        }
        if let Err(failed) =
            self.execute(&plan, &current.live, "ovs-bundle: rollback", Mode::Revert)
        {
            errors.extend(
                failed
                    .into_iter()
                    .map(|(step, e)| format!("restoring {step}: {e}")),
            );
        }
        errors
    }

    /// The host as it is, subsystem by subsystem: what cannot be read is reported and taken to
    /// be as `before` (so the way back leaves it alone) instead of stopping the whole revert.
    /// Returns whether OVS could be read.
    fn read_for_revert(&mut self, before: &HostState) -> (Current, Vec<String>, bool) {
        fn or_before<T>(errors: &mut Vec<String>, what: &str, r: Result<T, SysError>, old: T) -> T {
            r.unwrap_or_else(|e| {
                errors.push(format!("reading {what} to restore it: {e}"));
                old
            })
        }
        let mut errors = Vec::new();
        let e = &mut errors;
        let paths = self.loc.paths.clone();
        let live = self.sys.ovs_read();
        let ovs_read = live.is_ok();
        let live = or_before(e, "OVS", live, Live::default());
        let chains = or_before(
            e,
            "iptables",
            self.sys.firewall_read(Family::V4),
            before.chains.clone(),
        );
        let chains6 = or_before(
            e,
            "ip6tables",
            self.sys.firewall_read(Family::V6),
            before.chains6.clone(),
        );
        let interfaces = self.sys.read_file(&paths.interfaces_file());
        let interfaces = or_before(
            e,
            "the interfaces file",
            interfaces,
            before.interfaces.clone(),
        );
        let sysctl = self.sys.read_file(&paths.sysctl_dropin());
        let sysctl = or_before(e, "the sysctl drop-in", sysctl, before.sysctl.clone());
        let forward = self
            .sys
            .read_file(&self.loc.ip_forward())
            .map(|v| v.map(|v| String::from_utf8_lossy(&v).trim().to_string()));
        let ip_forward = or_before(e, "ip_forward", forward, before.ip_forward.clone());
        let forward6 = self
            .sys
            .read_file(&self.loc.ip6_forward())
            .map(|v| v.map(|v| String::from_utf8_lossy(&v).trim().to_string()));
        let ip6_forward = or_before(e, "IPv6 forwarding", forward6, before.ip6_forward.clone());
        let dhcp = self.sys.read_file(&paths.dhcp_conf());
        let dhcp = or_before(e, "the dnsmasq configuration", dhcp, before.dhcp.clone());
        let running = self.sys.dhcp_running(&paths.dhcp_instance());
        let dhcp_running = or_before(e, "whether dnsmasq runs", running, before.dhcp_running);
        let files = crate::state::read_ovn_ipsec_files(self.sys, &paths);
        let ovn_ipsec_files = or_before(
            e,
            "the OVN IPsec files",
            files,
            before.ovn_ipsec_files.clone(),
        );
        let conf = self.sys.read_file(&paths.ovs_system_id_conf());
        let ovs_system_id = or_before(
            e,
            "system-id.conf",
            conf.map(crate::state::FileWant::found),
            before.ovs_system_id.clone(),
        );
        let state = HostState {
            ovs_system_id,
            ovn_ipsec_files,
            chains,
            chains6,
            interfaces,
            sysctl,
            ip_forward,
            ip6_forward,
            dhcp,
            dhcp_running,
            ..HostState::default()
        };
        // Unreadable: as if there were no northbound database (a revert that needs one then
        // says so instead of guessing its rows).
        let nb = self.sys.nb_read();
        let nb = or_before(e, "the OVN northbound database", nb, Default::default());
        (Current { live, nb, state }, errors, ovs_read)
    }

    /// After boot put the host on a known generation although undoing an interrupted apply
    /// failed: that apply's generation (unless it is the current one now), the serial it
    /// raised and its marker go. `marker` is `None` if it could not even be read.
    pub fn forget_stale(&mut self, marker: Option<&Marker>) {
        if let Some(m) = marker {
            let current = self.store.current(self.sys).ok().flatten();
            if current != Some(m.target) {
                if m.created {
                    let _ = self.store.remove_generation(self.sys, m.target);
                }
                let _ = self.store.set_highest_serial(self.sys, m.highest_before);
            }
        }
        match self.store.remove_marker(self.sys) {
            Ok(()) => (self.log)("removed the in-progress marker of the interrupted apply"),
            Err(e) => (self.log)(&format!(
                "WARNING: could not remove the in-progress marker: {e}"
            )),
        }
    }

    /// After a successful revert: the generation the apply created and its marker go.
    fn forget(&mut self, marker: &Marker) {
        if marker.created {
            let _ = self.store.remove_generation(self.sys, marker.target);
        }
        let _ = self.store.remove_marker(self.sys);
    }
}

/// Frees `v` on a thread of its own. A no-op apply (every boot's, every config-management
/// run's) ends the process right after it: freeing the thousands of rows of a large read one
/// by one was a tenth of its time, now spent while it reports, or never (the process's end
/// takes the memory back).
fn drop_beside<T: Send + 'static>(v: T) {
    // Should the thread not start, `v` is freed here, by the failed spawn.
    let _ = std::thread::Builder::new().spawn(move || drop(v));
}

#[cfg(test)]
#[path = "engine_tests.rs"]
pub(crate) mod tests;
