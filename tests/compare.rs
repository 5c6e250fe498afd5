//! `layercheck compare` on dumps as a device host would hand them over: a clean float16 dump and a
//! faulty one of the golden file's inputs, judged with the suite's thresholds; exit status 0, 1, 2.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use layercheck::capture::Capture;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

const GOLDEN: &str = "golden/tiny-granite/fwd-b1-s32.safetensors";
const THRESHOLDS: &str = "thresholds/tiny-granite-thresholds.json";

fn layercheck(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_layercheck")).current_dir(root()).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A dump of the golden file's inputs on `target`, optionally with a fault, answered through the
/// request a command target would get.
fn dump(dir: &Path, name: &str, target: &str, fault: Option<&str>) -> PathBuf {
    let golden = Capture::read(&root().join(GOLDEN)).unwrap();
    let ids: Vec<i64> = Vec::<i64>::try_from(golden.tensors["input_ids"].flatten(0, -1)).unwrap();
    let request = layercheck::runner::request::Request {
        format: layercheck::runner::request::REQUEST_FORMAT.into(),
        model: "tiny-granite".into(),
        model_path: root().join("models/tiny-granite"),
        target: target.into(),
        mode: "model-forward".into(),
        input_ids: vec![ids],
        max_new_tokens: 0,
        forced_ids: None,
        attention_mask: "attend-pads".into(),
        feed: "cumulative".into(),
        golden: None,
        keys: golden.keys.clone(),
        capture_inputs: false,
    };
    let req = dir.join(format!("{name}.json"));
    request.write(&req).unwrap();
    let out = dir.join(format!("{name}.safetensors"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_layercheck"));
    cmd.args(["capture", "--target", target, "--request"]).arg(&req).arg("--out").arg(&out);
    if let Some(f) = fault {
        cmd.args(["--fault", f]);
    }
    assert!(cmd.status().unwrap().success());
    out
}

#[test]
fn compare_gives_per_layer_verdicts_the_first_failing_layer_and_a_report() {
    let dir = tempfile::tempdir().unwrap();
    let clean = dump(dir.path(), "clean", "cpu-f16", None);
    let faulty = dump(dir.path(), "faulty", "cpu-f32", Some("model.base_model.layers1.attn.dense:0.05"));
    let (clean, faulty) = (clean.to_str().unwrap(), faulty.to_str().unwrap());

    let o = layercheck(&["compare", "--reference", GOLDEN, "--target", clean, "--thresholds", THRESHOLDS]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("40 layers compared") && text(&o).contains("every layer passes"), "{}", text(&o));
    assert!(text(&o).contains("ok   logits: 0 of 26 token(s) past a threshold"), "{}", text(&o));

    let report = dir.path().join("report");
    let o = layercheck(&["compare", "--reference", GOLDEN, "--target", faulty, "--thresholds", THRESHOLDS, "--out", report.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("first failing layer: model.base_model.layers1.attn.dense"), "{out}");
    let ok_before = out.lines().filter(|l| l.trim_start().starts_with("ok ") && l.contains("layers0.")).count();
    assert_eq!(ok_before, 12, "layer 0 passes: {out}");
    for f in ["results.jsonl", "report.md", "report.html", "plot.png", "plot.svg"] {
        assert!(report.join(f).is_file(), "{f}");
    }
    let md = std::fs::read_to_string(report.join("report.md")).unwrap();
    assert!(md.contains("model.base_model.layers1.attn.dense"), "{md}");
    // The fault reaches the logits, and the logits verdict says so (the report too).
    // (How many of the 26 tokens fail depends on the CPU's float16 kernels; that they fail does not.)
    assert!(out.contains("FAIL logits: ") && out.contains(" of 26 token(s) past a threshold"), "{out}");
    assert!(md.contains("## Logits\n\n**fail**: "), "{md}");

    // Without thresholds: metrics only, exit 0 even for the faulty dump.
    let o = layercheck(&["compare", "--reference", GOLDEN, "--target", faulty]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("metrics only") && !text(&o).contains("FAIL"), "{}", text(&o));
}

#[test]
fn compare_refuses_captures_that_are_not_of_the_same_run_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other.safetensors");
    let status = Command::new(env!("CARGO_BIN_EXE_layercheck"))
        .current_dir(root())
        .args(["capture", "--model-path", "models/tiny-granite", "--target", "cpu-f16", "--input-ids", "tests/fixtures/seed/input_ids.json", "--out"])
        .arg(&other)
        .status()
        .unwrap();
    assert!(status.success());
    let gen = "golden/tiny-granite/gen-b1-s32-n4.safetensors";
    let other = other.to_str().unwrap();
    let impossible = dir.path().join("impossible.json");
    std::fs::write(&impossible, r#"{"model_id": "tiny-granite", "abs_diff": {"model.head": -0.5}}"#).unwrap();
    let impossible = impossible.to_str().unwrap();
    for (args, expected) in [
        (vec!["compare", "--reference", GOLDEN, "--target", other], "this capture is of other inputs"),
        (vec!["compare", "--reference", gen, "--target", other], "its mode is \"model-forward\", the case's is \"generate\""),
        (vec!["compare", "--reference", GOLDEN, "--target", "/nonexistent.safetensors"], "/nonexistent.safetensors: No such file"),
        (vec!["compare", "--reference", GOLDEN, "--target", GOLDEN, "--thresholds", "README.md"], "README.md"),
        (vec!["compare", "--reference", GOLDEN, "--target", GOLDEN, "--thresholds", THRESHOLDS, "--rtol=-1"], "--rtol -1"),
        (vec!["compare", "--reference", GOLDEN, "--target", GOLDEN, "--thresholds", impossible], "is -0.5"),
    ] {
        let o = layercheck(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(text(&o).contains(expected) && !text(&o).contains("panicked"), "{args:?}: {expected:?} not in {}", text(&o));
    }
}

/// `--metrics-out DIR --tag T`: the comparison's metrics as a compact file that `layercheck
/// thresholds` reduces (thresholds from dumps alone); the file holds the metrics `compare` printed.
#[test]
fn compare_writes_metrics_that_thresholds_reduce() {
    let dir = tempfile::tempdir().unwrap();
    let clean = dump(dir.path(), "clean", "cpu-f16", None);
    let metrics = dir.path().join("metrics");
    let (m, c) = (metrics.to_str().unwrap(), clean.to_str().unwrap());
    for tag in ["prompt-1", "prompt-2"] {
        let o = layercheck(&["compare", "--reference", GOLDEN, "--target", c, "--metrics-out", m, "--tag", tag]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    }
    let files: Vec<String> = std::fs::read_dir(&metrics).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(files.iter().all(|f| f.starts_with("tiny-granite_max-new-tokens-0_batch-size-1_seq-length-32") && f.ends_with(".layercheck.safetensors")), "{files:?}");
    let again = layercheck(&["compare", "--reference", GOLDEN, "--target", c, "--metrics-out", m, "--tag", "prompt-1"]);
    assert_eq!(again.status.code(), Some(2), "an existing metrics file is never overwritten: {}", text(&again));
    // One file: each layer's pooled abs_diff threshold is that file's observation, the value
    // compare printed (to 4 digits). (get_thresholds.py pools files by concatenation, so two
    // identical files would give sqrt(2) times it.)
    let single = dir.path().join("single");
    let o = layercheck(&["compare", "--reference", GOLDEN, "--target", c, "--metrics-out", single.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = dir.path().join("thresholds");
    let o = layercheck(&["thresholds", "--models", "tiny-granite", "--metrics", "abs_diff", "cos_sim_avg", "--file_base", single.to_str().unwrap(), "--layer_io", "--output_path", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("tiny-granite-thresholds.json")).unwrap()).unwrap();
    let dense = json["abs_diff"]["model.base_model.layers1.attn.dense"].as_f64().unwrap();
    let printed = text(&o_compare(c));
    let line = printed.lines().find(|l| l.contains("model.base_model.layers1.attn.dense ")).unwrap();
    let shown: f64 = line.split("abs_diff_l2 ").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    assert!((dense - shown).abs() <= 1e-3 * shown, "{dense} vs {shown}");
    let o = layercheck(&["thresholds", "--models", "tiny-granite", "--metrics", "abs_diff", "--file_base", m, "--layer_io", "--output_path", out.to_str().unwrap()]);
    assert!(o.status.success() && text(&o).contains("2 compact file(s)"), "{}", text(&o));
    let bad = layercheck(&["compare", "--reference", GOLDEN, "--target", c, "--tag", "x"]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
}

fn o_compare(target: &str) -> Output {
    layercheck(&["compare", "--reference", GOLDEN, "--target", target])
}
