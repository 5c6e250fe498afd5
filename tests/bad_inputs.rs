//! Bad input, as a user gives it: each case runs the real `layercheck` binary on one broken model
//! folder, input file, flag, thresholds file, golden file, matrix or environment variable, and
//! asserts a clear error (the file or flag named, the problem, a hint), no panic, exit code 1 or 2,
//! and that no file was destroyed or left half-written (the folders involved hash the same before
//! and after, but for what the case may write). Then kills and concurrent processes during golden
//! regeneration. Issue 10; the README's table of what each input gets is built from these cases.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use layercheck::capture::Capture;
use sha2::{Digest, Sha256};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `layercheck` in `cwd` with the suite's variables cleared and `env` set.
fn layercheck(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_layercheck"));
    cmd.current_dir(cwd).args(args).stdin(Stdio::null());
    for (k, _) in std::env::vars() {
        if k.starts_with("LAYERCHECK_") || k == "CI" || k.starts_with("NEXTEST") || k == "RUST_BACKTRACE" {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    cmd.output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A clear error: exit code 1 or 2, each of `needles` in the output, a hint, no panic.
#[track_caller]
fn assert_clear_error(label: &str, o: &Output, needles: &[&str]) {
    let t = text(o);
    let code = o.status.code();
    assert!(matches!(code, Some(1) | Some(2)), "{label}: exit code {code:?} (expected 1 or 2):\n{t}");
    for n in needles {
        assert!(t.contains(n), "{label}: expected {n:?} in:\n{t}");
    }
    assert!(t.contains("hint"), "{label}: no hint in:\n{t}");
    for bad in ["panicked", "RUST_BACKTRACE", "stack backtrace", "Exception raised from"] {
        assert!(!t.contains(bad), "{label}: {bad:?} in:\n{t}");
    }
}

/// sha256 of every file under `dir` (relative paths), to show nothing was changed or left.
fn hash_tree(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let bytes = std::fs::read(&p).unwrap_or_default();
                out.insert(p.strip_prefix(dir).unwrap().to_path_buf(), format!("{:x}", Sha256::digest(&bytes)));
            }
        }
    }
    out
}

/// Temporaries of atomic writes under `dir`.
fn temporaries(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_name().to_string_lossy().starts_with(".layercheck-") {
                out.push(p.clone());
            }
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    out
}

/// A copy of an embedded model in a temporary folder.
fn copy_model(tmp: &Path, name: &str) -> PathBuf {
    let dst = tmp.join(name);
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(root().join("models").join(name)).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
    dst
}

fn edit_json(path: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(path, v.to_string()).unwrap();
}

/// One bad input for `layercheck capture` / `generate` / `thresholds` / `report`: a label, what to
/// break in a fresh temporary folder (which holds a copy of tiny-granite as `tiny-granite/` and
/// returns the arguments), and what the error must say.
struct Probe {
    label: &'static str,
    setup: fn(&Path, &Path) -> Vec<String>,
    needles: &'static [&'static str],
}

fn ids_file(tmp: &Path, json: &str) -> String {
    let p = tmp.join("ids.json");
    std::fs::write(&p, json).unwrap();
    p.display().to_string()
}

fn capture_args(model: &Path, input: &[&str], out: &Path) -> Vec<String> {
    let mut v = vec!["capture".to_string(), "--model-path".into(), model.display().to_string()];
    v.extend(input.iter().map(|s| s.to_string()));
    v.extend(["--out".to_string(), out.display().to_string()]);
    v
}

const IDS: &str = "[[0, 0, 322, 380, 103, 25, 354, 11]]";

fn run_probes(probes: &[Probe]) {
    for p in probes {
        let tmp = tempfile::tempdir().unwrap();
        let model = copy_model(tmp.path(), "tiny-granite");
        let args = (p.setup)(tmp.path(), &model);
        let before: BTreeMap<PathBuf, String> = hash_tree(tmp.path());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = layercheck(tmp.path(), &args, &[]);
        assert_clear_error(p.label, &o, p.needles);
        // Nothing changed, nothing half-written, nothing new (an error writes nothing).
        assert_eq!(hash_tree(tmp.path()), before, "{}: files changed:\n{}", p.label, text(&o));
        eprintln!("| {} | {} (exit {}) |", p.label, first_line(&o), o.status.code().unwrap());
    }
}

/// The error's first line without the `error: ` prefix, for the table of the lead's note.
fn first_line(o: &Output) -> String {
    let t = text(o);
    let line = t.lines().find(|l| l.starts_with("error:") || l.contains("could not be checked")).unwrap_or_else(|| t.lines().next().unwrap_or(""));
    line.trim_start_matches("error: ").chars().take(160).collect()
}

#[test]
fn model_folders() {
    run_probes(&[
        Probe { label: "config.json missing", setup: |t, m| { std::fs::remove_file(m.join("config.json")).unwrap(); capture_args(m, &["--input-ids", &ids_file(t, IDS)], &t.join("o.safetensors")) }, needles: &["config.json", "No such file"] },
        Probe { label: "config.json not JSON", setup: |t, m| { std::fs::write(m.join("config.json"), "{\"model_type\": ").unwrap(); capture_args(m, &["--input-ids", &ids_file(t, IDS)], &t.join("o.safetensors")) }, needles: &["config.json", "is not valid JSON"] },
        Probe { label: "rms_norm_eps negative", setup: |t, m| { edit_json(&m.join("config.json"), |v| v["rms_norm_eps"] = (-1e-6).into()); capture_args(m, &["--input-ids", &ids_file(t, IDS)], &t.join("o.safetensors")) }, needles: &["config.json: field \"rms_norm_eps\"", "must be above 0"] },
        Probe { label: "rms_norm_eps 0", setup: |t, m| { edit_json(&m.join("config.json"), |v| v["rms_norm_eps"] = 0.into()); capture_args(m, &["--input-ids", &ids_file(t, IDS)], &t.join("o.safetensors")) }, needles: &["field \"rms_norm_eps\" = 0 must be above 0"] },
        Probe { label: "rope_theta 0", setup: |t, m| { edit_json(&m.join("config.json"), |v| v["rope_parameters"]["rope_theta"] = 0.0.into()); capture_args(m, &["--input-ids", &ids_file(t, IDS)], &t.join("o.safetensors")) }, needles: &["field \"rope_parameters.rope_theta\" = 0 must be above 1"] },
        Probe { label: "rope_theta negative (top level)", setup: |t, m| { edit_json(&m.join("config.json"), |v| { v.as_object_mut().unwrap().remove("rope_parameters"); v["rope_theta"] = (-5.0).into(); }); capture_args(m, &["--input-ids", &ids_file(t, IDS)], &t.join("o.safetensors")) }, needles: &["field \"rope_theta\" = -5 must be above 1"] },
        Probe { label: "num_attention_heads 0", setup: |t, m| { edit_json(&m.join("config.json"), |v| v["num_attention_heads"] = 0.into()); capture_args(m, &["--input-ids", &ids_file(t, IDS)], &t.join("o.safetensors")) }, needles: &["field \"num_attention_heads\" must be a positive integer, found 0"] },
        Probe { label: "hidden_size not a multiple of the heads", setup: |t, m| { edit_json(&m.join("config.json"), |v| { v["num_attention_heads"] = 3.into(); v["num_key_value_heads"] = 3.into(); }); capture_args(m, &["--input-ids", &ids_file(t, IDS)], &t.join("o.safetensors")) }, needles: &["field \"head_dim\" is missing and hidden_size is not a multiple of num_attention_heads"] },
        Probe { label: "residual_multiplier negative", setup: |t, m| { edit_json(&m.join("config.json"), |v| v["residual_multiplier"] = (-0.7).into()); capture_args(m, &["--input-ids", &ids_file(t, IDS)], &t.join("o.safetensors")) }, needles: &["field \"residual_multiplier\" = -0.7 must be above 0"] },
        Probe { label: "unknown config field", setup: |t, m| { edit_json(&m.join("config.json"), |v| v["quantization_config"] = serde_json::json!({"bits": 4})); capture_args(m, &["--input-ids", &ids_file(t, IDS)], &t.join("o.safetensors")) }, needles: &["field \"quantization_config\" is not a field layercheck knows"] },
        Probe { label: "weights truncated", setup: |t, m| { let w = m.join("model.safetensors"); let b = std::fs::read(&w).unwrap(); std::fs::write(&w, &b[..b.len() / 3]).unwrap(); capture_args(m, &["--input-ids", &ids_file(t, IDS)], &t.join("o.safetensors")) }, needles: &["model.safetensors", "truncated or corrupt"] },
        Probe { label: "weights missing", setup: |t, m| { std::fs::remove_file(m.join("model.safetensors")).unwrap(); capture_args(m, &["--input-ids", &ids_file(t, IDS)], &t.join("o.safetensors")) }, needles: &["model.safetensors is missing"] },
        Probe { label: "tokenizer.json corrupt", setup: |t, m| { std::fs::write(m.join("tokenizer.json"), "{\"version\": ").unwrap(); let p = t.join("p.txt"); std::fs::write(&p, "hello world\n").unwrap(); capture_args(m, &["--prompts", p.to_str().unwrap()], &t.join("o.safetensors")) }, needles: &["tokenizer.json", "could not load the tokenizer"] },
        Probe { label: "--model-path is a file", setup: |t, m| { capture_args(&m.join("config.json"), &["--input-ids", &ids_file(t, IDS)], &t.join("o.safetensors")) }, needles: &["config.json", "Not a directory"] },
    ]);
}

#[test]
fn inputs() {
    run_probes(&[
        Probe { label: "--input-ids missing", setup: |t, m| capture_args(m, &["--input-ids", t.join("none.json").to_str().unwrap()], &t.join("o.safetensors")), needles: &["none.json", "No such file"] },
        Probe { label: "--input-ids not JSON", setup: |t, m| capture_args(m, &["--input-ids", &ids_file(t, "[[1, 2")], &t.join("o.safetensors")), needles: &["ids.json", "not a list of lists of integer ids"] },
        Probe { label: "--input-ids ragged rows", setup: |t, m| capture_args(m, &["--input-ids", &ids_file(t, "[[1, 2, 3], [4, 5]]")], &t.join("o.safetensors")), needles: &["ids.json", "row 1 has 2 ids but row 0 has 3"] },
        Probe { label: "--input-ids negative id", setup: |t, m| capture_args(m, &["--input-ids", &ids_file(t, "[[1, -2, 3]]")], &t.join("o.safetensors")), needles: &["ids.json", "negative id -2"] },
        Probe { label: "--input-ids id outside the vocabulary", setup: |t, m| capture_args(m, &["--input-ids", &ids_file(t, "[[1, 384, 3]]")], &t.join("o.safetensors")), needles: &["token id 384", "outside the vocabulary of 384"] },
        Probe { label: "--input-ids empty batch", setup: |t, m| capture_args(m, &["--input-ids", &ids_file(t, "[]")], &t.join("o.safetensors")), needles: &["ids.json", "the batch is empty"] },
        Probe { label: "--prompts file empty", setup: |t, m| { let p = t.join("p.txt"); std::fs::write(&p, "\n\n").unwrap(); capture_args(m, &["--prompts", p.to_str().unwrap()], &t.join("o.safetensors")) }, needles: &["p.txt", "holds no prompts"] },
        Probe { label: "--prompts .json not a list of strings", setup: |t, m| { let p = t.join("p.json"); std::fs::write(&p, "{\"a\": 1}").unwrap(); capture_args(m, &["--prompts", p.to_str().unwrap()], &t.join("o.safetensors")) }, needles: &["p.json", "not a JSON list of strings"] },
        Probe { label: "prompt longer than --seq-length", setup: |t, m| { let p = t.join("p.txt"); std::fs::write(&p, "the cat sat on the mat and looked around the room\n").unwrap(); let mut a = capture_args(m, &["--prompts", p.to_str().unwrap()], &t.join("o.safetensors")); a.extend(["--seq-length".into(), "4".into()]); a }, needles: &["p.txt: prompt 0 is", "more than the sequence length 4", "--seq-length"] },
        Probe { label: "--seq-length 0", setup: |t, m| { let p = t.join("p.txt"); std::fs::write(&p, "hi\n").unwrap(); let mut a = capture_args(m, &["--prompts", p.to_str().unwrap()], &t.join("o.safetensors")); a.extend(["--seq-length".into(), "0".into()]); a }, needles: &["--seq-length", "must be at least 1"] },
        Probe { label: "capture: seq length + new tokens > max_position_embeddings", setup: |t, m| { let row: Vec<String> = (0..250).map(|i| (i % 300 + 1).to_string()).collect(); let ids = ids_file(t, &format!("[[{}]]", row.join(", "))); let mut a = capture_args(m, &["--input-ids", &ids], &t.join("o.safetensors")); a.extend(["--mode", "generate", "--max-new-tokens", "8"].map(String::from)); a }, needles: &["the run needs 257 positions", "sequence length 250 + 8 new tokens", "\"max_position_embeddings\" = 256"] },
        Probe { label: "capture: model-forward longer than max_position_embeddings", setup: |t, m| { let row: Vec<String> = (0..300).map(|i| (i % 300 + 1).to_string()).collect(); let ids = ids_file(t, &format!("[[{}]]", row.join(", "))); capture_args(m, &["--input-ids", &ids], &t.join("o.safetensors")) }, needles: &["the run needs 300 positions", "\"max_position_embeddings\" = 256"] },
        Probe { label: "generate: seq length + new tokens > max_position_embeddings", setup: |t, m| { let row: Vec<String> = (0..255).map(|i| (i % 300 + 1).to_string()).collect(); let ids = ids_file(t, &format!("[[{}]]", row.join(", "))); ["generate", "--model_path", m.to_str().unwrap(), "--mode", "generate", "--batch_sizes", "1", "--seq_lengths", "255", "--max_new_tokens", "4", "--input-ids", &ids, "--output_path", t.join("out").to_str().unwrap()].map(String::from).to_vec() }, needles: &["the run needs 258 positions", "\"max_position_embeddings\" = 256"] },
    ]);
}

#[test]
fn generate_thresholds_and_report_flags() {
    run_probes(&[
        Probe { label: "generate: --batch_sizes 0", setup: |t, m| ["generate", "--model_path", m.to_str().unwrap(), "--mode", "model-forward", "--batch_sizes", "0", "--seq_lengths", "8", "--max_new_tokens", "2", "--input-ids", &ids_file(t, IDS)].map(String::from).to_vec(), needles: &["--batch_sizes", "must be at least 1"] },
        Probe { label: "generate: --max_new_tokens 0 in generate mode", setup: |t, m| ["generate", "--model_path", m.to_str().unwrap(), "--mode", "generate", "--batch_sizes", "1", "--seq_lengths", "8", "--max_new_tokens", "0", "--input-ids", &ids_file(t, IDS)].map(String::from).to_vec(), needles: &["--max_new_tokens 0 in generate mode"] },
        Probe { label: "generate: --architecture other", setup: |t, m| ["generate", "--architecture", "gpt2", "--model_path", m.to_str().unwrap(), "--mode", "generate", "--batch_sizes", "1", "--seq_lengths", "8", "--max_new_tokens", "2", "--input-ids", &ids_file(t, IDS)].map(String::from).to_vec(), needles: &["--architecture gpt2 is not supported"] },
        Probe { label: "generate: --format unknown", setup: |t, m| ["generate", "--model_path", m.to_str().unwrap(), "--mode", "generate", "--batch_sizes", "1", "--seq_lengths", "8", "--max_new_tokens", "2", "--format", "parquet", "--input-ids", &ids_file(t, IDS)].map(String::from).to_vec(), needles: &["unknown format \"parquet\""] },
        Probe { label: "generate: --input-ids of another shape than the case", setup: |t, m| ["generate", "--model_path", m.to_str().unwrap(), "--mode", "model-forward", "--batch_sizes", "2", "--seq_lengths", "8", "--max_new_tokens", "2", "--input-ids", &ids_file(t, IDS), "--output_path", t.join("out").to_str().unwrap()].map(String::from).to_vec(), needles: &["ids.json holds 1 x 8 ids but the case is batch size 2", "--batch_sizes 1"] },
        Probe { label: "generate: --prompt-batches with seed CSV", setup: |t, m| { let p = t.join("p.txt"); std::fs::write(&p, "hi\n").unwrap(); ["generate", "--model_path", m.to_str().unwrap(), "--mode", "model-forward", "--batch_sizes", "1", "--seq_lengths", "8", "--max_new_tokens", "2", "--prompts", p.to_str().unwrap(), "--prompt-batches", "2", "--output_path", t.join("out").to_str().unwrap()].map(String::from).to_vec() }, needles: &["--prompt-batches above 1 needs --format compact"] },
        Probe { label: "thresholds: --file_base missing", setup: |t, _| ["thresholds", "--models", "tiny-granite", "--metrics", "abs_diff", "--file_base", t.join("nowhere").to_str().unwrap(), "--layer_io", "--output_path", t.join("th").to_str().unwrap()].map(String::from).to_vec(), needles: &["cannot list", "nowhere", "--file_base"] },
        Probe { label: "thresholds: --percentile 150", setup: |t, _| { std::fs::create_dir(t.join("m")).unwrap(); ["thresholds", "--models", "tiny-granite", "--metrics", "abs_diff", "--file_base", t.join("m").to_str().unwrap(), "--layer_io", "--percentile", "150", "--output_path", t.join("th").to_str().unwrap()].map(String::from).to_vec() }, needles: &["percentile 150 is not in [0, 100]"] },
        Probe { label: "report: --thresholds with a NaN abs_diff", setup: |t, _| { let th = t.join("t.json"); std::fs::write(&th, r#"{"model_id": "tiny-granite", "abs_diff": {"model.head": NaN}}"#).unwrap(); let compact = compact_fixture(t); ["report", "--compact", compact.to_str().unwrap(), "--thresholds", th.to_str().unwrap(), "--out", t.join("r").to_str().unwrap()].map(String::from).to_vec() }, needles: &["t.json: abs_diff[\"model.head\"] is NaN"] },
        Probe { label: "report: --rtol negative", setup: |t, _| { let th = t.join("t.json"); std::fs::write(&th, r#"{"model_id": "tiny-granite", "abs_diff": {"model.head": 1.0}}"#).unwrap(); let compact = compact_fixture(t); ["report", "--compact", compact.to_str().unwrap(), "--thresholds", th.to_str().unwrap(), "--rtol=-0.5", "--out", t.join("r").to_str().unwrap()].map(String::from).to_vec() }, needles: &["--rtol -0.5: a margin is a finite number at least 0"] },
        Probe { label: "report: --results folder without results.jsonl", setup: |t, _| { std::fs::create_dir(t.join("rep")).unwrap(); ["report", "--results", t.join("rep").to_str().unwrap()].map(String::from).to_vec() }, needles: &["results.jsonl"] },
    ]);
}

/// A small compact metrics file, made with the library (no model run).
fn compact_fixture(dir: &Path) -> PathBuf {
    use layercheck::formats::case::SeedCase;
    use layercheck::formats::compact::CompactWriter;
    let r = tch::Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).view([1, 2, 2]);
    let t = &r + 0.01;
    let c = layercheck::metrics::compare(&r, &t).unwrap();
    let mut w = CompactWriter::new(SeedCase::new("tiny-granite", 2, 1, 2));
    w.push("model.head", &r.size(), &t.size(), &c).unwrap();
    w.write(dir).unwrap()
}

#[test]
fn outputs_are_never_destroyed() {
    let tmp = tempfile::tempdir().unwrap();
    let model = copy_model(tmp.path(), "tiny-granite");
    let ids = ids_file(tmp.path(), IDS);
    let model_before = hash_tree(&model);
    let args = |out: &Path, extra: &[&str]| {
        let mut a = capture_args(&model, &["--input-ids", &ids], out);
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let run = |a: Vec<String>| layercheck(tmp.path(), &a.iter().map(String::as_str).collect::<Vec<_>>(), &[]);

    // An existing --out is refused, and left as it was; --force replaces it.
    let out = tmp.path().join("run.safetensors");
    std::fs::write(&out, "precious").unwrap();
    let o = run(args(&out, &[]));
    assert_clear_error("--out exists", &o, &["--out", "run.safetensors already exists", "--force"]);
    eprintln!("| capture --out an existing file | {} (exit {}) |", first_line(&o), o.status.code().unwrap());
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "precious");
    let o = run(args(&out, &["--force"]));
    assert!(o.status.success(), "{}", text(&o));
    Capture::read(&out).unwrap();

    // Never into the model folder, not even with --force, nor through a path that only leads there.
    for (label, target) in [("--out the model's own weights", model.join("model.safetensors")), ("--out a new file in the model folder", model.join("x.safetensors")), ("--out into the model folder via ..", tmp.path().join("sub/../tiny-granite/config.json"))] {
        std::fs::create_dir_all(tmp.path().join("sub")).unwrap();
        let o = run(args(&target, &["--force"]));
        assert_clear_error(label, &o, &["is inside the model folder", "never writes there"]);
        eprintln!("| capture {label} (--force) | {} (exit {}) |", first_line(&o), o.status.code().unwrap());
    }
    assert_eq!(hash_tree(&model), model_before, "the model folder changed");

    // A path under a file, and a folder.
    std::fs::write(tmp.path().join("some_file"), "x").unwrap();
    let o = run(args(&tmp.path().join("some_file/x.safetensors"), &[]));
    assert_clear_error("--out under a file", &o, &["some_file is a file, not a folder"]);
    assert!(!text(&o).contains("File exists"), "{}", text(&o));
    eprintln!("| capture --out some_file/x.safetensors | {} (exit {}) |", first_line(&o), o.status.code().unwrap());
    let o = run(args(tmp.path(), &[]));
    assert_clear_error("--out a folder", &o, &["is a folder", "give a file name"]);
    eprintln!("| capture --out a folder | {} (exit {}) |", first_line(&o), o.status.code().unwrap());
    assert_eq!(std::fs::read_to_string(tmp.path().join("some_file")).unwrap(), "x");
    assert!(temporaries(tmp.path()).is_empty());
}

/// generate never overwrites, and never leaves part of a case; thresholds refuse a partial one.
#[test]
fn generate_writes_a_case_all_or_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let model = copy_model(tmp.path(), "tiny-granite");
    let ids = ids_file(tmp.path(), IDS);
    let out = tmp.path().join("out");
    let gen = |out: &Path| {
        let a = ["generate", "--model_path", model.to_str().unwrap(), "--variant", "tiny-granite", "--mode", "model-forward", "--batch_sizes", "1", "--seq_lengths", "8", "--max_new_tokens", "2", "--input-ids", &ids, "--output_path", out.to_str().unwrap()];
        layercheck(tmp.path(), &a, &[])
    };
    // A file of the case left in the folder: refused before anything else is written.
    std::fs::create_dir(&out).unwrap();
    let prefix = "tiny-granite_max-new-tokens-2_batch-size-1_seq-length-8_dtype-float16";
    let left = out.join(format!("{prefix}--model.head.cos_sim.csv"));
    std::fs::write(&left, "left by another run").unwrap();
    let o = gen(&out);
    assert_clear_error("generate over a case's file", &o, &["model.head.cos_sim.csv already exists", "never overwrites"]);
    eprintln!("| generate into a folder holding one of the case's files | {} (exit {}) |", first_line(&o), o.status.code().unwrap());
    let names: Vec<String> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names, [left.file_name().unwrap().to_string_lossy().into_owned()], "part of the case was written");
    assert_eq!(std::fs::read_to_string(&left).unwrap(), "left by another run");

    // A whole case, then one with a record's cos file lost: thresholds refuse it.
    std::fs::remove_file(&left).unwrap();
    let o = gen(&out);
    assert!(o.status.success(), "{}", text(&o));
    assert!(temporaries(&out).is_empty(), "{:?}", temporaries(&out));
    std::fs::remove_file(out.join(format!("{prefix}--model.base_model.layers2.ln.cos_sim.csv"))).unwrap();
    let th = tmp.path().join("th");
    let o = layercheck(tmp.path(), &["thresholds", "--models", "tiny-granite", "--metrics", "abs_diff", "cos_sim_avg", "--file_base", out.to_str().unwrap(), "--layer_io", "--output_path", th.to_str().unwrap()], &[]);
    assert_clear_error("thresholds over a partial case", &o, &[prefix, "is partial", "record model.base_model.layers2.ln has its abs_diff file but not its cos_sim file"]);
    eprintln!("| thresholds over a case missing one cos_sim file | {} (exit {}) |", first_line(&o), o.status.code().unwrap());
    assert!(!th.exists());
    // Both files of the last records gone (a run cut short): a warning naming what is missing.
    std::fs::remove_file(out.join(format!("{prefix}--model.base_model.layers2.ln.abs_diff.csv"))).unwrap();
    let o = layercheck(tmp.path(), &["thresholds", "--models", "tiny-granite", "--metrics", "abs_diff", "cos_sim_avg", "--file_base", out.to_str().unwrap(), "--layer_io", "--output_path", th.to_str().unwrap()], &[]);
    assert!(o.status.success() && text(&o).contains("is not a whole forward (no model.base_model.layers2.ln"), "{}", text(&o));
}

// ---- The suite: `layercheck run` on a matrix of the test's own (LAYERCHECK_MATRIX). ----

/// A matrix for tiny-granite with absolute paths; `edit` changes its text.
struct Suite {
    tmp: tempfile::TempDir,
}

impl Suite {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let golden = tmp.path().join("golden/tiny-granite");
        std::fs::create_dir_all(&golden).unwrap();
        for f in ["fwd-b1-s32.safetensors", "gen-b1-s32-n4.safetensors"] {
            std::fs::copy(root().join("golden/tiny-granite").join(f), golden.join(f)).unwrap();
        }
        std::fs::copy(root().join("thresholds/tiny-granite-thresholds.json"), tmp.path().join("thresholds.json")).unwrap();
        Suite { tmp }
    }

    fn dir(&self) -> &Path {
        self.tmp.path()
    }

    fn matrix(&self, model: &Path, targets: &str, extra_axes: &str) -> String {
        let r = root();
        format!(
            r#"golden_dir = "{d}/golden"
[models.tiny-granite]
path = "{model}"
prompts = "{r}/tests/fixtures/prompts/tiny.txt"
thresholds = "{d}/thresholds.json"
golden_inputs = true
[faults.fault-l1-dense]
base = "cpu-f32"
module = "model.base_model.layers1.attn.dense"
amplitude = 0.05
[matrix]
models = ["tiny-granite"]
targets = [{targets}]
batch_sizes = [1]
seq_lengths = [32]
{extra_axes}
"#,
            d = self.dir().display(),
            model = model.display(),
            r = r.display()
        )
    }

    fn default_matrix(&self) -> String {
        self.matrix(&root().join("models/tiny-granite"), "\"cpu-f16\"", "")
    }

    /// `layercheck run` with `text` as the matrix and `env` set; the folder must not change
    /// (but for the matrix file, and the report folder).
    fn run(&self, label: &str, text: &str, env: &[(&str, &str)], needles: &[&str]) {
        let m = self.dir().join("m.toml");
        std::fs::write(&m, text).unwrap();
        let reports = tempfile::tempdir().unwrap();
        let before = hash_tree(self.dir());
        let mut e = vec![("LAYERCHECK_MATRIX", m.to_str().unwrap()), ("LAYERCHECK_REPORT_DIR", reports.path().to_str().unwrap())];
        e.extend_from_slice(env);
        let o = layercheck(self.dir(), &["run"], &e);
        assert_clear_error(label, &o, needles);
        assert_eq!(hash_tree(self.dir()), before, "{label}: files changed:\n{}", text_of(&o));
        eprintln!("| {label} | {} (exit {}) |", first_line(&o), o.status.code().unwrap());
    }
}

fn text_of(o: &Output) -> String {
    text(o)
}

#[test]
fn matrix_files() {
    let s = Suite::new();
    let good = s.default_matrix();
    // The matrix as given passes (so each case below fails for its own reason).
    let m = s.dir().join("m.toml");
    std::fs::write(&m, &good).unwrap();
    let reports = tempfile::tempdir().unwrap();
    let ok = layercheck(s.dir(), &["run"], &[("LAYERCHECK_MATRIX", m.to_str().unwrap()), ("LAYERCHECK_REPORT_DIR", reports.path().to_str().unwrap())]);
    assert!(ok.status.success(), "{}", text(&ok));

    let o = layercheck(s.dir(), &["run"], &[("LAYERCHECK_MATRIX", "/nonexistent/m.toml")]);
    assert_clear_error("LAYERCHECK_MATRIX names no file", &o, &["/nonexistent/m.toml", "No such file"]);
    eprintln!("| LAYERCHECK_MATRIX=/nonexistent/m.toml | {} (exit {}) |", first_line(&o), o.status.code().unwrap());
    s.run("matrix not TOML", "[matrix\nmodels = ", &[], &["m.toml", "TOML parse error"]);
    s.run("matrix models = []", &good.replace("models = [\"tiny-granite\"]", "models = []"), &[], &["m.toml", "[matrix] models is empty"]);
    s.run("matrix seq_lengths = []", &good.replace("seq_lengths = [32]", "seq_lengths = []"), &[], &["[matrix] seq_lengths is empty"]);
    s.run("matrix targets listed twice", &good.replace("targets = [\"cpu-f16\"]", "targets = [\"cpu-f16\", \"cpu-f16\"]"), &[], &["[matrix] targets lists \"cpu-f16\" twice"]);
    s.run("matrix margins rtol NaN", &good.replace("[models.tiny-granite]", "margins = { rtol = nan, atol = 1e-6 }\n[models.tiny-granite]"), &[], &["margins.rtol is NaN"]);
    s.run("matrix margins atol negative", &good.replace("[models.tiny-granite]", "margins = { rtol = 0.05, atol = -1.0 }\n[models.tiny-granite]"), &[], &["margins.atol is -1"]);
    s.run("matrix unknown target", &good.replace("targets = [\"cpu-f16\"]", "targets = [\"tpu-f8\"]"), &[], &["matrix target \"tpu-f8\""]);
    s.run("matrix unknown field", &good.replace("golden_inputs = true", "golden_inputs = true\nweights = \"x\""), &[], &["unknown field `weights`"]);
    s.run("fault amplitude 0", &good.replace("amplitude = 0.05", "amplitude = 0.0"), &[], &["faults.fault-l1-dense.amplitude is 0"]);
}

#[test]
fn environment_and_case_setup() {
    let s = Suite::new();
    let good = s.default_matrix();
    s.run("LAYERCHECK_MODELS= (empty)", &good, &[("LAYERCHECK_MODELS", "")], &["LAYERCHECK_MODELS=", "is empty"]);
    s.run("LAYERCHECK_SEQ_LENGTHS=0", &good, &[("LAYERCHECK_SEQ_LENGTHS", "0")], &["LAYERCHECK_SEQ_LENGTHS=0", "\"0\" is not a positive integer"]);
    s.run("LAYERCHECK_TARGETS=cpu-f16,bogus", &good, &[("LAYERCHECK_TARGETS", "cpu-f16,bogus")], &["matrix target \"bogus\""]);
    s.run("LAYERCHECK_FEEDS=sideways", &good, &[("LAYERCHECK_FEEDS", "sideways")], &["unknown feed \"sideways\""]);
    s.run("LAYERCHECK_UPDATE_GOLDEN=maybe", &good, &[("LAYERCHECK_UPDATE_GOLDEN", "maybe")], &["LAYERCHECK_UPDATE_GOLDEN=maybe is not understood"]);
    s.run("LAYERCHECK_UPDATE_GOLDEN=1 under CI", &good, &[("LAYERCHECK_UPDATE_GOLDEN", "1"), ("CI", "true")], &["refusing to regenerate golden files under CI"]);
    // Cases whose setup fails: named, never a pass.
    s.run("fault on layers9 of a 3-layer model", &good.replace("layers1.attn.dense", "layers9.attn.dense").replace("targets = [\"cpu-f16\"]", "targets = [\"fault-l1-dense\"]"), &[], &["module model.base_model.layers9.attn.dense does not exist in this case's run", "every test would pass"]);
    s.run("fault on `model` in model-forward mode", &good.replace("module = \"model.base_model.layers1.attn.dense\"", "module = \"model\"").replace("targets = [\"cpu-f16\"]", "targets = [\"fault-l1-dense\"]"), &[], &["module model does not exist in this case's run"]);
    s.run("matrix model path missing", &s.matrix(&s.dir().join("no-model"), "\"cpu-f16\"", ""), &[], &["no-model has no config.json", "[models.tiny-granite]"]);
    s.run("prompts that do not fit the sequence length", &good.replace("seq_lengths = [32]", "seq_lengths = [3]"), &[("LAYERCHECK_UPDATE_GOLDEN", "1")], &["tiny.txt: only 0 prompt(s) fit in 3 tokens"]);
    s.run("suite: seq length + new tokens > max_position_embeddings", &good.replace("seq_lengths = [32]", "seq_lengths = [250]").replace("batch_sizes = [1]", "batch_sizes = [1]\nmodes = [\"generate\"]\nmax_new_tokens = [16]"), &[("LAYERCHECK_UPDATE_GOLDEN", "1")], &["the run needs 265 positions", "max_position_embeddings\" = 256"]);
}

/// Rewrites the suite's thresholds file with `edit`.
fn with_thresholds(s: &Suite, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = s.dir().join("thresholds.json");
    std::fs::copy(root().join("thresholds/tiny-granite-thresholds.json"), &path).unwrap();
    // NaN is not JSON; the edits below write numbers and strings only.
    edit_json(&path, edit);
}

#[test]
fn thresholds_files() {
    let s = Suite::new();
    let good = s.default_matrix();
    let layer = "model.base_model.layers1.attn.dense";
    with_thresholds(&s, |v| v["abs_diff"][layer] = (-0.5).into());
    s.run("thresholds abs_diff negative", &good, &[], &["thresholds.json: abs_diff[\"model.base_model.layers1.attn.dense\"] is -0.5"]);
    with_thresholds(&s, |v| v["cos_sim_avg"][layer] = (-0.2).into());
    s.run("thresholds cos_sim_avg below 0", &good, &[], &["cos_sim_avg[\"model.base_model.layers1.attn.dense\"] is -0.2", "lets anything pass"]);
    with_thresholds(&s, |v| v["cos_sim_mean"][layer] = 3.into());
    s.run("thresholds cos_sim_mean 3", &good, &[], &["is 3: not a cosine"]);
    with_thresholds(&s, |v| v["layercheck"]["shapes"]["batch-size-1_seq-length-32"]["layers"][layer]["cos_mean"] = 1.5.into());
    s.run("per-shape cos_mean 1.5", &good, &[], &["layercheck.shapes.batch-size-1_seq-length-32.layers[\"model.base_model.layers1.attn.dense\"].cos_mean is 1.5"]);
    with_thresholds(&s, |v| v["layercheck"]["percentile"] = 250.into());
    s.run("per-shape percentile 250", &good, &[], &["layercheck.percentile is 250"]);
    with_thresholds(&s, |v| v["model_id"] = "tiny-llama".into());
    s.run("thresholds of another model (model_id)", &good, &[], &["model_id is \"tiny-llama\"", "another model's thresholds"]);
    with_thresholds(&s, |v| v["abs_diff"]["model.base_model.layers7.ln"] = 0.1.into());
    s.run("thresholds with a layer past the model's", &good, &[], &["layer key model.base_model.layers7.ln names layer 7, but the model has 3 layers"]);
    std::fs::write(s.dir().join("thresholds.json"), "{\"model_id\": ").unwrap();
    s.run("thresholds file not JSON", &good, &[], &["thresholds.json", "JSON"]);
    std::fs::write(s.dir().join("thresholds.json"), "[]").unwrap();
    s.run("thresholds file not an object", &good, &[], &["thresholds.json", "not an object"]);
    std::fs::remove_file(s.dir().join("thresholds.json")).unwrap();
    s.run("thresholds file missing", &good, &[], &["thresholds.json", "No such file"]);
}

/// Rewrites the suite's golden file of the fwd b1 s32 case with `edit` on its capture.
fn with_golden(s: &Suite, edit: impl FnOnce(&mut Capture)) -> PathBuf {
    let path = s.dir().join("golden/tiny-granite/fwd-b1-s32.safetensors");
    std::fs::copy(root().join("golden/tiny-granite/fwd-b1-s32.safetensors"), &path).unwrap();
    let mut c = Capture::read(&path).unwrap();
    edit(&mut c);
    c.write(&path).unwrap();
    path
}

#[test]
fn golden_files() {
    let s = Suite::new();
    let good = s.default_matrix();
    with_golden(&s, |c| {
        c.metadata.insert("target".into(), "cpu-f16".into());
    });
    s.run("golden holding cpu-f16 outputs", &good, &[], &["fwd-b1-s32.safetensors was not made for this case: its metadata \"target\" is \"cpu-f16\", the case needs \"cpu-f32\""]);
    with_golden(&s, |c| {
        c.metadata.insert("mode".into(), "generate".into());
    });
    s.run("golden of another mode", &good, &[], &["its metadata \"mode\" is \"generate\", the case needs \"model-forward\""]);
    with_golden(&s, |c| {
        c.metadata.insert("attention_mask".into(), "proper".into());
    });
    s.run("golden with pads masked", &good, &[], &["its metadata \"attention_mask\" is \"proper\", the case needs \"attend-pads\""]);
    with_golden(&s, |c| {
        c.metadata.remove("tensors_sha256");
    });
    s.run("golden without a checksum", &good, &[], &["fwd-b1-s32.safetensors is corrupt", "no \"tensors_sha256\""]);
    // One byte of tensor data flipped: corrupt, not a target divergence.
    let path = with_golden(&s, |_| {});
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() - 1000;
    bytes[at] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    s.run("golden with one data byte flipped", &good, &[], &["fwd-b1-s32.safetensors is corrupt: the sha256 of its tensor data"]);
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    s.run("golden truncated", &good, &[], &["fwd-b1-s32.safetensors cannot be read", "truncated or corrupt"]);
    std::fs::remove_file(&path).unwrap();
    s.run("golden missing", &good, &[], &["fwd-b1-s32.safetensors is missing", "LAYERCHECK_UPDATE_GOLDEN=1"]);

    // Golden files kept outside git (manifest_dir set): a missing one says where it was expected
    // and what its reviewed manifest records; one that is self-consistent but not the reviewed one
    // (its data changed and its checksum recomputed) is refused, naming the manifest.
    let reviewed = format!("manifest_dir = \"{}\"\n{good}", root().join("golden/manifests").display());
    s.run("golden missing, with reviewed manifests", &reviewed, &[], &["fwd-b1-s32.safetensors is missing; its reviewed manifest", "tiny-granite_fwd-b1-s32_safetensors.snap", "LAYERCHECK_GOLDEN_DIR"]);
    with_golden(&s, |c| {
        let name = c.keys[0].clone();
        let changed = &c.tensors[&name] * 1.5;
        c.tensors.insert(name, changed);
        let sha = c.tensors_sha256().unwrap();
        c.metadata.insert("tensors_sha256".into(), sha);
    });
    s.run("golden that is not the reviewed one", &reviewed, &[], &["fwd-b1-s32.safetensors is not the reviewed one", "tiny-granite_fwd-b1-s32_safetensors.snap"]);
    std::fs::remove_file(s.dir().join("golden/tiny-granite/fwd-b1-s32.safetensors")).unwrap();

    // A reference with NaN is never written: weights holding NaN, then regeneration.
    let model = copy_model_as(s.dir(), "tiny-granite-nan");
    let w = model.join("model.safetensors");
    let mut file = layercheck::tensor_file::TensorFile::read(&w).unwrap();
    for (name, t) in file.tensors.iter_mut() {
        if name == "model.layers.1.mlp.down_proj.weight" {
            *t = t.full_like(f64::NAN);
        }
    }
    layercheck::tensor_file::write_atomic(&w, &file.tensors, file.metadata.clone()).unwrap();
    s.run("LAYERCHECK_UPDATE_GOLDEN=1 on weights holding NaN", &s.matrix(&model, "\"cpu-f16\"", ""), &[("LAYERCHECK_UPDATE_GOLDEN", "1")], &["refusing to write golden file", "NaN or inf"]);
}

// Copies of a model folder under another name: tiny-granite's files under `name`.
fn copy_model_as(tmp: &Path, name: &str) -> PathBuf {
    let dst = tmp.join(name);
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(root().join("models/tiny-granite")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
    dst
}

// ---- Kills and concurrent regeneration of golden files. ----

/// A matrix for regeneration into `dir/golden`: tiny-granite, cpu-f16 and cpu-f32, both modes.
fn regeneration_matrix(dir: &Path) -> PathBuf {
    let r = root();
    let text = format!(
        r#"golden_dir = "{d}/golden"
[models.tiny-granite]
path = "{r}/models/tiny-granite"
prompts = "{r}/tests/fixtures/prompts/tiny.txt"
thresholds = "{r}/thresholds/tiny-granite-thresholds.json"
golden_inputs = true
[matrix]
models = ["tiny-granite"]
targets = ["cpu-f16", "cpu-f32"]
modes = ["model-forward", "generate"]
batch_sizes = [1]
seq_lengths = [32]
max_new_tokens = [4]
"#,
        d = dir.display(),
        r = r.display()
    );
    let path = dir.join("m.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `layercheck suite-case` regenerating (each process its own update run, so each rewrites).
fn regenerate(dir: &Path, matrix: &Path, case: &str, out: &Path, run: &str) -> std::process::Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_layercheck"));
    cmd.current_dir(dir).args(["suite-case", "--case", case, "--out"]).arg(out);
    for (k, _) in std::env::vars() {
        if k.starts_with("LAYERCHECK_") || k == "CI" || k.starts_with("NEXTEST") {
            cmd.env_remove(k);
        }
    }
    cmd.env("LAYERCHECK_MATRIX", matrix).env("LAYERCHECK_UPDATE_GOLDEN", "1").env("LAYERCHECK_RUN_ID", run).env("LAYERCHECK_REPORT_DIR", dir.join("reports"));
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap()
}

/// Every golden file under `golden` reads and its data match its recorded sha256.
#[track_caller]
fn assert_goldens_load(golden: &Path) -> usize {
    let mut n = 0;
    for (rel, _) in hash_tree(golden) {
        if rel.extension().is_some_and(|e| e == "safetensors") && !rel.to_string_lossy().contains(".layercheck-") {
            let path = golden.join(&rel);
            let c = Capture::read(&path).unwrap_or_else(|e| panic!("{} does not load: {e}", path.display()));
            assert_eq!(c.metadata.get("tensors_sha256"), Some(&c.tensors_sha256().unwrap()), "{}", path.display());
            n += 1;
        }
    }
    n
}

const FWD: &str = "tiny-granite::cpu-f16::fwd::b1::s32";
const GEN: &str = "tiny-granite::cpu-f16::gen::b1::s32::n4";

#[test]
fn sigkill_during_golden_regeneration_leaves_golden_files_whole_and_the_next_run_cleans_up() {
    let tmp = tempfile::tempdir().unwrap();
    let matrix = regeneration_matrix(tmp.path());
    let golden = tmp.path().join("golden");
    let out = tmp.path().join("outcome.bin");
    // A first golden file, so that kills also hit the replacement of an existing one.
    let started = Instant::now();
    let first = regenerate(tmp.path(), &matrix, GEN, &out, "first").wait_with_output().unwrap();
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    // How long a whole regeneration takes here (it scales with the machine's load).
    let whole = started.elapsed();
    let (mut during_write, mut kills) = (0, 0);
    for attempt in 0..8u64 {
        let mut child = regenerate(tmp.path(), &matrix, GEN, &out, &format!("kill-{attempt}"));
        // Kill the moment a temporary file shows (mid-write), else after a delay spread over the
        // second half of a whole run (the forward, the write, the check after it).
        let deadline = Instant::now() + whole.mul_f64(0.5 + 0.07 * attempt as f64);
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            let mid_write = !temporaries(&golden).is_empty();
            if mid_write || Instant::now() > deadline {
                child.kill().unwrap();
                kills += 1;
                during_write += mid_write as usize;
                break;
            }
            std::thread::yield_now();
        }
        child.wait().unwrap();
        // Whatever the moment, the golden file is the old one or the new one, whole.
        assert_eq!(assert_goldens_load(&golden), 1, "attempt {attempt}");
    }
    eprintln!("{kills} SIGKILLs, {during_write} while a temporary file existed");
    // The next regeneration removes the killed writers' temporaries, and its case passes.
    let o = regenerate(tmp.path(), &matrix, GEN, &out, "after").wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let outcome = layercheck_suite::outcome::CaseOutcome::read(&out).unwrap();
    assert_eq!(outcome.setup_error, None);
    assert!(outcome.first_failure().is_none());
    assert!(temporaries(&golden).is_empty(), "left behind: {:?}", temporaries(&golden));
    assert_eq!(assert_goldens_load(&golden), 1);
}

#[test]
fn four_processes_regenerating_at_once_write_whole_golden_files() {
    let tmp = tempfile::tempdir().unwrap();
    let matrix = regeneration_matrix(tmp.path());
    let golden = tmp.path().join("golden");
    // Two processes per golden file (cpu-f16 and cpu-f32 share it), each its own update run.
    let cases = [FWD, "tiny-granite::cpu-f32::fwd::b1::s32", GEN, "tiny-granite::cpu-f32::gen::b1::s32::n4"];
    let children: Vec<(String, PathBuf, std::process::Child)> = cases
        .iter()
        .enumerate()
        .map(|(i, case)| {
            let out = tmp.path().join(format!("outcome-{i}.bin"));
            let child = regenerate(tmp.path(), &matrix, case, &out, &format!("run-{i}"));
            (case.to_string(), out, child)
        })
        .collect();
    for (case, out, child) in children {
        let o = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success() && !stderr.contains("panicked"), "{case}: {stderr}");
        assert!(stderr.contains("wrote golden file"), "{case}: {stderr}");
        let outcome = layercheck_suite::outcome::CaseOutcome::read(&out).unwrap();
        assert_eq!(outcome.setup_error, None, "{case}");
        assert!(outcome.first_failure().is_none(), "{case}");
    }
    assert!(temporaries(&golden).is_empty(), "left behind: {:?}", temporaries(&golden));
    assert_eq!(assert_goldens_load(&golden), 2);
}

/// Every `README "Section"` that a message or doc cites is a heading of the README.
#[test]
fn every_readme_section_cited_exists() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let headings: Vec<&str> = readme.lines().filter_map(|l| l.strip_prefix('#')).map(|l| l.trim_start_matches('#').trim()).collect();
    let mut cited = Vec::new();
    let mut stack = vec![root().join("src"), root().join("crates"), root().join("layercheck.toml")];
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap_or_default().replace("\\\"", "\"");
        for (i, _) in text.match_indices("README \"") {
            let rest = &text[i + "README \"".len()..];
            if let Some(end) = rest.find('"') {
                cited.push((p.clone(), rest[..end].to_string()));
            }
        }
    }
    assert!(cited.len() >= 5, "{cited:?}");
    for (file, section) in cited {
        assert!(headings.contains(&section.as_str()), "{} cites README \"{section}\", which is not a heading of README.md", file.display());
    }
}
