//! Atomic file creation: the bytes go to a temporary file in the destination folder, which is then
//! renamed into place. A reader never sees half a file, and an existing file is never replaced
//! unless the caller asks for it.
//!
//! Temporary files and folders are named `.layercheck-{pid}-{host}-{random}.tmp` (git-ignored). One
//! left behind by a killed process is removed by the first write of a process into the same
//! folder: when it was made on this machine and no process `{pid}` runs (Linux: no
//! `/proc/{pid}`), or when it is older than a day (the pid may have been reused). Another
//! machine's temporaries in a shared folder are judged by age alone: its pids are not ours to
//! look up.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The start of every temporary name.
pub const TEMP_PREFIX: &str = ".layercheck-";
/// The end of every temporary name.
pub const TEMP_SUFFIX: &str = ".tmp";
/// Past this age a temporary is stale whatever its pid.
const STALE_AGE: Duration = Duration::from_secs(24 * 3600);

/// Why a file could not be created.
#[derive(Debug, thiserror::Error)]
pub enum AtomicWriteError {
    /// The destination exists and the caller asked not to replace it.
    #[error("{path} already exists; layercheck never overwrites metric files or captures unless asked\n(hint: remove it, or write to another --output_path / --out)")]
    Exists { path: PathBuf },
    /// Any I/O failure, with the path it concerns.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// A component of the destination's folder is a file.
    #[error("cannot write {path}: {file} is a file, not a folder\n(hint: choose an output path whose folders are folders)")]
    NotAFolder { path: PathBuf, file: PathBuf },
}

/// The destination folder of `path` (`.` for a bare name), created with its parents; a component
/// that exists as a file is reported as such (not as "File exists").
pub fn prepare_folder(path: &Path) -> Result<PathBuf, AtomicWriteError> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
    if let Some(file) = dir.ancestors().find(|a| !a.as_os_str().is_empty() && a.exists() && !a.is_dir()) {
        return Err(AtomicWriteError::NotAFolder { path: path.to_path_buf(), file: file.to_path_buf() });
    }
    std::fs::create_dir_all(&dir).map_err(|source| AtomicWriteError::Io { path: path.to_path_buf(), source })?;
    Ok(dir)
}

/// A temporary file builder with layercheck's name (see the module doc).
pub fn temp_builder() -> tempfile::Builder<'static, 'static> {
    let mut b = tempfile::Builder::new();
    // The prefix must outlive the builder: one string per process.
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    b.prefix(PREFIX.get_or_init(|| format!("{TEMP_PREFIX}{}-{}-", std::process::id(), host_tag())).as_str()).suffix(TEMP_SUFFIX);
    b
}

/// This machine's name as it goes into temporary names: letters and digits only (no `-`, which
/// separates the name's parts).
pub fn host_tag() -> &'static str {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        let mut buf = [0u8; 256];
        // SAFETY: gethostname writes at most buf.len() bytes into buf.
        let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
        let name = if ok { String::from_utf8_lossy(buf.split(|&b| b == 0).next().unwrap_or_default()).into_owned() } else { String::new() };
        let tag: String = name.chars().filter(char::is_ascii_alphanumeric).take(32).collect();
        if tag.is_empty() { "host".into() } else { tag }
    })
}

/// Removes the stale temporaries of `dir` (see the module doc), once per folder and process (a
/// run that writes many files into one folder reads it once); what cannot be removed stays.
pub fn remove_stale_temporaries(dir: &Path) {
    static CLEANED: std::sync::Mutex<Option<std::collections::HashSet<PathBuf>>> = std::sync::Mutex::new(None);
    {
        let mut cleaned = CLEANED.lock().unwrap_or_else(|e| e.into_inner());
        if !cleaned.get_or_insert_with(Default::default).insert(dir.to_path_buf()) {
            return;
        }
    }
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(middle) = name.strip_prefix(TEMP_PREFIX).and_then(|n| n.strip_suffix(TEMP_SUFFIX)) else { continue };
        let mut parts = middle.splitn(3, '-');
        let (pid, host) = (parts.next().and_then(|p| p.parse::<u32>().ok()), parts.next());
        let old = entry.metadata().and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok()).is_some_and(|age| age > STALE_AGE);
        let dead = match (pid, host, parts.next()) {
            (Some(pid), Some(host), Some(_)) if host == host_tag() => pid != std::process::id() && !process_exists(pid),
            // Another machine's, or an older layercheck's name without a host: by age only.
            _ => false,
        };
        if dead || old {
            let path = entry.path();
            let _ = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
        }
    }
}

/// Moves the files `names` of the folder `from` into `to`, never replacing a file there: all or
/// none (on any failure the files moved so far are removed again, and the error names the file).
pub fn move_new_files(from: &Path, to: &Path, names: &[String]) -> Result<Vec<PathBuf>, AtomicWriteError> {
    if let Some(name) = names.iter().find(|n| to.join(n).exists()) {
        return Err(AtomicWriteError::Exists { path: to.join(name) });
    }
    let mut moved = Vec::with_capacity(names.len());
    for name in names {
        let (src, dst) = (from.join(name), to.join(name));
        // A hard link fails if dst exists (no race replaces a file); then the source goes.
        let result = std::fs::hard_link(&src, &dst).map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                AtomicWriteError::Exists { path: dst.clone() }
            } else {
                AtomicWriteError::Io { path: dst.clone(), source }
            }
        });
        if let Err(e) = result {
            for done in &moved {
                let _ = std::fs::remove_file(done);
            }
            return Err(e);
        }
        let _ = std::fs::remove_file(&src);
        moved.push(dst);
    }
    Ok(moved)
}

/// Whether a process `pid` runs on this machine (unknown off Linux: assumed running).
fn process_exists(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        Path::new("/proc").join(pid.to_string()).exists()
    } else {
        true
    }
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
    if path.is_dir() {
        return Err(io(std::io::Error::new(std::io::ErrorKind::IsADirectory, "is a folder, not a file")));
    }
    let dir = prepare_folder(path)?;
    remove_stale_temporaries(&dir);
    let tmp = temp_builder().tempfile_in(&dir).map_err(io)?;
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
    fn a_folder_that_is_a_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), "x").unwrap();
        let err = write_file(&dir.path().join("f/a/b.txt"), Replace::Never, |w| w.write_all(b"1")).unwrap_err().to_string();
        assert!(err.contains("f is a file, not a folder") && err.contains("hint"), "{err}");
        assert_eq!(std::fs::read_to_string(dir.path().join("f")).unwrap(), "x");
    }

    #[test]
    fn stale_temporaries_are_removed_by_the_next_write() {
        let dir = tempfile::tempdir().unwrap();
        // A dead writer's file and folder (pid beyond Linux's pid_max), a live one's (ours, as
        // another process would hold it), another machine's (its pid means nothing here), and a
        // foreign file.
        let host = host_tag();
        let dead = dir.path().join(format!(".layercheck-4999999-{host}-abc.tmp"));
        let dead_dir = dir.path().join(format!(".layercheck-4999999-{host}-dir.tmp"));
        let live = dir.path().join(format!(".layercheck-{}-{host}-xyz.tmp", std::process::id()));
        let other_host = dir.path().join(format!(".layercheck-4999999-{host}x-abc.tmp"));
        std::fs::write(&other_host, "writing elsewhere").unwrap();
        std::fs::write(&dead, "half").unwrap();
        std::fs::create_dir(&dead_dir).unwrap();
        std::fs::write(dead_dir.join("x.csv"), "half").unwrap();
        std::fs::write(&live, "writing").unwrap();
        std::fs::write(dir.path().join("keep.tmp"), "").unwrap();
        write_file(&dir.path().join("out.txt"), Replace::Never, |w| w.write_all(b"1")).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        let mut expected = vec![live.file_name().unwrap().to_str().unwrap(), other_host.file_name().unwrap().to_str().unwrap(), "keep.tmp", "out.txt"];
        expected.sort();
        assert_eq!(names, expected);
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
