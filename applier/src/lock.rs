//! One apply at a time: an exclusive `flock` on the state directory's lock file, waited for
//! briefly, then refused with a clear message.

use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

pub struct Lock(#[allow(dead_code)] Flock<File>);

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "another applier is running (lock {path} held for {secs} s); try again when it is done"
    )]
    Busy { path: String, secs: u64 },
}

pub fn acquire(path: &Path, wait: Duration) -> Result<Lock, LockError> {
    let deadline = Instant::now() + wait;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|source| LockError::Io {
            path: path.display().to_string(),
            source,
        })?;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(Lock(lock)),
            Err((f, errno)) if errno == nix::errno::Errno::EWOULDBLOCK => {
                if Instant::now() >= deadline {
                    return Err(LockError::Busy {
                        path: path.display().to_string(),
                        secs: wait.as_secs(),
                    });
                }
                file = f;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err((_, errno)) => {
                return Err(LockError::Io {
                    path: path.display().to_string(),
                    source: errno.into(),
                })
            }
        }
    }
}
