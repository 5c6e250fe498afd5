//! The logits section of a case's report: the verdict of its `::logits` test
//! (`layercheck_suite::logits`), the quantities against their thresholds and top-1 agreement, as
//! markdown lines that `report.md` writes as they are and `report.html` renders inline.

use super::markdown::sci;
use super::results::CaseResults;
use layercheck_suite::matrix::Margins;
use layercheck_suite::message::top1_words;

/// The section's lead sentence and bullet lines, or `None` when the case has no logits.
pub(super) fn logits_lines(results: &CaseResults) -> Option<(String, Vec<String>)> {
    let logits = results.logits.as_ref()?;
    let margins = results.margins.unwrap_or_default();
    let v = logits.verdict(&margins);
    let verdict = if v.passed { "**pass**" } else { "**fail**" };
    let lead = format!(
        "{verdict}: {} of {} token(s) past a threshold + margin ({:.2}%; the test fails at {:.2}%), on the reference's top {} logits, as the Python tools' end-to-end test (`test_decoders.py`) judges them; `kl` is 0 for identical distributions, `ce` is not.",
        v.failing_tokens,
        v.tokens,
        100.0 * v.failing_share,
        100.0 * logits.bounds.failure_rate,
        logits.top_k
    );
    let position = layercheck_suite::message::position_word(logits);
    let mut lines = Vec::new();
    if let Some(e) = &logits.error {
        lines.push(format!("not compared: {}", e.replace('\n', " ")));
    }
    for q in &v.quantities {
        let th = q.threshold.map_or("none".to_string(), sci);
        let worst = q.worst_token.map_or(String::new(), |t| format!(" at prompt {} {position} {}", t.prompt, t.position));
        lines.push(format!("`{}`: threshold {th}, worst {}{worst}, {} token(s) past threshold + margin", q.quantity.name(), sci(q.worst), q.failing));
    }
    lines.push(top1_words(logits, &v));
    lines.push(format!("thresholds: {}{}", logits.bounds.source, margins_words(results.margins)));
    Some((lead, lines))
}

fn margins_words(m: Option<Margins>) -> String {
    m.map_or(String::new(), |m| format!(" (margins: rtol {}, atol {})", m.rtol, m.atol))
}
