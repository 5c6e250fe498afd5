//! Wall time of one case's per-layer tests under `cargo nextest run` (a process per test, sharing
//! the case's forward through the on-disk cache) against `cargo test` (one process), in one run
//! (P2, target: nextest <= 1.5x cargo test); and `cargo test` against the target's bare work, in
//! a process of its own: loading the cpu-f16 model, its forward with no hooks on the case's prompt, and
//! reading the case's golden file whole (P1, target: <= 1.15x). Opt-in: needs
//! models/smollm2-135m-instruct. Thresholds that every layer passes make the timing that of a
//! green run.
//!
//! nextest is timed twice: as it is, and with `NEXTEST_DOUBLE_SPAWN=0`, nextest's documented
//! switch that starts each test process directly instead of through a second cargo-nextest
//! process (which costs, per test, more than the test itself: see README "The per-layer test
//! suite"). cargo's own start (`cargo test --no-run`, its check that nothing needs building) is
//! printed too: it counts in P1 and is not ours to shorten.
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

/// The target's bare work for the case: load the cpu-f16 model, run its forward on the case's
/// prompt with no hooks, read the golden file whole.
fn bare_child(root: &Path, model: &Path, golden: &Path) {
    let batch = layercheck::compute::evaluate::case_batch(model, &root.join("thresholds/prompts/tiny-baseline.txt"), 1, 64).expect("the case's prompt");
    let m = layercheck::model::DecoderModel::load(model, "cpu-f16".parse().expect("a target")).expect("SmolLM2 loads");
    let _ = tch::no_grad(|| m.forward(&batch.to_tensor(), layercheck::model::AttentionMask::AttendPads, &mut layercheck::hooks::Hooks::none()));
    let _ = std::fs::read(golden).expect("golden readable");
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--bare-child") {
        return bare_child(Path::new(env!("CARGO_MANIFEST_DIR")), Path::new(&args[i + 1]), Path::new(&args[i + 2]));
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
    // A cosine threshold of 0.5 passes every healthy layer (validation refuses one below 0); the
    // top-level ce and diff_mean (get_thresholds.py's whole-model output) are the logits test's.
    let loose = serde_json::json!({ "model_id": "smollm2", "abs_diff": table(1e9), "cos_sim_avg": table(0.5), "ce": 1e9, "diff_mean": 1.0 });
    std::fs::write(tmp.path().join("loose.json"), loose.to_string()).expect("thresholds written");
    // Build and make the golden file outside the timing.
    cargo(&root, &["test", "--test", "layers", "--no-run"], &matrix, &[]);
    let (_, made) = cargo(&root, &["test", "--test", "layers"], &matrix, &[("LAYERCHECK_UPDATE_GOLDEN", "1")]);
    assert!(made, "the golden run failed: run it by hand with LAYERCHECK_MATRIX={}", matrix.display());
    let runs = 5;
    let mut test_times = Vec::new();
    let mut nextest_times = Vec::new();
    let mut bare_times = Vec::new();
    let mut direct_times = Vec::new();
    let mut cargo_times = Vec::new();
    let golden = tmp.path().join("golden/smollm2/fwd-b1-s64.safetensors");
    for _ in 0..runs {
        // The bare work in a process of its own, as the suite's computation is: process start and
        // libtorch's initialisation count on both sides.
        let start = Instant::now();
        let status = Command::new(std::env::current_exe().expect("own path")).args(["--bench", "--bare-child"]).arg(&model).arg(&golden).status().expect("bare child runs");
        assert!(status.success(), "the bare child failed");
        bare_times.push(start.elapsed().as_secs_f64());
        let (t, passed) = cargo(&root, &["test", "--test", "layers"], &matrix, &[]);
        assert!(passed, "cargo test failed: the timing would not be that of a green run");
        test_times.push(t);
        let (t, passed) = cargo(&root, &["nextest", "run", "--test", "layers", "--no-fail-fast"], &matrix, &[]);
        assert!(passed, "cargo nextest run failed: the timing would not be that of a green run");
        nextest_times.push(t);
        let (t, passed) = cargo(&root, &["nextest", "run", "--test", "layers", "--no-fail-fast"], &matrix, &[("NEXTEST_DOUBLE_SPAWN", "0")]);
        assert!(passed, "cargo nextest run (NEXTEST_DOUBLE_SPAWN=0) failed: the timing would not be that of a green run");
        direct_times.push(t);
        let (t, built) = cargo(&root, &["test", "--test", "layers", "--no-run"], &matrix, &[]);
        assert!(built, "cargo test --no-run failed");
        cargo_times.push(t);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let (t, n, b) = (median(test_times), median(nextest_times), median(bare_times));
    let (d, c) = (median(direct_times), median(cargo_times));
    println!("one SmolLM2 case (cpu-f16, b1, s64, all its tests), median of {runs}:");
    println!("  bare: load, forward, read golden {b:.2} s");
    println!("  cargo test --test layers        {t:.2} s");
    println!("  cargo nextest run --test layers {n:.2} s");
    println!("  the same, NEXTEST_DOUBLE_SPAWN=0 {d:.2} s");
    println!("  cargo's own start (--no-run)    {c:.2} s");
    println!("  P1 ratio cargo test / bare: {:.2} (target <= 1.15); without cargo's start {:.2}", t / b, (t - c) / b);
    println!("  P2 ratio nextest / cargo test: {:.2} (target <= 1.5); NEXTEST_DOUBLE_SPAWN=0: {:.2}", n / t, d / t);
}
