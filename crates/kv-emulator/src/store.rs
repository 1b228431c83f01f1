//! The vault's contents: secrets with their versions, and soft-deleted secrets, kept in memory
//! and written to `<data_dir>/vault.json` (a temporary file, synced and renamed over the old one)
//! after every change, so a restarted emulator finds them again.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

/// One version of a secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Version {
    /// 32 lowercase hex digits.
    pub id: String,
    /// The value.
    pub value: String,
    /// `contentType`.
    #[serde(default)]
    pub content_type: Option<String>,
    /// `tags` (absent when never set).
    #[serde(default)]
    pub tags: Option<BTreeMap<String, String>>,
    /// `attributes.enabled`.
    pub enabled: bool,
    /// `attributes.nbf` (Unix seconds).
    #[serde(default)]
    pub nbf: Option<i64>,
    /// `attributes.exp` (Unix seconds).
    #[serde(default)]
    pub exp: Option<i64>,
    /// `attributes.created`.
    pub created: i64,
    /// `attributes.updated`.
    pub updated: i64,
}

/// A secret: its name as first written, and its versions in the order they were made.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Entry {
    /// The name (compared case-insensitively).
    pub name: String,
    /// All versions, oldest first.
    pub versions: Vec<Version>,
    /// The current version's id.
    pub current: String,
}

impl Entry {
    /// The current version.
    pub fn current(&self) -> &Version {
        self.version(&self.current)
            .expect("the current version exists")
    }

    /// A version by id (case-insensitive, as the service's ids).
    pub fn version(&self, id: &str) -> Option<&Version> {
        self.versions.iter().find(|v| v.id.eq_ignore_ascii_case(id))
    }

    /// A version by id, to change.
    pub fn version_mut(&mut self, id: &str) -> Option<&mut Version> {
        self.versions
            .iter_mut()
            .find(|v| v.id.eq_ignore_ascii_case(id))
    }
}

/// A soft-deleted secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Deleted {
    /// The secret as it was.
    pub entry: Entry,
    /// `deletedDate` (Unix seconds).
    pub deleted_date: i64,
    /// `scheduledPurgeDate` (Unix seconds).
    pub scheduled_purge_date: i64,
    /// When the deletion completes (Unix milliseconds); before that it is "being deleted".
    pub completes_at_ms: i64,
}

/// Everything the vault holds, keyed by lower-case name.
#[derive(Serialize, Deserialize, Default, Debug)]
pub struct State {
    /// Live secrets.
    pub secrets: BTreeMap<String, Entry>,
    /// Soft-deleted secrets.
    pub deleted: BTreeMap<String, Deleted>,
}

/// The state and where it is saved.
pub struct Store {
    path: PathBuf,
    state: Mutex<State>,
}

impl Store {
    /// Loads `<dir>/vault.json`, or starts empty.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("vault.json");
        let state = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(anyhow::anyhow!("{}: {e}", path.display())),
        };
        Ok(Store {
            path,
            state: Mutex::new(state),
        })
    }

    /// The state, locked.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("store lock")
    }

    /// Saves `state` (call with the lock held, after a change).
    pub fn save(&self, state: &State) -> anyhow::Result<()> {
        let bytes = serde_json::to_vec(state)?;
        let tmp = self.path.with_extension("json.tmp");
        {
            let mut f = private_file(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        Ok(())
    }
}

/// A new file readable by its owner only (it holds secret values).
pub fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(id: &str) -> Version {
        Version {
            id: id.into(),
            value: "v".into(),
            content_type: None,
            tags: None,
            enabled: true,
            nbf: None,
            exp: None,
            created: 1,
            updated: 1,
        }
    }

    #[test]
    fn a_saved_state_is_found_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        {
            let mut state = store.lock();
            state.secrets.insert(
                "db".into(),
                Entry {
                    name: "Db".into(),
                    versions: vec![version("a"), version("b")],
                    current: "b".into(),
                },
            );
            store.save(&state).unwrap();
        }
        let again = Store::open(dir.path()).unwrap();
        let state = again.lock();
        assert_eq!(state.secrets["db"].current().id, "b");
        assert_eq!(state.secrets["db"].name, "Db");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("vault.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
