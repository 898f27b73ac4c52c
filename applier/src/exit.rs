//! Exit codes, documented in `docs/exit-codes.md`. Scripts and systemd units rely on them.

/// Success; for `plan` and `status`: nothing would change / no drift.
pub const OK: u8 = 0;
/// The operation failed; the host was left as it was (or rolled back).
pub const FAILED: u8 = 1;
/// `plan`/`status`: changes would be made / drift found.
pub const CHANGES: u8 = 2;
/// Rolling back a failed apply failed too: the host's state needs a person.
pub const ROLLBACK_FAILED: u8 = 3;
/// Another apply holds the lock.
pub const LOCKED: u8 = 4;
/// Bad command line.
pub const USAGE: u8 = 64;
// 10-14 come from `bundle::VerifyError::exit_code`: 10 not authentic, 11 malformed,
// 12 for another host, 13 expired, 14 no trusted keys.
