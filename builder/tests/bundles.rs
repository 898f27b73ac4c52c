//! Bundles end to end in the library: build from profiles, verify with the shared verifier, and
//! refuse every kind of bad bundle an attacker or a broken transport could produce.
//!
//! Over 500 lines on purpose: one test per kind of bad bundle, each its own story.

use builder::build::{build_host, BuildParams};
use builder::profile::load_fleet;
use builder::sign::{keygen, load_secret_key, Passphrase, Protection, SecretKey};
use bundle::{
    sha256_hex, verify_bundle, FileEntry, Manifest, TrustedKey, VerifyError, VerifyOptions,
};
use std::io::Write;
use std::path::Path;

struct Keys {
    _dir: tempfile::TempDir,
    sk: SecretKey,
    pk: TrustedKey,
    pk_path: std::path::PathBuf,
}

fn keys() -> Keys {
    let dir = tempfile::tempdir().unwrap();
    let (skp, pkp) = (dir.path().join("k.key"), dir.path().join("k.pub"));
    keygen(&skp, &pkp, Protection::Unencrypted).unwrap();
    let sk = load_secret_key(&skp, Passphrase::None).unwrap();
    let pk = TrustedKey::parse(&std::fs::read_to_string(&pkp).unwrap(), "k.pub").unwrap();
    Keys {
        _dir: dir,
        sk,
        pk,
        pk_path: pkp,
    }
}

fn profiles() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles")
}

fn build(k: &Keys, host: &str, params: BuildParams) -> Vec<u8> {
    let fleet = load_fleet(&profiles()).unwrap();
    let h = fleet.hosts.iter().find(|h| h.name == host).unwrap();
    build_host(h, &k.sk, params)
}

const P: BuildParams = BuildParams {
    serial: 42,
    expires: None,
};

fn opts(host: &str) -> VerifyOptions {
    VerifyOptions {
        host: Some(host.into()),
        now: Some(1_000_000),
        ..VerifyOptions::default()
    }
}

#[test]
fn a_built_bundle_verifies_and_carries_the_rendered_files() {
    let k = keys();
    let b = verify_bundle(
        &build(&k, "gw1", P),
        std::slice::from_ref(&k.pk),
        &opts("gw1"),
    )
    .unwrap();
    assert_eq!(b.manifest.host, "gw1");
    assert_eq!(b.manifest.serial, 42);
    assert_eq!(b.signed_by, k.sk.id());
    let names: Vec<_> = b.files.keys().cloned().collect();
    assert_eq!(
        names,
        ["interfaces", "iptables.rules", "ovs.json", "sysctl.conf"]
    );
    assert!(std::str::from_utf8(b.file("interfaces").unwrap())
        .unwrap()
        .contains("address 10.20.20.1/24"));
    assert_eq!(b.manifest.file("ovs.json").unwrap().mode, 0o600);
}

#[test]
fn builds_are_byte_identical() {
    let k = keys();
    assert_eq!(build(&k, "gw1", P), build(&k, "gw1", P));
    assert_ne!(
        build(&k, "gw1", P),
        build(&k, "gw1", BuildParams { serial: 43, ..P })
    );
}

/// Every byte flip is refused, or changes nothing that is applied. Deflate's encoding is not
/// unique: a flip can, rarely, rewrite the Huffman table of a symbol the stream never uses and
/// decompress to the very same bytes, which the signed hashes and the gzip CRC then vouch for.
/// So the property is: no flip ever yields a bundle whose contents differ from the original.
#[test]
fn every_byte_flip_is_refused_or_changes_nothing() {
    let k = keys();
    let good = build(&k, "node1", P);
    let keys = [k.pk.clone()];
    let original = verify_bundle(&good, &keys, &opts("node1")).unwrap();
    let mut void = Vec::new();
    for i in 0..good.len() {
        let mut bad = good.clone();
        bad[i] ^= 0xff;
        if let Ok(b) = verify_bundle(&bad, &keys, &opts("node1")) {
            assert_eq!(
                (&b.manifest_bytes, &b.signature, &b.files),
                (
                    &original.manifest_bytes,
                    &original.signature,
                    &original.files
                ),
                "flipping byte {i} of {} changed the contents and was not detected",
                good.len()
            );
            // Only inside the compressed stream: the gzip header and trailer are checked exactly.
            assert!(
                i >= 10 && i < good.len() - 8,
                "byte {i} of the gzip header or trailer"
            );
            void.push(i);
        }
    }
    assert!(
        void.len() * 100 < good.len(),
        "{} of {} flips went unnoticed",
        void.len(),
        good.len()
    );
}

#[test]
fn every_truncation_is_refused() {
    let k = keys();
    let good = build(&k, "node1", P);
    for len in 0..good.len() {
        assert!(
            verify_bundle(&good[..len], std::slice::from_ref(&k.pk), &opts("node1")).is_err(),
            "truncated to {len} bytes and accepted"
        );
    }
}

#[test]
fn another_key_is_not_trusted() {
    let (k, other) = (keys(), keys());
    let err = verify_bundle(
        &build(&k, "gw1", P),
        std::slice::from_ref(&other.pk),
        &opts("gw1"),
    )
    .unwrap_err();
    assert!(matches!(err, VerifyError::UntrustedKey { .. }), "{err}");
    assert_eq!(err.exit().code(), 10);
    assert!(err.to_string().contains(&k.sk.id().to_string()), "{err}");
    // With both trusted (a key roll-over), it verifies.
    verify_bundle(&build(&k, "gw1", P), &[other.pk, k.pk], &opts("gw1")).unwrap();
}

#[test]
fn no_keys_means_nothing_is_trusted() {
    let k = keys();
    let err = verify_bundle(&build(&k, "gw1", P), &[], &opts("gw1")).unwrap_err();
    assert_eq!(err.exit().code(), 14, "{err}");
}

#[test]
fn a_bundle_for_another_host_is_refused() {
    let k = keys();
    let err = verify_bundle(
        &build(&k, "gw1", P),
        std::slice::from_ref(&k.pk),
        &opts("node1"),
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "bundle is for host \"gw1\", not \"node1\"");
    assert_eq!(err.exit().code(), 12);
}

#[test]
fn an_expired_bundle_is_refused_and_a_live_one_accepted() {
    let k = keys();
    let bundle = build(
        &k,
        "gw1",
        BuildParams {
            serial: 1,
            expires: Some(1_000_000),
        },
    );
    let err = verify_bundle(&bundle, std::slice::from_ref(&k.pk), &opts("gw1")).unwrap_err();
    assert_eq!(err.exit().code(), 13, "{err}");
    let earlier = VerifyOptions {
        now: Some(999_999),
        ..opts("gw1")
    };
    verify_bundle(&bundle, std::slice::from_ref(&k.pk), &earlier).unwrap();
}

#[test]
fn minisign_itself_verifies_the_manifest_signature() {
    let k = keys();
    let b = verify_bundle(
        &build(&k, "gw1", P),
        std::slice::from_ref(&k.pk),
        &opts("gw1"),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("manifest.json");
    std::fs::write(&m, &b.manifest_bytes).unwrap();
    std::fs::write(dir.path().join("manifest.json.minisig"), &b.signature).unwrap();
    let out = std::process::Command::new("minisign")
        .arg("-Vm")
        .arg(&m)
        .arg("-p")
        .arg(&k.pk_path)
        .output()
        .expect("minisign is installed by the test command (apt-get install minisign)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("host=gw1 serial=42"));
}

// ---- hand-crafted archives: validly signed manifests around malicious members ----

#[derive(Clone)]
struct Member<'a> {
    name: &'a [u8],
    kind: tar::EntryType,
    data: &'a [u8],
    link: Option<&'a [u8]>,
}

fn file<'a>(name: &'a str, data: &'a [u8]) -> Member<'a> {
    Member {
        name: name.as_bytes(),
        kind: tar::EntryType::Regular,
        data,
        link: None,
    }
}

/// A canonical-looking archive with arbitrary member names and types.
fn craft(members: &[Member]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for m in members {
        let mut h = tar::Header::new_ustar();
        h.as_old_mut().name[..m.name.len()].copy_from_slice(m.name);
        if let Some(link) = m.link {
            h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
        }
        h.set_entry_type(m.kind);
        h.set_size(m.data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_cksum();
        tar.append(&h, m.data).unwrap();
    }
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(0xff)
        .write(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar.into_inner().unwrap()).unwrap();
    gz.finish().unwrap()
}

/// A manifest for `host` listing `files` (name, data), signed by `k`.
fn signed_manifest(k: &Keys, files: &[(&str, &[u8])]) -> (Vec<u8>, Vec<u8>) {
    let manifest = Manifest {
        format: bundle::FORMAT_VERSION,
        host: "gw1".into(),
        serial: 1,
        expires: None,
        builder: "test".into(),
        files: files
            .iter()
            .map(|(p, d)| FileEntry {
                path: p.to_string(),
                size: d.len() as u64,
                mode: 0o644,
                sha256: sha256_hex(d),
            })
            .collect(),
    };
    let bytes = manifest.to_bytes();
    let sig = k.sk.sign(&bytes, "test").into_bytes();
    (bytes, sig)
}

fn refuse(k: &Keys, archive: &[u8]) -> VerifyError {
    verify_bundle(archive, std::slice::from_ref(&k.pk), &opts("gw1"))
        .expect_err("bundle was accepted")
}

#[test]
fn crafted_archive_with_correct_members_is_accepted() {
    // Guards the tests below: the crafting itself yields valid bundles.
    let k = keys();
    let (m, s) = signed_manifest(&k, &[("interfaces", b"x")]);
    let ok = craft(&[
        file("manifest.json", &m),
        file("manifest.json.minisig", &s),
        file("interfaces", b"x"),
    ]);
    verify_bundle(&ok, std::slice::from_ref(&k.pk), &opts("gw1")).unwrap();
}

#[test]
fn path_traversal_and_absolute_names_are_refused() {
    let k = keys();
    for name in ["../interfaces", "/etc/passwd", "a/b", ".hidden"] {
        let (m, s) = signed_manifest(&k, &[("interfaces", b"x")]);
        let bad = craft(&[
            file("manifest.json", &m),
            file("manifest.json.minisig", &s),
            file(name, b"x"),
        ]);
        let err = refuse(&k, &bad);
        assert!(
            err.to_string().contains("not a plain file name"),
            "{name}: {err}"
        );
        assert_eq!(err.exit().code(), 11);
    }
}

#[test]
fn links_and_devices_are_refused() {
    let k = keys();
    let (m, s) = signed_manifest(&k, &[("interfaces", b"")]);
    for kind in [
        tar::EntryType::Symlink,
        tar::EntryType::Link,
        tar::EntryType::Char,
        tar::EntryType::Directory,
    ] {
        let member = Member {
            name: b"interfaces",
            kind,
            data: b"",
            link: Some(b"/etc/shadow"),
        };
        let bad = craft(&[
            file("manifest.json", &m),
            file("manifest.json.minisig", &s),
            member,
        ]);
        let err = refuse(&k, &bad);
        assert!(
            err.to_string().contains("not a regular file"),
            "{kind:?}: {err}"
        );
    }
}

#[test]
fn duplicate_unlisted_missing_and_reordered_members_are_refused() {
    let k = keys();
    let (m, s) = signed_manifest(&k, &[("a", b"1"), ("b", b"2")]);
    let head = || vec![file("manifest.json", &m), file("manifest.json.minisig", &s)];
    let cases: Vec<(Vec<Member>, &str)> = vec![
        (
            [head(), vec![file("a", b"1"), file("a", b"1")]].concat(),
            "appears twice",
        ),
        (
            [
                head(),
                vec![file("a", b"1"), file("b", b"2"), file("c", b"3")],
            ]
            .concat(),
            "not listed",
        ),
        (
            [head(), vec![file("a", b"1")]].concat(),
            "missing from the bundle",
        ),
        (
            [head(), vec![file("b", b"2"), file("a", b"1")]].concat(),
            "order",
        ),
        (
            [head(), vec![file("a", b"1"), file("b", b"X")]].concat(),
            "SHA-256 differs",
        ),
        (
            [head(), vec![file("a", b"1"), file("b", b"22")]].concat(),
            "manifest says 1",
        ),
        (
            vec![file("manifest.json.minisig", &s), file("manifest.json", &m)],
            "first",
        ),
    ];
    for (members, want) in cases {
        let err = refuse(&k, &craft(&members));
        assert!(err.to_string().contains(want), "want {want:?}, got: {err}");
    }
}

#[test]
fn a_signed_manifest_listing_a_bomb_is_stopped_before_it_fills_memory() {
    let k = keys();
    let big = vec![0u8; 200 << 20];
    let (m, s) = signed_manifest(&k, &[("interfaces", &big)]);
    let bomb = craft(&[
        file("manifest.json", &m),
        file("manifest.json.minisig", &s),
        file("interfaces", &big),
    ]);
    assert!(
        bomb.len() < 1 << 20,
        "compressed bomb is {} bytes",
        bomb.len()
    );
    let err = refuse(&k, &bomb);
    assert!(err.to_string().contains("gzip bomb"), "{err}");
}

#[test]
fn oversized_manifest_and_signature_are_refused_before_parsing() {
    let k = keys();
    let big_manifest = vec![b' '; (1 << 20) + 1];
    let (_, s) = signed_manifest(&k, &[]);
    let err = refuse(
        &k,
        &craft(&[
            file("manifest.json", &big_manifest),
            file("manifest.json.minisig", &s),
        ]),
    );
    assert!(
        err.to_string()
            .contains("\"manifest.json\" is 1048577 bytes, over the limit of 1048576"),
        "{err}"
    );
    let (m, _) = signed_manifest(&k, &[]);
    let big_sig = vec![b'A'; (4 << 10) + 1];
    let err = refuse(
        &k,
        &craft(&[
            file("manifest.json", &m),
            file("manifest.json.minisig", &big_sig),
        ]),
    );
    assert!(err.to_string().contains("over the limit of 4096"), "{err}");
}

#[test]
fn building_in_parallel_gives_the_same_bytes_as_one_by_one() {
    let k = keys();
    let fleet = load_fleet(&profiles()).unwrap();
    let hosts: Vec<_> = fleet.hosts.iter().collect();
    let parallel = builder::build::build_all(&hosts, &k.sk, P);
    let serial: Vec<_> = hosts.iter().map(|h| build_host(h, &k.sk, P)).collect();
    assert_eq!(parallel, serial);
}

// ---- nothing after the signature is decompressed before the signature is checked ----

/// Incompressible bytes, so that reading them shows in the compressed bytes consumed.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Verifies through a reader that counts what was decompressed: the error, and the bytes of tar
/// stream and of compressed input read when it was returned.
fn refuse_counting(k: &Keys, archive: &[u8]) -> (VerifyError, u64, u64) {
    let opts = opts("gw1");
    let mut reader = bundle::archive::MemberReader::new(archive, &opts.limits).unwrap();
    let err = bundle::verify::verify_reader(&mut reader, std::slice::from_ref(&k.pk), &opts)
        .expect_err("bundle was accepted");
    (err, reader.decompressed(), reader.compressed_consumed())
}

#[test]
fn a_bundle_signed_by_another_key_is_refused_before_its_members_are_decompressed() {
    let (k, other) = (keys(), keys());
    let big = noise(8 << 20);
    let (m, s) = signed_manifest(&other, &[("interfaces", &big), ("ovs.json", b"{}")]);
    let archive = craft(&[
        file("manifest.json", &m),
        file("manifest.json.minisig", &s),
        file("interfaces", &big),
        file("ovs.json", b"{}"),
    ]);
    assert!(archive.len() > 8 << 20);
    let (err, tar_bytes, compressed) = refuse_counting(&k, &archive);
    assert!(matches!(err, VerifyError::UntrustedKey { .. }), "{err}");
    // The manifest, the signature and their headers: a few KiB, not 8 MiB.
    assert!(tar_bytes < 8 << 10, "{tar_bytes} bytes decompressed");
    assert!(compressed < 64 << 10, "{compressed} compressed bytes read");
    // The same with a trusted key and a manifest altered after signing.
    let (m, s) = signed_manifest(&k, &[("interfaces", &big), ("ovs.json", b"{}")]);
    let altered = String::from_utf8(m).unwrap().replace("gw1", "gw2");
    let archive = craft(&[
        file("manifest.json", altered.as_bytes()),
        file("manifest.json.minisig", &s),
        file("interfaces", &big),
        file("ovs.json", b"{}"),
    ]);
    let (err, tar_bytes, compressed) = refuse_counting(&k, &archive);
    assert!(matches!(err, VerifyError::BadSignature { .. }), "{err}");
    assert!(tar_bytes < 8 << 10, "{tar_bytes} bytes decompressed");
    assert!(compressed < 64 << 10, "{compressed} compressed bytes read");
}

/// A validly signed manifest saying a member is 10 bytes, and an archive holding 8 MiB under that
/// name (second to last): refused from the member's header, before its data is decompressed.
#[test]
fn a_member_larger_than_the_signed_manifest_says_is_refused_before_it_is_decompressed() {
    let k = keys();
    let big = noise(8 << 20);
    let (m, s) = signed_manifest(&k, &[("interfaces", &big[..10]), ("ovs.json", b"{}")]);
    let archive = craft(&[
        file("manifest.json", &m),
        file("manifest.json.minisig", &s),
        file("interfaces", &big),
        file("ovs.json", b"{}"),
    ]);
    let (err, tar_bytes, compressed) = refuse_counting(&k, &archive);
    assert!(
        err.to_string()
            .contains("member \"interfaces\": 8388608 bytes, manifest says 10"),
        "{err}"
    );
    assert!(tar_bytes < 8 << 10, "{tar_bytes} bytes decompressed");
    assert!(compressed < 64 << 10, "{compressed} compressed bytes read");
}

/// minisign's legacy mode (`minisign -S -l`: Ed25519 over the data itself) is refused by name.
#[test]
fn a_legacy_minisign_signature_is_reported_as_such() {
    let k = keys();
    let dir = tempfile::tempdir().unwrap();
    let (m, _) = signed_manifest(&k, &[("interfaces", b"x")]);
    let manifest = dir.path().join("manifest.json");
    std::fs::write(&manifest, &m).unwrap();
    let out = std::process::Command::new("minisign")
        .arg("-S")
        .arg("-l")
        .arg("-s")
        .arg(k.pk_path.with_extension("key"))
        .arg("-m")
        .arg(&manifest)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("minisign is installed by the test command (apt-get install minisign)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let legacy = std::fs::read(dir.path().join("manifest.json.minisig")).unwrap();
    let archive = craft(&[
        file("manifest.json", &m),
        file("manifest.json.minisig", &legacy),
        file("interfaces", b"x"),
    ]);
    let err = refuse(&k, &archive);
    assert!(matches!(err, VerifyError::LegacySignature { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("legacy (non-prehashed) signature; re-sign with this builder"),
        "{err}"
    );
    assert_eq!(err.exit().code(), 10);
    // minisign itself accepts it: the signature is genuine, only of the wrong kind.
    let out = std::process::Command::new("minisign")
        .arg("-Vm")
        .arg(&manifest)
        .arg("-p")
        .arg(&k.pk_path)
        .output()
        .unwrap();
    assert!(out.status.success());
}
