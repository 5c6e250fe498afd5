//! What a report shows of each layer: its worst observations, its thresholds plus margin, how much
//! of that allowance it used, its verdict and its sub-module group.

use layercheck_suite::matrix::Margins;
use layercheck_suite::verdict::{allowed, Bounds};
use crate::hooks::ModuleKey;

use super::results::{CaseResults, LayerResults};
use super::submodule::Submodule;
use layercheck_suite::verdict::Quantity;

/// A short label of a key's place in the model: `emb`, `L7`, `norm`, `base`, `head`, `model`.
pub fn short_label(key: &str) -> String {
    let (base, _) = crate::formats::case::strip_iter(key);
    match base.parse::<ModuleKey>() {
        Ok(ModuleKey::Embedding) => "emb".into(),
        Ok(ModuleKey::Layer(i, _)) => format!("L{i}"),
        Ok(ModuleKey::DecNorm) => "norm".into(),
        Ok(ModuleKey::BaseModel) => "base".into(),
        Ok(ModuleKey::Head) => "head".into(),
        Ok(ModuleKey::Model) => "model".into(),
        Err(_) => base,
    }
}

/// A layer's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail,
    /// The layer could not be compared.
    Error,
    /// No thresholds were given.
    Unchecked,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "FAIL",
            Verdict::Error => "error",
            Verdict::Unchecked => "-",
        }
    }

    /// Failed or could not be compared.
    pub fn is_bad(self) -> bool {
        matches!(self, Verdict::Fail | Verdict::Error)
    }
}

/// The share of an allowance that `distance` uses (`distance / allowance`; above 1 fails). NaN
/// uses an infinite share, never none.
fn share(distance: f64, allowance: f64) -> f64 {
    if distance.is_nan() {
        return f64::INFINITY;
    }
    if allowance <= 0.0 {
        return if distance <= allowance { 0.0 } else { f64::INFINITY };
    }
    distance.max(0.0) / allowance
}

/// One row of a report.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerView {
    /// Index in forward order.
    pub order: usize,
    pub key: String,
    pub submodule: Submodule,
    /// Number of records (forward calls x prompts) and how many failed.
    pub records: usize,
    pub failing_records: usize,
    /// Largest `abs_diff_l2` over the records (NaN if any is NaN); `None` without records.
    pub abs_diff_l2: Option<f64>,
    /// Smallest `cos_mean` over the records (NaN if any is NaN).
    pub cos_mean: Option<f64>,
    pub bounds: Option<Bounds>,
    /// Thresholds plus margin.
    pub allowed: Option<Bounds>,
    /// The largest share of an allowance used by a record (above 1 fails), and its quantity:
    /// `abs_diff_l2`, `cos_mean` (on `1 - cos`) or `nonfinite` (NaN/inf on the target side).
    pub used: Option<(f64, Quantity)>,
    pub verdict: Verdict,
    /// The layer's error, or the reason of its worst failure.
    pub why: Option<String>,
}

impl LayerView {
    fn new(order: usize, layer: &LayerResults, margins: Option<&Margins>) -> Self {
        let obs = || layer.records.iter().map(|r| &r.observation);
        let worst = |values: Vec<f64>, worse: fn(f64, f64) -> bool| -> Option<f64> {
            values.into_iter().reduce(|a, b| if a.is_nan() || (!b.is_nan() && !worse(b, a)) { a } else { b })
        };
        let abs_diff_l2 = worst(obs().map(|o| o.abs_diff_l2).collect(), |b, a| b > a);
        let cos_mean = worst(obs().map(|o| o.cos_mean).collect(), |b, a| b < a);
        let bounds = layer.bounds.filter(|_| margins.is_some());
        let allowed_b = match (bounds, margins) {
            (Some(b), Some(m)) => Some(allowed(&b, m)),
            _ => None,
        };
        let mut used: Option<(f64, Quantity)> = None;
        if let Some(a) = allowed_b {
            let mut consider = |v: f64, q: Quantity| {
                if used.is_none_or(|(u, _)| v > u) {
                    used = Some((v, q));
                }
            };
            for o in obs() {
                if o.target_nonfinite > 0 {
                    consider(f64::INFINITY, Quantity::NonFinite);
                }
                if let Some(lim) = a.abs_diff_l2 {
                    consider(share(o.abs_diff_l2, lim), Quantity::AbsDiffL2);
                }
                if let Some(lim) = a.cos_mean {
                    consider(share(1.0 - o.cos_mean, 1.0 - lim), Quantity::CosMean);
                }
            }
        }
        let failing_records = layer.records.iter().filter(|r| !r.failures.is_empty()).count();
        let verdict = if layer.error.is_some() {
            Verdict::Error
        } else if margins.is_none() {
            Verdict::Unchecked
        } else if failing_records > 0 {
            Verdict::Fail
        } else {
            Verdict::Pass
        };
        let why = layer.error.clone().or_else(|| {
            let all = layer.records.iter().flat_map(|r| r.failures.iter());
            // The worst failure: non-comparable (NaN excess) first, then the largest excess.
            all.max_by(|a, b| {
                let key = |e: f64| if e.is_nan() { f64::INFINITY } else { e };
                key(a.excess).total_cmp(&key(b.excess))
            })
            .map(|f| f.reason.clone())
        });
        LayerView { order, key: layer.key.clone(), submodule: Submodule::of(&layer.key), records: layer.records.len(), failing_records, abs_diff_l2, cos_mean, bounds, allowed: allowed_b, used, verdict, why }
    }

    /// The ranking key of [`worst_layers`]: the share used; a bad layer without one ranks first.
    fn rank(&self) -> f64 {
        match (self.used, self.verdict.is_bad()) {
            (Some((u, _)), false) => u,
            (Some((u, _)), true) if u > 1.0 => u,
            (_, true) => f64::INFINITY,
            (None, false) => f64::NEG_INFINITY,
        }
    }
}

/// One view per layer, in forward order.
pub fn layer_views(results: &CaseResults) -> Vec<LayerView> {
    results.layers.iter().enumerate().map(|(i, l)| LayerView::new(i, l, results.margins.as_ref())).collect()
}

/// The verdict on a whole case, which every rendering (headline, page colour, plot title) states.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CaseVerdict<'a> {
    /// The case could not be computed: nothing was compared.
    SetupError,
    /// Computed, but no layer was recorded.
    NothingRecorded,
    /// No thresholds: metrics only.
    Unchecked,
    Pass,
    /// `failing` layers failed and `errors` could not be compared; `first` in forward order.
    Fail { failing: usize, errors: usize, first: &'a LayerView },
}

/// The verdict on the case of `results`, whose layers are `views`.
pub fn case_verdict<'a>(results: &CaseResults, views: &'a [LayerView]) -> CaseVerdict<'a> {
    if results.setup_error.is_some() {
        return CaseVerdict::SetupError;
    }
    if views.is_empty() {
        return CaseVerdict::NothingRecorded;
    }
    if results.margins.is_none() {
        return CaseVerdict::Unchecked;
    }
    match first_divergent(views) {
        None => CaseVerdict::Pass,
        Some(first) => CaseVerdict::Fail {
            failing: views.iter().filter(|v| v.verdict == Verdict::Fail).count(),
            errors: views.iter().filter(|v| v.verdict == Verdict::Error).count(),
            first,
        },
    }
}

/// The first layer that failed or could not be compared, in forward order.
pub fn first_divergent(views: &[LayerView]) -> Option<&LayerView> {
    views.iter().find(|v| v.verdict.is_bad())
}

/// The `n` layers that used most of their allowance, worst first (ties in forward order). With
/// no verdicts, those with the largest `1 - cos_mean`.
pub fn worst_layers(views: &[LayerView], n: usize) -> Vec<&LayerView> {
    let mut ranked: Vec<&LayerView> = views.iter().collect();
    if views.iter().all(|v| v.verdict == Verdict::Unchecked) {
        let distance = |v: &LayerView| v.cos_mean.map(|c| if c.is_nan() { f64::INFINITY } else { 1.0 - c }).unwrap_or(f64::NEG_INFINITY);
        ranked.sort_by(|a, b| distance(b).total_cmp(&distance(a)).then(a.order.cmp(&b.order)));
    } else {
        ranked.retain(|v| v.used.is_some() || v.verdict.is_bad());
        ranked.sort_by(|a, b| b.rank().total_cmp(&a.rank()).then(a.order.cmp(&b.order)));
    }
    ranked.truncate(n);
    ranked
}

#[cfg(test)]
mod tests {
    use super::*;
    use layercheck_suite::verdict::{check, Observation};

    #[test]
    fn groups_and_labels_follow_the_module_key() {
        assert_eq!(Submodule::of("model.base_model.layers3.ff_ln"), Submodule::Ln);
        assert_eq!(Submodule::of("model.base_model.layers3.attn.in_proj.query"), Submodule::Attn);
        assert_eq!(Submodule::of("model.base_model.layers3.ff_sub_layer.w2.iter-40"), Submodule::Ff);
        assert_eq!(Submodule::of("model.head"), Submodule::Output);
        assert_eq!(Submodule::of("lm_head"), Submodule::Other);
        assert_eq!(short_label("model.base_model.layers12.attn.dense"), "L12");
        assert_eq!(short_label("model.base_model.embedding"), "emb");
    }

    /// A share above 1 is exactly what `check` fails, so the report and the verdict agree.
    #[test]
    fn share_above_one_is_what_check_fails() {
        let m = Margins::default();
        let b = Bounds::new(Some(0.25), Some(0.9995));
        let a = allowed(&b, &m);
        for abs in [0.0, 0.2, 0.25, 0.2625, 0.26251, 0.263, 1.0] {
            for cos in [1.0, 0.9995, 0.99948, 0.99947, 0.9994, 0.5] {
                let o = Observation { record: "k".into(), item: 0, abs_diff_l2: abs, abs_diff_max: abs, cos_mean: cos, cos_min: cos, worst_token: 0, target_nonfinite: 0, reference_nonfinite: 0 };
                let fails = check(&o, &b, &m);
                let abs_fails = share(abs, a.abs_diff_l2.unwrap()) > 1.0;
                let cos_fails = share(1.0 - cos, 1.0 - a.cos_mean.unwrap()) > 1.0;
                assert_eq!(fails.iter().any(|f| f.quantity == Quantity::AbsDiffL2), abs_fails, "abs {abs}");
                assert_eq!(fails.iter().any(|f| f.quantity == Quantity::CosMean), cos_fails, "cos {cos}");
            }
        }
        assert_eq!(share(f64::NAN, 1.0), f64::INFINITY);
    }
}
