//! External runners end to end, with no Python: a `command` target whose program is `layercheck
//! capture --request` itself (the builtin decoder answering the request as a device's program
//! would), programs that fail in every way a real one can, and `captures` folders of files.
//! Each test has a matrix of its own pointing at the repository's golden files and thresholds.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use layercheck::capture::Capture;
use layercheck::compute::evaluate::evaluate;
use layercheck_suite::matrix::Matrix;
use layercheck_suite::outcome::CaseOutcome;
use layercheck_suite::update::UpdateMode;
use layercheck_suite::attribution::Attribution;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A matrix (text) over tiny-granite at the suite's shape with `targets` defined by `extra`.
fn matrix_text(extra: &str, targets: &str, modes: &str, feeds: &str) -> String {
    format!(
        r#"golden_dir = "golden"
[models.tiny-granite]
path = "models/tiny-granite"
prompts = "tests/fixtures/prompts/tiny.txt"
thresholds = "thresholds/tiny-granite-thresholds.json"
golden_inputs = true
[faults.fault-l1-dense]
base = "cpu-f32"
module = "model.base_model.layers1.attn.dense"
amplitude = 0.05
{extra}
[matrix]
models = ["tiny-granite"]
targets = [{targets}]
modes = [{modes}]
feeds = [{feeds}]
batch_sizes = [1]
seq_lengths = [32]
max_new_tokens = [4]
"#
    )
}

fn parse(text: &str) -> Matrix {
    Matrix::parse(&root(), &root().join("test-matrix.toml"), text, |_| None).unwrap()
}

/// The outcome of every case of `matrix`, computed in this process (commands run as children).
fn outcomes(matrix: &Matrix) -> Vec<CaseOutcome> {
    matrix.cases.iter().map(|c| evaluate(matrix, c, None, UpdateMode::Verify)).collect()
}

fn failing_keys(o: &CaseOutcome) -> Vec<String> {
    o.layers.iter().filter(|l| !l.passed()).map(|l| l.key.clone()).collect()
}

/// A shell script in `dir`, executable.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    path
}

/// Command targets answered by the `layercheck` binary (named by path: `{layercheck}` would be
/// this test binary when a case is computed in process).
fn self_targets() -> String {
    let lc = env!("CARGO_BIN_EXE_layercheck");
    format!(
        r#"[targets.self-f16]
command = ["{lc}", "capture", "--request", "{{request}}", "--target", "cpu-f16", "--out", "{{out}}"]
timeout_s = 120
[targets.self-fault]
command = ["{lc}", "capture", "--request", "{{request}}", "--target", "cpu-f32", "--fault", "model.base_model.layers1.attn.dense:0.05", "--out", "{{out}}"]
timeout_s = 120
"#
    )
}

/// The command protocol gives exactly what the builtin target gives: every observation of every
/// layer equal, in both modes and both feeds (same machine, same kernels, same process image).
#[test]
fn a_command_target_answering_with_the_builtin_decoder_equals_the_builtin_target() {
    let m = parse(&matrix_text(&self_targets(), r#""self-f16", "cpu-f16""#, r#""model-forward", "generate""#, r#""cumulative", "isolated""#));
    let all = outcomes(&m);
    assert_eq!(all.len(), 8);
    for o in &all {
        assert!(o.setup_error.is_none(), "{}: {:?}", o.case, o.setup_error);
        assert!(failing_keys(o).is_empty(), "{}: {:?}", o.case, failing_keys(o));
    }
    let externals: Vec<&CaseOutcome> = all.iter().filter(|o| o.case.contains("::self-f16::")).collect();
    let builtins: Vec<&CaseOutcome> = all.iter().filter(|o| o.case.contains("::cpu-f16::")).collect();
    assert_eq!((externals.len(), builtins.len()), (4, 4));
    for (external, builtin) in externals.into_iter().zip(builtins) {
        assert_eq!(external.case.replace("self-f16", "cpu-f16"), builtin.case);
        assert_eq!(external.layers.len(), builtin.layers.len(), "{}", external.case);
        assert!(external.layers.len() >= 40);
        for (a, b) in external.layers.iter().zip(&builtin.layers) {
            assert_eq!(a.key, b.key);
            assert_eq!(a.observations, b.observations, "{} {}", external.case, a.key);
        }
    }
}

/// A faulty device behind the protocol is caught where the fault is: only that module when each
/// module is fed the golden input, that module and everything after it otherwise; the fault
/// target of the matrix (builtin) agrees.
#[test]
fn a_faulty_command_target_fails_its_module_alone_when_isolated_and_everything_after_when_cumulative() {
    let m = parse(&matrix_text(&self_targets(), r#""self-fault", "fault-l1-dense""#, r#""model-forward""#, r#""cumulative", "isolated""#));
    let all = outcomes(&m);
    let by = |case: &str| all.iter().find(|o| o.case == case).unwrap();
    let dense = "model.base_model.layers1.attn.dense";
    for target in ["self-fault", "fault-l1-dense"] {
        let isolated = by(&format!("tiny-granite::{target}::fwd::iso::b1::s32"));
        assert_eq!(failing_keys(isolated), [dense], "{target} isolated");
        let cumulative = by(&format!("tiny-granite::{target}::fwd::b1::s32"));
        let keys: Vec<String> = cumulative.layers.iter().map(|l| l.key.clone()).collect();
        let from = keys.iter().position(|k| k == dense).unwrap();
        let failing = failing_keys(cumulative);
        assert_eq!(failing.first().map(String::as_str), Some(dense), "{target} cumulative");
        assert!(failing.iter().all(|k| keys.iter().position(|x| x == k).unwrap() >= from), "{target}: a layer before the fault fails: {failing:?}");
        assert!(failing.len() >= 15, "{target}: {failing:?}");
        // Attribution: the faulty module introduces the error (for the command target, from a
        // second request with feed = isolated); every failing layer after it inherits it.
        for l in cumulative.layers.iter().filter(|l| !l.passed()) {
            let expected = if l.key == dense { Attribution::Introduced } else { Attribution::Inherited };
            assert_eq!(l.attribution, Some(expected), "{target} {}", l.key);
        }
        assert!(cumulative.layers.iter().filter(|l| l.passed()).all(|l| l.attribution.is_none()));
        assert_eq!(cumulative.attribution_unavailable, None);
        assert_eq!(isolated.layer(dense).unwrap().attribution, Some(Attribution::Introduced), "{target} isolated");
    }
}

/// Attribution needs module inputs to feed, and a target that can be fed: without them the case
/// says why and how to get them, and classifies nothing.
#[test]
fn attribution_is_unavailable_without_golden_inputs_and_for_pre_recorded_captures() {
    let empty = tempfile::tempdir().unwrap();
    let text = matrix_text("", r#""fault-l1-dense""#, r#""model-forward""#, r#""cumulative""#)
        .replace("golden_dir = \"golden\"", &format!("golden_dir = \"{}\"\nreference = \"live\"", empty.path().display()))
        .replace("golden_inputs = true", "golden_inputs = false");
    let o = &outcomes(&parse(&text))[0];
    assert!(!failing_keys(o).is_empty() && o.layers.iter().all(|l| l.attribution.is_none()), "{:?}", failing_keys(o));
    let why = o.attribution_unavailable.as_deref().unwrap();
    assert!(why.contains("no module inputs") && why.contains("golden_inputs = true under [models.tiny-granite]"), "{why}");

    // A faulty dump replayed as a captures target: it cannot be fed golden inputs.
    let dir = tempfile::tempdir().unwrap();
    let dumps = dir.path().join("dumps");
    std::fs::create_dir_all(dumps.join("tiny-granite")).unwrap();
    let m = parse(&matrix_text(&format!("[targets.dump]\ncaptures = \"{}\"\n", dumps.display()), "\"dump\"", r#""model-forward""#, r#""cumulative""#));
    let case = &m.cases[0];
    let golden_path = root().join("golden/tiny-granite/fwd-b1-s32.safetensors");
    let golden = Capture::read(&golden_path).unwrap();
    let batch = layercheck::compute::evaluate::case_batch(&root().join("models/tiny-granite"), &root().join("tests/fixtures/prompts/tiny.txt"), 1, 32).unwrap();
    let request = layercheck::runner::request_for(case, &root().join("models/tiny-granite"), &batch, layercheck::model::AttentionMask::AttendPads, &golden, &golden_path).unwrap();
    let request_file = dir.path().join("request.json");
    request.write(&request_file).unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_layercheck"))
        .args(["capture", "--target", "cpu-f32", "--fault", "model.base_model.layers1.attn.dense:0.05", "--request"])
        .arg(&request_file)
        .arg("--out")
        .arg(dumps.join("tiny-granite/fwd-b1-s32.safetensors"))
        .status()
        .unwrap();
    assert!(status.success());
    let o = evaluate(&m, case, None, UpdateMode::Verify);
    assert_eq!(failing_keys(&o).first().map(String::as_str), Some("model.base_model.layers1.attn.dense"), "{:?}", o.setup_error);
    assert!(o.layers.iter().all(|l| l.attribution.is_none()));
    let why = o.attribution_unavailable.as_deref().unwrap();
    assert!(why.contains("pre-recorded captures") && why.contains("cannot be fed golden inputs") && why.contains("hint"), "{why}");
}

/// Runs `layercheck run` on a matrix file with its own TMPDIR; returns the output and the runner
/// folders left in that TMPDIR.
fn run_cli(dir: &Path, text: &str) -> (Output, Vec<String>) {
    let matrix = dir.join("m.toml");
    std::fs::write(&matrix, text).unwrap();
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_layercheck"))
        .current_dir(root())
        .arg("run")
        .env("LAYERCHECK_MATRIX", &matrix)
        .env("TMPDIR", &tmp)
        .env("LAYERCHECK_REPORT_DIR", dir.join("reports"))
        .env_remove("LAYERCHECK_UPDATE_GOLDEN")
        .output()
        .unwrap();
    // The runner's folders (the weights-hash memo of src/model/weights.rs also lives in TMPDIR).
    let left: Vec<String> = std::fs::read_dir(&tmp).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with("layercheck-run-")).collect();
    (out, left)
}

fn stdout(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Programs that fail: each fails its case with what happened, the command line and its stderr,
/// leaves no temporary file, and never hangs the run.
#[test]
fn a_failing_command_fails_its_case_with_the_command_line_and_its_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let lc = env!("CARGO_BIN_EXE_layercheck");
    let seed_ids = root().join("tests/fixtures/seed/input_ids.json");
    let cases: Vec<(&str, PathBuf, Vec<&str>)> = vec![
        ("exits-3", script(d, "exits-3", "echo 'loading model' >&2\necho 'sendnn: device 0 not found' >&2\nexit 3"), vec!["exited with status 3", "sendnn: device 0 not found", "exits-3 --request /"]),
        ("killed", script(d, "killed", "echo 'about to crash' >&2\nkill -KILL $$"), vec!["was killed by signal 9", "about to crash"]),
        ("silent", script(d, "silent", "exit 0"), vec!["exited 0 but wrote no capture", "silent --request /"]),
        ("half-written", script(d, "half-written", "while [ \"$1\" != --out ]; do shift; done\nhead -c 100 /dev/urandom > \"$2\""), vec!["wrote a capture that cannot be read"]),
        (
            "other-inputs",
            script(d, "other-inputs", &format!("while [ \"$1\" != --out ]; do shift; done\nexec {lc} capture --model-path {} --input-ids {} --target cpu-f16 --out \"$2\"", root().join("models/tiny-granite").display(), seed_ids.display())),
            vec!["this capture is of other inputs"],
        ),
    ];
    for (name, program, expected) in cases {
        let extra = format!("[targets.{name}]\ncommand = [\"{}\", \"--request\", \"{{request}}\", \"--out\", \"{{out}}\"]\ntimeout_s = 60\n", program.display());
        let (out, left) = run_cli(d, &matrix_text(&extra, &format!("\"{name}\""), r#""model-forward""#, r#""cumulative""#));
        let text = stdout(&out);
        assert_eq!(out.status.code(), Some(1), "{name}: {text}");
        for e in expected {
            assert!(text.contains(e), "{name}: {e:?} not in:\n{text}");
        }
        assert!(!text.contains("panicked"), "{name}: {text}");
        assert!(left.is_empty(), "{name} left {left:?} in TMPDIR");
    }
}

/// A command past its time is killed with everything it started, and says so.
#[test]
fn a_command_past_its_timeout_is_killed_with_its_children() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("child-alive");
    let program = script(dir.path(), "hangs", &format!("(sleep 3; touch {}) &\necho 'compiling graph' >&2\nsleep 60", marker.display()));
    let extra = format!("[targets.hangs]\ncommand = [\"{}\", \"{{out}}\"]\ntimeout_s = 1\n", program.display());
    let started = Instant::now();
    let (out, left) = run_cli(dir.path(), &matrix_text(&extra, "\"hangs\"", r#""model-forward""#, r#""cumulative""#));
    let took = started.elapsed();
    let text = stdout(&out);
    assert!(text.contains("ran past its timeout_s of 1 s and was killed") && text.contains("compiling graph"), "{text}");
    assert!(took < Duration::from_secs(20), "took {took:?}");
    assert!(left.is_empty(), "left {left:?}");
    std::thread::sleep(Duration::from_secs(4));
    assert!(!marker.exists(), "the command's background child outlived the timeout");
}

/// Capture files as a target: a faithful file passes, and files that are not the case's are
/// refused naming what is wrong (missing and unexpected records, other inputs, another mode).
#[test]
fn captures_targets_read_files_in_the_golden_layout_and_check_them() {
    let dir = tempfile::tempdir().unwrap();
    let dumps = dir.path().join("dumps");
    std::fs::create_dir_all(dumps.join("tiny-granite")).unwrap();
    let path = dumps.join("tiny-granite/fwd-b1-s32.safetensors");
    let extra = format!("[targets.dump]\ncaptures = \"{}\"\n", dumps.display());
    let m = parse(&matrix_text(&extra, "\"dump\"", r#""model-forward""#, r#""cumulative""#));
    let case = &m.cases[0];

    let err = evaluate(&m, case, None, UpdateMode::Verify).setup_error.unwrap();
    assert!(err.contains("no pre-recorded capture") && err.contains("fwd-b1-s32.safetensors") && err.contains("hint"), "{err}");

    // A faithful dump: what the builtin cpu-f16 target computes for the case's request.
    let request_file = dir.path().join("request.json");
    let golden = Capture::read(&root().join("golden/tiny-granite/fwd-b1-s32.safetensors")).unwrap();
    let batch = layercheck::compute::evaluate::case_batch(&root().join("models/tiny-granite"), &root().join("tests/fixtures/prompts/tiny.txt"), 1, 32).unwrap();
    let request = layercheck::runner::request_for(case, &root().join("models/tiny-granite"), &batch, layercheck::model::AttentionMask::AttendPads, &golden, &root().join("golden/tiny-granite/fwd-b1-s32.safetensors")).unwrap();
    request.write(&request_file).unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_layercheck")).args(["capture", "--target", "cpu-f16", "--request"]).arg(&request_file).arg("--out").arg(&path).status().unwrap();
    assert!(status.success());
    let good = evaluate(&m, case, None, UpdateMode::Verify);
    assert!(good.setup_error.is_none() && good.layers.len() == 40 && failing_keys(&good).is_empty(), "{:?} {:?}", good.setup_error, failing_keys(&good));

    let rewrite = |edit: &dyn Fn(&mut Capture)| {
        let mut c = Capture::read(&path).unwrap();
        edit(&mut c);
        let keys = serde_json::to_string(&c.keys).unwrap();
        c.metadata.insert("keys".into(), keys);
        let broken = dir.path().join("broken.safetensors");
        c.write(&broken).unwrap();
        let dumps2 = dir.path().join("dumps2/tiny-granite");
        std::fs::create_dir_all(&dumps2).unwrap();
        std::fs::rename(&broken, dumps2.join("fwd-b1-s32.safetensors")).unwrap();
        let extra = format!("[targets.dump]\ncaptures = \"{}\"\n", dir.path().join("dumps2").display());
        let m = parse(&matrix_text(&extra, "\"dump\"", r#""model-forward""#, r#""cumulative""#));
        evaluate(&m, &m.cases[0], None, UpdateMode::Verify)
    };
    let dense = "model.base_model.layers1.attn.dense";
    let o = rewrite(&|c| {
        c.keys.retain(|k| k != dense);
        c.tensors.remove(dense);
        c.keys.push("model.base_model.layers9.ln".into());
        c.tensors.insert("model.base_model.layers9.ln".into(), tch::Tensor::zeros([1, 32, 64], (tch::Kind::Float, tch::Device::Cpu)));
    });
    let e = o.setup_error.unwrap();
    assert!(e.contains("1 missing (model.base_model.layers1.attn.dense)") && e.contains("1 unexpected (model.base_model.layers9.ln)"), "{e}");
    let o = rewrite(&|c| {
        let ids = c.tensors["input_ids"].copy();
        let _ = ids.get(0).get(31).fill_(7);
        c.tensors.insert("input_ids".into(), ids);
    });
    let e = o.setup_error.unwrap();
    assert!(e.contains("this capture is of other inputs") && e.contains("input_ids[0][31]"), "{e}");
    let o = rewrite(&|c| {
        c.metadata.insert("mode".into(), "generate".into());
    });
    assert!(o.setup_error.unwrap().contains("its mode is \"generate\""));
    // Per record: a wrong shape or dtype fails that layer alone, a NaN fails it as non-finite.
    let o = rewrite(&|c| {
        c.tensors.insert(dense.into(), tch::Tensor::zeros([1, 31, 64], (tch::Kind::Half, tch::Device::Cpu)));
        c.tensors.insert("model.base_model.layers0.ln".into(), tch::Tensor::zeros([1, 32, 64], (tch::Kind::Int64, tch::Device::Cpu)));
        let head = c.tensors["model.head"].copy();
        let _ = head.get(0).get(3).get(5).fill_(f64::NAN);
        c.tensors.insert("model.head".into(), head);
    });
    assert!(o.setup_error.is_none(), "{:?}", o.setup_error);
    let layer = |k: &str| o.layers.iter().find(|l| l.key == k).unwrap();
    assert!(layer(dense).error.as_deref().unwrap().contains("shape [1, 31, 64], the reference's [1, 32, 64]"));
    assert!(layer("model.base_model.layers0.ln").error.as_deref().unwrap().contains("not floating point"));
    assert!(!layer("model.head").passed() && layer("model.head").observations[0].target_nonfinite == 1);
    assert_eq!(failing_keys(&o).len(), 3, "{:?}", failing_keys(&o));

    // Isolated feed cannot come from a file.
    let m = parse(&matrix_text(&extra, "\"dump\"", r#""model-forward""#, r#""isolated""#));
    let e = evaluate(&m, &m.cases[0], None, UpdateMode::Verify).setup_error.unwrap();
    assert!(e.contains("cannot be fed golden inputs"), "{e}");
}

/// `{python}` without `LAYERCHECK_PYTHON` says how to set it.
#[test]
fn a_python_command_without_a_python_says_how_to_get_one() {
    let extra = "[targets.fms]\ncommand = [\"{python}\", \"-m\", \"layercheck_fms\", \"--request\", \"{request}\", \"--out\", \"{out}\"]\n";
    let dir = tempfile::tempdir().unwrap();
    let matrix = dir.path().join("m.toml");
    std::fs::write(&matrix, matrix_text(extra, "\"fms\"", r#""model-forward""#, r#""cumulative""#)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_layercheck")).current_dir(root()).arg("run").env("LAYERCHECK_MATRIX", &matrix).env_remove("LAYERCHECK_PYTHON").env("LAYERCHECK_REPORT_DIR", dir.path()).output().unwrap();
    let text = stdout(&out);
    assert!(text.contains("{python} needs the environment variable LAYERCHECK_PYTHON") && text.contains("scripts/setup-python"), "{text}");
}

/// `reference = "live"`: the cpu-f32 reference runs in the case computation and no golden file is
/// read or written; builtin, fault and command targets (the isolated feed's inputs handed to the
/// command in a temporary file) are judged as against golden files.
#[test]
fn a_live_reference_needs_no_golden_file() {
    let empty = tempfile::tempdir().unwrap();
    let text = matrix_text(&self_targets(), r#""cpu-f16", "fault-l1-dense", "self-f16""#, r#""model-forward", "generate""#, r#""cumulative", "isolated""#)
        .replace("golden_dir = \"golden\"", &format!("golden_dir = \"{}\"\nreference = \"live\"", empty.path().display()));
    let m = parse(&text);
    let all = outcomes(&m);
    assert_eq!(all.len(), 12);
    let dense = "model.base_model.layers1.attn.dense".to_string();
    for o in &all {
        assert!(o.setup_error.is_none(), "{}: {:?}", o.case, o.setup_error);
        assert!(o.notes.iter().any(|n| n.contains("run live")), "{}: {:?}", o.case, o.notes);
        let bad = failing_keys(o);
        if o.case.contains("fault-l1-dense") && o.case.contains("::iso::") {
            assert_eq!(bad, std::slice::from_ref(&dense), "{}", o.case);
        } else if o.case.contains("fault-l1-dense") {
            assert_eq!(bad.first(), Some(&dense), "{}", o.case);
        } else {
            assert!(bad.is_empty(), "{}: {bad:?}", o.case);
        }
    }
    assert_eq!(std::fs::read_dir(empty.path()).unwrap().count(), 0, "no golden file written");
    let per_model = text.replace("reference = \"live\"", "").replace("golden_inputs = true", "golden_inputs = true\nreference = \"sometimes\"");
    let err = Matrix::parse(&root(), &root().join("m.toml"), &per_model, |_| None).unwrap_err().to_string();
    assert!(err.contains("reference \"sometimes\"") && err.contains("\"golden\", \"live\" or { command") && err.contains("line 8"), "{err}");
}

/// `reference = { command }` makes the golden file by an external program answering a request at
/// float32 (for a model layercheck has no Rust decoder for, fms through the Python bridge; here
/// `layercheck capture --target cpu-f32`, so that it can be checked against the builtin
/// reference): the golden file holds what the builtin reference would, says which command made
/// it, and then judges targets as any golden file does, with no command run.
#[test]
fn a_reference_command_makes_the_golden_file_that_the_builtin_reference_would() {
    let lc = env!("CARGO_BIN_EXE_layercheck");
    let (by_builtin, by_command) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let reference = |target: &str| format!("reference = {{ command = [\"{lc}\", \"capture\", \"--request\", \"{{request}}\", \"--target\", \"{target}\", \"--out\", \"{{out}}\"], timeout_s = 120 }}");
    let with = |golden: &Path, reference: &str| {
        matrix_text("", r#""cpu-f16", "fault-l1-dense""#, r#""model-forward", "generate""#, r#""cumulative""#)
            .replace("golden_dir = \"golden\"", &format!("golden_dir = \"{}\"", golden.display()))
            .replace("golden_inputs = true", &format!("golden_inputs = true\n{reference}"))
    };
    let builtin = parse(&with(by_builtin.path(), ""));
    let command = parse(&with(by_command.path(), &reference("cpu-f32")));
    for case in builtin.cases.iter().filter(|c| c.target == "cpu-f16") {
        assert!(evaluate(&builtin, case, None, UpdateMode::Update).setup_error.is_none(), "{case}");
        let made = evaluate(&command, case, None, UpdateMode::Update);
        assert!(made.setup_error.is_none(), "{case}: {:?}", made.setup_error);
    }
    for name in ["fwd-b1-s32", "gen-b1-s32-n4"] {
        let a = Capture::read(&by_builtin.path().join(format!("tiny-granite/{name}.safetensors"))).unwrap();
        let b = Capture::read(&by_command.path().join(format!("tiny-granite/{name}.safetensors"))).unwrap();
        assert_eq!(a.keys, b.keys, "{name}");
        let mut names: Vec<&String> = a.tensors.keys().collect();
        names.sort();
        let other: Vec<&String> = { let mut n: Vec<&String> = b.tensors.keys().collect(); n.sort(); n };
        assert_eq!(names, other, "{name}: the same tensors, module inputs included");
        for n in names {
            let (x, y) = (&a.tensors[n], &b.tensors[n]);
            assert_eq!((x.kind(), x.size()), (y.kind(), y.size()), "{name} {n}");
            // The same decoder at float32 in another process: equal up to the last bits that a
            // different thread split of a reduction could move.
            assert!(x.allclose(y, 1e-5, 1e-6, false), "{name} {n}");
        }
        for field in ["target", "mode", "max_new_tokens", "attention_mask", "weights_sha256", "input_ids_sha256", "config_sha256"] {
            assert_eq!(a.metadata.get(field), b.metadata.get(field), "{name} {field}");
        }
        assert!(b.metadata["reference_command"].contains("--target cpu-f32"), "{:?}", b.metadata.get("reference_command"));
    }
    // Verified runs judge against it with no command run: the f16 target passes, the fault is caught.
    let verify = parse(&with(by_command.path(), &reference("no-such-target-so-a-run-would-fail")));
    for o in outcomes(&verify) {
        assert!(o.setup_error.is_none(), "{}: {:?}", o.case, o.setup_error);
        let bad = failing_keys(&o);
        if o.case.contains("fault-l1-dense") {
            assert_eq!(bad.first().map(String::as_str), Some("model.base_model.layers1.attn.dense"), "{}", o.case);
        } else {
            assert!(bad.is_empty(), "{}: {bad:?}", o.case);
        }
    }
}

/// What a reference command returns is checked before it becomes a golden file: a reference made
/// at float16, a command that fails, and one that ignores the request's capture_inputs are
/// refused with the reason, and no golden file is written.
#[test]
fn a_reference_command_s_capture_is_checked_before_it_becomes_golden() {
    let lc = env!("CARGO_BIN_EXE_layercheck");
    let dir = tempfile::tempdir().unwrap();
    let golden = dir.path().join("golden");
    let failing = script(dir.path(), "fails.sh", "echo 'fms: out of memory' >&2; exit 3");
    let no_inputs = script(dir.path(), "no-inputs.sh", &format!("sed 's/\"capture_inputs\": true/\"capture_inputs\": false/' \"$1\" > \"$1.b\" && exec {lc} capture --request \"$1.b\" --target cpu-f32 --out \"$2\""));
    for (argv, expected) in [
        (format!("[\"{lc}\", \"capture\", \"--request\", \"{{request}}\", \"--target\", \"cpu-f16\", \"--out\", \"{{out}}\"]"), "as Half: a reference is float32"),
        (format!("[\"{}\", \"{{out}}\"]", failing.display()), "exited with status 3"),
        (format!("[\"{}\", \"{{request}}\", \"{{out}}\"]", no_inputs.display()), "has no module inputs for 164 of its records"),
    ] {
        let mode = if expected.contains("164") { r#""generate""# } else { r#""model-forward""# };
        let text = matrix_text("", r#""cpu-f16""#, mode, r#""cumulative""#)
            .replace("golden_dir = \"golden\"", &format!("golden_dir = \"{}\"", golden.display()))
            .replace("golden_inputs = true", &format!("golden_inputs = true\nreference = {{ command = {argv}, timeout_s = 120 }}"));
        let m = parse(&text);
        let o = evaluate(&m, &m.cases[0], None, UpdateMode::Update);
        let err = o.setup_error.unwrap_or_default();
        assert!(err.contains("reference = { command }") && err.contains(expected), "{argv}: {err}");
        assert!(std::fs::read_dir(&golden).map_or(true, |mut d| d.all(|e| std::fs::read_dir(e.unwrap().path()).unwrap().next().is_none())), "{argv}: a golden file was written");
    }
}

/// A golden file of another model (same module names, other widths) fed in isolation is an error
/// naming the input and both shapes, not a libtorch panic: `layercheck capture --request` with a
/// request whose golden file is tiny-llama's (head_dim 24: its attention inputs are 96 wide) and
/// whose model is tiny-granite (64).
#[test]
fn golden_inputs_of_another_model_are_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let golden = root().join("golden/tiny-llama/fwd-b1-s32.safetensors");
    let reference = Capture::read(&golden).unwrap();
    let ids = &reference.tensors["input_ids"];
    let request = layercheck::runner::request::Request {
        format: "layercheck-request/1".into(),
        model: "tiny-granite".into(),
        model_path: root().join("models/tiny-granite"),
        target: "cpu-f16".into(),
        mode: "model-forward".into(),
        input_ids: vec![Vec::<i64>::try_from(ids.flatten(0, -1)).unwrap()],
        max_new_tokens: 0,
        forced_ids: None,
        attention_mask: "attend-pads".into(),
        feed: "isolated".into(),
        golden: Some(golden.clone()),
        keys: reference.keys.clone(),
        capture_inputs: false,
    };
    let path = dir.path().join("request.json");
    request.write(&path).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_layercheck")).args(["capture", "--request"]).arg(&path).args(["--target", "cpu-f16", "--out"]).arg(dir.path().join("c.safetensors")).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("golden input") && err.contains("has shape") && err.contains("another model") && !err.contains("panicked"), "{err}");
    assert!(!dir.path().join("c.safetensors").exists());
}

/// A model layercheck has no Rust decoder for (tiny-mistral) runs in CI with no Python: its golden
/// files (made by fms through `reference = { command }`) and fms's float16 dumps are committed, and
/// the `fms-dump-f16` captures target passes against them in both modes. Its tests are listed from
/// config.json alone: a folder with no weights lists the same names.
#[test]
fn a_model_without_a_rust_decoder_is_listed_and_judged_from_files() {
    let text = std::fs::read_to_string(root().join("layercheck.toml")).unwrap();
    let env = [("LAYERCHECK_MODELS", "tiny-mistral"), ("LAYERCHECK_TARGETS", "fms-dump-f16"), ("LAYERCHECK_MODES", "model-forward,generate"), ("LAYERCHECK_FEEDS", "cumulative")];
    let lookup = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string());
    let m = Matrix::parse(&root(), &root().join("layercheck.toml"), &text, lookup).unwrap();
    assert!(matches!(m.reference(&m.cases[0]), layercheck_suite::matrix::ReferenceKind::Command { .. }));
    for o in outcomes(&m) {
        assert!(o.setup_error.is_none(), "{}: {:?}", o.case, o.setup_error);
        assert!(o.layers.len() >= 40, "{}", o.case);
        assert!(failing_keys(&o).is_empty(), "{}: {:?}", o.case, failing_keys(&o));
    }
    let names = |m: &Matrix| layercheck_suite::runner::test_names(m, &m.cases).iter().map(|n| n.to_string()).collect::<Vec<_>>();
    let listed = names(&m);
    // 1 + 12 x 3 + 3 modules, + `model` in generate mode, + summary and logits per case.
    assert_eq!(listed.len(), (40 + 2) + (41 + 2), "{listed:?}");
    let config_only = tempfile::tempdir().unwrap();
    std::fs::copy(root().join("models/tiny-mistral/config.json"), config_only.path().join("config.json")).unwrap();
    let moved = text.replace("path = \"models/tiny-mistral\"", &format!("path = \"{}\"", config_only.path().display()));
    assert_ne!(moved, text);
    assert_eq!(names(&Matrix::parse(&root(), &root().join("layercheck.toml"), &moved, lookup).unwrap()), listed);
}
