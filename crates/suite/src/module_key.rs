//! The fms module keys of a decoder, in fms's post-hook order: what every per-layer file, threshold
//! and test is named by (`model.base_model.layers7.attn.dense`).

use std::fmt;
use std::str::FromStr;

/// A module inside one decoder layer, in the order fms's hooks fire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LayerModule {
    Ln,
    Query,
    Key,
    Value,
    InProj,
    Dense,
    FfLn,
    Wg,
    A,
    W1,
    W2,
    FfSubLayer,
}

impl LayerModule {
    /// The 12 modules of a layer, in post-hook order.
    pub const ALL: [LayerModule; 12] = [
        LayerModule::Ln,
        LayerModule::Query,
        LayerModule::Key,
        LayerModule::Value,
        LayerModule::InProj,
        LayerModule::Dense,
        LayerModule::FfLn,
        LayerModule::Wg,
        LayerModule::A,
        LayerModule::W1,
        LayerModule::W2,
        LayerModule::FfSubLayer,
    ];

    /// The module's path inside its layer, e.g. `attn.in_proj.query`.
    pub fn path(self) -> &'static str {
        match self {
            LayerModule::Ln => "ln",
            LayerModule::Query => "attn.in_proj.query",
            LayerModule::Key => "attn.in_proj.key",
            LayerModule::Value => "attn.in_proj.value",
            LayerModule::InProj => "attn.in_proj",
            LayerModule::Dense => "attn.dense",
            LayerModule::FfLn => "ff_ln",
            LayerModule::Wg => "ff_sub_layer.wg",
            LayerModule::A => "ff_sub_layer.a",
            LayerModule::W1 => "ff_sub_layer.w1",
            LayerModule::W2 => "ff_sub_layer.w2",
            LayerModule::FfSubLayer => "ff_sub_layer",
        }
    }
}

/// A hooked module of the whole model, named as fms names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ModuleKey {
    /// `model.base_model.embedding`, captured before Granite's embedding multiplier.
    Embedding,
    /// `model.base_model.layers[i].<module>`.
    Layer(usize, LayerModule),
    /// `model.base_model.dec_norm`.
    DecNorm,
    /// `model.base_model`: the final hidden states.
    BaseModel,
    /// `model.head`: logits before Granite's `logits_scaling`.
    Head,
    /// `model`: the final logits; recorded in generate mode only, as the seed does.
    Model,
}

impl ModuleKey {
    /// Every key one forward records, in order (`with_root`: also `model`, as in generate mode).
    pub fn forward_order(num_layers: usize, with_root: bool) -> Vec<ModuleKey> {
        let mut keys = vec![ModuleKey::Embedding];
        for i in 0..num_layers {
            keys.extend(LayerModule::ALL.iter().map(|&m| ModuleKey::Layer(i, m)));
        }
        keys.extend([ModuleKey::DecNorm, ModuleKey::BaseModel, ModuleKey::Head]);
        if with_root {
            keys.push(ModuleKey::Model);
        }
        keys
    }

    /// The key as fms's hooks record it: `model.base_model.layers[7].ln`.
    pub fn record_key(self) -> String {
        match self {
            ModuleKey::Layer(i, m) => format!("model.base_model.layers[{i}].{}", m.path()),
            other => other.to_string(),
        }
    }
}

/// Displays the file key, as in CSV file names and threshold files: `model.base_model.layers7.ln`.
impl fmt::Display for ModuleKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModuleKey::Embedding => f.write_str("model.base_model.embedding"),
            ModuleKey::Layer(i, m) => write!(f, "model.base_model.layers{i}.{}", m.path()),
            ModuleKey::DecNorm => f.write_str("model.base_model.dec_norm"),
            ModuleKey::BaseModel => f.write_str("model.base_model"),
            ModuleKey::Head => f.write_str("model.head"),
            ModuleKey::Model => f.write_str("model"),
        }
    }
}

/// The most decoder layers layercheck takes a model, a file or a record name to have (the
/// largest public decoders have a few hundred): a layer count or index past it is refused where
/// it is read, so that no typo allocates billions of module keys.
pub const MAX_LAYERS: usize = 10_000;

/// A string that is not a module key.
#[derive(Debug, thiserror::Error)]
#[error("\"{0}\" is not a module key (expected e.g. model.base_model.layers7.attn.dense or model.head)")]
pub struct BadModuleKey(pub String);

/// Parses both the file key (`layers7`) and the record key (`layers[7]`).
impl FromStr for ModuleKey {
    type Err = BadModuleKey;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadModuleKey(s.to_string());
        match s {
            "model.base_model.embedding" => return Ok(ModuleKey::Embedding),
            "model.base_model.dec_norm" => return Ok(ModuleKey::DecNorm),
            "model.base_model" => return Ok(ModuleKey::BaseModel),
            "model.head" => return Ok(ModuleKey::Head),
            "model" => return Ok(ModuleKey::Model),
            _ => {}
        }
        let rest = s.strip_prefix("model.base_model.layers").ok_or_else(bad)?;
        let (index, path) = rest.split_once('.').ok_or_else(bad)?;
        let index = index.strip_prefix('[').and_then(|i| i.strip_suffix(']')).unwrap_or(index);
        if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) || (index.len() > 1 && index.starts_with('0')) {
            return Err(bad());
        }
        let index: usize = index.parse().ok().filter(|&i| i < MAX_LAYERS).ok_or_else(bad)?;
        let module = LayerModule::ALL.into_iter().find(|m| m.path() == path).ok_or_else(bad)?;
        Ok(ModuleKey::Layer(index, module))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn forward_order_matches_fms() {
        let keys = ModuleKey::forward_order(40, false);
        // 40 layers give 484 keys per forward, as in the sample thresholds file.
        assert_eq!(keys.len(), 484);
        let names: Vec<String> = ModuleKey::forward_order(1, true).iter().map(|k| k.to_string()).collect();
        insta::assert_debug_snapshot!(names);
    }

    #[test]
    fn record_keys_use_brackets() {
        assert_eq!(ModuleKey::Layer(7, LayerModule::Ln).record_key(), "model.base_model.layers[7].ln");
        assert_eq!("model.base_model.layers[7].ln".parse::<ModuleKey>().unwrap(), ModuleKey::Layer(7, LayerModule::Ln));
        assert_eq!("model.base_model.layers9999.ln".parse::<ModuleKey>().unwrap(), ModuleKey::Layer(MAX_LAYERS - 1, LayerModule::Ln));
    }

    #[test]
    fn rejects_near_misses() {
        // Layer indices from file names past MAX_LAYERS too: `layers18446744073709551615` would
        // overflow the layer count computed from it.
        for bad in ["model.base_model.layers07.ln", "model.base_model.layers.ln", "model.base_model.layers1.attn", "model.base_model.layers1", "head", "", "model.base_model.layers10000.ln", "model.base_model.layers18446744073709551615.ln"] {
            assert!(bad.parse::<ModuleKey>().is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn file_and_record_keys_round_trip(layer in 0usize..1000, m in 0usize..12) {
            let key = ModuleKey::Layer(layer, LayerModule::ALL[m]);
            prop_assert_eq!(key.to_string().parse::<ModuleKey>().unwrap(), key);
            prop_assert_eq!(key.record_key().parse::<ModuleKey>().unwrap(), key);
        }
    }
}

#[cfg(test)]
mod anchor_tests {
    use super::ModuleKey;

    /// The Python tools' sample thresholds file (granite-3.2-8b, 40 layers) lists the keys of one
    /// model-forward in hook order; ours must be the same list in the same order.
    #[test]
    fn forward_order_is_the_sample_thresholds_files_order() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/anchors/sample_layer_th.json");
        let text = std::fs::read_to_string(path).expect("shared/anchors is beside the checkout");
        // The file is hand-formatted (NaN literals), so read the keys of its first metric by line.
        let section = text.split("\"abs_diff\"").nth(1).unwrap().split('}').next().unwrap();
        let keys: Vec<&str> = section.lines().filter_map(|l| l.trim().strip_prefix('"')?.split('"').next()).collect();
        let ours: Vec<String> = ModuleKey::forward_order(40, false).iter().map(|k| k.to_string()).collect();
        assert_eq!(keys, ours);
    }
}
