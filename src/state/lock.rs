//! One writer per state file: an advisory `flock` on `<state file>.lock`, held for the
//! life of the process.
//!
//! The lock is on a file of its own because the state file itself is replaced by a
//! rename on every write, and a lock on a replaced inode guards nothing. A second
//! gateway pointed at the same state file (a copy-pasted unit, a container started
//! twice on one volume) fails at start instead of overwriting the first one's changes.
//! The kernel drops the lock when the process ends, however it ends.

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
}
