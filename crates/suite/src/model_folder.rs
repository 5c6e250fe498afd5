//! What the suite reads of a model folder without touching its weights: the layer count of its
//! `config.json`, from which a case's module keys follow. Listing needs no more, and neither does
//! checking a thresholds file, so a model that layercheck has no Rust decoder for (its reference
//! made by an external command) lists and checks like any other.

use std::path::{Path, PathBuf};

use crate::module_key::MAX_LAYERS;

/// Why a model folder's layer count cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ModelFolderError {
    #[error("{path}: {source}\n(hint: a model folder is a Hugging Face checkpoint folder with a config.json; see README \"Supported models\")")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {problem}\n(hint: config.json must be the model's Hugging Face config, with num_hidden_layers a positive integer)")]
    Invalid { path: PathBuf, problem: String },
}

/// `num_hidden_layers` of `model_dir/config.json`.
pub fn num_hidden_layers(model_dir: &Path) -> Result<usize, ModelFolderError> {
    let path = model_dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|source| ModelFolderError::Io { path: path.clone(), source })?;
    let invalid = |problem: String| ModelFolderError::Invalid { path: path.clone(), problem };
    let config: serde_json::Value = serde_json::from_str(&text).map_err(|e| invalid(format!("not JSON: {e}")))?;
    match config.get("num_hidden_layers") {
        Some(n) => match n.as_u64().filter(|&n| n > 0) {
            Some(n) if n <= MAX_LAYERS as u64 => Ok(n as usize),
            Some(_) => Err(invalid(format!("num_hidden_layers is {n}, more than the {MAX_LAYERS} layers layercheck takes a model to have"))),
            None => Err(invalid(format!("num_hidden_layers is {n}, not a positive integer"))),
        },
        None => Err(invalid("has no num_hidden_layers".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layer_count_or_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let write = |text: &str| std::fs::write(dir.path().join("config.json"), text).unwrap();
        let err = num_hidden_layers(dir.path()).unwrap_err().to_string();
        assert!(err.contains("config.json") && err.contains("hint"), "{err}");
        write(r#"{"model_type": "mistral", "num_hidden_layers": 3}"#);
        assert_eq!(num_hidden_layers(dir.path()).unwrap(), 3);
        for (text, expected) in [("{", "not JSON"), ("{}", "has no num_hidden_layers"), (r#"{"num_hidden_layers": 0}"#, "is 0, not a positive"), (r#"{"num_hidden_layers": "3"}"#, "not a positive integer"), (r#"{"num_hidden_layers": 4000000000}"#, "more than the 10000 layers")] {
            write(text);
            let err = num_hidden_layers(dir.path()).unwrap_err().to_string();
            assert!(err.contains(expected) && err.contains("config.json"), "{text}: {err}");
        }
    }
}
