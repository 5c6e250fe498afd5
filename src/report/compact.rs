//! [`CaseResults`] of a compact metrics file (`layercheck generate --format compact`): per layer
//! and per prompt, the same quantities the harness judges, with verdicts when a thresholds file is
//! given (chosen as the harness chooses them: per shape when the file has the case's shape, else
//! the seed's pooled values, with a note).

use crate::formats::case::strip_iter;
use crate::formats::compact::CompactFile;
use crate::harness::matrix::Margins;
use crate::harness::verdict::{check, Bounds};
use crate::metrics::LayerSummary;
use crate::thresholds::ThresholdsFile;

use super::results::{CaseResults, LayerResults, RecordResult};

/// The bounds of a layer, by file key.
pub type BoundsOf = Box<dyn Fn(&str) -> Bounds>;

/// The results of a compact file; `source` names it (e.g. its file name).
pub fn compact_results(file: &CompactFile, source: &str, thresholds: Option<(&ThresholdsFile, &Margins)>) -> CaseResults {
    let case = &file.case;
    let mut notes: Vec<String> = file.metadata.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    let bounds_of: Option<BoundsOf> = thresholds.map(|(t, _)| {
        let (b, f) = thresholds_for_compact(t, case.batch_size, case.seq_length);
        notes.push(f);
        b
    });
    let mut layers: Vec<LayerResults> = Vec::new();
    for r in &file.records {
        let (key, _) = strip_iter(&r.key);
        let i = match layers.iter().position(|l| l.key == key) {
            Some(i) => i,
            None => {
                let bounds = bounds_of.as_ref().map(|f| f(&key));
                layers.push(LayerResults { key, bounds, records: Vec::new(), error: None });
                layers.len() - 1
            }
        };
        let layer = &mut layers[i];
        let items: Vec<&LayerSummary> = if r.items.is_empty() { vec![&r.summary] } else { r.items.iter().collect() };
        for (item, s) in items.into_iter().enumerate() {
            let observation = s.observation(&r.key, item);
            let failures = match (layer.bounds, thresholds) {
                (Some(b), Some((_, m))) => check(&observation, &b, m),
                _ => Vec::new(),
            };
            layer.records.push(RecordResult { observation, rel_l2: Some(s.rel_l2()), sqnr_db: Some(s.sqnr_db()), failures });
        }
    }
    CaseResults {
        case: case.prefix(),
        source: format!("compact {source}"),
        margins: thresholds.map(|(_, m)| *m),
        setup_error: None,
        notes,
        layers,
    }
}

/// The bounds of each layer of a (batch size, sequence length) case: the file's per-shape
/// thresholds when it has that shape, else its pooled seed values (`abs_diff`, `cos_sim_avg` or
/// `cos_sim_mean`), which measure another quantity and are looser; and a note saying which.
pub fn thresholds_for_compact(file: &ThresholdsFile, batch_size: u64, seq_length: u64) -> (BoundsOf, String) {
    let per_shape = file.per_shape.as_ref().filter(|p| p.shapes.iter().any(|s| s.batch_size == batch_size && s.seq_length == seq_length)).cloned();
    match per_shape {
        Some(p) => {
            let note = format!("thresholds: {} per prompt, p{} at batch-size-{batch_size}_seq-length-{seq_length}", file.model_id, p.percentile);
            let f = move |key: &str| {
                let t = p.get(batch_size, seq_length, key).copied().unwrap_or_default();
                Bounds { abs_diff_l2: t.abs_diff_l2, cos_mean: t.cos_mean }
            };
            (Box::new(f), note)
        }
        None => {
            let note = format!("thresholds: {} has no per-shape entry for batch {batch_size} x seq {seq_length}; applying its pooled seed values (abs_diff, cos_sim_avg), which are looser", file.model_id);
            let file = file.clone();
            let f = move |key: &str| Bounds { abs_diff_l2: file.layer("abs_diff", key), cos_mean: file.layer("cos_sim_avg", key).or_else(|| file.layer("cos_sim_mean", key)) };
            (Box::new(f), note)
        }
    }
}
