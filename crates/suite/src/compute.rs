//! Computing a case in a `layercheck` process. The test processes of the suite do not link
//! libtorch, whose start-up alone costs about 0.4 s per process (its static initialisers), which
//! under nextest (a process per test) would cost more than the forward itself; they ask the
//! `layercheck` binary, once per case, and share its answer (see `case_cache.rs`).
//!
//! The protocol is two hidden subcommands:
//! - `layercheck suite-case --case CASE --out FILE [--stop-after KEY]` writes the case's
//!   [`CaseOutcome`] to FILE (and the case's report after a complete forward); it reads the same
//!   matrix and environment as the test process, from the same folder, plus the run's id
//!   (`LAYERCHECK_RUN_ID`, so that a golden file is regenerated once per update run);
//! - `layercheck suite-cuda` prints `true` or `false`: whether its libtorch sees a CUDA device.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::module_key::ModuleKey;
use crate::outcome::CaseOutcome;
use crate::test_name::CaseId;
use crate::update::{run_id, RUN_ID_VAR};

/// The variable through which nextest names the `layercheck` binary at run time (it differs from
/// the compile-time path when tests run from an archive).
const NEXTEST_BIN_VAR: &str = "NEXTEST_BIN_EXE_layercheck";

/// The `layercheck` binary that computes cases.
#[derive(Debug, Clone)]
pub struct Engine {
    bin: PathBuf,
    libtorch_has_cuda: bool,
}

impl Engine {
    /// The binary at `compiled_bin` (`env!("CARGO_BIN_EXE_layercheck")`) unless nextest names
    /// another; `libtorch_has_cuda`: whether the libtorch it links has CUDA at all (if not, no
    /// process is started to ask).
    pub fn new(compiled_bin: &str, libtorch_has_cuda: bool) -> Self {
        let bin = std::env::var_os(NEXTEST_BIN_VAR).filter(|v| !v.is_empty()).map_or_else(|| PathBuf::from(compiled_bin), PathBuf::from);
        Engine { bin, libtorch_has_cuda }
    }

    /// Computes `case` of the matrix read in `root`, stopping the target's forward after
    /// `stop_after` when given. Never fails: what goes wrong becomes the outcome's setup error.
    pub fn compute(&self, root: &Path, case: &CaseId, stop_after: Option<ModuleKey>) -> CaseOutcome {
        let name = case.to_string();
        let dir = match tempfile::tempdir() {
            Ok(d) => d,
            Err(e) => return CaseOutcome::failed(&name, format!("cannot make a temporary folder for the case's outcome: {e}")),
        };
        let out = dir.path().join("outcome.bin");
        let mut command = Command::new(&self.bin);
        command.arg("suite-case").arg("--case").arg(&name).arg("--out").arg(&out).current_dir(root).env(RUN_ID_VAR, run_id());
        if let Some(key) = stop_after {
            command.arg("--stop-after").arg(key.to_string());
        }
        let stderr = match self.run(&mut command, &name) {
            Ok(stderr) => stderr,
            Err(e) => return CaseOutcome::failed(&name, e),
        };
        // Warnings and where the report went: shown with the test's output.
        eprint!("{stderr}");
        CaseOutcome::read(&out).unwrap_or_else(|e| CaseOutcome::failed(&name, format!("{} wrote no readable outcome: {e}\n{stderr}", self.bin.display())))
    }

    /// Whether the `layercheck` binary's libtorch sees a CUDA device.
    pub fn cuda_available(&self, root: &Path) -> Result<bool, String> {
        if !self.libtorch_has_cuda {
            return Ok(false);
        }
        let output = Command::new(&self.bin).arg("suite-cuda").current_dir(root).stdin(Stdio::null()).output().map_err(|e| self.cannot_run(e))?;
        match String::from_utf8_lossy(&output.stdout).trim() {
            "true" => Ok(true),
            "false" => Ok(false),
            other => Err(format!("`{} suite-cuda` answered \"{other}\" ({})\n{}", self.bin.display(), output.status, String::from_utf8_lossy(&output.stderr))),
        }
    }

    /// Runs `command` with stdout shared and stderr captured; its stderr, or why it failed.
    fn run(&self, command: &mut Command, case: &str) -> Result<String, String> {
        let output = command.stdin(Stdio::null()).stdout(Stdio::inherit()).stderr(Stdio::piped()).output().map_err(|e| self.cannot_run(e))?;
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        if !output.status.success() {
            return Err(format!(
                "{bin} failed ({}) computing this case:\n{stderr}\n(hint: to run the computation alone: {bin} suite-case --case '{case}' --out /tmp/outcome.bin)",
                output.status,
                bin = self.bin.display(),
            ));
        }
        Ok(stderr)
    }

    fn cannot_run(&self, e: std::io::Error) -> String {
        format!("cannot run the layercheck binary {}: {e}\n(hint: `cargo build` makes it; `cargo test` and `cargo nextest run` build it before the tests)", self.bin.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_name::TestName;

    /// These tests write scripts and run them: one at a time, so that no test forks while another
    /// still has its script open for writing (which makes exec fail with "text file busy").
    static SCRIPTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn case() -> CaseId {
        "m::cpu-f16::fwd::b1::s8::summary".parse::<TestName>().unwrap().case
    }

    #[test]
    fn a_missing_binary_fails_the_case_naming_it() {
        let _one = SCRIPTS.lock().unwrap_or_else(|e| e.into_inner());
        let engine = Engine { bin: "/nonexistent/layercheck".into(), libtorch_has_cuda: true };
        let outcome = engine.compute(Path::new("."), &case(), None);
        let e = outcome.setup_error.unwrap();
        assert!(e.contains("cannot run the layercheck binary /nonexistent/layercheck") && e.contains("hint"), "{e}");
        assert!(engine.cuda_available(Path::new(".")).unwrap_err().contains("/nonexistent/layercheck"));
    }

    #[test]
    fn a_failing_or_silent_binary_fails_the_case_with_its_stderr() {
        let _one = SCRIPTS.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let script = |name: &str, body: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
            path
        };
        let crash = Engine { bin: script("crash", "echo 'libtorch: out of memory' >&2; kill -SEGV $$"), libtorch_has_cuda: false };
        let e = crash.compute(dir.path(), &case(), None).setup_error.unwrap();
        assert!(e.contains("libtorch: out of memory") && e.contains("SIGSEGV") && e.contains("suite-case --case 'm::cpu-f16::fwd::b1::s8'"), "{e}");
        let silent = Engine { bin: script("silent", "exit 0"), libtorch_has_cuda: false };
        let e = silent.compute(dir.path(), &case(), None).setup_error.unwrap();
        assert!(e.contains("wrote no readable outcome") && e.contains("outcome.bin"), "{e}");
    }

    #[test]
    fn the_request_names_the_case_and_the_stop_and_the_answer_is_read_back() {
        let _one = SCRIPTS.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        // A stand-in engine that records its arguments and answers with a fixed outcome.
        let answer = dir.path().join("answer.bin");
        CaseOutcome::failed("m::cpu-f16::fwd::b1::s8", "answered".into()).write(&answer).unwrap();
        let path = dir.path().join("engine");
        let body = format!("#!/bin/sh\necho \"$@\" > {args}\nwhile [ \"$1\" != --out ]; do shift; done\ncp {answer} \"$2\"\n", args = dir.path().join("args").display(), answer = answer.display());
        std::fs::write(&path, body).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let engine = Engine { bin: path, libtorch_has_cuda: false };
        let stop = "model.base_model.layers1.ln".parse().unwrap();
        let outcome = engine.compute(dir.path(), &case(), Some(stop));
        assert_eq!(outcome.setup_error.as_deref(), Some("answered"));
        let args = std::fs::read_to_string(dir.path().join("args")).unwrap();
        assert!(args.starts_with("suite-case --case m::cpu-f16::fwd::b1::s8 --out ") && args.trim_end().ends_with("--stop-after model.base_model.layers1.ln"), "{args}");
        // A libtorch without CUDA is not asked.
        assert_eq!(engine.cuda_available(dir.path()), Ok(false));
    }
}
