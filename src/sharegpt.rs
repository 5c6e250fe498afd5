//! ShareGPT prompts sampled exactly as the seed samples them.
//!
//! `generate_layers_metrics.py` calls `prepare_inputs(batch_size, seq_length, tokenizer,
//! sharegpt_path)` of aiu_fms_testing_utils (seed 0), which does:
//! 1. `json.load` the file; keep conversations with at least 2 turns; take the first turn's
//!    `"value"` (whoever spoke it).
//! 2. Tokenise each text with `tokenizer.encode(text)` (special tokens added, no padding, no
//!    truncation); stable-sort the (text, length) pairs by length.
//! 3. Keep those with `int(S / 2) <= length <= S`.
//! 4. `random.Random(0).shuffle` them ([`PyRandom`]) and take the first `B`.
//! 5. Tokenise each again and left-pad with id 0 to length `S` (fms `pad_input_ids` with
//!    `min_pad_length=S`); the attention mask and position ids it also returns are dropped.
//!
//! Differences: fewer than `B` fitting prompts is an error here (the seed warns and runs a smaller
//! batch under a file name that still says `batch-size-B`). The tokenizer's own padding and
//! truncation settings are switched off, as transformers' `encode` does.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::py_random::PyRandom;

use crate::inputs::PAD_ID;
/// The seed's shuffle seed.
pub const SEED: u64 = 0;

/// Why prompts could not be sampled.
#[derive(Debug, thiserror::Error)]
pub enum ShareGptError {
    /// The file could not be read.
    #[error("{path}: {source}\n(hint: --sharegpt_path must point at a ShareGPT JSON file such as ShareGPT_V3_unfiltered_cleaned_split.json)")]
    Read { path: PathBuf, source: std::io::Error },
    /// The file is not ShareGPT JSON.
    #[error("{path} is not a ShareGPT file: {problem}\n(hint: the file is a JSON list of {{\"conversations\": [{{\"from\": ..., \"value\": \"text\"}}, ...]}})")]
    Format { path: PathBuf, problem: String },
    /// The tokenizer failed.
    #[error("the tokenizer failed on a ShareGPT prompt: {0}")]
    Tokenizer(String),
    /// Too few prompts have a fitting length.
    #[error("only {found} ShareGPT prompt(s) are {min} to {max} tokens long; batch size {needed} needs {needed}\n(hint: use a smaller --batch_sizes or another --seq_lengths)")]
    NotEnough { found: usize, needed: usize, min: usize, max: usize },
}

#[derive(Deserialize)]
struct Entry {
    conversations: Vec<Turn>,
}

#[derive(Deserialize)]
struct Turn {
    #[serde(default)]
    value: Option<serde_json::Value>,
}

/// The first turn's text of every conversation with at least two turns, in file order.
pub fn load_first_turns(path: &Path) -> Result<Vec<String>, ShareGptError> {
    let text = std::fs::read_to_string(path).map_err(|source| ShareGptError::Read { path: path.to_path_buf(), source })?;
    let format = |problem: String| ShareGptError::Format { path: path.to_path_buf(), problem };
    let entries: Vec<Entry> = serde_json::from_str(&text).map_err(|e| format(e.to_string()))?;
    let mut out = Vec::new();
    for (i, entry) in entries.into_iter().enumerate() {
        if entry.conversations.len() < 2 {
            continue;
        }
        match entry.conversations.into_iter().next().and_then(|t| t.value) {
            Some(serde_json::Value::String(s)) => out.push(s),
            other => return Err(format(format!("entry {i}: the first turn's \"value\" is {}, not a string", other.map_or("missing".into(), |v| v.to_string())))),
        }
    }
    Ok(out)
}

/// One sampled prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampledPrompt {
    /// The prompt text.
    pub text: String,
    /// Its token ids (special tokens added), unpadded.
    pub ids: Vec<u32>,
}

/// The first turns of a ShareGPT file, each tokenised once and stably sorted by length (steps 1-2
/// of the module doc): what every (batch size, sequence length) of a run samples from.
pub struct ShareGptPool {
    texts: Vec<String>,
    /// (index into `texts`, ids), by length.
    by_length: Vec<(usize, Vec<u32>)>,
}

impl ShareGptPool {
    /// Tokenises `texts` (the tokenizer's own padding and truncation switched off).
    pub fn new(texts: Vec<String>, tokenizer: &tokenizers::Tokenizer) -> Result<Self, ShareGptError> {
        let mut tokenizer = tokenizer.clone();
        tokenizer.with_padding(None);
        tokenizer.with_truncation(None).map_err(|e| ShareGptError::Tokenizer(e.to_string()))?;
        let inputs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let encodings = tokenizer.encode_batch(inputs, true).map_err(|e| ShareGptError::Tokenizer(e.to_string()))?;
        let mut by_length: Vec<(usize, Vec<u32>)> = encodings.into_iter().map(|e| e.get_ids().to_vec()).enumerate().collect();
        by_length.sort_by_key(|(_, ids)| ids.len());
        Ok(ShareGptPool { texts, by_length })
    }

    /// Reads and tokenises the first turns of the ShareGPT file at `path`.
    pub fn load(path: &Path, tokenizer: &tokenizers::Tokenizer) -> Result<Self, ShareGptError> {
        Self::new(load_first_turns(path)?, tokenizer)
    }

    /// The seed's selection of `batch_size` prompts for `seq_length` (steps 3-4), shuffled with
    /// `random.Random(seed)` (the seed uses [`SEED`]).
    pub fn sample(&self, batch_size: usize, seq_length: usize, seed: u64) -> Result<Vec<SampledPrompt>, ShareGptError> {
        let min = seq_length / 2;
        let mut fitting: Vec<&(usize, Vec<u32>)> = self.by_length.iter().filter(|(_, ids)| min <= ids.len() && ids.len() <= seq_length).collect();
        PyRandom::new(seed).shuffle(&mut fitting);
        if fitting.len() < batch_size {
            return Err(ShareGptError::NotEnough { found: fitting.len(), needed: batch_size, min, max: seq_length });
        }
        Ok(fitting.into_iter().take(batch_size).map(|(i, ids)| SampledPrompt { text: self.texts[*i].clone(), ids: ids.clone() }).collect())
    }

    /// The seed's input batch for `batch_size` x `seq_length` (steps 3-5).
    pub fn batch(&self, batch_size: usize, seq_length: usize) -> Result<ShareGptBatch, ShareGptError> {
        let prompts = self.sample(batch_size, seq_length, SEED)?;
        let ids = left_pad(&prompts, seq_length);
        Ok(ShareGptBatch { prompts, ids })
    }
}

/// The seed's selection of `batch_size` prompts for `seq_length` from `texts` (steps 2-4 of the
/// module doc), shuffled with `random.Random(seed)` (the seed uses [`SEED`]).
pub fn sample_prompts(texts: &[String], tokenizer: &tokenizers::Tokenizer, batch_size: usize, seq_length: usize, seed: u64) -> Result<Vec<SampledPrompt>, ShareGptError> {
    ShareGptPool::new(texts.to_vec(), tokenizer)?.sample(batch_size, seq_length, seed)
}

/// Left-pads each prompt's ids with [`PAD_ID`] to `seq_length` (longer prompts are left as they
/// are; [`sample_prompts`] never returns one).
pub fn left_pad(prompts: &[SampledPrompt], seq_length: usize) -> Vec<Vec<i64>> {
    prompts
        .iter()
        .map(|p| std::iter::repeat_n(PAD_ID, seq_length.saturating_sub(p.ids.len())).chain(p.ids.iter().map(|&id| i64::from(id))).collect())
        .collect()
}

/// The seed's input batch: the sampled prompts and their padded ids, `B` rows of `S`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareGptBatch {
    /// The prompts, in batch order.
    pub prompts: Vec<SampledPrompt>,
    /// `B` rows of `S` ids, left-padded with 0.
    pub ids: Vec<Vec<i64>>,
}

/// `prepare_inputs(batch_size, seq_length, tokenizer, path)` of the seed: the whole pipeline.
pub fn prepare_inputs(path: &Path, tokenizer: &tokenizers::Tokenizer, batch_size: usize, seq_length: usize) -> Result<ShareGptBatch, ShareGptError> {
    ShareGptPool::load(path, tokenizer)?.batch(batch_size, seq_length)
}
