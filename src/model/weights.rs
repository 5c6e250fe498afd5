//! Reads an HF checkpoint's safetensors (one file or shards listed by
//! `model.safetensors.index.json`) into tensors, remembering which file each came from.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use tch::Tensor;

use super::ModelError;
use crate::tensor_file::{TensorFile, TensorFileError};

/// One weight and the file it was read from.
pub struct Weight {
    pub tensor: Tensor,
    pub file: PathBuf,
}

/// All weights of a checkpoint by HF name.
pub struct Checkpoint {
    weights: HashMap<String, Weight>,
    /// What the checkpoint was read from (for messages).
    pub source: PathBuf,
}

impl Checkpoint {
    /// Reads `model.safetensors`, or the shards named by `model.safetensors.index.json`, in `dir`.
    pub fn load(dir: &Path) -> Result<Self, ModelError> {
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        let files = if index.exists() {
            shard_files(&index)?
        } else if single.exists() {
            vec![single.clone()]
        } else {
            return Err(ModelError::MissingFile {
                path: single,
                hint: "an HF model folder needs model.safetensors or model.safetensors.index.json with its shards",
            });
        };
        let mut weights = HashMap::new();
        for file in &files {
            read_file(file, &mut weights)?;
        }
        let source = if files.len() == 1 { files[0].clone() } else { index };
        Ok(Checkpoint { weights, source })
    }

    /// Takes a weight out, checking its shape.
    pub fn take(&mut self, name: &str, shape: &[i64]) -> Result<Weight, ModelError> {
        let weight = self.weights.remove(name).ok_or_else(|| ModelError::MissingWeight {
            name: name.to_string(),
            path: self.source.clone(),
        })?;
        if weight.tensor.size() != shape {
            return Err(ModelError::WeightShape {
                name: name.to_string(),
                path: weight.file,
                expected: shape.to_vec(),
                found: weight.tensor.size(),
            });
        }
        Ok(weight)
    }

    /// Names not taken yet, sorted.
    pub fn remaining(&self) -> Vec<String> {
        let mut names: Vec<String> = self.weights.keys().cloned().collect();
        names.sort();
        names
    }
}

/// The shard files named by an index file, in order, each once.
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

fn read_file(file: &Path, into: &mut HashMap<String, Weight>) -> Result<(), ModelError> {
    let parsed = TensorFile::read(file).map_err(|e| match e {
        TensorFileError::Io { path, source } => ModelError::Io {
            path,
            source,
            hint: "a checkpoint file named by the model folder is missing or unreadable",
        },
        other => ModelError::Checkpoint { path: file.to_path_buf(), problem: format!("could not be read: {other}") },
    })?;
    for (name, tensor) in parsed.tensors {
        if !tensor.is_floating_point() {
            return Err(ModelError::Checkpoint {
                path: file.to_path_buf(),
                problem: format!("holds weight {name} as {:?}; only f32, f16, bf16 and f64 weights are supported", tensor.kind()),
            });
        }
        into.insert(name, Weight { tensor, file: file.to_path_buf() });
    }
    Ok(())
}

/// The sha256 of a model folder's checkpoint files (in name order, content only): what golden
/// files record so that a change of weights shows as staleness, not as a numeric failure.
pub fn weights_sha256(dir: &Path) -> Result<String, ModelError> {
    use sha2::{Digest, Sha256};
    let index = dir.join("model.safetensors.index.json");
    let mut files = if index.exists() { shard_files(&index)? } else { vec![dir.join("model.safetensors")] };
    files.sort();
    let mut hasher = Sha256::new();
    for file in &files {
        let mut f = std::fs::File::open(file).map_err(|source| ModelError::Io { path: file.clone(), source, hint: "a checkpoint file is missing" })?;
        std::io::copy(&mut f, &mut hasher).map_err(|source| ModelError::Io { path: file.clone(), source, hint: "a checkpoint file could not be read" })?;
    }
    Ok(crate::run::hex(&hasher.finalize()))
}
