//! `layercheck generate` (seed step 1) on SmolLM2-135M, b1 s64, model-forward and generate with 8
//! new tokens, against the REAL Python pipeline (aiu-fms-testing-utils' generate_layers_metrics.py
//! through scripts/bench/seed_generate.py), whole processes timed end to end, in one run.
//! Target: Python / layercheck >= 5 (issue 4). Also reports each side's peak memory.
//!
//! `cargo bench --bench generate [-- RUNS]` (default 3 runs of each side and format).
//! Opt-in: returns at once without `--bench` (`cargo test --all-targets` runs bench binaries);
//! skips when models/smollm2-135m-instruct is absent (scripts/reference/convert_smollm2.py).
//! The Python side runs where it is installed: `LAYERCHECK_PYTHON` (torch + ibm-fms + transformers,
//! e.g. `$(scripts/setup-python)`) and `LAYERCHECK_AIU_PACKAGE` (the unpacked aiu-fms-testing-utils
//! 0.9.0 wheel; scripts/reference/README.md says how); with either unset it is skipped, saying how
//! to set it. No default path: nothing here assumes one machine's layout.
//!
//! What is timed: each side is a child process, from spawn to exit (model loads of both the f32
//! reference and the f16 target, the forward(s), metrics, writing files), into a fresh output
//! folder. Both sides get the same ids ([1, 64], tch::manual_seed(0), uniform in 1..vocab, the
//! same as torch.manual_seed(0); torch.randint(1, vocab, ...)) from one JSON file. Both run the
//! target side in float16 on the CPU: the seed's is CUDA float16, which this bench does not use.
//! Runs are interleaved (ours seed-csv, ours compact, Python, then again) so that load from other
//! processes on the machine falls on all sides alike; medians are reported.
//!
//! Our binary: CARGO_BIN_EXE_layercheck, which cargo sets when it builds a bench (the binary of
//! the same profile, target/release/layercheck, built by `cargo bench` before the bench);
//! otherwise `layercheck` two folders above this executable (target/release/deps/generate-HASH).
//!
//! Peak memory: the child's ru_maxrss from wait4(2) (declared here: libc is not a dependency of
//! the package). It is the child's own peak resident set, or that of a descendant it waited for
//! if larger (the kernel takes the max), the figure `/usr/bin/time -f %M` prints. Python's own
//! getrusage numbers (self and children) come back in its JSON and are printed for reference.

use std::collections::BTreeSet;
use std::fs::File;
#[path = "common/python.rs"]
mod python;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use tch::{Kind, Tensor};

const BATCH: i64 = 1;
const SEQ: i64 = 64;
const NEW_TOKENS: usize = 8;
const MODES: [&str; 2] = ["model-forward", "generate"];

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// One finished child: wall seconds, peak RSS in KiB (None where wait4 is not declared), success.
struct Finished {
    wall_s: f64,
    peak_kib: Option<i64>,
    ok: bool,
}

#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
mod wait {
    /// struct rusage on 64-bit Linux: two struct timeval (2 x i64 each), then 14 longs, the first
    /// of which is ru_maxrss (KiB).
    #[repr(C)]
    pub struct Rusage {
        pub utime: [i64; 2],
        pub stime: [i64; 2],
        pub maxrss: i64,
        pub rest: [i64; 13],
    }
    extern "C" {
        pub fn wait4(pid: i32, status: *mut i32, options: i32, rusage: *mut Rusage) -> i32;
    }

    /// Reaps `child` with wait4: (exited with status 0, ru_maxrss KiB). The `Child` must not be
    /// waited for afterwards (its pid is gone); dropping it neither waits nor kills.
    pub fn reap(child: &mut std::process::Child) -> (bool, Option<i64>) {
        let mut status = 0i32;
        let mut ru = Rusage { utime: [0; 2], stime: [0; 2], maxrss: 0, rest: [0; 13] };
        let pid = child.id() as i32;
        loop {
            // SAFETY: pid is our own unreaped child; status and ru are valid for writes.
            let r = unsafe { wait4(pid, &mut status, 0, &mut ru) };
            if r == pid {
                break;
            }
            let err = std::io::Error::last_os_error();
            assert_eq!(err.kind(), std::io::ErrorKind::Interrupted, "wait4({pid}): {err}");
        }
        // WIFEXITED && WEXITSTATUS == 0
        let ok = status & 0x7f == 0 && (status >> 8) & 0xff == 0;
        (ok, Some(ru.maxrss))
    }
}

#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
mod wait {
    pub fn reap(child: &mut std::process::Child) -> (bool, Option<i64>) {
        (child.wait().map(|s| s.success()).unwrap_or(false), None)
    }
}

/// Runs `cmd` with stdout and stderr into `log_stem`.{out,err}; times it from spawn to exit.
/// (The child is reaped by wait4 in `wait::reap`, which clippy does not see.)
#[allow(clippy::zombie_processes)]
fn run_timed(mut cmd: Command, log_stem: &Path) -> Finished {
    let out = File::create(log_stem.with_extension("out")).expect("log file");
    let err = File::create(log_stem.with_extension("err")).expect("log file");
    let start = Instant::now();
    let mut child = cmd.stdin(Stdio::null()).stdout(out).stderr(err).spawn().expect("child starts");
    let (ok, peak_kib) = wait::reap(&mut child);
    let wall_s = start.elapsed().as_secs_f64();
    if !ok {
        let tail = std::fs::read_to_string(log_stem.with_extension("err")).unwrap_or_default();
        let tail: Vec<&str> = tail.lines().rev().take(15).collect();
        eprintln!("child failed: {:?}\n{}", cmd, tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
    }
    Finished { wall_s, peak_kib, ok }
}

fn our_binary() -> PathBuf {
    if let Some(p) = option_env!("CARGO_BIN_EXE_layercheck") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    exe.parent().and_then(Path::parent).expect("target/<profile>/deps/..").join("layercheck")
}

fn file_names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok()).filter(|e| e.file_type().is_ok_and(|t| t.is_file())).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

/// Rows of the table, per (side, mode, format): wall times, peaks (KiB), failures.
#[derive(Default)]
struct Samples {
    walls: Vec<f64>,
    peaks: Vec<i64>,
    failures: usize,
    py_inner_walls: Vec<f64>,
    py_self_peaks: Vec<f64>,
    py_children_peaks: Vec<f64>,
}

impl Samples {
    fn add(&mut self, f: &Finished) {
        if f.ok {
            self.walls.push(f.wall_s);
            self.peaks.extend(f.peak_kib);
        } else {
            self.failures += 1;
        }
    }
    fn median_s(&self) -> Option<f64> {
        (!self.walls.is_empty()).then(|| median(self.walls.clone()))
    }
    fn peak_mib(&self) -> Option<f64> {
        self.peaks.iter().max().map(|k| *k as f64 / 1024.0)
    }
}

fn main() {
    // `cargo test --all-targets` builds and runs benches without `--bench`: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let runs: usize = args.first().and_then(|s| s.parse().ok()).unwrap_or(3).max(1);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let model = root.join("models/smollm2-135m-instruct");
    if !model.join("config.json").exists() {
        println!("generate bench skipped: {} is absent (python scripts/reference/convert_smollm2.py)", model.display());
        return;
    }
    let ours = our_binary();
    assert!(ours.exists(), "{} is absent (cargo bench builds it)", ours.display());

    let script = root.join("scripts/bench/seed_generate.py");
    let (python, aiu) = match (python::python_from_env("python side"), python::aiu_package_from_env("python side")) {
        (Ok(p), Ok(a)) => (p, a),
        (Err(why), _) | (_, Err(why)) => {
            println!("{why}");
            (String::new(), String::new())
        }
    };
    let gen_script = Path::new(&aiu).join("aiu_fms_testing_utils/scripts/generate_layers_metrics.py");
    let python_ok = !python.is_empty() && gen_script.exists();
    if !python.is_empty() && !python_ok {
        println!("python side skipped: {} is absent (LAYERCHECK_AIU_PACKAGE; scripts/reference/README.md)", gen_script.display());
    }

    let tmp = tempfile::Builder::new().prefix("layercheck-bench-generate-").tempdir().expect("temp dir");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("config.json")).expect("config.json")).expect("config JSON");
    let vocab = config["vocab_size"].as_i64().expect("vocab_size");
    tch::manual_seed(0);
    let ids = Tensor::randint_low(1, vocab, [BATCH, SEQ], (Kind::Int64, tch::Device::Cpu));
    let ids: Vec<Vec<i64>> = Vec::<Vec<i64>>::try_from(&ids).expect("ids to Vec");
    let ids_path = tmp.path().join("ids.json");
    std::fs::write(&ids_path, serde_json::to_string(&ids).unwrap()).expect("ids.json");

    println!(
        "layercheck generate vs generate_layers_metrics.py: {} b{BATCH} s{SEQ}, max_new_tokens {NEW_TOKENS}, {runs} run(s) each, \
         reference cpu f32, target cpu f16 (both sides; the seed's target is CUDA f16), {} cores",
        model.file_name().unwrap().to_string_lossy(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    println!("ours: {}\npython: {python} {}", ours.display(), script.display());

    let formats = ["seed-csv", "compact"];
    let mut table: Vec<(String, String, String, Samples)> = Vec::new();
    let mut name_checks: Vec<String> = Vec::new();
    for mode in MODES {
        let mut ours_s: Vec<Samples> = formats.iter().map(|_| Samples::default()).collect();
        let mut py = Samples::default();
        for run in 0..runs {
            let mut kept: Vec<PathBuf> = Vec::new();
            for (fi, format) in formats.iter().enumerate() {
                let out = tmp.path().join(format!("ours-{mode}-{format}-{run}"));
                let mut cmd = Command::new(&ours);
                // The Python side names files after the model folder's name (its variant): so do we.
                cmd.args(["generate", "--model_path"]).arg(&model).args(["--variant", &model.file_name().unwrap().to_string_lossy()]).args(["--mode", mode])
                    .args(["--batch_sizes", &BATCH.to_string(), "--seq_lengths", &SEQ.to_string()])
                    .args(["--max_new_tokens", &NEW_TOKENS.to_string(), "--input-ids"]).arg(&ids_path)
                    .args(["--format", format, "--output_path"]).arg(&out);
                let f = run_timed(cmd, &tmp.path().join(format!("ours-{mode}-{format}-{run}.log")));
                eprintln!("  ours   {mode:<13} {format:<8} run {}: {:.2} s, {} KiB", run + 1, f.wall_s, f.peak_kib.unwrap_or(-1));
                ours_s[fi].add(&f);
                if run == 0 && *format == "seed-csv" {
                    kept.push(out);
                } else {
                    let _ = std::fs::remove_dir_all(&out);
                }
            }
            if python_ok {
                let out = tmp.path().join(format!("python-{mode}-{run}"));
                let mut cmd = Command::new(&python);
                cmd.arg(&script).arg("--model-path").arg(&model).args(["--mode", mode])
                    .args(["--max-new-tokens", &NEW_TOKENS.to_string(), "--batch", &BATCH.to_string(), "--seq", &SEQ.to_string()])
                    .arg("--input-ids").arg(&ids_path).arg("--output-dir").arg(&out).arg("--aiu-package").arg(&aiu);
                let stem = tmp.path().join(format!("python-{mode}-{run}.log"));
                let f = run_timed(cmd, &stem);
                eprintln!("  python {mode:<13} seed-csv run {}: {:.2} s, {} KiB", run + 1, f.wall_s, f.peak_kib.unwrap_or(-1));
                py.add(&f);
                if f.ok {
                    let line = std::fs::read_to_string(stem.with_extension("out")).unwrap_or_default();
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(line.trim().lines().last().unwrap_or("{}")) {
                        py.py_inner_walls.extend(v["wall_s"].as_f64());
                        py.py_self_peaks.extend(v["peak_rss_self_mib"].as_f64());
                        py.py_children_peaks.extend(v["peak_rss_children_mib"].as_f64());
                    }
                }
                if run == 0 && f.ok {
                    kept.push(out);
                } else {
                    let _ = std::fs::remove_dir_all(&out);
                }
            }
            if kept.len() == 2 {
                let (a, b) = (file_names(&kept[0]), file_names(&kept[1]));
                let line = if a == b {
                    format!("{mode}: same {} file names on both sides", a.len())
                } else {
                    let only_ours: Vec<_> = a.difference(&b).take(5).cloned().collect();
                    let only_py: Vec<_> = b.difference(&a).take(5).cloned().collect();
                    format!(
                        "{mode}: FILE NAMES DIFFER: ours {}, python {}; only ours (first 5) {only_ours:?}; only python (first 5) {only_py:?}",
                        a.len(),
                        b.len()
                    )
                };
                eprintln!("  {line}");
                name_checks.push(line);
            }
            for d in kept {
                let _ = std::fs::remove_dir_all(d);
            }
        }
        for (fi, s) in ours_s.into_iter().enumerate() {
            table.push(("layercheck".into(), mode.into(), formats[fi].into(), s));
        }
        if python_ok {
            table.push(("python".into(), mode.into(), "seed-csv".into(), py));
        }
    }

    let fmt = |v: Option<f64>, p: usize| v.map(|x| format!("{x:.p$}")).unwrap_or_else(|| "-".into());
    println!();
    println!("{:<11} {:<14} {:<9} {:>9} {:>14} {:>11} {:>11} {:>9}", "side", "mode", "format", "median s", "peak RSS MiB", "py/ours s", "py/ours RSS", "failures");
    for (side, mode, format, s) in &table {
        let py = table.iter().find(|(sd, m, _, _)| sd == "python" && m == mode).map(|r| &r.3);
        let (rt, rm) = match (side.as_str(), py) {
            ("layercheck", Some(p)) => (
                p.median_s().zip(s.median_s()).map(|(a, b)| a / b),
                p.peak_mib().zip(s.peak_mib()).map(|(a, b)| a / b),
            ),
            _ => (None, None),
        };
        println!(
            "{side:<11} {mode:<14} {format:<9} {:>9} {:>14} {:>11} {:>11} {:>9}",
            fmt(s.median_s(), 2),
            fmt(s.peak_mib(), 0),
            fmt(rt, 2),
            fmt(rm, 2),
            s.failures
        );
    }
    println!("(median of {runs} wall times, spawn to exit; peak RSS = max over runs of the child's ru_maxrss; target py/ours s >= 5)");
    for (side, mode, _, s) in &table {
        if side == "python" && !s.py_inner_walls.is_empty() {
            println!(
                "python {mode}: script-reported wall median {:.2} s; getrusage peak self {:.0} MiB, children {:.0} MiB \
                 (the child is `ldconfig -p`, forked by ctypes.util.find_library after torch is imported; \
                 a fork's ru_maxrss counts the parent's pages at fork, not more memory)",
                median(s.py_inner_walls.clone()),
                s.py_self_peaks.iter().cloned().fold(0.0, f64::max),
                s.py_children_peaks.iter().cloned().fold(0.0, f64::max)
            );
        }
    }
    for line in &name_checks {
        println!("file names, {line}");
    }
}
