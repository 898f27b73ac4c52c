//! `builder inspect`: a bundle shown to a person, with every PSK replaced by its fingerprint.

use bundle::time::format_utc;
use bundle::verify::{read_unverified, VerifyError};
use bundle::{Limits, OvsState};
use std::fmt::Write;

/// Renders `compressed` for display. Checks structure and hashes, not the signer: the output says
/// so, and `applier verify` is the check that counts.
pub fn inspect(compressed: &[u8]) -> Result<String, VerifyError> {
    let b = read_unverified(compressed, &Limits::default())?;
    let m = &b.manifest;
    let mut out = String::new();
    let _ = writeln!(out, "host:      {}", m.host);
    let _ = writeln!(out, "serial:    {}", m.serial);
    let _ = writeln!(
        out,
        "expires:   {}",
        m.expires
            .map_or("never".to_string(), |e| format!("{} ({e})", format_utc(e)))
    );
    let _ = writeln!(out, "builder:   {}", m.builder);
    let _ = writeln!(
        out,
        "signed by: key {} (not checked here; `applier verify` checks it against trusted keys)",
        b.signed_by
    );
    let _ = writeln!(out, "files:");
    for f in &m.files {
        let _ = writeln!(
            out,
            "  {:<16} {:04o} {:>8} bytes  sha256:{}",
            f.path, f.mode, f.size, f.sha256
        );
    }
    for f in &m.files {
        let data = b.file(&f.path).unwrap_or_default();
        let shown = if f.path == bundle::OVS_NAME {
            let _ = writeln!(out, "\n--- {} (PSKs redacted) ---", f.path);
            match OvsState::from_bytes(data) {
                Ok(state) => String::from_utf8(state.redacted().to_bytes()).unwrap_or_default(),
                Err(e) => format!(
                    "(not valid desired state: {e}; contents withheld as it may hold secrets)\n"
                ),
            }
        } else if f.path == bundle::OVN_NAME {
            let _ = writeln!(out, "\n--- {} (private key redacted) ---", f.path);
            match bundle::ovn::OvnState::from_bytes(data) {
                Ok(state) => String::from_utf8(state.redacted().to_bytes()).unwrap_or_default(),
                Err(e) => {
                    format!("(not a valid ovn.json: {e}; contents withheld as it may hold a key)\n")
                }
            }
        } else {
            let _ = writeln!(out, "\n--- {} ---", f.path);
            String::from_utf8_lossy(data).into_owned()
        };
        out.push_str(&shown);
    }
    Ok(out)
}
