//! The name of one generated test, general to specific, joined by `::`:
//! `{model}::{target}::{fwd|gen}[::iso]::b{B}::s{S}[::n{T}]::{layer key | summary | logits}`,
//! e.g. `tiny-granite::cpu-f16::fwd::b1::s64::model.base_model.layers1.attn.dense`.
//! Segments hold only `[a-z0-9._-]`, so nextest filters and `--exact` work on them as written.

use std::fmt;
use std::str::FromStr;

use crate::mode::Mode;
use crate::module_key::{BadModuleKey, ModuleKey};

/// How a target layer gets its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Feed {
    /// Each layer takes the target's own previous output: errors accumulate with depth.
    Cumulative,
    /// Each layer takes the golden (CPU) input of that layer: each error is its own.
    Isolated,
}

/// One run of a model on a target: everything in a test name but the layer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CaseId {
    pub model: String,
    pub target: String,
    pub mode: Mode,
    pub feed: Feed,
    pub batch_size: usize,
    pub seq_len: usize,
    /// New tokens, in generate mode only.
    pub max_new_tokens: Option<usize>,
}

/// What a test checks in its case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Check {
    /// One module's output against golden and thresholds.
    Layer(ModuleKey),
    /// The whole case; names the first failing layer.
    Summary,
    /// The case's logits, token by token, as the Python tools' end-to-end test judges them
    /// (`crate::logits`).
    Logits,
}

/// A test: a case and a check.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TestName {
    pub case: CaseId,
    pub check: Check,
}

/// A string that is not a test name.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("\"{name}\" is not a layercheck test name: {problem}\n(expected e.g. tiny-granite::cpu-f16::fwd::b1::s64::model.base_model.layers1.attn.dense)")]
pub struct BadTestName {
    pub name: String,
    pub problem: String,
}

/// Whether `s` is a valid name segment (`[a-z0-9._-]+`).
pub fn is_segment(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

impl fmt::Display for CaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = match self.mode {
            Mode::ModelForward => "fwd",
            Mode::Generate => "gen",
        };
        write!(f, "{}::{}::{mode}", self.model, self.target)?;
        if self.feed == Feed::Isolated {
            f.write_str("::iso")?;
        }
        write!(f, "::b{}::s{}", self.batch_size, self.seq_len)?;
        if let Some(n) = self.max_new_tokens {
            write!(f, "::n{n}")?;
        }
        Ok(())
    }
}

impl fmt::Display for TestName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.check {
            Check::Layer(key) => write!(f, "{}::{key}", self.case),
            Check::Summary => write!(f, "{}::summary", self.case),
            Check::Logits => write!(f, "{}::logits", self.case),
        }
    }
}

impl FromStr for TestName {
    type Err = BadTestName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (case, check) = s.rsplit_once("::").ok_or_else(|| bad(s, "no layer key or summary at the end"))?;
        let case = parse_case(s, case)?;
        let check = match check {
            "summary" => Check::Summary,
            "logits" => Check::Logits,
            key if is_segment(key) => Check::Layer(key.parse().map_err(|e: BadModuleKey| bad(s, &e.to_string()))?),
            other => return Err(bad(s, &format!("segment \"{other}\" is not made of [a-z0-9._-]"))),
        };
        Ok(TestName { case, check })
    }
}

/// A case as it starts a test name: `tiny-granite::cpu-f16::fwd::b1::s64`.
impl FromStr for CaseId {
    type Err = BadTestName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_case(s, s)
    }
}

fn bad(name: &str, problem: &str) -> BadTestName {
    BadTestName { name: name.to_string(), problem: problem.to_string() }
}

/// Parses `text`, the case part of `name`.
fn parse_case(name: &str, text: &str) -> Result<CaseId, BadTestName> {
    let bad = |problem: &str| bad(name, problem);
    let parts: Vec<&str> = text.split("::").collect();
    if let Some(p) = parts.iter().find(|p| !is_segment(p)) {
        return Err(bad(&format!("segment \"{p}\" is not made of [a-z0-9._-]")));
    }
    let mut it = parts.into_iter().peekable();
    let model = it.next().ok_or_else(|| bad("it is empty"))?.to_string();
    let target = it.next().ok_or_else(|| bad("no target"))?.to_string();
    let mode = match it.next() {
        Some("fwd") => Mode::ModelForward,
        Some("gen") => Mode::Generate,
        _ => return Err(bad("the mode segment must be fwd or gen")),
    };
    let feed = if it.peek() == Some(&"iso") {
        it.next();
        Feed::Isolated
    } else {
        Feed::Cumulative
    };
    let number = |seg: Option<&str>, prefix: char, what: &str| -> Result<usize, BadTestName> {
        seg.and_then(|x| x.strip_prefix(prefix))
            .filter(|n| !n.starts_with('0') || *n == "0")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| bad(&format!("expected {what} as {prefix}N")))
    };
    let batch_size = number(it.next(), 'b', "the batch size")?;
    let seq_len = number(it.next(), 's', "the sequence length")?;
    let max_new_tokens = match mode {
        Mode::Generate => Some(number(it.next(), 'n', "the number of new tokens")?),
        Mode::ModelForward => None,
    };
    if it.next().is_some() {
        return Err(bad("segments left after the case (a layer key holds no \"::\")"));
    }
    Ok(CaseId { model, target, mode, feed, batch_size, seq_len, max_new_tokens })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module_key::LayerModule;
    use proptest::prelude::*;

    #[test]
    fn the_documented_example_parses() {
        let name: TestName = "tiny-granite::cpu-f16::fwd::b1::s64::model.base_model.layers1.attn.dense".parse().unwrap();
        assert_eq!(name.case.model, "tiny-granite");
        assert_eq!(name.case.target, "cpu-f16");
        assert_eq!(name.case.feed, Feed::Cumulative);
        assert_eq!(name.check, Check::Layer(ModuleKey::Layer(1, LayerModule::Dense)));
        let gen: TestName = "m::fault-dense::gen::iso::b2::s8::n4::summary".parse().unwrap();
        assert_eq!((gen.case.mode, gen.case.feed, gen.case.max_new_tokens, gen.check), (Mode::Generate, Feed::Isolated, Some(4), Check::Summary));
    }

    #[test]
    fn rejects_malformed_names() {
        for bad in [
            "",
            "m::cpu-f16::fwd::b1::s64",
            "m::cpu-f16::fwd::b1::s64::model.head::x",
            "m::cpu-f16::run::b1::s64::model.head",
            "m::cpu-f16::fwd::b01::s64::model.head",
            "m::cpu-f16::gen::b1::s64::model.head",
            "M::cpu-f16::fwd::b1::s64::model.head",
            "m::cpu-f16::fwd::b1::s64::model.base_model.layers[1].ln",
        ] {
            assert!(bad.parse::<TestName>().is_err(), "{bad}");
        }
    }

    fn arb_name() -> impl Strategy<Value = TestName> {
        (
            "[a-z0-9][a-z0-9._-]{0,12}",
            "[a-z0-9][a-z0-9._-]{0,12}",
            any::<bool>(),
            any::<bool>(),
            1usize..64,
            1usize..5000,
            0usize..100,
            prop_oneof![Just(None), (0usize..100, 0usize..12).prop_map(Some)],
        )
            .prop_map(|(model, target, gen, iso, b, s, n, layer)| TestName {
                case: CaseId {
                    model,
                    target,
                    mode: if gen { Mode::Generate } else { Mode::ModelForward },
                    feed: if iso { Feed::Isolated } else { Feed::Cumulative },
                    batch_size: b,
                    seq_len: s,
                    max_new_tokens: gen.then_some(n),
                },
                check: layer.map_or(Check::Summary, |(i, m)| Check::Layer(ModuleKey::Layer(i, LayerModule::ALL[m]))),
            })
    }

    proptest! {
        #[test]
        fn names_round_trip(name in arb_name()) {
            let text = name.to_string();
            prop_assert!(text.split("::").all(is_segment), "{}", text);
            prop_assert_eq!(text.parse::<TestName>().unwrap(), name.clone());
            prop_assert_eq!(name.case.to_string().parse::<CaseId>().unwrap(), name.case);
        }
    }
}
