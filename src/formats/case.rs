//! How the seed names a run and a layer in its files.
//!
//! A run ("case") of `generate_layers_metrics.py` is one point of its product
//! models x batch sizes x sequence lengths x max new tokens. Its files share the readable prefix
//! `{model_id with '/' -> '--'}_max-new-tokens-{T}_batch-size-{B}_seq-length-{S}_dtype-float16`
//! (the form `get_thresholds.py` globs; newer seed versions replaced it by a sha256, which its own
//! glob no longer finds). Layer keys drop the brackets of module names (`layers[7]` ->
//! `layers7`); in generate mode the first call of a module keeps the plain key and later calls get
//! `.iter-N`, N a global call counter.

use std::fmt;

/// One run of the seed's product, as its file names spell it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeedCase {
    /// The model id in file form: `/` replaced by `--` (`ibm-granite--granite-3.3-8b-instruct`).
    pub model: String,
    /// `--max_new_tokens` (the seed writes it in model-forward mode too).
    pub max_new_tokens: u64,
    /// `--batch_sizes` entry.
    pub batch_size: u64,
    /// `--seq_lengths` entry.
    pub seq_length: u64,
    /// The test side's dtype; the seed always writes `float16`.
    pub dtype: String,
}

impl SeedCase {
    /// A case of `model_id` (as given to the seed: an HF id or a path; `/` becomes `--`), with the
    /// seed's dtype `float16`.
    pub fn new(model_id: &str, max_new_tokens: u64, batch_size: u64, seq_length: u64) -> Self {
        SeedCase {
            model: file_model_id(model_id),
            max_new_tokens,
            batch_size,
            seq_length,
            dtype: "float16".to_string(),
        }
    }

    /// The readable file-name prefix of this case.
    pub fn prefix(&self) -> String {
        self.to_string()
    }

    /// Parses a prefix written by [`SeedCase::prefix`] (or by the seed); `None` when `prefix` is
    /// not of that form (for instance a newer seed's sha256 prefix).
    pub fn parse_prefix(prefix: &str) -> Option<SeedCase> {
        let at = prefix.rfind("_max-new-tokens-")?;
        let model = &prefix[..at];
        let rest = &prefix[at + "_max-new-tokens-".len()..];
        let (t, rest) = rest.split_once("_batch-size-")?;
        let (b, rest) = rest.split_once("_seq-length-")?;
        let (s, dtype) = rest.split_once("_dtype-")?;
        let number = |x: &str| if !x.is_empty() && x.bytes().all(|c| c.is_ascii_digit()) { x.parse().ok() } else { None };
        if model.is_empty() || dtype.is_empty() {
            return None;
        }
        Some(SeedCase {
            model: model.to_string(),
            max_new_tokens: number(t)?,
            batch_size: number(b)?,
            seq_length: number(s)?,
            dtype: dtype.to_string(),
        })
    }
}

impl fmt::Display for SeedCase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}_max-new-tokens-{}_batch-size-{}_seq-length-{}_dtype-{}",
            self.model, self.max_new_tokens, self.batch_size, self.seq_length, self.dtype
        )
    }
}

/// A model id in the form file names and `get_thresholds.py --models` use: `/` -> `--`.
pub fn file_model_id(model_id: &str) -> String {
    model_id.replace('/', "--")
}

/// A module key as file names and threshold keys spell it: brackets dropped
/// (`model.base_model.layers[7].ln` -> `model.base_model.layers7.ln`).
pub fn file_key(module_key: &str) -> String {
    module_key.replace(['[', ']'], "")
}

/// Removes every `.iter-N` (N decimal digits) from a layer key, as `get_thresholds.py` does with
/// `re.sub(r"\.(iter-)([0-9]+)", "", name)`; returns the base key and whether anything was removed.
pub fn strip_iter(key: &str) -> (String, bool) {
    let mut out = String::with_capacity(key.len());
    let mut rest = key;
    let mut stripped = false;
    while let Some(at) = rest.find(".iter-") {
        let after = &rest[at + ".iter-".len()..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 {
            out.push_str(&rest[..at]);
            rest = &after[digits..];
            stripped = true;
        } else {
            out.push_str(&rest[..at + 1]);
            rest = &rest[at + 1..];
        }
    }
    out.push_str(rest);
    (out, stripped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_is_the_seed_readable_form_and_parses_back() {
        let case = SeedCase::new("ibm-granite/granite-3.3-8b-instruct", 128, 1, 64);
        let p = case.prefix();
        assert_eq!(p, "ibm-granite--granite-3.3-8b-instruct_max-new-tokens-128_batch-size-1_seq-length-64_dtype-float16");
        assert_eq!(SeedCase::parse_prefix(&p), Some(case));
        assert_eq!(SeedCase::new("/tmp/models/x", 8, 2, 16).model, "--tmp--models--x");
        assert_eq!(SeedCase::parse_prefix("3f2a9c_0.3.0"), None);
        assert_eq!(SeedCase::parse_prefix("m_max-new-tokens-x_batch-size-1_seq-length-64_dtype-float16"), None);
    }

    #[test]
    fn keys_drop_brackets_and_iterations() {
        assert_eq!(file_key("model.base_model.layers[7].ln"), "model.base_model.layers7.ln");
        assert_eq!(strip_iter("model.head.iter-42"), ("model.head".to_string(), true));
        assert_eq!(strip_iter("model.head"), ("model.head".to_string(), false));
        assert_eq!(strip_iter("a.iter-1.b.iter-22"), ("a.b".to_string(), true));
        assert_eq!(strip_iter("a.iter-x.iter-3"), ("a.iter-x".to_string(), true));
    }
}
