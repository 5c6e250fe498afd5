//! The per-layer suite run as a user runs it (`cargo test --test layers`, `cargo nextest run`),
//! on the embedded tiny Granite, with matrices and golden folders of each test's own.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A matrix file in a temporary folder; paths point into the repository, golden into `golden`.
fn matrix(dir: &Path, golden: &Path, model: &Path, targets: &str, feeds: &str, modes: &str) -> PathBuf {
    let r = root();
    let text = format!(
        r#"golden_dir = "{golden}"
[models.tiny-granite]
path = "{model}"
prompts = "{r}/tests/fixtures/prompts/tiny.txt"
thresholds = "{r}/thresholds/tiny-granite-thresholds.json"
golden_inputs = true
[faults.fault-l1-dense]
base = "cpu-f32"
module = "model.base_model.layers1.attn.dense"
amplitude = 0.05
[matrix]
models = ["tiny-granite"]
targets = [{targets}]
modes = [{modes}]
feeds = [{feeds}]
batch_sizes = [1]
seq_lengths = [32]
max_new_tokens = [4]
"#,
        golden = golden.display(),
        model = model.display(),
        r = r.display(),
    );
    let path = dir.join("layercheck.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs cargo in the repository with the suite's variables cleared and `env` set.
fn cargo(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(root()).args(args);
    without_suite_env(&mut cmd).envs(env.iter().copied());
    cmd.output().unwrap()
}

/// Clears the suite's variables (and CI's, nextest's) that this test process may have from `cmd`.
fn without_suite_env(cmd: &mut Command) -> &mut Command {
    for (k, _) in std::env::vars() {
        if k.starts_with("LAYERCHECK_") || k == "CI" || k.starts_with("NEXTEST") {
            cmd.env_remove(k);
        }
    }
    cmd
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// (passed, failed, ignored) test names from libtest-style output.
fn outcomes(o: &Output) -> (BTreeSet<String>, BTreeSet<String>, BTreeSet<String>) {
    let (mut ok, mut failed, mut ignored) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    for line in String::from_utf8_lossy(&o.stdout).lines() {
        let Some(rest) = line.strip_prefix("test ") else { continue };
        let Some((name, result)) = rest.rsplit_once(" ... ") else { continue };
        match result.trim() {
            "ok" => ok.insert(name.trim().to_string()),
            "FAILED" => failed.insert(name.trim().to_string()),
            r if r.starts_with("ignored") => ignored.insert(name.trim().to_string()),
            _ => false,
        };
    }
    (ok, failed, ignored)
}

fn layer_of(name: &str) -> &str {
    name.rsplit("::").next().unwrap()
}

#[test]
fn missing_golden_then_regeneration_then_staleness() {
    let tmp = tempfile::tempdir().unwrap();
    let golden = tmp.path().join("golden");
    // A copy of the model, so that its weights can change under the golden file.
    let model = tmp.path().join("tiny-granite");
    std::fs::create_dir(&model).unwrap();
    for e in std::fs::read_dir(root().join("models/tiny-granite")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), model.join(e.file_name())).unwrap();
    }
    let m = matrix(tmp.path(), &golden, &model, "\"cpu-f16\"", "\"cumulative\"", "\"model-forward\"");
    let m = m.to_str().unwrap();
    let run = |extra: &[(&str, &str)]| {
        let mut env = vec![("LAYERCHECK_MATRIX", m)];
        env.extend_from_slice(extra);
        cargo(&["test", "-q", "--test", "layers"], &env)
    };

    // Missing: every test of the case is listed and fails with the fix command.
    let out = run(&[]);
    let (ok, failed, _) = outcomes(&out);
    assert!(ok.is_empty() && failed.len() == 42, "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("fwd-b1-s32.safetensors is missing") && t.contains("LAYERCHECK_UPDATE_GOLDEN=1 cargo test --test layers -- 'tiny-granite::cpu-f16::fwd::b1::s32::'"), "{t}");

    // Regeneration is refused under CI, and writes nothing.
    let out = run(&[("LAYERCHECK_UPDATE_GOLDEN", "1"), ("CI", "true")]);
    assert!(!out.status.success() && text(&out).contains("refusing to regenerate golden files under CI"), "{}", text(&out));
    assert!(!golden.exists());

    // Regeneration writes one file atomically (no temporary file left) and the case passes. Two
    // cases (targets) share the golden file, and it is written once per update run.
    let regenerate = || run(&[("LAYERCHECK_UPDATE_GOLDEN", "1"), ("LAYERCHECK_TARGETS", "cpu-f16,cpu-f32")]);
    let out = regenerate();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(text(&out).matches("wrote golden file").count(), 1, "{}", text(&out));
    let files: Vec<String> = std::fs::read_dir(golden.join("tiny-granite")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(files, ["fwd-b1-s32.safetensors"]);
    let out = regenerate();
    assert_eq!(text(&out).matches("wrote golden file").count(), 1, "a new update run writes it again:\n{}", text(&out));
    let out = run(&[]);
    assert!(out.status.success(), "{}", text(&out));

    // Changed weights: the golden is stale, reported as such rather than as a numeric failure.
    let config = model.join("config.json");
    let changed = std::fs::read_to_string(&config).unwrap().replace("\"rms_norm_eps\": 1e-06", "\"rms_norm_eps\": 1e-05");
    std::fs::write(&config, changed).unwrap();
    let out = run(&[]);
    let t = text(&out);
    assert!(!out.status.success() && t.contains("is stale: the model's config.json changed since it was made"), "{t}");
    assert!(!t.contains("diverges"), "a stale golden must not be reported as a numeric failure:\n{t}");
}

#[test]
fn the_fault_target_fails_its_module_alone_when_isolated_and_everything_after_when_cumulative() {
    let tmp = tempfile::tempdir().unwrap();
    let m = matrix(tmp.path(), &root().join("golden"), &root().join("models/tiny-granite"), "\"fault-l1-dense\"", "\"isolated\", \"cumulative\"", "\"model-forward\"");
    let reports = tempfile::tempdir().unwrap();
    let out = cargo(&["test", "-q", "--test", "layers"], &[("LAYERCHECK_MATRIX", m.to_str().unwrap()), ("LAYERCHECK_REPORT_DIR", reports.path().to_str().unwrap())]);
    let (ok, failed, _) = outcomes(&out);
    assert!(!ok.is_empty(), "{}", text(&out));
    let iso: Vec<&str> = failed.iter().filter(|n| n.contains("::iso::")).map(|n| layer_of(n)).collect();
    assert_eq!(iso, ["model.base_model.layers1.attn.dense", "summary"], "{}", text(&out));
    let order: Vec<String> = layercheck::hooks::ModuleKey::forward_order(3, false).iter().map(|k| k.to_string()).collect();
    let from = order.iter().position(|k| k == "model.base_model.layers1.attn.dense").unwrap();
    let mut expected: Vec<&str> = order[from..].iter().map(String::as_str).collect();
    // The fault reaches the logits: the logits-level test fails too (in the isolated feed the
    // head takes its golden input, and the logits pass).
    expected.extend(["summary", "logits"]);
    expected.sort();
    let mut cumulative: Vec<&str> = failed.iter().filter(|n| !n.contains("::iso::")).map(|n| layer_of(n)).collect();
    cumulative.sort();
    assert_eq!(cumulative, expected, "{}", text(&out));
    // Attribution: in the cumulative feed the faulty module is the one layer that introduces
    // error, every failing layer after it inherits it.
    let t = text(&out);
    assert!(t.contains("first layer that introduces error: model.base_model.layers1.attn.dense"), "{t}");
    assert!(t.contains("  introduced (fail when fed their golden input too): model.base_model.layers1.attn.dense\n"), "{t}");
    assert!(t.contains(&format!("  inherited (pass when fed their golden input): {} layer(s)\n", expected.len() - 3)), "{t}");
    // Logits: the divergence shows in the KL divergence and the softmax difference; the
    // cross-entropy of test_decoders.py, mostly the top-20 entropy of a random model, does not.
    assert!(t.contains("the logits of tiny-granite on fault-l1-dense (model-forward, cumulative feed, batch 1, seq 32) diverge"), "{t}");
    assert!(t.contains("  ce: threshold") && t.contains(", 0 token(s) past it + margin, worst"), "{t}");
    assert!(t.contains("attribution: inherited"), "{t}");
    let results = std::fs::read_to_string(reports.path().join("tiny-granite_fault-l1-dense_fwd_b1_s32/results.jsonl")).unwrap();
    let results = layercheck::report::CaseResults::from_jsonl(&results).unwrap();
    for layer in &results.layers {
        let failing = layer.records.iter().any(|r| !r.failures.is_empty());
        let expected = match (failing, layer.key == "model.base_model.layers1.attn.dense") {
            (false, _) => None,
            (true, true) => Some(layercheck_suite::attribution::Attribution::Introduced),
            (true, false) => Some(layercheck_suite::attribution::Attribution::Inherited),
        };
        assert_eq!(layer.attribution, expected, "{}", layer.key);
        // Where: a failing layer names its worst tokens and the channels carrying its error.
        if failing {
            let loc = layer.location.as_ref().unwrap();
            assert_eq!((loc.tokens.len(), loc.channels.len()), (5, 5), "{}", layer.key);
            assert!(loc.channels.iter().all(|c| c.share > 0.0 && c.share <= 1.0) && loc.tokens.iter().all(|t| t.token < 32));
        }
    }
}

/// Test names of `cargo nextest list` with their ignored flag.
fn nextest_list(env: &[(&str, &str)]) -> Vec<(String, bool)> {
    let out = cargo(&["nextest", "list", "--test", "layers", "--message-format", "json"], env);
    assert!(out.status.success(), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let cases = &json["rust-suites"]["layercheck::layers"]["testcases"];
    let mut names: Vec<(String, bool)> = cases.as_object().unwrap().iter().map(|(n, v)| (n.clone(), v["ignored"].as_bool().unwrap())).collect();
    names.sort();
    names
}

/// Names of tests nextest reports as passed or failed: `PASS [..] (n/N) binary name`.
fn nextest_ran(o: &Output) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut pass, mut fail) = (BTreeSet::new(), BTreeSet::new());
    for line in String::from_utf8_lossy(&o.stderr).lines() {
        let l = line.trim_start();
        let set = if l.starts_with("PASS") { &mut pass } else if l.starts_with("FAIL") { &mut fail } else { continue };
        if let Some(name) = l.split_whitespace().last() {
            set.insert(name.to_string());
        }
    }
    (pass, fail)
}

#[test]
fn nextest_lists_filters_partitions_and_runs_ignored_tests_as_a_user_would() {
    let tmp = tempfile::tempdir().unwrap();
    let m = matrix(tmp.path(), &root().join("golden"), &root().join("models/tiny-granite"), "\"cpu-f16\", \"cuda-f16\"", "\"cumulative\"", "\"model-forward\"");
    let env = [("LAYERCHECK_MATRIX", m.to_str().unwrap())];

    // Listing: 42 tests per case (40 layers, summary, logits); CUDA listed and ignored where no
    // GPU; independent of the update mode and of which golden files exist.
    let listed = nextest_list(&env);
    assert_eq!(listed.len(), 84);
    let gpu = tch::Cuda::is_available();
    assert!(listed.iter().all(|(n, ignored)| *ignored == (n.contains("::cuda-f16::") && !gpu)));
    let nowhere = tmp.path().join("no-golden");
    let other = tmp.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let m2 = matrix(&other, &nowhere, &root().join("models/tiny-granite"), "\"cpu-f16\", \"cuda-f16\"", "\"cumulative\"", "\"model-forward\"");
    assert_eq!(nextest_list(&[("LAYERCHECK_MATRIX", m2.to_str().unwrap()), ("LAYERCHECK_UPDATE_GOLDEN", "1")]), listed);

    // A layer filter: all of layer 1, nothing else.
    let out = cargo(&["nextest", "run", "--test", "layers", "--no-fail-fast", "-E", r"test(/::model\.base_model\.layers1\./)"], &env);
    let (pass, fail) = nextest_ran(&out);
    let ran: BTreeSet<&str> = pass.iter().chain(&fail).map(|n| layer_of(n)).collect();
    assert_eq!(ran.len(), 12, "{}", text(&out));
    assert!(ran.iter().all(|k| k.starts_with("model.base_model.layers1.")), "{ran:?}");

    // --exact through cargo test runs exactly one test.
    let one = "tiny-granite::cpu-f16::fwd::b1::s32::model.head";
    let out = cargo(&["test", "-q", "--test", "layers", "--", "--exact", one], &env);
    let (ok, failed, _) = outcomes(&out);
    assert_eq!(ok.len() + failed.len(), 1, "{}", text(&out));

    // Two partitions: disjoint, and together every test that is not ignored; but they split the
    // tests of a case, so each partition computes every case (why LAYERCHECK_SHARD exists).
    let runnable_cases: BTreeSet<String> = listed.iter().filter(|(_, i)| !i).map(|(n, _)| case_of(n).to_string()).collect();
    let mut seen = Vec::new();
    for part in ["count:1/2", "count:2/2"] {
        let out = cargo(&["nextest", "run", "--test", "layers", "--no-fail-fast", "--no-capture", "--partition", part], &env);
        let (pass, fail) = nextest_ran(&out);
        let mut cases = computed(&out);
        cases.sort();
        assert_eq!(cases, runnable_cases.iter().cloned().collect::<Vec<_>>(), "{}", text(&out));
        seen.push(pass.union(&fail).cloned().collect::<BTreeSet<String>>());
    }
    assert!(seen[0].is_disjoint(&seen[1]));
    let all: BTreeSet<String> = seen[0].union(&seen[1]).cloned().collect();
    let expected: BTreeSet<String> = listed.iter().filter(|(_, i)| !i).map(|(n, _)| n.clone()).collect();
    assert_eq!(all, expected);

    // An archive built here runs elsewhere (here: from the archive, remapped to this checkout).
    let archive = tmp.path().join("layers.tar.zst");
    let out = cargo(&["nextest", "archive", "--test", "layers", "--archive-file", archive.to_str().unwrap()], &env);
    assert!(out.status.success(), "{}", text(&out));
    let out = cargo(&["nextest", "run", "--archive-file", archive.to_str().unwrap(), "--workspace-remap", ".", "-E", r"test(/cpu-f16::fwd.*model\.head$/)"], &env);
    let (pass, fail) = nextest_ran(&out);
    assert!(pass.len() == 1 && fail.is_empty(), "{}", text(&out));

    // --ignored runs the CUDA tests, which say why they cannot run here.
    if !gpu {
        let out = cargo(&["nextest", "run", "--test", "layers", "--no-fail-fast", "--run-ignored", "only", "-E", "test(/model\\.head$/)"], &env);
        let (pass, fail) = nextest_ran(&out);
        assert!(pass.is_empty() && fail.len() == 1, "{}", text(&out));
        assert!(text(&out).contains("target cuda-f16 is not available"), "{}", text(&out));
    }
}

/// bf16 keeps 8 bits of mantissa against f16's 11: rounding the embedding table alone already
/// puts it about 8x past thresholds derived from f16 baselines; fed their golden inputs, layer 0 and
/// part of layer 1 still fail (they introduce error of their own) and the later layers pass (they
/// only inherit it).
#[test]
fn cpu_bf16_fails_against_f16_thresholds_from_the_embedding_on() {
    let tmp = tempfile::tempdir().unwrap();
    let m = matrix(tmp.path(), &root().join("golden"), &root().join("models/tiny-granite"), "\"cpu-f16\", \"cpu-bf16\"", "\"cumulative\"", "\"model-forward\"");
    let out = cargo(&["test", "-q", "--test", "layers"], &[("LAYERCHECK_MATRIX", m.to_str().unwrap())]);
    let (ok, failed, _) = outcomes(&out);
    assert!(ok.iter().all(|n| n.contains("::cpu-f16::")) && ok.len() == 42, "f16 passes:\n{}", text(&out));
    assert!(failed.iter().all(|n| n.contains("::cpu-bf16::")) && failed.len() == 42, "bf16 fails on every layer and its logits:\n{}", text(&out));
    assert!(text(&out).contains("the logits of tiny-granite on cpu-bf16 (model-forward, cumulative feed, batch 1, seq 32) diverge"), "{}", text(&out));
    // Attribution: the embedding makes bf16's error (its table rounded to bf16), and some later
    // layers only inherit it (how many depends on the CPU's bf16 kernels, so no count here).
    assert!(text(&out).contains("40 of 40 layers fail; first layer that introduces error: model.base_model.embedding"), "{}", text(&out));
    assert!(text(&out).contains("  inherited (pass when fed their golden input): "), "{}", text(&out));
}

/// The `layers` test binary, built by cargo.
fn layers_binary() -> PathBuf {
    let out = cargo(&["test", "--test", "layers", "--no-run", "--message-format=json"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["target"]["name"] == "layers")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .expect("cargo names the layers test binary")
}

/// The test processes of the suite must not load libtorch: its static initialisers alone take
/// about 0.4 s per process, which nextest (a process per test) would pay for every layer. The
/// dynamic loader's own trace (glibc's LD_DEBUG) lists what a `--list` of the suite loads.
#[test]
fn the_suite_test_processes_load_no_libtorch() {
    let exe = layers_binary();
    let run = Command::new(&exe).current_dir(root()).arg("--list").env("LD_DEBUG", "libs").output().unwrap();
    // The libraries whose initialisers ran ("calling init: <path>").
    let inits = |stderr: &[u8]| -> Vec<String> { String::from_utf8_lossy(stderr).lines().filter_map(|l| Some(l.split_once("calling init: ")?.1.to_string())).collect() };
    let loaded = inits(&run.stderr);
    assert!(run.status.success() && !loaded.is_empty(), "no loader trace:\n{}", text(&run));
    assert!(!loaded.iter().any(|l| l.contains("libtorch") || l.contains("libc10")), "the layers binary loads libtorch: {loaded:#?}");
    // ...while the binary that computes the cases does (the check above can fail).
    let layercheck = Command::new(env!("CARGO_BIN_EXE_layercheck")).arg("--version").env("LD_DEBUG", "libs").output().unwrap();
    assert!(inits(&layercheck.stderr).iter().any(|l| l.contains("libtorch_cpu.so")));
}

/// The case of a test name (`CASE::LAYER`).
fn case_of(name: &str) -> &str {
    name.rsplit_once("::").unwrap().0
}

/// The cases computed, one entry per computation: the engine prints `layercheck: report of CASE:
/// PATH` after each complete forward of a case.
fn computed(o: &Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stderr).lines().filter_map(|l| Some(l.split_once("layercheck: report of ")?.1.split_once(": ")?.0.to_string())).collect()
}

/// Asserts that `shards` (test names per shard) are disjoint, cover `expected`, and give each
/// case's tests to one shard.
fn assert_whole_cases(shards: &[BTreeSet<String>], expected: &BTreeSet<String>, what: &str) {
    let all: BTreeSet<String> = shards.iter().flatten().cloned().collect();
    assert_eq!(shards.iter().map(BTreeSet::len).sum::<usize>(), all.len(), "{what}: shards overlap: {shards:#?}");
    assert_eq!(&all, expected, "{what}");
    let cases: Vec<BTreeSet<&str>> = shards.iter().map(|s| s.iter().map(|n| case_of(n)).collect()).collect();
    assert!(cases[0].is_disjoint(&cases[1]), "{what}: a case in both shards: {cases:?}");
}

/// LAYERCHECK_SHARD=k/n gives each machine whole cases, listed and run by `cargo test`, by
/// `cargo nextest run` from an archive built once (README's recipe for CI machines), and by
/// `layercheck run`; over the shards every test runs once and every case is computed once.
#[test]
fn shards_run_every_test_once_and_compute_each_case_once_in_the_fleet() {
    let tmp = tempfile::tempdir().unwrap();
    // Six cases: two targets that run here, in both modes, and CUDA's (ignored where no GPU).
    let m = matrix(tmp.path(), &root().join("golden"), &root().join("models/tiny-granite"), "\"cpu-f16\", \"cpu-f32\", \"cuda-f16\"", "\"cumulative\"", "\"model-forward\", \"generate\"");
    let reports = tmp.path().join("reports");
    let (m, reports) = (m.to_str().unwrap(), reports.to_str().unwrap());
    let base = [("LAYERCHECK_MATRIX", m), ("LAYERCHECK_REPORT_DIR", reports)];
    let env = |shard: &'static str| [base[0], base[1], ("LAYERCHECK_SHARD", shard)];
    let listed = nextest_list(&base);
    let cases: BTreeSet<&str> = listed.iter().map(|(n, _)| case_of(n)).collect();
    assert_eq!(cases.len(), 6, "{cases:?}");
    let runnable: BTreeSet<String> = listed.iter().filter(|(_, ignored)| !ignored).map(|(n, _)| n.clone()).collect();
    let runnable_cases: BTreeSet<String> = runnable.iter().map(|n| case_of(n).to_string()).collect();
    let every: BTreeSet<String> = listed.iter().map(|(n, _)| n.clone()).collect();

    // Listing (nextest's too): the shards' lists are disjoint and cover the list, whole cases.
    let lists: Vec<BTreeSet<String>> = ["1/2", "2/2"].iter().map(|s| nextest_list(&env(s)).into_iter().map(|(n, _)| n).collect()).collect();
    assert_whole_cases(&lists, &every, "nextest list");

    // cargo test: each shard runs its list, and computes each of its cases once.
    let mut ran = Vec::new();
    let mut fleet = Vec::new();
    for (k, shard) in ["1/2", "2/2"].into_iter().enumerate() {
        let out = cargo(&["test", "-q", "--test", "layers"], &env(shard));
        let (ok, failed, ignored) = outcomes(&out);
        let run: BTreeSet<String> = ok.union(&failed).cloned().collect();
        let shown: BTreeSet<String> = run.union(&ignored).cloned().collect();
        assert_eq!(shown, lists[k], "cargo test ran another list than was listed for {shard}:\n{}", text(&out));
        let mine: BTreeSet<&str> = lists[k].iter().map(|n| case_of(n)).collect();
        assert!(text(&out).contains(&format!("LAYERCHECK_SHARD={shard}: {} of the matrix's 6 cases", mine.len())), "{}", text(&out));
        fleet.extend(computed(&out));
        ran.push(run);
    }
    assert_whole_cases(&ran, &runnable, "cargo test");
    fleet.sort();
    assert_eq!(fleet, runnable_cases.iter().cloned().collect::<Vec<_>>(), "each runnable case computed exactly once over the shards");

    // nextest from an archive built once: a process per test, the same shards, each case once.
    let archive = tmp.path().join("layers.tar.zst");
    let out = cargo(&["nextest", "archive", "--test", "layers", "--archive-file", archive.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let mut ran = Vec::new();
    let mut fleet = Vec::new();
    for shard in ["1/2", "2/2"] {
        let out = cargo(&["nextest", "run", "--archive-file", archive.to_str().unwrap(), "--workspace-remap", ".", "--no-fail-fast", "--no-capture"], &env(shard));
        let (pass, fail) = nextest_ran(&out);
        fleet.extend(computed(&out));
        ran.push(pass.union(&fail).cloned().collect::<BTreeSet<String>>());
    }
    assert_whole_cases(&ran, &runnable, "nextest from an archive");
    fleet.sort();
    assert_eq!(fleet, runnable_cases.iter().cloned().collect::<Vec<_>>(), "each runnable case computed exactly once over nextest's shards");

    // layercheck run: the same shard's cases (CUDA's printed as skipped where no GPU).
    let out = without_suite_env(Command::new(env!("CARGO_BIN_EXE_layercheck")).current_dir(root()).arg("run").envs(env("1/2"))).output().unwrap();
    let printed: BTreeSet<String> = String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.starts_with("tiny-granite::")).filter_map(|l| Some(l.split_once(": ")?.0.to_string())).collect();
    let first: BTreeSet<String> = lists[0].iter().map(|n| case_of(n).to_string()).collect();
    assert_eq!(printed, first, "{}", text(&out));

    // A bad value stops the listing with exit code 2, naming the variable, the value and a hint.
    let exe = layers_binary();
    for (value, problem) in [("3/2", "k = 3 is past n = 2"), ("count:1/2", "nextest's --partition syntax"), ("7/7", "the matrix has 6 case(s)")] {
        let out = without_suite_env(Command::new(&exe).current_dir(root()).arg("--list")).env("LAYERCHECK_MATRIX", m).env("LAYERCHECK_SHARD", value).output().unwrap();
        let t = text(&out);
        assert!(out.status.code() == Some(2) && t.contains(&format!("LAYERCHECK_SHARD={value}: ")) && t.contains(problem) && t.contains("hint"), "{value}: {:?}\n{t}", out.status);
    }
    let out = cargo(&["nextest", "list", "--test", "layers"], &[("LAYERCHECK_MATRIX", m), ("LAYERCHECK_SHARD", "0/2")]);
    assert!(!out.status.success() && text(&out).contains("LAYERCHECK_SHARD=0/2: k is 0"), "{}", text(&out));
}
