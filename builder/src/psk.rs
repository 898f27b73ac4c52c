//! PSK rules of the profiles: how a key file is read and which values are usable keys. Host
//! profiles (`psk`, `psk_file`) and `fleet.toml` meshes (`psk_file`, `psk_secret_file`) both take
//! keys, and must accept and refuse exactly the same ones, so the rules live here once. The key
//! type itself, [`Psk`], is the bundle format's.

use bundle::psk::Psk;

/// Shortest PSK accepted, in bytes.
pub const MIN_PSK_LEN: usize = 16;

/// Why a value or file is not a usable PSK. The caller knows where it was named and turns this
/// into a diagnostic there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PskError {
    pub message: String,
    /// What the operator should do about it.
    pub hint: String,
}

impl PskError {
    pub fn new(message: impl Into<String>, hint: impl Into<String>) -> Self {
        PskError {
            message: message.into(),
            hint: hint.into(),
        }
    }
}

/// The key in a PSK file's contents: its one line, without the line break. `what` names the key
/// in messages, e.g. `PSK in "secrets/a.psk"`.
pub fn file_text(bytes: Vec<u8>, what: &str) -> Result<String, PskError> {
    let text = String::from_utf8(bytes).map_err(|_| {
        PskError::new(
            format!("{what} is not text"),
            "a PSK file holds the key as one line of text",
        )
    })?;
    let key = text.strip_suffix('\n').unwrap_or(&text);
    Ok(key.strip_suffix('\r').unwrap_or(key).to_string())
}

/// `value` as a PSK, if it is one IPsec can use: long enough, printable, no quote.
pub fn check(value: String, what: &str) -> Result<Psk, PskError> {
    let generate = "generate one, e.g. `head -c 32 /dev/urandom | base64`";
    if value.is_empty() {
        return Err(PskError::new(format!("{what} is empty"), generate));
    }
    if value.len() < MIN_PSK_LEN {
        return Err(PskError::new(
            format!(
                "{what} is {} bytes; at least {MIN_PSK_LEN} are required",
                value.len()
            ),
            "generate a longer one, e.g. `head -c 32 /dev/urandom | base64`",
        ));
    }
    if value.chars().any(|c| c.is_control() || c == '"') {
        return Err(PskError::new(
            format!("{what} contains a control character, a line break or '\"'"),
            "IPsec configuration cannot carry those; use printable characters only",
        ));
    }
    Ok(Psk::new(value))
}

/// A PSK file's contents as a usable key: [`file_text`], then [`check`].
pub fn from_file(bytes: Vec<u8>, what: &str) -> Result<Psk, PskError> {
    check(file_text(bytes, what)?, what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_break_is_not_part_of_the_key() {
        let key = "EXAMPLE-ONLY-0123456789";
        for text in [key.to_string(), format!("{key}\n"), format!("{key}\r\n")] {
            let psk = from_file(text.into_bytes(), "PSK").unwrap();
            assert_eq!(psk.expose(), key);
        }
        let err = from_file(format!("{key}\n\n").into_bytes(), "PSK").unwrap_err();
        assert!(err.message.contains("line break"), "{err}");
    }

    #[test]
    fn unusable_keys_are_refused_with_a_hint() {
        let short = check("short".into(), "psk").unwrap_err();
        assert_eq!(short.message, "psk is 5 bytes; at least 16 are required");
        assert!(short.hint.contains("longer"));
        assert!(check(String::new(), "psk").is_err());
        assert!(check("0123456789abcdef\"".into(), "psk").is_err());
        assert!(file_text(vec![0xff, 0xfe], "PSK").is_err());
    }
}
