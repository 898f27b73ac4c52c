//! `applier try` on the in-memory host: begin, confirm, revert, refusals, boot after a reboot,
//! and a crash at every step of a try, which boot must always bring back to the generation
//! before it. Bundles are real (engine tests' fixture); the process side is in the netns tests.

use super::*;
use crate::engine::tests::{on_v1, v2, Fixture, FULL};
use crate::system::fake::{FakeSystem, View};
use bundle::Exit;
use std::path::{Path, PathBuf};

const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

fn opts() -> TryOpts {
    TryOpts {
        apply: FULL,
        timeout: 120,
        settle: 30,
        checks: vec!["true".into()],
        builtin_checks: true,
    }
}

/// What the host is, without the state directory (which records the try's history).
fn host(v: &View) -> View {
    let mut v = v.clone();
    v.files
        .retain(|p, _| !p.starts_with("/var/lib/ovs-bundle") && p != Path::new(BOOT_ID));
    v.dirs
        .retain(|p| !p.starts_with("/var/lib/ovs-bundle") && !p.starts_with("/proc/sys/kernel"));
    v
}

fn current(sys: &FakeSystem) -> String {
    sys.view().files[&PathBuf::from("/var/lib/ovs-bundle/current")].clone()
}

fn pending(fx: &Fixture, sys: &mut FakeSystem) -> Option<PendingTry> {
    fx.applier(sys).pending_try().unwrap()
}

#[test]
fn a_try_applies_a_new_generation_and_reverting_puts_the_old_one_back() {
    let fx = Fixture::new();
    let (mut sys, before) = on_v1(&fx);
    sys.put(BOOT_ID, b"boot-a\n");
    let (outcome, t) = fx
        .applier(&mut sys)
        .begin_try(&fx.bundle(&v2(), 2), &opts())
        .unwrap();
    assert_eq!(outcome.generation(), 2);
    let t = t.expect("a try is recorded");
    assert_eq!((t.generation, t.previous), (Some(2), 1));
    assert_eq!(
        (t.deadline - t.started, t.boot_id.as_str()),
        (120, "boot-a")
    );
    assert_eq!(current(&sys), "2\n");
    assert_ne!(host(&sys.view()), host(&before));

    fx.applier(&mut sys)
        .revert_try(&t, "not confirmed")
        .unwrap();
    assert_eq!(
        host(&sys.view()),
        host(&before),
        "the host is as before the try"
    );
    assert_eq!(current(&sys), "1\n");
    assert_eq!(pending(&fx, &mut sys), None);
    let last = crate::store::Store::new("/var/lib/ovs-bundle")
        .last_try(&mut sys)
        .unwrap()
        .unwrap();
    assert_eq!(
        (last.result.as_str(), last.reason.as_str()),
        ("reverted", "not confirmed")
    );
}

#[test]
fn confirm_keeps_the_generation_and_then_has_nothing_to_confirm() {
    let fx = Fixture::new();
    let (mut sys, _) = on_v1(&fx);
    fx.applier(&mut sys)
        .begin_try(&fx.bundle(&v2(), 2), &opts())
        .unwrap();
    let after = sys.view();
    assert_eq!(fx.applier(&mut sys).confirm_try().unwrap(), 2);
    assert_eq!(host(&sys.view()), host(&after));
    assert_eq!(pending(&fx, &mut sys), None);
    let e = fx.applier(&mut sys).confirm_try().unwrap_err();
    assert_eq!(e.exit(), Exit::Refused);
    assert!(e.to_string().contains("no try is pending"), "{e}");
}

#[test]
fn confirm_after_a_revert_says_how_the_try_ended() {
    let fx = Fixture::new();
    let (mut sys, _) = on_v1(&fx);
    let (_, t) = fx
        .applier(&mut sys)
        .begin_try(&fx.bundle(&v2(), 2), &opts())
        .unwrap();
    fx.applier(&mut sys)
        .revert_try(
            &t.unwrap(),
            "check `ping -c1 10.20.0.2` has not passed within 30 s",
        )
        .unwrap();
    let e = fx.applier(&mut sys).confirm_try().unwrap_err().to_string();
    assert!(
        e.contains("generation 2) was reverted at") && e.contains("ping -c1 10.20.0.2"),
        "{e}"
    );
}

#[test]
fn a_pending_try_refuses_another_apply_or_try() {
    let fx = Fixture::new();
    let (mut sys, _) = on_v1(&fx);
    fx.applier(&mut sys)
        .begin_try(&fx.bundle(&v2(), 2), &opts())
        .unwrap();
    let e = fx.applier(&mut sys).refuse_if_trying().unwrap_err();
    assert_eq!(e.exit(), Exit::Refused);
    let msg = e.to_string();
    assert!(
        msg.contains("generation 2 is on trial")
            && msg.contains("reverts to generation 1")
            && msg.contains("applier confirm")
            && msg.contains("applier rollback"),
        "{msg}"
    );
    let e = fx
        .applier(&mut sys)
        .begin_try(&fx.bundle(&v2(), 3), &opts())
        .unwrap_err();
    assert_eq!(e.exit(), Exit::Refused);
    assert_eq!(current(&sys), "2\n");
}

#[test]
fn a_try_needs_a_generation_to_go_back_to() {
    let fx = Fixture::new();
    let mut sys = FakeSystem::new();
    let e = fx
        .applier(&mut sys)
        .begin_try(&fx.bundle(&v2(), 2), &opts())
        .unwrap_err();
    assert_eq!(e.exit(), Exit::Refused);
    assert!(e.to_string().contains("Use `applier apply`"), "{e}");
    assert_eq!(
        sys.view()
            .files
            .get(Path::new("/var/lib/ovs-bundle/try.json")),
        None
    );
}

#[test]
fn trying_the_current_bundle_changes_nothing_and_leaves_no_try() {
    let fx = Fixture::new();
    let (mut sys, before) = on_v1(&fx);
    let (outcome, t) = fx
        .applier(&mut sys)
        .begin_try(&fx.bundle(&crate::engine::tests::v1(), 1), &opts())
        .unwrap();
    assert!(matches!(outcome, Outcome::Unchanged { generation: 1 }));
    assert_eq!(t, None);
    assert_eq!(pending(&fx, &mut sys), None);
    assert_eq!(host(&sys.view()), host(&before));
}

#[test]
fn a_failed_try_apply_leaves_no_try_behind() {
    let fx = Fixture::new();
    let (base, before) = on_v1(&fx);
    let b2 = fx.bundle(&v2(), 2);
    // Fail the apply at one of its OVS steps: the apply rolls back, the record goes.
    let mut failed = 0;
    for n in 1..40 {
        let mut sys = base.clone();
        sys.fail_at = Some(n);
        if fx.applier(&mut sys).begin_try(&b2, &opts()).is_ok() {
            continue;
        }
        failed += 1;
        sys.restart();
        assert_eq!(host(&sys.view()), host(&before), "step {n}");
        assert_eq!(pending(&fx, &mut sys), None, "step {n}");
    }
    assert!(failed > 10, "{failed}");
}

#[test]
fn boot_reverts_a_try_from_an_earlier_boot_and_leaves_one_of_this_boot() {
    let fx = Fixture::new();
    let (mut sys, before) = on_v1(&fx);
    sys.put(BOOT_ID, b"boot-a\n");
    fx.applier(&mut sys)
        .begin_try(&fx.bundle(&v2(), 2), &opts())
        .unwrap();
    let trying = sys.view();
    // The same boot (the incoming path unit runs `boot` too): the watcher decides.
    assert_eq!(
        crate::boot::boot(&mut fx.applier(&mut sys), false),
        Exit::Ok
    );
    assert_eq!(host(&sys.view()), host(&trying));
    assert!(pending(&fx, &mut sys).is_some());
    // A reboot (iptables rules gone, a new boot id) before confirmation: back to generation 1.
    sys.chains = bundle::Chains::from_save("");
    sys.put(BOOT_ID, b"boot-b\n");
    assert_eq!(
        crate::boot::boot(&mut fx.applier(&mut sys), false),
        Exit::Ok
    );
    assert_eq!(current(&sys), "1\n");
    assert_eq!(pending(&fx, &mut sys), None);
    let now = host(&sys.view());
    assert_eq!((&now.owned, &now.chains), (&before.owned, &before.chains));
    assert_eq!(now.files, host(&before).files);
}

#[test]
fn a_crash_at_every_step_of_a_try_boots_the_generation_before_it() {
    let fx = Fixture::new();
    let (mut base, before) = on_v1(&fx);
    base.put(BOOT_ID, b"boot-a\n");
    let b2 = fx.bundle(&v2(), 2);
    let mut crashes = 0;
    for n in 0.. {
        let mut sys = base.clone();
        sys.crash_at = Some(n);
        let r = fx.applier(&mut sys).begin_try(&b2, &opts());
        if !sys.crashed() {
            assert!(r.is_ok(), "{}", r.unwrap_err());
            break;
        }
        crashes += 1;
        let step = sys.calls[n].clone();
        // Power loss: a new boot, no iptables rules.
        sys.restart();
        sys.chains = bundle::Chains::from_save("");
        sys.put(BOOT_ID, b"boot-b\n");
        crate::boot::boot(&mut fx.applier(&mut sys), false);
        let now = host(&sys.view());
        assert_eq!(
            (&now.owned, &now.chains, &now.files),
            (&before.owned, &before.chains, &host(&before).files),
            "step {n} ({step})"
        );
        assert_eq!(current(&sys), "1\n", "step {n} ({step})");
        assert_eq!(pending(&fx, &mut sys), None, "step {n} ({step})");
    }
    assert!(crashes > 20, "{crashes}");
}

#[test]
fn gc_keeps_the_generation_a_pending_try_goes_back_to() {
    let fx = Fixture::new();
    let (mut sys, _) = on_v1(&fx);
    fx.applier(&mut sys)
        .begin_try(&fx.bundle(&v2(), 2), &opts())
        .unwrap();
    let gone = fx.applier(&mut sys).gc(1).unwrap();
    assert_eq!(gone, Vec::<u64>::new());
    let gens = crate::store::Store::new("/var/lib/ovs-bundle")
        .generations(&mut sys)
        .unwrap();
    assert_eq!(gens, [1, 2]);
}
