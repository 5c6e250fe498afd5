//! The `command` runner: an external program answers a request with a capture file.
//!
//! layercheck makes a private temporary folder, writes `request.json` there, runs the command
//! with `{request}` and `{out}` (and `{root}`, `{python}`, `{layercheck}`) replaced in its arguments, and reads
//! `capture.safetensors` back only if the command exited 0 within its time. The command runs in a
//! process group of its own, so that a timeout kills it and everything it started; its stdout and
//! stderr go to files in the folder (no pipe can fill up and hang it), and the folder is removed
//! whatever happens. A command that fails, is killed or runs past its time fails the case with
//! the command line and the last lines of its stderr.

use std::fs::File;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::request::Request;
use crate::capture::{Capture, CaptureError};

/// The variable `{python}` stands for.
pub const PYTHON_VAR: &str = "LAYERCHECK_PYTHON";

/// Lines of the command's stderr shown when it fails.
const STDERR_TAIL_LINES: usize = 25;

/// How often a running command is polled.
const POLL: Duration = Duration::from_millis(2);

/// An external command and its time limit.
#[derive(Debug, Clone)]
pub struct CommandRunner {
    /// The program and its arguments, with placeholders.
    pub argv: Vec<String>,
    pub timeout: Duration,
    /// The repository root (`{root}`, and the command's working folder).
    pub root: PathBuf,
}

/// Why a command gave no capture.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("the command's temporary folder or request could not be written: {0}")]
    Setup(String),
    #[error("{arg}: {problem}")]
    Placeholder { arg: String, problem: String },
    #[error("could not start `{command}`: {source}\n(hint: is the program installed and on PATH?)")]
    Spawn { command: String, source: std::io::Error },
    #[error("`{command}` {how}; the last lines of its stderr:\n{stderr}")]
    Failed { command: String, how: String, stderr: String },
    #[error("`{command}` exited 0 but wrote no capture to {{out}} ({out})\n(hint: the command must write a layercheck-capture/1 file to the path given for {{out}})\nits stderr ended with:\n{stderr}")]
    NoCapture { command: String, out: PathBuf, stderr: String },
    #[error("`{command}` wrote a capture that cannot be read: {source}")]
    BadCapture { command: String, source: CaptureError },
}

impl CommandRunner {
    /// Runs the command on `request`; returns the capture it wrote.
    pub fn run(&self, request: &Request) -> Result<Capture, CommandError> {
        let dir = tempfile::Builder::new().prefix("layercheck-run-").tempdir().map_err(|e| CommandError::Setup(e.to_string()))?;
        let request_path = dir.path().join("request.json");
        let out = dir.path().join("capture.safetensors");
        request.write(&request_path).map_err(|e| CommandError::Setup(e.to_string()))?;
        let argv = self.expand(&request_path, &out)?;
        let command = shell_words(&argv);
        let stdout = File::create(dir.path().join("stdout")).map_err(|e| CommandError::Setup(e.to_string()))?;
        let stderr_path = dir.path().join("stderr");
        let stderr = File::create(&stderr_path).map_err(|e| CommandError::Setup(e.to_string()))?;
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .current_dir(&self.root)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0)
            .spawn()
            .map_err(|source| CommandError::Spawn { command: command.clone(), source })?;
        let started = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Ok(status),
                Ok(None) if started.elapsed() >= self.timeout => {
                    kill_group(child.id());
                    let _ = child.wait();
                    break Err(format!("ran past its timeout_s of {} s and was killed", self.timeout.as_secs()));
                }
                Ok(None) => std::thread::sleep(POLL),
                Err(e) => {
                    kill_group(child.id());
                    let _ = child.wait();
                    break Err(format!("could not be waited for ({e})"));
                }
            }
        };
        // Whatever the command left running in its group goes with it.
        kill_group(child.id());
        let tail = stderr_tail(&stderr_path);
        let failed = |how: String| CommandError::Failed { command: command.clone(), how, stderr: tail.clone() };
        let status = status.map_err(failed)?;
        if !status.success() {
            return Err(failed(describe(status)));
        }
        if !out.is_file() {
            return Err(CommandError::NoCapture { command, out, stderr: tail });
        }
        Capture::read(&out).map_err(|source| CommandError::BadCapture { command, source })
    }

    /// The arguments with their placeholders replaced.
    fn expand(&self, request: &Path, out: &Path) -> Result<Vec<String>, CommandError> {
        let python = std::env::var(PYTHON_VAR).ok().filter(|p| !p.is_empty());
        self.argv
            .iter()
            .map(|arg| {
                let mut s = arg.clone();
                if s.contains("{python}") {
                    let p = python.as_deref().ok_or_else(|| CommandError::Placeholder {
                        arg: arg.clone(),
                        problem: format!("{{python}} needs the environment variable {PYTHON_VAR} (hint: {PYTHON_VAR}=$(scripts/setup-python))"),
                    })?;
                    s = s.replace("{python}", p);
                }
                if s.contains("{layercheck}") {
                    let me = std::env::current_exe().map_err(|e| CommandError::Placeholder { arg: arg.clone(), problem: format!("{{layercheck}}: the running binary's path is unknown ({e})") })?;
                    s = s.replace("{layercheck}", &me.display().to_string());
                }
                Ok(s.replace("{request}", &request.display().to_string()).replace("{out}", &out.display().to_string()).replace("{root}", &self.root.display().to_string()))
            })
            .collect()
    }
}

fn kill_group(pid: u32) {
    // SAFETY: kill(2) with a negative pid signals the process group the child leads; a group
    // that is gone already makes it fail with ESRCH, which is ignored.
    unsafe {
        libc::kill(-(pid as i32), libc::SIGKILL);
    }
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        _ => format!("ended with {status}"),
    }
}

fn stderr_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = &lines[lines.len().saturating_sub(STDERR_TAIL_LINES)..];
    if tail.is_empty() {
        "(nothing)".into()
    } else {
        tail.join("\n")
    }
}

/// The command line as a person would type it.
pub(crate) fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|a| if !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:{}@,+".contains(c)) { a.clone() } else { format!("'{}'", a.replace('\'', "'\\''")) })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_shown_as_typed() {
        let argv: Vec<String> = ["python3", "-m", "x", "a b", "it's"].iter().map(|s| s.to_string()).collect();
        assert_eq!(shell_words(&argv), "python3 -m x 'a b' 'it'\\''s'");
    }
}
