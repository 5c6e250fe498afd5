//! An exclusive lock on a file, so that parallel test processes compute a case, or regenerate a
//! golden file, once.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// An exclusive lock on a file, released on drop.
pub struct FileLock {
    file: std::fs::File,
}

impl FileLock {
    /// Waits for the lock on `path` (created, with its folder, when absent).
    pub fn acquire(path: &Path) -> Result<Self, String> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        file.lock().map_err(|e| format!("could not lock {}: {e}", path.display()))?;
        Ok(FileLock { file })
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

/// A lock file for `path` outside the repository (the system's temporary folder), so that
/// locks never show in `git status`.
pub fn lock_path(path: &Path) -> PathBuf {
    let abs = std::fs::canonicalize(path.parent().unwrap_or(Path::new("."))).unwrap_or_default().join(path.file_name().unwrap_or_default());
    let digest = format!("{:x}", Sha256::digest(abs.to_string_lossy().as_bytes()));
    std::env::temp_dir().join("layercheck-locks").join(format!("{}.lock", &digest[..16]))
}
