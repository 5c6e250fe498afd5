//! What a failing test prints: observed metrics, thresholds, margins, the worst token, and the
//! commands that re-run the test or regenerate its golden file.

use std::fmt::Write;

use crate::attribution::Attribution;
use crate::logits::{LogitsOutcome, LogitsVerdict, QuantityVerdict};
use crate::matrix::Margins;
use crate::number::{cos, or_none, percent, sci, setting};
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
    if let Some(a) = layer.attribution {
        let why = match a {
            Attribution::Introduced => "it fails when fed its golden input too: this module makes error of its own",
            Attribution::Inherited => "it passes when fed its golden input: it carries error made upstream",
        };
        let _ = writeln!(m, "  attribution: {a} ({why})");
    }
    let _ = writeln!(
        m,
        "  thresholds: abs_diff_l2 {}, cos_mean {} ({})",
        or_none(layer.bounds.abs_diff_l2, sci),
        or_none(layer.bounds.cos_mean, cos),
        margins_words(margins)
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
            "  observed (worst prompt): abs_diff_l2 {}, max |diff| {}, cos_mean {}, cos_min {} at token {} of prompt {} ({})",
            sci(worst.abs_diff_l2),
            sci(worst.abs_diff_max),
            cos(worst.cos_mean),
            cos(worst.cos_min),
            worst.worst_token,
            worst.item,
            worst.record
        );
    }
    if let Some(loc) = &layer.location {
        let _ = writeln!(m, "  where: {}", loc.describe());
    }
    if let Some(first) = outcome.first_introduced() {
        if first.key != layer.key {
            let _ = writeln!(m, "  the first layer that introduces error in this case is {}: look there first", first.key);
        }
    } else if let Some(first) = outcome.first_failure() {
        if first.key != layer.key {
            let _ = writeln!(m, "  the first failing layer of this case is {}: look there first", first.key);
        }
    }
    if let Some(why) = &outcome.attribution_unavailable {
        let _ = writeln!(m, "  {}", why.replace('\n', "\n  "));
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
    let introduced: Vec<&str> = outcome.layers.iter().filter(|l| l.attribution == Some(Attribution::Introduced)).map(|l| l.key.as_str()).collect();
    let first_failing = failing.first().copied().unwrap_or("(none)");
    let first = introduced.first().copied().unwrap_or(first_failing);
    let headline = match introduced.first() {
        Some(k) => format!("first layer that introduces error: {k}"),
        None => format!("the first failing layer is {first_failing}"),
    };
    let mut m = format!("{}: {} of {} layers fail; {headline}\n", case_words(&name.case), failing.len(), outcome.layers.len());
    let _ = writeln!(m, "  failing: {}", list(&failing));
    if !introduced.is_empty() {
        let inherited = outcome.layers.iter().filter(|l| l.attribution == Some(Attribution::Inherited)).count();
        let _ = writeln!(m, "  introduced (fail when fed their golden input too): {}", list(&introduced));
        let _ = writeln!(m, "  inherited (pass when fed their golden input): {inherited} layer(s)");
    }
    if let Some(why) = &outcome.attribution_unavailable {
        let _ = writeln!(m, "  {}", why.replace('\n', "\n  "));
    }
    let _ = write!(m, "  details: cargo test --test layers -- --exact '{}::{first}'\n{}", name.case, commands(name));
    m
}

/// The message of a failing logits test.
pub fn logits_failure(name: &TestName, logits: &LogitsOutcome, margins: &Margins) -> String {
    let v = logits.verdict(margins);
    let mut m = String::new();
    let _ = writeln!(m, "the logits of {} diverge from the CPU golden's", case_words(&name.case));
    if let Some(e) = &logits.error {
        let _ = writeln!(m, "  {e}");
    }
    let _ = writeln!(m, "  {}", logits_tokens_words(logits, &v));
    for q in &v.quantities {
        let _ = writeln!(m, "  {}: {}", q.quantity.name(), logits_quantity_words(logits, q));
    }
    let _ = writeln!(m, "  {}", top1_words(logits, &v));
    let _ = writeln!(m, "  thresholds from {} ({})", logits.bounds.source, margins_words(margins));
    let _ = write!(m, "{}", commands(name));
    m
}

/// The logits test in one line, for the command line (`layercheck run`, `layercheck compare`):
/// `ok`/`FAIL`, the failing tokens against the failure rate, and top-1 agreement.
pub fn logits_line(logits: &LogitsOutcome, v: &LogitsVerdict) -> String {
    format!("{:<4} logits: {}; {}", if v.passed { "ok" } else { "FAIL" }, logits_tokens_words(logits, v), top1_words(logits, v))
}

/// How many tokens fail the logits test, against the share at which it fails.
pub fn logits_tokens_words(logits: &LogitsOutcome, v: &LogitsVerdict) -> String {
    format!(
        "{} of {} token(s) past a threshold + margin ({}; the test fails at {}), on the reference's top {} logits",
        v.failing_tokens,
        v.tokens,
        percent(v.failing_share),
        percent(logits.bounds.failure_rate),
        logits.top_k
    )
}

/// One quantity of the logits verdict: its threshold, the tokens past it and the worst token.
pub fn logits_quantity_words(logits: &LogitsOutcome, q: &QuantityVerdict) -> String {
    let worst = q.worst_token.map_or(String::new(), |t| format!(" at prompt {} {} {}", t.prompt, position_word(logits), t.position));
    format!("threshold {}, {} token(s) past it + margin, worst {}{worst}", or_none(q.threshold, sci), q.failing, sci(q.worst))
}

/// The margins as a failing test and a report state them.
pub fn margins_words(margins: &Margins) -> String {
    format!("margins: rtol {}, atol {}", setting(margins.rtol), setting(margins.atol))
}

/// What a token's position means: a decode step (generate mode) or a position of the prompt.
pub fn position_word(logits: &LogitsOutcome) -> &'static str {
    if logits.steps {
        "step"
    } else {
        "position"
    }
}

/// Top-1 agreement in words: the share of tokens whose argmax is the reference's and, per
/// prompt, where it first differs.
pub fn top1_words(logits: &LogitsOutcome, v: &crate::logits::LogitsVerdict) -> String {
    let mut s = format!("top-1 agreement: {} of {} token(s)", v.top1_agreeing, v.tokens);
    if logits.steps {
        let steps: Vec<String> = logits.top1_by_position().iter().map(|(step, a, n)| format!("{step}: {a}/{n}")).collect();
        let _ = write!(s, " (per step {})", steps.join(", "));
    }
    if v.first_top1_difference.is_empty() {
        s.push_str("; the target would pick the reference's token everywhere");
    } else {
        let firsts: Vec<String> = v.first_top1_difference.iter().map(|(p, at)| format!("prompt {p} at {} {at}", position_word(logits))).collect();
        let _ = write!(s, "; the target would first pick another token: {}", firsts.join(", "));
    }
    s
}

/// At most 12 keys, comma-separated, with how many more there are.
fn list(keys: &[&str]) -> String {
    let mut s = keys.iter().take(12).copied().collect::<Vec<_>>().join(", ");
    if keys.len() > 12 {
        let _ = write!(s, " ... and {} more", keys.len() - 12);
    }
    s
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::location::ErrorLocation;
    use crate::verdict::{Bounds, Failure, Observation};

    const CASE: &str = "tiny-granite::fault-l1-dense::fwd::b1::s32";

    fn layer(key: &str, fails: bool, attribution: Option<Attribution>) -> LayerOutcome {
        let obs = Observation { record: key.into(), item: 0, abs_diff_l2: 0.5, abs_diff_max: 0.1, cos_mean: 0.99, cos_min: 0.98, worst_token: 7, target_nonfinite: 0, reference_nonfinite: 0 };
        let failures = match fails {
            true => vec![(0, Failure { quantity: crate::verdict::Quantity::AbsDiffL2, observed: 0.5, threshold: Some(0.01), excess: 0.4895, reason: "abs_diff L2 5.0000e-1 > threshold 1.0000e-2 + margin (allowed 1.0500e-2)".into() })],
            false => vec![],
        };
        let mut location = ErrorLocation::empty();
        location.add(key, &[vec![0.01, 0.2, 0.04]], &[0.1, 0.0, 0.15]);
        LayerOutcome { key: key.into(), bounds: Bounds::new(Some(0.01), Some(0.999)), observations: vec![obs], failures, error: None, attribution, location: Some(location) }
    }

    fn outcome(unavailable: Option<&str>) -> CaseOutcome {
        let attributed = |a| if unavailable.is_some() { None } else { Some(a) };
        CaseOutcome {
            case: CASE.into(),
            setup_error: None,
            layers: vec![
                layer("model.base_model.embedding", false, None),
                layer("model.base_model.layers1.attn.dense", true, attributed(Attribution::Introduced)),
                layer("model.base_model.layers1.ff_sub_layer", true, attributed(Attribution::Inherited)),
                layer("model.head", true, attributed(Attribution::Inherited)),
            ],
            notes: vec!["thresholds: t.json".into()],
            attribution_unavailable: unavailable.map(String::from),
            logits: None,
        }
    }

    /// The message without the machine-dependent report folder.
    fn portable(m: String, name: &TestName) -> String {
        let dir = case_report_dir(&name.case.to_string()).map(|d| d.display().to_string()).unwrap_or_default();
        m.replace(&dir, "[REPORT_DIR]")
    }

    #[test]
    fn the_summary_names_the_first_layer_that_introduces_error() {
        let name: TestName = format!("{CASE}::summary").parse().unwrap();
        insta::assert_snapshot!(portable(summary_failure(&name, &outcome(None)), &name));
        let why = "attribution unavailable: the reference has no module inputs\n(hint: set golden_inputs = true)";
        insta::assert_snapshot!("summary_without_attribution", portable(summary_failure(&name, &outcome(Some(why))), &name));
    }

    #[test]
    fn a_failing_logits_test_says_how_many_tokens_fail_and_where_the_top1_first_differs() {
        use crate::logits::{LogitsBounds, TokenLogits};
        let name: TestName = "tiny-granite::cpu-bf16::gen::b1::s32::n4::logits".parse().unwrap();
        let tokens = (0..4).map(|i| TokenLogits { prompt: 0, position: i, ce: 2.9, diff_mean: if i == 2 { 0.004 } else { 0.0005 }, kl: 1e-4, top1: i < 3 }).collect();
        let bounds = LogitsBounds { ce: Some(2.99), diff_mean: Some(0.001), kl: Some(1e-3), failure_rate: 0.01, source: "thresholds/tiny-granite-thresholds.json".into() };
        let logits = LogitsOutcome { top_k: 20, steps: true, tokens, bounds, error: None };
        insta::assert_snapshot!(portable(logits_failure(&name, &logits, &Margins { rtol: 0.05, atol: 1e-6 }), &name));
    }

    #[test]
    fn a_layer_says_whether_it_introduces_or_inherits_its_error_and_where_it_sits() {
        let o = outcome(None);
        let name: TestName = format!("{CASE}::model.base_model.layers1.ff_sub_layer").parse().unwrap();
        insta::assert_snapshot!(portable(layer_failure(&name, &o.layers[2], &o, &Margins { rtol: 0.05, atol: 1e-6 }), &name));
        let name: TestName = format!("{CASE}::model.base_model.layers1.attn.dense").parse().unwrap();
        insta::assert_snapshot!("introduced_layer", portable(layer_failure(&name, &o.layers[1], &o, &Margins { rtol: 0.05, atol: 1e-6 }), &name));
    }
}
