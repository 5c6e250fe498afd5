//! The result of one case: the target's run compared, layer by layer, with the case's golden
//! reference and thresholds. Plain data, computed once per case by `layercheck suite-case` and
//! shared by every test of the case.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::attribution::Attribution;
use crate::location::ErrorLocation;
use crate::logits::LogitsOutcome;
use crate::matrix::Margins;
use crate::test_name::Check;
use crate::verdict::{Bounds, Failure, Observation};

/// Everything the tests of one case need.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaseOutcome {
    pub case: String,
    /// Set when the case could not be computed at all (missing or stale golden, bad model...):
    /// every test of the case fails with it.
    pub setup_error: Option<String>,
    /// One entry per module key recorded, in forward order.
    pub layers: Vec<LayerOutcome>,
    /// Things a reader should know (e.g. which thresholds were applied).
    pub notes: Vec<String>,
    /// Why the failing layers could not be classified introduced or inherited, when they could not.
    #[serde(default)]
    pub attribution_unavailable: Option<String>,
    /// The logits compared token by token (the `::logits` test); `None` when the forward was
    /// stopped early or the case could not be computed.
    #[serde(default)]
    pub logits: Option<LogitsOutcome>,
}

/// One module's result in a case.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerOutcome {
    /// File key, e.g. `model.base_model.layers1.attn.dense`.
    pub key: String,
    pub bounds: Bounds,
    /// One per (forward call, batch item).
    pub observations: Vec<Observation>,
    /// (index into `observations`, failure).
    pub failures: Vec<(usize, Failure)>,
    /// Set when this layer could not be compared (e.g. missing from the golden file).
    pub error: Option<String>,
    /// For a failing layer: whether it makes its own error or inherits it (`None` when passing
    /// or not classified).
    #[serde(default)]
    pub attribution: Option<Attribution>,
    /// For a failing layer: its worst tokens and channels.
    #[serde(default)]
    pub location: Option<ErrorLocation>,
}

impl LayerOutcome {
    /// No failing record and no error.
    pub fn passed(&self) -> bool {
        self.failures.is_empty() && self.error.is_none()
    }
}

impl CaseOutcome {
    /// An outcome whose every test fails with `error`.
    pub fn failed(case: &str, error: String) -> Self {
        CaseOutcome { case: case.to_string(), setup_error: Some(error), layers: Vec::new(), notes: Vec::new(), attribution_unavailable: None, logits: None }
    }

    /// The first layer that failed, in forward order.
    pub fn first_failure(&self) -> Option<&LayerOutcome> {
        self.layers.iter().find(|l| !l.passed())
    }

    /// The first layer that fails of its own making ([`Attribution::Introduced`]).
    pub fn first_introduced(&self) -> Option<&LayerOutcome> {
        self.layers.iter().find(|l| l.attribution == Some(Attribution::Introduced))
    }

    /// The layer with file key `key`, if it was recorded.
    pub fn layer(&self, key: &str) -> Option<&LayerOutcome> {
        self.layers.iter().find(|l| l.key == key)
    }

    /// Whether the test of `check` passes: the case was computed and its layer was recorded and
    /// passes, no layer fails (the summary), or its logits were compared and pass.
    pub fn passes(&self, check: Check, margins: &Margins) -> bool {
        self.setup_error.is_none()
            && match check {
                Check::Summary => self.first_failure().is_none(),
                Check::Logits => self.logits.as_ref().is_some_and(|l| l.verdict(margins).passed),
                Check::Layer(key) => self.layer(&key.to_string()).is_some_and(LayerOutcome::passed),
            }
    }

    /// The checks of this case that pass.
    pub fn passing(&self, margins: &Margins) -> Passing {
        let layers = self.layers.iter().filter(|l| self.setup_error.is_none() && l.passed()).map(|l| l.key.clone()).collect();
        Passing { summary: self.passes(Check::Summary, margins), logits: self.passes(Check::Logits, margins), layers }
    }
}

/// Which tests of a case pass, apart from the case's outcome: under nextest each test is a
/// process of its own, and one whose test passes reads this (a few kB) instead of the whole
/// outcome (350 kB for a SmolLM2 case, decoded in about 1.5 ms of the 4 ms such a process takes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Passing {
    summary: bool,
    logits: bool,
    /// File keys of the passing layers.
    layers: std::collections::BTreeSet<String>,
}

impl Passing {
    /// Whether the test of `check` passes.
    pub fn contains(&self, check: Check) -> bool {
        match check {
            Check::Summary => self.summary,
            Check::Logits => self.logits,
            Check::Layer(key) => self.layers.contains(&key.to_string()),
        }
    }

    /// Writes the list to `path` atomically.
    pub fn write(&self, path: &Path) -> Result<(), OutcomeFileError> {
        write_postcard(self, path)
    }

    /// Reads a list [`Passing::write`] wrote.
    pub fn read(path: &Path) -> Result<Self, OutcomeFileError> {
        read_postcard(path)
    }
}

/// Why an outcome file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum OutcomeFileError {
    #[error("{path}: {problem}")]
    Io { path: PathBuf, problem: String },
}

impl CaseOutcome {
    /// Writes the outcome to `path` atomically (postcard, which keeps NaN and infinities, unlike
    /// JSON), so that a reader never sees half a file. The format is private to one build: the
    /// test process and the `layercheck` binary that writes for it.
    pub fn write(&self, path: &Path) -> Result<(), OutcomeFileError> {
        write_postcard(self, path)
    }

    /// Reads an outcome [`CaseOutcome::write`] wrote.
    pub fn read(path: &Path) -> Result<Self, OutcomeFileError> {
        read_postcard(path)
    }
}

fn write_postcard(value: &impl Serialize, path: &Path) -> Result<(), OutcomeFileError> {
    let io = |problem: String| OutcomeFileError::Io { path: path.to_path_buf(), problem };
    let bytes = postcard::to_stdvec(value).map_err(|e| io(e.to_string()))?;
    crate::atomic::write_file(path, crate::atomic::Replace::Allowed, |w| w.write_all(&bytes)).map_err(|e| io(e.to_string()))?;
    Ok(())
}

fn read_postcard<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, OutcomeFileError> {
    let io = |problem: String| OutcomeFileError::Io { path: path.to_path_buf(), problem };
    let bytes = std::fs::read(path).map_err(|e| io(e.to_string()))?;
    postcard::from_bytes(&bytes).map_err(|e| io(e.to_string()))
}
