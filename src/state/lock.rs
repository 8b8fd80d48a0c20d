//! One writer per state file: an advisory `flock` on `<state file>.lock`, held for the
//! life of the process.
//!
//! The lock is on a file of its own because the state file itself is replaced by a
//! rename on every write, and a lock on a replaced inode guards nothing. A second
//! gateway pointed at the same state file (a copy-pasted unit, a container started
//! twice on one volume) fails at start instead of overwriting the first one's changes.
//! The kernel drops the lock when the process ends, however it ends. An upgrade
//! ([`crate::upgrade`]) lends it to the new process ([`Held::release`]) once this one
//! takes no more changes, and takes it back if that process fails to start.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use rustix::fs::{flock, FlockOperation};

/// The held lock; released when dropped.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
    pub path: PathBuf,
}

/// The lock of one state file, held by this process, or lent out during an upgrade.
#[derive(Debug)]
pub struct Held {
    state: PathBuf,
    lock: std::sync::Mutex<Option<StateLock>>,
}

impl Held {
    pub fn acquire(state: &Path) -> io::Result<Held> {
        Ok(Held {
            state: state.to_path_buf(),
            lock: std::sync::Mutex::new(Some(acquire(state)?)),
        })
    }

    /// Lets the lock go (to an upgrade's new process).
    pub fn release(&self) {
        self.slot().take();
    }

    /// Takes the lock back (the new process failed and has ended).
    pub fn retake(&self) -> io::Result<()> {
        let mut slot = self.slot();
        if slot.is_none() {
            *slot = Some(acquire(&self.state)?);
        }
        Ok(())
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<StateLock>> {
        self.lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Takes the lock of `state` (creating its folder and the lock file if needed), or
/// fails at once when another process holds it.
pub fn acquire(state: &Path) -> io::Result<StateLock> {
    let mut name = state.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    let path = state.with_file_name(name);
    let context = |e: io::Error, what: &str| {
        io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| context(e, "cannot create the folder of"))?;
    }
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| context(e, "cannot open the state lock"))?;
    match flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(StateLock { _file: file, path }),
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            format!(
                "another authgate process holds {}: one gateway per state file (use state.backend: redis for several)",
                path.display()
            ),
        )),
        Err(e) => Err(context(e.into(), "cannot lock")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("data/state.json");
        let first = acquire(&state).unwrap();
        assert_eq!(first.path, dir.path().join("data/state.json.lock"));
        let err = acquire(&state).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        assert!(err.to_string().contains("state.json.lock"), "{err}");
        drop(first);
        acquire(&state).unwrap();
    }

    #[test]
    fn a_released_lock_can_be_taken_by_another_and_retaken_once_it_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state.json");
        let held = Held::acquire(&state).unwrap();
        held.release();
        let other = acquire(&state).unwrap();
        assert_eq!(held.retake().unwrap_err().kind(), io::ErrorKind::WouldBlock);
        drop(other);
        held.retake().unwrap();
        acquire(&state).unwrap_err();
    }
}
