//! Why a case could not be computed: each cause typed, with its source error, turned into text
//! only where the outcome is written ([`layercheck_suite::outcome::CaseOutcome::setup_error`]).

use std::path::PathBuf;

use layercheck_suite::file_lock::FileLockError;
use layercheck_suite::model_folder::ModelFolderError;

use super::golden::GoldenError;
use super::target_listener::ListenerError;
use super::evaluate::SAVE_CAPTURES_VAR;
use crate::capture::CaptureError;
use crate::hooks::ModuleKey;
use crate::inputs::InputError;
use crate::model::ModelError;
use crate::runner::check::CheckError;
use crate::runner::command::CommandError;
use crate::runner::reference::ReferenceError;
use crate::runner::ForcedIdsError;
use crate::thresholds::ThresholdsError;

/// The hint of a thresholds file that cannot be read.
const THRESHOLDS_HINT: &str = "(hint: derive thresholds with `layercheck generate` and `layercheck thresholds`, see README \"Thresholds\")";

/// Why a case could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("model folder {} has no config.json\n(hint: the matrix entry [models.{model}] points there; see README \"Supported models\")", dir.display())]
    NoConfig { dir: PathBuf, model: String },
    #[error(transparent)]
    ModelFolder(#[from] ModelFolderError),
    /// The prompts, the tokenizer or the token batch.
    #[error(transparent)]
    Inputs(#[from] InputError),
    #[error("{}: only {fitting} prompt(s) fit in {seq_len} tokens, the case needs {batch_size}\n(hint: add shorter prompts or use a longer sequence length)", file.display())]
    TooFewPrompts { file: PathBuf, fitting: usize, seq_len: usize, batch_size: usize },
    #[error("{source}\n{THRESHOLDS_HINT}")]
    ThresholdsUnreadable { #[source] source: ThresholdsError },
    /// A thresholds file that is not this model's, or holds values no verdict can apply.
    #[error(transparent)]
    Thresholds(#[from] ThresholdsError),
    /// Loading or running a model (the reference's or the target's).
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Golden(Box<GoldenError>),
    #[error(transparent)]
    Lock(#[from] FileLockError),
    #[error("a temporary folder for the live reference: {0}")]
    LiveFolder(#[source] std::io::Error),
    #[error(transparent)]
    LiveFile(CaptureError),
    #[error("model {model}'s reference = {{ command }}: {source}")]
    ReferenceCommand { model: String, #[source] source: ReferenceError },
    #[error("target {target}: {source}")]
    TargetCommand { target: String, #[source] source: CommandError },
    /// An external runner's capture that does not answer its request.
    #[error(transparent)]
    Check(#[from] CheckError),
    #[error(transparent)]
    CaptureUnreadable(CaptureError),
    #[error("target {target} is a folder of pre-recorded captures, one run per case: it cannot be fed golden inputs\n(hint: use the cumulative feed for it, or a command target that feeds inputs)")]
    CapturesIsolated { target: String },
    #[error("target {target}: no pre-recorded capture {} for this case\n(hint: record it on the device host, e.g. `python -m layercheck_fms --model-path ... --input-ids ... --out {}`, see README \"Testing your accelerator\")", path.display(), path.display())]
    NoCapture { target: String, path: PathBuf },
    #[error("{SAVE_CAPTURES_VAR}: cannot make {}: {source}", dir.display())]
    SaveCapturesFolder { dir: PathBuf, #[source] source: std::io::Error },
    #[error("{SAVE_CAPTURES_VAR}: {0}")]
    SaveCapture(#[source] CaptureError),
    /// A generate case's forced tokens, for the builtin target or a runner's request.
    #[error("{source}\n(hint: `{fix}`)")]
    ForcedIds { #[source] source: ForcedIdsError, fix: String },
    #[error("isolated feeding needs module inputs in the golden file {}, and it has none\n(hint: set golden_inputs = true under [models.{model}] in the matrix and run `{fix}`)", path.display())]
    NoGoldenInputs { path: PathBuf, model: String, fix: String },
    #[error("{source}\n(hint: `{fix}`)")]
    Feed { #[source] source: ListenerError, fix: String },
    /// The fault could not be added (a libtorch failure, e.g. out of memory on the device).
    #[error(transparent)]
    Fault(ListenerError),
    #[error("the golden file lists a record {0} that is not a module key")]
    NotAModuleKey(String),
    #[error("fault target {target}: module {module} does not exist in this case's run ({mode} mode of a model with {layers} layer(s)), so the fault would change nothing and every test would pass\n(hint: point [faults.{target}] module at one of the model's modules, e.g. {example}; see {matrix_file})")]
    FaultOnAbsentModule { target: String, module: ModuleKey, mode: String, layers: usize, example: String, matrix_file: String },
}

impl From<GoldenError> for SetupError {
    fn from(e: GoldenError) -> Self {
        SetupError::Golden(Box::new(e))
    }
}
