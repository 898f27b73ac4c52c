//! How an apply can fail, and what each failure means to a script ([`bundle::Exit`]).

use crate::ovs::PlanError;
use crate::system::SysError;
use bundle::{Exit, VerifyError};
use std::fmt;

#[derive(Debug)]
pub enum ApplyError {
    /// The bundle was refused before anything changed.
    Verify(VerifyError),
    /// Refused before anything changed (serial, content, scope).
    Refused(String),
    /// The desired state conflicts with rows this tool does not own.
    Plan(Vec<PlanError>),
    /// Failed before the first change; nothing was changed.
    Unchanged(SysError),
    /// A step failed and the host was restored to its state before the apply.
    RolledBack { step: String, error: SysError },
    /// A step failed and restoring failed too.
    RollbackFailed {
        step: String,
        error: SysError,
        rollback: Vec<String>,
    },
    /// Undoing an interrupted apply failed.
    RecoveryFailed { target: u64, rollback: Vec<String> },
}

impl ApplyError {
    pub fn exit(&self) -> Exit {
        match self {
            ApplyError::Verify(e) => e.exit(),
            ApplyError::Refused(_) => Exit::Refused,
            ApplyError::RollbackFailed { .. } | ApplyError::RecoveryFailed { .. } => {
                Exit::RollbackFailed
            }
            _ => Exit::Failed,
        }
    }
}

impl fmt::Display for ApplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApplyError::Verify(e) => write!(f, "bundle refused: {e}"),
            ApplyError::Refused(e) => write!(f, "refused: {e}"),
            ApplyError::Plan(errors) => {
                let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
                write!(f, "cannot plan: {}; nothing was changed", list.join("; "))
            }
            ApplyError::Unchanged(e) => write!(f, "{e}; nothing was changed"),
            ApplyError::RolledBack { step, error } => write!(
                f,
                "{step} failed: {error}; the host was rolled back to its state before this apply"
            ),
            ApplyError::RollbackFailed {
                step,
                error,
                rollback,
            } => write!(
                f,
                "{step} failed: {error}; ROLLING BACK FAILED TOO: {}. The host may be half-applied: \
                 the next applier run retries the rollback",
                rollback.join("; ")
            ),
            ApplyError::RecoveryFailed { target, rollback } => write!(
                f,
                "undoing the interrupted apply of generation {target} FAILED: {}. The host may be \
                 half-applied: the next applier run retries",
                rollback.join("; ")
            ),
        }
    }
}
