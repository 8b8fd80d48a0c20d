//! The `file` store: the whole state in one JSON file, rewritten atomically (temp file,
//! fsync, rename, fsync of the directory) before a change is acknowledged.
//!
//! A missing file is a fresh deployment. An unreadable or corrupt file is an error that
//! stops start-up: silently starting empty would switch authentication off.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{
    Applied, BoxFuture, Command, Mode, PreviousToken, State, StateStore, StoreError, TenantState,
    TokenRecord,
};

const FORMAT_VERSION: u32 = 1;

/// The state file's shape.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OnDisk {
    version: u32,
    revision: u64,
    tenants: BTreeMap<String, OnDiskTenant>,
}

/// Fields added after format 1 was first written have serde defaults, so files written
/// before them still load (as the same format version).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OnDiskTenant {
    /// Kept (true exactly in mode `on`) for files written before `mode`.
    require_authentication: bool,
    /// Absent in older files: then `on` or `off` from `require_authentication`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mode: Option<Mode>,
    token: Option<TokenRecord>,
    #[serde(default)]
    previous: Option<PreviousToken>,
    revision: u64,
}

/// One JSON file holding the state.
#[derive(Debug)]
pub struct FileStore {
    path: PathBuf,
    /// The state as last written; writers hold the lock across the write.
    current: tokio::sync::Mutex<Option<State>>,
}

impl FileStore {
    pub fn new(path: PathBuf) -> FileStore {
        FileStore {
            path,
            current: tokio::sync::Mutex::new(None),
        }
    }

    fn io_error(&self, source: std::io::Error) -> StoreError {
        StoreError::Io {
            path: self.path.display().to_string(),
            source,
        }
    }
}

impl StateStore for FileStore {
    fn load(&self) -> BoxFuture<'_, Result<State, StoreError>> {
        Box::pin(async move {
            let mut current = self.current.lock().await;
            let path = self.path.clone();
            let state = tokio::task::spawn_blocking(move || read(&path))
                .await
                .map_err(|e| self.io_error(std::io::Error::other(e)))??;
            *current = Some(state.clone());
            Ok(state)
        })
    }

    fn apply(
        &self,
        cmd: Command,
        if_match: Option<u64>,
    ) -> BoxFuture<'_, Result<Applied, StoreError>> {
        Box::pin(async move {
            let mut current = self.current.lock().await;
            let base = match current.as_ref() {
                Some(state) => state.clone(),
                None => {
                    let path = self.path.clone();
                    tokio::task::spawn_blocking(move || read(&path))
                        .await
                        .map_err(|e| self.io_error(std::io::Error::other(e)))??
                }
            };
            let tenant_revision = base.tenant(cmd.tenant()).revision;
            if if_match.is_some_and(|expected| expected != tenant_revision) {
                return Err(StoreError::Conflict {
                    current: tenant_revision,
                });
            }
            let next = base.apply(&cmd);
            let path = self.path.clone();
            let bytes = encode(&next);
            tokio::task::spawn_blocking(move || write_atomically(&path, &bytes))
                .await
                .map_err(|e| self.io_error(std::io::Error::other(e)))?
                .map_err(|e| self.io_error(e))?;
            *current = Some(next.clone());
            Ok(Applied {
                revision: next.revision,
                tenant: next.tenant(cmd.tenant()),
                state: Some(next),
                replicas: None,
            })
        })
    }
}

fn read(path: &Path) -> Result<State, StoreError> {
    let shown = || path.display().to_string();
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
        Err(source) => {
            return Err(StoreError::Io {
                path: shown(),
                source,
            })
        }
    };
    let disk: OnDisk = serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
        path: shown(),
        problem: format!("not a valid state file: {e}"),
    })?;
    if disk.version != FORMAT_VERSION {
        return Err(StoreError::Corrupt {
            path: shown(),
            problem: format!("format version {} is not {FORMAT_VERSION}", disk.version),
        });
    }
    let tenants = disk
        .tenants
        .into_iter()
        .map(|(name, t)| {
            let mode = t.mode.unwrap_or(if t.require_authentication {
                Mode::On
            } else {
                Mode::Off
            });
            let state = TenantState {
                mode,
                token: t.token,
                previous: t.previous,
                revision: t.revision,
            };
            (name, state)
        })
        .collect();
    Ok(State {
        revision: disk.revision,
        tenants,
    })
}

fn encode(state: &State) -> Vec<u8> {
    let disk = OnDisk {
        version: FORMAT_VERSION,
        revision: state.revision,
        tenants: state
            .tenants
            .iter()
            .map(|(name, t)| {
                let tenant = OnDiskTenant {
                    require_authentication: t.require_authentication(),
                    mode: Some(t.mode),
                    token: t.token.clone(),
                    previous: t.previous.clone(),
                    revision: t.revision,
                };
                (name.clone(), tenant)
            })
            .collect(),
    };
    let mut bytes = serde_json::to_vec_pretty(&disk).expect("state serialises");
    bytes.push(b'\n');
    bytes
}

/// Temp file in the same directory, fsync, rename over the old file, fsync the directory:
/// a crash at any point leaves either the old or the new file, never a mix.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".state-")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::token::Digest;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn changes_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.json");
        runtime().block_on(async {
            let store = FileStore::new(path.clone());
            assert_eq!(
                store.load().await.unwrap(),
                State::default(),
                "missing → fresh"
            );
            let token = TokenRecord {
                digest: Digest([7; 32]),
                created_at_ms: 10,
                expires_at_ms: 20,
            };
            store
                .apply(
                    Command::SetToken {
                        tenant: "acme".into(),
                        token: token.clone(),
                        previous_valid_until_ms: None,
                    },
                    None,
                )
                .await
                .unwrap();
            let written = store
                .apply(
                    Command::SetMode {
                        tenant: "acme".into(),
                        mode: Mode::On,
                    },
                    Some(1),
                )
                .await
                .unwrap()
                .state
                .unwrap();
            let conflict = store
                .apply(
                    Command::RevokeToken {
                        tenant: "acme".into(),
                    },
                    Some(1),
                )
                .await;
            assert!(matches!(conflict, Err(StoreError::Conflict { current: 2 })));
            let reopened = FileStore::new(path.clone()).load().await.unwrap();
            assert_eq!(reopened, written);
            assert_eq!(reopened.tenant("acme").token, Some(token));
        });
        let text = fs::read_to_string(&path).unwrap();
        assert!(
            text.contains(&"07".repeat(32)),
            "digest stored as hex: {text}"
        );
        let leftovers: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name() != "state.json")
            .collect();
        assert!(leftovers.is_empty(), "no temp files left: {leftovers:?}");
    }

    /// A file written before `mode` and `previous` existed, byte for byte as the seed
    /// wrote it.
    const SEED_FILE: &str = r#"{
  "version": 1,
  "revision": 3,
  "tenants": {
    "acme": {
      "require_authentication": true,
      "token": {
        "sha256": "0707070707070707070707070707070707070707070707070707070707070707",
        "created_at_ms": 10,
        "expires_at_ms": 20
      },
      "revision": 3
    },
    "open": {
      "require_authentication": false,
      "token": null,
      "revision": 1
    }
  }
}
"#;

    #[test]
    fn a_file_of_the_seed_format_loads_and_keeps_its_meaning() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        fs::write(&path, SEED_FILE).unwrap();
        let state = runtime()
            .block_on(FileStore::new(path.clone()).load())
            .unwrap();
        assert_eq!(state.revision, 3);
        let acme = state.tenant("acme");
        assert_eq!(acme.mode, Mode::On, "require_authentication: true is `on`");
        assert_eq!(acme.previous, None);
        assert_eq!(acme.token.unwrap().expires_at_ms, 20);
        assert_eq!(state.tenant("open").mode, Mode::Off);
        // Written back, it holds both the seed's flag and the mode.
        let text = String::from_utf8(encode(&state)).unwrap();
        assert!(text.contains("\"require_authentication\": true"), "{text}");
        assert!(text.contains("\"mode\": \"on\""), "{text}");
    }

    #[test]
    fn a_mode_and_an_overlap_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let token = |n: u8, created_at_ms| TokenRecord {
            digest: Digest([n; 32]),
            created_at_ms,
            expires_at_ms: 1_000_000,
        };
        runtime().block_on(async {
            let store = FileStore::new(path.clone());
            store.load().await.unwrap();
            let cmds = [
                Command::SetMode {
                    tenant: "acme".into(),
                    mode: Mode::Report,
                },
                Command::SetToken {
                    tenant: "acme".into(),
                    token: token(1, 10),
                    previous_valid_until_ms: None,
                },
                Command::SetToken {
                    tenant: "acme".into(),
                    token: token(2, 20),
                    previous_valid_until_ms: Some(5_000),
                },
            ];
            for cmd in cmds {
                store.apply(cmd, None).await.unwrap();
            }
            let acme = FileStore::new(path.clone())
                .load()
                .await
                .unwrap()
                .tenant("acme");
            assert_eq!(acme.mode, Mode::Report);
            assert_eq!(acme.token, Some(token(2, 20)));
            let previous = acme.previous.unwrap();
            assert_eq!(
                (previous.token, previous.valid_until_ms),
                (token(1, 10), 5_000)
            );
        });
    }

    #[test]
    fn a_corrupt_file_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        fs::write(&path, "{\"version\": 1, \"revision\": ").unwrap();
        let err = runtime()
            .block_on(FileStore::new(path.clone()).load())
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains("not a valid state file"), "{text}");
    }
}
