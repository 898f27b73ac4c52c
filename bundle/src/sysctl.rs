//! `sysctl.conf` in a bundle: `key = value` lines. The builder writes it, the applier reads it and
//! installs it as a drop-in; the only keys a bundle may set are [`IP_FORWARD`] and
//! [`IP6_FORWARD`].

use std::collections::BTreeMap;

/// A kernel setting a bundle may carry: IPv4 forwarding, for a NAT forwarder.
pub const IP_FORWARD: &str = "net.ipv4.ip_forward";
/// Where the applier reads and writes [`IP_FORWARD`], relative to `/proc`.
pub const IP_FORWARD_PROC: &str = "sys/net/ipv4/ip_forward";
/// The other: IPv6 forwarding on every interface, for an IPv6 forwarder.
pub const IP6_FORWARD: &str = "net.ipv6.conf.all.forwarding";
/// Where the applier reads and writes [`IP6_FORWARD`], relative to `/proc`.
pub const IP6_FORWARD_PROC: &str = "sys/net/ipv6/conf/all/forwarding";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SysctlError {
    #[error("sysctl.conf is not text")]
    NotText,
    #[error("sysctl.conf: {0:?} is not key = value")]
    Syntax(String),
    #[error("sysctl.conf sets {0}; the applier only sets {IP_FORWARD} and {IP6_FORWARD}")]
    Forbidden(String),
}

/// The values a bundle's `sysctl.conf` sets.
pub fn parse(data: &[u8]) -> Result<BTreeMap<String, String>, SysctlError> {
    let text = std::str::from_utf8(data).map_err(|_| SysctlError::NotText)?;
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| SysctlError::Syntax(line.to_string()))?;
        let (k, v) = (k.trim(), v.trim());
        if k != IP_FORWARD && k != IP6_FORWARD {
            return Err(SysctlError::Forbidden(k.to_string()));
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

/// A `sysctl.conf` with a comment header (one line per `#` line) and the values.
pub fn render(header: &str, values: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    for line in header.lines() {
        out.push_str("# ");
        out.push_str(line);
        out.push('\n');
    }
    for (k, v) in values {
        out.push_str(&format!("{k} = {v}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ip_forward_may_be_set() {
        assert_eq!(
            parse(b"# c\nnet.ipv4.ip_forward = 1\n").unwrap()[IP_FORWARD],
            "1"
        );
        assert_eq!(
            parse(b"net.ipv6.conf.all.forwarding=1").unwrap()[IP6_FORWARD],
            "1"
        );
        assert_eq!(
            parse(b"kernel.modprobe = /tmp/x\n"),
            Err(SysctlError::Forbidden("kernel.modprobe".into()))
        );
    }

    #[test]
    fn render_reads_back() {
        let v = BTreeMap::from([(IP_FORWARD.to_string(), "1".to_string())]);
        let text = render("made by a test", &v);
        assert_eq!(text, "# made by a test\nnet.ipv4.ip_forward = 1\n");
        assert_eq!(parse(text.as_bytes()).unwrap(), v);
    }
}
