//! Sharding the suite by case: `LAYERCHECK_SHARD=k/n` keeps the k-th of n shares of the matrix's
//! cases, each case whole (all its layer tests and its summary), so that n CI machines each
//! compute their own cases and no case's forward runs on two machines. (nextest's `--partition`
//! splits the tests of one case over the machines instead, and every machine computes every case.)
//! The filter applies when tests are listed, so `cargo test` and `cargo nextest run` (which lists,
//! then runs one process per listed test) both run only the shard.
//!
//! **The rule** balances estimated work, longest first: cases are taken in decreasing estimated
//! cost (ties by case name) and each goes to the shard with the least estimated work so far (ties:
//! the lowest shard). It depends on the matrix (its file and `LAYERCHECK_*` overrides) and each
//! model's config.json only, never on the machine (its devices, CPU, threads) nor on the order
//! of the matrix's lists, so machines that share a checkout and the variables agree on it. With
//! n at most the number of cases every shard gets at least one case; more shards than cases is an
//! error rather than a machine that passes with no test.
//!
//! Why not a hash of the case name, which would keep a case on its shard when other cases are
//! added: a CI run recomputes the assignment on every machine from one commit, so that stability
//! buys nothing there, and the fleet waits for its slowest machine: a hash leaves shards unequal
//! (4 cases on 2 machines all land on one a time in 8), and a round robin gives equal counts but
//! not equal work (at granite-3.3-8b's sizes one b8 s2048 case is estimated at some 270 b1 s64
//! ones).
//!
//! **The estimate** counts multiply-adds of the target's forward: B x T tokens (T = S plus new
//! tokens) each through L layers of 4h^2 (attention projections) + 3hi (MLP) + 2Th (attention
//! over the context), plus hV (the head), from config.json's `num_hidden_layers`, `hidden_size`,
//! `intermediate_size` and `vocab_size`. A model whose config cannot be read counts B x T (its
//! cases fail at once anyway).

use std::collections::BTreeMap;
use std::fmt;

use crate::matrix::Matrix;
use crate::test_name::CaseId;

/// The variable that selects a shard.
pub const SHARD_VAR: &str = "LAYERCHECK_SHARD";

/// The k-th (from 1) of n shares of the cases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    index: usize,
    count: usize,
}

/// Why `LAYERCHECK_SHARD` cannot be used.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ShardError {
    #[error("environment variable {SHARD_VAR}={value}: {problem}\n(hint: {SHARD_VAR}=k/n runs the k-th of n shares of the matrix's cases, 1 <= k <= n, e.g. 1/2 on one machine and 2/2 on another; unset it to run every case)")]
    Invalid { value: String, problem: String },
    #[error("environment variable {SHARD_VAR}={shard}: the matrix has {cases} case(s), so shard {index} of {count} would run no test\n(hint: use at most {cases} shard(s), or unset {SHARD_VAR} to run every case)", index = shard.index, count = shard.count)]
    Empty { shard: Shard, cases: usize },
}

impl Shard {
    /// Reads `LAYERCHECK_SHARD`; `None` when it is unset.
    pub fn from_env() -> Result<Option<Shard>, ShardError> {
        match std::env::var_os(SHARD_VAR) {
            None => Ok(None),
            Some(v) => match v.to_str() {
                Some(s) => Shard::parse(s).map(Some),
                None => Err(ShardError::Invalid { value: v.to_string_lossy().into_owned(), problem: "is not valid UTF-8".into() }),
            },
        }
    }

    /// Parses `k/n` (whole numbers, 1 <= k <= n; spaces around them are allowed).
    pub fn parse(value: &str) -> Result<Shard, ShardError> {
        let invalid = |problem: String| ShardError::Invalid { value: value.to_string(), problem };
        let v = value.trim();
        if v.is_empty() {
            return Err(invalid("is empty; unset it to run every case".into()));
        }
        if let Some((kind, _)) = v.split_once(':').filter(|(kind, _)| ["count", "hash", "slice"].contains(&kind.trim())) {
            return Err(invalid(format!("\"{}:\" is nextest's --partition syntax, which splits cases over machines; this variable takes plain k/n", kind.trim())));
        }
        let Some((k, n)) = v.split_once('/') else {
            return Err(invalid("is not of the form k/n (two whole numbers, such as 1/2)".into()));
        };
        let number = |s: &str| -> Result<usize, ShardError> {
            let s = s.trim();
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid(format!("\"{s}\" is not a whole number (the form is k/n, such as 1/2)")));
            }
            s.parse::<usize>().map_err(|_| invalid(format!("\"{s}\" is too large")))
        };
        let (index, count) = (number(k)?, number(n)?);
        if count == 0 {
            return Err(invalid("n is 0; there is at least one shard".into()));
        }
        if index == 0 {
            return Err(invalid("k is 0; shards are numbered from 1 to n".into()));
        }
        if index > count {
            return Err(invalid(format!("k = {index} is past n = {count}; shards are numbered from 1 to n")));
        }
        Ok(Shard { index, count })
    }

    /// The shard's number, from 1.
    pub fn index(&self) -> usize {
        self.index
    }

    /// How many shards there are.
    pub fn count(&self) -> usize {
        self.count
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The cases a run lists: every case of the matrix, or one shard's.
#[derive(Debug, Clone)]
pub struct Selection {
    /// The shard, when `LAYERCHECK_SHARD` is set.
    pub shard: Option<Shard>,
    /// The selected cases, in the matrix's order.
    pub cases: Vec<CaseId>,
    total_cases: usize,
    /// The shard's part of the matrix's estimated work.
    share: f64,
}

impl Selection {
    /// The cases of `matrix` that the shard `LAYERCHECK_SHARD` names (every case when it is unset).
    pub fn from_env(matrix: &Matrix) -> Result<Self, ShardError> {
        Self::of(matrix, Shard::from_env()?)
    }

    /// The cases of `matrix` in `shard` (every case for `None`).
    pub fn of(matrix: &Matrix, shard: Option<Shard>) -> Result<Self, ShardError> {
        let total_cases = matrix.cases.len();
        let Some(shard) = shard else {
            return Ok(Selection { shard: None, cases: matrix.cases.clone(), total_cases, share: 1.0 });
        };
        if shard.count > total_cases {
            return Err(ShardError::Empty { shard, cases: total_cases });
        }
        let mut sizes: BTreeMap<&str, Option<ModelSize>> = BTreeMap::new();
        let costed: Vec<(String, u128)> = matrix
            .cases
            .iter()
            .map(|case| {
                let size = *sizes.entry(case.model.as_str()).or_insert_with(|| ModelSize::read(&matrix.resolve(&matrix.model(case).path).join("config.json")));
                (case.to_string(), case_cost(case, size))
            })
            .collect();
        let shards = assign(&costed, shard.count);
        let mut cases = Vec::new();
        let (mut mine, mut all) = (0u128, 0u128);
        for ((case, (_, cost)), s) in matrix.cases.iter().zip(&costed).zip(shards) {
            all = all.saturating_add(*cost);
            if s + 1 == shard.index {
                cases.push(case.clone());
                mine = mine.saturating_add(*cost);
            }
        }
        Ok(Selection { shard: Some(shard), cases, total_cases, share: mine as f64 / all.max(1) as f64 })
    }

    /// Whether `case` is selected.
    pub fn contains(&self, case: &CaseId) -> bool {
        self.cases.contains(case)
    }

    /// One line for a person, when a shard is selected: how many cases and how much of the work.
    pub fn note(&self) -> Option<String> {
        let shard = self.shard?;
        Some(format!(
            "layercheck: {SHARD_VAR}={shard}: {} of the matrix's {} cases, about {:.0}% of its estimated work",
            self.cases.len(),
            self.total_cases,
            self.share * 100.0
        ))
    }
}

/// The shard (from 0) of each `(name, cost)`, in the order given: longest first, each to the
/// shard with the least work so far (see the module doc). `count` must be at least 1.
pub fn assign(cases: &[(String, u128)], count: usize) -> Vec<usize> {
    let count = count.max(1);
    let mut order: Vec<usize> = (0..cases.len()).collect();
    order.sort_by(|&a, &b| cases[b].1.cmp(&cases[a].1).then_with(|| cases[a].0.cmp(&cases[b].0)));
    let mut load = vec![0u128; count];
    let mut shard_of = vec![0; cases.len()];
    for i in order {
        // min_by_key keeps the first of equal loads: the lowest shard.
        let s = (0..count).min_by_key(|&s| load[s]).unwrap_or(0);
        load[s] = load[s].saturating_add(cases[i].1);
        shard_of[i] = s;
    }
    shard_of
}

/// What the estimate needs of a model's config.json.
#[derive(Debug, Clone, Copy, PartialEq)]
struct ModelSize {
    layers: u128,
    hidden: u128,
    intermediate: u128,
    vocab: u128,
}

impl ModelSize {
    /// The sizes in `config`, or `None` when it cannot be read or lacks one.
    fn read(config: &std::path::Path) -> Option<ModelSize> {
        let text = std::fs::read_to_string(config).ok()?;
        let json: serde_json::Value = serde_json::from_str(&text).ok()?;
        let field = |name: &str| json.get(name)?.as_u64().map(u128::from);
        Some(ModelSize { layers: field("num_hidden_layers")?, hidden: field("hidden_size")?, intermediate: field("intermediate_size")?, vocab: field("vocab_size")? })
    }
}

/// The estimated multiply-adds of a case's target forward (at least 1; see the module doc).
fn case_cost(case: &CaseId, size: Option<ModelSize>) -> u128 {
    let tokens = case.seq_len as u128 + case.max_new_tokens.unwrap_or(0) as u128;
    // Saturating: config.json is the user's, and listing must not panic on absurd sizes (the
    // computation refuses them, naming the field).
    let mul = |factors: &[u128]| factors.iter().fold(1u128, |a, &b| a.saturating_mul(b));
    let per_token = match size {
        Some(m) => mul(&[m.layers, mul(&[4, m.hidden, m.hidden]).saturating_add(mul(&[3, m.hidden, m.intermediate])).saturating_add(mul(&[2, tokens, m.hidden]))]).saturating_add(mul(&[m.hidden, m.vocab])),
        None => 1,
    };
    mul(&[case.batch_size as u128, tokens, per_token]).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::test_names;
    use crate::test_name::TestName;
    use proptest::prelude::*;
    use std::collections::{BTreeSet, HashMap};
    use std::path::{Path, PathBuf};

    #[test]
    fn absurd_model_sizes_saturate_instead_of_overflowing() {
        let case: CaseId = "m::cpu-f16::fwd::b1::s8".parse().unwrap();
        let huge = ModelSize { layers: u64::MAX as u128, hidden: u64::MAX as u128, intermediate: u64::MAX as u128, vocab: u64::MAX as u128 };
        assert_eq!(case_cost(&case, Some(huge)), u128::MAX);
        let tiny = ModelSize { layers: 1, hidden: 2, intermediate: 3, vocab: 5 };
        // Independently: 8 tokens x (1 x (16 + 18 + 32) + 10) = 608.
        assert_eq!(case_cost(&case, Some(tiny)), 608);
    }

    /// The repository root, whose embedded models the matrices below use.
    fn repo() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    /// A matrix of 96 cases over both embedded models, three targets, both modes, two feeds and
    /// shapes whose estimated costs differ.
    fn matrix(models: &str, seq_lengths: &str) -> Matrix {
        let text = format!(
            r#"
            [models.tiny-granite]
            path = "models/tiny-granite"
            prompts = "tests/fixtures/prompts/tiny.txt"
            thresholds = "thresholds/tiny-granite-thresholds.json"
            [models.tiny-llama]
            path = "models/tiny-llama"
            prompts = "tests/fixtures/prompts/tiny.txt"
            thresholds = "thresholds/tiny-llama-thresholds.json"
            [faults.fault-l1-dense]
            base = "cpu-f32"
            module = "model.base_model.layers1.attn.dense"
            amplitude = 0.05
            [matrix]
            models = [{models}]
            targets = ["cpu-f16", "cuda-f16", "fault-l1-dense"]
            modes = ["model-forward", "generate"]
            feeds = ["cumulative", "isolated"]
            batch_sizes = [1, 4]
            seq_lengths = [{seq_lengths}]
            max_new_tokens = [4]
        "#
        );
        Matrix::parse(&repo(), &repo().join("m.toml"), &text, |_| None).unwrap()
    }

    fn shard(s: &str) -> Shard {
        Shard::parse(s).unwrap()
    }

    #[test]
    fn shards_are_disjoint_cover_every_test_and_keep_each_case_whole() {
        let m = matrix(r#""tiny-granite", "tiny-llama""#, "16, 64");
        let all: Vec<String> = test_names(&m, &m.cases).iter().map(TestName::to_string).collect();
        assert!(all.len() > 1000, "{}", all.len());
        for n in [2, 3] {
            let mut seen: HashMap<String, usize> = HashMap::new();
            let mut shard_of_case: HashMap<String, BTreeSet<usize>> = HashMap::new();
            for k in 1..=n {
                let sel = Selection::of(&m, Some(shard(&format!("{k}/{n}")))).unwrap();
                assert!(!sel.cases.is_empty() && sel.cases.len() < m.cases.len(), "{k}/{n}: {} cases", sel.cases.len());
                for name in test_names(&m, &sel.cases) {
                    *seen.entry(name.to_string()).or_default() += 1;
                    shard_of_case.entry(name.case.to_string()).or_default().insert(k);
                }
            }
            // Every test of the matrix exactly once over the n shards.
            assert_eq!(seen.len(), all.len(), "n = {n}");
            assert!(all.iter().all(|t| seen.get(t) == Some(&1)), "n = {n}");
            // All tests of a case (its layers and summary) in one shard.
            assert_eq!(shard_of_case.len(), m.cases.len());
            assert!(shard_of_case.values().all(|s| s.len() == 1), "n = {n}: {shard_of_case:?}");
        }
    }

    #[test]
    fn the_assignment_does_not_depend_on_the_order_of_the_matrix() {
        let by_case = |m: &Matrix| -> BTreeSet<(String, usize)> {
            (1..=3).flat_map(|k| Selection::of(m, Some(shard(&format!("{k}/3")))).unwrap().cases.into_iter().map(move |c| (c.to_string(), k))).collect()
        };
        let a = matrix(r#""tiny-granite", "tiny-llama""#, "16, 64");
        let b = matrix(r#""tiny-llama", "tiny-granite""#, "64, 16");
        assert_ne!(a.cases, b.cases);
        assert_eq!(by_case(&a), by_case(&b));
    }

    #[test]
    fn shards_share_the_estimated_work_and_say_so() {
        let m = matrix(r#""tiny-granite", "tiny-llama""#, "16, 64");
        let sels: Vec<Selection> = (1..=2).map(|k| Selection::of(&m, Some(shard(&format!("{k}/2")))).unwrap()).collect();
        for s in &sels {
            assert!((s.share - 0.5).abs() < 0.02, "{}", s.share);
        }
        assert!((sels[0].share + sels[1].share - 1.0).abs() < 1e-9);
        let note = sels[0].note().unwrap();
        assert!(note.starts_with(&format!("layercheck: LAYERCHECK_SHARD=1/2: {} of the matrix's {} cases, about", sels[0].cases.len(), m.cases.len())), "{note}");
        let every = Selection::of(&m, None).unwrap();
        assert_eq!(every.cases, m.cases);
        assert_eq!(every.note(), None);
    }

    #[test]
    fn the_estimate_follows_tokens_and_the_model_config() {
        let m = matrix(r#""tiny-granite""#, "16, 64");
        let size = ModelSize::read(&repo().join("models/tiny-granite/config.json")).unwrap();
        let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(repo().join("models/tiny-granite/config.json")).unwrap()).unwrap();
        assert_eq!(size.layers, config["num_hidden_layers"].as_u64().unwrap() as u128);
        assert_eq!(size.vocab, config["vocab_size"].as_u64().unwrap() as u128);
        let case = |b: usize, s: usize, gen: bool| m.cases.iter().find(|c| c.batch_size == b && c.seq_len == s && c.max_new_tokens.is_some() == gen).unwrap();
        let cost = |c: &CaseId| case_cost(c, Some(size));
        // Four prompts cost four times one; a longer sequence, or new tokens, cost more.
        assert_eq!(cost(case(4, 16, false)), 4 * cost(case(1, 16, false)));
        assert!(cost(case(1, 64, false)) > 4 * cost(case(1, 16, false)), "attention grows faster than the tokens");
        assert!(cost(case(1, 16, true)) > cost(case(1, 16, false)));
        assert_eq!(case_cost(case(4, 16, false), None), 4 * 16);
        assert_eq!(ModelSize::read(&repo().join("models/no-such-model/config.json")), None);
    }

    #[test]
    fn more_shards_than_cases_is_an_error_naming_the_variable() {
        let m = matrix(r#""tiny-granite""#, "16");
        let n = m.cases.len();
        assert!(Selection::of(&m, Some(shard(&format!("{n}/{n}")))).unwrap().cases.len() == 1);
        let err = Selection::of(&m, Some(shard(&format!("1/{}", n + 1)))).unwrap_err().to_string();
        assert!(err.starts_with(&format!("environment variable LAYERCHECK_SHARD=1/{}: the matrix has {n} case(s)", n + 1)) && err.contains(&format!("(hint: use at most {n} shard(s)")), "{err}");
    }

    #[test]
    fn bad_values_are_errors_naming_the_variable_the_value_and_a_hint() {
        assert_eq!(shard("1/2"), Shard { index: 1, count: 2 });
        assert_eq!(shard(" 3 / 3 "), Shard { index: 3, count: 3 });
        assert_eq!(shard("1/1").to_string(), "1/1");
        for (value, problem) in [
            ("", "is empty"),
            ("  ", "is empty"),
            ("2", "is not of the form k/n"),
            ("1-2", "is not of the form k/n"),
            ("count:1/2", "\"count:\" is nextest's --partition syntax"),
            ("hash:2/2", "\"hash:\" is nextest's --partition syntax"),
            ("a/2", "\"a\" is not a whole number"),
            ("1/2/3", "\"2/3\" is not a whole number"),
            ("+1/2", "\"+1\" is not a whole number"),
            ("-1/2", "\"-1\" is not a whole number"),
            ("1/", "\"\" is not a whole number"),
            ("1.0/2", "\"1.0\" is not a whole number"),
            ("1/99999999999999999999999", "is too large"),
            ("0/2", "k is 0"),
            ("1/0", "n is 0"),
            ("0/0", "n is 0"),
            ("3/2", "k = 3 is past n = 2"),
        ] {
            let err = Shard::parse(value).unwrap_err().to_string();
            assert!(err.starts_with(&format!("environment variable LAYERCHECK_SHARD={value}: ")) && err.contains(problem) && err.contains("(hint: LAYERCHECK_SHARD=k/n"), "{value:?}: {err}");
        }
    }

    proptest! {
        /// Every case in exactly one shard, none empty when there are enough cases, and no shard
        /// past an even share by more than the largest case (the greedy bound: sum / n + the largest).
        #[test]
        fn assignments_are_total_non_empty_and_balanced(costs in proptest::collection::vec(1u128..1_000_000, 1..60), count in 1usize..8) {
            let cases: Vec<(String, u128)> = costs.iter().enumerate().map(|(i, &c)| (format!("case-{i}"), c)).collect();
            let shards = assign(&cases, count);
            prop_assert_eq!(shards.len(), cases.len());
            prop_assert!(shards.iter().all(|&s| s < count));
            let mut load = vec![0u128; count];
            for (s, (_, c)) in shards.iter().zip(&cases) {
                load[*s] += c;
            }
            let (sum, max) = (costs.iter().sum::<u128>(), *costs.iter().max().unwrap());
            prop_assert!(load.iter().all(|&l| l * count as u128 <= sum + count as u128 * max), "{:?}", load);
            if count <= cases.len() {
                prop_assert!(load.iter().all(|&l| l > 0), "{:?}", load);
            }
            // The same cases given in another order get the same shards.
            let mut reversed = cases.clone();
            reversed.reverse();
            let mut back = assign(&reversed, count);
            back.reverse();
            prop_assert_eq!(back, shards);
        }
    }
}
