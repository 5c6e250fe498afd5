//! The thresholds JSON file: `get_thresholds.py`'s schema, written as Python writes it, read
//! tolerantly, with layercheck's per-shape thresholds under one extra top-level key.

use std::path::{Path, PathBuf};

use super::per_shape::{PerShapeThresholds, PER_SHAPE_KEY};
use super::ThresholdsError;
use crate::formats::atomic::{write_file, Replace};
use crate::formats::py_json::PyJson;

/// One metric's thresholds.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricThresholds {
    /// `--layer_io` mode: one value per layer key, in file order.
    Layers(Vec<(String, f64)>),
    /// Whole-model mode: the 99th percentile of every value.
    Scalar(f64),
}

impl MetricThresholds {
    /// The value of `key` (layer mode).
    pub fn layer(&self, key: &str) -> Option<f64> {
        match self {
            MetricThresholds::Layers(layers) => layers.iter().find(|(k, _)| k == key).map(|(_, v)| *v),
            MetricThresholds::Scalar(_) => None,
        }
    }
}

/// A thresholds file: `{"model_id": ..., "<metric>": {layer: value} | value, ...}`, plus
/// layercheck's per-shape section and any other entries found.
#[derive(Debug, Clone, PartialEq)]
pub struct ThresholdsFile {
    /// The model id in file form (`org--name`).
    pub model_id: String,
    /// Metrics in `--metrics` order.
    pub metrics: Vec<(String, MetricThresholds)>,
    /// layercheck's per-(batch, seq) thresholds (top-level key [`PER_SHAPE_KEY`]).
    pub per_shape: Option<PerShapeThresholds>,
    /// Other top-level entries, kept as read and written back after ours.
    pub other: Vec<(String, PyJson)>,
}

impl ThresholdsFile {
    /// The file name `get_thresholds.py` gives a model's thresholds: `{model_id}-thresholds.json`.
    pub fn file_name(model_id: &str) -> String {
        format!("{model_id}-thresholds.json")
    }

    /// A metric's thresholds.
    pub fn metric(&self, name: &str) -> Option<&MetricThresholds> {
        self.metrics.iter().find(|(n, _)| n == name).map(|(_, m)| m)
    }

    /// The threshold of `metric` for layer `key`.
    pub fn layer(&self, metric: &str, key: &str) -> Option<f64> {
        self.metric(metric)?.layer(key)
    }

    /// The JSON text, exactly as Python's `json.dump` writes the same dict (per-shape section and
    /// other entries after the seed's keys).
    pub fn to_json(&self) -> String {
        self.to_py_json().to_python_json()
    }

    fn to_py_json(&self) -> PyJson {
        let mut entries = vec![("model_id".to_string(), PyJson::Str(self.model_id.clone()))];
        for (name, m) in &self.metrics {
            let value = match m {
                MetricThresholds::Layers(layers) => PyJson::Object(layers.iter().map(|(k, v)| (k.clone(), PyJson::Float(*v))).collect()),
                MetricThresholds::Scalar(v) => PyJson::Float(*v),
            };
            entries.push((name.clone(), value));
        }
        if let Some(p) = &self.per_shape {
            entries.push((PER_SHAPE_KEY.to_string(), p.to_py_json()));
        }
        entries.extend(self.other.iter().cloned());
        PyJson::Object(entries)
    }

    /// Writes `{output_path}/{model_id}-thresholds.json` (replacing it, as Python does, but
    /// atomically); returns the path.
    pub fn write(&self, output_path: &Path) -> Result<PathBuf, ThresholdsError> {
        let path = output_path.join(Self::file_name(&self.model_id));
        let text = self.to_json();
        write_file(&path, Replace::Allowed, |w| w.write_all(text.as_bytes()))?;
        Ok(path)
    }

    /// Reads a thresholds file written by us, by `get_thresholds.py`, or by hand.
    pub fn read(path: &Path) -> Result<Self, ThresholdsError> {
        let text = std::fs::read_to_string(path).map_err(|source| ThresholdsError::Read { path: path.to_path_buf(), source })?;
        Self::parse(&text).map_err(|e| e.in_file(path))
    }

    /// Parses thresholds JSON text. An object of numbers is a layer-mode metric, a number a
    /// whole-model one; integers are taken as floats; NaN and ±Infinity are accepted.
    pub fn parse(text: &str) -> Result<Self, ThresholdsError> {
        let json = PyJson::parse(text).map_err(|source| ThresholdsError::Json { path: None, source })?;
        let schema = |problem: String| ThresholdsError::Schema { path: None, problem };
        let PyJson::Object(entries) = json else {
            return Err(schema(format!("the top level is {}, not an object", json.type_name())));
        };
        let mut model_id = None;
        let (mut metrics, mut per_shape, mut other) = (Vec::new(), None, Vec::new());
        for (key, value) in entries {
            match (key.as_str(), &value) {
                ("model_id", PyJson::Str(s)) => model_id = Some(s.clone()),
                ("model_id", v) => return Err(schema(format!("model_id is {}, not a string", v.type_name()))),
                (PER_SHAPE_KEY, _) => per_shape = Some(PerShapeThresholds::from_py_json(&value).map_err(schema)?),
                (_, PyJson::Int(_) | PyJson::Float(_)) => metrics.push((key, MetricThresholds::Scalar(value.as_f64().unwrap_or(f64::NAN)))),
                (_, PyJson::Object(layers)) if layers.iter().all(|(_, v)| v.as_f64().is_some()) => {
                    let layers = layers.iter().map(|(k, v)| (k.clone(), v.as_f64().unwrap_or(f64::NAN))).collect();
                    metrics.push((key, MetricThresholds::Layers(layers)));
                }
                _ => other.push((key, value)),
            }
        }
        let model_id = model_id.ok_or_else(|| schema("there is no \"model_id\"".to_string()))?;
        Ok(ThresholdsFile { model_id, metrics, per_shape, other })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "../shared/anchors/sample_layer_th.json";

    #[test]
    fn reads_the_python_tools_sample_file() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(SAMPLE);
        let file = ThresholdsFile::read(&path).unwrap();
        assert_eq!(file.model_id, "ibm-granite--granite-3.2-8b-instruct");
        let names: Vec<_> = file.metrics.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["abs_diff", "cos_sim_avg", "cos_sim_mean"]);
        for (name, m) in &file.metrics {
            let MetricThresholds::Layers(layers) = m else { panic!("{name} is not per layer") };
            assert_eq!(layers.len(), 484, "{name}");
            assert_eq!(layers[0].0, "model.base_model.embedding");
            assert_eq!(layers[483].0, "model.head");
        }
        assert_eq!(file.layer("abs_diff", "model.base_model.embedding"), Some(1.7258892434335918e-7));
        assert_eq!(file.layer("abs_diff", "model.base_model.layers0.attn.in_proj"), Some(0.12381335209555287));
        assert_eq!(file.layer("cos_sim_avg", "model.base_model.layers39.ff_ln"), Some(1.0000354265794158));
        // Hand-formatted integer zeros read as 0.0.
        assert_eq!(file.layer("cos_sim_mean", "model.base_model"), Some(0.0));
        assert!(file.per_shape.is_none() && file.other.is_empty());
        // Written back the way Python writes it, and read again unchanged.
        let again = ThresholdsFile::parse(&file.to_json()).unwrap();
        assert_eq!(again, file);
        assert!(file.to_json().starts_with("{\"model_id\": \"ibm-granite--granite-3.2-8b-instruct\", \"abs_diff\": {\"model.base_model.embedding\": 1.7258892434335918e-07, "));
    }

    #[test]
    fn non_finite_values_scalars_and_unknown_entries() {
        let text = r#"{"model_id": "m", "abs_diff": {"a": NaN, "b": Infinity, "c": -Infinity}, "ce": 2.5, "note": "x"}"#;
        let f = ThresholdsFile::parse(text).unwrap();
        assert!(f.layer("abs_diff", "a").unwrap().is_nan());
        assert_eq!(f.layer("abs_diff", "b"), Some(f64::INFINITY));
        assert_eq!(f.metric("ce"), Some(&MetricThresholds::Scalar(2.5)));
        assert_eq!(f.other, vec![("note".to_string(), PyJson::Str("x".into()))]);
        assert_eq!(f.to_json(), text);
    }

    #[test]
    fn schema_errors_say_what_is_wrong() {
        let err = ThresholdsFile::parse(r#"{"abs_diff": {}}"#).unwrap_err().to_string();
        assert!(err.contains("model_id") && err.contains("hint"), "{err}");
        let err = ThresholdsFile::parse("[1]").unwrap_err().to_string();
        assert!(err.contains("not an object"), "{err}");
        let err = ThresholdsFile::parse("{").unwrap_err().to_string();
        assert!(err.contains("JSON"), "{err}");
    }
}
