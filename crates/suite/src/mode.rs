//! The run mode of a case: one forward over the prompt, or greedy generation.

use std::fmt;
use std::str::FromStr;

/// Run mode, as in the seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mode {
    /// One `forward` over the prompt.
    ModelForward,
    /// Greedy decoding with a KV cache, one forward call per new token.
    Generate,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::ModelForward => "model-forward",
            Mode::Generate => "generate",
        })
    }
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "model-forward" => Ok(Mode::ModelForward),
            "generate" => Ok(Mode::Generate),
            other => Err(format!("unknown mode \"{other}\" (expected model-forward or generate)")),
        }
    }
}
