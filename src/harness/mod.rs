//! The per-layer test suite: one libtest-mimic test per (model, target, mode, batch size, sequence
//! length[, new tokens], layer), compared with stored CPU golden data and threshold files.

pub mod case_cache;
pub mod evaluate;
pub mod golden;
pub mod message;
pub mod runner;
pub mod matrix;
pub mod target_listener;
pub mod verdict;
pub mod test_name;
