//! Fuzzing of the readers that take outside files (issue 10): whatever the bytes, each reader
//! returns `Ok` or an error whose message names the file, and never panics, aborts or hangs.
//!
//! # Bound
//!
//! The whole file runs in CI in at most 60 s on 2 cores: each reader has a default number of cases
//! (`CASES_*` below, 1500 to 5000) chosen so that `cargo test --test fuzz_readers` (debug build,
//! seeds and regressions included) took 10 to 12 s of wall time and 15 s of CPU on this project's
//! 2-core machine (load about 1.5 from other jobs; measured with `/usr/bin/time`), and 44 s of
//! wall time when other jobs kept the load at 6.5. `cargo nextest run`, where each test is a
//! process that makes its own seeds: 14 s of wall time, 21 s of CPU.
//!
//! `PROPTEST_CASES=N` sets every reader's count instead (`PROPTEST_CASES=20000 cargo test --test
//! fuzz_readers` for a long local run); `LAYERCHECK_FUZZ_STATS=1` (with `--nocapture`) prints
//! how many inputs each reader read and refused. A failure prints the minimal recipe (seed file
//! and edits) that reproduces it.
//!
//! # Readers and inputs
//!
//! | reader | seeds (real files) |
//! |---|---|
//! | `TensorFile::read`, `Capture::read` (safetensors header and capture) | captures written by `layercheck capture` at the start of the run |
//! | `read_seed_csv`, and `thresholds::compute` over a folder of them | `tests/fixtures/seed/csv-*` |
//! | `CompactFile::read`, `read_case`, and `thresholds::compute` | a file written by `layercheck generate --format compact` |
//! | `ThresholdsFile::read` (JSON5, NaN, Infinity) | `thresholds/*.json`, `tests/fixtures/**/*thresholds*.json` |
//! | `report::rebuild_report` (`results.jsonl`) | written by `layercheck generate` and `layercheck report --thresholds` |
//! | `ModelConfig::load` (`config.json`) | `models/*/config.json` |
//! | `read_prompts`, `TokenBatch::read_json` | `tests/fixtures/prompts/tiny.txt`, `tests/fixtures/seed/input_ids.json` |
//! | `Matrix::parse` (`layercheck.toml`, with override variables) | `layercheck.toml` |
//! | `CaseOutcome::read`, `CaseCache` (suite outcome files) | an outcome written by `CaseOutcome::write` |
//!
//! Each reader gets three kinds of input: arbitrary bytes; a seed with bytes flipped, set,
//! inserted, removed, repeated or cut; and a seed with its structure mutated: JSON values replaced
//! by wrong types, huge, negative or fractional numbers, `NaN`/`Infinity`/`1e999` literals, deep
//! nesting, duplicated keys, removed or copied fields; safetensors headers with other dtypes,
//! shapes (huge, zero-sized, past `i64`), offsets past the end or overflowing, length prefixes
//! that lie, and data laid out again so that the header's own checks pass; CSV and TOML lines
//! replaced, removed, duplicated; file names with absurd batch sizes.
//!
//! The readers that reach libtorch (tensor files and captures), and the report of `results.jsonl`
//! (whose plots once looped forever), run in a child process of this test binary, killed after
//! [`CHILD_LIMIT`]: an abort in C++ (which `catch_unwind` cannot catch) or a hang is then a failing
//! test that keeps the input being read, not a dead or stuck test binary.
//!
//! Inputs are random per run (proptest's default), so a run can find what earlier ones did not;
//! `PROPTEST_RNG_SEED=N` fixes them. Each panic or hang found is fixed and kept as a
//! `regression_*` test below with its minimal input.

use std::fmt::{Debug, Display};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use layercheck::capture::{parse_record_name, Capture};
use layercheck::formats::compact::CompactFile;
use layercheck::formats::seed_csv::read_seed_csv;
use layercheck::inputs::{read_prompts, TokenBatch, Tokenizer};
use layercheck::model::ModelConfig;
use layercheck::report::rebuild_report;
use layercheck::tensor_file::TensorFile;
use layercheck::thresholds::{compute, NoProgress, ThresholdsFile, ThresholdsOptions};
use layercheck_suite::case_cache::CaseCache;
use layercheck_suite::matrix::Matrix;
use layercheck_suite::outcome::{CaseOutcome, LayerOutcome, Passing};
use layercheck_suite::test_name::Check;
use layercheck_suite::verdict::{Bounds, Failure, Observation};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Value};

// Default cases per reader (see "Bound" above).
const CASES_TENSOR_FILES: u32 = 3000;
const CASES_SEED_CSV: u32 = 3000;
const CASES_CSV_FOLDER: u32 = 3000;
const CASES_COMPACT: u32 = 3000;
const CASES_THRESHOLDS: u32 = 2500;
const CASES_RESULTS: u32 = 1500;
const CASES_CONFIG: u32 = 5000;
const CASES_PROMPTS: u32 = 3000;
const CASES_IDS: u32 = 3000;
const CASES_MATRIX: u32 = 4000;
const CASES_OUTCOME: u32 = 2000;

/// Set in the child process that runs one test (its name) for [`in_child`].
const CHILD_VAR: &str = "LAYERCHECK_FUZZ_CHILD";
/// The folder the child writes its inputs to, so that the parent can show the last one.
const CHILD_DIR_VAR: &str = "LAYERCHECK_FUZZ_DIR";

// ---------------------------------------------------------------------------------------------
// Running properties

fn cases(default: u32) -> u32 {
    match std::env::var("PROPTEST_CASES") {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| panic!("PROPTEST_CASES={v:?} is not a number of cases")),
        Err(_) => default,
    }
}

/// Runs `test` on `cases` values of `strategy`; a failure panics with the minimal input.
fn fuzz<S>(name: &str, default_cases: u32, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S: Strategy,
    S::Value: Debug,
{
    let config = Config { cases: cases(default_cases), failure_persistence: None, max_shrink_time: 30_000, ..Config::default() };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&strategy, test);
    if std::env::var_os(STATS_VAR).is_some() {
        let mut stats = STATS.lock().unwrap();
        let mut line = format!("{name}: {} cases;", cases(default_cases));
        for (what, (ok, err)) in std::mem::take(&mut *stats) {
            line.push_str(&format!(" {what}: {ok} read, {err} refused;"));
        }
        eprintln!("{line}");
    }
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
}

/// `LAYERCHECK_FUZZ_STATS=1` prints, per reader, how many inputs it read and refused (run the
/// tests one at a time, `--test-threads 1`, for exact counts).
const STATS_VAR: &str = "LAYERCHECK_FUZZ_STATS";
static STATS: std::sync::Mutex<std::collections::BTreeMap<String, (u64, u64)>> = std::sync::Mutex::new(std::collections::BTreeMap::new());

fn tally(file: &Path, ok: bool) {
    if std::env::var_os(STATS_VAR).is_some() {
        // Seed CSV files by their layer key, whatever case their name says.
        let name = file.file_name().map_or(String::new(), |n| n.to_string_lossy().into_owned());
        let name = name.rsplit("--").next().unwrap_or_default().to_string();
        let mut stats = STATS.lock().unwrap();
        let entry = stats.entry(name).or_default();
        if ok {
            entry.0 += 1;
        } else {
            entry.1 += 1;
        }
    }
}

/// `Ok(Some(value))`, or `Ok(None)` for an error whose message names `file` (or one of `also`).
fn named<T, E: Display>(result: Result<T, E>, file: &Path, also: &[&str]) -> Result<Option<T>, TestCaseError> {
    tally(file, result.is_ok());
    match result {
        Ok(v) => Ok(Some(v)),
        Err(e) => {
            let msg = e.to_string();
            let file = file.display().to_string();
            prop_assert!(msg.contains(&file) || also.iter().any(|a| msg.contains(a)), "the error does not name {file}: {msg}");
            Ok(None)
        }
    }
}

/// How long a child of [`in_child`] may run: far above what it needs (seconds), so that only a
/// hang reaches it.
const CHILD_LIMIT: Duration = Duration::from_secs(300);

/// Runs `body` in a child process of this test binary (test `name`, alone), so that an abort or a
/// hang (killed after [`CHILD_LIMIT`]) is a test failure; the child writes each input into the
/// folder it is given before reading it, and the parent keeps what is there when it fails.
fn in_child(name: &str, body: impl FnOnce(&Path)) {
    if std::env::var(CHILD_VAR).as_deref() == Ok(name) {
        let dir = PathBuf::from(std::env::var_os(CHILD_DIR_VAR).expect("the parent sets the input folder"));
        return body(&dir);
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads", "1"])
        .env(CHILD_VAR, name)
        .env(CHILD_DIR_VAR, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let drain = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = pipe.read_to_end(&mut text);
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let (stdout, stderr) = (drain(Box::new(child.stdout.take().unwrap())), drain(Box::new(child.stderr.take().unwrap())));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if start.elapsed() > CHILD_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    if !status.is_some_and(|s| s.success()) {
        let mut kept = Vec::new();
        for entry in std::fs::read_dir(dir.path()).into_iter().flatten().flatten().filter(|e| e.path().is_file()) {
            let keep = std::env::temp_dir().join(format!("layercheck-fuzz-{name}-{}", entry.file_name().to_string_lossy()));
            if std::fs::copy(entry.path(), &keep).is_ok() {
                kept.push(keep.display().to_string());
            }
        }
        let what = match status {
            Some(status) => format!("failed in its child process ({status})"),
            None => format!("did not finish in {} s in its child process (a hang?)", CHILD_LIMIT.as_secs()),
        };
        let tail = |s: &str| s.chars().rev().take(6000).collect::<Vec<_>>().into_iter().rev().collect::<String>();
        panic!("{name} {what}; the last input read is kept in {kept:?}\n--- stdout\n{}\n--- stderr\n{}", tail(&stdout), tail(&stderr));
    }
    assert!(stdout.contains("1 passed"), "the child ran no test:\n{stdout}\n{stderr}");
    if std::env::var_os(STATS_VAR).is_some() {
        stderr.lines().filter(|l| l.contains(" cases;")).for_each(|l| eprintln!("{l}"));
    }
}

// ---------------------------------------------------------------------------------------------
// Seeds: real files

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(rel: &str) -> Vec<u8> {
    std::fs::read(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Runs the `layercheck` binary in the repository root; panics with its stderr on failure.
fn layercheck(args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_layercheck")).args(args).current_dir(repo()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap()
}

fn wait(child: std::process::Child) {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "layercheck failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// A folder that lives as long as the test process.
fn seed_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ids.json"), "[[322, 380, 103]]").unwrap();
        dir
    })
    .path()
}

/// Two captures: tiny-granite on cpu-f16 in generate mode with inputs (`.iter-N` records, f16
/// and i64 tensors), tiny-llama on cpu-bf16 in model-forward mode (bf16, `logits`).
fn capture_seeds() -> &'static [Vec<u8>] {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let d = seed_dir();
        let ids = d.join("ids.json").display().to_string();
        let (a, b) = (d.join("gen.safetensors").display().to_string(), d.join("fwd.safetensors").display().to_string());
        let first = layercheck(&["capture", "--model-path", "models/tiny-granite", "--target", "cpu-f16", "--input-ids", &ids, "--mode", "generate", "--max-new-tokens", "2", "--capture-inputs", "--out", &a]);
        let second = layercheck(&["capture", "--model-path", "models/tiny-llama", "--target", "cpu-bf16", "--input-ids", &ids, "--out", &b]);
        wait(first);
        wait(second);
        vec![std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap()]
    })
}

/// The case prefix of [`metric_seeds`]' compact file: the seed names files after the whole
/// `--model_path` as given, `/` replaced by `--`.
const COMPACT_PREFIX: &str = "models--tiny-granite_max-new-tokens-2_batch-size-1_seq-length-3_dtype-float16";

/// A compact file from `layercheck generate --format compact` (generate mode), and two
/// `results.jsonl`: the one `generate` writes (no verdicts) and the one `layercheck report
/// --thresholds` writes (bounds, verdicts and failures).
fn metric_seeds() -> &'static (Vec<u8>, Vec<Vec<u8>>) {
    static SEEDS: OnceLock<(Vec<u8>, Vec<Vec<u8>>)> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let d = seed_dir();
        let ids = d.join("ids.json").display().to_string();
        let out = d.join("generate");
        let out_s = out.display().to_string();
        wait(layercheck(&["generate", "--model_path", "models/tiny-granite", "--mode", "generate", "--batch_sizes", "1", "--seq_lengths", "3", "--max_new_tokens", "2", "--input-ids", &ids, "--format", "compact", "--output_path", &out_s]));
        let compact = out.join(format!("{COMPACT_PREFIX}.layercheck.safetensors"));
        let judged = d.join("judged");
        wait(layercheck(&["report", "--compact", &compact.display().to_string(), "--thresholds", "thresholds/tiny-granite-thresholds.json", "--out", &judged.display().to_string()]));
        let plain = std::fs::read(out.join("reports").join(COMPACT_PREFIX).join("results.jsonl")).unwrap();
        (std::fs::read(&compact).unwrap(), vec![plain, std::fs::read(judged.join("results.jsonl")).unwrap()])
    })
}

/// A case outcome as `layercheck suite-case` writes them: layers with NaN and infinite
/// observations, failures, a layer error and notes.
fn outcome_seed() -> Vec<u8> {
    let obs = |record: &str, abs: f64, cos: f64| Observation { record: record.into(), item: 0, abs_diff_l2: abs, abs_diff_max: abs / 3.0, cos_mean: cos, cos_min: cos - 1e-3, worst_token: 2, target_nonfinite: 0, reference_nonfinite: 0 };
    let failure = Failure { quantity: layercheck_suite::verdict::Quantity::AbsDiffL2, observed: f64::NAN, threshold: Some(0.5), excess: f64::INFINITY, reason: "NaN on the target side".into() };
    let outcome = CaseOutcome {
        case: "tiny-granite::cpu-f16::fwd::b1::s32".into(),
        setup_error: None,
        layers: vec![
            LayerOutcome { key: "model.base_model.embedding".into(), bounds: Bounds::new(Some(0.01), Some(0.999)), observations: vec![obs("model.base_model.embedding", 1e-3, 0.99999)], failures: vec![], error: None, attribution: None, location: None },
            LayerOutcome { key: "model.head".into(), bounds: Bounds::new(None, Some(f64::NEG_INFINITY)), observations: vec![obs("model.head", f64::NAN, 0.5), obs("model.head.iter-42", 2.0, 0.9)], failures: vec![(0, failure)], error: Some("missing from the golden file".into()), attribution: None, location: None },
        ],
        notes: vec!["thresholds: thresholds/tiny-granite-thresholds.json".into()],
        attribution_unavailable: None,
        logits: None,
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("o.bin");
    outcome.write(&path).unwrap();
    std::fs::read(path).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Byte edits

#[derive(Debug, Clone)]
enum ByteEdit {
    /// XOR one bit.
    Flip(Index, u8),
    Set(Index, u8),
    Insert(Index, Vec<u8>),
    Remove(Index, u8),
    /// Repeat the bytes after the position.
    Repeat(Index, u8),
    Truncate(Index),
}

/// Bytes that mean something to one of the formats, then any byte.
fn special_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        3 => prop::sample::select(b"\0\xff\x80\xc3\"'{}[],:\n\r\t -+.0123456789eE_\\/#=".to_vec()),
        1 => any::<u8>(),
    ]
}

/// Tokens of the formats, inserted whole.
fn token() -> impl Strategy<Value = Vec<u8>> {
    const TOKENS: &[&[u8]] = &[
        b"NaN", b"Infinity", b"-Infinity", b"nan", b"inf", b"1e999", b"-1e999", b"18446744073709551616", b"9223372036854775807",
        b"-1", b"0x1F", b"//", b"/*", b"*/", b"'", b",", b"\\u0000", b"\\ud800", b"\xc3\x28", b"\xef\xbb\xbf", b"[[[[[[[[", b"]]]]", b"{\"a\":",
        b"null", b"true", b"\r\n", b"\n\n", b"torch.Size([", b"])", b" = ", b"[matrix]",
    ];
    prop_oneof![prop::sample::select(TOKENS).prop_map(<[u8]>::to_vec), vec(special_byte(), 1..12)]
}

fn byte_edit() -> impl Strategy<Value = ByteEdit> {
    prop_oneof![
        3 => (any::<Index>(), 0u8..8).prop_map(|(i, b)| ByteEdit::Flip(i, 1 << b)),
        2 => (any::<Index>(), special_byte()).prop_map(|(i, b)| ByteEdit::Set(i, b)),
        2 => (any::<Index>(), token()).prop_map(|(i, t)| ByteEdit::Insert(i, t)),
        1 => (any::<Index>(), 1u8..64).prop_map(|(i, n)| ByteEdit::Remove(i, n)),
        1 => (any::<Index>(), 1u8..64).prop_map(|(i, n)| ByteEdit::Repeat(i, n)),
        1 => any::<Index>().prop_map(ByteEdit::Truncate),
    ]
}

fn byte_edits() -> impl Strategy<Value = Vec<ByteEdit>> {
    vec(byte_edit(), 1..6)
}

fn apply_bytes(mut b: Vec<u8>, edits: &[ByteEdit]) -> Vec<u8> {
    for e in edits {
        let len = b.len();
        let at = |i: &Index| if len == 0 { 0 } else { i.index(len) };
        match e {
            ByteEdit::Flip(i, bit) if len > 0 => b[at(i)] ^= bit,
            ByteEdit::Set(i, v) if len > 0 => b[at(i)] = *v,
            ByteEdit::Insert(i, t) => {
                let p = if len == 0 { 0 } else { i.index(len + 1) };
                b.splice(p..p, t.iter().copied());
            }
            ByteEdit::Remove(i, n) if len > 0 => {
                let p = at(i);
                b.drain(p..(p + *n as usize).min(len));
            }
            ByteEdit::Repeat(i, n) if len > 0 => {
                let p = at(i);
                let run: Vec<u8> = b[p..(p + *n as usize).min(len)].to_vec();
                b.splice(p..p, run);
            }
            ByteEdit::Truncate(i) if len > 0 => b.truncate(at(i)),
            _ => {}
        }
    }
    b
}

fn arbitrary_bytes() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..600)
}

// ---------------------------------------------------------------------------------------------
// JSON edits

/// A value to put into a JSON document: a JSON value, or literal text (which may not be JSON).
#[derive(Debug, Clone)]
enum Odd {
    Json(Value),
    Raw(String),
}

fn deep(n: usize) -> String {
    format!("{}{}", "[".repeat(n), "]".repeat(n))
}

fn odd() -> impl Strategy<Value = Odd> {
    let values = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        prop::sample::select(vec![json!(0), json!(1), json!(-1), json!(2), json!(i64::MAX), json!(i64::MIN), json!(u64::MAX), json!(1u64 << 63), json!((1u64 << 53) + 1), json!(1u64 << 32)]),
        any::<i64>().prop_map(|i| json!(i)),
        any::<u64>().prop_map(|i| json!(i)),
        prop::sample::select(vec![json!(0.5), json!(-0.0), json!(1e308), json!(-1e308), json!(5e-324), json!(1.0000001), json!(-2.5), json!(1e20)]),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f).map(Value::Number)),
        "[a-z0-9._:/-]{0,16}".prop_map(Value::String),
        prop::sample::select(vec!["", "model.head", "layercheck-capture/1", "layercheck-compact/2", "F16", "generate", "\u{0}\u{ffff}é\u{1f600}", "NaN", "inf"]).prop_map(|s| Value::String(s.into())),
        prop::sample::select(vec![json!([]), json!({}), json!([1, 2]), json!([0, u64::MAX]), json!([[0, 1]]), json!({"a": 1}), json!(["x"])]),
    ];
    let raw = prop::sample::select(vec![
        "NaN".to_string(), "Infinity".into(), "-Infinity".into(), "+Infinity".into(), "1e999".into(), "-1e999".into(), "18446744073709551616".into(),
        "-9223372036854775809".into(), "0x10".into(), "+1".into(), ".5".into(), "5.".into(), "'x'".into(), "1_0".into(), "\"\\ud800\"".into(), deep(200), deep(100_000),
        format!("{}1{}", "{\"a\":".repeat(50_000), "}".repeat(50_000)),
    ]);
    prop_oneof![5 => values.prop_map(Odd::Json), 1 => raw.prop_map(Odd::Raw)]
}

#[derive(Debug, Clone)]
enum JsonEdit {
    Replace(Vec<Index>, Odd),
    Remove(Vec<Index>),
    /// A new key (objects) or element (arrays).
    Insert(Vec<Index>, String, Odd),
    /// The object's `Index`-th key once more, with another value.
    DuplicateKey(Vec<Index>, Index, Odd),
    /// The node at the first path replaced by a copy of the node at the second.
    Copy(Vec<Index>, Vec<Index>),
}

fn json_path() -> impl Strategy<Value = Vec<Index>> {
    vec(any::<Index>(), 0..6)
}

fn json_edit() -> impl Strategy<Value = JsonEdit> {
    prop_oneof![
        5 => (json_path(), odd()).prop_map(|(p, o)| JsonEdit::Replace(p, o)),
        2 => json_path().prop_map(JsonEdit::Remove),
        1 => (json_path(), "[a-z_]{1,12}", odd()).prop_map(|(p, k, o)| JsonEdit::Insert(p, k, o)),
        1 => (json_path(), any::<Index>(), odd()).prop_map(|(p, k, o)| JsonEdit::DuplicateKey(p, k, o)),
        1 => (json_path(), json_path()).prop_map(|(a, b)| JsonEdit::Copy(a, b)),
    ]
}

fn json_edits() -> impl Strategy<Value = Vec<JsonEdit>> {
    vec(json_edit(), 1..5)
}

/// The node `path` leads to (stopping at a leaf or an empty container).
fn node_mut<'a>(mut cur: &'a mut Value, path: &[Index]) -> &'a mut Value {
    for i in path {
        let k = match &*cur {
            Value::Object(m) if !m.is_empty() => i.index(m.len()),
            Value::Array(a) if !a.is_empty() => i.index(a.len()),
            _ => break,
        };
        cur = match cur {
            Value::Object(m) => m.values_mut().nth(k).unwrap(),
            Value::Array(a) => &mut a[k],
            _ => unreachable!(),
        };
    }
    cur
}

/// Markers stand for text that is not a JSON value until the document is written out.
struct Marks(Vec<String>);

impl Marks {
    fn place(&mut self, odd: &Odd) -> Value {
        match odd {
            Odd::Json(v) => v.clone(),
            Odd::Raw(text) => self.mark(text.clone()),
        }
    }

    fn mark(&mut self, text: String) -> Value {
        self.0.push(text);
        Value::String(format!("\u{1}M{}\u{1}", self.0.len() - 1))
    }
}

fn edit_json(v: &mut Value, edits: &[JsonEdit], marks: &mut Marks) {
    for e in edits {
        match e {
            JsonEdit::Replace(path, odd) => *node_mut(v, path) = marks.place(odd),
            JsonEdit::Remove(path) => {
                let Some((last, parent)) = path.split_last() else { continue };
                match node_mut(v, parent) {
                    Value::Object(m) if !m.is_empty() => {
                        let key = m.keys().nth(last.index(m.len())).unwrap().clone();
                        m.remove(&key);
                    }
                    Value::Array(a) if !a.is_empty() => {
                        a.remove(last.index(a.len()));
                    }
                    _ => {}
                }
            }
            JsonEdit::Insert(path, key, odd) => {
                let value = marks.place(odd);
                match node_mut(v, path) {
                    Value::Object(m) => {
                        m.insert(key.clone(), value);
                    }
                    Value::Array(a) => a.push(value),
                    other => *other = Value::Array(vec![other.clone(), value]),
                }
            }
            JsonEdit::DuplicateKey(path, which, odd) => {
                let value = marks.place(odd);
                if let Value::Object(m) = node_mut(v, path) {
                    if !m.is_empty() {
                        let key = m.keys().nth(which.index(m.len())).unwrap().clone();
                        // The key's JSON text, then its second value, in place of a marker key.
                        let dup = marks.mark(format!("{}: {}", serde_json::to_string(&key).unwrap(), serde_json::to_string(&value).unwrap()));
                        if let Value::String(marker) = dup {
                            m.insert(marker, Value::Null);
                        }
                    }
                }
            }
            JsonEdit::Copy(to, from) => {
                let copy = node_mut(v, from).clone();
                *node_mut(v, to) = copy;
            }
        }
    }
}

/// The document's text with every mark's text in place; a duplicated key's marker is a key
/// (`"marker":null`) whose text is the whole `"key": value`.
fn write_json(v: &Value, marks: &Marks) -> String {
    let mut text = serde_json::to_string(v).unwrap();
    // Later marks may hold earlier ones (a duplicated key's value): replace them first.
    for (i, raw) in marks.0.iter().enumerate().rev() {
        let quoted = format!("\"\\u0001M{i}\\u0001\"");
        text = text.replace(&format!("{quoted}:null"), raw).replace(&quoted, raw);
    }
    text
}

/// A seed as a JSON value, Python's `NaN` and `Infinity` (which it may hold) held by marks.
fn parse_python_json(bytes: &[u8]) -> (Value, Marks) {
    let mut marks = Marks(Vec::new());
    let mut text = String::from_utf8(bytes.to_vec()).expect("JSON seeds are UTF-8");
    for literal in ["-Infinity", "Infinity", "NaN"] {
        let Value::String(marker) = marks.mark(literal.to_string()) else { unreachable!() };
        text = text.replace(literal, &serde_json::to_string(&marker).unwrap());
    }
    (serde_json::from_str(&text).expect("JSON seeds are JSON"), marks)
}

/// A seed document (by index) with JSON edits, then byte edits of its text.
#[derive(Debug, Clone)]
enum JsonRecipe {
    Arbitrary(Vec<u8>),
    Bytes(Index, Vec<ByteEdit>),
    Json(Index, Vec<JsonEdit>, Vec<ByteEdit>),
}

fn json_recipe() -> impl Strategy<Value = JsonRecipe> {
    prop_oneof![
        1 => arbitrary_bytes().prop_map(JsonRecipe::Arbitrary),
        2 => (any::<Index>(), byte_edits()).prop_map(|(s, e)| JsonRecipe::Bytes(s, e)),
        6 => (any::<Index>(), json_edits(), prop_oneof![3 => Just(Vec::new()), 1 => byte_edits()]).prop_map(|(s, j, b)| JsonRecipe::Json(s, j, b)),
    ]
}

fn apply_json_recipe(seeds: &[Vec<u8>], recipe: &JsonRecipe) -> Vec<u8> {
    match recipe {
        JsonRecipe::Arbitrary(b) => b.clone(),
        JsonRecipe::Bytes(s, e) => apply_bytes(s.get(seeds).clone(), e),
        JsonRecipe::Json(s, j, b) => {
            let (mut v, mut marks) = parse_python_json(s.get::<Vec<u8>>(seeds));
            edit_json(&mut v, j, &mut marks);
            apply_bytes(write_json(&v, &marks).into_bytes(), b)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Safetensors edits

#[derive(Debug, Clone)]
enum TensorField {
    Dtype(String),
    Shape(Value),
    Offsets(Value),
}

fn tensor_field() -> impl Strategy<Value = TensorField> {
    let dtypes = prop::sample::select(vec!["F32", "F16", "BF16", "F64", "I64", "I32", "I16", "I8", "U8", "U16", "U32", "U64", "BOOL", "F8_E4M3", "F8_E5M2", "E8M0", "F4", "C64", "f32", ""]);
    let dim = prop::sample::select(vec![0u64, 1, 2, 3, 7, 64, 1 << 31, 1 << 32, 1 << 62, 1 << 63, (1 << 63) + 1, u64::MAX]);
    let shape = prop_oneof![
        4 => vec(dim, 0..4).prop_map(|d| json!(d)),
        1 => prop::sample::select(vec![json!([-1]), json!([1.5]), json!(["a"]), json!(3), json!(null), json!([0, -1])]),
    ];
    let offset = prop_oneof![0u64..100_000, prop::sample::select(vec![1u64 << 62, u64::MAX - 8, u64::MAX])];
    let offsets = prop_oneof![
        4 => (offset.clone(), offset).prop_map(|(a, b)| json!([a, b])),
        1 => prop::sample::select(vec![json!([0]), json!([1, 0]), json!([-1, 0]), json!("0,0"), json!([0, 0, 0])]),
    ];
    prop_oneof![
        dtypes.prop_map(|d| TensorField::Dtype(d.to_string())),
        shape.prop_map(TensorField::Shape),
        offsets.prop_map(TensorField::Offsets),
    ]
}

#[derive(Debug, Clone)]
enum HeaderEdit {
    /// On the whole header JSON.
    Json(Vec<JsonEdit>),
    /// On one field of the `Index`-th tensor.
    Tensor(Index, TensorField),
    /// On the JSON inside a metadata value (`keys`, or a compact file's `case`, `records`...).
    MetaJson(Index, Vec<JsonEdit>),
    /// One offset pair of one compact record (`items` or `cos`).
    Record(Index, bool, u64, u64),
    /// A metadata value replaced by a string.
    MetaSet(Index, String),
}

fn header_edit() -> impl Strategy<Value = HeaderEdit> {
    let offset = prop::sample::select(vec![0u64, 1, 2, 17, 18, 100, 1 << 32, 1 << 59, (u64::MAX / 18) + 1, 1 << 62, u64::MAX - 1, u64::MAX]);
    prop_oneof![
        2 => json_edits().prop_map(HeaderEdit::Json),
        4 => (any::<Index>(), tensor_field()).prop_map(|(i, f)| HeaderEdit::Tensor(i, f)),
        3 => (any::<Index>(), json_edits()).prop_map(|(i, e)| HeaderEdit::MetaJson(i, e)),
        2 => (any::<Index>(), any::<bool>(), offset.clone(), offset).prop_map(|(i, b, x, y)| HeaderEdit::Record(i, b, x, y)),
        1 => (any::<Index>(), prop_oneof!["[a-z0-9/-]{0,20}", Just("layercheck-capture/1".to_string()), Just("layercheck-compact/1".to_string()), Just("[]".to_string()), Just("[\"nope\"]".to_string())])
            .prop_map(|(i, s)| HeaderEdit::MetaSet(i, s)),
    ]
}

#[derive(Debug, Clone)]
enum SafetensorsRecipe {
    Arbitrary(Vec<u8>),
    /// A length prefix, then arbitrary bytes.
    Prefixed(u64, Vec<u8>),
    /// Byte edits anywhere.
    Bytes(Index, Vec<ByteEdit>),
    /// Byte edits of the header text; the length prefix is updated when the flag says so.
    HeaderBytes(Index, Vec<ByteEdit>, bool),
    /// Structured header edits; with `relayout`, offsets and data are then rebuilt from the
    /// shapes and dtypes so that safetensors' own checks pass and the reader's are reached.
    Header(Index, Vec<HeaderEdit>, bool),
    /// The length prefix replaced.
    Prefix(Index, u64),
}

fn safetensors_recipe() -> impl Strategy<Value = SafetensorsRecipe> {
    let prefix = prop_oneof![0u64..20_000, prop::sample::select(vec![100_000_000u64, 100_000_001, 1 << 32, u64::MAX - 7, u64::MAX])];
    prop_oneof![
        1 => arbitrary_bytes().prop_map(SafetensorsRecipe::Arbitrary),
        1 => (prefix.clone(), arbitrary_bytes()).prop_map(|(n, b)| SafetensorsRecipe::Prefixed(n, b)),
        2 => (any::<Index>(), byte_edits()).prop_map(|(s, e)| SafetensorsRecipe::Bytes(s, e)),
        2 => (any::<Index>(), byte_edits(), any::<bool>()).prop_map(|(s, e, f)| SafetensorsRecipe::HeaderBytes(s, e, f)),
        8 => (any::<Index>(), vec(header_edit(), 1..4), any::<bool>()).prop_map(|(s, e, r)| SafetensorsRecipe::Header(s, e, r)),
        1 => (any::<Index>(), prefix).prop_map(|(s, n)| SafetensorsRecipe::Prefix(s, n)),
    ]
}

fn split_safetensors(bytes: &[u8]) -> (Value, Vec<u8>) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    (serde_json::from_slice(&bytes[8..8 + n]).unwrap(), bytes[8 + n..].to_vec())
}

fn join_safetensors(header: &[u8], data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header);
    out.extend_from_slice(data);
    out
}

fn dtype_bytes(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "F64" | "I64" | "U64" | "C64" => 8,
        "F32" | "I32" | "U32" => 4,
        "F16" | "BF16" | "I16" | "U16" => 2,
        "BOOL" | "U8" | "I8" | "F8_E4M3" | "F8_E5M2" | "E8M0" => 1,
        _ => return None,
    })
}

/// Offsets in file order rebuilt from shapes and dtypes, data refilled from the old data; left
/// as is when a size cannot be computed or the data would exceed 4 MiB.
fn relayout(header: &mut Value, old_data: &[u8]) -> Option<Vec<u8>> {
    let Value::Object(map) = header else { return None };
    let mut tensors: Vec<(u64, String)> = map
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(k, v)| (v.get("data_offsets").and_then(|o| o.get(0)).and_then(Value::as_u64).unwrap_or(u64::MAX), k.clone()))
        .collect();
    tensors.sort();
    let mut start = 0u64;
    for (_, name) in &tensors {
        let t = map.get_mut(name)?;
        let numel = t.get("shape")?.as_array()?.iter().try_fold(1u64, |acc, d| acc.checked_mul(d.as_u64()?))?;
        let size = numel.checked_mul(dtype_bytes(t.get("dtype")?.as_str()?)?)?;
        let end = start.checked_add(size).filter(|&e| e <= 4 << 20)?;
        t["data_offsets"] = json!([start, end]);
        start = end;
    }
    let data: Vec<u8> = if old_data.is_empty() { vec![0; start as usize] } else { old_data.iter().copied().cycle().take(start as usize).collect() };
    Some(data)
}

fn apply_header_edit(header: &mut Value, e: &HeaderEdit, marks: &mut Marks) {
    if let HeaderEdit::Json(edits) = e {
        return edit_json(header, edits, marks);
    }
    let Value::Object(map) = header else { return };
    let tensor_names: Vec<String> = map.keys().filter(|k| *k != "__metadata__").cloned().collect();
    let meta_keys: Vec<String> = map.get("__metadata__").and_then(Value::as_object).map(|m| m.keys().cloned().collect()).unwrap_or_default();
    match e {
        HeaderEdit::Tensor(i, field) if !tensor_names.is_empty() => {
            let t = &mut map[&tensor_names[i.index(tensor_names.len())]];
            let (key, value) = match field {
                TensorField::Dtype(d) => ("dtype", json!(d)),
                TensorField::Shape(s) => ("shape", s.clone()),
                TensorField::Offsets(o) => ("data_offsets", o.clone()),
            };
            if let Value::Object(t) = t {
                t.insert(key.into(), value);
            }
        }
        HeaderEdit::MetaJson(i, edits) if !meta_keys.is_empty() => {
            let key = &meta_keys[i.index(meta_keys.len())];
            let slot = &mut map["__metadata__"][key];
            let Some(mut inner) = slot.as_str().and_then(|s| serde_json::from_str::<Value>(s).ok()) else { return };
            let mut inner_marks = Marks(Vec::new());
            edit_json(&mut inner, edits, &mut inner_marks);
            *slot = Value::String(write_json(&inner, &inner_marks));
        }
        HeaderEdit::Record(i, items, offset, count) => {
            let Some(slot) = map.get_mut("__metadata__").and_then(|m| m.get_mut("records")) else { return };
            let Some(mut records) = slot.as_str().and_then(|s| serde_json::from_str::<Value>(s).ok()) else { return };
            if let Some(list) = records.as_array_mut().filter(|l| !l.is_empty()) {
                let n = list.len();
                if let Some(record) = list[i.index(n)].as_object_mut() {
                    record.insert(if *items { "items" } else { "cos" }.into(), json!([offset, count]));
                }
            }
            *slot = Value::String(records.to_string());
        }
        HeaderEdit::MetaSet(i, s) if !meta_keys.is_empty() => {
            map["__metadata__"][&meta_keys[i.index(meta_keys.len())]] = json!(s);
        }
        _ => {}
    }
}

fn apply_safetensors_recipe(seeds: &[Vec<u8>], recipe: &SafetensorsRecipe) -> Vec<u8> {
    match recipe {
        SafetensorsRecipe::Arbitrary(b) => b.clone(),
        SafetensorsRecipe::Prefixed(n, b) => n.to_le_bytes().iter().chain(b).copied().collect(),
        SafetensorsRecipe::Bytes(s, e) => apply_bytes(s.get(seeds).clone(), e),
        SafetensorsRecipe::HeaderBytes(s, e, fix) => {
            let seed = s.get(seeds);
            let n = u64::from_le_bytes(seed[..8].try_into().unwrap()) as usize;
            let header = apply_bytes(seed[8..8 + n].to_vec(), e);
            let mut out = join_safetensors(&header, &seed[8 + n..]);
            if !fix {
                out[..8].copy_from_slice(&seed[..8]);
            }
            out
        }
        SafetensorsRecipe::Header(s, edits, relay) => {
            let (mut header, mut data) = split_safetensors(s.get::<Vec<u8>>(seeds));
            let mut marks = Marks(Vec::new());
            for e in edits {
                apply_header_edit(&mut header, e, &mut marks);
            }
            if *relay {
                if let Some(d) = relayout(&mut header, &data) {
                    data = d;
                }
            }
            join_safetensors(write_json(&header, &marks).as_bytes(), &data)
        }
        SafetensorsRecipe::Prefix(s, n) => {
            let mut out = s.get(seeds).clone();
            out[..8].copy_from_slice(&n.to_le_bytes());
            out
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Line edits (CSV, TOML, JSONL)

#[derive(Debug, Clone)]
enum LineEdit {
    Replace(Index, String),
    Insert(Index, String),
    Remove(Index),
    Duplicate(Index),
    Swap(Index, Index),
}

fn line_edit(line: impl Strategy<Value = String> + Clone) -> impl Strategy<Value = LineEdit> {
    prop_oneof![
        4 => (any::<Index>(), line.clone()).prop_map(|(i, l)| LineEdit::Replace(i, l)),
        2 => (any::<Index>(), line).prop_map(|(i, l)| LineEdit::Insert(i, l)),
        1 => any::<Index>().prop_map(LineEdit::Remove),
        1 => any::<Index>().prop_map(LineEdit::Duplicate),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| LineEdit::Swap(a, b)),
    ]
}

fn apply_lines(text: &[u8], edits: &[LineEdit], crlf: bool) -> Vec<u8> {
    let text = String::from_utf8_lossy(text);
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    for e in edits {
        let n = lines.len();
        match e {
            LineEdit::Replace(i, l) if n > 0 => lines[i.index(n)] = l.clone(),
            LineEdit::Insert(i, l) => lines.insert(if n == 0 { 0 } else { i.index(n + 1) }, l.clone()),
            LineEdit::Remove(i) if n > 0 => {
                lines.remove(i.index(n));
            }
            LineEdit::Duplicate(i) if n > 0 => {
                let k = i.index(n);
                lines.insert(k, lines[k].clone());
            }
            LineEdit::Swap(a, b) if n > 0 => lines.swap(a.index(n), b.index(n)),
            _ => {}
        }
    }
    let mut out = lines.join(if crlf { "\r\n" } else { "\n" });
    out.push('\n');
    out.into_bytes()
}

// ---------------------------------------------------------------------------------------------
// Tensor files and captures (libtorch: in a child process)

#[test]
fn tensor_files_and_captures() {
    in_child("tensor_files_and_captures", |dir| {
        let seeds = capture_seeds();
        let path = dir.join("capture.safetensors");
        fuzz("tensor files and captures", CASES_TENSOR_FILES, safetensors_recipe(), |recipe| {
            std::fs::write(&path, apply_safetensors_recipe(seeds, &recipe)).unwrap();
            named(TensorFile::read(&path), &path, &[])?;
            if let Some(capture) = named(Capture::read(&path), &path, &[])? {
                let _ = capture.inputs_by_step();
                for key in &capture.keys {
                    let _ = parse_record_name(key);
                }
            }
            Ok(())
        });
    });
}

// ---------------------------------------------------------------------------------------------
// Seed CSV

const CSV_SEEDS: [&str; 4] = [
    "tests/fixtures/seed/csv-forward/tiny-granite_max-new-tokens-2_batch-size-1_seq-length-8_dtype-float16--model.base_model.layers0.attn.dense.abs_diff.csv",
    "tests/fixtures/seed/csv-forward/tiny-granite_max-new-tokens-2_batch-size-1_seq-length-8_dtype-float16--model.base_model.layers0.attn.dense.cos_sim.csv",
    "tests/fixtures/seed/csv-forward/tiny-granite_max-new-tokens-2_batch-size-1_seq-length-8_dtype-float16--model.base_model.embedding.cos_sim.csv",
    "tests/fixtures/seed/csv-forward/tiny-granite_max-new-tokens-2_batch-size-1_seq-length-8_dtype-float16--model.base_model.dec_norm.cos_sim.csv",
];

fn torch_size_text() -> impl Strategy<Value = String> {
    let dim = prop::sample::select(vec!["0", "1", "8", "64", "-1", "-8", "4294967296", "9223372036854775807", "9223372036854775808", "-9223372036854775808", "", "a", "1.5", " 2 "]);
    vec(dim, 0..5).prop_map(|d| format!("torch.Size([{}])", d.join(", ")))
}

fn csv_line() -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        3 => prop::sample::select(vec!["nan", "-nan", "NaN", "inf", "-inf", "Infinity", "1e999", "-1e999", "1e-400", "1_0", "0x1p3", "  1.5  ", "", " ", "1.0.0", "é", "\u{feff}1", "+0", "-0.0", "1e", "e5", "abs_diff", "cos_sim"]).prop_map(str::to_string),
        2 => any::<f64>().prop_map(|f| f.to_string()),
        1 => "[0-9.eE+-]{1,30}",
        2 => (torch_size_text(), torch_size_text()).prop_map(|(a, b)| format!("GPU shape {a} CPU shape {b}")),
        2 => torch_size_text().prop_map(|a| format!("Metric shape {a}")),
        1 => Just("9".repeat(400)),
    ]
}

#[derive(Debug, Clone)]
enum CsvRecipe {
    Arbitrary(Vec<u8>),
    Bytes(Index, Vec<ByteEdit>),
    Lines(Index, Vec<LineEdit>, bool),
}

fn csv_recipe() -> impl Strategy<Value = CsvRecipe> {
    prop_oneof![
        1 => arbitrary_bytes().prop_map(CsvRecipe::Arbitrary),
        2 => (any::<Index>(), byte_edits()).prop_map(|(s, e)| CsvRecipe::Bytes(s, e)),
        4 => (any::<Index>(), vec(line_edit(csv_line()), 1..5), any::<bool>()).prop_map(|(s, e, c)| CsvRecipe::Lines(s, e, c)),
    ]
}

fn apply_csv_recipe(seeds: &[Vec<u8>], recipe: &CsvRecipe) -> Vec<u8> {
    match recipe {
        CsvRecipe::Arbitrary(b) => b.clone(),
        CsvRecipe::Bytes(s, e) => apply_bytes(s.get(seeds).clone(), e),
        CsvRecipe::Lines(s, e, crlf) => apply_lines(s.get::<Vec<u8>>(seeds), e, *crlf),
    }
}

#[test]
fn seed_csv_files() {
    let seeds: Vec<Vec<u8>> = CSV_SEEDS.iter().map(|p| fixture(p)).collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x--model.head.abs_diff.csv");
    fuzz("seed CSV", CASES_SEED_CSV, csv_recipe(), |recipe| {
        std::fs::write(&path, apply_csv_recipe(&seeds, &recipe)).unwrap();
        named(read_seed_csv(&path), &path, &[])?;
        Ok(())
    });
}

/// `layercheck thresholds` over a folder holding one layer's pair of seed CSV files, one of them
/// fuzzed (and maybe renamed to another case): what the header says (shapes) reaches the
/// per-shape observations.
#[test]
fn seed_csv_folders_through_thresholds() {
    let names: Vec<String> = CSV_SEEDS[..2].iter().map(|p| Path::new(p).file_name().unwrap().to_str().unwrap().to_string()).collect();
    let seeds: Vec<Vec<u8>> = CSV_SEEDS[..2].iter().map(|p| fixture(p)).collect();
    let number = prop::sample::select(vec!["0", "1", "7", "18446744073709551615", "18446744073709551616", "-1", "", "x"]);
    let strategy = (any::<bool>(), csv_recipe(), proptest::option::weighted(0.3, (number.clone(), number)), any::<bool>());
    fuzz("seed CSV folders", CASES_CSV_FOLDER, strategy, |(which, recipe, rename, layer_io)| {
        let dir = tempfile::tempdir().unwrap();
        let i = which as usize;
        let mut fuzzed = dir.path().join(&names[i]);
        for (k, name) in names.iter().enumerate() {
            std::fs::write(dir.path().join(name), if k == i { apply_csv_recipe(&seeds, &recipe) } else { seeds[k].clone() }).unwrap();
        }
        if let Some((batch, seq)) = rename {
            let renamed = dir.path().join(names[i].replace("batch-size-1", &format!("batch-size-{batch}")).replace("seq-length-8", &format!("seq-length-{seq}")));
            std::fs::rename(&fuzzed, &renamed).unwrap();
            fuzzed = renamed;
        }
        let opts = ThresholdsOptions {
            models: vec!["tiny-granite".into()],
            metrics: vec!["abs_diff".into(), "cos_sim_avg".into(), "cos_sim_mean".into()],
            file_base: dir.path().to_path_buf(),
            layer_io,
            output_path: dir.path().to_path_buf(),
            percentile: 99.0,
        margins: Default::default(),
        false_failure_rate: None,
        };
        let folder = dir.path().display().to_string();
        if let Some((file, _)) = named(compute("tiny-granite", &opts, &NoProgress), &fuzzed, &[&folder])? {
            let _ = file.to_json();
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------
// Compact files

#[test]
fn compact_files() {
    let seeds = vec![metric_seeds().0.clone()];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{COMPACT_PREFIX}.layercheck.safetensors"));
    let opts = ThresholdsOptions {
        models: vec!["tiny-granite".into()],
        metrics: vec!["abs_diff".into(), "cos_sim_avg".into(), "cos_sim_mean".into()],
        file_base: dir.path().to_path_buf(),
        layer_io: true,
        output_path: dir.path().to_path_buf(),
        percentile: 99.0,
        margins: Default::default(),
        false_failure_rate: None,
    };
    fuzz("compact files", CASES_COMPACT, safetensors_recipe(), |recipe| {
        std::fs::write(&path, apply_safetensors_recipe(&seeds, &recipe)).unwrap();
        named(CompactFile::read_case(&path), &path, &[])?;
        named(CompactFile::read(&path), &path, &[])?;
        if let Some((file, _)) = named(compute("tiny-granite", &opts, &NoProgress), &path, &[])? {
            let _ = file.to_json();
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------
// Thresholds JSON

#[test]
fn thresholds_files() {
    let seeds: Vec<Vec<u8>> = ["thresholds/tiny-granite-thresholds.json", "tests/fixtures/thresholds/test-org--tiny-model-thresholds.json", "tests/fixtures/seed/thresholds-forward.json"]
        .iter()
        .map(|p| fixture(p))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m-thresholds.json");
    fuzz("thresholds JSON", CASES_THRESHOLDS, json_recipe(), |recipe| {
        std::fs::write(&path, apply_json_recipe(&seeds, &recipe)).unwrap();
        if let Some(file) = named(ThresholdsFile::read(&path), &path, &[])? {
            // What we write of a file we read, we read again.
            let again = ThresholdsFile::parse(&file.to_json());
            prop_assert!(again.is_ok(), "{}: read, written, not read again: {}", path.display(), again.unwrap_err());
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------
// results.jsonl

#[derive(Debug, Clone)]
enum JsonlRecipe {
    Arbitrary(Vec<u8>),
    Bytes(Index, Vec<ByteEdit>),
    /// JSON edits of one line.
    Line(Index, Index, Vec<JsonEdit>),
    Lines(Index, Vec<LineEdit>),
}

fn jsonl_recipe() -> impl Strategy<Value = JsonlRecipe> {
    let line = prop::sample::select(vec!["", "{}", "[]", "null", "{\"kind\":\"record\"}", "{\"kind\":\"case\",\"format\":\"layercheck-results/1\",\"case\":\"c\",\"source\":\"s\",\"margins\":null,\"setup_error\":null}"]).prop_map(str::to_string);
    prop_oneof![
        1 => arbitrary_bytes().prop_map(JsonlRecipe::Arbitrary),
        2 => (any::<Index>(), byte_edits()).prop_map(|(s, e)| JsonlRecipe::Bytes(s, e)),
        6 => (any::<Index>(), any::<Index>(), json_edits()).prop_map(|(s, l, e)| JsonlRecipe::Line(s, l, e)),
        2 => (any::<Index>(), vec(line_edit(line), 1..4)).prop_map(|(s, e)| JsonlRecipe::Lines(s, e)),
    ]
}

fn apply_jsonl_recipe(seeds: &[Vec<u8>], recipe: &JsonlRecipe) -> Vec<u8> {
    match recipe {
        JsonlRecipe::Arbitrary(b) => b.clone(),
        JsonlRecipe::Bytes(s, e) => apply_bytes(s.get(seeds).clone(), e),
        JsonlRecipe::Line(s, l, e) => {
            let text = String::from_utf8(s.get(seeds).clone()).unwrap();
            let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
            let k = l.index(lines.len());
            let mut v: Value = serde_json::from_str(&lines[k]).unwrap();
            let mut marks = Marks(Vec::new());
            edit_json(&mut v, e, &mut marks);
            lines[k] = write_json(&v, &marks);
            (lines.join("\n") + "\n").into_bytes()
        }
        JsonlRecipe::Lines(s, e) => apply_lines(s.get::<Vec<u8>>(seeds), e, false),
    }
}

/// In a child process: drawing the plots of values read from a file once looped forever.
#[test]
fn results_jsonl_files() {
    in_child("results_jsonl_files", |dir| {
        let seeds = metric_seeds().1.clone();
        let path = dir.join("results.jsonl");
        let out = tempfile::tempdir().unwrap();
        fuzz("results.jsonl", CASES_RESULTS, jsonl_recipe(), |recipe| {
            std::fs::write(&path, apply_jsonl_recipe(&seeds, &recipe)).unwrap();
            named(rebuild_report(&path, out.path()), &path, &[])?;
            Ok(())
        });
    });
}

// ---------------------------------------------------------------------------------------------
// config.json

#[test]
fn model_configs() {
    let seeds: Vec<Vec<u8>> = ["models/tiny-granite/config.json", "models/tiny-llama/config.json"].iter().map(|p| fixture(p)).collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    fuzz("config.json", CASES_CONFIG, json_recipe(), |recipe| {
        std::fs::write(&path, apply_json_recipe(&seeds, &recipe)).unwrap();
        if let Some(config) = named(ModelConfig::load(dir.path()), &path, &[])? {
            let _ = (config.q_width(), config.kv_width());
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------
// Prompts and token ids

#[test]
fn prompt_files() {
    let text = fixture("tests/fixtures/prompts/tiny.txt");
    let lines: Vec<String> = String::from_utf8_lossy(&text).lines().map(str::to_string).collect();
    let as_json = serde_json::to_vec(&lines).unwrap();
    let tokenizer = Tokenizer::load(&repo().join("models/tiny-granite")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (txt, json) = (dir.path().join("prompts.txt"), dir.path().join("prompts.json"));
    let strategy = prop_oneof![
        (any::<Index>(), byte_edits()).prop_map(|(i, e)| (false, JsonRecipe::Bytes(i, e))),
        arbitrary_bytes().prop_map(|b| (false, JsonRecipe::Arbitrary(b))),
        json_recipe().prop_map(|r| (true, r)),
    ];
    fuzz("prompts", CASES_PROMPTS, strategy, |(is_json, recipe)| {
        let path = if is_json { &json } else { &txt };
        let seeds = [if is_json { as_json.clone() } else { text.clone() }];
        std::fs::write(path, apply_json_recipe(&seeds, &recipe)).unwrap();
        if let Some(prompts) = named(read_prompts(path), path, &[])? {
            // What the prompts become: tokens, padded to a sequence length.
            let _ = TokenBatch::from_prompts(&prompts, &tokenizer, Some(16), path);
        }
        Ok(())
    });
}

#[test]
fn input_id_files() {
    let seeds = vec![fixture("tests/fixtures/seed/input_ids.json"), b"[[1, 2, 3], [4, 5, 6]]".to_vec()];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ids.json");
    fuzz("input ids", CASES_IDS, json_recipe(), |recipe| {
        std::fs::write(&path, apply_json_recipe(&seeds, &recipe)).unwrap();
        if let Some(batch) = named(TokenBatch::read_json(&path), &path, &[])? {
            let _ = batch.check_vocab(384);
            let t = batch.to_tensor();
            prop_assert_eq!(t.size(), vec![batch.batch_size() as i64, batch.seq_len() as i64]);
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------
// The matrix (layercheck.toml)

const MATRIX_VARS: [&str; 7] = ["LAYERCHECK_MODELS", "LAYERCHECK_TARGETS", "LAYERCHECK_MODES", "LAYERCHECK_FEEDS", "LAYERCHECK_BATCH_SIZES", "LAYERCHECK_SEQ_LENGTHS", "LAYERCHECK_MAX_NEW_TOKENS"];

fn toml_value() -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        4 => prop::sample::select(vec![
            "nan", "inf", "-inf", "+inf", "1e999", "9223372036854775807", "9223372036854775808", "-1", "0", "0.0", "-0.0", "1.5", "[]", "[[]]", "[1, 2]",
            "[0]", "[-1]", "[1, 1]", "[18446744073709551615]", "[\"x\"]", "[\"generate\"]", "[\"isolated\", \"cumulative\"]", "{}", "{ rtol = nan, atol = -1 }",
            "{ rtol = 0.05 }", "\"\"", "\"..\"", "\"/\"", "\"a b\"", "\"cpu-f32\"", "\"model.nope\"", "\"model.head\"", "true", "1979-05-27", "'''x'''", "\"\\u0000\"",
        ]).prop_map(str::to_string),
        1 => any::<i64>().prop_map(|i| i.to_string()),
        1 => Just(deep(500)),
    ]
}

fn toml_line() -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        prop::sample::select(vec!["[faults.x]", "[faults.cpu-f16]", "[models.x]", "[models.\"A B\"]", "[matrix]", "base = \"cpu-f32\"", "module = \"model.head\"", "amplitude = nan", "x = 1", "[[matrix]]", "golden_dir = \"/tmp\"", "margins = 3"]).prop_map(str::to_string),
        ("[a-z_]{1,14}", toml_value()).prop_map(|(k, v)| format!("{k} = {v}")),
    ]
}

#[derive(Debug, Clone)]
enum TomlEdit {
    /// The right-hand side of the `Index`-th `key = value` line.
    Value(Index, String),
    Line(LineEdit),
}

fn apply_toml(text: &str, edits: &[TomlEdit]) -> Vec<u8> {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    for e in edits {
        match e {
            TomlEdit::Value(i, v) => {
                let assignments: Vec<usize> = (0..lines.len()).filter(|&k| !lines[k].trim_start().starts_with('#') && lines[k].contains(" = ")).collect();
                if !assignments.is_empty() {
                    let k = assignments[i.index(assignments.len())];
                    let key = lines[k].split(" = ").next().unwrap().to_string();
                    lines[k] = format!("{key} = {v}");
                }
            }
            TomlEdit::Line(l) => {
                let text = lines.join("\n");
                lines = String::from_utf8(apply_lines(text.as_bytes(), std::slice::from_ref(l), false)).unwrap().lines().map(str::to_string).collect();
            }
        }
    }
    (lines.join("\n") + "\n").into_bytes()
}

#[test]
fn matrix_files() {
    let seed = String::from_utf8(fixture("layercheck.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("layercheck.toml");
    let edit = prop_oneof![3 => (any::<Index>(), toml_value()).prop_map(|(i, v)| TomlEdit::Value(i, v)), 2 => line_edit(toml_line()).prop_map(TomlEdit::Line)];
    let text = prop_oneof![
        1 => arbitrary_bytes(),
        2 => byte_edits().prop_map({
            let seed = seed.clone();
            move |e| apply_bytes(seed.clone().into_bytes(), &e)
        }),
        5 => vec(edit, 1..5).prop_map({
            let seed = seed.clone();
            move |e| apply_toml(&seed, &e)
        }),
    ];
    let env_value = prop::sample::select(vec!["", ",", " , ", "1,x", "0", "1", "18446744073709551616", "cpu-f16,cpu-f16", "fault-l1-dense", "generate", "isolated", "tiny-granite,unknown", "tiny-llama"]);
    let strategy = (text, proptest::option::weighted(0.3, (0..MATRIX_VARS.len(), env_value)));
    fuzz("matrix", CASES_MATRIX, strategy, |(bytes, env)| {
        // Matrix::from_env reads the file as UTF-8 text, or fails naming it.
        let Ok(text) = String::from_utf8(bytes) else { return Ok(()) };
        std::fs::write(&path, &text).unwrap();
        let lookup = |var: &str| env.as_ref().filter(|(i, _)| MATRIX_VARS[*i] == var).map(|(_, v)| v.to_string());
        let var = env.as_ref().map_or("", |(i, _)| MATRIX_VARS[*i]);
        let also: Vec<&str> = if var.is_empty() { vec![] } else { vec![var] };
        if let Some(matrix) = named(Matrix::parse(dir.path(), &path, &text, lookup), &path, &also)? {
            for case in matrix.cases.iter().take(10_000) {
                let _ = (matrix.model(case), matrix.target(case), case.to_string());
            }
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------
// Case outcome files (the suite's, between processes)

#[test]
fn case_outcome_files() {
    let seeds = vec![outcome_seed(), {
        let dir = tempfile::tempdir().unwrap();
        CaseOutcome::failed("m::t", "no golden".into()).write(&dir.path().join("f.bin")).unwrap();
        std::fs::read(dir.path().join("f.bin")).unwrap()
    }];
    let strategy = (
        prop_oneof![1 => arbitrary_bytes(), 4 => (any::<Index>(), byte_edits()).prop_map({
            let seeds = seeds.clone();
            move |(s, e)| apply_bytes(s.get(&seeds).clone(), &e)
        })],
        prop::sample::select(vec![b"true".to_vec(), b"false".to_vec(), b"".to_vec(), b"maybe".to_vec(), b"\xff".to_vec()]),
    );
    fuzz("case outcomes", CASES_OUTCOME, strategy, |(bytes, cuda)| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m_t.bin");
        std::fs::write(&path, &bytes).unwrap();
        named(CaseOutcome::read(&path), &path, &[])?;
        // A process of a nextest run finds this file in the run's folder.
        std::fs::write(dir.path().join("cuda-available"), &cuda).unwrap();
        let cache = CaseCache::new(Some(dir.path().to_path_buf()));
        let outcome = cache.get("m::t", || CaseOutcome::failed("m::t", "computed".into()));
        let _ = (outcome.first_failure(), outcome.layer("model.head"));
        // The case's passing list, read by every test process before (or instead of) the outcome.
        let pass = dir.path().join("m_t.pass");
        std::fs::write(&pass, &bytes).unwrap();
        named(Passing::read(&pass), &pass, &[])?;
        let margins = layercheck_suite::matrix::Margins::default();
        let _ = CaseCache::new(Some(dir.path().to_path_buf())).get_for("m::t", Check::Summary, &margins, || CaseOutcome::failed("m::t", "computed".into()));
        let _ = cache.cuda_available(|| Ok(false));
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------
// Regressions: the minimal inputs of what the properties above found, each failing before its fix.

/// A safetensors file of `header` (JSON text) and `data`.
fn safetensors_bytes(header: &str, data: &[u8]) -> Vec<u8> {
    join_safetensors(header.as_bytes(), data)
}

fn read_error<T, E: Display>(result: Result<T, E>) -> String {
    match result {
        Ok(_) => panic!("the reader accepted a bad file"),
        Err(e) => e.to_string(),
    }
}

/// A zero-sized tensor whose other dimension does not fit an i64 passes safetensors' checks (0
/// elements); it used to reach libtorch as a negative size.
#[test]
fn regression_tensor_dimension_beyond_i64() {
    in_child("regression_tensor_dimension_beyond_i64", |dir| {
        let path = dir.join("wide.safetensors");
        let header = format!(r#"{{"__metadata__":{{"format":"layercheck-capture/1","keys":"[\"x\"]"}},"x":{{"dtype":"F32","shape":[{},0],"data_offsets":[0,0]}}}}"#, u64::MAX);
        std::fs::write(&path, safetensors_bytes(&header, &[])).unwrap();
        let err = read_error(TensorFile::read(&path));
        assert!(err.contains(&path.display().to_string()) && err.contains("tensor x") && err.contains("18446744073709551615"), "{err}");
        let err = read_error(Capture::read(&path));
        assert!(err.contains(&path.display().to_string()), "{err}");
    });
}

/// Tensors whose offsets add up to nearly u64::MAX (each one's size is computable) make the
/// safetensors crate's own length check (`buffer_end + 8 + n`) overflow.
#[test]
fn regression_tensor_offsets_overflowing_the_file_length() {
    in_child("regression_tensor_offsets_overflowing_the_file_length", |dir| {
        let path = dir.join("far.safetensors");
        let size = (1u64 << 61) - 1;
        let tensors: Vec<String> = (0..8).map(|i| format!(r#""t{i}":{{"dtype":"U8","shape":[{size}],"data_offsets":[{},{}]}}"#, i * size, (i + 1) * size)).collect();
        let header = format!("{{{}}}", tensors.join(","));
        std::fs::write(&path, safetensors_bytes(&header, &[])).unwrap();
        let err = read_error(TensorFile::read(&path));
        assert!(err.contains(&path.display().to_string()), "{err}");
    });
}

/// A small compact file of two records, made in this process (the regressions need no
/// `layercheck generate`, which each process of a nextest run would otherwise repeat).
fn small_compact() -> Vec<u8> {
    use layercheck::formats::case::SeedCase;
    use layercheck::formats::compact::CompactWriter;
    use tch::{Kind, Tensor};
    let mut w = CompactWriter::new(SeedCase::new("tiny-granite", 2, 1, 3));
    let r = Tensor::from_slice(&[1.0f32, -2.0, 3.0, 0.5, 0.25, -1.0]).view([1, 3, 2]);
    for key in ["model.base_model.embedding", "model.head"] {
        let c = layercheck::metrics::compare(&r, &(&r * 1.01).to_kind(Kind::Half)).unwrap();
        w.push(key, &[1, 3, 2], &[1, 3, 2], &c).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::read(w.write(dir.path()).unwrap()).unwrap()
}

/// [`small_compact`] with its `records` metadata rewritten by `edit`.
fn compact_with_records(edit: impl FnOnce(&mut Vec<Value>)) -> Vec<u8> {
    let (mut header, data) = split_safetensors(&small_compact());
    let records = header["__metadata__"]["records"].as_str().unwrap();
    let mut records: Vec<Value> = serde_json::from_str(records).unwrap();
    edit(&mut records);
    header["__metadata__"]["records"] = Value::String(serde_json::to_string(&records).unwrap());
    join_safetensors(header.to_string().as_bytes(), &data)
}

/// Offsets of a compact record are added and multiplied as they come from the file.
#[test]
fn regression_compact_record_offsets_that_overflow() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{COMPACT_PREFIX}.layercheck.safetensors"));
    for (field, range) in [("items", json!([1, u64::MAX])), ("items", json!([u64::MAX / 18 + 1, 1])), ("cos", json!([u64::MAX, 1]))] {
        std::fs::write(&path, compact_with_records(|r| r[0][field] = range.clone())).unwrap();
        let err = read_error(CompactFile::read(&path));
        assert!(err.contains(&path.display().to_string()) && err.contains(&format!("record 0 (model.base_model.embedding): {field} out of range")), "{field} {range}: {err}");
    }
}

/// Every record pointing at all of a file's rows made a small file read as a huge one (records x
/// rows); ranges must follow each other as the writer lays them out.
#[test]
fn regression_compact_records_sharing_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{COMPACT_PREFIX}.layercheck.safetensors"));
    std::fs::write(&path, compact_with_records(|r| r[1]["cos"] = r[0]["cos"].clone())).unwrap();
    let err = read_error(CompactFile::read(&path));
    assert!(err.contains(&path.display().to_string()) && err.contains("record 1 (") && err.contains("cos out of range"), "{err}");
    // The file as written reads.
    std::fs::write(&path, small_compact()).unwrap();
    assert_eq!(CompactFile::read(&path).unwrap().records.len(), 2);
}

/// A compact file is a safetensors file: the same overflowing offsets as
/// [`regression_tensor_offsets_overflowing_the_file_length`].
#[test]
fn regression_compact_offsets_overflowing_the_file_length() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("far.layercheck.safetensors");
    let size = (1u64 << 61) - 1;
    let tensors: Vec<String> = (0..8).map(|i| format!(r#""t{i}":{{"dtype":"U8","shape":[{size}],"data_offsets":[{},{}]}}"#, i * size, (i + 1) * size)).collect();
    let (header, _) = split_safetensors(&small_compact());
    let header = format!(r#"{{"__metadata__":{},{}}}"#, header["__metadata__"], tensors.join(","));
    std::fs::write(&path, safetensors_bytes(&header, &[])).unwrap();
    let err = read_error(CompactFile::read(&path));
    assert!(err.contains(&path.display().to_string()) && err.contains("past the 0 bytes of data"), "{err}");
}

/// A seed CSV header whose metric shape's product overflows an i64 (the per-shape observations
/// are split by it).
#[test]
fn regression_seed_csv_metric_shape_that_overflows() {
    let dir = tempfile::tempdir().unwrap();
    for p in &CSV_SEEDS[..2] {
        let name = Path::new(p).file_name().unwrap();
        let text = String::from_utf8(fixture(p)).unwrap();
        let text = text.replacen("Metric shape torch.Size([1, 8", "Metric shape torch.Size([9223372036854775807, 8", 1);
        assert!(text.contains("9223372036854775807"));
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let opts = ThresholdsOptions {
        models: vec!["tiny-granite".into()],
        metrics: vec!["abs_diff".into(), "cos_sim_avg".into()],
        file_base: dir.path().to_path_buf(),
        layer_io: true,
        output_path: dir.path().to_path_buf(),
        percentile: 99.0,
        margins: Default::default(),
        false_failure_rate: None,
    };
    // Such a header is as unusable as none: each file is one observation.
    let (file, _) = compute("tiny-granite", &opts, &NoProgress).unwrap();
    let t = file.per_shape.unwrap().get(1, 8, "model.base_model.layers0.attn.dense").copied().unwrap();
    assert_eq!(t.observations, 1);
}

/// A head_dim whose product with the head count overflows was accepted, and the model's
/// q_width() then overflowed.
#[test]
fn regression_config_head_dim_that_overflows() {
    let dir = tempfile::tempdir().unwrap();
    let mut config: Value = serde_json::from_slice(&fixture("models/tiny-granite/config.json")).unwrap();
    config["head_dim"] = json!(1u64 << 62);
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    let err = read_error(ModelConfig::load(dir.path()));
    assert!(err.contains(&dir.path().join("config.json").display().to_string()) && err.contains("field \"head_dim\""), "{err}");
}

/// 100000 nested arrays overflowed the JSON5 parser's stack: an abort, which no caller catches.
#[test]
fn regression_thresholds_nested_too_deep() {
    in_child("regression_thresholds_nested_too_deep", |dir| {
        let path = dir.join("deep-thresholds.json");
        std::fs::write(&path, format!(r#"{{"model_id": "m", "abs_diff": {}}}"#, deep(100_000))).unwrap();
        let err = read_error(ThresholdsFile::read(&path));
        assert!(err.contains(&path.display().to_string()) && err.contains("deeper than 128"), "{err}");
    });
}

/// A per-shape batch size of 1e19 saturated to u64::MAX on reading and was written back as -1,
/// which reads as an error.
#[test]
fn regression_thresholds_batch_size_beyond_i64() {
    let text = r#"{"model_id": "m", "layercheck": {"format": "layercheck-thresholds/1", "percentile": 99.0, "shapes": {"s": {"batch_size": 1e19, "seq_length": 8, "layers": {}}}}}"#;
    let err = ThresholdsFile::parse(text).unwrap_err().to_string();
    assert!(err.contains("shape s lacks batch_size / seq_length"), "{err}");
    let ok = ThresholdsFile::parse(&text.replace("1e19", "9007199254740992")).unwrap();
    assert_eq!(ThresholdsFile::parse(&ok.to_json()).unwrap(), ok);
}

// ---------------------------------------------------------------------------------------------
// The mutators themselves: they make what they say, so the properties above test something.

/// An `Index` that picks item `k` of `n` (proptest has no constructor: drawn until one does).
fn index_of(k: usize, n: usize) -> Index {
    use proptest::strategy::ValueTree;
    let mut runner = TestRunner::deterministic();
    loop {
        let i = any::<Index>().new_tree(&mut runner).unwrap().current();
        if i.index(n) == k {
            return i;
        }
    }
}

#[test]
fn mutators_make_what_they_say() {
    let any_index = |k: usize| index_of(k, 2);
    // Duplicated keys and raw literals reach the text.
    let seed = vec![br#"{"a": 1, "b": [1, 2]}"#.to_vec()];
    let recipe = JsonRecipe::Json(index_of(0, 1), vec![JsonEdit::DuplicateKey(vec![], any_index(0), Odd::Json(json!(2))), JsonEdit::Replace(vec![any_index(1), any_index(0)], Odd::Raw("NaN".into()))], vec![]);
    let text = String::from_utf8(apply_json_recipe(&seed, &recipe)).unwrap();
    assert_eq!(text.matches("\"a\"").count(), 2, "{text}");
    assert!(text.contains("[NaN,2]"), "{text}");
    // Python's literals in a seed survive a round through the edits.
    let seed = vec![br#"{"x": Infinity, "y": -Infinity, "z": NaN}"#.to_vec()];
    let text = String::from_utf8(apply_json_recipe(&seed, &JsonRecipe::Json(index_of(0, 1), vec![JsonEdit::Remove(vec![])], vec![]))).unwrap();
    assert_eq!(text, r#"{"x":Infinity,"y":-Infinity,"z":NaN}"#);
    // A relaid-out header passes the safetensors crate's checks, so the reader's own are reached.
    let seeds = vec![small_compact()];
    let (header, _) = split_safetensors(&seeds[0]);
    let names: Vec<&String> = header.as_object().unwrap().keys().filter(|k| *k != "__metadata__").collect();
    let cos = names.iter().position(|n| *n == "cos_sim").unwrap();
    let recipe = SafetensorsRecipe::Header(index_of(0, 1), vec![HeaderEdit::Tensor(index_of(cos, names.len()), TensorField::Shape(json!([u64::MAX, 0])))], true);
    let bytes = apply_safetensors_recipe(&seeds, &recipe);
    let parsed = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(parsed.tensor("cos_sim").unwrap().shape(), [usize::MAX, 0]);
}

/// `layercheck report --results` of a results.jsonl whose numbers reach the ends of f64: a bound
/// near f64::MAX put the top of the plots' log axis at inf, and values 1e-300 and 1e300 made its
/// top / bottom overflow; plotters then stepped through the decades forever. Killed after 60 s
/// if it hangs.
#[test]
fn regression_report_plot_of_extreme_values() {
    use layercheck::report::CaseResults;
    use layercheck_suite::matrix::Margins;
    let dir = tempfile::tempdir().unwrap();
    let outcome = CaseOutcome::read(&{
        let p = dir.path().join("o.bin");
        std::fs::write(&p, outcome_seed()).unwrap();
        p
    })
    .unwrap();
    type Edit = Box<dyn Fn(&mut CaseOutcome)>;
    let cases: [(&str, Edit); 3] = [
        ("bound 1e308", Box::new(|o| o.layers[0].bounds.abs_diff_l2 = Some(1e308))),
        (
            "metric 1e-300, bound 1e300",
            Box::new(|o| {
                o.layers[0].observations[0].abs_diff_l2 = 1e-300;
                o.layers[1].bounds.abs_diff_l2 = Some(1e300);
            }),
        ),
        ("metric 5e-324", Box::new(|o| o.layers[0].observations[0].abs_diff_l2 = 5e-324)),
    ];
    for (what, edit) in cases {
        let mut o = outcome.clone();
        edit(&mut o);
        let path = dir.path().join("results.jsonl");
        std::fs::write(&path, CaseResults::from_outcome(&o, &Margins::default()).to_jsonl()).unwrap();
        let out = dir.path().join("out");
        let mut child = layercheck(&["report", "--results", &path.display().to_string(), "--out", &out.display().to_string()]);
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if start.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                panic!("{what}: layercheck report did not finish in 60 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "{what}: {status}");
        assert!(out.join("plot.png").exists() && out.join("plot.svg").exists(), "{what}");
    }
}

/// A flipped bit in a compact file's summaries made a count of 1e300 (or -1, 0.5), which
/// saturated into u64::MAX and overflowed where `layercheck thresholds` adds counts.
#[test]
fn regression_compact_summary_counts_that_are_not_counts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{COMPACT_PREFIX}.layercheck.safetensors"));
    let (header, data) = split_safetensors(&small_compact());
    let summaries = header["summaries"]["data_offsets"][0].as_u64().unwrap() as usize;
    for bad in [1e300, -1.0, 0.5, f64::NAN, (1u64 << 54) as f64] {
        let mut data = data.clone();
        // Record 0's `elements`, the first field of its row.
        data[summaries..summaries + 8].copy_from_slice(&bad.to_le_bytes());
        std::fs::write(&path, join_safetensors(header.to_string().as_bytes(), &data)).unwrap();
        let err = read_error(CompactFile::read(&path));
        assert!(err.contains(&path.display().to_string()) && err.contains(&format!("summaries row 0: elements = {bad} is not a count")), "{bad}: {err}");
    }
}

/// Counts of up to 2^53 each, pooled over thousands of records of one layer, overflowed u64.
#[test]
fn regression_thresholds_pooled_counts_that_overflow() {
    use layercheck::formats::case::SeedCase;
    use layercheck::formats::compact::{CompactRecord, CompactWriter};
    let dir = tempfile::tempdir().unwrap();
    let file = CompactFile::read(&{
        let p = dir.path().join("seed.layercheck.safetensors");
        std::fs::write(&p, small_compact()).unwrap();
        p
    })
    .unwrap();
    let mut w = CompactWriter::new(SeedCase::new("tiny-granite", 2, 1, 3));
    for n in 1..=2100 {
        let mut summary = file.records[0].summary;
        summary.elements = 1 << 53;
        w.push_record(CompactRecord { key: format!("model.head.iter-{n}"), items: vec![], cos_sim: vec![], summary, ..file.records[0].clone() }).unwrap();
    }
    let folder = dir.path().join("folder");
    std::fs::create_dir(&folder).unwrap();
    w.write(&folder).unwrap();
    let opts = ThresholdsOptions {
        models: vec!["tiny-granite".into()],
        metrics: vec!["abs_diff".into()],
        file_base: folder.clone(),
        layer_io: true,
        output_path: folder,
        percentile: 99.0,
        margins: Default::default(),
        false_failure_rate: None,
    };
    let (file, _) = compute("tiny-granite", &opts, &NoProgress).unwrap();
    assert!(file.layer("abs_diff", "model.head").is_some_and(f64::is_finite));
}
