//! `applier try`: apply a bundle on trial, and go back to the generation before it unless someone
//! confirms in time. Over SSH, a bundle that cuts the host off (a wrong underlay, a NAT rule that
//! catches the session) must not stay applied.
//!
//! The try is a record in the state directory ([`PendingTry`], written *before* the apply), so
//! every way a try can end is decided from the disk, not from a process that may be gone:
//! - `applier confirm` ends it: the generation stays;
//! - the watcher (a process detached from the caller's session, see `cmd::trial`) reverts when a
//!   check fails or the deadline passes;
//! - boot reverts a try it finds from an earlier boot (power loss, reboot before confirmation);
//! - `applier rollback` ends it by going back by hand.
//!
//! Reverting is `apply_generation(previous)`: the same executor, the same marker and crash
//! recovery as any apply.
//!
//! Over 500 lines with its tests (a quarter of it): the trial's state file and the watcher's
//! decisions on it are one format.

use crate::engine::{Applier, ApplyOpts, Outcome};
use crate::error::ApplyError;
use crate::ovs::Scope;
use crate::routes::{Routes, Routes6};
use crate::state::HostState;
use crate::store::{PendingTry, TryResult};
use bundle::state::PSK_OPTION;
use bundle::PortRole;
use std::collections::BTreeSet;
use std::net::IpAddr;

/// How a try is run.
#[derive(Debug, Clone)]
pub struct TryOpts {
    pub apply: ApplyOpts,
    /// Seconds until the revert, unless confirmed.
    pub timeout: u64,
    /// Seconds checks may take to pass for the first time.
    pub settle: u64,
    pub checks: Vec<String>,
    pub builtin_checks: bool,
}

/// The kernel's id of this boot, `""` if it cannot be read (then boot treats any pending try as
/// from an earlier boot: the safe side).
pub fn boot_id(app: &mut Applier) -> String {
    let path = app.loc.proc_dir.join("sys/kernel/random/boot_id");
    match app.sys.read_file(&path) {
        Ok(Some(b)) => String::from_utf8_lossy(&b).trim().to_string(),
        _ => String::new(),
    }
}

/// What a try's tunnels are: each peer's underlay address and whether it needs IPsec.
pub fn tunnel_peers(desired: &HostState) -> Vec<(IpAddr, bool)> {
    desired
        .ovs
        .ports()
        .filter(|(_, p)| p.role == PortRole::Gre)
        .filter_map(|(_, p)| {
            let ip = p.interface.options.get("remote_ip")?.parse().ok()?;
            Some((ip, p.interface.options.contains_key(PSK_OPTION)))
        })
        .collect()
}

impl Applier<'_> {
    /// The try waiting for confirmation, if any.
    pub fn pending_try(&mut self) -> Result<Option<PendingTry>, ApplyError> {
        self.store
            .pending_try(self.sys)
            .map_err(ApplyError::Unchanged)
    }

    /// A try whose `try` process died before it recorded the generation on trial (killed, or
    /// power lost): once recovery has finished or undone its apply, the host goes back to where
    /// the try began, if it is not there already. Called after `recover`.
    /// `cycle`: whether interfaces may be taken down and up (not at boot, before networking).
    pub fn settle_interrupted_try(&mut self, cycle: bool) -> Result<(), ApplyError> {
        let Some(t) = self.pending_try()? else {
            return Ok(());
        };
        if t.generation.is_some() {
            return Ok(());
        }
        let why = "the try was interrupted before it was recorded";
        if self.store.current(self.sys).ok().flatten() == Some(t.previous) {
            self.end_try(&t, "reverted", why)?;
            (self.log)(&format!(
                "{why}; the host is on generation {} as before it",
                t.previous
            ));
        } else {
            let opts = ApplyOpts {
                scope: Scope::Full,
                cycle,
                allow_downgrade: true,
            };
            self.revert_try_with(&t, why, opts)?;
        }
        Ok(())
    }

    /// Refuses a change while a try is pending: it would be reverted along with the try, or
    /// make the revert go back to the wrong generation.
    pub fn refuse_if_trying(&mut self) -> Result<(), ApplyError> {
        match self.pending_try()? {
            None => Ok(()),
            Some(t) => Err(ApplyError::Refused(format!(
                "{}: run `applier confirm` to keep it or `applier rollback` to go back now, then \
                 try again",
                describe(&t, self.now)
            ))),
        }
    }

    /// Applies `bytes` on trial. The record goes first, so that a crash during the apply is
    /// reverted at boot. Returns the outcome and the record (with the generation on trial).
    pub fn begin_try(
        &mut self,
        bytes: &[u8],
        opts: &TryOpts,
    ) -> Result<(Outcome, Option<PendingTry>), ApplyError> {
        self.refuse_if_trying()?;
        let Some(previous) = self
            .store
            .current(self.sys)
            .map_err(ApplyError::Unchanged)?
        else {
            return Err(ApplyError::Refused(
                "nothing to go back to: no generation is current here. Use `applier apply` for \
                 a host's first generation"
                    .into(),
            ));
        };
        let mut pending = PendingTry {
            generation: None,
            previous,
            started: self.now,
            deadline: self.now + opts.timeout,
            settle_secs: opts.settle,
            checks: opts.checks.clone(),
            builtin_checks: opts.builtin_checks,
            boot_id: boot_id(self),
        };
        self.store
            .write_pending_try(self.sys, &pending)
            .map_err(ApplyError::Unchanged)?;
        let outcome = match self.apply_bundle(bytes, opts.apply) {
            Ok(o) => o,
            Err(e) => {
                self.drop_record(&pending);
                return Err(e);
            }
        };
        match outcome {
            Outcome::Unchanged { .. } => {
                self.drop_record(&pending);
                Ok((outcome, None))
            }
            Outcome::Applied { generation, .. } => {
                pending.generation = Some(generation);
                // Unrecorded, nobody could confirm or revert it: go back now. (The record on
                // disk still says "apply running", which boot and the next command also undo.)
                if let Err(error) = self.store.write_pending_try(self.sys, &pending) {
                    self.revert_try(&pending, &format!("the try could not be recorded: {error}"))?;
                    return Err(ApplyError::RolledBack {
                        step: "recording the try".into(),
                        error,
                    });
                }
                Ok((outcome, Some(pending)))
            }
        }
    }

    /// Removes a try record that never had a generation on trial (the apply failed or changed
    /// nothing); the host is on `previous` already.
    fn drop_record(&mut self, t: &PendingTry) {
        if let Err(e) = self.store.end_try(
            self.sys,
            &TryResult {
                generation: None,
                previous: t.previous,
                result: "reverted".into(),
                reason: "the apply did not go through".into(),
                at: self.now,
            },
        ) {
            (self.log)(&format!("warning: could not remove the try record: {e}"));
        }
    }

    /// Ends the try `t` (`result`: confirmed, reverted, rolled-back), saying why.
    pub fn end_try(
        &mut self,
        t: &PendingTry,
        result: &str,
        reason: &str,
    ) -> Result<(), ApplyError> {
        self.store
            .end_try(
                self.sys,
                &TryResult {
                    generation: t.generation,
                    previous: t.previous,
                    result: result.into(),
                    reason: reason.into(),
                    at: self.now,
                },
            )
            .map_err(ApplyError::Unchanged)
    }

    /// Makes the tried generation permanent. `Err(Refused)` when nothing is pending, saying how
    /// the last try ended.
    pub fn confirm_try(&mut self) -> Result<u64, ApplyError> {
        let Some(t) = self.pending_try()? else {
            let last = self
                .store
                .last_try(self.sys)
                .map_err(ApplyError::Unchanged)?;
            return Err(ApplyError::Refused(match last {
                Some(r) if r.result != "confirmed" => format!(
                    "no try is pending: the last one ({}) was {} at {}: {}",
                    r.generation
                        .map_or("its apply never finished".into(), |g| format!(
                            "generation {g}"
                        )),
                    r.result,
                    bundle::time::format_utc(r.at),
                    r.reason
                ),
                _ => "no try is pending; nothing to confirm".into(),
            }));
        };
        let Some(generation) = t.generation else {
            return Err(ApplyError::Refused(
                "the try's apply has not finished; nothing to confirm yet".into(),
            ));
        };
        self.end_try(&t, "confirmed", "confirmed by `applier confirm`")?;
        Ok(generation)
    }

    /// Goes back to the generation before the try, and ends it. On failure the record stays:
    /// the watcher retries, and so does boot.
    pub fn revert_try(&mut self, t: &PendingTry, reason: &str) -> Result<Outcome, ApplyError> {
        let opts = ApplyOpts {
            scope: Scope::Full,
            cycle: true,
            allow_downgrade: true,
        };
        self.revert_try_with(t, reason, opts)
    }

    pub fn revert_try_with(
        &mut self,
        t: &PendingTry,
        reason: &str,
        opts: ApplyOpts,
    ) -> Result<Outcome, ApplyError> {
        (self.log)(&format!(
            "reverting the try of {} to generation {}: {reason}",
            t.generation
                .map_or("an unfinished apply".into(), |g| format!("generation {g}")),
            t.previous
        ));
        let outcome = self.apply_generation(t.previous, opts)?;
        self.end_try(t, "reverted", reason)?;
        Ok(outcome)
    }
}

/// One line about a pending try, for refusals and `status`.
pub fn describe(t: &PendingTry, now: u64) -> String {
    let what = t.generation.map_or("an apply on trial".into(), |g| {
        format!("generation {g} is on trial")
    });
    if now >= t.deadline {
        format!(
            "{what}; its revert to generation {} was due at {} ({} s ago)",
            t.previous,
            bundle::time::format_utc(t.deadline),
            now - t.deadline
        )
    } else {
        format!(
            "{what}; it reverts to generation {} at {} ({} s left) unless confirmed",
            t.previous,
            bundle::time::format_utc(t.deadline),
            t.deadline - now
        )
    }
}

/// What the checks look at. The real one reads `/proc/net/route`, runs `ip xfrm state` and the
/// operator's commands; tests script it.
pub trait Probe {
    /// `/proc/net/route`.
    fn routes(&mut self) -> Result<String, String>;
    /// `/proc/net/ipv6_route`.
    fn routes6(&mut self) -> Result<String, String>;
    /// `ip xfrm state`.
    fn xfrm_states(&mut self) -> Result<String, String>;
    /// Runs an operator's `--check` command: `Err` with what it said when it does not exit 0.
    fn run_check(&mut self, cmd: &str) -> Result<(), String>;
}

/// The addresses established IPsec SAs go to (`dst` of `ip xfrm state`). A state with SPI 0 is
/// the kernel's placeholder while IKE is still trying (an acquire): not an SA.
fn sa_destinations(xfrm: &str) -> BTreeSet<IpAddr> {
    let mut out = BTreeSet::new();
    let mut dst: Option<IpAddr> = None;
    for l in xfrm.lines() {
        let w: Vec<&str> = l.split_whitespace().collect();
        match w.as_slice() {
            ["src", _, "dst", d, ..] => dst = d.parse().ok(),
            ["proto", _, "spi", spi, ..] => {
                let established =
                    u32::from_str_radix(spi.trim_start_matches("0x"), 16).is_ok_and(|v| v != 0);
                if let (Some(d), true) = (dst.take(), established) {
                    out.insert(d);
                }
            }
            _ => {}
        }
    }
    out
}

/// Runs every check once: `(name, result)` for each.
pub fn run_checks(
    t: &PendingTry,
    peers: &[(IpAddr, bool)],
    probe: &mut dyn Probe,
) -> Vec<(String, Result<(), String>)> {
    let mut out = Vec::new();
    if t.builtin_checks && !peers.is_empty() {
        // Each family's table read only when a peer needs it.
        let routes = peers
            .iter()
            .any(|(ip, _)| ip.is_ipv4())
            .then(|| probe.routes().map(|r| Routes::parse(&r)));
        let routes6 = peers
            .iter()
            .any(|(ip, _)| ip.is_ipv6())
            .then(|| probe.routes6().map(|r| Routes6::parse(&r)));
        for (ip, _) in peers {
            let found = match (ip, &routes, &routes6) {
                (IpAddr::V4(v4), Some(Ok(r)), _) => Ok(r.via(*v4).is_some()),
                (IpAddr::V6(v6), _, Some(Ok(r))) => Ok(r.via(*v6).is_some()),
                (IpAddr::V4(_), Some(Err(e)), _) | (IpAddr::V6(_), _, Some(Err(e))) => {
                    Err(e.clone())
                }
                _ => unreachable!("read above for every family a peer has"),
            };
            let r = match found {
                Ok(true) => Ok(()),
                Ok(false) => Err("no route".into()),
                Err(e) => Err(e),
            };
            out.push((format!("underlay route to {ip}"), r));
        }
        if peers.iter().any(|(_, psk)| *psk) {
            let sas = probe.xfrm_states().map(|x| sa_destinations(&x));
            for (ip, _) in peers.iter().filter(|(_, psk)| *psk) {
                let r = match &sas {
                    Ok(s) if s.contains(ip) => Ok(()),
                    Ok(_) => Err("no IPsec SA".into()),
                    Err(e) => Err(e.clone()),
                };
                out.push((format!("IPsec SA to {ip}"), r));
            }
        }
    }
    for c in &t.checks {
        out.push((format!("check `{c}`"), probe.run_check(c)));
    }
    out
}

/// Decides from check results: a check may fail while it settles (tunnels and IKE take a
/// moment); after `settle` seconds, or once it has passed, a failure reverts at once.
#[derive(Debug, Default)]
pub struct Judge {
    passed: BTreeSet<String>,
}

impl Judge {
    /// `Some(reason)` to revert now.
    pub fn judge(
        &mut self,
        elapsed: u64,
        settle: u64,
        results: &[(String, Result<(), String>)],
    ) -> Option<String> {
        for (name, r) in results {
            match r {
                Ok(()) => {
                    self.passed.insert(name.clone());
                }
                Err(e) if self.passed.contains(name) => {
                    return Some(format!("{name} failed after it had passed: {e}"));
                }
                Err(e) if elapsed >= settle => {
                    return Some(format!("{name} has not passed within {settle} s: {e}"));
                }
                Err(_) => {}
            }
        }
        None
    }

    /// Whether every check has passed at least once.
    pub fn all_passed(&self, results: &[(String, Result<(), String>)]) -> bool {
        results.iter().all(|(n, _)| self.passed.contains(n))
    }
}

#[cfg(test)]
#[path = "trial_tests.rs"]
mod engine_tests;

#[cfg(test)]
mod tests {
    use super::*;

    struct Script {
        routes: String,
        xfrm: String,
        check_ok: bool,
    }

    impl Probe for Script {
        fn routes(&mut self) -> Result<String, String> {
            Ok(self.routes.clone())
        }
        fn routes6(&mut self) -> Result<String, String> {
            Ok(ROUTES6.into())
        }
        fn xfrm_states(&mut self) -> Result<String, String> {
            Ok(self.xfrm.clone())
        }
        fn run_check(&mut self, _cmd: &str) -> Result<(), String> {
            if self.check_ok {
                Ok(())
            } else {
                Err("exit status 1".into())
            }
        }
    }

    const ROUTES: &str = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n\
        eth1\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\n";

    const ROUTES6: &str = "fd980000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001   br-phy\n";

    #[test]
    fn builtin_checks_see_v6_routes_and_sas() {
        let peers = [
            ("fd98::2".parse().unwrap(), true),
            ("2001:db8::9".parse().unwrap(), false),
        ];
        let mut probe = Script {
            routes: String::new(),
            xfrm: "src fd98::1 dst fd98::2\n\tproto esp spi 0x1 reqid 1 mode transport\n".into(),
            check_ok: true,
        };
        let r = run_checks(&pending(&[]), &peers, &mut probe);
        let names: Vec<_> = r.iter().map(|(n, r)| (n.as_str(), r.is_ok())).collect();
        assert_eq!(
            names,
            [
                ("underlay route to fd98::2", true),
                ("underlay route to 2001:db8::9", false),
                ("IPsec SA to fd98::2", true),
            ]
        );
    }

    fn pending(checks: &[&str]) -> PendingTry {
        PendingTry {
            generation: Some(2),
            previous: 1,
            started: 100,
            deadline: 220,
            settle_secs: 30,
            checks: checks.iter().map(ToString::to_string).collect(),
            builtin_checks: true,
            boot_id: "b".into(),
        }
    }

    #[test]
    fn builtin_checks_see_routes_and_sas() {
        let peers = [
            ("192.168.0.2".parse().unwrap(), true),
            ("10.9.9.9".parse().unwrap(), false),
        ];
        let mut probe = Script {
            routes: ROUTES.into(),
            xfrm: "src 192.168.0.1 dst 192.168.0.2\n\tproto esp spi 0x1 reqid 1 mode transport\n"
                .into(),
            check_ok: false,
        };
        let r = run_checks(&pending(&["true"]), &peers, &mut probe);
        let names: Vec<_> = r.iter().map(|(n, r)| (n.as_str(), r.is_ok())).collect();
        assert_eq!(
            names,
            [
                ("underlay route to 192.168.0.2", true),
                ("underlay route to 10.9.9.9", false),
                ("IPsec SA to 192.168.0.2", true),
                ("check `true`", false),
            ]
        );
        // While IKE is still trying, the kernel holds a placeholder state with SPI 0.
        probe.xfrm =
            "src 192.168.0.1 dst 192.168.0.2\n\tproto esp spi 0x00000000 reqid 1 mode transport\n"
                .into();
        let r = run_checks(&pending(&[]), &peers, &mut probe);
        assert_eq!(
            r[2],
            ("IPsec SA to 192.168.0.2".into(), Err("no IPsec SA".into()))
        );
        probe.xfrm = String::new();
        let r = run_checks(&pending(&[]), &peers, &mut probe);
        assert_eq!(
            r[2],
            ("IPsec SA to 192.168.0.2".into(), Err("no IPsec SA".into()))
        );
    }

    #[test]
    fn without_builtin_checks_only_commands_run() {
        let mut t = pending(&["x"]);
        t.builtin_checks = false;
        let mut probe = Script {
            routes: String::new(),
            xfrm: String::new(),
            check_ok: true,
        };
        let r = run_checks(&t, &[("10.0.0.1".parse().unwrap(), true)], &mut probe);
        assert_eq!(r, [("check `x`".to_string(), Ok(()))]);
    }

    #[test]
    fn judge_tolerates_settling_then_reverts() {
        let fail = vec![("c".to_string(), Err::<(), _>("down".to_string()))];
        let pass = vec![("c".to_string(), Ok::<(), String>(()))];
        let mut j = Judge::default();
        assert_eq!(j.judge(5, 30, &fail), None, "settling");
        let why = j.judge(30, 30, &fail).expect("reverts after settle");
        assert!(why.contains("has not passed within 30 s: down"), "{why}");

        let mut j = Judge::default();
        assert_eq!(j.judge(1, 30, &pass), None);
        assert!(j.all_passed(&pass));
        let why = j
            .judge(2, 30, &fail)
            .expect("a failure after a pass reverts at once");
        assert!(why.contains("failed after it had passed"), "{why}");
    }

    #[test]
    fn describe_says_time_left_or_overdue() {
        let t = pending(&[]);
        assert!(
            describe(&t, 100).contains("120 s left"),
            "{}",
            describe(&t, 100)
        );
        assert!(
            describe(&t, 230).contains("10 s ago"),
            "{}",
            describe(&t, 230)
        );
    }
}
