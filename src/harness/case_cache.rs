//! Compute once per case. Threads of one test process share a case's outcome in memory; under
//! nextest, which runs each test in its own process, processes of the same run share it through a
//! file in the target folder, guarded by a lock, so a whole run costs about one forward per case.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use super::evaluate::{CaseOutcome, FileLock};

/// Where outcomes are shared.
pub struct CaseCache {
    /// A folder unique to this nextest run, when running under nextest.
    disk: Option<PathBuf>,
    memo: Mutex<HashMap<String, Arc<OnceLock<Arc<CaseOutcome>>>>>,
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
        CaseCache { disk, memo: Mutex::new(HashMap::new()) }
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
        cell.get_or_init(|| Arc::new(self.load_or_compute(case, compute))).clone()
    }

    fn load_or_compute(&self, case: &str, compute: impl FnOnce() -> CaseOutcome) -> CaseOutcome {
        let Some(dir) = &self.disk else { return compute() };
        let file = dir.join(format!("{}.json5", case.replace("::", "_")));
        let lock = match FileLock::acquire(&file.with_extension("lock")) {
            Ok(lock) => lock,
            Err(_) => return compute(),
        };
        if let Some(outcome) = std::fs::read_to_string(&file).ok().and_then(|t| json5::from_str::<CaseOutcome>(&t).ok()) {
            return outcome;
        }
        let outcome = compute();
        // JSON5, because observations may be NaN and JSON has no NaN.
        if let Ok(json) = json5::to_string(&outcome) {
            let tmp = file.with_extension("json5.tmp");
            if std::fs::write(&tmp, json).is_ok() {
                let _ = std::fs::rename(&tmp, &file);
            }
        }
        drop(lock);
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::super::verdict::{Bounds, Observation};
    use super::super::evaluate::LayerOutcome;
    use super::*;

    #[test]
    fn outcomes_with_nan_survive_the_disk_format() {
        let obs = Observation { record: "k".into(), item: 0, abs_diff_l2: f64::NAN, abs_diff_max: f64::INFINITY, cos_mean: 0.5, cos_min: f64::NAN, worst_token: 3, target_nonfinite: 1, reference_nonfinite: 0 };
        let outcome = CaseOutcome {
            case: "c".into(),
            setup_error: None,
            layers: vec![LayerOutcome { key: "k".into(), bounds: Bounds { abs_diff_l2: Some(1.0), cos_mean: None }, observations: vec![obs], failures: vec![], error: None }],
            notes: vec![],
        };
        let back: CaseOutcome = json5::from_str(&json5::to_string(&outcome).unwrap()).unwrap();
        let o = &back.layers[0].observations[0];
        assert!(o.abs_diff_l2.is_nan() && o.cos_min.is_nan() && o.abs_diff_max == f64::INFINITY && o.cos_mean == 0.5);
    }

    #[test]
    fn one_computation_per_case_in_a_process() {
        let cache = CaseCache { disk: None, memo: Mutex::new(HashMap::new()) };
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let make = || {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            CaseOutcome { case: "c".into(), setup_error: None, layers: vec![], notes: vec![] }
        };
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| cache.get("c", make));
            }
        });
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
