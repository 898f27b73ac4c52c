//! `builder image host` refuses a bundle for another host, or one not signed by --key, before
//! it writes anything: no image file, no work directory beside it. (Building real images needs
//! root and a base: VM scenario 11.)

use std::path::Path;
use std::process::Command;

fn builder(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_builder"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn another_hosts_bundle_and_an_untrusted_key_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let profiles = Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles");
    for (k, p) in [("fleet", "fleet.pub"), ("other", "other.pub")] {
        let out = builder(&[
            "keygen".as_ref(),
            "--unencrypted".as_ref(),
            "--secret-key".as_ref(),
            d.join(format!("{k}.key")).as_os_str(),
            "--public-key".as_ref(),
            d.join(p).as_os_str(),
        ]);
        assert!(out.status.success(), "{out:?}");
    }
    let out = builder(&[
        "build".as_ref(),
        profiles.as_os_str(),
        "--out".as_ref(),
        d.join("bundles").as_os_str(),
        "--key".as_ref(),
        d.join("fleet.key").as_os_str(),
    ]);
    assert!(out.status.success(), "{out:?}");
    // A base as `image base` describes it; its disk and tree are never reached.
    let base = d.join("base");
    std::fs::create_dir_all(&base).unwrap();
    std::fs::write(
        base.join("base.json"),
        r#"{"source_date_epoch": 1700000000, "root_uuid": "4ea3122c-bb6d-4211-b665-a84cd554b147",
            "hash_seed": "6664ac52-41a1-4b67-972d-4fde28618412", "disk_bytes": 2147483648,
            "root_offset": 1048576}"#,
    )
    .unwrap();
    let images = d.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let bundle = d.join("bundles/node1.tgz");
    for (host, key, exit, says) in [
        (
            "gw1",
            "fleet.pub",
            12,
            "bundle is for host \"node1\", not \"gw1\"",
        ),
        ("node1", "other.pub", 10, "which is not trusted"),
    ] {
        let out = builder(&[
            "image".as_ref(),
            "host".as_ref(),
            "--base".as_ref(),
            base.as_os_str(),
            "--bundle".as_ref(),
            bundle.as_os_str(),
            "--host".as_ref(),
            host.as_ref(),
            "--key".as_ref(),
            d.join(key).as_os_str(),
            "--out".as_ref(),
            images.join("img.raw").as_os_str(),
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(exit), "{err}");
        assert!(
            err.contains(says) && err.contains("nothing was written"),
            "{err}"
        );
        assert_eq!(std::fs::read_dir(&images).unwrap().count(), 0);
    }
    // --all: one bad bundle among good ones, and nothing is written for any.
    let mut bad = std::fs::read(d.join("bundles/gw1.tgz")).unwrap();
    let n = bad.len();
    bad[n / 2] ^= 0x20;
    std::fs::write(d.join("bundles/gw1.tgz"), bad).unwrap();
    let out = builder(&[
        "image".as_ref(),
        "host".as_ref(),
        "--base".as_ref(),
        base.as_os_str(),
        "--all".as_ref(),
        d.join("bundles").as_os_str(),
        "--key".as_ref(),
        d.join("fleet.pub").as_os_str(),
        "--out".as_ref(),
        images.join("all").as_os_str(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(matches!(out.status.code(), Some(10 | 11)), "{err}");
    assert!(err.contains("gw1.tgz"), "{err}");
    assert!(!images.join("all").exists());
}
