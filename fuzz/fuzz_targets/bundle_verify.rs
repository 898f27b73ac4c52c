//! Untrusted bundle bytes through the reader and verifier: must never panic, and anything
//! accepted must be what its signed manifest says.
#![no_main]
use libfuzzer_sys::fuzz_target;

/// The public half of the key that signed the seed corpus (its secret half was not kept).
const KEY: &str = "untrusted comment: minisign public key: E5F7EB727E4DDB04\nRWQE201+cuv35QJ9Dk+Dm/jlN5DkKunaMCIQAZ6ar17GLWauoihYlOXL\n";

fuzz_target!(|data: &[u8]| {
    let key = bundle::TrustedKey::parse(KEY, "fuzz").expect("valid key");
    let opts = bundle::VerifyOptions {
        host: Some("gw1".into()),
        now: Some(0),
        ..Default::default()
    };
    if let Ok(b) = bundle::verify_bundle(data, &[key], &opts) {
        for f in &b.manifest.files {
            assert_eq!(bundle::sha256_hex(b.file(&f.path).unwrap()), f.sha256);
        }
    }
    if let Ok(b) = bundle::read_unverified(data, &bundle::Limits::default()) {
        assert_eq!(b.files.len(), b.manifest.files.len());
    }
});
