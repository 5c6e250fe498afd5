//! Peak memory of one SmolLM2 case's computation (what `cargo test --test layers` has a
//! `layercheck suite-case` process do for each case) against the bound
//! `weights in the target's dtype + libtorch's own baseline + 3 x the largest module output`,
//! as a ratio (goal: <= 1.2). Peak RSS is the kernel's (`wait4`'s `ru_maxrss`) of the child
//! process; the baseline is that of `layercheck env`, which loads libtorch and runs nothing.
//!
//! Opt-in: needs models/smollm2-135m-instruct (`python scripts/reference/convert_smollm2.py`).
//! `cargo bench --bench memory` (the golden files are made first, outside the measurement).

use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "common/smollm2_suite.rs"]
mod smollm2_suite;

use smollm2_suite::{smollm2, Suite};

/// Peak resident set of `cmd` run to completion, in bytes, and whether it succeeded.
#[allow(clippy::zombie_processes)] // waited for with wait4, which also gives its rusage
fn peak_rss(mut cmd: Command) -> (u64, bool) {
    let child = cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped()).spawn().expect("spawns");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` and `status` are valid for writes; `pid` is our child, not yet waited for.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "wait4: {}", std::io::Error::last_os_error());
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    if !ok {
        let mut err = String::new();
        if let Some(mut e) = child.stderr {
            use std::io::Read;
            let _ = e.read_to_string(&mut err);
        }
        eprintln!("{err}");
    }
    // ru_maxrss is in KiB on Linux.
    (usage.ru_maxrss as u64 * 1024, ok)
}

/// The bytes of a safetensors file's largest tensor and the element count of all its tensors,
/// from its header alone: the bench itself must stay small, since a child forked from it starts
/// with its resident set as the high-water mark that `ru_maxrss` reports.
fn tensor_sizes(path: &Path) -> (u64, u64) {
    let reader = layercheck::tensor_reader::TensorReader::open(path).unwrap_or_else(|e| panic!("{e}"));
    let (mut largest, mut numel) = (0u64, 0u64);
    for name in reader.names() {
        let (kind, shape) = reader.info(name).expect("a listed name");
        let n = shape.iter().product::<i64>() as u64;
        largest = largest.max(n * kind.elt_size_in_bytes() as u64);
        numel += n;
    }
    (largest, numel)
}

/// The weight files of an HF folder.
fn weight_files(model: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(model).expect("model folder").flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "safetensors")).collect();
    files.sort();
    files
}

/// This process's resident set and its high-water mark, from /proc.
fn own_rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok()).unwrap_or(0) * 1024;
    (field("VmRSS:"), field("VmHWM:"))
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    // LAYERCHECK_BIN measures another build (e.g. an older commit's, for a before/after ratio).
    let layercheck = std::env::var_os("LAYERCHECK_BIN").map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_layercheck")), PathBuf::from);
    let model = match smollm2(&root, "memory bench") {
        Ok(m) => m,
        Err(line) => return println!("{line}"),
    };
    let suite = Suite::new(&root, &model, &layercheck);
    let mut env = Command::new(&layercheck);
    env.arg("env");
    let (baseline, ok) = peak_rss(env);
    assert!(ok, "layercheck env failed");
    // The weights as the cpu-f16 target holds them: two bytes per parameter.
    let params: u64 = weight_files(&model).iter().map(|f| tensor_sizes(f).1).sum();
    let weights = params * 2;
    let (rss, hwm) = own_rss();
    println!("memory: this bench's own resident set {:.0} MiB, high-water {:.0} MiB (a floor under every child's figure)", mib(rss), mib(hwm));
    println!("memory: libtorch baseline (layercheck env) {:.0} MiB; weights at f16 {:.0} MiB ({params} parameters)", mib(baseline), mib(weights));
    println!("{:<34} {:>9} {:>9} {:>9} {:>6}", "case", "peak MiB", "3x out", "bound", "ratio");
    let mut worst: f64 = 0.0;
    for name in ["smollm2::cpu-f16::fwd::b1::s64", "smollm2::cpu-f16::fwd::b4::s256", "smollm2::cpu-f16::gen::b1::s64::n8", "smollm2::cpu-f16::gen::b4::s256::n8"] {
        let case = Suite::case(name);
        let golden = suite.make_golden(&case);
        // Module outputs at the target's dtype: half the golden's float32 bytes.
        let largest_output = tensor_sizes(&golden).0 / 2;
        let (peak, ok) = peak_rss(suite.case_command(&case, false));
        assert!(ok, "{case} failed");
        let bound = weights + baseline + 3 * largest_output;
        let ratio = peak as f64 / bound as f64;
        worst = worst.max(ratio);
        println!("{:<34} {:>9.0} {:>9.0} {:>9.0} {:>6.2}", case.to_string(), mib(peak), mib(3 * largest_output), mib(bound), ratio);
    }
    println!("memory: worst peak/bound {worst:.2} (goal <= 1.2)");
}
