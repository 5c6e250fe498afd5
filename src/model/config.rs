//! An HF `config.json` for the Llama and Granite families, read strictly: every field is either
//! honoured, known to be irrelevant to a forward pass, or refused with an error naming it.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use layercheck_suite::module_key::MAX_LAYERS;

use super::ModelError;

/// The most positions a model may declare (`max_position_embeddings`): 16M. The rotary tables of
/// every position are computed at load and stay in memory (8 GiB at head_dim 128 at this bound):
/// the bound keeps a typo from asking for terabytes.
pub const MAX_POSITIONS: i64 = 1 << 24;

/// The model family, from `model_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Llama,
    Granite,
}

/// Rotary position embedding settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Rope {
    pub theta: f64,
    /// Llama 3.1's frequency scaling (`rope_type: "llama3"`), when present.
    pub llama3: Option<Llama3Scaling>,
}

/// The parameters of `rope_type: "llama3"`.
#[derive(Debug, Clone, PartialEq)]
pub struct Llama3Scaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: f64,
}

/// The runtime configuration of a decoder, after validation.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub family: Family,
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub intermediate_size: i64,
    pub num_layers: usize,
    pub num_heads: i64,
    pub num_kv_heads: i64,
    pub head_dim: i64,
    pub rms_norm_eps: f64,
    pub rope: Rope,
    pub max_position_embeddings: i64,
    pub tie_word_embeddings: bool,
    /// Granite: the embedding output is multiplied by this (1 for Llama).
    pub embedding_multiplier: f64,
    /// Granite: each residual branch is multiplied by this (1 for Llama).
    pub residual_multiplier: f64,
    /// The softmax scale: Granite's `attention_multiplier`, else `1/sqrt(head_dim)`.
    pub attention_scale: f64,
    /// Granite: logits are divided by this (1 for Llama).
    pub logits_scaling: f64,
}

/// Fields that say nothing about the forward pass of a decoder in inference.
const IRRELEVANT: &[&str] = &[
    "architectures", "model_type", "transformers_version", "torch_dtype", "dtype", "bos_token_id",
    "eos_token_id", "pad_token_id", "initializer_range", "use_cache", "attention_dropout",
    "embedding_dropout", "resid_pdrop", "hidden_dropout", "_name_or_path", "output_attentions",
    "output_hidden_states", "return_dict", "is_decoder", "tokenizer_class", "chat_template",
    "max_length", "bad_words_ids", "num_beams", "decoder_start_token_id", "sep_token_id",
    "id2label", "label2id", "problem_type", "task_specific_params", "tie_encoder_decoder",
    "unk_token_id", "_attn_implementation_autoset", "keys_to_ignore_at_inference",
    "use_sliding_window", "layer_types",
];

impl ModelConfig {
    /// Reads and validates `config.json` in `dir`.
    pub fn load(dir: &Path) -> Result<Self, ModelError> {
        let file = dir.join("config.json");
        let text = std::fs::read_to_string(&file).map_err(|source| ModelError::Io {
            path: file.clone(),
            source,
            hint: "an HF model folder needs config.json beside its safetensors files",
        })?;
        Self::from_json(&text, &file)
    }

    /// Parses and validates the text of a `config.json`; `file` names it in errors.
    pub fn from_json(text: &str, file: &Path) -> Result<Self, ModelError> {
        let value: Value = serde_json::from_str(text).map_err(|e| ModelError::ConfigJson { path: file.to_path_buf(), problem: e.to_string() })?;
        let Value::Object(map) = value else {
            return Err(cfg_err(file, "", "must be a JSON object".into()));
        };
        ConfigReader { file: file.to_path_buf(), map }.read()
    }

    /// Width of the query projection (`num_heads * head_dim`).
    pub fn q_width(&self) -> i64 {
        self.num_heads * self.head_dim
    }

    /// Width of each of the key and value projections (`num_kv_heads * head_dim`).
    pub fn kv_width(&self) -> i64 {
        self.num_kv_heads * self.head_dim
    }
}

fn cfg_err(file: &Path, field: &str, problem: String) -> ModelError {
    ModelError::Config { path: file.to_path_buf(), field: field.to_string(), problem }
}

/// Takes fields out of the JSON object one by one, so that whatever is left at the end is unknown.
struct ConfigReader {
    file: PathBuf,
    map: Map<String, Value>,
}

impl ConfigReader {
    fn err(&self, field: &str, problem: impl Into<String>) -> ModelError {
        cfg_err(&self.file, field, problem.into())
    }

    fn take(&mut self, field: &str) -> Option<Value> {
        self.map.remove(field).filter(|v| !v.is_null())
    }

    fn int(&mut self, field: &str) -> Result<i64, ModelError> {
        match self.take(field) {
            Some(v) => v
                .as_i64()
                .filter(|n| *n > 0)
                .ok_or_else(|| self.err(field, format!("must be a positive integer, found {v}"))),
            None => Err(self.err(field, "is missing")),
        }
    }

    fn float_or(&mut self, field: &str, default: f64) -> Result<f64, ModelError> {
        match self.take(field) {
            Some(v) => v
                .as_f64()
                .filter(|x| x.is_finite())
                .ok_or_else(|| self.err(field, format!("must be a finite number, found {v}"))),
            None => Ok(default),
        }
    }

    /// Fails unless `v > min`, saying why such a value cannot be meant.
    fn above(&self, field: &str, v: f64, min: f64, why: &str) -> Result<(), ModelError> {
        if v > min {
            Ok(())
        } else {
            Err(self.err(field, format!("= {v} must be above {min}: {why}")))
        }
    }

    fn bool_or(&mut self, field: &str, default: bool) -> Result<bool, ModelError> {
        match self.take(field) {
            Some(v) => v.as_bool().ok_or_else(|| self.err(field, format!("must be true or false, found {v}"))),
            None => Ok(default),
        }
    }

    /// Refuses a field whose value changes the forward pass in a way this model does not implement.
    fn refuse_unless(&mut self, field: &str, allowed: impl Fn(&Value) -> bool, what: &str) -> Result<(), ModelError> {
        match self.take(field) {
            Some(v) if !allowed(&v) => Err(self.err(field, format!("= {v} is not supported: {what}"))),
            _ => Ok(()),
        }
    }

    fn read(mut self) -> Result<ModelConfig, ModelError> {
        let family = match self.map.get("model_type").and_then(Value::as_str) {
            Some("llama") => Family::Llama,
            Some("granite") => Family::Granite,
            Some(other) => {
                return Err(self.err("model_type", format!("= \"{other}\": only \"llama\" and \"granite\" decoders are supported")))
            }
            None => return Err(self.err("model_type", "is missing")),
        };
        let vocab_size = self.int("vocab_size")?;
        let hidden_size = self.int("hidden_size")?;
        let intermediate_size = self.int("intermediate_size")?;
        let num_layers = self.int("num_hidden_layers")? as usize;
        if num_layers > MAX_LAYERS {
            return Err(self.err("num_hidden_layers", format!("= {num_layers} is more than the {MAX_LAYERS} layers layercheck takes a model to have")));
        }
        let num_heads = self.int("num_attention_heads")?;
        let num_kv_heads = match self.map.contains_key("num_key_value_heads") {
            true => self.int("num_key_value_heads")?,
            false => num_heads,
        };
        if num_heads % num_kv_heads != 0 {
            return Err(self.err("num_key_value_heads", format!("= {num_kv_heads} does not divide num_attention_heads = {num_heads}")));
        }
        let head_dim = match self.map.get("head_dim").is_some_and(|v| !v.is_null()) {
            true => self.int("head_dim")?,
            false if hidden_size % num_heads == 0 => hidden_size / num_heads,
            false => return Err(self.err("head_dim", "is missing and hidden_size is not a multiple of num_attention_heads")),
        };
        if head_dim % 2 != 0 {
            return Err(self.err("head_dim", format!("= {head_dim} must be even for rotary embeddings")));
        }
        // q_width(); kv_width() is no larger, num_key_value_heads dividing num_attention_heads.
        if num_heads.checked_mul(head_dim).is_none() {
            return Err(self.err("head_dim", format!("= {head_dim} times num_attention_heads = {num_heads} does not fit a 64-bit integer")));
        }
        let rms_norm_eps = self.float_or("rms_norm_eps", 1e-6)?;
        // RMSNorm divides by sqrt(mean(x^2) + eps): eps <= 0 gives inf or NaN on a zero row.
        self.above("rms_norm_eps", rms_norm_eps, 0.0, "RMSNorm divides by sqrt(mean(x^2) + eps), which is NaN or inf for eps <= 0")?;
        let max_position_embeddings = self.int("max_position_embeddings")?;
        // The rotary tables hold every position: 2 x positions x head_dim/2 float32.
        if max_position_embeddings > MAX_POSITIONS {
            return Err(self.err("max_position_embeddings", format!("= {max_position_embeddings} is more than the {MAX_POSITIONS} positions layercheck holds rotary tables for")));
        }
        let tie_word_embeddings = self.bool_or("tie_word_embeddings", false)?;
        let rope = self.rope()?;

        let granite = family == Family::Granite;
        let (embedding_multiplier, residual_multiplier, attention_multiplier, logits_scaling) = if granite {
            (
                self.float_or("embedding_multiplier", 1.0)?,
                self.float_or("residual_multiplier", 1.0)?,
                self.float_or("attention_multiplier", 1.0)?,
                self.float_or("logits_scaling", 1.0)?,
            )
        } else {
            (1.0, 1.0, 1.0 / (head_dim as f64).sqrt(), 1.0)
        };
        if logits_scaling == 0.0 {
            return Err(self.err("logits_scaling", "must not be 0 (logits are divided by it)"));
        }
        for (field, v) in [("embedding_multiplier", embedding_multiplier), ("residual_multiplier", residual_multiplier), ("attention_multiplier", attention_multiplier), ("logits_scaling", logits_scaling)] {
            self.above(field, v, 0.0, "a scale factor of the forward pass must be positive")?;
        }

        self.refuse_unless("hidden_act", |v| v == "silu", "only SiLU-gated MLPs (\"silu\") are implemented")?;
        self.refuse_unless("attention_bias", |v| v == false, "attention projections with bias are not implemented")?;
        self.refuse_unless("mlp_bias", |v| v == false, "MLP projections with bias are not implemented")?;
        self.refuse_unless("pretraining_tp", |v| v == 1, "tensor-parallel slicing of projections is not implemented")?;
        self.refuse_unless("sliding_window", |_| false, "sliding-window attention is not implemented")?;
        for field in IRRELEVANT {
            self.map.remove(*field);
        }
        if let Some(field) = self.map.keys().next() {
            let mut unknown: Vec<&String> = self.map.keys().collect();
            unknown.sort();
            return Err(self.err(
                field,
                format!(
                    "is not a field layercheck knows (unknown: {}); it may change the model's numbers, so it is refused rather than ignored",
                    unknown.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        Ok(ModelConfig {
            family,
            vocab_size,
            hidden_size,
            intermediate_size,
            num_layers,
            num_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps,
            rope,
            max_position_embeddings,
            tie_word_embeddings,
            embedding_multiplier,
            residual_multiplier,
            attention_scale: attention_multiplier,
            logits_scaling,
        })
    }

    /// Reads the rope settings from transformers 5's `rope_parameters`, or from the older top-level
    /// `rope_theta` and `rope_scaling`.
    fn rope(&mut self) -> Result<Rope, ModelError> {
        let top_theta = self.float_or("rope_theta", 10_000.0)?;
        let params = self.take("rope_parameters").or_else(|| self.take("rope_scaling"));
        let field = "rope_parameters";
        let Some(params) = params else {
            self.above("rope_theta", top_theta, 1.0, "RoPE's frequencies are powers of 1/rope_theta (10000 or more for Llama and Granite); at or below 1 they are NaN, inf or do not decay")?;
            return Ok(Rope { theta: top_theta, llama3: None });
        };
        let Value::Object(mut p) = params else {
            return Err(self.err(field, format!("must be an object, found {params}")));
        };
        let num = |p: &mut Map<String, Value>, key: &str| -> Result<Option<f64>, ModelError> {
            match p.remove(key) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v.as_f64().map(Some).ok_or_else(|| cfg_err(&self.file, &format!("{field}.{key}"), format!("must be a number, found {v}"))),
            }
        };
        let theta_field = if p.contains_key("rope_theta") { format!("{field}.rope_theta") } else { "rope_theta".to_string() };
        let theta = num(&mut p, "rope_theta")?.unwrap_or(top_theta);
        self.above(&theta_field, theta, 1.0, "RoPE's frequencies are powers of 1/rope_theta (10000 or more for Llama and Granite); at or below 1 they are NaN, inf or do not decay")?;
        let kind = p.remove("rope_type").or_else(|| p.remove("type"));
        let kind = kind.as_ref().and_then(Value::as_str).unwrap_or("default").to_string();
        let llama3 = match kind.as_str() {
            "default" => None,
            "llama3" => {
                let need = |p: &mut Map<String, Value>, key: &str| {
                    num(p, key)?.ok_or_else(|| cfg_err(&self.file, &format!("{field}.{key}"), "is missing (rope_type \"llama3\" needs it)".into()))
                };
                let s = Llama3Scaling {
                    factor: need(&mut p, "factor")?,
                    low_freq_factor: need(&mut p, "low_freq_factor")?,
                    high_freq_factor: need(&mut p, "high_freq_factor")?,
                    original_max_position_embeddings: need(&mut p, "original_max_position_embeddings")?,
                };
                for (key, v) in [("factor", s.factor), ("low_freq_factor", s.low_freq_factor), ("original_max_position_embeddings", s.original_max_position_embeddings)] {
                    self.above(&format!("{field}.{key}"), v, 0.0, "llama3 rope scaling divides by it")?;
                }
                self.above(&format!("{field}.high_freq_factor"), s.high_freq_factor, s.low_freq_factor, "llama3 rope scaling divides by high_freq_factor - low_freq_factor")?;
                Some(s)
            }
            other => {
                return Err(self.err(
                    &format!("{field}.rope_type"),
                    format!("= \"{other}\" is not implemented (supported: \"default\", \"llama3\")"),
                ))
            }
        };
        if let Some(key) = p.keys().next() {
            return Err(self.err(&format!("{field}.{key}"), "is not a rope parameter layercheck knows; refused rather than ignored"));
        }
        Ok(Rope { theta, llama3 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Granite config as transformers 5 writes it.
    fn granite() -> Value {
        serde_json::json!({
            "architectures": ["GraniteForCausalLM"], "model_type": "granite", "vocab_size": 384,
            "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 3, "num_attention_heads": 4,
            "num_key_value_heads": 2, "head_dim": 16, "rms_norm_eps": 1e-6, "max_position_embeddings": 256,
            "tie_word_embeddings": true, "embedding_multiplier": 3.5, "residual_multiplier": 0.7,
            "attention_multiplier": 0.09, "logits_scaling": 2.5, "hidden_act": "silu", "attention_bias": false,
            "mlp_bias": false, "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"},
            "transformers_version": "5.9.0", "dtype": "float32", "bos_token_id": 1, "eos_token_id": 2,
        })
    }

    fn parse(v: &Value) -> Result<ModelConfig, ModelError> {
        ModelConfig::from_json(&v.to_string(), Path::new("m/config.json"))
    }

    fn refusal(v: &Value) -> String {
        parse(v).expect_err("config must be refused").to_string()
    }

    #[test]
    fn reads_granite_multipliers_and_gqa() {
        let c = parse(&granite()).unwrap();
        assert_eq!(c.family, Family::Granite);
        assert_eq!((c.num_heads, c.num_kv_heads, c.head_dim), (4, 2, 16));
        assert_eq!((c.embedding_multiplier, c.residual_multiplier, c.attention_scale, c.logits_scaling), (3.5, 0.7, 0.09, 2.5));
        assert_eq!(c.rope, Rope { theta: 10000.0, llama3: None });
    }

    #[test]
    fn llama_scale_is_one_over_sqrt_head_dim_and_top_level_rope_theta_is_read() {
        let mut v = granite();
        let m = v.as_object_mut().unwrap();
        m.insert("model_type".into(), "llama".into());
        for k in ["embedding_multiplier", "residual_multiplier", "attention_multiplier", "logits_scaling", "rope_parameters", "head_dim"] {
            m.remove(k);
        }
        m.insert("rope_theta".into(), 500000.0.into());
        let c = parse(&v).unwrap();
        assert_eq!(c.head_dim, 16);
        assert_eq!(c.attention_scale, 0.25);
        assert_eq!((c.embedding_multiplier, c.residual_multiplier, c.logits_scaling), (1.0, 1.0, 1.0));
        assert_eq!(c.rope.theta, 500000.0);
    }

    #[test]
    fn reads_llama3_rope_scaling() {
        let mut v = granite();
        v["rope_parameters"] = serde_json::json!({"rope_theta": 500000.0, "rope_type": "llama3", "factor": 8.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192});
        let c = parse(&v).unwrap();
        assert_eq!(c.rope.llama3.unwrap().factor, 8.0);
    }

    #[test]
    fn refuses_what_it_cannot_honour_naming_the_field() {
        let cases: Vec<(&str, Value, &str)> = vec![
            ("attention_bias", true.into(), "field \"attention_bias\" = true is not supported"),
            ("mlp_bias", true.into(), "field \"mlp_bias\" = true is not supported"),
            ("hidden_act", "gelu".into(), "field \"hidden_act\" = \"gelu\" is not supported"),
            ("rope_parameters", serde_json::json!({"rope_theta": 1e4, "rope_type": "yarn", "factor": 4.0}), "field \"rope_parameters.rope_type\" = \"yarn\" is not implemented"),
            ("rope_parameters", serde_json::json!({"rope_theta": 1e4, "rope_type": "default", "mystery": 1}), "field \"rope_parameters.mystery\" is not a rope parameter"),
            ("sliding_window", 4096.into(), "field \"sliding_window\" = 4096 is not supported"),
            ("model_type", "mistral".into(), "field \"model_type\" = \"mistral\": only \"llama\" and \"granite\""),
            ("num_key_value_heads", 3.into(), "field \"num_key_value_heads\" = 3 does not divide num_attention_heads = 4"),
            ("head_dim", 15.into(), "field \"head_dim\" = 15 must be even"),
            ("vocab_size", (-1).into(), "field \"vocab_size\" must be a positive integer, found -1"),
            ("logits_scaling", 0.into(), "field \"logits_scaling\" must not be 0"),
            ("logits_scaling", (-2.5).into(), "field \"logits_scaling\" = -2.5 must be above 0"),
            ("rms_norm_eps", (-1e-6).into(), "field \"rms_norm_eps\" = -0.000001 must be above 0: RMSNorm divides"),
            ("rms_norm_eps", 0.into(), "field \"rms_norm_eps\" = 0 must be above 0"),
            ("attention_multiplier", 0.into(), "field \"attention_multiplier\" = 0 must be above 0"),
            ("rope_parameters", serde_json::json!({"rope_theta": 0.0, "rope_type": "default"}), "field \"rope_parameters.rope_theta\" = 0 must be above 1"),
            ("rope_parameters", serde_json::json!({"rope_theta": 1e4, "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}), "field \"rope_parameters.high_freq_factor\" = 4 must be above 4"),
            ("num_attention_heads", 0.into(), "field \"num_attention_heads\" must be a positive integer, found 0"),
            ("quantization_config", serde_json::json!({"bits": 4}), "field \"quantization_config\" is not a field layercheck knows"),
            // Counts that would allocate billions of keys or rotary angles before any weight is read.
            ("num_hidden_layers", 9_000_000_000_000_000_000u64.into(), "field \"num_hidden_layers\" = 9000000000000000000 is more than"),
            ("num_hidden_layers", u64::MAX.into(), "field \"num_hidden_layers\" must be a positive integer, found 18446744073709551615"),
            ("num_hidden_layers", 10_001.into(), "field \"num_hidden_layers\" = 10001 is more than the 10000 layers"),
            ("max_position_embeddings", 10_000_000_000i64.into(), "field \"max_position_embeddings\" = 10000000000 is more than the 16777216 positions"),
        ];
        for (field, value, expected) in cases {
            let mut v = granite();
            v[field] = value;
            let err = refusal(&v);
            assert!(err.starts_with("m/config.json: ") && err.contains(expected), "{field}: {err}");
            assert!(err.contains("hint:"), "{err}");
        }
        let mut v = granite();
        v.as_object_mut().unwrap().remove("hidden_size");
        assert!(refusal(&v).contains("field \"hidden_size\" is missing"));
        let err = ModelConfig::from_json("{not json", Path::new("m/config.json")).unwrap_err().to_string();
        assert!(err.contains("is not valid JSON"), "{err}");
    }
}
