//! The groups of modules told apart in plots, tables and `results.jsonl` (`embedding`, `ln`,
//! `attn`, `ff`, `output`): one place, which the layer views and the results file both read.

use crate::hooks::{LayerModule, ModuleKey};

/// Groups of modules told apart in plots and tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Submodule {
    /// `model.base_model.embedding`.
    Embedding,
    /// Norms: `ln`, `ff_ln`, `dec_norm`.
    Ln,
    /// `attn.*`: q, k, v, in_proj, dense.
    Attn,
    /// `ff_sub_layer.*`.
    Ff,
    /// `model.base_model`, `model.head`, `model`.
    Output,
    /// A key layercheck does not know.
    Other,
}

impl Submodule {
    /// Every group, in legend order.
    pub const ALL: [Submodule; 6] = [Submodule::Embedding, Submodule::Ln, Submodule::Attn, Submodule::Ff, Submodule::Output, Submodule::Other];

    /// The group of a file key (`.iter-N` ignored).
    pub fn of(key: &str) -> Submodule {
        let (base, _) = crate::formats::case::strip_iter(key);
        match base.parse::<ModuleKey>() {
            Ok(ModuleKey::Embedding) => Submodule::Embedding,
            Ok(ModuleKey::DecNorm) => Submodule::Ln,
            Ok(ModuleKey::BaseModel | ModuleKey::Head | ModuleKey::Model) => Submodule::Output,
            Ok(ModuleKey::Layer(_, m)) => match m {
                LayerModule::Ln | LayerModule::FfLn => Submodule::Ln,
                LayerModule::Query | LayerModule::Key | LayerModule::Value | LayerModule::InProj | LayerModule::Dense => Submodule::Attn,
                LayerModule::Wg | LayerModule::A | LayerModule::W1 | LayerModule::W2 | LayerModule::FfSubLayer => Submodule::Ff,
            },
            Err(_) => Submodule::Other,
        }
    }

    /// The name in `results.jsonl` and legends.
    pub fn name(self) -> &'static str {
        match self {
            Submodule::Embedding => "embedding",
            Submodule::Ln => "ln",
            Submodule::Attn => "attn",
            Submodule::Ff => "ff",
            Submodule::Output => "output",
            Submodule::Other => "other",
        }
    }
}
