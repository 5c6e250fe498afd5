//! [`CaseResults`]: every per-layer result of one case, from the harness or a compact file, and
//! its `results.jsonl` form (documented in `super`), which round-trips exactly, NaN included.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::submodule::Submodule;
use layercheck_suite::attribution::Attribution;
use layercheck_suite::logits::{LogitsBounds, LogitsOutcome, TokenLogits};
use layercheck_suite::location::{ChannelShare, ErrorLocation, TokenError};
use layercheck_suite::outcome::CaseOutcome;
use layercheck_suite::matrix::Margins;
use layercheck_suite::verdict::{Bounds, CosRule, Failure, Observation};

/// The `format` of the first line of `results.jsonl`.
pub const RESULTS_FORMAT: &str = "layercheck-results/1";

/// The results of one case.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseResults {
    /// The case's name (harness test-name prefix, or a compact file's seed prefix).
    pub case: String,
    /// Where the results come from: `harness`, or `compact <file name>`.
    pub source: String,
    /// The margins of the verdicts; `None` when there are no thresholds, so no verdicts.
    pub margins: Option<Margins>,
    /// Set when the case could not be computed at all.
    pub setup_error: Option<String>,
    /// Things a reader should know (e.g. which thresholds were applied).
    pub notes: Vec<String>,
    /// Why failing layers are not classified introduced or inherited, when they are not.
    pub attribution_unavailable: Option<String>,
    /// The case's logits compared token by token, when they were.
    pub logits: Option<LogitsOutcome>,
    /// In forward order.
    pub layers: Vec<LayerResults>,
}

/// One layer (module key) of a case.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerResults {
    /// File key, e.g. `model.base_model.layers1.attn.dense`.
    pub key: String,
    /// Its thresholds; `None` when there are no verdicts.
    pub bounds: Option<Bounds>,
    /// One per (forward call, batch item).
    pub records: Vec<RecordResult>,
    /// Set when the layer could not be compared.
    pub error: Option<String>,
    /// For a failing layer: whether it introduces or inherits its error, when known.
    pub attribution: Option<Attribution>,
    /// Its worst tokens and channels, and per-token error (shown for failing layers; the heat
    /// strip shows every layer's).
    pub location: Option<ErrorLocation>,
}

/// One record (forward call) of one prompt (batch item) of a layer.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordResult {
    pub observation: Observation,
    /// `||reference - target|| / ||reference||` (compact files only).
    pub rel_l2: Option<f64>,
    /// Signal to quantisation-noise ratio in dB (compact files only).
    pub sqnr_db: Option<f64>,
    /// Why it failed; empty when it passed or has no verdict.
    pub failures: Vec<Failure>,
}

impl CaseResults {
    /// The results of a harness case, judged with `margins`.
    pub fn from_outcome(outcome: &CaseOutcome, margins: &Margins) -> Self {
        let layers = outcome
            .layers
            .iter()
            .map(|l| {
                let mut records: Vec<RecordResult> = l.observations.iter().map(|o| RecordResult { observation: o.clone(), rel_l2: None, sqnr_db: None, failures: Vec::new() }).collect();
                for (i, f) in &l.failures {
                    if let Some(r) = records.get_mut(*i) {
                        r.failures.push(f.clone());
                    }
                }
                // Without the per-channel sums (the outcome file has none either); a passing layer's too,
                // for the heat strip of error per (layer, token).
                let location = l.location.clone().map(|mut loc| {
                    loc.channel_sq.clear();
                    loc
                });
                LayerResults { key: l.key.clone(), bounds: Some(l.bounds), records, error: l.error.clone(), attribution: l.attribution, location }
            })
            .collect();
        CaseResults { case: outcome.case.clone(), source: "harness".into(), margins: Some(*margins), setup_error: outcome.setup_error.clone(), notes: outcome.notes.clone(), attribution_unavailable: outcome.attribution_unavailable.clone(), logits: outcome.logits.clone(), layers }
    }

    /// `results.jsonl`: the case line, then one line per record (and per layer error).
    pub fn to_jsonl(&self) -> String {
        let header = HeaderJson {
            kind: "case".into(),
            format: RESULTS_FORMAT.into(),
            case: self.case.clone(),
            source: self.source.clone(),
            margins: self.margins.map(|m| MarginsJson { rtol: m.rtol, atol: m.atol }),
            setup_error: self.setup_error.clone(),
            notes: self.notes.clone(),
            attribution_unavailable: self.attribution_unavailable.clone(),
            logits: self.logits.as_ref().map(LogitsJson::of),
            layercheck_version: env!("CARGO_PKG_VERSION").into(),
        };
        let mut out = line(&header);
        for (order, layer) in self.layers.iter().enumerate() {
            let mut first = true;
            // The layer's location goes on its first line only.
            let mut push = |record: Option<&RecordResult>| {
                let mut row = self.record_json(order, layer, record);
                if first {
                    row.location = layer.location.as_ref().map(|l| LocationJson::of(l, &mut row.nonfinite));
                }
                first = false;
                out.push_str(&line(&row));
            };
            for r in &layer.records {
                push(Some(r));
            }
            if layer.error.is_some() {
                push(None);
            }
        }
        out
    }

    fn record_json(&self, order: usize, layer: &LayerResults, record: Option<&RecordResult>) -> RecordJson {
        let mut nf = NonFinite::default();
        let bounds = layer.bounds.filter(|_| self.margins.is_some());
        let (bounds_json, allowed_json) = match (bounds, self.margins) {
            (Some(b), Some(m)) => {
                let allowed = layercheck_suite::verdict::allowed(&b, &m);
                (
                    Some(PairJson { abs_diff_l2: nf.opt("bounds.abs_diff_l2", b.abs_diff_l2), cos_mean: nf.opt("bounds.cos_mean", b.cos_mean) }),
                    Some(PairJson { abs_diff_l2: nf.opt("allowed.abs_diff_l2", allowed.abs_diff_l2), cos_mean: nf.opt("allowed.cos_mean", allowed.cos_mean) }),
                )
            }
            _ => (None, None),
        };
        let (metrics, failures, verdict) = match record {
            Some(r) => {
                let o = &r.observation;
                let metrics = MetricsJson {
                    abs_diff_l2: nf.num("metrics.abs_diff_l2", o.abs_diff_l2),
                    abs_diff_max: nf.num("metrics.abs_diff_max", o.abs_diff_max),
                    cos_mean: nf.num("metrics.cos_mean", o.cos_mean),
                    cos_min: nf.num("metrics.cos_min", o.cos_min),
                    worst_token: o.worst_token,
                    target_nonfinite: o.target_nonfinite,
                    reference_nonfinite: o.reference_nonfinite,
                    rel_l2: nf.opt("metrics.rel_l2", r.rel_l2),
                    sqnr_db: nf.opt("metrics.sqnr_db", r.sqnr_db),
                };
                let failures = r
                    .failures
                    .iter()
                    .enumerate()
                    .map(|(i, f)| FailureJson {
                        quantity: f.quantity,
                        observed: nf.num(&format!("failures.{i}.observed"), f.observed),
                        threshold: nf.opt(&format!("failures.{i}.threshold"), f.threshold),
                        excess: nf.num(&format!("failures.{i}.excess"), f.excess),
                        reason: f.reason.clone(),
                    })
                    .collect();
                let verdict = if self.margins.is_none() {
                    RecordVerdict::Unchecked
                } else if r.failures.is_empty() {
                    RecordVerdict::Pass
                } else {
                    RecordVerdict::Fail
                };
                (Some(metrics), failures, verdict)
            }
            None => (None, Vec::new(), RecordVerdict::Error),
        };
        RecordJson {
            kind: "record".into(),
            case: self.case.clone(),
            order,
            layer: layer.key.clone(),
            module: Submodule::of(&layer.key).name().into(),
            record: record.map(|r| r.observation.record.clone()),
            item: record.map(|r| r.observation.item),
            metrics,
            bounds: bounds_json,
            cos_rule: bounds.map_or(CosRule::Deficit, |b| b.cos_rule),
            allowed: allowed_json,
            verdict,
            failures,
            error: if record.is_none() { layer.error.clone() } else { None },
            attribution: layer.attribution,
            location: None,
            nonfinite: nf.0,
        }
    }

    /// Reads `results.jsonl` text; an error gives the 1-based line and the problem.
    pub fn from_jsonl(text: &str) -> Result<Self, (usize, String)> {
        let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
        let (_, first) = lines.next().ok_or((1, "the file is empty".to_string()))?;
        let header: HeaderJson = serde_json::from_str(first).map_err(|e| (1, format!("the first line is not a case line: {e}")))?;
        if header.kind != "case" {
            return Err((1, format!("the first line is of kind {:?}, expected \"case\"", header.kind)));
        }
        if header.format != RESULTS_FORMAT {
            return Err((1, format!("format {:?}, this layercheck reads {RESULTS_FORMAT:?}", header.format)));
        }
        let mut results = CaseResults {
            case: header.case,
            source: header.source,
            margins: header.margins.map(|m| Margins { rtol: m.rtol, atol: m.atol }),
            setup_error: header.setup_error,
            notes: header.notes,
            attribution_unavailable: header.attribution_unavailable,
            logits: header.logits.map(LogitsJson::back),
            layers: Vec::new(),
        };
        for (i, text) in lines {
            let n = i + 1;
            let row: RecordJson = serde_json::from_str(text).map_err(|e| (n, e.to_string()))?;
            if row.kind != "record" {
                return Err((n, format!("a line of kind {:?}, expected \"record\"", row.kind)));
            }
            let nf = NonFinite(row.nonfinite);
            let bad = |what: &str| (n, what.to_string());
            if results.layers.last().map(|l| &l.key) != Some(&row.layer) {
                if results.layers.iter().any(|l| l.key == row.layer) {
                    return Err(bad("the lines of one layer must follow each other"));
                }
                let bounds = row.bounds.as_ref().map(|b| Bounds { abs_diff_l2: nf.back("bounds.abs_diff_l2", b.abs_diff_l2), cos_mean: nf.back("bounds.cos_mean", b.cos_mean), cos_rule: row.cos_rule });
                results.layers.push(LayerResults { key: row.layer.clone(), bounds, records: Vec::new(), error: None, attribution: row.attribution, location: None });
            }
            let layer = results.layers.last_mut().ok_or_else(|| bad("no layer"))?;
            if let Some(l) = &row.location {
                layer.location = Some(l.back(&nf));
            }
            if row.verdict == RecordVerdict::Error {
                layer.error = Some(row.error.unwrap_or_default());
                continue;
            }
            let m = row.metrics.ok_or_else(|| bad("a record line without metrics"))?;
            let number = |path: &str, v: Option<f64>| nf.back(path, v).ok_or_else(|| (n, format!("{path} is null and not listed in nonfinite")));
            let observation = Observation {
                record: row.record.ok_or_else(|| bad("a record line without record"))?,
                item: row.item.ok_or_else(|| bad("a record line without item"))?,
                abs_diff_l2: number("metrics.abs_diff_l2", m.abs_diff_l2)?,
                abs_diff_max: number("metrics.abs_diff_max", m.abs_diff_max)?,
                cos_mean: number("metrics.cos_mean", m.cos_mean)?,
                cos_min: number("metrics.cos_min", m.cos_min)?,
                worst_token: m.worst_token,
                target_nonfinite: m.target_nonfinite,
                reference_nonfinite: m.reference_nonfinite,
            };
            let mut failures = Vec::new();
            for (j, f) in row.failures.into_iter().enumerate() {
                failures.push(Failure {
                    quantity: f.quantity,
                    observed: number(&format!("failures.{j}.observed"), f.observed)?,
                    threshold: nf.back(&format!("failures.{j}.threshold"), f.threshold),
                    excess: number(&format!("failures.{j}.excess"), f.excess)?,
                    reason: f.reason,
                });
            }
            layer.records.push(RecordResult { observation, rel_l2: nf.back("metrics.rel_l2", m.rel_l2), sqnr_db: nf.back("metrics.sqnr_db", m.sqnr_db), failures });
        }
        Ok(results)
    }
}

fn line<T: Serialize>(value: &T) -> String {
    // Plain structs of strings, integers, finite floats and options: serde_json cannot fail.
    let mut s = serde_json::to_string(value).unwrap_or_default();
    s.push('\n');
    s
}

/// The `nonfinite` map of one line: path -> "NaN" | "inf" | "-inf".
#[derive(Default)]
struct NonFinite(BTreeMap<String, String>);

impl NonFinite {
    /// `v` as a JSON number, or null with a flag when it is not finite.
    fn num(&mut self, path: &str, v: f64) -> Option<f64> {
        if v.is_finite() {
            return Some(v);
        }
        let flag = if v.is_nan() {
            "NaN"
        } else if v > 0.0 {
            "inf"
        } else {
            "-inf"
        };
        self.0.insert(path.to_string(), flag.to_string());
        None
    }

    fn opt(&mut self, path: &str, v: Option<f64>) -> Option<f64> {
        v.and_then(|v| self.num(path, v))
    }

    /// The number back: the value, or the flagged non-finite value, or `None` (absent).
    fn back(&self, path: &str, v: Option<f64>) -> Option<f64> {
        v.or_else(|| match self.0.get(path).map(String::as_str) {
            Some("NaN") => Some(f64::NAN),
            Some("inf") => Some(f64::INFINITY),
            Some("-inf") => Some(f64::NEG_INFINITY),
            _ => None,
        })
    }
}

#[derive(Serialize, Deserialize)]
struct HeaderJson {
    kind: String,
    format: String,
    case: String,
    source: String,
    margins: Option<MarginsJson>,
    setup_error: Option<String>,
    #[serde(default)]
    notes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    attribution_unavailable: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    logits: Option<LogitsJson>,
    #[serde(default)]
    layercheck_version: String,
}

/// One token of [`LogitsJson`]: `[prompt, position, ce, diff_mean, kl, top1]`.
type TokenRow = (usize, usize, Option<f64>, Option<f64>, Option<f64>, bool);

/// The case line's `logits`: the outcome with each token a list `[prompt, position, ce,
/// diff_mean, kl, top1]`; a non-finite value is `null` and reads back as NaN (which fails as an
/// infinity would).
#[derive(Serialize, Deserialize)]
struct LogitsJson {
    top_k: usize,
    #[serde(default)]
    steps: bool,
    ce: Option<f64>,
    diff_mean: Option<f64>,
    kl: Option<f64>,
    failure_rate: f64,
    source: String,
    error: Option<String>,
    tokens: Vec<TokenRow>,
}

impl LogitsJson {
    fn of(l: &LogitsOutcome) -> Self {
        let finite = |v: f64| Some(v).filter(|v| v.is_finite());
        let b = &l.bounds;
        LogitsJson {
            top_k: l.top_k,
            steps: l.steps,
            ce: b.ce.and_then(finite),
            diff_mean: b.diff_mean.and_then(finite),
            kl: b.kl.and_then(finite),
            failure_rate: b.failure_rate,
            source: b.source.clone(),
            error: l.error.clone(),
            tokens: l.tokens.iter().map(|t| (t.prompt, t.position, finite(t.ce), finite(t.diff_mean), finite(t.kl), t.top1)).collect(),
        }
    }

    fn back(self) -> LogitsOutcome {
        let v = |x: Option<f64>| x.unwrap_or(f64::NAN);
        let tokens = self.tokens.into_iter().map(|(prompt, position, ce, diff, kl, top1)| TokenLogits { prompt, position, ce: v(ce), diff_mean: v(diff), kl: v(kl), top1 }).collect();
        let bounds = LogitsBounds { ce: self.ce, diff_mean: self.diff_mean, kl: self.kl, failure_rate: self.failure_rate, source: self.source };
        LogitsOutcome { top_k: self.top_k, steps: self.steps, tokens, bounds, error: self.error }
    }
}

#[derive(Serialize, Deserialize)]
struct MarginsJson {
    rtol: f64,
    atol: f64,
}

fn is_deficit(rule: &CosRule) -> bool {
    *rule == CosRule::Deficit
}

#[derive(Serialize, Deserialize)]
struct RecordJson {
    kind: String,
    case: String,
    order: usize,
    layer: String,
    module: String,
    record: Option<String>,
    item: Option<usize>,
    metrics: Option<MetricsJson>,
    bounds: Option<PairJson>,
    /// How the cos margin is taken: "deficit" (layercheck's, the default) or "seed" (deepview's).
    #[serde(default, skip_serializing_if = "is_deficit")]
    cos_rule: CosRule,
    allowed: Option<PairJson>,
    verdict: RecordVerdict,
    #[serde(default)]
    failures: Vec<FailureJson>,
    error: Option<String>,
    /// "introduced" or "inherited" for a failing layer whose attribution is known; absent
    /// otherwise (and in files written before attribution).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    attribution: Option<Attribution>,
    /// The layer's worst tokens, channels and per-token error, on its first line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    location: Option<LocationJson>,
    #[serde(default)]
    nonfinite: BTreeMap<String, String>,
}

/// [`ErrorLocation`] in JSON: non-finite numbers null and flagged in the line's `nonfinite`.
#[derive(Serialize, Deserialize)]
struct LocationJson {
    tokens: Vec<TokenJson>,
    channels: Vec<ChannelJson>,
    total_sq: Option<f64>,
    token_sq: Vec<Option<f64>>,
}

#[derive(Serialize, Deserialize)]
struct TokenJson {
    record: String,
    item: usize,
    token: u64,
    sq: Option<f64>,
}

#[derive(Serialize, Deserialize)]
struct ChannelJson {
    channel: u64,
    share: Option<f64>,
}

impl LocationJson {
    fn of(l: &ErrorLocation, flags: &mut BTreeMap<String, String>) -> Self {
        let mut nf = NonFinite(std::mem::take(flags));
        let tokens = l.tokens.iter().enumerate().map(|(i, t)| TokenJson { record: t.record.clone(), item: t.item, token: t.token, sq: nf.num(&format!("location.tokens.{i}.sq"), t.sq) }).collect();
        let channels = l.channels.iter().enumerate().map(|(i, c)| ChannelJson { channel: c.channel, share: nf.num(&format!("location.channels.{i}.share"), c.share) }).collect();
        let token_sq = l.token_sq.iter().enumerate().map(|(i, v)| nf.num(&format!("location.token_sq.{i}"), *v)).collect();
        let total_sq = nf.num("location.total_sq", l.total_sq);
        *flags = nf.0;
        LocationJson { tokens, channels, total_sq, token_sq }
    }

    fn back(&self, nf: &NonFinite) -> ErrorLocation {
        let v = |path: String, x: Option<f64>| nf.back(&path, x).unwrap_or(f64::NAN);
        ErrorLocation {
            tokens: self.tokens.iter().enumerate().map(|(i, t)| TokenError { record: t.record.clone(), item: t.item, token: t.token, sq: v(format!("location.tokens.{i}.sq"), t.sq) }).collect(),
            channels: self.channels.iter().enumerate().map(|(i, c)| ChannelShare { channel: c.channel, share: v(format!("location.channels.{i}.share"), c.share) }).collect(),
            total_sq: v("location.total_sq".into(), self.total_sq),
            token_sq: self.token_sq.iter().enumerate().map(|(i, x)| v(format!("location.token_sq.{i}"), *x)).collect(),
            channel_sq: Vec::new(),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct MetricsJson {
    abs_diff_l2: Option<f64>,
    abs_diff_max: Option<f64>,
    cos_mean: Option<f64>,
    cos_min: Option<f64>,
    worst_token: u64,
    target_nonfinite: u64,
    reference_nonfinite: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rel_l2: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sqnr_db: Option<f64>,
}

#[derive(Serialize, Deserialize)]
struct PairJson {
    abs_diff_l2: Option<f64>,
    cos_mean: Option<f64>,
}

/// A record line's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RecordVerdict {
    Pass,
    Fail,
    /// No thresholds, so no verdict (a compact file's report).
    Unchecked,
    /// The record could not be compared; the line's `error` says why.
    Error,
}

#[derive(Serialize, Deserialize)]
struct FailureJson {
    quantity: layercheck_suite::verdict::Quantity,
    observed: Option<f64>,
    threshold: Option<f64>,
    excess: Option<f64>,
    reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use layercheck_suite::outcome::LayerOutcome;
    use layercheck_suite::verdict::check;

    fn obs(record: &str, abs: f64, cos: f64) -> Observation {
        Observation { record: record.into(), item: 0, abs_diff_l2: abs, abs_diff_max: abs / 4.0, cos_mean: cos, cos_min: cos - 1e-4, worst_token: 2, target_nonfinite: 0, reference_nonfinite: 0 }
    }

    fn outcome() -> CaseOutcome {
        let m = Margins::default();
        let b = Bounds::new(Some(0.5), Some(0.999));
        let layer = |key: &str, o: Observation| {
            let failures = check(&o, &b, &m).into_iter().map(|f| (0, f)).collect();
            LayerOutcome { key: key.into(), bounds: b, observations: vec![o], failures, error: None, attribution: None, location: None }
        };
        let mut nan = obs("model.base_model.layers0.attn.dense", f64::NAN, f64::NAN);
        nan.target_nonfinite = 3;
        nan.abs_diff_max = f64::INFINITY;
        CaseOutcome {
            case: "m::t::fwd::b1::s8".into(),
            setup_error: None,
            layers: vec![
                layer("model.base_model.embedding", obs("model.base_model.embedding", 0.0, 1.0)),
                layer("model.base_model.layers0.attn.dense", nan),
                LayerOutcome { key: "model.head".into(), bounds: Bounds::new(None, Some(f64::NEG_INFINITY)), observations: vec![], failures: vec![], error: Some("no record".into()), attribution: None, location: None },
            ],
            notes: vec!["thresholds: t.json".into()],
            attribution_unavailable: None,
            logits: None,
        }
    }

    #[test]
    fn jsonl_round_trips_nan_and_inf_through_null_and_flags() {
        let results = CaseResults::from_outcome(&outcome(), &Margins::default());
        let text = results.to_jsonl();
        assert_eq!(text.lines().count(), 4, "{text}");
        for l in text.lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert!(v.is_object());
        }
        let nan_line: serde_json::Value = serde_json::from_str(text.lines().nth(2).unwrap()).unwrap();
        assert!(nan_line["metrics"]["abs_diff_l2"].is_null());
        assert_eq!(nan_line["nonfinite"]["metrics.abs_diff_l2"], "NaN");
        assert_eq!(nan_line["nonfinite"]["metrics.abs_diff_max"], "inf");
        assert_eq!(nan_line["verdict"], "fail");
        let error_line: serde_json::Value = serde_json::from_str(text.lines().nth(3).unwrap()).unwrap();
        assert_eq!(error_line["verdict"], "error");
        assert_eq!(error_line["nonfinite"]["bounds.cos_mean"], "-inf");
        assert!(error_line["bounds"]["abs_diff_l2"].is_null() && error_line["nonfinite"].get("bounds.abs_diff_l2").is_none());

        let back = CaseResults::from_jsonl(&text).unwrap();
        // NaN != NaN: compare the JSON text of both.
        assert_eq!(back.to_jsonl(), text);
        let o = &back.layers[1].records[0].observation;
        assert!(o.abs_diff_l2.is_nan() && o.abs_diff_max == f64::INFINITY && o.target_nonfinite == 3);
        assert!(back.layers[1].records[0].failures[1].excess.is_nan());
        assert_eq!(back.layers[2].error.as_deref(), Some("no record"));
        assert_eq!(back.layers[2].bounds.unwrap().cos_mean, Some(f64::NEG_INFINITY));
    }

    #[test]
    fn attribution_and_location_round_trip_and_old_files_stay_readable() {
        let mut o = outcome();
        let mut loc = ErrorLocation::empty();
        loc.add("model.base_model.layers0.attn.dense", &[vec![1.0, f64::NAN]], &[3.0, 1.0]);
        o.layers[1].attribution = Some(Attribution::Introduced);
        o.layers[1].location = Some(loc);
        // A passing layer's location is written too (the heat strip shows every layer).
        let mut passing = ErrorLocation::empty();
        passing.add("model.base_model.embedding", &[vec![0.0]], &[0.0]);
        o.layers[0].location = Some(passing);
        o.attribution_unavailable = Some("why\n(hint: how)".into());
        let text = CaseResults::from_outcome(&o, &Margins::default()).to_jsonl();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines[0]["attribution_unavailable"], "why\n(hint: how)");
        assert!(lines[1].get("attribution").is_none() && lines[1]["location"]["token_sq"][0] == 0.0, "{text}");
        assert_eq!(lines[2]["attribution"], "introduced");
        assert_eq!(lines[2]["location"]["channels"][0]["channel"], 0);
        assert_eq!(lines[2]["nonfinite"]["location.token_sq.1"], "NaN");
        let back = CaseResults::from_jsonl(&text).unwrap();
        assert_eq!(back.to_jsonl(), text);
        assert_eq!(back.layers[1].attribution, Some(Attribution::Introduced));
        assert!(back.layers[1].location.as_ref().unwrap().tokens[0].sq.is_nan());
        assert_eq!(back.attribution_unavailable.as_deref(), Some("why\n(hint: how)"));
        // A file written before attribution (no such fields) reads with none.
        let old = CaseResults::from_outcome(&outcome(), &Margins::default()).to_jsonl();
        assert!(!old.contains("attribution") && !old.contains("location"));
        let back = CaseResults::from_jsonl(&old).unwrap();
        assert!(back.layers.iter().all(|l| l.attribution.is_none() && l.location.is_none()));
    }

    #[test]
    fn bad_lines_are_refused_with_their_number() {
        let text = CaseResults::from_outcome(&outcome(), &Margins::default()).to_jsonl();
        let broken = text.replacen("\"metrics\":{\"abs_diff_l2\":0.0", "\"metrics\":{\"abs_diff_l2\":null", 1);
        assert_ne!(broken, text);
        let (line, problem) = CaseResults::from_jsonl(&broken).unwrap_err();
        assert_eq!(line, 2);
        assert!(problem.contains("metrics.abs_diff_l2 is null"), "{problem}");
        let (line, _) = CaseResults::from_jsonl(&text.replace("layercheck-results/1", "layercheck-results/9")).unwrap_err();
        assert_eq!(line, 1);
        assert!(CaseResults::from_jsonl("").is_err());
    }
}
