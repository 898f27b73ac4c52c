//! Arbitrary profile text through parsing and validation: errors, never panics; anything
//! accepted renders.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut diags = Vec::new();
    let path = std::path::Path::new("/nonexistent/hosts/h.toml");
    if let Some(host) = builder::profile::parse_host(path, "hosts/h.toml", text, &mut diags) {
        let _ = builder::render::render_host(&host);
    }
    for d in &diags {
        let _ = d.to_string();
    }
});
