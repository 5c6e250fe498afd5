//! [`CaseResults`] of a compact metrics file (`layercheck generate --format compact`): per layer
//! and per prompt, the same quantities the harness judges, with verdicts when a thresholds file is
//! given (chosen as the harness chooses them: per shape when the file has the case's shape, else
//! the seed's pooled values, with a note), and the logits verdict when the file has logits.

use crate::formats::case::strip_iter;
use crate::formats::compact::CompactFile;
use layercheck_suite::matrix::Margins;
use layercheck_suite::verdict::check;
use crate::metrics::LayerSummary;
use crate::thresholds::{bounds_for, logits_bounds_for, BoundsOf, ThresholdsFile};
use layercheck_suite::logits::{LogitsOutcome, DEFAULT_FAILURE_RATE};

use super::results::{CaseResults, LayerResults, RecordResult};

/// The results of a compact file; `source` names it (e.g. its file name).
pub fn compact_results(file: &CompactFile, source: &str, thresholds: Option<(&ThresholdsFile, &Margins)>) -> CaseResults {
    let case = &file.case;
    let mut notes: Vec<String> = file.metadata.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    let bounds_of: Option<BoundsOf> = thresholds.map(|(t, _)| {
        let (b, f) = bounds_for(t, &t.model_id, case.batch_size, case.seq_length);
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
                layers.push(LayerResults { key, bounds, records: Vec::new(), error: None, attribution: None, location: None });
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
    // The file's logits are judged when thresholds are given (as the suite's `::logits` test).
    let logits = match (&file.logits, thresholds) {
        (Some(l), Some((t, _))) => {
            let (bounds, _) = logits_bounds_for(t, &t.model_id, DEFAULT_FAILURE_RATE);
            let steps = file.metadata.get("mode").is_some_and(|m| m == "generate");
            Some(LogitsOutcome { top_k: l.top_k as usize, steps, tokens: l.tokens.clone(), bounds, error: None })
        }
        _ => None,
    };
    CaseResults {
        case: case.prefix(),
        source: format!("compact {source}"),
        margins: thresholds.map(|(_, m)| *m),
        setup_error: None,
        notes,
        attribution_unavailable: None,
        logits,
        layers,
    }
}
