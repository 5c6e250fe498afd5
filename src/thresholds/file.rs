//! The thresholds JSON file: `get_thresholds.py`'s schema, written as Python writes it, read
//! tolerantly, with layercheck's per-shape thresholds under one extra top-level key.

use std::path::{Path, PathBuf};

use super::per_shape::{PerShapeThresholds, PER_SHAPE_KEY};
use super::ThresholdsError;
use layercheck_suite::atomic::{write_file, Replace};
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

/// The largest cos threshold taken as a cosine: the seed's f16 cos exceeds 1 by rounding (about
/// 1e-4); anything further above 1 is not a cosine.
pub const MAX_COS_THRESHOLD: f64 = 1.01;

/// The seed's metrics that the verdict applies (`abs_diff` an L2 norm, the others a cosine).
const APPLIED: [&str; 3] = ["abs_diff", "cos_sim_avg", "cos_sim_mean"];

impl ThresholdsFile {
    /// Checks every value the verdict may apply (the seed's `abs_diff`, `cos_sim_avg`,
    /// `cos_sim_mean`, and the per-shape `abs_diff_l2` and `cos_mean`): finite, an L2 norm at
    /// least 0, a cos in [0, [`MAX_COS_THRESHOLD`]]. `path` names the file in errors.
    pub fn validate(&self, path: &Path) -> Result<(), ThresholdsError> {
        let invalid = |field: String, problem: String| ThresholdsError::Invalid { path: path.to_path_buf(), field, problem };
        for (name, m) in self.metrics.iter().filter(|(n, _)| APPLIED.contains(&n.as_str())) {
            let values: Vec<(String, f64)> = match m {
                MetricThresholds::Layers(layers) => layers.iter().map(|(k, v)| (format!("{name}[\"{k}\"]"), *v)).collect(),
                MetricThresholds::Scalar(v) => vec![(name.clone(), *v)],
            };
            for (field, v) in values {
                let problem = if name == "abs_diff" { norm_problem(v) } else { cos_problem(v) };
                if let Some(problem) = problem {
                    return Err(invalid(field, problem));
                }
            }
        }
        if let Some(p) = &self.per_shape {
            if !(0.0..=100.0).contains(&p.percentile) {
                return Err(invalid(format!("{PER_SHAPE_KEY}.percentile"), format!("is {}, not in [0, 100]", p.percentile)));
            }
            for shape in &p.shapes {
                let at = format!("{PER_SHAPE_KEY}.shapes.{}", super::per_shape::shape_key(shape.batch_size, shape.seq_length));
                if shape.batch_size == 0 || shape.seq_length == 0 {
                    return Err(invalid(at, "has batch_size or seq_length 0".into()));
                }
                for (key, t) in &shape.layers {
                    for (q, v, problem) in [("abs_diff_l2", t.abs_diff_l2, t.abs_diff_l2.and_then(norm_problem)), ("cos_mean", t.cos_mean, t.cos_mean.and_then(cos_problem))] {
                        if let (Some(_), Some(problem)) = (v, problem) {
                            return Err(invalid(format!("{at}.layers[\"{key}\"].{q}"), problem));
                        }
                    }
                }
            }
            if let Some(l) = &p.logits {
                // Each is a non-negative quantity (ce an entropy plus a divergence).
                for (q, v) in [("ce", l.ce), ("diff_mean", l.diff_mean), ("kl", l.kl)] {
                    if let Some(problem) = norm_problem(v) {
                        return Err(invalid(format!("{PER_SHAPE_KEY}.logits.{q}"), problem));
                    }
                }
                if l.top_k == 0 {
                    return Err(invalid(format!("{PER_SHAPE_KEY}.logits.top_k"), "is 0; the metrics need at least one logit".into()));
                }
            }
        }
        // test_decoders.py's whole-model thresholds, which the logits verdict applies.
        for name in ["ce", "diff_mean"] {
            if let Some(MetricThresholds::Scalar(v)) = self.metric(name) {
                if let Some(problem) = norm_problem(*v) {
                    return Err(invalid(name.to_string(), problem));
                }
            }
        }
        Ok(())
    }

    /// Checks that the file belongs to the model it is applied to: its `model_id` (`org--name`)
    /// ends with one of `names` (the model folder's name, the matrix's name for it), and no layer
    /// key names a layer past `num_layers`.
    pub fn check_model(&self, path: &Path, names: &[&str], num_layers: usize) -> Result<(), ThresholdsError> {
        let invalid = |field: String, problem: String| ThresholdsError::Invalid { path: path.to_path_buf(), field, problem };
        let last = self.model_id.rsplit("--").next().unwrap_or(&self.model_id);
        if !names.iter().any(|n| *n == self.model_id || *n == last) {
            return Err(invalid("model_id".into(), format!("is \"{}\", but the file is applied to model {}: it holds another model's thresholds (if they are this model's, set \"model_id\" to \"{}\")", self.model_id, names.join(" / "), names[0])));
        }
        let mut keys: Vec<&str> = Vec::new();
        for (_, m) in &self.metrics {
            if let MetricThresholds::Layers(layers) = m {
                keys.extend(layers.iter().map(|(k, _)| k.as_str()));
            }
        }
        if let Some(p) = &self.per_shape {
            keys.extend(p.shapes.iter().flat_map(|s| s.layers.iter().map(|(k, _)| k.as_str())));
        }
        for key in keys {
            let (base, _) = crate::formats::case::strip_iter(key);
            if let Ok(crate::hooks::ModuleKey::Layer(i, _)) = base.parse::<crate::hooks::ModuleKey>() {
                if i >= num_layers {
                    return Err(invalid(format!("layer key {key}"), format!("names layer {i}, but the model has {num_layers} layers (0 to {}): the file is of another model", num_layers.saturating_sub(1))));
                }
            }
        }
        Ok(())
    }
}

fn norm_problem(v: f64) -> Option<String> {
    if v.is_nan() {
        Some("is NaN: it comes from a baseline with NaN and can judge nothing".into())
    } else if v.is_infinite() {
        Some(format!("is {v}: it comes from a baseline that overflowed and can judge nothing"))
    } else if v < 0.0 {
        Some(format!("is {v}: an L2 norm of differences is at least 0"))
    } else {
        None
    }
}

fn cos_problem(v: f64) -> Option<String> {
    if !v.is_finite() {
        Some(format!("is {v}: a cosine threshold must be a finite number"))
    } else if v < 0.0 {
        Some(format!("is {v}: a healthy layer's cosine is near 1, and a threshold below 0 lets anything pass"))
    } else if v > MAX_COS_THRESHOLD {
        Some(format!("is {v}: not a cosine (the seed's f16 cosine exceeds 1 by rounding, about 1e-4, never past {MAX_COS_THRESHOLD})"))
    } else {
        None
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

    #[test]
    fn impossible_values_and_other_models_are_refused_by_field() {
        let p = Path::new("t.json");
        let err = |text: &str| ThresholdsFile::parse(text).unwrap().validate(p).unwrap_err().to_string();
        let e = err(r#"{"model_id": "m", "abs_diff": {"model.head": NaN}}"#);
        assert!(e.contains("t.json: abs_diff[\"model.head\"] is NaN") && e.contains("hint:"), "{e}");
        assert!(err(r#"{"model_id": "m", "abs_diff": {"model.head": -0.5}}"#).contains("is -0.5: an L2 norm"));
        assert!(err(r#"{"model_id": "m", "cos_sim_avg": {"model.head": -0.1}}"#).contains("below 0"));
        assert!(err(r#"{"model_id": "m", "cos_sim_mean": {"model.head": 1.5}}"#).contains("is 1.5: not a cosine"));
        assert!(err(r#"{"model_id": "m", "cos_sim_avg": Infinity}"#).contains("cos_sim_avg is inf"));
        // The seed's f16 cos above 1, and the sample's zeros, are fine.
        ThresholdsFile::parse(r#"{"model_id": "m", "cos_sim_avg": {"a": 1.0001, "b": 0}, "prob_mean": NaN}"#).unwrap().validate(p).unwrap();
        // test_decoders.py's whole-model thresholds are applied by the logits verdict.
        assert!(err(r#"{"model_id": "m", "ce": NaN}"#).contains("t.json: ce is NaN"));
        assert!(err(r#"{"model_id": "m", "diff_mean": -1}"#).contains("diff_mean is -1"));
        let f = ThresholdsFile::parse(r#"{"model_id": "org--tiny", "abs_diff": {"model.base_model.layers2.ln": 1.0, "model.base_model.layers3.ln.iter-9": 1.0}}"#).unwrap();
        f.check_model(p, &["tiny"], 4).unwrap();
        let e = f.check_model(p, &["tiny"], 3).unwrap_err().to_string();
        assert!(e.contains("layer key model.base_model.layers3.ln.iter-9 names layer 3, but the model has 3 layers"), "{e}");
        let e = f.check_model(p, &["other", "models/other"], 4).unwrap_err().to_string();
        assert!(e.contains("model_id is \"org--tiny\", but the file is applied to model other"), "{e}");
    }

    #[test]
    fn the_python_tools_sample_is_valid_for_its_40_layers() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(SAMPLE);
        let file = ThresholdsFile::read(&path).unwrap();
        file.validate(&path).unwrap();
        file.check_model(&path, &["granite-3.2-8b-instruct"], 40).unwrap();
    }
}
