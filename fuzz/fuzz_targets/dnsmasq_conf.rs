//! Untrusted `dnsmasq.conf` bytes through the applier's check: must never panic, and anything
//! accepted must be exactly the rendering of its values, every line a comment or an option the
//! builder writes (so no line of a hostile bundle reaches dnsmasq unchecked).
#![no_main]
use libfuzzer_sys::fuzz_target;

const OPTIONS: [&str; 7] = [
    "port=0",
    "bind-dynamic",
    "except-interface=lo",
    "dhcp-authoritative",
    "interface=",
    "dhcp-range=",
    "dhcp-host=",
];

fuzz_target!(|data: &[u8]| {
    if let Ok(conf) = bundle::dhcp::parse(data) {
        assert_eq!(conf.render().as_bytes(), data);
        let text = std::str::from_utf8(data).unwrap();
        for line in text.lines().filter(|l| !l.starts_with("# ")) {
            assert!(OPTIONS.iter().any(|o| line.starts_with(o)), "{line:?}");
            assert!(!line.contains(char::is_whitespace), "{line:?}");
        }
    }
});
