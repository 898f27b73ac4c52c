//! Golden plan fixtures: `tests/plans/<case>/` holds `current.toml` (the profile the host was
//! last applied from; absent: a host with nothing of ours), optionally `foreign` (lines
//! `BRIDGE PORT`: rows someone else made after that apply) and `scope` (`gre-only`), `desired.toml`, and
//! `expected`: the plan as `applier plan` prints it (or the planning error). One test walks them
//! all and prints expected against got; `OVSB_BLESS=1` rewrites `expected` from what it got.

use crate::engine::tests::Fixture;
use crate::engine::ApplyOpts;
use crate::ovs::Scope;
use crate::plan::make_plan;
use crate::state::{Current, HostState};
use crate::system::fake::FakeSystem;
use std::path::Path;

fn plan_case(fx: &Fixture, dir: &Path) -> String {
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
    let mut sys = FakeSystem::new();
    if let Some(current) = read("current.toml") {
        let opts = ApplyOpts {
            scope: Scope::Full,
            cycle: true,
            allow_downgrade: false,
        };
        fx.applier(&mut sys)
            .apply_bundle(&fx.bundle(&current, 1), opts)
            .unwrap_or_else(|e| panic!("{}: current.toml: {e}", dir.display()));
    }
    for line in read("foreign").unwrap_or_default().lines() {
        let (bridge, port) = line.split_once(' ').expect("BRIDGE PORT");
        sys.add_foreign_port(bridge, port);
    }
    let scope = match read("scope").as_deref().map(str::trim) {
        Some("gre-only") => Scope::GreOnly,
        _ => Scope::Full,
    };
    let desired = fx.bundle(&read("desired.toml").expect("desired.toml"), 2);
    let keys = [fx.trusted()];
    let verified = bundle::verify_bundle(&desired, &keys, &Default::default()).unwrap();
    let desired = HostState::from_bundle(&verified).unwrap();
    let app = fx.applier(&mut sys);
    let current = Current::read(app.sys, &app.loc, scope).unwrap();
    match make_plan(&desired, &current, scope) {
        Ok(plan) => plan.render(),
        Err(errors) => errors.iter().map(|e| format!("error: {e}\n")).collect(),
    }
}

#[test]
fn golden_plans() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/plans");
    let fx = Fixture::new();
    let mut cases: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    cases.sort();
    let mut failed = Vec::new();
    for dir in &cases {
        let got = plan_case(&fx, dir);
        let expected_path = dir.join("expected");
        if std::env::var_os("OVSB_BLESS").is_some() {
            std::fs::write(&expected_path, &got).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if got != expected {
            let name = dir.file_name().unwrap().to_string_lossy().into_owned();
            eprintln!("--- {name}: expected\n{expected}--- {name}: got\n{got}");
            failed.push(name);
        }
    }
    assert!(cases.len() >= 10, "only {} cases", cases.len());
    assert!(failed.is_empty(), "plans differ: {failed:?}");
}
