//! Model inputs: token ids given directly (a JSON file of B lists of S ids), or text prompts
//! tokenised with a model folder's `tokenizer.json` and left-padded with id 0, as the seed does.

use std::path::{Path, PathBuf};

use tch::Tensor;

/// The id the seed pads prompts with (on the left).
pub const PAD_ID: i64 = 0;

/// Why inputs could not be read.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{path}: {source}\n(hint: check the inputs file given (--input-ids, --prompts, or the matrix's prompts entry))")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {problem}\n(hint: {hint})")]
    Invalid { path: PathBuf, problem: String, hint: &'static str },
    #[error("{path}: could not load the tokenizer: {problem}\n(hint: the model folder needs an HF tokenizer.json)")]
    Tokenizer { path: PathBuf, problem: String },
    #[error("token id {id} at batch {row}, position {col} is outside the vocabulary of {vocab} ids\n(hint: were these ids made with another model's tokenizer?)")]
    OutOfVocab { id: i64, row: usize, col: usize, vocab: i64 },
}

/// A batch of token ids, `B` rows of `S` ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBatch {
    pub rows: Vec<Vec<i64>>,
}

impl TokenBatch {
    /// `[B, S]` int64 on the CPU.
    pub fn to_tensor(&self) -> Tensor {
        let flat: Vec<i64> = self.rows.iter().flatten().copied().collect();
        Tensor::from_slice(&flat).view([self.batch_size() as i64, self.seq_len() as i64])
    }

    pub fn batch_size(&self) -> usize {
        self.rows.len()
    }

    pub fn seq_len(&self) -> usize {
        self.rows.first().map_or(0, Vec::len)
    }

    /// Fails when an id is not below `vocab_size`.
    pub fn check_vocab(&self, vocab_size: i64) -> Result<(), InputError> {
        for (row, ids) in self.rows.iter().enumerate() {
            if let Some((col, &id)) = ids.iter().enumerate().find(|(_, &id)| id >= vocab_size) {
                return Err(InputError::OutOfVocab { id, row, col, vocab: vocab_size });
            }
        }
        Ok(())
    }

    /// Reads a JSON file holding B lists of S non-negative ids (`[[1, 2], [3, 4]]`).
    pub fn read_json(path: &Path) -> Result<Self, InputError> {
        let text = std::fs::read_to_string(path).map_err(|source| InputError::Io { path: path.to_path_buf(), source })?;
        let invalid = |problem: String| InputError::Invalid {
            path: path.to_path_buf(),
            problem,
            hint: "an input-ids file is a JSON list of B lists of S non-negative integer ids, all of the same length",
        };
        let rows: Vec<Vec<i64>> = serde_json::from_str(&text).map_err(|e| invalid(format!("not a list of lists of integer ids ({e})")))?;
        Self::from_rows(rows).map_err(invalid)
    }

    /// Checks that rows are non-empty, equally long and non-negative.
    pub fn from_rows(rows: Vec<Vec<i64>>) -> Result<Self, String> {
        let first = rows.first().ok_or("no rows: the batch is empty")?;
        if first.is_empty() {
            return Err("row 0 is empty".into());
        }
        if let Some((i, r)) = rows.iter().enumerate().find(|(_, r)| r.len() != first.len()) {
            return Err(format!("row {i} has {} ids but row 0 has {}", r.len(), first.len()));
        }
        if let Some((i, id)) = rows.iter().enumerate().find_map(|(i, r)| r.iter().find(|&&id| id < 0).map(|id| (i, id))) {
            return Err(format!("row {i} holds a negative id {id}"));
        }
        Ok(TokenBatch { rows })
    }

    /// Tokenises `prompts` (read from the file `source`, which errors name) with `tokenizer`
    /// (special tokens added, as HF's `encode` does) and left-pads each with [`PAD_ID`] to
    /// `seq_len` (default: the longest prompt).
    pub fn from_prompts(prompts: &[String], tokenizer: &Tokenizer, seq_len: Option<usize>, source: &Path) -> Result<Self, InputError> {
        let mut rows = Vec::with_capacity(prompts.len());
        for prompt in prompts {
            rows.push(tokenizer.encode(prompt)?);
        }
        let longest = rows.iter().map(Vec::len).max().unwrap_or(0);
        let s = seq_len.unwrap_or(longest);
        let invalid = |problem: String, hint| InputError::Invalid { path: source.to_path_buf(), problem, hint };
        if let Some((i, r)) = rows.iter().enumerate().find(|(_, r)| r.len() > s) {
            return Err(invalid(
                format!("prompt {i} is {} tokens long (with {}), more than the sequence length {s}", r.len(), tokenizer.path.display()),
                "raise the sequence length (--seq-length, --seq_lengths) or shorten the prompt",
            ));
        }
        if rows.is_empty() {
            return Err(invalid("no prompts to run (batch size 0)".into(), "give at least one prompt, and a batch size of at least 1"));
        }
        if s == 0 {
            return Err(invalid("no prompt tokens to run (sequence length 0)".into(), "give a sequence length of at least 1 and non-empty prompts"));
        }
        // Checked before padding: the model's own bound (max_position_embeddings) is checked
        // when it runs, after a batch this long would have been allocated.
        if s as u64 > crate::model::MAX_POSITIONS as u64 {
            return Err(invalid(format!("sequence length {s} is more than the {} positions any model layercheck runs may have", crate::model::MAX_POSITIONS), "use a sequence length the model supports (its config.json's max_position_embeddings)"));
        }
        let padded = rows
            .into_iter()
            .map(|r| std::iter::repeat_n(PAD_ID, s - r.len()).chain(r).collect())
            .collect();
        Ok(TokenBatch { rows: padded })
    }
}

/// Prompts with their token counts (special tokens included, as a batch holds them).
pub struct CountedPrompts(Vec<(String, usize)>);

impl CountedPrompts {
    /// Counts each prompt's tokens with `tokenizer`.
    pub fn count(prompts: Vec<String>, tokenizer: &Tokenizer) -> Result<Self, InputError> {
        let counted = prompts.into_iter().map(|p| tokenizer.encode(&p).map(|ids| (p, ids.len()))).collect::<Result<_, _>>()?;
        Ok(CountedPrompts(counted))
    }

    /// The one rule by which the suite's cases and `generate` pick prompts: of the prompts that
    /// fit `seq_len` tokens, in file order, the `k`-th run of `batch_size` (batch 0: the first
    /// `batch_size` that fit). `Err` holds how many fit when there are too few.
    pub fn batch(&self, batch_size: usize, seq_len: usize, k: usize) -> Result<Vec<String>, usize> {
        let fitting: Vec<&String> = self.0.iter().filter(|(_, n)| *n <= seq_len).map(|(p, _)| p).collect();
        let chosen: Vec<String> = fitting.iter().skip(k * batch_size).take(batch_size).map(|p| p.to_string()).collect();
        if chosen.len() < batch_size {
            return Err(fitting.len());
        }
        Ok(chosen)
    }
}

/// Reads prompts: a JSON list of strings (`.json`), or one prompt per non-empty line.
pub fn read_prompts(path: &Path) -> Result<Vec<String>, InputError> {
    let text = std::fs::read_to_string(path).map_err(|source| InputError::Io { path: path.to_path_buf(), source })?;
    let prompts: Vec<String> = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).map_err(|e| InputError::Invalid {
            path: path.to_path_buf(),
            problem: format!("not a JSON list of strings ({e})"),
            hint: "a .json prompts file is a list of strings; any other file holds one prompt per line",
        })?
    } else {
        text.lines().filter(|l| !l.trim().is_empty()).map(str::to_string).collect()
    };
    if prompts.is_empty() {
        return Err(InputError::Invalid { path: path.to_path_buf(), problem: "holds no prompts".into(), hint: "give at least one prompt" });
    }
    Ok(prompts)
}

/// A model folder's `tokenizer.json`.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    pub path: PathBuf,
}

impl Tokenizer {
    /// Loads `dir/tokenizer.json`.
    pub fn load(dir: &Path) -> Result<Self, InputError> {
        let path = dir.join("tokenizer.json");
        if !path.exists() {
            return Err(InputError::Tokenizer { path, problem: "the file does not exist".into() });
        }
        let mut inner = tokenizers::Tokenizer::from_file(&path).map_err(|e| InputError::Tokenizer { path: path.clone(), problem: e.to_string() })?;
        // Prompts are padded by layercheck (left, id 0, as the seed does), never by the tokenizer:
        // some tokenizer.json files pad or truncate every text to a fixed length.
        inner.with_padding(None);
        inner.with_truncation(None).map_err(|e| InputError::Tokenizer { path: path.clone(), problem: e.to_string() })?;
        Ok(Tokenizer { inner, path })
    }

    /// The `tokenizers` tokenizer itself.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Token ids of `text`, special tokens added.
    pub fn encode(&self, text: &str) -> Result<Vec<i64>, InputError> {
        let encoding = self.inner.encode(text, true).map_err(|e| InputError::Tokenizer { path: self.path.clone(), problem: e.to_string() })?;
        Ok(encoding.get_ids().iter().map(|&id| id as i64).collect())
    }

    /// Text of `ids`, special tokens skipped.
    pub fn decode(&self, ids: &[i64]) -> Result<String, InputError> {
        let ids: Vec<u32> = ids.iter().map(|&id| id as u32).collect();
        self.inner.decode(&ids, true).map_err(|e| InputError::Tokenizer { path: self.path.clone(), problem: e.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_k_is_the_k_th_run_of_prompts_that_fit() {
        let counted = CountedPrompts(vec![("a".into(), 3), ("long".into(), 9), ("b".into(), 2), ("c".into(), 5), ("d".into(), 1)]);
        assert_eq!(counted.batch(2, 5, 0), Ok(vec!["a".to_string(), "b".to_string()]));
        assert_eq!(counted.batch(2, 5, 1), Ok(vec!["c".to_string(), "d".to_string()]));
        assert_eq!(counted.batch(2, 5, 2), Err(4), "four fit, batch 2 needs six");
        assert_eq!(counted.batch(1, 9, 1), Ok(vec!["long".to_string()]));
        assert_eq!(counted.batch(3, 2, 0), Err(2));
    }

    #[test]
    fn a_sequence_length_past_any_model_is_refused_before_the_batch_is_padded() {
        let tokenizer = Tokenizer::load(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/models/tiny-granite"))).unwrap();
        let prompts = ["hello".to_string()];
        let e = TokenBatch::from_prompts(&prompts, &tokenizer, Some(1 << 40), Path::new("p.txt")).unwrap_err().to_string();
        assert!(e.starts_with("p.txt: sequence length 1099511627776 is more than the 16777216 positions") && e.contains("hint"), "{e}");
        assert_eq!(TokenBatch::from_prompts(&prompts, &tokenizer, Some(16), Path::new("p.txt")).unwrap().seq_len(), 16);
    }
}
