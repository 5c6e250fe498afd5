//! Atomic file creation: the bytes go to a temporary file in the destination folder, which is then
//! renamed into place. A reader never sees half a file, and an existing file is never replaced
//! unless the caller asks for it.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Why a file could not be created.
#[derive(Debug, thiserror::Error)]
pub enum AtomicWriteError {
    /// The destination exists and the caller asked not to replace it.
    #[error("{path} already exists; layercheck never overwrites metric files\n(hint: remove it, or write to another --output_path)")]
    Exists { path: PathBuf },
    /// Any I/O failure, with the path it concerns.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// Whether an existing destination may be replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replace {
    /// Fail with [`AtomicWriteError::Exists`] (checked again at the rename, so no race clobbers).
    Never,
    /// Replace it, as Python's `open(path, "w")` would.
    Allowed,
}

/// Creates `path` from what `fill` writes into a buffered writer; the folder is created if needed.
/// `fill` errors are reported as I/O errors of `path`.
pub fn write_file<F>(path: &Path, replace: Replace, fill: F) -> Result<(), AtomicWriteError>
where
    F: FnOnce(&mut dyn Write) -> std::io::Result<()>,
{
    let io = |source| AtomicWriteError::Io { path: path.to_path_buf(), source };
    if replace == Replace::Never && path.exists() {
        return Err(AtomicWriteError::Exists { path: path.to_path_buf() });
    }
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = tempfile::Builder::new().prefix(".layercheck-").suffix(".tmp").tempfile_in(dir).map_err(io)?;
    {
        let mut w = BufWriter::with_capacity(1 << 20, tmp.as_file());
        fill(&mut w).map_err(io)?;
        w.flush().map_err(io)?;
    }
    // Temporary files are private (0600); the result is an ordinary file anyone may read.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o644)).map_err(io)?;
    }
    match replace {
        Replace::Never => tmp.persist_noclobber(path).map_err(|e| {
            if e.error.kind() == std::io::ErrorKind::AlreadyExists {
                AtomicWriteError::Exists { path: path.to_path_buf() }
            } else {
                io(e.error)
            }
        })?,
        Replace::Allowed => tmp.persist(path).map_err(|e| io(e.error))?,
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_creates_folders_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/file.txt");
        write_file(&path, Replace::Never, |w| w.write_all(b"one")).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one");
        let err = write_file(&path, Replace::Never, |w| w.write_all(b"two")).unwrap_err();
        assert!(matches!(err, AtomicWriteError::Exists { .. }), "{err}");
        assert!(err.to_string().contains("hint:"));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one");
        write_file(&path, Replace::Allowed, |w| w.write_all(b"three")).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "three");
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "no temporary file left: {names:?}");
    }

    #[test]
    fn a_failing_fill_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file.txt");
        let err = write_file(&path, Replace::Never, |_| Err(std::io::Error::other("boom"))).unwrap_err();
        assert!(err.to_string().contains("boom"));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
