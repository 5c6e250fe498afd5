//! An exclusive lock on a file, so that parallel test processes compute a case, or regenerate a
//! golden file, once.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Why a lock could not be taken: the file or its folder could not be made, or locking failed.
#[derive(Debug, thiserror::Error)]
pub enum FileLockError {
    #[error("{}: {source}", path.display())]
    Create { path: PathBuf, #[source] source: std::io::Error },
    #[error("could not lock {}: {source}", path.display())]
    Lock { path: PathBuf, #[source] source: std::io::Error },
}

/// An exclusive lock on a file, released on drop.
pub struct FileLock {
    file: std::fs::File,
}

impl FileLock {
    /// Waits for the lock on `path` (created, with its folder, when absent).
    pub fn acquire(path: &Path) -> Result<Self, FileLockError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| FileLockError::Create { path: dir.to_path_buf(), source })?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|source| FileLockError::Create { path: path.to_path_buf(), source })?;
        file.lock().map_err(|source| FileLockError::Lock { path: path.to_path_buf(), source })?;
        Ok(FileLock { file })
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

/// A lock file for `path` outside the repository (the system's temporary folder), so that
/// locks never show in `git status`. The same for every process whether or not `path` or its
/// folder exists yet (the path is made absolute, not resolved).
pub fn lock_path(path: &Path) -> PathBuf {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let digest = format!("{:x}", Sha256::digest(abs.to_string_lossy().as_bytes()));
    std::env::temp_dir().join("layercheck-locks").join(format!("{}.lock", &digest[..16]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_files_lock_does_not_depend_on_whether_its_folder_exists() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("golden/model/fwd-b1-s8.safetensors");
        let before = lock_path(&file);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        assert_eq!(lock_path(&file), before);
        assert_ne!(lock_path(&dir.path().join("golden/model/fwd-b1-s16.safetensors")), before);
    }
}
