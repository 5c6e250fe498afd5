//! `layercheck generate --format seed-csv` and `layercheck thresholds` against files made once by
//! IBM's real Python scripts (generate_layers_metrics.py, get_thresholds.py) on the embedded tiny
//! Granite and the same ids (scripts/reference/make_seed_fixture.py; tests/fixtures/seed/).
//!
//! The fixture's f16 side ran on CPU twice and was bit-identical, so the spread of two runs is
//! zero and ours must match exactly. The tuple keys (`attn.in_proj`, `model.base_model`, `model`)
//! differ on purpose: the seed compares V only and the KV cache; ours what the name says.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The metric files of a folder (our `reports/` subfolder aside).
fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap()).filter(|e| e.path().is_file()).map(|e| e.file_name().to_string_lossy().into_owned()).collect()
}

fn is_tuple_key(file: &str) -> bool {
    let key = file.rsplit("--").next().unwrap();
    let key = key.trim_end_matches(".abs_diff.csv").trim_end_matches(".cos_sim.csv");
    let key = key.split(".iter-").next().unwrap();
    key.ends_with("attn.in_proj") || key == "model.base_model" || key == "model"
}

fn generate(mode: &str, out: &Path) {
    // As the fixture was made: from models/ with `--model_path tiny-granite` (the seed names files
    // after the whole --model_path).
    let status = Command::new(env!("CARGO_BIN_EXE_layercheck"))
        .current_dir(root().join("models"))
        .args(["generate", "--model_path", "tiny-granite", "--mode", mode, "--batch_sizes", "1", "--seq_lengths", "8", "--max_new_tokens", "2"])
        .arg("--input-ids")
        .arg(root().join("tests/fixtures/seed/input_ids.json"))
        .arg("--output_path")
        .arg(out)
        .status()
        .unwrap();
    assert!(status.success());
}

fn compare_with_python(mode: &str, fixture: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let ours = tmp.path().join("out");
    generate(mode, &ours);
    let theirs = root().join("tests/fixtures/seed").join(fixture);
    assert_eq!(names(&ours), names(&theirs), "file names differ from the Python tool's");
    let report = ours.join("reports/tiny-granite_max-new-tokens-2_batch-size-1_seq-length-8_dtype-float16");
    assert!(report.join("plot.png").exists() && report.join("report.md").exists(), "generate writes a report per case");
    let mut leaf_files = 0;
    for name in names(&theirs) {
        let a = std::fs::read_to_string(ours.join(&name)).unwrap();
        let b = std::fs::read_to_string(theirs.join(&name)).unwrap();
        let (ha, hb): (Vec<&str>, Vec<&str>) = (a.lines().take(3).collect(), b.lines().take(3).collect());
        assert_eq!(ha[0], hb[0], "{name}: metric line");
        if is_tuple_key(&name) {
            // Ours holds the whole output (q,k,v / hidden states / logits): a [1, 8, ..] tensor.
            assert!(ha[1].starts_with("GPU shape torch.Size([1, "), "{name}: {}", ha[1]);
            continue;
        }
        assert_eq!(ha, hb, "{name}: header lines");
        assert_eq!(a, b, "{name}: values differ from the Python tool's");
        leaf_files += 1;
    }
    assert!(leaf_files >= 70, "{leaf_files}");
}

#[test]
fn model_forward_csvs_are_the_python_tools_files() {
    compare_with_python("model-forward", "csv-forward");
}

#[test]
fn generate_mode_csvs_are_the_python_tools_files() {
    compare_with_python("generate", "csv-generate");
}

#[test]
fn thresholds_of_the_python_csvs_are_get_thresholds_values() {
    for (csv, json) in [("csv-forward", "thresholds-forward.json"), ("csv-generate", "thresholds-generate.json")] {
        let tmp = tempfile::tempdir().unwrap();
        let status = Command::new(env!("CARGO_BIN_EXE_layercheck"))
            .args(["thresholds", "--models", "tiny-granite", "--metrics", "abs_diff", "cos_sim_avg", "cos_sim_mean", "--layer_io", "--file_base"])
            .arg(root().join("tests/fixtures/seed").join(csv))
            .arg("--output_path")
            .arg(tmp.path())
            .status()
            .unwrap();
        assert!(status.success());
        let ours = layercheck::thresholds::ThresholdsFile::read(&tmp.path().join("tiny-granite-thresholds.json")).unwrap();
        let theirs = layercheck::thresholds::ThresholdsFile::read(&root().join("tests/fixtures/seed").join(json)).unwrap();
        assert_eq!(ours.model_id, theirs.model_id);
        for (metric, values) in &theirs.metrics {
            let layercheck::thresholds::MetricThresholds::Layers(layers) = values else { panic!("{metric} is not per layer") };
            assert!(!layers.is_empty());
            for (key, expected) in layers {
                let got = ours.layer(metric, key).unwrap_or_else(|| panic!("{metric} {key} missing"));
                assert!((got - expected).abs() <= 1e-12 * expected.abs(), "{json} {metric} {key}: {got} vs {expected}");
            }
        }
    }
}

/// The abs_diff values, recomputed independently from the two capture files: |f32 - f16| in f32,
/// as PyTorch promotes a float32 - float16 subtraction.
#[test]
fn abs_diff_values_follow_the_seed_definition() {
    let tmp = tempfile::tempdir().unwrap();
    for target in ["cpu-f32", "cpu-f16"] {
        let status = Command::new(env!("CARGO_BIN_EXE_layercheck"))
            .current_dir(root())
            .args(["capture", "--model-path", "models/tiny-granite", "--target", target, "--input-ids", "tests/fixtures/seed/input_ids.json", "--out"])
            .arg(tmp.path().join(format!("{target}.safetensors")))
            .status()
            .unwrap();
        assert!(status.success());
    }
    let read = |t: &str| layercheck::capture::Capture::read(&tmp.path().join(format!("{t}.safetensors"))).unwrap();
    let (r, t) = (read("cpu-f32"), read("cpu-f16"));
    let key = "model.base_model.layers1.attn.dense";
    let rv: Vec<f32> = Vec::<f32>::try_from(r.tensors[key].flatten(0, -1)).unwrap();
    let tv: Vec<f32> = Vec::<f32>::try_from(t.tensors[key].to_kind(tch::Kind::Float).flatten(0, -1)).unwrap();
    let expected: Vec<f64> = rv.iter().zip(&tv).map(|(a, b)| (a - b).abs() as f64).collect();
    let file = root().join("tests/fixtures/seed/csv-forward").join(format!("tiny-granite_max-new-tokens-2_batch-size-1_seq-length-8_dtype-float16--{key}.abs_diff.csv"));
    let values: Vec<f64> = std::fs::read_to_string(file).unwrap().lines().skip(3).map(|l| l.parse().unwrap()).collect();
    assert_eq!(values, expected);
}
