//! Compute once per case. Threads of one test process share a case's outcome in memory; under
//! nextest, which runs each test in its own process, processes of the same run share it through a
//! file in the target folder, guarded by a lock, so a whole run costs about one forward per case.
//! Whether CUDA is available is shared the same way.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::file_lock::FileLock;
use crate::matrix::Margins;
use crate::outcome::{CaseOutcome, Passing};
use crate::test_name::Check;

/// What a test gets of its case.
pub enum Shared {
    /// Its check passes: the case's list of passing checks says so (under nextest; the outcome
    /// itself is not read).
    Passes,
    /// The case's outcome, from which the test is judged.
    Outcome(Arc<CaseOutcome>),
}

/// Where outcomes are shared.
pub struct CaseCache {
    /// A folder unique to this nextest run, when running under nextest.
    disk: Option<PathBuf>,
    memo: Mutex<HashMap<String, Arc<OnceLock<Arc<CaseOutcome>>>>>,
    cuda: OnceLock<Result<bool, String>>,
}

impl CaseCache {
    /// Shares through disk when `NEXTEST_RUN_ID` says this process is one of a nextest run.
    pub fn from_env() -> Self {
        let disk = std::env::var("NEXTEST_RUN_ID").ok().filter(|id| !id.is_empty()).and_then(|id| {
            let exe = std::env::current_exe().ok()?;
            // target/<profile>/deps/<test binary> -> target/<profile>/layercheck-cases/<run id>
            let profile_dir = exe.parent()?.parent()?;
            Some(profile_dir.join("layercheck-cases").join(id))
        });
        if let Some(dir) = disk.as_deref().filter(|d| !d.exists()) {
            prune_old_runs(dir.parent().unwrap_or(dir));
        }
        Self::new(disk)
    }

    /// A cache sharing through `disk` when given, else within this process only.
    pub fn new(disk: Option<PathBuf>) -> Self {
        CaseCache { disk, memo: Mutex::new(HashMap::new()), cuda: OnceLock::new() }
    }

    /// Whether outcomes are shared between processes (then no forward may stop early).
    pub fn shares_between_processes(&self) -> bool {
        self.disk.is_some()
    }

    /// The outcome of the case named `case`, computed by `compute` at most once here.
    pub fn get(&self, case: &str, compute: impl FnOnce() -> CaseOutcome) -> Arc<CaseOutcome> {
        let cell = {
            let mut memo = self.memo.lock().unwrap_or_else(|e| e.into_inner());
            memo.entry(case.to_string()).or_default().clone()
        };
        cell.get_or_init(|| Arc::new(self.load_or_compute(case, compute, None))).clone()
    }

    /// What the test of `check` in the case named `case` needs: [`Shared::Passes`] when the
    /// case's passing list (shared between processes, judged with `margins`) holds `check`,
    /// otherwise the outcome, as [`CaseCache::get`] gives it.
    pub fn get_for(&self, case: &str, check: Check, margins: &Margins, compute: impl FnOnce() -> CaseOutcome) -> Shared {
        let Some(dir) = &self.disk else { return Shared::Outcome(self.get(case, compute)) };
        let file = outcome_file(dir, case);
        // Under the case's lock, so that a test waits for the process computing its case.
        let passing = FileLock::acquire(&file.with_extension("lock")).ok().and_then(|_lock| Passing::read(&file.with_extension("pass")).ok());
        if passing.is_some_and(|p| p.contains(check)) {
            return Shared::Passes;
        }
        let cell = {
            let mut memo = self.memo.lock().unwrap_or_else(|e| e.into_inner());
            memo.entry(case.to_string()).or_default().clone()
        };
        Shared::Outcome(cell.get_or_init(|| Arc::new(self.load_or_compute(case, compute, Some(margins)))).clone())
    }

    /// The case's outcome from disk, or computed and shared there (with its passing list, when
    /// `margins` are given to judge it).
    fn load_or_compute(&self, case: &str, compute: impl FnOnce() -> CaseOutcome, margins: Option<&Margins>) -> CaseOutcome {
        let Some(dir) = &self.disk else { return compute() };
        let file = outcome_file(dir, case);
        let Ok(lock) = FileLock::acquire(&file.with_extension("lock")) else { return compute() };
        if let Ok(outcome) = CaseOutcome::read(&file) {
            return outcome;
        }
        let outcome = compute();
        // Not shared when it cannot be written: the next process computes it again. The passing
        // list after the outcome, so that a list is never there without its outcome.
        if outcome.write(&file).is_ok() {
            if let Some(margins) = margins {
                let _ = outcome.passing(margins).write(&file.with_extension("pass"));
            }
        }
        drop(lock);
        outcome
    }

    /// Whether CUDA is available, asked of `probe` at most once here (and once per nextest run).
    pub fn cuda_available(&self, probe: impl FnOnce() -> Result<bool, String>) -> Result<bool, String> {
        self.cuda
            .get_or_init(|| {
                let Some(dir) = &self.disk else { return probe() };
                let file = dir.join("cuda-available");
                let Ok(_lock) = FileLock::acquire(&file.with_extension("lock")) else { return probe() };
                match std::fs::read_to_string(&file).as_deref() {
                    Ok("true") => return Ok(true),
                    Ok("false") => return Ok(false),
                    _ => {}
                }
                let answer = probe();
                if let Ok(available) = answer {
                    let _ = std::fs::write(&file, available.to_string());
                }
                answer
            })
            .clone()
    }
}

/// Where the outcome of the case named `case` is shared in `dir`; its lock and passing list sit
/// beside it (`.lock`, `.pass`).
fn outcome_file(dir: &Path, case: &str) -> PathBuf {
    dir.join(format!("{}.bin", case.replace("::", "_")))
}

/// A nextest run's folder is not needed after the run, which nobody tells us of: the first
/// process of a new run removes the folders of runs that started over a day ago.
fn prune_old_runs(runs: &Path) {
    const DAY: Duration = Duration::from_secs(24 * 3600);
    let Ok(entries) = std::fs::read_dir(runs) else { return };
    for entry in entries.flatten() {
        let old = entry.metadata().and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok()).is_some_and(|age| age > DAY);
        if old {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::LayerOutcome;
    use crate::verdict::{Bounds, Observation};
    use std::time::SystemTime;

    #[test]
    fn outcomes_with_nan_survive_the_disk_format() {
        let obs = Observation { record: "k".into(), item: 0, abs_diff_l2: f64::NAN, abs_diff_max: f64::INFINITY, cos_mean: 0.5, cos_min: f64::NAN, worst_token: 3, target_nonfinite: 1, reference_nonfinite: 0 };
        let outcome = CaseOutcome {
            case: "c".into(),
            setup_error: None,
            layers: vec![LayerOutcome { key: "k".into(), bounds: Bounds::new(Some(1.0), None), observations: vec![obs], failures: vec![], error: None, attribution: None, location: None }],
            notes: vec![],
            attribution_unavailable: None,
            logits: None,
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.bin");
        outcome.write(&path).unwrap();
        let back = CaseOutcome::read(&path).unwrap();
        let o = &back.layers[0].observations[0];
        assert!(o.abs_diff_l2.is_nan() && o.cos_min.is_nan() && o.abs_diff_max == f64::INFINITY && o.cos_mean == 0.5);
        assert_eq!(back.layers[0].bounds, Bounds::new(Some(1.0), None));
    }

    #[test]
    fn a_truncated_outcome_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.bin");
        CaseOutcome::failed("c", "e".into()).write(&path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let err = CaseOutcome::read(&path).unwrap_err().to_string();
        assert!(err.contains("o.bin"), "{err}");
    }

    #[test]
    fn one_computation_per_case_in_a_process() {
        let cache = CaseCache::new(None);
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let make = || {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            CaseOutcome::failed("c", "x".into())
        };
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| cache.get("c", make));
            }
        });
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn one_computation_per_case_across_caches_sharing_a_folder() {
        let dir = tempfile::tempdir().unwrap();
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let make = || {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            CaseOutcome::failed("m::t", "x".into())
        };
        // Two caches stand for two processes of one nextest run.
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    let cache = CaseCache::new(Some(dir.path().to_path_buf()));
                    assert_eq!(cache.get("m::t", make).setup_error.as_deref(), Some("x"));
                    assert_eq!(cache.cuda_available(|| Ok(false)), Ok(false));
                });
            }
        });
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(std::fs::read_to_string(dir.path().join("cuda-available")).unwrap(), "false");
    }

    /// Layer `a` passes, layer `b` could not be compared, no logits.
    fn half_passing() -> CaseOutcome {
        let layer = |key: &str, error: Option<&str>| LayerOutcome { key: key.into(), bounds: Bounds::new(Some(1.0), None), observations: vec![], failures: vec![], error: error.map(String::from), attribution: None, location: None };
        CaseOutcome { case: "m::t".into(), setup_error: None, layers: vec![layer("model.head", None), layer("model.base_model.dec_norm", Some("no record"))], notes: vec![], attribution_unavailable: None, logits: None }
    }

    #[test]
    fn a_passing_test_of_a_shared_case_reads_only_the_passing_list() {
        use crate::module_key::ModuleKey;
        let dir = tempfile::tempdir().unwrap();
        let margins = Margins::default();
        let checks = [Check::Layer(ModuleKey::Head), Check::Layer(ModuleKey::DecNorm), Check::Layer(ModuleKey::Embedding), Check::Summary, Check::Logits];
        // The list agrees with the outcome's own judgement, check by check.
        let passing = half_passing().passing(&margins);
        let judged: Vec<bool> = checks.iter().map(|&c| half_passing().passes(c, &margins)).collect();
        assert_eq!(checks.iter().map(|&c| passing.contains(c)).collect::<Vec<_>>(), judged);
        assert_eq!(judged, [true, false, false, false, false]);
        // The first process computes and shares the outcome and its list.
        let first = CaseCache::new(Some(dir.path().to_path_buf()));
        assert!(matches!(first.get_for("m::t", Check::Summary, &margins, half_passing), Shared::Outcome(_)));
        // Another process: its passing layer from the list alone (the outcome file is made
        // unreadable to show it is not read); its failing one needs the outcome.
        std::fs::write(dir.path().join("m_t.bin"), b"not an outcome").unwrap();
        let other = CaseCache::new(Some(dir.path().to_path_buf()));
        let computed_again = || CaseOutcome::failed("m::t", "computed again".into());
        assert!(matches!(other.get_for("m::t", Check::Layer(ModuleKey::Head), &margins, computed_again), Shared::Passes));
        match CaseCache::new(Some(dir.path().to_path_buf())).get_for("m::t", Check::Layer(ModuleKey::DecNorm), &margins, computed_again) {
            Shared::Outcome(o) => assert_eq!(o.setup_error.as_deref(), Some("computed again")),
            Shared::Passes => panic!("a failing layer passed"),
        }
        // Without a shared folder there is no list: always the outcome.
        assert!(matches!(CaseCache::new(None).get_for("m::t", Check::Layer(ModuleKey::Head), &margins, half_passing), Shared::Outcome(_)));
    }

    #[test]
    fn a_setup_error_passes_nothing() {
        let passing = CaseOutcome { setup_error: Some("no golden".into()), ..half_passing() }.passing(&Margins::default());
        assert!(!passing.contains(Check::Layer(crate::module_key::ModuleKey::Head)) && !passing.contains(Check::Summary));
    }

    #[test]
    fn folders_of_runs_older_than_a_day_are_removed() {
        let runs = tempfile::tempdir().unwrap();
        let (old, new) = (runs.path().join("old-run"), runs.path().join("new-run"));
        for d in [&old, &new] {
            std::fs::create_dir(d).unwrap();
            std::fs::write(d.join("case.bin"), b"x").unwrap();
        }
        let two_days_ago = SystemTime::now() - Duration::from_secs(48 * 3600);
        std::fs::File::open(&old).unwrap().set_modified(two_days_ago).unwrap();
        prune_old_runs(runs.path());
        assert!(!old.exists() && new.join("case.bin").exists());
    }
}
