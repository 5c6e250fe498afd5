//! Tells, for a case with failing layers, which of them make their own error (`introduced`) and
//! which only carry it from upstream (`inherited`): one more run of the target in the isolated
//! feed, each module fed its golden input, for a cumulative case with failing layers; none for a
//! green case. A case already in the isolated feed needs none: its failures are all introduced.

use layercheck_suite::attribution::{all_introduced, classify};
use layercheck_suite::matrix::TargetSpec;
use layercheck_suite::outcome::LayerOutcome;
use layercheck_suite::test_name::{CaseId, Feed};
use crate::capture::RecordSource;

/// Classifies `layers`' failures with `rerun` (the target's judged layers for the isolated twin
/// of `case`). Returns why they could not be classified, when they could not.
pub fn attribute<E: std::fmt::Display>(case: &CaseId, target: &TargetSpec, golden: &dyn RecordSource, layers: &mut [LayerOutcome], rerun: impl FnOnce(&CaseId) -> Result<Vec<LayerOutcome>, E>, fix: &str) -> Option<String> {
    if layers.iter().all(LayerOutcome::passed) {
        return None;
    }
    if case.feed == Feed::Isolated {
        all_introduced(layers);
        return None;
    }
    if let TargetSpec::Captures { .. } = target {
        return Some(format!(
            "attribution unavailable: target {} is a folder of pre-recorded captures, one run per case, which cannot be fed golden inputs, so its failing layers are not classified introduced or inherited\n(hint: record the case with a command target, which layercheck re-runs in the isolated feed)",
            case.target
        ));
    }
    if golden.input_names_by_step().is_empty() {
        return Some(format!(
            "attribution unavailable: the reference has no module inputs, so the failing layers cannot be re-run on their golden inputs to tell introduced from inherited error\n(hint: set golden_inputs = true under [models.{}] in the matrix and run `{fix}`)",
            case.model
        ));
    }
    let isolated = CaseId { feed: Feed::Isolated, ..case.clone() };
    match rerun(&isolated) {
        Ok(iso_layers) => {
            classify(layers, &iso_layers);
            None
        }
        Err(e) => Some(format!("attribution unavailable: the isolated-feed re-run that tells introduced from inherited error failed: {e}")),
    }
}
