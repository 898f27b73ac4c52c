//! Exit codes of both programs, documented in `docs/exit-codes.md`. Scripts and systemd units rely
//! on them, so they live in one place: each outcome is a variant, and only [`Exit::code`] turns it
//! into a number.

/// What a command's outcome means to a script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Success; for `plan` and `status`: nothing would change / no drift.
    Ok,
    /// The operation failed; the host was left as it was (or rolled back). For the builder: invalid
    /// profiles or any other failure.
    Failed,
    /// `plan`/`status`: changes would be made / drift found.
    Changes,
    /// Rolling back a failed apply failed too: the host's state needs a person.
    RollbackFailed,
    /// Another apply holds the lock.
    Locked,
    /// `status`: nothing was ever applied on this host (no generation to compare with).
    NothingApplied,
    /// The bundle is not authentic (untrusted or revoked key, bad signature, altered contents).
    NotAuthentic,
    /// The bundle is malformed.
    Malformed,
    /// The bundle is for another host.
    WrongHost,
    /// The bundle has expired.
    Expired,
    /// No trusted keys are configured.
    NoTrustedKeys,
    /// Refused before any change (serial, reused serial, scope, contents).
    Refused,
    /// Bad command line.
    Usage,
}

impl Exit {
    pub const fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Failed => 1,
            Exit::Changes => 2,
            Exit::RollbackFailed => 3,
            Exit::Locked => 4,
            Exit::NothingApplied => 5,
            Exit::NotAuthentic => 10,
            Exit::Malformed => 11,
            Exit::WrongHost => 12,
            Exit::Expired => 13,
            Exit::NoTrustedKeys => 14,
            Exit::Refused => 15,
            Exit::Usage => 64,
        }
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e.code())
    }
}
