//! SmolLM2-135M forward time (cpu-f32) against PyTorch eager on the same machine, in one run.
//! Opt-in: needs models/smollm2-135m-instruct (scripts/reference/convert_smollm2.py) and, for the
//! ratio, a Python with torch and transformers (`LAYERCHECK_PYTHON`, e.g. `$(scripts/setup-python)`;
//! the PyTorch side is skipped, saying how to set it, when it is unset).
//!
//! `cargo bench --bench forward [-- BATCH SEQ RUNS]` (default 1 64 20). Target: ratio <= 1.2.

#[path = "common/python.rs"]
mod python;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use layercheck::hooks::Hooks;
use layercheck::model::{AttentionMask, DecoderModel};
use layercheck::target::Target;
use tch::{Kind, Tensor};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    // `cargo test --all-targets` builds and runs benches without `--bench`: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let num = |i: usize, d: i64| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let (batch, seq, runs) = (num(0, 1), num(1, 64), num(2, 20) as usize);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/smollm2-135m-instruct");
    if !dir.join("config.json").exists() {
        println!("forward bench skipped: {} is absent (python scripts/reference/convert_smollm2.py)", dir.display());
        return;
    }
    let model = DecoderModel::load(&dir, Target::REFERENCE).expect("SmolLM2 loads");
    tch::manual_seed(0);
    let ids = Tensor::randint_low(1, model.config.vocab_size, [batch, seq], (Kind::Int64, tch::Device::Cpu));
    let mut times = Vec::new();
    tch::no_grad(|| {
        let _ = model.forward(&ids, AttentionMask::AttendPads, &mut Hooks::none());
        for _ in 0..runs {
            let t = Instant::now();
            let _ = model.forward(&ids, AttentionMask::AttendPads, &mut Hooks::none());
            times.push(t.elapsed().as_secs_f64());
        }
    });
    let ours = median(times);
    println!("layercheck forward  b{batch} s{seq} cpu-f32: median {:.2} ms over {runs} runs ({} threads)", ours * 1e3, tch::get_num_threads());

    let python = match python::python_from_env("pytorch side") {
        Ok(p) => p,
        Err(why) => return println!("{why}"),
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/bench/torch_forward.py");
    let out = Command::new(&python).arg(&script).arg(&dir).arg(batch.to_string()).arg(seq.to_string()).arg(runs.to_string()).output();
    match out {
        Ok(o) if o.status.success() => {
            let line = String::from_utf8_lossy(&o.stdout);
            let v: serde_json::Value = serde_json::from_str(line.trim().lines().last().unwrap_or("{}")).expect("bench script prints JSON");
            let theirs = v["median_s"].as_f64().expect("median_s");
            println!("pytorch eager       b{batch} s{seq} cpu-f32: median {:.2} ms (torch {}, {} threads)", theirs * 1e3, v["torch"], v["threads"]);
            println!("ratio layercheck / pytorch: {:.3} (target <= 1.2)", ours / theirs);
        }
        Ok(o) => println!("pytorch side skipped: {python} failed: {}", String::from_utf8_lossy(&o.stderr).lines().last().unwrap_or("")),
        Err(e) => println!("pytorch side skipped: {python}: {e}"),
    }
}
