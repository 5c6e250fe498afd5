//! The per-layer test suite: one libtest-mimic test per (model, target, mode, batch size, sequence
//! length[, new tokens], layer), compared with stored CPU golden data and threshold files.
//!
//! The test processes run `layercheck-suite` (crates/suite), which links no libtorch; the
//! computing side is here: golden files, the target's listener and [`evaluate::evaluate`], which
//! `layercheck suite-case` runs for them.

pub mod attribution;
pub mod evaluate;
pub mod golden;
pub mod judge;
pub mod target_listener;

