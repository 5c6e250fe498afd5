//! The request an external runner answers (`layercheck-request/1`): what to run, as JSON.
//!
//! layercheck writes it before it runs a `command` target; the command reads it and writes a
//! `layercheck-capture/1` file (src/capture.rs). Every field is always present:
//!
//! ```json
//! {
//!   "format": "layercheck-request/1",
//!   "model": "tiny-granite",                       // the matrix's model name (informational)
//!   "model_path": "/abs/models/tiny-granite",      // HF folder, absolute
//!   "target": "aiu-f16",                           // the matrix's target name (informational)
//!   "mode": "model-forward",                       // or "generate"
//!   "input_ids": [[0, 0, 12, 99]],                 // B lists of S ids, left-padded with 0
//!   "max_new_tokens": 0,                           // generate: new tokens; model-forward: 0
//!   "forced_ids": null,                            // generate: B lists of max_new_tokens ids, the
//!                                                  // reference's new tokens, fed instead of the
//!                                                  // target's own choice at each step; null in
//!                                                  // generate mode: decode greedily (what a
//!                                                  // reference command is asked)
//!   "attention_mask": "attend-pads",               // or "proper" (pads masked, positions from
//!                                                  // the first real token)
//!   "feed": "cumulative",                          // or "isolated"
//!   "golden": null,                                // isolated: the golden capture whose
//!                                                  // `input:{name}` tensors each module takes
//!   "keys": ["model.base_model.embedding", "..."], // the record names expected, in order
//!   "capture_inputs": false                        // also write `input:{name}` tensors
//! }
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::capture::Mode;
use layercheck_suite::test_name::Feed;
use crate::model::AttentionMask;

/// The value of a request's `format` field.
pub const REQUEST_FORMAT: &str = "layercheck-request/1";

/// A request, as written to and read from its JSON file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub format: String,
    pub model: String,
    pub model_path: PathBuf,
    pub target: String,
    pub mode: String,
    pub input_ids: Vec<Vec<i64>>,
    pub max_new_tokens: usize,
    pub forced_ids: Option<Vec<Vec<i64>>>,
    pub attention_mask: String,
    pub feed: String,
    pub golden: Option<PathBuf>,
    pub keys: Vec<String>,
    pub capture_inputs: bool,
}

/// Why a request file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a layercheck request: {problem}\n(hint: see the request format in README \"Testing your accelerator\")")]
    Invalid { path: PathBuf, problem: String },
    #[error("{path}: the request cannot be written as JSON: {source}\n(hint: every path in a request (the model folder, the golden file) must be valid UTF-8)")]
    Serialise { path: PathBuf, source: serde_json::Error },
}

/// The typed fields of a checked request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestKinds {
    pub mode: Mode,
    pub mask: AttentionMask,
    pub feed: Feed,
}

impl Request {
    /// Writes the request as pretty JSON (a new file in a folder of layercheck's own).
    pub fn write(&self, path: &Path) -> Result<(), RequestError> {
        let text = serde_json::to_string_pretty(self).map_err(|source| RequestError::Serialise { path: path.to_path_buf(), source })?;
        std::fs::write(path, text + "\n").map_err(|source| RequestError::Io { path: path.to_path_buf(), source })
    }

    /// Reads and checks a request file.
    pub fn read(path: &Path) -> Result<(Request, RequestKinds), RequestError> {
        let text = std::fs::read_to_string(path).map_err(|source| RequestError::Io { path: path.to_path_buf(), source })?;
        let invalid = |problem: String| RequestError::Invalid { path: path.to_path_buf(), problem };
        let request: Request = serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        let kinds = request.check().map_err(invalid)?;
        Ok((request, kinds))
    }

    /// Checks the fields against each other; returns the typed ones.
    pub fn check(&self) -> Result<RequestKinds, String> {
        if self.format != REQUEST_FORMAT {
            return Err(format!("its format is \"{}\", this layercheck reads \"{REQUEST_FORMAT}\"", self.format));
        }
        let mode: Mode = self.mode.parse().map_err(|e| format!("field mode: {e}"))?;
        let mask: AttentionMask = self.attention_mask.parse().map_err(|e| format!("field attention_mask: {e}"))?;
        let feed = match self.feed.as_str() {
            "cumulative" => Feed::Cumulative,
            "isolated" => Feed::Isolated,
            other => return Err(format!("field feed: unknown feed \"{other}\" (expected cumulative or isolated)")),
        };
        let b = self.input_ids.len();
        let s = self.input_ids.first().map_or(0, Vec::len);
        if b == 0 || s == 0 || self.input_ids.iter().any(|row| row.len() != s) {
            return Err("field input_ids: expected B > 0 lists of the same S > 0 ids".into());
        }
        if self.input_ids.iter().flatten().any(|&id| id < 0) {
            return Err("field input_ids: ids are non-negative".into());
        }
        match (mode, &self.forced_ids) {
            (Mode::ModelForward, Some(_)) => return Err("field forced_ids: model-forward has none (null)".into()),
            (Mode::Generate, Some(f)) if f.len() != b || f.iter().any(|row| row.len() != self.max_new_tokens) => {
                return Err(format!("field forced_ids: expected {b} lists of max_new_tokens = {} ids", self.max_new_tokens));
            }
            _ => {}
        }
        if mode == Mode::Generate && self.max_new_tokens == 0 {
            return Err("field max_new_tokens: generate mode needs at least 1".into());
        }
        match (feed, &self.golden) {
            (Feed::Isolated, None) => return Err("field golden: the isolated feed needs the golden file whose inputs it feeds".into()),
            (Feed::Cumulative, Some(_)) => return Err("field golden: only the isolated feed reads a golden file (null)".into()),
            _ => {}
        }
        if self.keys.is_empty() {
            return Err("field keys: no record is expected".into());
        }
        Ok(RequestKinds { mode, mask, feed })
    }

    /// `[B, S]`.
    pub fn shape(&self) -> (usize, usize) {
        (self.input_ids.len(), self.input_ids.first().map_or(0, Vec::len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> Request {
        Request {
            format: REQUEST_FORMAT.into(),
            model: "m".into(),
            model_path: "/m".into(),
            target: "t".into(),
            mode: "generate".into(),
            input_ids: vec![vec![0, 5, 6]],
            max_new_tokens: 2,
            forced_ids: Some(vec![vec![7, 8]]),
            attention_mask: "attend-pads".into(),
            feed: "cumulative".into(),
            golden: None,
            keys: vec!["model.head".into()],
            capture_inputs: false,
        }
    }

    #[test]
    fn a_request_round_trips_through_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        request().write(&path).unwrap();
        let (back, kinds) = Request::read(&path).unwrap();
        assert_eq!(back, request());
        assert_eq!(kinds, RequestKinds { mode: Mode::Generate, mask: AttentionMask::AttendPads, feed: Feed::Cumulative });
    }

    #[test]
    fn inconsistent_fields_are_named() {
        type Spoil = Box<dyn Fn(&mut Request)>;
        let cases: Vec<(Spoil, &str)> = vec![
            (Box::new(|r| r.format = "layercheck-request/9".into()), "format is \"layercheck-request/9\""),
            (Box::new(|r| r.mode = "train".into()), "field mode"),
            (Box::new(|r| r.attention_mask = "none".into()), "field attention_mask"),
            (Box::new(|r| r.feed = "mixed".into()), "field feed"),
            (Box::new(|r| r.input_ids = vec![vec![1, 2], vec![3]]), "field input_ids"),
            (Box::new(|r| r.input_ids = vec![]), "field input_ids"),
            (Box::new(|r| r.input_ids = vec![vec![-1, 2, 3]]), "non-negative"),
            (Box::new(|r| r.forced_ids = Some(vec![vec![1]])), "field forced_ids"),
            (Box::new(|r| r.feed = "isolated".into()), "field golden"),
            (Box::new(|r| r.keys.clear()), "field keys"),
        ];
        for (edit, expected) in cases {
            let mut r = request();
            edit(&mut r);
            let err = r.check().unwrap_err();
            assert!(err.contains(expected), "{expected:?} not in {err}");
        }
        // Generate mode without forced ids: the runner decodes greedily (what a reference
        // command is asked).
        let mut r = request();
        r.forced_ids = None;
        assert!(r.check().is_ok(), "{:?}", r.check());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        std::fs::write(&path, r#"{"format": "layercheck-request/1", "extra": 1}"#).unwrap();
        let err = Request::read(&path).unwrap_err().to_string();
        assert!(err.contains("r.json is not a layercheck request") && err.contains("hint"), "{err}");
    }
}
