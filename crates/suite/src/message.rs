//! What a failing test prints: observed metrics, thresholds, margins, the worst token, and the
//! commands that re-run the test or regenerate its golden file.

use std::fmt::Write;

use crate::matrix::Margins;
use crate::outcome::{CaseOutcome, LayerOutcome};
use crate::report_dir::case_report_dir;
use crate::test_name::{CaseId, TestName};
use crate::update::regenerate_command;

/// The message of a failing layer test.
pub fn layer_failure(name: &TestName, layer: &LayerOutcome, outcome: &CaseOutcome, margins: &Margins) -> String {
    let mut m = String::new();
    let _ = writeln!(m, "{} diverges from the CPU golden on {}", layer.key, case_words(&name.case));
    if let Some(e) = &layer.error {
        let _ = writeln!(m, "  {e}");
    }
    let fmt_th = |t: Option<f64>| t.map_or("none".to_string(), |v| format!("{v:.6e}"));
    let _ = writeln!(
        m,
        "  thresholds: abs_diff_l2 {}, cos_mean {} (margins: rtol {}, atol {})",
        fmt_th(layer.bounds.abs_diff_l2),
        fmt_th(layer.bounds.cos_mean),
        margins.rtol,
        margins.atol
    );
    for (i, failure) in layer.failures.iter().take(8) {
        let o = &layer.observations[*i];
        let _ = writeln!(m, "  {} prompt {}: {}", o.record, o.item, failure.reason);
    }
    if layer.failures.len() > 8 {
        let _ = writeln!(m, "  ... and {} more failing records", layer.failures.len() - 8);
    }
    if let Some(worst) = layer.observations.iter().min_by(|a, b| a.cos_min.partial_cmp(&b.cos_min).unwrap_or(std::cmp::Ordering::Less)) {
        let _ = writeln!(
            m,
            "  observed (worst prompt): abs_diff_l2 {:.6e}, max |diff| {:.6e}, cos_mean {:.9}, cos_min {:.9} at token {} of prompt {} ({})",
            worst.abs_diff_l2, worst.abs_diff_max, worst.cos_mean, worst.cos_min, worst.worst_token, worst.item, worst.record
        );
    }
    if let Some(first) = outcome.first_failure() {
        if first.key != layer.key {
            let _ = writeln!(m, "  the first failing layer of this case is {}: look there first", first.key);
        }
    }
    for note in &outcome.notes {
        let _ = writeln!(m, "  note: {note}");
    }
    let _ = write!(m, "{}", commands(name));
    m
}

/// The message of a case that could not be computed.
pub fn setup_failure(name: &TestName, error: &str) -> String {
    format!("{} could not be checked: {error}\n{}", case_words(&name.case), commands(name))
}

/// The message of a failing summary test.
pub fn summary_failure(name: &TestName, outcome: &CaseOutcome) -> String {
    let failing: Vec<&str> = outcome.layers.iter().filter(|l| !l.passed()).map(|l| l.key.as_str()).collect();
    let first = failing.first().copied().unwrap_or("(none)");
    let mut m = format!(
        "{}: {} of {} layers fail; the first failing layer is {first}\n",
        case_words(&name.case),
        failing.len(),
        outcome.layers.len()
    );
    let _ = writeln!(m, "  failing: {}", failing.iter().take(12).copied().collect::<Vec<_>>().join(", "));
    let _ = write!(m, "  details: cargo test --test layers -- --exact '{}::{first}'\n{}", name.case, commands(name));
    m
}

fn case_words(case: &CaseId) -> String {
    let mut s = format!("{} on {} ({}, {:?} feed, batch {}, seq {}", case.model, case.target, case.mode, case.feed, case.batch_size, case.seq_len);
    if let Some(n) = case.max_new_tokens {
        let _ = write!(s, ", {n} new tokens");
    }
    s.push(')');
    s.to_lowercase()
}

fn commands(name: &TestName) -> String {
    let report = case_report_dir(&name.case.to_string()).map(|d| format!("  plots and per-layer table: {}/report.html\n", d.display())).unwrap_or_default();
    format!(
        "{report}  re-run this test: cargo test --test layers -- --exact '{name}'\n  regenerate this case's golden file (if the reference changed on purpose): {}\n",
        regenerate_command(&name.case)
    )
}
