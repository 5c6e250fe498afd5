//! How often thresholds derived from N baseline prompts would fail a healthy run on a prompt they
//! have not seen, estimated by leaving one prompt out: for each prompt of the baseline, the
//! per-shape thresholds are derived again from the other prompts (same percentile, same headroom)
//! and that prompt's observations are judged as the suite judges them (margins on `abs_diff_l2`
//! and on `1 - cos_mean`, `crates/suite/src/verdict.rs`).
//!
//! - A *layer test* is one layer of one held-out prompt (the layer test of a batch-1 case on it);
//!   it fails when any of its observations (forward calls) fails. The per-layer-test rate is the
//!   share of failing ones, over every layer of every shape and prompt.
//! - A *prompt* fails when any of its layer tests fails (a batch-1 case's summary).
//!
//! With the percentile at 100 a held-out prompt can fail a layer only where it alone is the
//! largest observation, so the rate is at most one per layer and about 1/N; a *headroom* h >= 1
//! widens every threshold (`abs_diff_l2`, `abs_diff_max`, `rel_l2` times h; `1 - cos_mean`,
//! `1 - cos_min` times h; `sqnr_db` minus 20 log10 h). [`choose_headroom`] picks the smallest
//! headroom of a fixed ladder whose estimated per-layer-test rate meets a target. The estimate is
//! only as fine as the baseline: with N prompts and L layers a rate below 1/(N L) reads as 0.
//!
//! Only compact files say which prompt an observation belongs to (file and batch item), so the
//! estimate is made from them.

use std::collections::BTreeMap;

use super::percentile::percentile_linear;
use crate::formats::py_json::PyJson;
use layercheck_suite::matrix::Margins;

/// The headrooms [`choose_headroom`] tries, in order.
pub const HEADROOM_LADDER: [f64; 10] = [1.0, 1.05, 1.1, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0, 100.0];

/// One observation: (prompt, `abs_diff_l2`, `cos_mean`).
pub type PromptObservation = (usize, f64, f64);

/// Per (batch size, sequence length), per layer key, the observations with their prompt.
#[derive(Debug, Clone, Default)]
pub struct PromptObservations {
    pub shapes: BTreeMap<(u64, u64), BTreeMap<String, Vec<PromptObservation>>>,
}

/// The estimate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FalseFailureEstimate {
    /// Prompts left out in turn (over every shape).
    pub prompts: usize,
    pub failing_prompts: usize,
    pub layer_tests: usize,
    pub failing_layer_tests: usize,
    /// The percentile and headroom the thresholds were derived with.
    pub percentile: f64,
    pub headroom: f64,
    pub margins: Margins,
    /// The per-layer-test rate asked for, when the headroom was chosen to meet it.
    pub target: Option<f64>,
    /// (failing layer tests, failing prompts) of the same thresholds without headroom, when the
    /// headroom was chosen.
    pub unwidened: Option<(usize, usize)>,
}

impl FalseFailureEstimate {
    /// Failing layer tests over layer tests.
    pub fn per_layer_test(&self) -> f64 {
        self.failing_layer_tests as f64 / self.layer_tests.max(1) as f64
    }

    /// Failing prompts over prompts.
    pub fn per_prompt(&self) -> f64 {
        self.failing_prompts as f64 / self.prompts.max(1) as f64
    }

    pub(crate) fn to_py_json(self) -> PyJson {
        let mut e = vec![
            ("method".to_string(), PyJson::Str("leave-one-prompt-out".into())),
            ("prompts".to_string(), PyJson::Int(self.prompts as i64)),
            ("failing_prompts".to_string(), PyJson::Int(self.failing_prompts as i64)),
            ("layer_tests".to_string(), PyJson::Int(self.layer_tests as i64)),
            ("failing_layer_tests".to_string(), PyJson::Int(self.failing_layer_tests as i64)),
            ("per_layer_test".to_string(), PyJson::Float(self.per_layer_test())),
            ("per_prompt".to_string(), PyJson::Float(self.per_prompt())),
            ("rtol".to_string(), PyJson::Float(self.margins.rtol)),
            ("atol".to_string(), PyJson::Float(self.margins.atol)),
        ];
        if let Some(t) = self.target {
            e.push(("target".to_string(), PyJson::Float(t)));
        }
        if let Some((layer_tests, prompts)) = self.unwidened {
            e.push(("failing_layer_tests_without_headroom".to_string(), PyJson::Int(layer_tests as i64)));
            e.push(("failing_prompts_without_headroom".to_string(), PyJson::Int(prompts as i64)));
        }
        PyJson::Object(e)
    }
}

/// `threshold` of a "larger is worse" quantity widened by `headroom`.
pub fn widen_upper(threshold: f64, headroom: f64) -> f64 {
    threshold * headroom
}

/// A cos threshold widened by `headroom`: its distance from 1 times `headroom`.
pub fn widen_cos(threshold: f64, headroom: f64) -> f64 {
    1.0 - (1.0 - threshold) * headroom
}

impl PromptObservations {
    /// Adds one observation of `key` at a shape.
    pub fn add(&mut self, batch: u64, seq: u64, key: &str, prompt: usize, abs_diff_l2: f64, cos_mean: f64) {
        self.shapes.entry((batch, seq)).or_default().entry(key.to_string()).or_default().push((prompt, abs_diff_l2, cos_mean));
    }

    /// The leave-one-prompt-out estimate at percentile `p` and `headroom`, judged with `margins`.
    pub fn estimate(&self, p: f64, headroom: f64, margins: Margins) -> FalseFailureEstimate {
        let mut e = FalseFailureEstimate { prompts: 0, failing_prompts: 0, layer_tests: 0, failing_layer_tests: 0, percentile: p, headroom, margins, target: None, unwidened: None };
        let limit = |th: f64| th + margins.rtol * th.abs() + margins.atol;
        for layers in self.shapes.values() {
            let mut prompts: Vec<usize> = layers.values().flatten().map(|o| o.0).collect();
            prompts.sort_unstable();
            prompts.dedup();
            // Leaving out the only prompt leaves nothing to derive from.
            if prompts.len() < 2 {
                continue;
            }
            for &held in &prompts {
                let mut prompt_fails = false;
                for obs in layers.values() {
                    let (mine, others): (Vec<&PromptObservation>, Vec<&PromptObservation>) = obs.iter().partition(|o| o.0 == held);
                    if mine.is_empty() || others.is_empty() {
                        continue;
                    }
                    let abs: Vec<f64> = others.iter().map(|o| o.1).collect();
                    let cos: Vec<f64> = others.iter().map(|o| o.2).collect();
                    let abs_th = percentile_linear(&abs, p).map(|t| widen_upper(t, headroom));
                    let cos_th = percentile_linear(&cos, 100.0 - p).map(|t| widen_cos(t, headroom));
                    // NaN compares false, so a NaN observation or threshold fails, as in the suite.
                    let fails = mine.iter().any(|o| {
                        let abs_ok = abs_th.is_some_and(|t| o.1 <= limit(t));
                        let cos_ok = cos_th.is_some_and(|t| 1.0 - o.2 <= limit(1.0 - t));
                        !(abs_ok && cos_ok)
                    });
                    e.layer_tests += 1;
                    if fails {
                        e.failing_layer_tests += 1;
                        prompt_fails = true;
                    }
                }
                e.prompts += 1;
                e.failing_prompts += usize::from(prompt_fails);
            }
        }
        e
    }
}

/// The smallest headroom of [`HEADROOM_LADDER`] whose estimated per-layer-test rate is at most
/// `target`, with its estimate; the last one's when none meets it (the caller says so).
pub fn choose_headroom(obs: &PromptObservations, p: f64, margins: Margins, target: f64) -> (FalseFailureEstimate, bool) {
    let mut last = None;
    let base = obs.estimate(p, 1.0, margins);
    for h in HEADROOM_LADDER {
        let mut e = obs.estimate(p, h, margins);
        e.target = Some(target);
        e.unwidened = Some((base.failing_layer_tests, base.failing_prompts));
        if e.per_layer_test() <= target {
            return (e, true);
        }
        last = Some(e);
    }
    (last.unwrap_or_else(|| obs.estimate(p, 1.0, margins)), false)
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: Margins = Margins { rtol: 0.05, atol: 1e-6 };

    /// 10 prompts, 2 layers: layer a has one prompt far above the others.
    fn baseline() -> PromptObservations {
        let mut o = PromptObservations::default();
        for prompt in 0..10 {
            let a = if prompt == 3 { 2.0 } else { 1.0 + prompt as f64 * 0.001 };
            o.add(1, 32, "a", prompt, a, 0.999);
            o.add(1, 32, "b", prompt, 1.0, 1.0 - 1e-4 * (1.0 + prompt as f64 / 100.0));
        }
        o
    }

    #[test]
    fn leaving_out_the_prompt_with_the_largest_observation_fails_it() {
        let e = baseline().estimate(100.0, 1.0, M);
        assert_eq!((e.prompts, e.layer_tests), (10, 20));
        // Only prompt 3 on layer a (2.0 against at most 1.009): within 5% otherwise.
        assert_eq!((e.failing_layer_tests, e.failing_prompts), (1, 1));
        assert!((e.per_layer_test() - 0.05).abs() < 1e-12 && (e.per_prompt() - 0.1).abs() < 1e-12);
        // A headroom of 2 (plus the 5% margin) covers it.
        assert_eq!(baseline().estimate(100.0, 2.0, M).failing_layer_tests, 0);
        // A lower percentile fails more held-out prompts (without margins, which would cover
        // the 0.1% spread of the others).
        let none = Margins { rtol: 0.0, atol: 0.0 };
        assert!(baseline().estimate(50.0, 1.0, none).failing_layer_tests > 1);
    }

    #[test]
    fn the_chosen_headroom_is_the_smallest_that_meets_the_target() {
        let (e, met) = choose_headroom(&baseline(), 100.0, M, 0.01);
        assert!(met);
        assert_eq!(e.headroom, 2.0);
        assert_eq!(e.target, Some(0.01));
        let (e, met) = choose_headroom(&baseline(), 100.0, M, 0.06);
        assert!(met && e.headroom == 1.0);
    }

    #[test]
    fn one_prompt_gives_no_estimate_and_nan_fails() {
        let mut o = PromptObservations::default();
        o.add(1, 32, "a", 0, 1.0, 1.0);
        assert_eq!(o.estimate(100.0, 1.0, M).prompts, 0);
        o.add(1, 32, "a", 1, f64::NAN, 1.0);
        assert_eq!(o.estimate(100.0, 1.0, M).failing_layer_tests, 2, "the NaN prompt fails, and so does the one judged by a NaN threshold");
    }

    #[test]
    fn widening_scales_the_distance_from_one_for_cosines() {
        assert_eq!(widen_upper(0.5, 2.0), 1.0);
        assert!((widen_cos(0.999, 2.0) - 0.998).abs() < 1e-15);
    }
}
