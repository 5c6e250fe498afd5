//! Wall time of one case's per-layer tests under `cargo nextest run` (a process per test, sharing
//! the case's forward through the on-disk cache) against `cargo test` (one process), in one run.
//! Opt-in: needs models/smollm2-135m-instruct. Target: nextest <= 1.5x cargo test. Thresholds that
//! every layer passes make the timing that of a green run.
//!
//! `cargo bench --bench suite` (the suite binary is built first, outside the timing).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn cargo(root: &Path, args: &[&str], matrix: &Path, extra: &[(&str, &str)]) -> (f64, bool) {
    let start = Instant::now();
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(root)
        .args(args)
        .env("LAYERCHECK_MATRIX", matrix)
        .envs(extra.iter().copied())
        .env_remove("CI")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("cargo runs");
    (start.elapsed().as_secs_f64(), status.success())
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let model = root.join("models/smollm2-135m-instruct");
    if !model.join("config.json").exists() {
        println!("suite bench skipped: {} is absent (python scripts/reference/convert_smollm2.py)", model.display());
        return;
    }
    let tmp = tempfile::tempdir().expect("temp dir");
    let matrix = tmp.path().join("matrix.toml");
    std::fs::write(
        &matrix,
        format!(
            "golden_dir = \"{g}\"\n[models.smollm2]\npath = \"{m}\"\nprompts = \"{r}/thresholds/prompts/tiny-baseline.txt\"\nthresholds = \"{t}/loose.json\"\n[matrix]\nmodels = [\"smollm2\"]\ntargets = [\"cpu-f16\"]\nbatch_sizes = [1]\nseq_lengths = [64]\n",
            g = tmp.path().join("golden").display(),
            m = model.display(),
            r = root.display(),
            t = tmp.path().display()
        ),
    )
    .expect("matrix written");
    // Thresholds (the Python tools' pooled schema) that every layer passes: the timing is that of
    // a green run, every layer's outcome computed and shared.
    let keys = layercheck::hooks::ModuleKey::forward_order(30, false);
    let table = |v: f64| keys.iter().map(|k| (k.to_string(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>();
    let loose = serde_json::json!({ "model_id": "smollm2", "abs_diff": table(1e9), "cos_sim_avg": table(0.5) });
    std::fs::write(tmp.path().join("loose.json"), loose.to_string()).expect("thresholds written");
    // Build and make the golden file outside the timing.
    cargo(&root, &["test", "--test", "layers", "--no-run"], &matrix, &[]);
    let (_, made) = cargo(&root, &["test", "--test", "layers"], &matrix, &[("LAYERCHECK_UPDATE_GOLDEN", "1")]);
    assert!(made, "the golden run failed: run it by hand with LAYERCHECK_MATRIX={}", matrix.display());
    let runs = 5;
    let mut test_times = Vec::new();
    let mut nextest_times = Vec::new();
    for _ in 0..runs {
        let (t, passed) = cargo(&root, &["test", "--test", "layers"], &matrix, &[]);
        assert!(passed, "cargo test failed: the timing would not be that of a green run");
        test_times.push(t);
        let (t, passed) = cargo(&root, &["nextest", "run", "--test", "layers", "--no-fail-fast"], &matrix, &[]);
        assert!(passed, "cargo nextest run failed: the timing would not be that of a green run");
        nextest_times.push(t);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let (t, n) = (median(test_times), median(nextest_times));
    println!("one SmolLM2 case (cpu-f16, b1, s64, 365 tests), median of {runs}:");
    println!("  cargo test --test layers        {t:.2} s");
    println!("  cargo nextest run --test layers {n:.2} s");
    println!("  ratio nextest / cargo test: {:.2} (target <= 1.5)", n / t);
}
