//! Logits-level verdicts: what the Python tools' end-to-end test (aiu-fms-testing-utils'
//! `test_decoders.py`, spec §6) checks, in the same case as the per-layer tests, as one `::logits`
//! test per case.
//!
//! Per token (model-forward: every position of every prompt that is not left padding; generate:
//! every step, the logits that chose the step's new token), with `r` the reference's `k` largest
//! logits (k = 20 by default) and `t` the target's logits at the same vocabulary indices:
//! - `ce = -sum softmax(t) * log_softmax(r)`, their cross-entropy (PyTorch's `CrossEntropyLoss`
//!   with `softmax(t)` as soft targets); mostly the entropy of the top-k distribution, so it is
//!   not 0 for identical logits;
//! - `diff_mean = mean |softmax(r) - softmax(t)|`, their mean absolute difference of softmaxes;
//! - `kl = sum softmax(t) * (log_softmax(t) - log_softmax(r))`, which is `ce` minus the entropy
//!   of `softmax(t)`: 0 for identical distributions;
//! - `top1`: whether the target's argmax over the whole vocabulary is the reference's (in
//!   generate mode: whether greedy decoding on the target would have picked the reference's
//!   token at that step).
//!
//! A token fails when a quantity with a threshold is past it by more than the matrix's margins
//! (`th + rtol * |th| + atol`, as the per-layer verdicts; theirs has no margin). The test fails
//! when the share of failing tokens reaches the failure rate (theirs: 0.01, `rate >= 0.01`
//! fails), when a value is NaN or inf, or when there is no token to judge. Top-1 agreement is
//! reported, not judged: with forced decoding a disagreement is a near-tie the other metrics see.

use serde::{Deserialize, Serialize};

use crate::matrix::Margins;

/// The number of reference logits the metrics look at, as `test_decoders.py` takes them.
pub const DEFAULT_TOP_K: usize = 20;
/// The share of failing tokens at which the test fails (`test_decoders.py`'s
/// `FMS_TEST_SHAPES_FAILURE_THRESHOLD`).
pub const DEFAULT_FAILURE_RATE: f64 = 0.01;
/// `test_decoders.py`'s `DEFAULT_METRICS_THRESHOLD` (ce, diff_mean), for a thresholds file that
/// has no logits thresholds.
pub const TEST_DECODERS_DEFAULTS: (f64, f64) = (3.0, 0.001);

/// The metrics of one token.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TokenLogits {
    /// Batch item.
    pub prompt: usize,
    /// Model-forward: the position in the sequence; generate: the step (0 = the first new token).
    pub position: usize,
    pub ce: f64,
    pub diff_mean: f64,
    pub kl: f64,
    pub top1: bool,
}

/// A token quantity that can be thresholded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogitsQuantity {
    Ce,
    DiffMean,
    Kl,
}

impl LogitsQuantity {
    pub const ALL: [LogitsQuantity; 3] = [LogitsQuantity::Ce, LogitsQuantity::DiffMean, LogitsQuantity::Kl];

    /// The name in files and messages (`ce`, `diff_mean`, `kl`: generate_metrics.py's names).
    pub fn name(self) -> &'static str {
        match self {
            LogitsQuantity::Ce => "ce",
            LogitsQuantity::DiffMean => "diff_mean",
            LogitsQuantity::Kl => "kl",
        }
    }

    /// This quantity of `token`.
    pub fn of(self, token: &TokenLogits) -> f64 {
        match self {
            LogitsQuantity::Ce => token.ce,
            LogitsQuantity::DiffMean => token.diff_mean,
            LogitsQuantity::Kl => token.kl,
        }
    }
}

/// The thresholds a case's tokens are held to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogitsBounds {
    pub ce: Option<f64>,
    pub diff_mean: Option<f64>,
    pub kl: Option<f64>,
    /// The share of failing tokens at which the test fails.
    pub failure_rate: f64,
    /// Where the thresholds come from, for the message.
    pub source: String,
}

impl LogitsBounds {
    /// The threshold of `q`.
    pub fn of(&self, q: LogitsQuantity) -> Option<f64> {
        match q {
            LogitsQuantity::Ce => self.ce,
            LogitsQuantity::DiffMean => self.diff_mean,
            LogitsQuantity::Kl => self.kl,
        }
    }
}

/// The logits of one case compared, token by token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogitsOutcome {
    pub top_k: usize,
    /// Whether positions are decode steps (generate mode) rather than prompt positions.
    #[serde(default)]
    pub steps: bool,
    /// Per prompt, then position or step.
    pub tokens: Vec<TokenLogits>,
    pub bounds: LogitsBounds,
    /// Set when the logits could not be compared (then the test fails with it).
    pub error: Option<String>,
}

/// One quantity's result over the case's tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantityVerdict {
    pub quantity: LogitsQuantity,
    pub threshold: Option<f64>,
    /// The value past which a token fails (threshold plus margin).
    pub allowed: Option<f64>,
    /// Tokens past `allowed` (NaN counts as past).
    pub failing: usize,
    /// The largest value over tokens (NaN if any is NaN).
    pub worst: f64,
    /// The token of the largest value.
    pub worst_token: Option<TokenLogits>,
}

/// The verdict of a case's `::logits` test.
#[derive(Debug, Clone, PartialEq)]
pub struct LogitsVerdict {
    pub tokens: usize,
    pub quantities: Vec<QuantityVerdict>,
    /// Tokens failing on at least one quantity.
    pub failing_tokens: usize,
    /// `failing_tokens / tokens`.
    pub failing_share: f64,
    /// Tokens whose top-1 choice agrees with the reference's.
    pub top1_agreeing: usize,
    /// Per prompt, the first position or step whose top-1 differs from the reference's.
    pub first_top1_difference: Vec<(usize, usize)>,
    pub passed: bool,
}

impl LogitsOutcome {
    /// Per position (generate: per step), in order: (position, tokens whose top-1 agrees, tokens).
    pub fn top1_by_position(&self) -> Vec<(usize, usize, usize)> {
        let mut by: std::collections::BTreeMap<usize, (usize, usize)> = std::collections::BTreeMap::new();
        for t in &self.tokens {
            let e = by.entry(t.position).or_default();
            e.0 += usize::from(t.top1);
            e.1 += 1;
        }
        by.into_iter().map(|(p, (a, n))| (p, a, n)).collect()
    }

    /// Judges the tokens against the bounds with `margins`.
    pub fn verdict(&self, margins: &Margins) -> LogitsVerdict {
        let limit = |th: f64| th + margins.rtol * th.abs() + margins.atol;
        let mut failing_token = vec![false; self.tokens.len()];
        let mut quantities = Vec::new();
        let mut nonfinite = false;
        for q in LogitsQuantity::ALL {
            let threshold = self.bounds.of(q);
            let allowed = threshold.filter(|t| t.is_finite()).map(limit);
            let (mut failing, mut worst, mut worst_token) = (0, f64::NEG_INFINITY, None);
            for (i, t) in self.tokens.iter().enumerate() {
                let v = q.of(t);
                nonfinite |= !v.is_finite();
                if v > worst || v.is_nan() && !worst.is_nan() {
                    worst = v;
                    worst_token = Some(*t);
                }
                // A NaN token fails.
                if let Some(a) = allowed {
                    if v.is_nan() || v > a {
                        failing += 1;
                        failing_token[i] = true;
                    }
                }
            }
            quantities.push(QuantityVerdict { quantity: q, threshold, allowed, failing, worst, worst_token });
        }
        let tokens = self.tokens.len();
        let failing_tokens = failing_token.iter().filter(|&&f| f).count();
        let failing_share = if tokens == 0 { f64::NAN } else { failing_tokens as f64 / tokens as f64 };
        let mut first_top1_difference: Vec<(usize, usize)> = Vec::new();
        for t in self.tokens.iter().filter(|t| !t.top1) {
            if !first_top1_difference.iter().any(|(p, _)| *p == t.prompt) {
                first_top1_difference.push((t.prompt, t.position));
            }
        }
        // A set threshold that cannot be applied (NaN, inf) fails, as for layers; an absent one
        // (a file without kl, say) is not applied.
        let unusable = quantities.iter().any(|q| q.threshold.is_some() && q.allowed.is_none());
        let none_applied = quantities.iter().all(|q| q.allowed.is_none());
        let passed = self.error.is_none() && tokens > 0 && !nonfinite && !unusable && !none_applied && failing_share < self.bounds.failure_rate;
        LogitsVerdict { tokens, quantities, failing_tokens, failing_share, top1_agreeing: self.tokens.iter().filter(|t| t.top1).count(), first_top1_difference, passed }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: Margins = Margins { rtol: 0.05, atol: 1e-6 };

    fn token(position: usize, ce: f64, diff: f64, top1: bool) -> TokenLogits {
        TokenLogits { prompt: 0, position, ce, diff_mean: diff, kl: 0.0, top1 }
    }

    fn outcome(tokens: Vec<TokenLogits>) -> LogitsOutcome {
        let bounds = LogitsBounds { ce: Some(2.0), diff_mean: Some(0.01), kl: None, failure_rate: 0.01, source: "test".into() };
        LogitsOutcome { top_k: 20, steps: false, tokens, bounds, error: None }
    }

    #[test]
    fn tokens_within_thresholds_and_margins_pass() {
        let tokens = (0..200).map(|i| token(i, 2.0 * 1.05, 0.01, true)).collect();
        let v = outcome(tokens).verdict(&M);
        assert!(v.passed, "{v:?}");
        assert_eq!((v.tokens, v.failing_tokens, v.top1_agreeing), (200, 0, 200));
    }

    #[test]
    fn the_test_fails_when_the_failing_share_reaches_the_rate() {
        // 1 of 100 failing is a share of 0.01: test_decoders.py fails at rate >= 0.01.
        let mut tokens: Vec<_> = (0..100).map(|i| token(i, 1.0, 0.001, true)).collect();
        tokens[7].diff_mean = 0.0106;
        let v = outcome(tokens.clone()).verdict(&M);
        assert!(!v.passed);
        assert_eq!(v.failing_tokens, 1);
        assert_eq!(v.quantities[1].worst_token.map(|t| t.position), Some(7));
        tokens.extend((100..200).map(|i| token(i, 1.0, 0.001, true)));
        assert!(outcome(tokens).verdict(&M).passed, "1 of 200 is under the rate");
    }

    #[test]
    fn nan_no_tokens_and_no_thresholds_never_pass() {
        assert!(!outcome(vec![token(0, f64::NAN, 0.0, true)]).verdict(&M).passed);
        let mut o = outcome((0..200).map(|i| token(i, 1.0, 0.0, true)).collect());
        o.tokens[3].kl = f64::INFINITY;
        assert!(!o.verdict(&M).passed, "a non-finite kl fails even without a kl threshold");
        assert!(!outcome(Vec::new()).verdict(&M).passed);
        let mut o = outcome(vec![token(0, 1.0, 0.0, true)]);
        o.bounds.ce = None;
        o.bounds.diff_mean = None;
        assert!(!o.verdict(&M).passed, "nothing applied");
        o.bounds.ce = Some(f64::NAN);
        assert!(!o.verdict(&M).passed, "an unusable threshold");
    }

    #[test]
    fn the_first_top1_difference_is_per_prompt() {
        let mut tokens: Vec<_> = (0..4).map(|i| token(i, 1.0, 0.0, i != 2 && i != 3)).collect();
        tokens.push(TokenLogits { prompt: 1, position: 1, ce: 1.0, diff_mean: 0.0, kl: 0.0, top1: false });
        let v = outcome(tokens).verdict(&M);
        assert_eq!(v.first_top1_difference, vec![(0, 2), (1, 1)]);
        assert_eq!(v.top1_agreeing, 2);
    }
}
