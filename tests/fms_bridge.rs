//! The Python bridge (python/, IBM fms) as the suite's target, on real fms on CPU. Opt-in: it needs
//! the venv of `scripts/setup-python` named by `LAYERCHECK_PYTHON`; without it every test here
//! says SKIPPED and passes, and with `LAYERCHECK_REQUIRE_PYTHON=1` it fails instead.
//!
//! - `fms-cpu-f16` (fms at float16, a `command` target) passes the suite against the builtin golden
//!   files and thresholds, both models, both modes, both feeds;
//! - `fms-fault-l1-dense` (the bridge's `--fault` on layer 1's attention output) fails exactly that
//!   module in the isolated feed, and it and what follows in the cumulative feed.

use std::path::PathBuf;

use layercheck::compute::evaluate::evaluate;
use layercheck_suite::matrix::Matrix;
use layercheck_suite::outcome::CaseOutcome;
use layercheck_suite::update::UpdateMode;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Whether the bridge can run here; says why not.
fn python_available() -> bool {
    let python = std::env::var("LAYERCHECK_PYTHON").unwrap_or_default();
    let ok = !python.is_empty() && std::process::Command::new(&python).args(["-c", "import layercheck_fms, fms, torch"]).status().is_ok_and(|s| s.success());
    if !ok {
        let why = format!("LAYERCHECK_PYTHON={python:?} cannot import layercheck_fms, fms and torch (hint: LAYERCHECK_PYTHON=$(scripts/setup-python))");
        assert!(std::env::var("LAYERCHECK_REQUIRE_PYTHON").is_err(), "{why}");
        eprintln!("SKIPPED: {why}");
    }
    ok
}

/// The repository's matrix with `targets`, `modes` and `feeds` chosen (read as `cargo test` would).
fn matrix(targets: &str, modes: &str, feeds: &str) -> Matrix {
    let env = [("LAYERCHECK_TARGETS", targets), ("LAYERCHECK_MODES", modes), ("LAYERCHECK_FEEDS", feeds)];
    let text = std::fs::read_to_string(root().join("layercheck.toml")).unwrap();
    Matrix::parse(&root(), &root().join("layercheck.toml"), &text, |k| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())).unwrap()
}

fn failing(o: &CaseOutcome) -> Vec<String> {
    o.layers.iter().filter(|l| !l.passed()).map(|l| l.key.clone()).collect()
}

#[test]
fn fms_at_float16_passes_the_suite_in_both_modes_and_feeds() {
    if !python_available() {
        return;
    }
    let m = matrix("fms-cpu-f16", "model-forward,generate", "cumulative,isolated");
    assert_eq!(m.cases.len(), 8);
    for case in &m.cases {
        let o = evaluate(&m, case, None, UpdateMode::Verify);
        assert!(o.setup_error.is_none(), "{case}: {:?}", o.setup_error);
        assert!(o.layers.len() >= 40, "{case}: {} layers", o.layers.len());
        assert!(failing(&o).is_empty(), "{case}: {:?}", failing(&o));
    }
}

#[test]
fn a_fault_injected_in_fms_is_found_where_it_is() {
    if !python_available() {
        return;
    }
    let dense = "model.base_model.layers1.attn.dense";
    let m = matrix("fms-fault-l1-dense", "model-forward,generate", "cumulative,isolated");
    for case in &m.cases {
        let o = evaluate(&m, case, None, UpdateMode::Verify);
        assert!(o.setup_error.is_none(), "{case}: {:?}", o.setup_error);
        let bad = failing(&o);
        let keys: Vec<&str> = o.layers.iter().map(|l| l.key.as_str()).collect();
        let at = keys.iter().position(|k| *k == dense).unwrap();
        match case.feed {
            layercheck_suite::test_name::Feed::Isolated => assert_eq!(bad, [dense], "{case}"),
            layercheck_suite::test_name::Feed::Cumulative => {
                assert_eq!(bad.first().map(String::as_str), Some(dense), "{case}: {bad:?}");
                assert!(bad.iter().all(|k| keys.iter().position(|x| x == k).unwrap() >= at), "{case}: {bad:?}");
                assert!(bad.len() >= 15, "{case}: {bad:?}");
            }
        }
    }
}

/// `layercheck compare` on dumps the bridge makes without a request (as on a device host): the
/// clean float16 dump passes, the faulty one fails first at the faulty module.
#[test]
fn compare_judges_fms_dumps_made_without_a_request() {
    if !python_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let golden = "golden/tiny-granite/fwd-b1-s32.safetensors";
    let g = layercheck::capture::Capture::read(&root().join(golden)).unwrap();
    let ids: Vec<i64> = Vec::<i64>::try_from(g.tensors["input_ids"].flatten(0, -1)).unwrap();
    let ids_file = dir.path().join("ids.json");
    std::fs::write(&ids_file, serde_json::to_string(&vec![ids]).unwrap()).unwrap();
    let python = std::env::var("LAYERCHECK_PYTHON").unwrap();
    let dump = |name: &str, fault: Option<&str>| {
        let out = dir.path().join(format!("{name}.safetensors"));
        let mut cmd = std::process::Command::new(&python);
        cmd.current_dir(root()).args(["-m", "layercheck_fms", "--device", "cpu", "--dtype", "float16", "--model-path", "models/tiny-granite", "--input-ids"]).arg(&ids_file).arg("--out").arg(&out);
        if let Some(f) = fault {
            cmd.args(["--fault", f]);
        }
        assert!(cmd.status().unwrap().success(), "{name}");
        out
    };
    let clean = dump("clean", None);
    let faulty = dump("faulty", Some("model.base_model.layers1.attn.dense:0.05"));
    let compare = |target: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_layercheck"))
            .current_dir(root())
            .args(["compare", "--reference", golden, "--thresholds", "thresholds/tiny-granite-thresholds.json", "--target"])
            .arg(target)
            .output()
            .unwrap()
    };
    let o = compare(&clean);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stdout));
    let o = compare(&faulty);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("first failing layer: model.base_model.layers1.attn.dense"));
}

/// A model layercheck has no Rust decoder for (models/tiny-mistral, MistralForCausalLM), put under
/// test through fms alone: its golden files, made by fms at float32 through `reference = { command }`,
/// are what the committed ones hold (to 1e-5: fms at float32 in another process); fms-cpu-f16
/// passes against them in both modes and feeds; fms's fault on layer 1's attention output is found
/// where it is.
#[test]
fn a_model_without_a_rust_decoder_is_tested_through_fms_alone() {
    if !python_available() {
        return;
    }
    let fresh = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(root().join("layercheck.toml")).unwrap();
    let golden_dir = fresh.path().display().to_string();
    let with = |targets: &'static str, feeds: &'static str, golden: Option<&str>| {
        let mut env: Vec<(&str, String)> = vec![("LAYERCHECK_MODELS", "tiny-mistral".into()), ("LAYERCHECK_TARGETS", targets.into()), ("LAYERCHECK_MODES", "model-forward,generate".into()), ("LAYERCHECK_FEEDS", feeds.into())];
        if let Some(g) = golden {
            env.push(("LAYERCHECK_GOLDEN_DIR", g.to_string()));
        }
        Matrix::parse(&root(), &root().join("layercheck.toml"), &text, |k| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())).unwrap()
    };
    let update = with("fms-cpu-f16", "cumulative", Some(&golden_dir));
    for case in &update.cases {
        let o = evaluate(&update, case, None, UpdateMode::Update);
        assert!(o.setup_error.is_none(), "{case}: {:?}", o.setup_error);
    }
    for name in ["fwd-b1-s32", "gen-b1-s32-n4"] {
        let made = layercheck::capture::Capture::read(&fresh.path().join(format!("tiny-mistral/{name}.safetensors"))).unwrap();
        let committed = layercheck::capture::Capture::read(&root().join(format!("golden/tiny-mistral/{name}.safetensors"))).unwrap();
        assert_eq!(made.keys, committed.keys, "{name}");
        assert!(made.metadata["reference_command"].contains("layercheck_fms") && made.metadata["fms_loader"].contains("get_model"), "{name}: {:?}", made.metadata);
        for (n, t) in &committed.tensors {
            let m = &made.tensors[n];
            assert!(m.size() == t.size() && m.allclose(t, 1e-5, 1e-6, false), "{name} {n}");
        }
    }
    let dense = "model.base_model.layers1.attn.dense";
    let verify = with("fms-cpu-f16,fms-fault-l1-dense", "cumulative,isolated", None);
    assert_eq!(verify.cases.len(), 8);
    for case in &verify.cases {
        let o = evaluate(&verify, case, None, UpdateMode::Verify);
        assert!(o.setup_error.is_none(), "{case}: {:?}", o.setup_error);
        assert!(o.layers.len() >= 40, "{case}");
        let bad = failing(&o);
        match (case.target.as_str(), case.feed) {
            ("fms-cpu-f16", _) => assert!(bad.is_empty(), "{case}: {bad:?}"),
            (_, layercheck_suite::test_name::Feed::Isolated) => assert_eq!(bad, [dense], "{case}"),
            _ => assert_eq!(bad.first().map(String::as_str), Some(dense), "{case}: {bad:?}"),
        }
    }
}
