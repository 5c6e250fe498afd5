//! The test matrix: `layercheck.toml` at the repository root, plus environment overrides in the
//! spirit of the seed's `FMS_TEST_SHAPES_*` variables. It expands to the list of cases; listing it
//! touches no weights and no golden files.
//!
//! Overrides (comma-separated lists, replacing the file's `[matrix]` entry):
//! `LAYERCHECK_MODELS`, `LAYERCHECK_TARGETS`, `LAYERCHECK_MODES`, `LAYERCHECK_FEEDS`,
//! `LAYERCHECK_BATCH_SIZES`, `LAYERCHECK_SEQ_LENGTHS`, `LAYERCHECK_MAX_NEW_TOKENS`;
//! `LAYERCHECK_MATRIX` names another matrix file. `LAYERCHECK_SHARD=k/n` then keeps one shard of
//! the cases (each case whole) for listing: see `shard.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::mode::Mode;
use crate::module_key::ModuleKey;
use crate::target::{DeviceKind, Target};
use crate::test_name::{is_segment, CaseId, Feed};

/// The default matrix file, relative to the repository root.
pub const MATRIX_FILE: &str = "layercheck.toml";

/// Why the matrix could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MatrixError {
    #[error("{path}: {source}\n(hint: the test matrix is {MATRIX_FILE} at the repository root, or the file LAYERCHECK_MATRIX names)")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {problem}\n(hint: see the comments at the top of {MATRIX_FILE})")]
    Invalid { path: PathBuf, problem: String },
    #[error("environment variable {var}={value}: {problem}\n(hint: give a comma list that replaces the matrix file's entry, or unset {var} to use the file's)")]
    Env { var: &'static str, value: String, problem: String },
}

/// One model the suite knows.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    /// HF model folder, relative to the repository root.
    pub path: PathBuf,
    /// Prompts (one per line, or a JSON list) from which each case takes its first B that fit S.
    pub prompts: PathBuf,
    /// Threshold JSON (the Python tools' schema, with layercheck's per-shape extension).
    pub thresholds: PathBuf,
    /// Also keep every module's input in the golden files (needed by isolated feeding).
    #[serde(default)]
    pub golden_inputs: bool,
    /// Where the CPU float32 reference comes from; default: the matrix's `reference`, else golden.
    #[serde(default)]
    pub reference: Option<ReferenceKind>,
}

/// Where a case's CPU float32 reference comes from: `reference = "golden"` (the default),
/// `"live"`, or `{ command = [...], timeout_s = N }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "toml::Value")]
pub enum ReferenceKind {
    /// A golden file under `golden_dir`, made once (`LAYERCHECK_UPDATE_GOLDEN=1`) and reviewed.
    Golden,
    /// Run in the same case computation, every time (the seed's way): no golden file, for models
    /// whose golden files would be too large to keep.
    Live,
    /// A golden file, as [`ReferenceKind::Golden`], but made by an external program answering a
    /// request (`layercheck-request/1`) at float32 on CPU: for a model layercheck has no Rust
    /// decoder for, whose reference fms makes through the Python bridge. Verified runs read the
    /// golden file and run no command.
    Command { argv: Vec<String>, timeout_s: u64 },
}

impl ReferenceKind {
    /// What the matrix file spells.
    const EXPECTED: &'static str = "expected \"golden\", \"live\" or { command = [\"program\", \"--out\", \"{out}\", ...], timeout_s = SECONDS }";
}

impl TryFrom<toml::Value> for ReferenceKind {
    type Error = String;

    fn try_from(value: toml::Value) -> Result<Self, String> {
        match value {
            toml::Value::String(s) => match s.as_str() {
                "golden" => Ok(ReferenceKind::Golden),
                "live" => Ok(ReferenceKind::Live),
                other => Err(format!("reference \"{other}\": {}", Self::EXPECTED)),
            },
            toml::Value::Table(table) => {
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct CommandReference {
                    command: Vec<String>,
                    #[serde(default)]
                    timeout_s: Option<u64>,
                }
                let parsed: CommandReference = toml::Value::Table(table).try_into().map_err(|e: toml::de::Error| format!("reference: {}; {}", e.message().trim(), Self::EXPECTED))?;
                check_command(&parsed.command).map_err(|p| format!("reference.command {p}"))?;
                let timeout_s = parsed.timeout_s.unwrap_or(DEFAULT_TIMEOUT_S);
                if timeout_s == 0 {
                    return Err("reference.timeout_s must be at least 1 (seconds)".into());
                }
                Ok(ReferenceKind::Command { argv: parsed.command, timeout_s })
            }
            other => Err(format!("reference is a {}: {}", other.type_str(), Self::EXPECTED)),
        }
    }
}

/// A target that injects a deterministic fault: `base` with `module`'s output perturbed by
/// `amplitude` times its RMS, in a fixed sinusoidal pattern.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FaultEntry {
    pub base: String,
    pub module: String,
    pub amplitude: f64,
}

/// An external target, `[targets.NAME]`: either `command` (a program that answers a request file
/// with a capture file, see the main crate's `runner::command`) with `timeout_s`, or `captures`
/// (a folder of pre-recorded capture files in the golden layout).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExternalEntry {
    #[serde(default)]
    pub command: Option<Vec<String>>,
    #[serde(default)]
    pub timeout_s: Option<u64>,
    #[serde(default)]
    pub captures: Option<PathBuf>,
}

/// A command target's time limit when `timeout_s` is not given.
pub const DEFAULT_TIMEOUT_S: u64 = 1800;

/// The placeholders a command may use: the request file, the capture to write, the repository
/// root, `$LAYERCHECK_PYTHON`, and the `layercheck` binary that runs the command.
pub const PLACEHOLDERS: [&str; 5] = ["{request}", "{out}", "{root}", "{python}", "{layercheck}"];

/// How observed metrics may exceed a threshold before a layer fails (deepview: rtol 0.05, atol 1e-6).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Margins {
    pub rtol: f64,
    pub atol: f64,
}

impl Default for Margins {
    fn default() -> Self {
        Margins { rtol: 0.05, atol: 1e-6 }
    }
}

/// The `[matrix]` table: the axes whose product is the list of cases.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Axes {
    pub models: Vec<String>,
    pub targets: Vec<String>,
    #[serde(default = "default_modes")]
    pub modes: Vec<String>,
    #[serde(default = "default_feeds")]
    pub feeds: Vec<String>,
    pub batch_sizes: Vec<usize>,
    pub seq_lengths: Vec<usize>,
    #[serde(default)]
    pub max_new_tokens: Vec<usize>,
}

fn default_modes() -> Vec<String> {
    vec!["model-forward".into()]
}

fn default_feeds() -> Vec<String> {
    vec!["cumulative".into()]
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct MatrixFile {
    #[serde(default = "default_golden_dir")]
    golden_dir: PathBuf,
    #[serde(default)]
    manifest_dir: Option<PathBuf>,
    #[serde(default)]
    margins: Margins,
    #[serde(default)]
    reference: Option<ReferenceKind>,
    models: BTreeMap<String, ModelEntry>,
    #[serde(default)]
    faults: BTreeMap<String, FaultEntry>,
    #[serde(default)]
    targets: BTreeMap<String, ExternalEntry>,
    matrix: Axes,
}

fn default_golden_dir() -> PathBuf {
    "golden".into()
}

/// The variable that puts the golden files elsewhere than the matrix's `golden_dir` (a shared
/// mount, a CI cache), for one run.
pub const GOLDEN_DIR_VAR: &str = "LAYERCHECK_GOLDEN_DIR";

/// The golden folder: `LAYERCHECK_GOLDEN_DIR` when set, else the matrix's `golden_dir`, relative
/// to `root` unless absolute. It need not exist yet (a first update run makes it), but what exists
/// there must be a folder.
fn golden_dir(root: &Path, file: &Path, configured: &Path, env: &impl Fn(&str) -> Option<String>) -> Result<PathBuf, MatrixError> {
    let (dir, what) = match env(GOLDEN_DIR_VAR) {
        Some(v) if v.trim().is_empty() => {
            return Err(MatrixError::Invalid { path: file.to_path_buf(), problem: format!("{GOLDEN_DIR_VAR} is set but empty (unset it to use golden_dir, or name a folder)") });
        }
        Some(v) => (root.join(v), GOLDEN_DIR_VAR.to_string()),
        None => (root.join(configured), "golden_dir".to_string()),
    };
    if dir.exists() && !dir.is_dir() {
        return Err(MatrixError::Invalid { path: file.to_path_buf(), problem: format!("{what} {} is not a folder (hint: golden files live in a folder, one subfolder per model)", dir.display()) });
    }
    Ok(dir)
}

/// How a case's target runs.
#[derive(Debug, Clone, PartialEq)]
pub enum TargetSpec {
    Plain(Target),
    Fault { base: Target, module: ModuleKey, amplitude: f64 },
    /// An external program (arguments with placeholders) and its time limit in seconds.
    Command { argv: Vec<String>, timeout_s: u64 },
    /// Pre-recorded captures under this folder (absolute).
    Captures { dir: PathBuf },
}

impl TargetSpec {
    /// Where layercheck's own libtorch runs the target: external targets run as programs or
    /// files, on the CPU side of this machine as far as layercheck is concerned.
    pub fn device(&self) -> DeviceKind {
        match self {
            TargetSpec::Plain(t) | TargetSpec::Fault { base: t, .. } => t.device,
            TargetSpec::Command { .. } | TargetSpec::Captures { .. } => DeviceKind::Cpu,
        }
    }
}

/// Checks a command as written in the matrix: a program, `{out}`, no unknown `{...}`.
pub fn check_command(argv: &[String]) -> Result<(), String> {
    if argv.first().is_none_or(|p| p.is_empty()) {
        return Err("is empty; it needs a program and its arguments".into());
    }
    if !argv.iter().any(|a| a.contains("{out}")) {
        return Err("never names {out}, the path the capture must be written to".into());
    }
    for arg in argv {
        let mut rest = arg.as_str();
        while let Some(i) = rest.find('{') {
            let tail = &rest[i..];
            let end = tail.find('}').map_or(tail.len(), |j| j + 1);
            let word = &tail[..end];
            if !PLACEHOLDERS.contains(&word) {
                return Err(format!("argument \"{arg}\" has an unknown placeholder {word} (known: {})", PLACEHOLDERS.join(", ")));
            }
            rest = &tail[end..];
        }
    }
    Ok(())
}

/// The resolved suite: settings and every case, in a stable order.
#[derive(Debug, Clone)]
pub struct Matrix {
    /// The repository root all paths are relative to.
    pub root: PathBuf,
    /// Where golden files are read and written (`golden_dir`, or `LAYERCHECK_GOLDEN_DIR`).
    pub golden_dir: PathBuf,
    /// The reviewed manifests of the golden files (`manifest_dir`, e.g. `golden/manifests`), set
    /// when the golden files live outside git: each golden file is then checked against the
    /// `tensors_sha256` its manifest records.
    pub manifest_dir: Option<PathBuf>,
    pub margins: Margins,
    pub models: BTreeMap<String, ModelEntry>,
    pub targets: BTreeMap<String, TargetSpec>,
    pub cases: Vec<CaseId>,
    /// The matrix-wide `reference` (models may set their own).
    pub reference: Option<ReferenceKind>,
}

impl Matrix {
    /// Reads the matrix of the repository at `root`, applying the environment's overrides.
    pub fn from_env(root: &Path) -> Result<Self, MatrixError> {
        let file = std::env::var_os("LAYERCHECK_MATRIX").map(PathBuf::from).unwrap_or_else(|| root.join(MATRIX_FILE));
        let text = std::fs::read_to_string(&file).map_err(|source| MatrixError::Io { path: file.clone(), source })?;
        Self::parse(root, &file, &text, |var| std::env::var(var).ok())
    }

    /// Parses matrix text; `env` looks up override variables.
    pub fn parse(root: &Path, file: &Path, text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Self, MatrixError> {
        let invalid = |problem: String| MatrixError::Invalid { path: file.to_path_buf(), problem };
        let parsed: MatrixFile = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let mut axes = parsed.matrix.clone();
        override_list(&env, "LAYERCHECK_MODELS", &mut axes.models, |s| Ok(s.to_string()))?;
        override_list(&env, "LAYERCHECK_TARGETS", &mut axes.targets, |s| Ok(s.to_string()))?;
        override_list(&env, "LAYERCHECK_MODES", &mut axes.modes, |s| Ok(s.to_string()))?;
        override_list(&env, "LAYERCHECK_FEEDS", &mut axes.feeds, |s| Ok(s.to_string()))?;
        override_list(&env, "LAYERCHECK_BATCH_SIZES", &mut axes.batch_sizes, parse_positive)?;
        override_list(&env, "LAYERCHECK_SEQ_LENGTHS", &mut axes.seq_lengths, parse_positive)?;
        override_list(&env, "LAYERCHECK_MAX_NEW_TOKENS", &mut axes.max_new_tokens, parse_positive)?;

        validate(&parsed, &axes).map_err(invalid)?;
        for name in parsed.models.keys() {
            if !is_segment(name) {
                return Err(invalid(format!("model name \"{name}\" must be made of [a-z0-9._-]")));
            }
        }
        let mut targets = BTreeMap::new();
        for (name, fault) in &parsed.faults {
            if !is_segment(name) || name.parse::<Target>().is_ok() {
                return Err(invalid(format!("fault target name \"{name}\" must be made of [a-z0-9._-] and differ from the plain targets")));
            }
            let base = fault.base.parse::<Target>().map_err(|e| invalid(format!("faults.{name}.base: {e}")))?;
            let module = fault.module.parse::<ModuleKey>().map_err(|e| invalid(format!("faults.{name}.module: {e}")))?;
            targets.insert(name.clone(), TargetSpec::Fault { base, module, amplitude: fault.amplitude });
        }
        for (name, entry) in &parsed.targets {
            if !is_segment(name) || name.parse::<Target>().is_ok() || parsed.faults.contains_key(name) {
                return Err(invalid(format!("target name \"{name}\" must be made of [a-z0-9._-] and differ from the plain targets and the faults")));
            }
            let spec = match (&entry.command, &entry.captures) {
                (Some(argv), None) => {
                    check_command(argv).map_err(|p| invalid(format!("targets.{name}.command {p}")))?;
                    let timeout_s = entry.timeout_s.unwrap_or(DEFAULT_TIMEOUT_S);
                    if timeout_s == 0 {
                        return Err(invalid(format!("targets.{name}.timeout_s must be at least 1 (seconds)")));
                    }
                    TargetSpec::Command { argv: argv.clone(), timeout_s }
                }
                (None, Some(dir)) if entry.timeout_s.is_none() => TargetSpec::Captures { dir: root.join(dir) },
                (None, Some(_)) => return Err(invalid(format!("targets.{name}.timeout_s applies to a command; a captures target reads files"))),
                _ => return Err(invalid(format!("targets.{name} needs exactly one of command = [...] or captures = \"DIR\""))),
            };
            targets.insert(name.clone(), spec);
        }
        for t in Target::ALL {
            targets.insert(t.to_string(), TargetSpec::Plain(t));
        }
        for m in &axes.models {
            if !parsed.models.contains_key(m) {
                let known: Vec<&String> = parsed.models.keys().collect();
                return Err(invalid(format!("matrix model \"{m}\" has no [models.{m}] entry (known: {known:?})")));
            }
        }
        for t in &axes.targets {
            if !targets.contains_key(t) {
                return Err(invalid(format!("matrix target \"{t}\" is neither a plain target (cpu-f32, cpu-f16, cpu-bf16, cuda-f16, cuda-bf16) nor a [faults.{t}] or [targets.{t}] entry")));
            }
        }
        let modes: Vec<Mode> = axes.modes.iter().map(|m| m.parse::<Mode>().map_err(invalid)).collect::<Result<_, _>>()?;
        let feeds: Vec<Feed> = axes
            .feeds
            .iter()
            .map(|f| match f.as_str() {
                "cumulative" => Ok(Feed::Cumulative),
                "isolated" => Ok(Feed::Isolated),
                other => Err(invalid(format!("unknown feed \"{other}\" (expected cumulative or isolated)"))),
            })
            .collect::<Result<_, _>>()?;
        if modes.contains(&Mode::Generate) && axes.max_new_tokens.is_empty() {
            return Err(invalid("generate mode needs max_new_tokens".into()));
        }
        let mut cases = Vec::new();
        for model in &axes.models {
            for target in &axes.targets {
                for &mode in &modes {
                    for &feed in &feeds {
                        for &batch_size in &axes.batch_sizes {
                            for &seq_len in &axes.seq_lengths {
                                let news: Vec<Option<usize>> = match mode {
                                    Mode::ModelForward => vec![None],
                                    Mode::Generate => axes.max_new_tokens.iter().map(|&n| Some(n)).collect(),
                                };
                                for max_new_tokens in news {
                                    cases.push(CaseId { model: model.clone(), target: target.clone(), mode, feed, batch_size, seq_len, max_new_tokens });
                                }
                            }
                        }
                    }
                }
            }
        }
        let golden_dir = golden_dir(root, file, &parsed.golden_dir, &env)?;
        Ok(Matrix { root: root.to_path_buf(), golden_dir, manifest_dir: parsed.manifest_dir.as_ref().map(|d| root.join(d)), margins: parsed.margins, models: parsed.models, targets, cases, reference: parsed.reference })
    }

    /// The model entry of a case.
    pub fn model(&self, case: &CaseId) -> &ModelEntry {
        &self.models[&case.model]
    }

    /// Where a case's reference comes from: its model's `reference`, else the matrix's, else golden.
    pub fn reference(&self, case: &CaseId) -> &ReferenceKind {
        self.model(case).reference.as_ref().or(self.reference.as_ref()).unwrap_or(&ReferenceKind::Golden)
    }

    /// The target of a case.
    pub fn target(&self, case: &CaseId) -> &TargetSpec {
        &self.targets[&case.target]
    }

    /// A path of the matrix file, made absolute against the root.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        self.root.join(path)
    }
}

/// Values the file's syntax allows but that cannot be meant: an empty axis (no case would run,
/// and the suite would say "0 tests ok"), a repeated entry (the same test twice), a zero size or
/// token count, margins that are NaN, infinite or negative, a fault amplitude that is not a
/// positive number (a zero fault proves nothing).
fn validate(file: &MatrixFile, axes: &Axes) -> Result<(), String> {
    fn axis<T: PartialEq + std::fmt::Debug>(name: &str, values: &[T], required: bool) -> Result<(), String> {
        if required && values.is_empty() {
            return Err(format!("[matrix] {name} is empty, so the suite would run no test; list at least one"));
        }
        if let Some((i, v)) = values.iter().enumerate().find(|(i, v)| values[..*i].contains(v)) {
            return Err(format!("[matrix] {name} lists {v:?} twice (entry {i}); each test would run twice"));
        }
        Ok(())
    }
    axis("models", &axes.models, true)?;
    axis("targets", &axes.targets, true)?;
    axis("modes", &axes.modes, true)?;
    axis("feeds", &axes.feeds, true)?;
    axis("batch_sizes", &axes.batch_sizes, true)?;
    axis("seq_lengths", &axes.seq_lengths, true)?;
    axis("max_new_tokens", &axes.max_new_tokens, false)?;
    for (name, values) in [("batch_sizes", &axes.batch_sizes), ("seq_lengths", &axes.seq_lengths), ("max_new_tokens", &axes.max_new_tokens)] {
        if values.contains(&0) {
            return Err(format!("[matrix] {name} holds 0; sizes and token counts are positive"));
        }
    }
    for (name, v) in [("rtol", file.margins.rtol), ("atol", file.margins.atol)] {
        if !v.is_finite() || v < 0.0 {
            return Err(format!("margins.{name} is {v}; a margin is a finite number at least 0 (deepview's: rtol 0.05, atol 1e-6)"));
        }
    }
    for (name, fault) in &file.faults {
        if !fault.amplitude.is_finite() || fault.amplitude <= 0.0 {
            return Err(format!("faults.{name}.amplitude is {}; it must be a positive finite number (a zero fault changes nothing)", fault.amplitude));
        }
    }
    Ok(())
}

fn parse_positive(s: &str) -> Result<usize, String> {
    s.parse::<usize>().ok().filter(|&n| n > 0).ok_or_else(|| format!("\"{s}\" is not a positive integer"))
}

fn override_list<T>(env: &impl Fn(&str) -> Option<String>, var: &'static str, into: &mut Vec<T>, parse: impl Fn(&str) -> Result<T, String>) -> Result<(), MatrixError> {
    let Some(value) = env(var) else { return Ok(()) };
    let items: Vec<&str> = value.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    if items.is_empty() {
        return Err(MatrixError::Env { var, value, problem: "is empty; unset it to use the matrix file".into() });
    }
    *into = items.into_iter().map(|s| parse(s).map_err(|problem| MatrixError::Env { var, value: value.clone(), problem })).collect::<Result<_, _>>()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"
        [models.tiny]
        path = "models/tiny"
        prompts = "p.txt"
        thresholds = "t.json"
        [faults.fault-dense]
        base = "cpu-f32"
        module = "model.base_model.layers1.attn.dense"
        amplitude = 0.5
        [matrix]
        models = ["tiny"]
        targets = ["cpu-f16", "fault-dense"]
        batch_sizes = [1, 2]
        seq_lengths = [16]
    "#;

    fn parse(env: &[(&str, &str)]) -> Result<Matrix, MatrixError> {
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Matrix::parse(Path::new("/repo"), Path::new("/repo/layercheck.toml"), TEXT, |k| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
    }

    /// `reference` is "golden", "live" or a checked command table, per model or for the matrix;
    /// anything else names the setting and what it may be.
    #[test]
    fn a_reference_is_golden_live_or_a_command() {
        let with = |setting: &str| Matrix::parse(Path::new("/r"), Path::new("/r/m.toml"), &TEXT.replace("thresholds = \"t.json\"", &format!("thresholds = \"t.json\"\nreference = {setting}")), |_| None);
        let case = |m: &Matrix| m.cases[0].clone();
        let m = parse(&[]).unwrap();
        assert_eq!(m.reference(&case(&m)), &ReferenceKind::Golden);
        let m = with("\"live\"").unwrap();
        assert_eq!(m.reference(&case(&m)), &ReferenceKind::Live);
        let m = with(r#"{ command = ["python3", "-m", "layercheck_fms", "--dtype", "float32", "--request", "{request}", "--out", "{out}"], timeout_s = 60 }"#).unwrap();
        assert!(matches!(m.reference(&case(&m)), ReferenceKind::Command { argv, timeout_s: 60 } if argv[0] == "python3" && argv.len() == 9));
        let m = with(r#"{ command = ["x", "{out}"] }"#).unwrap();
        assert!(matches!(m.reference(&case(&m)), ReferenceKind::Command { timeout_s: DEFAULT_TIMEOUT_S, .. }));
        for (setting, expected) in [
            ("\"sometimes\"", "reference \"sometimes\": expected \"golden\", \"live\" or { command"),
            ("3", "reference is a integer: expected"),
            (r#"{ command = ["x"] }"#, "reference.command never names {out}"),
            (r#"{ command = ["x", "{out}", "{where}"] }"#, "unknown placeholder {where}"),
            (r#"{ command = ["x", "{out}"], timeout_s = 0 }"#, "reference.timeout_s must be at least 1"),
            (r#"{ command = ["x", "{out}"], timeout = 5 }"#, "unknown field `timeout`"),
            (r#"{ timeout_s = 5 }"#, "missing field `command`"),
        ] {
            let err = with(setting).unwrap_err().to_string();
            assert!(err.contains(expected) && err.contains("/r/m.toml"), "{setting}: {err}");
        }
    }

    #[test]
    fn expands_the_product_of_axes() {
        let m = parse(&[]).unwrap();
        let names: Vec<String> = m.cases.iter().map(|c| c.to_string()).collect();
        assert_eq!(names, ["tiny::cpu-f16::fwd::b1::s16", "tiny::cpu-f16::fwd::b2::s16", "tiny::fault-dense::fwd::b1::s16", "tiny::fault-dense::fwd::b2::s16"]);
        assert_eq!(m.margins, Margins { rtol: 0.05, atol: 1e-6 });
        assert!(matches!(m.target(&m.cases[2]), TargetSpec::Fault { amplitude, .. } if *amplitude == 0.5));
    }

    #[test]
    fn environment_overrides_axes() {
        let m = parse(&[("LAYERCHECK_TARGETS", "cpu-bf16"), ("LAYERCHECK_BATCH_SIZES", "3"), ("LAYERCHECK_MODES", "generate"), ("LAYERCHECK_MAX_NEW_TOKENS", "2,4"), ("LAYERCHECK_FEEDS", "isolated")]).unwrap();
        let names: Vec<String> = m.cases.iter().map(|c| c.to_string()).collect();
        assert_eq!(names, ["tiny::cpu-bf16::gen::iso::b3::s16::n2", "tiny::cpu-bf16::gen::iso::b3::s16::n4"]);
    }

    #[test]
    fn the_golden_folder_is_the_matrix_s_unless_the_environment_names_another() {
        let m = parse(&[]).unwrap();
        assert!(m.golden_dir.ends_with("golden"), "{:?}", m.golden_dir);
        assert_eq!(m.manifest_dir, None);
        let m = parse(&[(GOLDEN_DIR_VAR, "/mnt/golden-cache")]).unwrap();
        assert_eq!(m.golden_dir, PathBuf::from("/mnt/golden-cache"));
        let err = parse(&[(GOLDEN_DIR_VAR, " ")]).unwrap_err().to_string();
        assert!(err.contains("LAYERCHECK_GOLDEN_DIR is set but empty"), "{err}");
        let file = tempfile::NamedTempFile::new().unwrap();
        let err = parse(&[(GOLDEN_DIR_VAR, file.path().to_str().unwrap())]).unwrap_err().to_string();
        assert!(err.contains("LAYERCHECK_GOLDEN_DIR") && err.contains("is not a folder"), "{err}");
        let text = format!("manifest_dir = \"golden/manifests\"\n{TEXT}");
        let m = Matrix::parse(Path::new("/r"), Path::new("/r/m.toml"), &text, |_| None).unwrap();
        assert_eq!(m.manifest_dir, Some(PathBuf::from("/r/golden/manifests")));
    }

    #[test]
    fn external_targets_are_read_and_checked() {
        let text = format!("{TEXT}\n[targets.dev]\ncommand = [\"run-it\", \"--request\", \"{{request}}\", \"--out\", \"{{out}}\"]\ntimeout_s = 9\n[targets.dump]\ncaptures = \"dumps\"\n");
        let m = Matrix::parse(Path::new("/r"), Path::new("/r/m.toml"), &text, |_| None).unwrap();
        assert_eq!(m.targets["dev"], TargetSpec::Command { argv: vec!["run-it".into(), "--request".into(), "{request}".into(), "--out".into(), "{out}".into()], timeout_s: 9 });
        assert_eq!(m.targets["dump"], TargetSpec::Captures { dir: "/r/dumps".into() });
        assert_eq!(m.targets["dump"].device(), DeviceKind::Cpu);
        for (bad, expected) in [
            ("[targets.x]\ncommand = []", "targets.x.command is empty"),
            ("[targets.x]\ncommand = [\"p\", \"{request}\"]", "never names {out}"),
            ("[targets.x]\ncommand = [\"p\", \"{out}\", \"{reqest}\"]", "unknown placeholder {reqest}"),
            ("[targets.x]\ncommand = [\"p\", \"{out}\"]\ntimeout_s = 0", "timeout_s must be at least 1"),
            ("[targets.x]\ncommand = [\"p\", \"{out}\"]\ncaptures = \"d\"", "exactly one of"),
            ("[targets.x]\ntimeout_s = 3", "exactly one of"),
            ("[targets.x]\ncaptures = \"d\"\ntimeout_s = 3", "applies to a command"),
            ("[targets.cpu-f16]\ncaptures = \"d\"", "differ from the plain targets"),
            ("[targets.x]\ncaptures = \"d\"\nshell = true", "unknown field `shell`"),
        ] {
            let text = format!("{TEXT}\n{bad}\n");
            let err = Matrix::parse(Path::new("/r"), Path::new("/r/m.toml"), &text, |_| None).unwrap_err().to_string();
            assert!(err.contains(expected) && err.contains("/r/m.toml"), "{expected:?} not in {err}");
        }
    }

    #[test]
    fn bad_values_are_errors_not_fallbacks() {
        let err = parse(&[("LAYERCHECK_BATCH_SIZES", "1,x")]).unwrap_err().to_string();
        assert!(err.contains("LAYERCHECK_BATCH_SIZES=1,x") && err.contains("\"x\" is not a positive integer"), "{err}");
        let err = parse(&[("LAYERCHECK_TARGETS", "tpu-f8")]).unwrap_err().to_string();
        assert!(err.contains("matrix target \"tpu-f8\""), "{err}");
        let err = parse(&[("LAYERCHECK_MODELS", "huge")]).unwrap_err().to_string();
        assert!(err.contains("no [models.huge] entry"), "{err}");
        let err = parse(&[("LAYERCHECK_FEEDS", "")]).unwrap_err().to_string();
        assert!(err.contains("is empty"), "{err}");
        let invalid = |from: &str, to: &str| {
            let text = TEXT.replace(from, to);
            assert_ne!(text, TEXT, "{from}");
            Matrix::parse(Path::new("/r"), Path::new("/r/m.toml"), &text, |_| None).unwrap_err().to_string()
        };
        for (from, to, expected) in [
            ("models = [\"tiny\"]", "models = []", "[matrix] models is empty"),
            ("seq_lengths = [16]", "seq_lengths = []", "[matrix] seq_lengths is empty"),
            ("batch_sizes = [1, 2]", "batch_sizes = [1, 1]", "batch_sizes lists 1 twice"),
            ("batch_sizes = [1, 2]", "batch_sizes = [0]", "batch_sizes holds 0"),
            ("[models.tiny]", "margins = { rtol = nan, atol = 1e-6 }\n[models.tiny]", "margins.rtol is NaN"),
            ("[models.tiny]", "margins = { rtol = 0.05, atol = -1e-6 }\n[models.tiny]", "margins.atol is -0.000001"),
            ("amplitude = 0.5", "amplitude = 0.0", "faults.fault-dense.amplitude is 0"),
        ] {
            let err = invalid(from, to);
            assert!(err.starts_with("/r/m.toml: ") && err.contains(expected) && err.contains("hint"), "{to}: {err}");
        }
        let bad = TEXT.replace("amplitude = 0.5", "amplitude = 0.5\nsize = 3");
        let err = Matrix::parse(Path::new("/r"), Path::new("/r/m.toml"), &bad, |_| None).unwrap_err().to_string();
        assert!(err.contains("/r/m.toml") && err.contains("unknown field `size`"), "{err}");
    }
}
