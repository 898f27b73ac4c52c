//! Golden fixtures: every `tests/fixtures/<case>/profiles` is rendered and compared with
//! `tests/fixtures/<case>/expected/<host>/<file>`. Run with `UPDATE_GOLDEN=1` to rewrite the
//! expected files after an intended change, then review the diff.

use builder::profile::load_fleet;
use builder::render::render_host;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

#[test]
fn every_fixture_renders_as_expected() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut cases: Vec<_> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("profiles").is_dir())
        .collect();
    cases.sort();
    assert!(cases.len() >= 3, "fixtures missing: {cases:?}");
    let mut failures = Vec::new();
    for case in &cases {
        let fleet = load_fleet(&case.join("profiles")).unwrap_or_else(|d| {
            panic!("{}: profiles invalid:\n{}", case.display(), join(&d));
        });
        let expected_dir = case.join("expected");
        let mut expected_files: Vec<PathBuf> = walk(&expected_dir);
        // Notes (e.g. a loop that RSTP breaks) are part of what a fixture expects.
        let notes =
            join(&fleet.notes).replace(&format!("{}/", case.join("profiles").display()), "");
        let notes_path = expected_dir.join("notes.txt");
        expected_files.retain(|p| p != &notes_path);
        if update && !notes.is_empty() {
            std::fs::create_dir_all(&expected_dir).unwrap();
            std::fs::write(&notes_path, &notes).unwrap();
        } else if !update && std::fs::read_to_string(&notes_path).unwrap_or_default() != notes {
            failures.push(format!(
                "{}: notes differ; got:\n{notes}",
                notes_path.display()
            ));
        }
        for host in &fleet.hosts {
            for (name, _mode, data) in render_host(host).files {
                let path = expected_dir.join(&host.name).join(&name);
                expected_files.retain(|p| p != &path);
                let got = String::from_utf8(data).unwrap();
                if update {
                    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                    std::fs::write(&path, &got).unwrap();
                    continue;
                }
                let want = std::fs::read_to_string(&path).unwrap_or_default();
                if got != want {
                    failures.push(format!(
                        "{}:\n--- expected ---\n{want}--- got ---\n{got}",
                        path.display()
                    ));
                }
            }
        }
        for stale in expected_files {
            failures.push(format!("{}: expected but not rendered", stale.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn join(d: &[builder::diag::Diagnostic]) -> String {
    d.iter().map(|d| format!("{d}\n")).collect()
}
