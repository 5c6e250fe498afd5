//! The logits section of a case's report: the verdict of its `::logits` test
//! (`layercheck_suite::logits`), the quantities against their thresholds and top-1 agreement, as
//! markdown lines that `report.md` writes as they are and `report.html` renders inline.

use super::results::CaseResults;
use layercheck_suite::matrix::Margins;
use layercheck_suite::message::{logits_quantity_words, logits_tokens_words, top1_words};

/// The section's lead sentence and bullet lines, or `None` when the case has no logits.
pub(super) fn logits_lines(results: &CaseResults) -> Option<(String, Vec<String>)> {
    let logits = results.logits.as_ref()?;
    let margins = results.margins.unwrap_or_default();
    let v = logits.verdict(&margins);
    let verdict = if v.passed { "**pass**" } else { "**fail**" };
    let lead = format!(
        "{verdict}: {}, as the Python tools' end-to-end test (`test_decoders.py`) judges them; `kl` is 0 for identical distributions, `ce` is not.",
        logits_tokens_words(logits, &v)
    );
    let mut lines = Vec::new();
    if let Some(e) = &logits.error {
        lines.push(format!("not compared: {}", e.replace('\n', " ")));
    }
    for q in &v.quantities {
        lines.push(format!("`{}`: {}", q.quantity.name(), logits_quantity_words(logits, q)));
    }
    lines.push(top1_words(logits, &v));
    lines.push(format!("thresholds: {}{}", logits.bounds.source, margins_words(results.margins)));
    Some((lead, lines))
}

fn margins_words(m: Option<Margins>) -> String {
    m.map_or(String::new(), |m| format!(" ({})", layercheck_suite::message::margins_words(&m)))
}
