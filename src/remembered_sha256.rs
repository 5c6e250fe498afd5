//! Hashes of big files remembered between processes: every case of a model hashes the model's
//! checkpoint (gigabytes for a real model) and its golden file (0.8 GB per prompt for an 8B model
//! at 64 tokens), each case in a process of its own. A hash is remembered in the temporary folder,
//! keyed as git recognises unchanged files: each file's path, size, inode, modification and
//! change times.
//!
//! As git does with its "racy" entries, a hash is remembered only when every file was last
//! changed at least [`SETTLED`] before it was read: a file rewritten within the same tick of the
//! filesystem's clock as the hashed version (same size, same times) could otherwise go unnoticed.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

/// How long ago a file must have been changed for its hash to be remembered.
pub const SETTLED: Duration = Duration::from_secs(2);

/// The folder of the temporary directory where hashes are remembered.
const FOLDER: &str = "layercheck-sha256";

/// The hash that `compute` gives of `files` (for `purpose`: two hashes of one file, of its bytes
/// and of its tensors, are remembered apart), remembered when it can be and computed otherwise.
/// A remembered entry that cannot be read or written is ignored: the hash is computed again.
pub fn remembered<E>(purpose: &str, files: &[PathBuf], compute: impl FnOnce() -> Result<String, E>) -> Result<String, E> {
    let started = SystemTime::now();
    let Some(entry) = entry_path(purpose, files) else { return compute() };
    if let Some(known) = std::fs::read_to_string(&entry).ok().filter(|k| is_sha256(k)) {
        return Ok(known);
    }
    let hash = compute()?;
    if files.iter().all(|f| settled(f, started)) {
        // Written whole or not at all (two processes may hash at once).
        let _ = layercheck_suite::atomic::write_file(&entry, layercheck_suite::atomic::Replace::Allowed, |w| w.write_all(hash.as_bytes()));
    }
    Ok(hash)
}

fn is_sha256(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether `file` was last changed (content or metadata) at least [`SETTLED`] before `read_at`.
fn settled(file: &Path, read_at: SystemTime) -> bool {
    let Ok(meta) = std::fs::metadata(file) else { return false };
    let changed = |secs: i64, nsecs: i64| u64::try_from(secs).ok().map(|s| SystemTime::UNIX_EPOCH + Duration::new(s, nsecs as u32));
    [changed(meta.mtime(), meta.mtime_nsec()), changed(meta.ctime(), meta.ctime_nsec())]
        .into_iter()
        .all(|t| t.and_then(|t| read_at.duration_since(t).ok()).is_some_and(|age| age >= SETTLED))
}

/// Where the hash of `files` for `purpose` is remembered; none when a file cannot be looked at.
fn entry_path(purpose: &str, files: &[PathBuf]) -> Option<PathBuf> {
    let mut key = Sha256::new();
    key.update((purpose.len() as u64).to_le_bytes());
    key.update(purpose.as_bytes());
    for file in files {
        let meta = std::fs::metadata(file).ok()?;
        let path = std::path::absolute(file).ok()?;
        key.update((path.as_os_str().len() as u64).to_le_bytes());
        key.update(path.as_os_str().as_encoded_bytes());
        for n in [meta.len(), meta.ino(), meta.dev(), meta.mtime() as u64, meta.mtime_nsec() as u64, meta.ctime() as u64, meta.ctime_nsec() as u64] {
            key.update(n.to_le_bytes());
        }
    }
    Some(std::env::temp_dir().join(FOLDER).join(format!("{:x}", key.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn age(file: &Path, by: Duration) {
        std::fs::File::options().write(true).open(file).unwrap().set_modified(SystemTime::now() - by).unwrap();
    }

    #[test]
    fn a_settled_file_is_hashed_once_a_fresh_one_every_time() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"a").unwrap();
        let calls = Cell::new(0);
        let hash = || -> Result<String, ()> {
            calls.set(calls.get() + 1);
            Ok("0".repeat(64))
        };
        // Just written (its change time is now, whatever its modification time): not remembered.
        let purpose = format!("test-{}", std::process::id());
        remembered(&purpose, std::slice::from_ref(&file), hash).unwrap();
        remembered(&purpose, std::slice::from_ref(&file), hash).unwrap();
        assert_eq!(calls.get(), 2);
        // Settled (both times in the past): once.
        std::thread::sleep(SETTLED + Duration::from_millis(100));
        remembered(&purpose, std::slice::from_ref(&file), hash).unwrap();
        remembered(&purpose, std::slice::from_ref(&file), hash).unwrap();
        assert_eq!(calls.get(), 3);
        // Another purpose is another entry.
        remembered(&format!("{purpose}-other"), std::slice::from_ref(&file), hash).unwrap();
        assert_eq!(calls.get(), 4);
        // A change of the file (its times move) is hashed anew.
        age(&file, Duration::from_secs(60));
        remembered(&purpose, std::slice::from_ref(&file), hash).unwrap();
        assert_eq!(calls.get(), 5);
    }

    #[test]
    fn an_unreadable_file_is_an_error_of_compute_not_a_remembered_hash() {
        let missing = PathBuf::from("/nonexistent/layercheck/f");
        let got: Result<String, &str> = remembered("test", &[missing], || Err("cannot read"));
        assert_eq!(got, Err("cannot read"));
    }
}
