//! `builder import ovs-crate` as an operator runs it. Each `tests/import/<case>/fleet.edn` is
//! imported into a fresh directory; what the command prints and its exit code must equal
//! `expected.txt`, and the files it writes must equal `expected/` (none, where nothing is to be
//! written). The temporary output directory is shown as `OUT`. `UPDATE_GOLDEN=1` rewrites the
//! expected files; review the diff.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn cases() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/import")
}

fn import(cwd: &Path, out: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_builder"))
        .current_dir(cwd)
        .args(["import", "ovs-crate", "fleet.edn", "--out"])
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

/// Every file under `dir`, by path relative to it.
fn tree(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, u32)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
                let rel = p.strip_prefix(dir).unwrap().to_path_buf();
                out.insert(rel, (std::fs::read(&p).unwrap(), mode));
            }
        }
    }
    out
}

#[test]
fn every_import_case_prints_and_writes_what_is_expected() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(cases())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("fleet.edn").is_file())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 4, "cases missing: {dirs:?}");
    let mut failures = Vec::new();
    for case in &dirs {
        let tmp = tempfile::tempdir().unwrap();
        let out_dir = tmp.path().join("out");
        let out = import(case, &out_dir, &[]);
        let shown =
            |b: &[u8]| String::from_utf8_lossy(b).replace(&out_dir.display().to_string(), "OUT");
        let (stdout, stderr) = (shown(&out.stdout), shown(&out.stderr));
        let got = format!(
            "exit: {}\n--- stdout\n{stdout}--- stderr\n{stderr}",
            out.status.code().unwrap_or(-1)
        );
        let written = tree(&out_dir);
        // No PSK reaches the output, whatever else the case shows.
        for (rel, (bytes, mode)) in &written {
            if rel.starts_with("secrets") {
                let psk = String::from_utf8_lossy(bytes).trim().to_string();
                assert!(!got.contains(&psk), "{}: a PSK is printed", case.display());
                assert_eq!(
                    *mode,
                    0o600,
                    "{}: {} is not private",
                    case.display(),
                    rel.display()
                );
            }
        }
        assert!(
            !got.contains("never-printed"),
            "{}: a PSK is printed",
            case.display()
        );
        let expected_txt = case.join("expected.txt");
        let expected_dir = case.join("expected");
        if update {
            std::fs::write(&expected_txt, &got).unwrap();
            let _ = std::fs::remove_dir_all(&expected_dir);
            for (rel, (bytes, _)) in &written {
                let p = expected_dir.join(rel);
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(p, bytes).unwrap();
            }
            continue;
        }
        let want = std::fs::read_to_string(&expected_txt).unwrap_or_default();
        if got != want {
            failures.push(format!(
                "{}:\n--- expected ---\n{want}--- got ---\n{got}",
                expected_txt.display()
            ));
        }
        let want_files: BTreeMap<PathBuf, Vec<u8>> = tree(&expected_dir)
            .into_iter()
            .map(|(k, (b, _))| (k, b))
            .collect();
        let got_files: BTreeMap<PathBuf, Vec<u8>> =
            written.into_iter().map(|(k, (b, _))| (k, b)).collect();
        if got_files != want_files {
            failures.push(format!(
                "{}: written files differ from expected/: got {:?}, expected {:?}",
                case.display(),
                got_files.keys().collect::<Vec<_>>(),
                want_files.keys().collect::<Vec<_>>()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A second import into the same directory changes nothing without --force, and says so; with
/// it, the files are replaced.
#[test]
fn existing_files_are_kept_unless_forced() {
    let case = cases().join("fleet3");
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("out");
    assert!(import(&case, &out_dir, &[]).status.success());
    let profile = out_dir.join("hosts/gw1.toml");
    std::fs::write(&profile, "# edited by hand\n").unwrap();
    let again = import(&case, &out_dir, &[]);
    assert_eq!(again.status.code(), Some(1));
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        err.contains("refusing to overwrite 6 existing file(s)"),
        "{err}"
    );
    assert!(err.contains("pass --force"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&profile).unwrap(),
        "# edited by hand\n"
    );
    let forced = import(&case, &out_dir, &["--force"]);
    assert!(
        forced.status.success(),
        "{}",
        String::from_utf8_lossy(&forced.stderr)
    );
    assert!(std::fs::read_to_string(&profile)
        .unwrap()
        .contains("name = \"gw1\""));
}
