//! The server's data directory: created private to its user, and claimed by one server at a
//! time.
//!
//! Two servers on one directory would both drive the same processes and then refuse each
//! other's appends; the second is refused at start instead, with the first one's pid. The
//! lock is the kernel's (`flock` on `<data-dir>/lock`), so it is released when the holder dies,
//! even by SIGKILL: a stale lock file never blocks a restart.
//!
//! The directory holds secrets (the router admin secrets, the API tokens' hashes and the
//! admin token file) and the event log: it is mode 0700, and the files the server writes in
//! it are 0600. A directory found with wider permissions is tightened, and the log says so.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The claimed data directory; the claim lasts as long as this value.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    _lock: File,
}

impl DataDir {
    /// Creates `path` (mode 0700) if needed, tightens it if others can read it, and claims it
    /// for this process; refused when another server holds it.
    pub fn claim(path: &Path) -> anyhow::Result<DataDir> {
        DataDir::claim_as(path, false)
    }

    /// [`DataDir::claim`] by one replica of several on a shared event log: replicas on one
    /// machine share the directory (the run files of the processes one leader started are how
    /// the next adopts them); a server running alone is refused beside them, and they beside it.
    pub fn claim_shared(path: &Path) -> anyhow::Result<DataDir> {
        DataDir::claim_as(path, true)
    }

    fn claim_as(path: &Path, shared: bool) -> anyhow::Result<DataDir> {
        let create = std::fs::DirBuilder::new().recursive(true).mode(0o700).create(path);
        create.map_err(|e| anyhow::anyhow!("cannot create the data directory {}: {e}", path.display()))?;
        let meta = std::fs::metadata(path)
            .map_err(|e| anyhow::anyhow!("cannot read the data directory {}: {e}", path.display()))?;
        if meta.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(|e| {
                anyhow::anyhow!(
                    "the data directory {} is open to other users and cannot be made private: {e}",
                    path.display()
                )
            })?;
            tracing::warn!(dir = %path.display(), was = format!("{:o}", meta.permissions().mode() & 0o777), "data directory made private (0700)");
        }
        let lock_path = path.join("lock");
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", lock_path.display()))?;
        let locked = if shared { lock.try_lock_shared() } else { lock.try_lock() };
        match locked {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = lock.read_to_string(&mut holder);
                let holder = holder.trim();
                anyhow::bail!(
                    "another ringfence server{} uses the data directory {}; stop it first, or give this one its own --data-dir",
                    if holder.is_empty() { String::new() } else { format!(" (pid {holder})") },
                    path.display()
                );
            }
            Err(TryLockError::Error(e)) => anyhow::bail!("cannot lock {}: {e}", lock_path.display()),
        }
        // Who holds it, for the message the next one gets (replicas are several: none named).
        if !shared {
            let _ = lock.set_len(0);
            let _ = lock.rewind();
            let _ = write!(lock, "{}", std::process::id());
        }
        Ok(DataDir { path: path.to_owned(), _lock: lock })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes a file the server wrote private (0600), for files a library created with the
    /// process's umask (the SQLite log and its journal files).
    pub fn make_private(file: &Path) {
        if file.exists()
            && let Err(e) = std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600))
        {
            tracing::warn!(file = %file.display(), error = %e, "cannot make the file private");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_claim_is_refused_with_the_holder_and_a_released_one_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let first = DataDir::claim(&data).unwrap();
        assert_eq!(std::fs::metadata(&data).unwrap().permissions().mode() & 0o777, 0o700);
        let err = DataDir::claim(&data).unwrap_err().to_string();
        assert!(
            err.contains("another ringfence server") && err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(first);
        DataDir::claim(&data).expect("free again once the holder is gone");
    }

    #[test]
    fn an_open_directory_is_made_private() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
        let _claim = DataDir::claim(&data).unwrap();
        assert_eq!(std::fs::metadata(&data).unwrap().permissions().mode() & 0o777, 0o700);
    }
}
