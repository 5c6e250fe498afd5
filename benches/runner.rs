//! A `command` target's own overhead against the target's forward, SmolLM2-135M b1 s64, in one run.
//! Opt-in: needs models/smollm2-135m-instruct (scripts/reference/convert_smollm2.py).
//!
//! `cargo bench --bench runner [-- RUNS]` (default 5). Target: overhead <= 10% of the forward.
//!
//! - forward: the builtin cpu-f16 target's forward with every hook recording (what a device's
//!   program does before it writes its capture), in this process;
//! - overhead: everything layercheck adds around a command: the private folder, the request
//!   file, starting the program and waiting for it, reading the capture it wrote and checking it
//!   against the request. Measured with a program that does no forward of its own (`cp` of the
//!   capture the forward made), through the same `CommandRunner` and `check_capture` the suite uses.

use std::path::Path;
use std::time::{Duration, Instant};

use layercheck::capture::{Capture, Mode, Recorder};
use layercheck_suite::test_name::Feed;
use layercheck::inputs::TokenBatch;
use layercheck::model::{AttentionMask, DecoderModel};
use layercheck::run::{self, RunSpec};
use layercheck::runner::check::check_capture;
use layercheck::runner::command::CommandRunner;
use layercheck::runner::request::{Request, REQUEST_FORMAT};
use layercheck::target::Target;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let runs: usize = std::env::args().skip(1).find(|a| !a.starts_with("--")).and_then(|s| s.parse().ok()).unwrap_or(5);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("models/smollm2-135m-instruct");
    if !dir.join("config.json").exists() {
        println!("runner bench skipped: {} is absent (python scripts/reference/convert_smollm2.py)", dir.display());
        return;
    }
    let target: Target = "cpu-f16".parse().unwrap();
    let model = DecoderModel::load(&dir, target).expect("SmolLM2 loads");
    let rows: Vec<Vec<i64>> = vec![(0..64).map(|i| 1 + (i * 7919) % (model.config.vocab_size - 1)).collect()];
    let batch = TokenBatch::from_rows(rows.clone()).unwrap();
    let spec = RunSpec { mode: Mode::ModelForward, max_new_tokens: 0, mask: AttentionMask::AttendPads };
    let mut forward = Vec::new();
    let mut capture = None;
    for i in 0..=runs {
        let t = Instant::now();
        let c = run::capture(&model, &dir, &batch, &spec, Recorder::all()).expect("forward");
        if i > 0 {
            forward.push(t.elapsed().as_secs_f64());
        }
        capture = Some(c);
    }
    let capture = capture.unwrap();
    let work = tempfile::tempdir().unwrap();
    let made = work.path().join("made.safetensors");
    capture.write(&made).unwrap();
    let size = std::fs::metadata(&made).unwrap().len();

    let request = Request {
        format: REQUEST_FORMAT.into(),
        model: "smollm2-135m-instruct".into(),
        model_path: dir.clone(),
        target: "bench".into(),
        mode: "model-forward".into(),
        input_ids: rows,
        max_new_tokens: 0,
        forced_ids: None,
        attention_mask: "attend-pads".into(),
        feed: "cumulative".into(),
        golden: None,
        keys: capture.keys.clone(),
        capture_inputs: false,
    };
    assert!(request.check().is_ok_and(|k| k.feed == Feed::Cumulative));
    let runner = CommandRunner { argv: vec!["cp".into(), made.display().to_string(), "{out}".into()], timeout: Duration::from_secs(60), root: root.to_path_buf() };
    let mut overhead = Vec::new();
    for i in 0..=runs {
        let t = Instant::now();
        let got = runner.run(&request).expect("the command answers");
        check_capture(&got, &request, "bench").expect("the capture answers the request");
        if i > 0 {
            overhead.push(t.elapsed().as_secs_f64());
        }
    }
    let mut reading = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let _ = Capture::read(&made).expect("reads");
        reading.push(t.elapsed().as_secs_f64());
    }
    let (f, o) = (median(forward), median(overhead));
    println!("target forward cpu-f16 b1 s64, every hook recording: median {:.1} ms over {runs} runs ({} threads)", f * 1e3, tch::get_num_threads());
    println!("command overhead (request, process, capture of {:.1} MB read and checked): median {:.1} ms", size as f64 / 1e6, o * 1e3);
    println!("  of which reading the capture into tensors: median {:.1} ms", median(reading) * 1e3);
    println!("ratio overhead / forward: {:.3} (target <= 0.10)", o / f);
}
