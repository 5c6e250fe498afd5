//! Reads an HF checkpoint's safetensors (one file or shards listed by
//! `model.safetensors.index.json`) one weight at a time, remembering which file each came from:
//! each file's header is checked when the checkpoint is opened, and a weight's bytes are read only
//! when it is taken, so that a model converted to its target's dtype weight by weight never has its
//! whole float32 checkpoint in memory beside it.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tch::Tensor;

use super::ModelError;
use crate::tensor_file::TensorFileError;
use crate::tensor_reader::TensorReader;

/// One weight and the file it was read from.
pub struct Weight {
    pub tensor: Tensor,
    pub file: PathBuf,
}

/// The weights of a checkpoint by HF name, read when taken.
pub struct Checkpoint {
    files: Vec<TensorReader>,
    /// The file (index into `files`) of each weight not taken yet.
    weights: HashMap<String, usize>,
    /// What the checkpoint was read from (for messages).
    pub source: PathBuf,
}

impl Checkpoint {
    /// Opens `model.safetensors`, or the shards named by `model.safetensors.index.json`, in `dir`,
    /// checking every header and that every weight is floating point.
    pub fn load(dir: &Path) -> Result<Self, ModelError> {
        let (paths, source) = checkpoint_files(dir)?;
        let mut files = Vec::with_capacity(paths.len());
        let mut weights = HashMap::new();
        for path in &paths {
            let reader = open_file(path)?;
            for name in reader.names() {
                let missing = || ModelError::MissingWeight { name: name.to_string(), path: path.clone() };
                let (kind, _) = reader.info(name).ok_or_else(missing)?;
                if !matches!(kind, tch::Kind::Float | tch::Kind::Half | tch::Kind::BFloat16 | tch::Kind::Double) {
                    return Err(ModelError::Checkpoint {
                        path: path.clone(),
                        problem: format!("holds weight {name} as {kind:?}; only f32, f16, bf16 and f64 weights are supported"),
                    });
                }
                weights.insert(name.to_string(), files.len());
            }
            files.push(reader);
        }
        Ok(Checkpoint { files, weights, source })
    }

    /// Takes a weight out as `kind`, checking its shape before reading it (converted slice by
    /// slice: see [`TensorReader::read_as`]).
    pub fn take(&mut self, name: &str, shape: &[i64], kind: tch::Kind) -> Result<Weight, ModelError> {
        let file = self.weights.remove(name).ok_or_else(|| ModelError::MissingWeight {
            name: name.to_string(),
            path: self.source.clone(),
        })?;
        let reader = &self.files[file];
        let missing = || ModelError::MissingWeight { name: name.to_string(), path: reader.path().to_path_buf() };
        let (_, found) = reader.info(name).ok_or_else(missing)?;
        if found != shape {
            return Err(ModelError::WeightShape { name: name.to_string(), path: reader.path().to_path_buf(), expected: shape.to_vec(), found: found.to_vec() });
        }
        let tensor = reader
            .read_as(name, kind)
            .map_err(|e| ModelError::Checkpoint { path: reader.path().to_path_buf(), problem: format!("weight {name} could not be read: {e}") })?
            .ok_or_else(missing)?;
        Ok(Weight { tensor, file: reader.path().to_path_buf() })
    }

    /// Whether any weight is stored wider than float32 (a float64 checkpoint).
    pub fn has_float64(&self) -> bool {
        self.files.iter().any(|f| f.names().iter().any(|n| f.info(n).is_some_and(|(k, _)| k == tch::Kind::Double)))
    }

    /// Names not taken yet, sorted.
    pub fn remaining(&self) -> Vec<String> {
        let mut names: Vec<String> = self.weights.keys().cloned().collect();
        names.sort();
        names
    }
}

/// The checkpoint files of a model folder in name order (`model.safetensors`, or the shards its
/// index names), and what to call the checkpoint in messages (the file, or the index).
fn checkpoint_files(dir: &Path) -> Result<(Vec<PathBuf>, PathBuf), ModelError> {
    let single = dir.join("model.safetensors");
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let files = shard_files(&index)?;
        let source = if files.len() == 1 { files[0].clone() } else { index };
        Ok((files, source))
    } else if single.exists() {
        Ok((vec![single.clone()], single))
    } else {
        Err(ModelError::MissingFile { path: single, hint: "an HF model folder needs model.safetensors or model.safetensors.index.json with its shards" })
    }
}

/// The shard files named by an index file, in name order, each once.
fn shard_files(index: &Path) -> Result<Vec<PathBuf>, ModelError> {
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: BTreeMap<String, String>,
    }
    let text = std::fs::read_to_string(index).map_err(|source| ModelError::Io {
        path: index.to_path_buf(),
        source,
        hint: "the shard index could not be read",
    })?;
    let parsed: Index = serde_json::from_str(&text).map_err(|e| ModelError::Checkpoint {
        path: index.to_path_buf(),
        problem: format!("is not a valid shard index ({e}); it needs a \"weight_map\" object of weight name -> shard file"),
    })?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut files: Vec<PathBuf> = Vec::new();
    for shard in parsed.weight_map.values() {
        let path = dir.join(shard);
        if !files.contains(&path) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn open_file(file: &Path) -> Result<TensorReader, ModelError> {
    TensorReader::open(file).map_err(|e| match e {
        TensorFileError::Io { path, source } => ModelError::Io {
            path,
            source,
            hint: "a checkpoint file named by the model folder is missing or unreadable",
        },
        other => ModelError::Checkpoint { path: file.to_path_buf(), problem: format!("could not be read: {other}") },
    })
}

/// The sha256 of a model folder's checkpoint files (in name order, content only): what golden
/// files record so that a change of weights shows as staleness, not as a numeric failure.
///
/// Every case of a model needs it, each in its own process, and hashing reads the whole
/// checkpoint (gigabytes for a real model): the result is remembered between processes
/// ([`crate::remembered_sha256`]).
pub fn weights_sha256(dir: &Path) -> Result<String, ModelError> {
    let (files, _) = checkpoint_files(dir)?;
    crate::remembered_sha256::remembered("weights", &files, || {
        let mut hasher = Sha256::new();
        for file in &files {
            let mut f = std::fs::File::open(file).map_err(|source| ModelError::Io { path: file.clone(), source, hint: "a checkpoint file is missing" })?;
            std::io::copy(&mut f, &mut hasher).map_err(|source| ModelError::Io { path: file.clone(), source, hint: "a checkpoint file could not be read" })?;
        }
        Ok(format!("{:x}", hasher.finalize()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_weights_hash_is_of_the_content_and_follows_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("model.safetensors");
        std::fs::write(&file, b"first weights").unwrap();
        // Independently: sha256 of the bytes (a single file is hashed as it is).
        let expected = |bytes: &[u8]| format!("{:x}", Sha256::digest(bytes));
        assert_eq!(weights_sha256(dir.path()).unwrap(), expected(b"first weights"));
        // Remembered: the same answer again.
        assert_eq!(weights_sha256(dir.path()).unwrap(), expected(b"first weights"));
        // Same length, new content, a later modification time: hashed anew.
        std::fs::write(&file, b"other weights").unwrap();
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
        std::fs::File::options().write(true).open(&file).unwrap().set_modified(later).unwrap();
        assert_eq!(weights_sha256(dir.path()).unwrap(), expected(b"other weights"));
    }
}
