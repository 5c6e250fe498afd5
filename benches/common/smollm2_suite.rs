//! A temporary suite of SmolLM2-135M cases for the benchmarks: a matrix in a temporary folder, its
//! golden files there too, thresholds that every layer passes (the Python tools' pooled schema),
//! and `layercheck suite-case` (what each case's tests have computed) run on it.

use std::path::{Path, PathBuf};
use std::process::Command;

use layercheck::compute::golden::GoldenStore;
use layercheck_suite::test_name::{CaseId, TestName};

/// The model folder the benchmarks use, or the line to print when it is absent.
pub fn smollm2(root: &Path, what: &str) -> Result<PathBuf, String> {
    let model = root.join("models/smollm2-135m-instruct");
    if model.join("config.json").exists() {
        Ok(model)
    } else {
        Err(format!("{what} skipped: {} is absent (hint: HF_HUB_OFFLINE=1 $(scripts/setup-python) scripts/reference/convert_smollm2.py)", model.display()))
    }
}

/// A matrix of SmolLM2 cases at cpu-f16 in a temporary folder.
pub struct Suite {
    pub dir: tempfile::TempDir,
    root: PathBuf,
    layercheck: PathBuf,
}

impl Suite {
    /// Writes the matrix (both modes, batch 1 and 4, 64 and 256 tokens, 8 new tokens).
    pub fn new(root: &Path, model: &Path, layercheck: &Path) -> Suite {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(
            dir.path().join("matrix.toml"),
            format!(
                "golden_dir = \"{g}\"\n[models.smollm2]\npath = \"{m}\"\nprompts = \"{r}/thresholds/prompts/tiny-baseline.txt\"\nthresholds = \"{t}/loose.json\"\n[matrix]\nmodels = [\"smollm2\"]\ntargets = [\"cpu-f16\"]\nmodes = [\"model-forward\", \"generate\"]\nbatch_sizes = [1, 4]\nseq_lengths = [64, 256]\nmax_new_tokens = [8]\n",
                g = dir.path().join("golden").display(),
                m = model.display(),
                r = root.display(),
                t = dir.path().display()
            ),
        )
        .expect("matrix written");
        let keys = layercheck::hooks::ModuleKey::forward_order(30, true);
        let table = |v: f64| keys.iter().map(|k| (k.to_string(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>();
        // A cosine threshold of 0.5 passes every healthy layer (validation refuses one below 0).
        let loose = serde_json::json!({ "model_id": "smollm2", "abs_diff": table(1e9), "cos_sim_avg": table(0.5), "ce": 1e9, "diff_mean": 1.0 });
        std::fs::write(dir.path().join("loose.json"), loose.to_string()).expect("thresholds written");
        Suite { dir, root: root.to_path_buf(), layercheck: layercheck.to_path_buf() }
    }

    /// The case called `name` (a test name without its layer, e.g. `smollm2::cpu-f16::fwd::b1::s64`).
    pub fn case(name: &str) -> CaseId {
        format!("{name}::summary").parse::<TestName>().expect("a test name").case
    }

    /// The golden file of `case`.
    pub fn golden(&self, case: &CaseId) -> PathBuf {
        GoldenStore::new(self.dir.path().join("golden")).path(case)
    }

    /// `layercheck suite-case` of `case`, making its golden file when `update`.
    pub fn case_command(&self, case: &CaseId, update: bool) -> Command {
        let mut cmd = Command::new(&self.layercheck);
        cmd.current_dir(&self.root)
            .args(["suite-case", "--case", &case.to_string(), "--out"])
            .arg(self.dir.path().join("outcome.bin"))
            .env("LAYERCHECK_MATRIX", self.dir.path().join("matrix.toml"))
            .env("LAYERCHECK_REPORT_DIR", self.dir.path().join("reports"))
            .env_remove("CI")
            .env_remove("LAYERCHECK_UPDATE_GOLDEN");
        if update {
            cmd.env("LAYERCHECK_UPDATE_GOLDEN", "1");
        }
        cmd
    }

    /// Makes the golden file of `case` (once), panicking with the command's stderr on failure.
    pub fn make_golden(&self, case: &CaseId) -> PathBuf {
        let path = self.golden(case);
        if !path.exists() {
            let out = self.case_command(case, true).output().expect("layercheck runs");
            assert!(out.status.success(), "making the golden file of {case} failed:\n{}", String::from_utf8_lossy(&out.stderr));
            // A case that cannot be computed is an outcome, not a failed process: say where to look.
            assert!(path.exists(), "making the golden file of {case} wrote none; its setup error is in {}", self.dir.path().join("reports").display());
        }
        path
    }
}
