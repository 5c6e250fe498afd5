//! The verdict on one record of one layer: its observed metrics against the layer's thresholds,
//! with margins in the manner of deepview (spec §5), never passing on NaN.
//!
//! The quantities are those the thresholds were derived from (`src/thresholds/per_shape.rs`): per
//! prompt (batch item) and per forward call, the L2 norm of `abs_diff` and the mean of the
//! per-token cos. A quantity fails when it is worse than its threshold by more than the margin:
//! - `abs_diff_l2 > th` and `abs_diff_l2 - th > rtol * th + atol`;
//! - `cos_mean < th` and `(1 - cos_mean) - (1 - th) > rtol * (1 - th) + atol`. deepview applies
//!   `rtol * th` to the cos itself, which with rtol 0.05 lets cos fall to 0.95 before anything
//!   fails; we apply the same relative margin to the distance from 1, where it means what it
//!   means for `abs_diff`.
//!
//! That holds for layercheck's per-shape thresholds, which bound the true cosine of each prompt.
//! The seed's pooled `cos_sim_avg` is another quantity: the mean, over every token of every prompt
//! and step of the baseline, of the seed's cosine (normalised in f16, so it can exceed 1). A mean
//! bounds no single prompt, and its distance from 1 is mostly f16 rounding, so neither the value
//! nor its deficit is a lower bound on a prompt's true cosine. Such a threshold is applied as
//! deepview applies it ([`CosRule::Seed`]): `cos_mean < th` and `th - cos_mean > rtol * |th| +
//! atol`, which is looser (with rtol 0.05 a cos may fall to 0.95 th).
//!
//! A non-finite observation on the target side, or a missing or NaN threshold, fails.

use serde::{Deserialize, Serialize};

use crate::matrix::Margins;
use crate::number::{cos, sci};

/// The thresholds one record is held to.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bounds {
    pub abs_diff_l2: Option<f64>,
    pub cos_mean: Option<f64>,
    /// How the margin of `cos_mean` is taken.
    #[serde(default)]
    pub cos_rule: CosRule,
}

impl Bounds {
    /// Bounds with layercheck's cos margin ([`CosRule::Deficit`]).
    pub const fn new(abs_diff_l2: Option<f64>, cos_mean: Option<f64>) -> Self {
        Bounds { abs_diff_l2, cos_mean, cos_rule: CosRule::Deficit }
    }
}

/// How the margin of a cos threshold is taken (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CosRule {
    /// layercheck's per-shape thresholds of the true cosine: the margin applies to `1 - cos`.
    #[default]
    Deficit,
    /// The seed's pooled `cos_sim_avg` / `cos_sim_mean`: the margin applies to the cos itself, as
    /// deepview applies it.
    Seed,
}

/// What was observed for one record (one module call, one batch item).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// Record name (`{key}` or `{key}.iter-N`).
    pub record: String,
    pub item: usize,
    pub abs_diff_l2: f64,
    pub abs_diff_max: f64,
    pub cos_mean: f64,
    pub cos_min: f64,
    /// Token (row within the item) of the smallest cos.
    pub worst_token: u64,
    /// NaN or inf elements on the target side that the reference does not have.
    pub target_nonfinite: u64,
    pub reference_nonfinite: u64,
}

/// What a record's failure is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Quantity {
    /// The L2 norm of `abs_diff` per prompt.
    #[serde(rename = "abs_diff_l2")]
    AbsDiffL2,
    /// The mean true cosine over a prompt's tokens.
    #[serde(rename = "cos_mean")]
    CosMean,
    /// NaN or inf on the target side.
    #[serde(rename = "nonfinite")]
    NonFinite,
}

impl Quantity {
    /// The name results.jsonl and messages use.
    pub fn name(self) -> &'static str {
        match self {
            Quantity::AbsDiffL2 => "abs_diff_l2",
            Quantity::CosMean => "cos_mean",
            Quantity::NonFinite => "nonfinite",
        }
    }
}

impl std::fmt::Display for Quantity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a record failed, one entry per failing quantity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub quantity: Quantity,
    pub observed: f64,
    pub threshold: Option<f64>,
    /// How far past the margin (positive: worse); NaN when not comparable.
    pub excess: f64,
    pub reason: String,
}

/// Checks one observation against its bounds.
pub fn check(obs: &Observation, bounds: &Bounds, margins: &Margins) -> Vec<Failure> {
    let mut failures = Vec::new();
    if obs.target_nonfinite > 0 {
        failures.push(Failure {
            quantity: Quantity::NonFinite,
            observed: obs.target_nonfinite as f64,
            threshold: Some(0.0),
            excess: obs.target_nonfinite as f64,
            reason: format!("{} NaN/inf element(s) on the target side (reference: {})", obs.target_nonfinite, obs.reference_nonfinite),
        });
    }
    let allowed = allowed(bounds, margins);
    match (bounds.abs_diff_l2, allowed.abs_diff_l2) {
        (Some(th), Some(allowed)) => {
            // NaN compares false: a NaN observation fails.
            let within = obs.abs_diff_l2 <= allowed;
            if !within {
                failures.push(Failure {
                    quantity: Quantity::AbsDiffL2,
                    observed: obs.abs_diff_l2,
                    threshold: Some(th),
                    excess: obs.abs_diff_l2 - allowed,
                    reason: format!("abs_diff L2 {} > threshold {} + margin (allowed {})", sci(obs.abs_diff_l2), sci(th), sci(allowed)),
                });
            }
        }
        (other, _) => failures.push(missing(Quantity::AbsDiffL2, obs.abs_diff_l2, other)),
    }
    match (bounds.cos_mean, allowed.cos_mean) {
        (Some(th), Some(allowed)) => {
            let within = obs.cos_mean >= allowed;
            if !within {
                let rule = match bounds.cos_rule {
                    CosRule::Deficit => "",
                    CosRule::Seed => "; the seed's pooled cos, margin on the cos as deepview takes it",
                };
                failures.push(Failure {
                    quantity: Quantity::CosMean,
                    observed: obs.cos_mean,
                    threshold: Some(th),
                    excess: allowed - obs.cos_mean,
                    reason: format!("mean cos {} < threshold {} - margin (allowed {}{rule})", cos(obs.cos_mean), cos(th), cos(allowed)),
                });
            }
        }
        (other, _) => failures.push(missing(Quantity::CosMean, obs.cos_mean, other)),
    }
    failures
}

/// The value past which an observation fails, per quantity: `threshold + rtol * |threshold| +
/// atol`, and for the cosine the same margin on `1 - cos` ([`CosRule::Deficit`]) or on the cos
/// itself, `threshold - rtol * |threshold| - atol` ([`CosRule::Seed`]). `None` where the threshold
/// is missing or not finite (such a quantity fails).
pub fn allowed(bounds: &Bounds, margins: &Margins) -> Bounds {
    let limit = |th: f64| th + margins.rtol * th.abs() + margins.atol;
    let cos_limit = |t: f64| match bounds.cos_rule {
        CosRule::Deficit => 1.0 - limit(1.0 - t),
        CosRule::Seed => t - margins.rtol * t.abs() - margins.atol,
    };
    Bounds {
        abs_diff_l2: bounds.abs_diff_l2.filter(|t| t.is_finite()).map(limit),
        cos_mean: bounds.cos_mean.filter(|t| t.is_finite()).map(cos_limit),
        cos_rule: bounds.cos_rule,
    }
}

fn missing(quantity: Quantity, observed: f64, th: Option<f64>) -> Failure {
    let reason = match th {
        None => format!("no {quantity} threshold for this layer and shape"),
        Some(v) => format!("the {quantity} threshold is {}, which cannot be applied", sci(v)),
    };
    Failure { quantity, observed, threshold: th, excess: f64::NAN, reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(abs: f64, cos: f64) -> Observation {
        Observation { record: "k".into(), item: 0, abs_diff_l2: abs, abs_diff_max: abs, cos_mean: cos, cos_min: cos, worst_token: 0, target_nonfinite: 0, reference_nonfinite: 0 }
    }

    const M: Margins = Margins { rtol: 0.05, atol: 1e-6 };
    const B: Bounds = Bounds::new(Some(1.0), Some(0.999));

    #[test]
    fn within_threshold_and_margin_passes() {
        assert!(check(&obs(1.0, 0.999), &B, &M).is_empty());
        // 5% over the abs threshold (plus atol) is still inside the margin.
        assert!(check(&obs(1.05, 0.999), &B, &M).is_empty());
        // 1 - cos may be 5% above 1 - th: 0.001 * 1.05 = 0.00105.
        assert!(check(&obs(0.5, 1.0 - 0.00105), &B, &M).is_empty());
    }

    #[test]
    fn past_the_margin_fails_naming_the_quantity() {
        let f = check(&obs(1.06, 0.999), &B, &M);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].quantity, Quantity::AbsDiffL2);
        assert!((f[0].excess - (1.06 - 1.050001)).abs() < 1e-12);
        let f = check(&obs(0.5, 0.9985), &B, &M);
        assert_eq!(f.iter().map(|f| f.quantity).collect::<Vec<_>>(), [Quantity::CosMean]);
    }

    #[test]
    fn nan_never_passes() {
        let f = check(&obs(f64::NAN, f64::NAN), &B, &M);
        assert_eq!(f.iter().map(|f| f.quantity).collect::<Vec<_>>(), [Quantity::AbsDiffL2, Quantity::CosMean]);
        let mut o = obs(0.0, 1.0);
        o.target_nonfinite = 3;
        assert_eq!(check(&o, &B, &M)[0].quantity, Quantity::NonFinite);
        let nan_th = Bounds::new(Some(f64::NAN), None);
        let f = check(&obs(0.0, 1.0), &nan_th, &M);
        assert_eq!(f.len(), 2);
        assert!(f[1].reason.contains("no cos_mean threshold"));
    }

    #[test]
    fn the_seeds_pooled_cos_takes_its_margin_on_the_cos_itself() {
        // A pooled seed cos above 1 (f16 normalisation): 1.0001 - 0.05 * 1.0001 - 1e-6.
        let seed = Bounds { abs_diff_l2: Some(1.0), cos_mean: Some(1.0001), cos_rule: CosRule::Seed };
        let a = allowed(&seed, &M).cos_mean.unwrap();
        assert!((a - (1.0001 * 0.95 - 1e-6)).abs() < 1e-12, "{a}");
        // A healthy f16 layer's true cos passes it; with layercheck's rule it could not.
        assert!(check(&obs(0.5, 0.999998), &seed, &M).is_empty());
        let deficit = Bounds { cos_rule: CosRule::Deficit, ..seed };
        assert_eq!(check(&obs(0.5, 0.999998), &deficit, &M)[0].quantity, Quantity::CosMean);
        let f = check(&obs(0.5, 0.9), &seed, &M);
        assert!(f[0].reason.contains("as deepview takes it"), "{}", f[0].reason);
    }
}
